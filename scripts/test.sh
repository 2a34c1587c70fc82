#!/usr/bin/env bash
# Runs every check and test against real services: formatting, clippy, unit tests, the broker
# conformance suite and the end-to-end suite on NATS JetStream, RabbitMQ, Kafka (tansu), NSQ and the
# in-process transport, and the fault harness on NATS, RabbitMQ, Kafka and NSQ, with PostgreSQL and a
# MongoDB-wire server, starting the services first.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build output and installed tools live outside the clone so CI runs on the same machine reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ecommerce-saga/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

scripts/services.sh up
scripts/services.sh browser
scripts/services.sh stripe-fresh

# Remove databases left behind by interrupted test runs (each test creates its own t_<id> database).
if command -v psql >/dev/null; then
  psql -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT datname FROM pg_database WHERE datname LIKE 't\_%' OR datname LIKE 'f\_%'" |
    while read -r db; do
      [ -n "$db" ] && psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
    done
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== .sqlx/ (compile-time checked queries) matches the queries and migrations"
scripts/sqlx-prepare.sh --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (the fault-injection harness runs these binaries)"
cargo build --workspace --bins --locked
echo "== playground files are the pinned npm packages' files"
scripts/vendor-graphiql.sh --check
echo "== schema/schema.graphql: no breaking change without a deprecation period (graphql-inspector)"
scripts/schema-compat.sh
echo "== docker-compose.yml and Dockerfile (Compose schema, project rules, hadolint)"
scripts/lint-docker.sh "$CARGO_TARGET_DIR/debug/api"
echo "== deploy/k8s and deploy/prometheus (kustomize, Kubernetes schemas, project rules, promtool)"
scripts/lint-k8s.sh "$CARGO_TARGET_DIR/debug/api"
echo "== cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
set +e
run() { # a cargo test invocation whose output is kept for the summary
  "$@" 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}
# Unit tests of every crate; the crates' dependency directions; the Stripe gateway against
# localstripe; the broker conformance suite
# (NATS, RabbitMQ, Kafka, NSQ and in-process); the end-to-end suite on NATS.
run cargo test --workspace --locked --lib --bins
run cargo test --locked --test architecture --test broker --test stripe --test api "$@"
# The end-to-end suite again on RabbitMQ, on Kafka, on NSQ, and on the in-process transport (`api all`).
for broker in rabbitmq kafka nsq memory; do
  echo "== end-to-end suite on $broker"
  run env TEST_BROKER="$broker" cargo test --locked --test api "$@"
done
# The fault-injection harness (NATS, RabbitMQ, Kafka and NSQ with the test gateway, each with a 90 s
# PostgreSQL outage under load; NATS with Stripe at localstripe), printing its summary lines.
echo "== fault injection"
run cargo test --locked --test faults "$@" -- --nocapture
set -e
# One closing line over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1); if ($(i) ~ /^ignored/) s += $(i-1) } }
     END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
