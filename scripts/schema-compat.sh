#!/usr/bin/env bash
# Fails on a breaking change to schema/schema.graphql (graphql-inspector's judgement, in
# tests/browser/schema-diff.mjs) that did not go through a deprecation period: every commit since
# this check exists that changed the schema is compared with the commit before it, and the working
# tree with HEAD. Removing what the previous version had deprecated is allowed.
#
# The one planned break (issue 17) landed before this check; the README's "Schema changelog" lists it.
set -euo pipefail
cd "$(dirname "$0")/.."
schema=schema/schema.graphql
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
  echo "schema-compat: a shallow clone lacks the history to compare; clone with full history" >&2
  exit 1
fi
# The commit that added this script: changes from then on are checked (none before it is, when
# the script is not committed yet).
since="$(git log --diff-filter=A --format=%H -- scripts/schema-compat.sh | tail -n 1)"

status=0
checked=0
compare() { # <old file> <new file> <label>
  checked=$((checked + 1))
  node tests/browser/schema-diff.mjs "$1" "$2" "$3" || { echo "schema-compat: $3 breaks clients" >&2; status=1; }
}
if [ -n "$since" ]; then
  for commit in $(git log --reverse --format=%H HEAD -- "$schema"); do
    git merge-base --is-ancestor "$since" "$commit" || continue
    git show "$commit~1:$schema" >"$tmp/old.graphql"
    git show "$commit:$schema" >"$tmp/new.graphql"
    compare "$tmp/old.graphql" "$tmp/new.graphql" "$(git log -1 --format='%h %s' "$commit" | cut -c1-60)"
  done
fi
git show "HEAD:$schema" >"$tmp/head.graphql"
compare "$tmp/head.graphql" "$schema" "working tree"
if [ "$status" -eq 0 ]; then
  echo "schema-compat: $checked schema versions compared; none breaks clients without a deprecation period"
fi
exit "$status"
