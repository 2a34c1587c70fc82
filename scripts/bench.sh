#!/usr/bin/env bash
# Benchmarks ecommerce-saga on this machine and prints the tables of docs/benchmarks.md.
#
#   scripts/bench.sh [broker ...]        (default: nats rabbitmq kafka nsq memory)
#
# `memory` is the in-process transport: one `api all` process runs every role (and
# `engine-bench` runs the orchestrator and workers itself).
# For each broker: the release binaries (one API, N orchestrators, N workers) against PostgreSQL,
# the Mongo-wire server and the broker, all on this machine; `loadgen` closed loop with each of
# BENCH_BUYERS buyers (the sweep: does throughput hold as buyers are added?), then open loop at
# each of BENCH_RATES orders/s for latency; scaling with BENCH_SCALE orchestrator+worker instances
# (NATS only unless BENCH_SCALE_ALL=1); memory per process; and `engine-bench`, the saga engine
# without the API and MongoDB. Before anything else, pgbench on the same PostgreSQL, for the
# ceiling. Every load runs under scripts/bench-probe.py, which records what the servers counted
# (PostgreSQL write and read-only transactions, MongoDB operations, per saga) and the CPU each
# process used.
#
# Settings (environment): BENCH_SECS (20), BENCH_BUYERS ("8 32 128"), BENCH_RATES ("10 100"; set empty: none),
# BENCH_SCALE ("1 2 4"), BENCH_OUT (results directory, default $CARGO_TARGET_DIR/bench),
# BENCH_BIN (use the binaries in this directory instead of building), BENCH_PGBENCH=0 (skip pgbench),
# BENCH_ENGINE_SAGAS (3000), BENCH_ENGINE=0 (skip the engine alone), BENCH_ENGINE_RUNS (1: runs of
# the engine alone one after another on the same database, to see whether it slows as tables grow), BENCH_LABEL (a name for this run in the results, e.g. "before").
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ecommerce-saga/target}"
SECS="${BENCH_SECS:-20}"
BUYERS="${BENCH_BUYERS:-8 32 128}"
RATES="${BENCH_RATES-10 100}" # set but empty: no open loops
LABEL="${BENCH_LABEL:-}"
SCALE="${BENCH_SCALE:-1 2 4}"
OUT="${BENCH_OUT:-$CARGO_TARGET_DIR/bench}"
BROKERS=("$@")
[ ${#BROKERS[@]} -eq 0 ] && BROKERS=(nats rabbitmq kafka nsq memory)
PG=(-h 127.0.0.1 -U postgres)
ADDR=127.0.0.1:18080

scripts/services.sh up >&2
if [ -n "${BENCH_BIN:-}" ]; then
  BIN="$BENCH_BIN" # binaries built elsewhere (e.g. an older commit, for a before/after)
else
  cargo build --release --workspace --bins >&2
  BIN="$CARGO_TARGET_DIR/release"
fi
# The engine benchmark; commits before the crate split had it as `api bench-engine`.
ENGINE=("$BIN/engine-bench")
[ -x "$BIN/engine-bench" ] || ENGINE=("$BIN/api" bench-engine)
mkdir -p "$OUT"
RESULTS="$OUT/results-$(date +%Y%m%d-%H%M%S).jsonl"
echo "results: $RESULTS" >&2

record() { # record <json fields...> : appends one line to the results file
  python3 -c 'import json,sys; d={}; [d.update(json.loads(a)) for a in sys.argv[1:]]; print(json.dumps(d))' \
    "{\"label\": \"$LABEL\"}" "$@" >>"$RESULTS"
}

# --- pgbench: the ceiling for a PostgreSQL-backed saga store --------------------------------------
if [ "${BENCH_PGBENCH:-1}" != 0 ]; then
echo "== pgbench (TPC-B-like, scale 10, 8 clients, ${SECS}s)" >&2
psql "${PG[@]}" -d postgres -qc "DROP DATABASE IF EXISTS bench_pgbench" >/dev/null
psql "${PG[@]}" -d postgres -qc "CREATE DATABASE bench_pgbench" >/dev/null
pgbench "${PG[@]}" -i -q -s 10 bench_pgbench >/dev/null 2>&1
TPS="$(pgbench "${PG[@]}" -c 8 -j 2 -T "$SECS" bench_pgbench 2>/dev/null | awk '/^tps/ { print $3; exit }')"
record "{\"kind\": \"pgbench\", \"tps\": $TPS}"
echo "pgbench tps=$TPS" >&2
fi

# --- the system ------------------------------------------------------------------------------------
PIDS=()
stop_system() {
  [ ${#PIDS[@]} -gt 0 ] && kill "${PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  PIDS=()
}
trap stop_system EXIT

start_system() { # start_system <broker> <instances>
  local broker="$1" n="$2" db="bench_$1"
  psql "${PG[@]}" -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  # The MongoDB database too, so that no run finds the carts of the one before (pymongo comes
  # with the Mongo-wire server scripts/services.sh installs).
  python3 -c 'import sys, pymongo; pymongo.MongoClient(sys.argv[1]).drop_database(sys.argv[2])' \
    "${MONGO_URL:-mongodb://127.0.0.1:27017}" "$db"
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" MONGO_DATABASE="$db" BROKER="$broker"
  export BROKER_NAMESPACE="${db}_$(date +%s)" API_ADDR="$ADDR" RUST_LOG=warn
  export REGISTER_MAX_PER_ADDRESS=100000000 LOGIN_MAX_PER_ADDRESS=100000000
  export ORDER_PLACE_MAX_PER_USER=100000000 CART_WRITES_MAX_PER_USER=100000000 ORDER_MAX_OPEN_PER_USER=100000000
  DB="$db"
  "$BIN/api" migrate >&2
  "$BIN/api" seed --stock 1000000000 >&2
  ROLE_PIDS=()
  if [ "$broker" = memory ]; then # every role in one process
    "$BIN/api" all >"$OUT/all.log" 2>&1 & PIDS+=($!); API_PID=$!; ROLE_PIDS+=("all:$API_PID")
    n=0
  else
    "$BIN/api" serve >"$OUT/api.log" 2>&1 & PIDS+=($!); API_PID=$!; ROLE_PIDS+=("api:$API_PID")
  fi
  for i in $(seq "$n"); do
    "$BIN/orchestrator" >"$OUT/orchestrator-$i.log" 2>&1 & PIDS+=($!); ROLE_PIDS+=("orchestrator:$!")
    "$BIN/workers" >"$OUT/workers-$i.log" 2>&1 & PIDS+=($!); ROLE_PIDS+=("workers:$!")
  done
  for _ in $(seq 300); do
    curl -fs "http://$ADDR/healthz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "the system did not become ready; see $OUT/*.log" >&2
  return 1
}

probe() { # probe <command...> : runs it under bench-probe.py, naming the system's processes
  local procs=()
  for rp in "${ROLE_PIDS[@]}"; do procs+=(--proc "${rp%%:*}=${rp##*:}"); done
  [ -n "${START_MARKER:-}" ] && procs+=(--start-marker "$START_MARKER")
  python3 scripts/bench-probe.py --db "$DB" "${procs[@]}" -- "$@"
}

load() { # load <label json> <loadgen args...>
  local label="$1"
  shift
  local report
  report="$(START_MARKER="load starts" probe "$BIN/loadgen" --url "http://$ADDR" --json "$@" || true)"
  [ -n "$report" ] || { echo "loadgen failed: $*" >&2; return 1; }
  record "$label" "$report"
  python3 - "$report" >&2 <<'PY'
import json, sys
r = json.loads(sys.argv[1]); l = r["latency_ms"]
c = r.get("counters", {})
print("  %12s buyers=%s completed=%s sagas/s=%s p50=%s p95=%s p99=%s max=%s errors=%s pg w/r per saga=%s/%s mongo ops per saga=%s cpu=%s" % (
    r["mode"], r.get("buyers"), r["completed"], r["sagas_per_sec"], l["p50"], l["p95"], l["p99"], l["max"], sum(r["errors"].values()),
    c.get("pg_write_xacts_per_saga"), c.get("pg_read_xacts_per_saga"), c.get("mongo_ops_per_saga"), c.get("cpu_percent")))
PY
}

rss_mb() { ps -o rss= -p "$1" 2>/dev/null | awk '{ printf "%.1f", $1 / 1024 }'; }

for broker in "${BROKERS[@]}"; do
  echo "== $broker" >&2
  start_system "$broker" 1
  # Warm-up (consumer groups joined, connections pooled, caches filled); not recorded.
  "$BIN/loadgen" --url "http://$ADDR" --json --buyers 16 --orders 300 >/dev/null || true
  for buyers in $BUYERS; do
    load "{\"kind\": \"load\", \"broker\": \"$broker\", \"instances\": 1}" --buyers "$buyers" --duration "$SECS"
  done
  for rate in $RATES; do
    # Enough buyers that arrivals rarely wait for a free one.
    load "{\"kind\": \"load\", \"broker\": \"$broker\", \"instances\": 1}" --buyers 128 --rate "$rate" --duration "$SECS"
  done
  mem="{\"kind\": \"memory\", \"broker\": \"$broker\", \"api_mb\": $(rss_mb "$API_PID")"
  for rp in "${ROLE_PIDS[@]}"; do
    [ "${rp%%:*}" = api ] || [ "${rp%%:*}" = all ] || mem="$mem, \"${rp%%:*}_mb\": $(rss_mb "${rp##*:}")"
  done
  record "$mem}"
  if [ "$broker" = memory ]; then
    # In-process queues reach no other process: engine-bench runs the orchestrator and workers
    # itself, and `api all` must not share the database meanwhile.
    stop_system
    ROLE_PIDS=()
  fi
  # The engine alone: orders written straight to PostgreSQL, no API and no MongoDB on the path.
  # BENCH_ENGINE_RUNS runs it that many times on the same, growing database (`run` 1, 2, ...).
  for run in $(seq "${BENCH_ENGINE_RUNS:-1}"); do
    engine=""
    [ "${BENCH_ENGINE:-1}" = 0 ] ||
      engine="$(probe "${ENGINE[@]}" --sagas "${BENCH_ENGINE_SAGAS:-3000}" --concurrency 16 --json || true)"
    if [ -n "$engine" ]; then
      record "{\"kind\": \"engine\", \"broker\": \"$broker\", \"instances\": 1, \"run\": $run}" "$engine"
      echo "  engine (run $run): $engine" >&2
    fi
  done
  stop_system
  if [ "$broker" = nats ] || { [ -n "${BENCH_SCALE_ALL:-}" ] && [ "$broker" != memory ]; }; then
    for n in $SCALE; do
      [ "$n" = 1 ] && continue
      echo "== $broker with $n orchestrators and $n workers" >&2
      start_system "$broker" "$n"
      "$BIN/loadgen" --url "http://$ADDR" --json --buyers 16 --orders 300 >/dev/null || true
      load "{\"kind\": \"load\", \"broker\": \"$broker\", \"instances\": $n}" --buyers 32 --duration "$SECS"
      engine="$(probe "${ENGINE[@]}" --sagas "${BENCH_ENGINE_SAGAS:-3000}" --concurrency 16 --json || true)"
      [ -n "$engine" ] && record "{\"kind\": \"engine\", \"broker\": \"$broker\", \"instances\": $n}" "$engine"
      stop_system
    done
  fi
done

python3 scripts/bench-table.py "$RESULTS"
