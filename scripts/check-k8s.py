#!/usr/bin/env python3
"""Checks the rendered Kubernetes manifests (kustomize build output) against the project's rules.

    check-k8s.py rendered.yaml .env.example deploy/k8s/secrets.example.env [api-binary]

The schema is kubernetes-validate's job; this checks what the schema cannot know:
- the ConfigMap and the Secret's keys together are exactly the settings .env.example lists (which
  a unit test keeps equal to what the code reads), with no key in both;
- every Deployment runs one of the role binaries (with the `api` binary: a subcommand it has),
  reads the ConfigMap and the Secret, probes /healthz (liveness) on the port its address setting
  gives and /readyz (readiness) on its admin port (the API's API_ADMIN_ADDR, which Prometheus
  scrapes and its Service does not expose), has CPU and memory requests and a memory limit, a termination
  grace period, and runs as non-root;
- every role has a PodDisruptionBudget selecting its pods, and the API and the workers a
  HorizontalPodAutoscaler aimed at their Deployment; every Service selects some pods;
- TRUSTED_PROXY_HOPS is the number of proxies the manifests put in front of the API (an Ingress
  routing to its Service: one), so per-address limits count clients, not the proxy;
- with the `api` binary: the settings start (`api check-config` with the ConfigMap's values and
  the Secret's keys filled in), so a render that production would refuse fails here; with the
  broker it picks and with each other one BROKER can name (each needs its own account).
"""

import re
import subprocess
import sys

import yaml

ROLE_BINARIES = {"api", "orchestrator", "workers"}
# The setting that gives each role's listening address.
ADDRESS_SETTING = {"api": "API_ADDR", "orchestrator": "ORCHESTRATOR_METRICS_ADDR", "workers": "WORKERS_METRICS_ADDR"}
# Where each role answers /readyz and /metrics: the API on its admin address, never the public one.
ADMIN_SETTING = {"api": "API_ADMIN_ADDR", "orchestrator": "ORCHESTRATOR_METRICS_ADDR", "workers": "WORKERS_METRICS_ADDR"}
SECRET = "ecommerce-saga-secrets"


def env_keys(path):
    keys = []
    with open(path) as f:
        for line in f:
            m = re.match(r"^([A-Z][A-Z0-9_]*)=", line)
            if m:
                keys.append(m.group(1))
    return keys


