#!/usr/bin/env bash
# Starts the whole system on this machine: services, migrations, demo catalog, then the API, the
# orchestrator and the workers in ONE process (`api all`), talking through in-process queues unless
# BROKER names a broker (nats, rabbitmq, kafka, nsq). Ctrl-C stops it.
#
#   scripts/dev.sh              all-in-one (the default)
#   scripts/dev.sh --separate   the three roles as separate processes (BROKER defaults to nats)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ecommerce-saga/target}"
[ -f .env ] && set -a && . ./.env && set +a

scripts/services.sh up
scripts/services.sh storefront
cargo build --workspace --bins
BIN="$CARGO_TARGET_DIR/debug"
"$BIN/api" migrate
"$BIN/api" seed

# An operator account for the saga monitor; its password is generated once and kept outside the clone.
OPERATOR_EMAIL="${OPERATOR_EMAIL:-operator@example.com}"
OPERATOR_FILE="$HOME/.cache/ecommerce-saga/dev-operator-password"
if [ ! -s "$OPERATOR_FILE" ]; then
  mkdir -p "$(dirname "$OPERATOR_FILE")"
  (umask 077 && head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$OPERATOR_FILE")
fi
"$BIN/api" create-operator --email "$OPERATOR_EMAIL" <"$OPERATOR_FILE"

ADDR="${API_ADDR:-127.0.0.1:8080}"
# The example storefront, served as its files are (no build step) from its own origin; the API lets
# that origin call it.
SHOP_ADDR="${STOREFRONT_ADDR:-127.0.0.1:8081}"
export CORS_ALLOWED_ORIGINS="${CORS_ALLOWED_ORIGINS:-http://$SHOP_ADDR}"
python3 -m http.server --bind "${SHOP_ADDR%:*}" --directory examples/storefront "${SHOP_ADDR##*:}" >/dev/null 2>&1 &
SHOP_PID=$!
trap 'kill $SHOP_PID 2>/dev/null || true' EXIT
example() {
  cat <<MSG

  ecommerce-saga is starting: $1
  GraphQL playground:  http://$ADDR/graphql
  Subscriptions:       ws://$ADDR/graphql/ws  (connection_init: {"authorization": "Bearer <token>"})
  JWKS:                http://$ADDR/.well-known/jwks.json
  Storefront:          http://$SHOP_ADDR/index.html?api=http://$ADDR
  Saga monitor:        http://$ADDR/monitor
                       sign in as $OPERATOR_EMAIL / $(cat "$OPERATOR_FILE")
  Metrics:             http://${API_ADMIN_ADDR:-127.0.0.1:9100}/metrics  (the admin listener; /readyz too)

  Try, in the playground:
    mutation { cartCreate(input: { lines: [{ sku: "MUG-001", quantity: 2 }] }) { cart { id totalQuantity cost { total { amount currencyCode } } } userErrors { code field message } } }
    mutation { signUp(input: { email: "ann@example.com", password: "correct horse", cartId: "<cart id>" }) { session { accessToken } cart { totalQuantity } userErrors { code field message } } }
    # set header {"Authorization": "Bearer <accessToken>"}, then
    mutation { placeOrder(input: { idempotencyKey: "first-order", paymentToken: "tok_visa", shippingAddress: { name: "Ann", line1: "1 High St", city: "Leeds", postalCode: "LS1 1AA", countryCode: "GB" } }) { order { id status } userErrors { code field message } } }
    subscription { orderEvents(orderId: "<id>") { sequence type order { status cancelReason } } }
  (paymentToken tok_declined, tok_capture_fails or tok_timeout shows a compensation)

MSG
}

if [ "${1:-}" != "--separate" ]; then
  example "API + orchestrator + workers in one process (broker: ${BROKER:-in-process queues})"
  "$BIN/api" all
  exit
fi

export BROKER="${BROKER:-nats}"
pids=("$SHOP_PID")
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
"$BIN/orchestrator" & pids+=($!)
"$BIN/workers" & pids+=($!)
example "API, orchestrator and workers as separate processes (broker: $BROKER)"
"$BIN/api" serve & pids+=($!)
wait -n "${pids[@]}"
