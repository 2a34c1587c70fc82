#!/usr/bin/env python3
"""Runs one benchmark command and reports, next to its JSON output, what the servers counted
meanwhile (used by scripts/bench.sh):

    bench-probe.py --db DB [--proc name=pid ...] [--per KEY] [--start-marker TEXT] -- command args...

- PostgreSQL (pg_stat_database of DB): committed transactions, split into write transactions
  (transaction ids assigned: the snapshot's xmax, which reading does not advance; server-wide, so
  run nothing else meanwhile) and read-only ones.
- Statements run in DB, per saga and the busiest ones (pg_stat_statements, where the server
  preloads it; BEGIN and COMMIT count, sqlx's pings do not appear).
- The MongoDB-wire server (serverStatus.opcounters): operations of every kind.
- CPU of each process named with --proc, and of all processes of the PostgreSQL server, the broker
  and the Mongo-wire server (found by name at the start and at the end, so that backends opened
  meanwhile count), in % of one core over the command's run.

The command's stdout must be one JSON object; the output is that object with a "counters" member.
Per-saga figures divide by the object's KEY member ("completed" by default). With --start-marker,
counting starts when the command writes a line containing TEXT to stderr (after its set-up, e.g.
loadgen's sign-ups); its other stderr lines are passed through.
"""
import argparse
import json
import os
import subprocess
import sys
import time

CLK = os.sysconf("SC_CLK_TCK")
# Server processes by the name of their executable (/proc/<pid>/comm, or the script for Python).
SERVERS = {
    "postgres": lambda comm, cmd: comm == "postgres",
    "nats": lambda comm, cmd: comm == "nats-server",
    "rabbitmq": lambda comm, cmd: comm in ("beam.smp", "erl_child_setup"),
    "tansu": lambda comm, cmd: comm == "tansu",
    "nsqd": lambda comm, cmd: comm == "nsqd",
    "mongo-wire": lambda comm, cmd: "secantusd" in cmd,
}


def psql(db, sql):
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-Atc", sql],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    return out


def pg(db):
    row = psql(db, "SELECT xact_commit, xact_rollback, pg_snapshot_xmax(pg_current_snapshot()) "
                   "FROM pg_stat_database WHERE datname = current_database()")
    commit, rollback, xmax = (int(x) for x in row.split("|"))
    return {"commit": commit, "rollback": rollback, "xmax": xmax}


def tables(db):
    """Row writes per table (pg_stat_user_tables) and the table's index count."""
    rows = psql(db, "SELECT s.relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, "
                    "(SELECT count(*) FROM pg_index i WHERE i.indrelid = s.relid) "
                    "FROM pg_stat_user_tables s")
    out = {}
    for line in rows.splitlines():
        name, *numbers = line.split("|")
        out[name] = [int(x) for x in numbers]
    return out