def main():
    rendered, env_example, secrets_example = sys.argv[1:4]
    api_binary = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    errors = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    settings = env_keys(env_example)
    secret_keys = env_keys(secrets_example)
    maps = by_kind.get("ConfigMap", [])
    if len(maps) != 1:
        errors.append(f"expected one ConfigMap, found {len(maps)}")
        config, config_name = {}, None
    else:
        config, config_name = maps[0].get("data", {}), maps[0]["metadata"]["name"]
    for k in sorted(set(config) & set(secret_keys)):
        errors.append(f"{k} is in both the ConfigMap and the Secret")
    for k in sorted(set(config) | set(secret_keys)):
        if k not in settings:
            errors.append(f"{k} is not a setting the code reads (.env.example)")
    for k in settings:
        if k not in config and k not in secret_keys:
            errors.append(f"{k} (.env.example) is in neither the ConfigMap nor the Secret")

    subcommands = None
    if api_binary:
        help_text = subprocess.run([api_binary, "--help"], capture_output=True, text=True, check=True).stdout
        section = help_text.split("Commands:", 1)[1].split("Options:", 1)[0]
        subcommands = {line.split()[0] for line in section.splitlines() if line.strip()}

    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    public_api_port = None
    if set(deployments) != ROLE_BINARIES:
        errors.append(f"expected Deployments {sorted(ROLE_BINARIES)}, found {sorted(deployments)}")
    for name, d in deployments.items():
        where = f"Deployment {name}"
        pod = d["spec"]["template"]["spec"]
        labels = d["spec"]["template"]["metadata"].get("labels", {})
        selector = d["spec"]["selector"].get("matchLabels", {})
        if any(labels.get(k) != v for k, v in selector.items()):
            errors.append(f"{where}: its selector does not select its own pods")
        if not pod.get("terminationGracePeriodSeconds"):
            errors.append(f"{where}: no terminationGracePeriodSeconds")
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            errors.append(f"{where}: pods must run as non-root")
        containers = pod.get("initContainers", []) + pod["containers"]
        for c in containers:
            cw = f"{where}, container {c['name']}"
            command = c.get("command") or []
            if not command or command[0] not in ROLE_BINARIES:
                errors.append(f"{cw}: command {command} does not run a role binary")
            elif command[0] == "api" and subcommands is not None:
                if len(command) < 2 or command[1] not in subcommands:
                    errors.append(f"{cw}: `api {' '.join(command[1:])}` is not an api subcommand")
            refs = {(next(iter(k for k in e if k.endswith("Ref"))), next(iter(e.values()))["name"]) for e in c.get("envFrom", [])}
            if ("configMapRef", config_name) not in refs:
                errors.append(f"{cw}: does not read the ConfigMap {config_name}")
            if ("secretRef", SECRET) not in refs:
                errors.append(f"{cw}: does not read the Secret {SECRET}")
            for e in c.get("env", []):
                if e["name"] not in settings:
                    errors.append(f"{cw}: env {e['name']} is not a setting the code reads")
            res = c.get("resources", {})
            if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory"):
                errors.append(f"{cw}: no CPU and memory requests")
            if not res.get("limits", {}).get("memory"):
                errors.append(f"{cw}: no memory limit")
        main_container = next((c for c in pod["containers"] if c["name"] == name), None)
        if main_container is None:
            errors.append(f"{where}: no container named {name}")
            continue
        addr = config.get(ADDRESS_SETTING[name], "")
        port = int(addr.rsplit(":", 1)[1]) if ":" in addr else None
        if addr and not addr.startswith("0.0.0.0:"):
            errors.append(f"{where}: {ADDRESS_SETTING[name]}={addr} does not listen on the pod's address")
        ports = {p.get("name"): p["containerPort"] for p in main_container.get("ports", [])}
        if port not in ports.values():
            errors.append(f"{where}: {ADDRESS_SETTING[name]} port {port} is not a container port {ports}")
        admin = config.get(ADMIN_SETTING[name], "")
        admin_port = int(admin.rsplit(":", 1)[1]) if ":" in admin else None
        if admin_port not in ports.values():
            errors.append(f"{where}: {ADMIN_SETTING[name]} port {admin_port} is not a container port {ports}")
        for probe, path, want in (("livenessProbe", "/healthz", port), ("readinessProbe", "/readyz", admin_port)):
            get = main_container.get(probe, {}).get("httpGet", {})
            target = ports.get(get.get("port"), get.get("port"))
            if get.get("path") != path or target != want:
                errors.append(f"{where}: {probe} must GET {path} on port {want}, has {get}")
        if name == "api":
            scrape = d["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/port")
            if scrape != str(admin_port):
                errors.append(f"{where}: Prometheus must scrape the admin port {admin_port}, not {scrape}")
            public_api_port = port

    def selects(selector, kind_name):
        hits = [n for n, d in deployments.items()
                if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())]
        if not hits:
            errors.append(f"{kind_name}: selects no pods")
        return hits

    pdbs = set()
    for p in by_kind.get("PodDisruptionBudget", []):
        pdbs.update(selects(p["spec"]["selector"].get("matchLabels", {}), f"PodDisruptionBudget {p['metadata']['name']}"))
    for role in sorted(ROLE_BINARIES - pdbs):
        errors.append(f"{role}: no PodDisruptionBudget")
    scaled = set()
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        ref = h["spec"]["scaleTargetRef"]
        if ref["kind"] != "Deployment" or ref["name"] not in deployments:
            errors.append(f"HorizontalPodAutoscaler {h['metadata']['name']}: targets no Deployment here ({ref})")
        scaled.add(ref["name"])
    for role in ("api", "workers"):
        if role not in scaled:
            errors.append(f"{role}: no HorizontalPodAutoscaler")
    for s in by_kind.get("Service", []):
        selects(s["spec"].get("selector", {}), f"Service {s['metadata']['name']}")
        # Clients reach the API's Service (through the Ingress): only its public port.
        if s["spec"].get("selector", {}).get("app.kubernetes.io/name") == "api":
            api_ports = {p.get("name"): p["containerPort"] for c in deployments.get("api", {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", []) for p in c.get("ports", [])}
            for p in s["spec"].get("ports", []):
                target = api_ports.get(p.get("targetPort"), p.get("targetPort"))
                if target != public_api_port:
                    errors.append(f"Service {s['metadata']['name']}: exposes port {target}, not only the public {public_api_port}")

    # The proxies in front of the API: an Ingress that routes to its Service.
    api_services = {s["metadata"]["name"] for s in by_kind.get("Service", [])
                    if s["spec"].get("selector", {}).get("app.kubernetes.io/name") == "api"}
    ingresses = [i for i in by_kind.get("Ingress", [])
                 if any(p["backend"].get("service", {}).get("name") in api_services
                        for r in i["spec"].get("rules", []) for p in r.get("http", {}).get("paths", []))]
    hops = int(config.get("TRUSTED_PROXY_HOPS") or 0)
    if hops != (1 if ingresses else 0):
        errors.append(f"TRUSTED_PROXY_HOPS={hops}, but {len(ingresses)} Ingress route(s) to the API's Service: "
                      "per-address limits would count the proxy, or addresses a client wrote itself")

    if api_binary and config_name:
        env = {k: v for k, v in config.items()}
        # The Secret's keys as the operator fills them in (placeholders where the example is empty).
        with open(secrets_example) as f:
            for line in f:
                m = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
                if m:
                    env[m.group(1)] = m.group(2) or "set-in-the-secret"
        env["PATH"] = "/usr/bin:/bin"
        # With the broker the render picks, and with each other one an operator may switch to by
        # changing BROKER alone: each needs its own account in the Secret.
        chosen = env.get("BROKER", "nats")
        for broker in [chosen] + [b for b in ("nats", "rabbitmq", "kafka") if b != chosen]:
            run = subprocess.run([api_binary, "check-config"], capture_output=True, text=True,
                                 env={**env, "BROKER": broker})
            if run.returncode != 0:
                errors.append(f"the roles would not start with these settings (BROKER={broker}): "
                              f"{run.stderr.strip() or run.stdout.strip()}")

    if errors:
        for e in errors:
            print(f"{rendered}: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"{rendered}: {len(docs)} resources follow the project's rules")


if __name__ == "__main__":
    main()
