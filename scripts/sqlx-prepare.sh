#!/usr/bin/env bash
# Regenerates .sqlx/: what `sqlx::query!` checks each query against when the workspace builds
# offline (SQLX_OFFLINE=true in .cargo/config.toml). The queries are described by a scratch
# PostgreSQL database built from migrations/. With --check, nothing is written: it fails when the
# committed .sqlx/ is not what the queries and migrations give now.
#   SQLX_ADMIN_URL  a database to create the scratch one from (postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ecommerce-saga/target}"
check=false
[ "${1:-}" = --check ] && check=true

admin="${SQLX_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
db="sqlx_prepare_$$"
url="${admin%/*}/$db"
out="$(mktemp -d)"
cleanup() {
  psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$out"
}
trap cleanup EXIT
psql "$admin" -qc "CREATE DATABASE $db"
for f in migrations/*.sql; do
  psql "$url" -q -v ON_ERROR_STOP=1 -f "$f" >/dev/null
done

# The macros write what they learn to SQLX_OFFLINE_DIR when they expand: make the crates that use
# them expand again, against the scratch database.
mapfile -t sources < <(grep -rlE 'sqlx::query(_as|_scalar)?!' --include='*.rs' crates src)
touch "${sources[@]}"
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$out" DATABASE_URL="$url" \
  cargo check --quiet --locked --workspace --lib
# And once more offline, so the next build is not left with the online expansion's fingerprints.
touch "${sources[@]}"

if $check; then
  if ! diff -r "$out" .sqlx >/dev/null 2>&1; then
    echo ".sqlx/ is out of date: run scripts/sqlx-prepare.sh and commit .sqlx/" >&2
    diff -r "$out" .sqlx >&2 || true
    exit 1
  fi
  echo ".sqlx/ is up to date ($(ls "$out" | wc -l) queries)"
else
  rm -rf .sqlx
  cp -r "$out" .sqlx
  echo "wrote .sqlx/ ($(ls .sqlx | wc -l) queries)"
fi
