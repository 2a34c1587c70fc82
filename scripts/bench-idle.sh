#!/usr/bin/env bash
# What idle subscriptions cost (issue 20): one `api all` process (release build, NATS), one order
# whose saga is paused (NEEDS_ATTENTION, so its streams stay open and nothing happens), and
# `idle-subs` holding N `orderEvents` subscriptions to it over BENCH_IDLE_CONNECTIONS graphql-ws
# connections, for each N in BENCH_IDLE_SUBS. Prints one line per N: PostgreSQL transactions/s in
# the API's database, the API's CPU (% of a core) and resident memory.
#
#   scripts/bench-idle.sh
#
# Settings (environment): BENCH_IDLE_SUBS ("0 1000 5000"), BENCH_IDLE_CONNECTIONS (10),
# BENCH_SECS (10), BENCH_BIN (binaries built elsewhere, e.g. an older commit's, for a before/after).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ecommerce-saga/target}"
SUBS="${BENCH_IDLE_SUBS:-0 1000 5000}"
CONNECTIONS="${BENCH_IDLE_CONNECTIONS:-10}"
SECS="${BENCH_SECS:-10}"
ADDR=127.0.0.1:18081
PG=(-h 127.0.0.1 -U postgres)
export PGOPTIONS="--client-min-messages=warning"

scripts/services.sh up >&2
if [ -n "${BENCH_BIN:-}" ]; then
  BIN="$BENCH_BIN"
else
  cargo build --release -p ecommerce-saga --bin api -p loadgen --bin idle-subs >&2
  BIN="$CARGO_TARGET_DIR/release"
fi
OUT="$CARGO_TARGET_DIR/bench-idle"
mkdir -p "$OUT"

for n in $SUBS; do
  db="bench_idle_$n"
  psql "${PG[@]}" -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" MONGO_DATABASE="$db" BROKER=nats
  export BROKER_NAMESPACE="${db}_$(date +%s)" API_ADDR="$ADDR" RUST_LOG=warn
  export SAGA_NEEDS_ATTENTION_STEPS=AUTHORIZE_PAYMENT SAGA_STEP_TIMEOUT_MS=500 SAGA_STEP_MAX_ATTEMPTS=1
  "$BIN/api" migrate >&2
  "$BIN/api" seed >&2
  "$BIN/api" all >"$OUT/all-$n.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    curl -fs "http://$ADDR/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  "$BIN/idle-subs" --url "http://$ADDR" --api-pid "$pid" --subscriptions "$n" \
    --connections "$CONNECTIONS" --seconds "$SECS" || { kill "$pid"; exit 1; }
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  psql "${PG[@]}" -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
done
