#!/usr/bin/env bash
# How each PostgreSQL table grows per saga (docs/operations.md): one `api all` process (NATS),
# `loadgen` places ORDERS checkouts (a mix of confirmed and declined) with BUYERS buyers, then the
# rows of every table are counted and divided by the sagas. Run it with the retention settings at
# their defaults and with them short (`RETENTION=short`, which deletes what retention deletes
# right away) to see what stays for good.
#
#   scripts/table-growth.sh                 # ORDERS=250 BUYERS=8
#   RETENTION=short scripts/table-growth.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ecommerce-saga/target}"
ORDERS="${ORDERS:-250}"
BUYERS="${BUYERS:-8}"
ADDR=127.0.0.1:18082
PG=(-h 127.0.0.1 -U postgres)
export PGOPTIONS="--client-min-messages=warning"

scripts/services.sh up >&2
cargo build -q -p ecommerce-saga --bin api -p loadgen --bin loadgen >&2
BIN="$CARGO_TARGET_DIR/debug"
db="table_growth"
psql "${PG[@]}" -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" MONGO_DATABASE="$db" BROKER=nats
export BROKER_NAMESPACE="${db}_$(date +%s)" API_ADDR="$ADDR" RUST_LOG=warn
export REGISTER_MAX_PER_ADDRESS=100000 LOGIN_MAX_PER_ADDRESS=100000
export ORDER_PLACE_MAX_PER_USER=100000000 CART_WRITES_MAX_PER_USER=100000000 ORDER_MAX_OPEN_PER_USER=100000000
if [ "${RETENTION:-}" = short ]; then
  # Everything retention may delete goes at once: a copy of any message already handled is
  # assumed impossible (never do this in production), sessions go as soon as they end.
  export INBOX_RETENTION_HOURS=1 SESSION_RETENTION_DAYS=0 SAGA_HISTORY_RETENTION_DAYS=1 RETENTION_INTERVAL_SECS=1
fi
"$BIN/api" migrate >&2
"$BIN/api" seed >&2
"$BIN/api" all >"$CARGO_TARGET_DIR/table-growth.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  curl -fs "http://$ADDR/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
"$BIN/loadgen" --url "http://$ADDR" --buyers "$BUYERS" --orders "$ORDERS" \
  --payment-tokens tok_visa,tok_visa,tok_visa,tok_declined >/dev/null
if [ "${RETENTION:-}" = short ]; then
  # Inbox rows younger than an hour stay: age them, as time would, and let retention run.
  psql "${PG[@]}" -d "$db" -qc "UPDATE inbox SET processed_at = processed_at - interval '2 hours',
    message_id = ('00000000-0000-7000-8000-' || lpad(to_hex((random() * 1e12)::bigint), 12, '0'))::uuid" >/dev/null
  psql "${PG[@]}" -d "$db" -qc "UPDATE refresh_tokens SET expires_at = now() - interval '1 hour'" >/dev/null
  psql "${PG[@]}" -d "$db" -qc "UPDATE sessions SET created_at = now() - interval '1 hour', revoked_at = coalesce(revoked_at, now() - interval '1 hour')" >/dev/null
  # Finished sagas as if they finished two days ago (a day's history kept).
  psql "${PG[@]}" -d "$db" -qc "UPDATE sagas SET updated_at = now() - interval '2 days' WHERE status IN ('COMPLETED', 'COMPENSATED')" >/dev/null
  sleep 5
fi
psql "${PG[@]}" -d "$db" -At -F ' ' -c "
  WITH n AS (SELECT count(*)::numeric AS sagas FROM sagas),
       t AS (SELECT table_name AS name,
                    (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I', table_name),
                                                        false, true, '')))[1]::text::numeric AS rows
               FROM information_schema.tables
              WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> '_sqlx_migrations')
  SELECT name, rows, round(rows / greatest(n.sagas, 1), 2) FROM t, n ORDER BY name" | awk 'BEGIN { print "| table | rows | per saga |"; print "|---|---:|---:|" } { printf "| `%s` | %s | %s |\n", $1, $2, $3 }'
kill $pid
wait $pid 2>/dev/null || true
psql "${PG[@]}" -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