def statements(db):
    """Calls per statement in DB (pg_stat_statements, where the server preloads it: it is how round
    trips are counted; an empty query, sqlx's ping, is not listed, so pings are not in it)."""
    try:
        psql(db, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        rows = psql(db, "SELECT queryid, calls, regexp_replace(left(query, 90), '\\s+', ' ', 'g') "
                        "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
                        "WHERE datname = current_database())")
    except subprocess.CalledProcessError as e:
        return {"error": (e.stderr or "").strip().splitlines()[-1:] or ["pg_stat_statements"]}
    out = {}
    for line in rows.splitlines():
        qid, calls, text = line.split("|", 2)
        out[qid] = (int(calls), text)
    return out


def statement_calls(s0, s1, n):
    """Per saga: statements run (BEGIN and COMMIT included), and the busiest of them."""
    if "error" in s0 or "error" in s1:
        return {"error": s0.get("error") or s1.get("error")}
    # The probe's own reads of pg_stat_statements, pg_stat_database and pg_stat_user_tables.
    own = ("pg_stat_statements", "pg_stat_database", "pg_stat_user_tables", "CREATE EXTENSION")
    diff = []
    for qid, (calls, text) in s1.items():
        d = calls - s0.get(qid, (0, ""))[0]
        if d > 0 and not any(o in text for o in own):
            diff.append((d, text))
    diff.sort(reverse=True)
    return {
        "per_saga": round(sum(d for d, _ in diff) / n, 2),
        "top": [[round(d / n, 2), text] for d, text in diff[:40]],
    }


def row_writes(t0, t1, n):
    """Per saga: rows inserted, updated (HOT or not) and deleted by table, and the index entries
    those writes added (an insert or a non-HOT update adds one to every index of its table; a HOT
    update adds none)."""
    per_table, entries = {}, 0
    for name, (ins, upd, hot, dele, indexes) in t1.items():
        i0, u0, h0, d0, _ = t0.get(name, [0, 0, 0, 0, 0])
        ins, upd, hot, dele = ins - i0, upd - u0, hot - h0, dele - d0
        if ins or upd or dele:
            per_table[name] = {"ins": round(ins / n, 2), "upd": round(upd / n, 2),
                               "hot_upd": round(hot / n, 2), "del": round(dele / n, 2), "indexes": indexes}
        entries += (ins + upd - hot) * indexes
    return per_table, round(entries / n, 1)


def mongo():
    try:
        import pymongo
        c = pymongo.MongoClient(os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017"),
                                serverSelectionTimeoutMS=3000)
        ops = c.admin.command("serverStatus")["opcounters"]
        c.close()
        return {k: int(v) for k, v in ops.items()}
    except Exception as e:  # the report says so instead of failing the run
        return {"error": str(e)}


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def servers():
    found = {}
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            comm = open(f"/proc/{pid}/comm").read().strip()
            cmd = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
        except OSError:
            continue
        for name, match in SERVERS.items():
            if match(comm, cmd):
                found.setdefault(name, []).append(int(pid))
    return found


def ticks(groups):
    """CPU ticks per process, by group: {name: {pid: ticks}}."""
    return {name: {p: t for p in pids if (t := cpu_ticks(p)) is not None} for name, pids in groups.items()}


def used(cpu0, cpu1):
    """Ticks each group used between two readings; a process that appeared meanwhile (a database
    backend the command connected, say) counts from zero."""
    return {name: sum(t - cpu0.get(name, {}).get(p, 0) for p, t in pids.items()) for name, pids in cpu1.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--proc", action="append", default=[], help="name=pid")
    ap.add_argument("--per", default="completed")
    ap.add_argument("--start-marker")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    named = {}
    for spec in a.proc:
        name, pid = spec.split("=")
        named.setdefault(name, []).append(int(pid))

    import threading
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    named["command"] = [proc.pid]

    def groups():  # the server processes are looked up at each reading: new backends count too
        return {**servers(), **named}
    started = threading.Event()
    start = {}

    def snapshot():
        start.update(pg=pg(a.db), tables=tables(a.db), stmts=statements(a.db), mongo=mongo(), cpu=ticks(groups()), t=time.monotonic())
        started.set()

    def watch_stderr():
        for line in proc.stderr:
            if a.start_marker and a.start_marker in line and not started.is_set():
                snapshot()
            else:
                sys.stderr.write(line)

    if not a.start_marker:
        snapshot()
    watcher = threading.Thread(target=watch_stderr, daemon=True)
    watcher.start()
    # Read as soon as the report arrives: the command's database connections (and so their
    # backends' CPU times) are still open then, and its /proc entry keeps its own.
    out = proc.stdout.readline()
    t1, cpu1 = time.monotonic(), ticks(groups())
    out += proc.stdout.read()
    proc.wait()
    watcher.join(timeout=5)
    if not started.is_set() or not out.strip():
        sys.stderr.write(f"bench-probe: the command ended ({proc.returncode}) without starting or reporting\n")
        return 1
    pg0, mongo0, cpu0, t0 = start["pg"], start["mongo"], start["cpu"], start["t"]
    # Backends report their transaction counts when idle, at most once a second: let them.
    time.sleep(2.5)
    pg1, tables1, stmts1, mongo1 = pg(a.db), tables(a.db), statements(a.db), mongo()

    report = json.loads(out)
    n = max(1, int(report.get(a.per) or 0))
    # The snapshot queries above are read-only; the probe's own commits are its pg() and tables() calls.
    commits = pg1["commit"] - pg0["commit"] - (2 if "error" in start["stmts"] else 4)
    writes = pg1["xmax"] - pg0["xmax"]
    counters = {
        "seconds": round(t1 - t0, 1),
        "pg_commits": commits,
        "pg_write_xacts": writes,
        "pg_read_xacts": commits - writes,
        "pg_rollbacks": pg1["rollback"] - pg0["rollback"],
        "pg_write_xacts_per_saga": round(writes / n, 2),
        "pg_read_xacts_per_saga": round((commits - writes) / n, 2),
        "pg_rows_per_saga": row_writes(start["tables"], tables1, n)[0],
        "pg_index_entries_per_saga": row_writes(start["tables"], tables1, n)[1],
        "pg_statements": statement_calls(start["stmts"], stmts1, n),
        "cpu_percent": {k: round(100 * v / CLK / (t1 - t0), 1) for k, v in used(cpu0, cpu1).items()},
    }
    driver = os.path.basename(command[0])
    driver = driver if driver in ("loadgen", "engine-bench") else " ".join([driver] + command[1:2])
    counters["cpu_percent"][driver] = counters["cpu_percent"].pop("command")
    if "error" in mongo0 or "error" in mongo1:
        counters["mongo_error"] = mongo0.get("error") or mongo1.get("error")
    else:
        ops = {k: mongo1[k] - mongo0.get(k, 0) for k in mongo1}
        # The probe's own serverStatus calls are commands too.
        ops["command"] = ops.get("command", 0) - 1
        counters["mongo_ops"] = ops
        counters["mongo_ops_per_saga"] = round(sum(ops.values()) / n, 2)
    report["counters"] = counters
    print(json.dumps(report))


if __name__ == "__main__":
    sys.exit(main())
