#!/usr/bin/env bash
# What idle subscriptions cost (issue 20): one `api all` process (release build, NATS), one order
# whose saga is paused (NEEDS_ATTENTION, so its streams stay open and nothing happens), and
# `idle-subs` holding N `orderEvents` subscriptions to it, 10 per graphql-ws connection, for each
# N in BENCH_IDLE_SUBS. Prints per N: PostgreSQL transactions/s in the API's database, the API's
# CPU (% of a core) and resident memory while they wait; then the fan-out of one transition (the
# buyer cancels): latency until each subscription hears it (p50, p99, max).
#
#   scripts/bench-idle.sh
#
# Settings (environment): BENCH_IDLE_SUBS ("0 1000 5000 10000"), BENCH_IDLE_CONNECTIONS (N/10),
# BENCH_SECS (10), BENCH_BIN (binaries built elsewhere), BENCH_API_BIN (an `api` binary built
# elsewhere, e.g. an older commit's, for a before/after with this `idle-subs`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ecommerce-saga/target}"
SUBS="${BENCH_IDLE_SUBS:-0 1000 5000 10000}"
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
API="${BENCH_API_BIN:-$BIN/api}"
OUT="$CARGO_TARGET_DIR/bench-idle"
# A socket each side of every connection.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# One client holds them all: lift the per-user and per-address connection limits.
export WS_MAX_CONNECTIONS_PER_USER=100000 WS_MAX_CONNECTIONS_PER_ADDRESS=100000
mkdir -p "$OUT"

for n in $SUBS; do
  CONNECTIONS="${BENCH_IDLE_CONNECTIONS:-$(( n / 10 > 0 ? n / 10 : 1 ))}"
  db="bench_idle_$n"
  psql "${PG[@]}" -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" MONGO_DATABASE="$db" BROKER=nats
  export BROKER_NAMESPACE="${db}_$(date +%s)" API_ADDR="$ADDR" RUST_LOG=warn
  export SAGA_NEEDS_ATTENTION_STEPS=AUTHORIZE_PAYMENT SAGA_STEP_TIMEOUT_MS=500 SAGA_STEP_MAX_ATTEMPTS=1
  "$API" migrate >&2
  "$API" seed >&2
  "$API" all >"$OUT/all-$n.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    curl -fs "http://$ADDR/healthz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  "$BIN/idle-subs" --url "http://$ADDR" --api-pid "$pid" --subscriptions "$n" \
    --connections "$CONNECTIONS" --seconds "$SECS" || { kill "$pid"; exit 1; }
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  psql "${PG[@]}" -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
done
