#!/usr/bin/env bash
# Starts the whole system on this machine: services, migrations, demo catalog, then the
# orchestrator and workers in the background and the API in the foreground. Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ecommerce-saga/target}"
[ -f .env ] && set -a && . ./.env && set +a

scripts/services.sh up
cargo build --workspace --bins
BIN="$CARGO_TARGET_DIR/debug"
"$BIN/api" migrate
"$BIN/api" seed

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
"$BIN/orchestrator" & pids+=($!)
"$BIN/workers" & pids+=($!)

ADDR="${API_ADDR:-127.0.0.1:8080}"
cat <<MSG

  ecommerce-saga is starting: API + orchestrator + workers (broker: ${BROKER:-nats})
  GraphQL playground:  http://$ADDR/graphql
  Subscriptions:       ws://$ADDR/graphql/ws  (connection_init: {"authorization": "Bearer <token>"})
  JWKS:                http://$ADDR/.well-known/jwks.json

  Try, in the playground:
    mutation { register(email: "ann@example.com", password: "correct horse") { accessToken } }
    # set header {"Authorization": "Bearer <accessToken>"}, then
    mutation { addToCart(sku: "MUG-001", quantity: 2) { itemCount total { amountMinor currency } } }
    mutation { placeOrder(idempotencyKey: "first-order", paymentToken: "tok_visa") { id status } }
    subscription { orderEvents(orderId: "<id>") { sequence type detail } }

MSG
"$BIN/api" serve & pids+=($!)
wait -n "${pids[@]}"
