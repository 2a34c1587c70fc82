#!/usr/bin/env bash
# The GraphQL playground's third-party files (GraphiQL and React, UMD builds) come from their npm
# packages at pinned versions and are committed in src/playground/vendor/, so the page works
# without internet (the API compiles them into its binary).
#
#   scripts/vendor-graphiql.sh          fetch the pinned packages and (re)write the vendored files
#   scripts/vendor-graphiql.sh --check  fail unless the vendored files are byte for byte those
#                                       packages' files (run by scripts/test.sh)
#
# `npm pack` checks each tarball against the registry's integrity hash. To move to another
# version, change it below, run the script, and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."

GRAPHIQL=4.1.2
REACT=18.3.1
VENDOR=src/playground/vendor
CACHE="${NPM_PACK_CACHE:-$HOME/.cache/ecommerce-saga/npm-pack}"

# package@version  file in the package  vendored name
FILES="
graphiql@$GRAPHIQL package/graphiql.min.js graphiql.min.js
graphiql@$GRAPHIQL package/graphiql.min.css graphiql.min.css
graphiql@$GRAPHIQL package/LICENSE LICENSE.graphiql
react@$REACT package/umd/react.production.min.js react.production.min.js
react@$REACT package/LICENSE LICENSE.react
react-dom@$REACT package/umd/react-dom.production.min.js react-dom.production.min.js
react-dom@$REACT package/LICENSE LICENSE.react-dom
"

mkdir -p "$CACHE"
tarball() { # package@version -> path of its tarball, fetched once
  local spec="$1" name="${1%@*}" version="${1##*@}"
  local tgz="$CACHE/$name-$version.tgz"
  if [ ! -s "$tgz" ]; then
    (cd "$CACHE" && npm pack --silent "$spec" >/dev/null)
  fi
  echo "$tgz"
}

check=false
[ "${1:-}" = "--check" ] && check=true
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failed=0
echo "$FILES" | while read -r spec path name; do
  [ -n "$spec" ] || continue
  tar -xzf "$(tarball "$spec")" -C "$tmp" "$path"
  if $check; then
    if ! cmp -s "$tmp/$path" "$VENDOR/$name"; then
      echo "vendor-graphiql: $VENDOR/$name differs from $path in $spec (run scripts/vendor-graphiql.sh)" >&2
      exit 1
    fi
  else
    mkdir -p "$VENDOR"
    cp "$tmp/$path" "$VENDOR/$name"
  fi
  rm -rf "${tmp:?}/package"
done || failed=1
[ "$failed" = 0 ] || exit 1

if $check; then
  echo "vendor-graphiql: graphiql@$GRAPHIQL, react@$REACT and react-dom@$REACT match $VENDOR"
else
  printf 'graphiql %s\nreact %s\nreact-dom %s\n' "$GRAPHIQL" "$REACT" "$REACT" >"$VENDOR/VERSIONS"
  echo "vendor-graphiql: wrote $VENDOR"
fi
