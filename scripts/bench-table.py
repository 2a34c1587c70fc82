#!/usr/bin/env python3
"""Turns scripts/bench.sh results files (JSON lines) into the Markdown tables of docs/benchmarks.md.

    bench-table.py results.jsonl [more.jsonl ...]

Rows carry the label of their run (BENCH_LABEL, e.g. "before" and "after"), so two runs of the
same script on the same machine read side by side.
"""
import json
import sys

rows = [json.loads(line) for path in sys.argv[1:] for line in open(path) if line.strip()]
labels = list(dict.fromkeys(r.get("label") or "" for r in rows))
show_label = len(labels) > 1 or labels != [""]


def label(r):
    return f"{r.get('label') or '-'} | " if show_label else ""


lh = "run | " if show_label else ""
lsep = "---|" if show_label else ""

for r in (r for r in rows if r["kind"] == "pgbench"):
    print(f"pgbench (TPC-B-like, scale 10, 8 clients), {r.get('label') or 'this run'}: **{r['tps']:.0f} TPS**\n")
tps_of = {}
for r in rows:
    if r["kind"] == "pgbench":
        tps_of[r.get("label") or ""] = r["tps"]


def ratio(r, sagas_per_sec):
    tps = tps_of.get(r.get("label") or "") or next(iter(tps_of.values()), None)
    return f"{sagas_per_sec / tps:.3f}" if tps else "-"


loads = [r for r in rows if r["kind"] == "load"]
for broker in dict.fromkeys(r["broker"] for r in loads):
    print(f"### {broker}: through the API (loadgen)\n")
    print(f"| {lh}load | instances | completed | sagas/s | ÷ pgbench TPS | p50 ms | p95 ms | p99 ms | max ms | errors | late arrivals |")
    print(f"|{lsep}---|---|---|---|---|---|---|---|---|---|---|")
    for r in (r for r in loads if r["broker"] == broker):
        load = f"closed, {r['buyers']} buyers" if r["mode"] == "closed" else f"open, {r['mode'][5:]}"
        l = r["latency_ms"]
        print(f"| {label(r)}{load} | {r['instances']} | {r['completed']} | {r['sagas_per_sec']} | {ratio(r, r['sagas_per_sec'])} "
              f"| {l['p50']} | {l['p95']} | {l['p99']} | {l['max']} | {sum(r['errors'].values())} | {r['late_arrivals']} |")
    outcomes = {}
    for r in (r for r in loads if r["broker"] == broker):
        for k, v in r["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
    print(f"\nOutcomes: {', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}\n")

engine = [r for r in rows if r["kind"] == "engine"]
if engine:
    print("### The saga engine alone (`engine-bench`: no API, no MongoDB)\n")
    print(f"| {lh}broker | orchestrator + worker instances | sagas | sagas/s | ÷ pgbench TPS |")
    print(f"|{lsep}---|---|---|---|---|")
    for r in engine:
        print(f"| {label(r)}{r['broker']} | {r['instances']} | {r['sagas']} | {r['sagas_per_sec']} | {ratio(r, r['sagas_per_sec'])} |")
    print()

def hot_share(c):
    """HOT updates as a share of all row updates, from the per-table counts (older runs: -)."""
    t = c.get("pg_rows_per_saga")
    if not t:
        return "-"
    upd = sum(x["upd"] for x in t.values())
    return f"{round(100 * sum(x['hot_upd'] for x in t.values()) / upd)} %" if upd else "-"


def statements(c):
    """Statements per saga from pg_stat_statements (older runs, or a server without it: -)."""
    s = c.get("pg_statements") or {}
    return s.get("per_saga", "-")


def what(r):
    """The load of a counted run, with its orchestrator + worker instances when more than one."""
    load = "engine" if r["kind"] == "engine" else (
        f"closed, {r['buyers']} buyers" if r["mode"] == "closed" else f"open, {r['mode'][5:]}")
    return load if r.get("instances", 1) == 1 else f"{load}, {r['instances']} instances"


counted = [r for r in rows if r.get("counters") and r["kind"] in ("load", "engine")]
if counted:
    print("### What the servers counted, per completed saga\n")
    print("PostgreSQL transactions from `pg_stat_database` (write = transaction ids assigned), MongoDB")
    print("operations from `serverStatus.opcounters`, over the measured part of each run. Index")
    print("entries: an insert or non-HOT update adds one to every index of its table")
    print("(`pg_stat_user_tables`, `pg_index`); HOT updates: of all row updates. PG statements: calls")
    print("in `pg_stat_statements` (BEGIN and COMMIT included; sqlx's pings are not listed), where")
    print("the server preloads it.\n")
    print(f"| {lh}broker | load | PG write xacts | PG read-only xacts | PG rollbacks | MongoDB ops | PG statements | PG index entries | HOT updates |")
    print(f"|{lsep}---|---|---|---|---|---|---|---|---|")
    for r in counted:
        c = r["counters"]
        load = what(r)
        n = max(1, r.get("completed") or 1)
        print(f"| {label(r)}{r['broker']} | {load} | {c['pg_write_xacts_per_saga']} | {c['pg_read_xacts_per_saga']} "
              f"| {round(c['pg_rollbacks'] / n, 2)} | {c.get('mongo_ops_per_saga', '-')} "
              f"| {statements(c)} | {c.get('pg_index_entries_per_saga', '-')} | {hot_share(c)} |")
    print()
    print("### CPU per process during each run (% of one core; the machine has two)\n")
    procs = ["all", "api", "orchestrator", "workers", "postgres", "mongo-wire", "nats", "rabbitmq", "tansu", "nsqd", "loadgen", "engine-bench"]
    print(f"| {lh}broker | load | " + " | ".join(procs) + " | total |")
    print(f"|{lsep}---|---|" + "---|" * len(procs) + "---|")
    for r in counted:
        cpu = dict(r["counters"]["cpu_percent"])
        if "api bench-engine" in cpu:  # its name before it became a binary of its own
            cpu["engine-bench"] = cpu.pop("api bench-engine")
        load = what(r)
        cells = [str(cpu.get(p, "-")) for p in procs]
        print(f"| {label(r)}{r['broker']} | {load} | " + " | ".join(cells) + f" | {round(sum(cpu.values()), 1)} |")
    print()

mem = [r for r in rows if r["kind"] == "memory"]
if mem:
    print("### Memory (RSS after the loads, MB)\n")
    print(f"| {lh}broker | api | orchestrator | workers |")
    print(f"|{lsep}---|---|---|---|")
    for r in mem:
        print(f"| {label(r)}{r['broker']} | {r['api_mb']} | {r.get('orchestrator_mb', '-')} | {r.get('workers_mb', '-')} |")
