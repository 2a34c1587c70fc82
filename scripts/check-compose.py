#!/usr/bin/env python3
"""Checks docker-compose.yml against the Compose schema and the project's own rules.

    check-compose.py docker-compose.yml compose_spec.json Dockerfile .env.example [api-binary]

Rules beyond the schema: third-party services use the real images with pinned tags; every
project service runs the one image built from the Dockerfile; the Dockerfile is multi-stage and
its final stage holds the three role binaries; environment variables given to the roles are ones
the code reads (.env.example lists them all); ports the roles listen on are published; every
`depends_on` names a service that starts without a profile; with the `api` binary, every command
given to it is one of its subcommands.
"""

import json
import re
import subprocess
import sys

import jsonschema
import yaml

REAL_IMAGES = {"postgres", "mongo", "nats", "rabbitmq", "apache/kafka", "nsqio/nsq"}
ROLE_BINARIES = {"api", "orchestrator", "workers"}
# Variables read by libraries rather than the typed config.
LIBRARY_VARS = {"RUST_LOG", "LOG_FORMAT"}


def fail(errors):
    for e in errors:
        print(f"docker-compose.yml: {e}", file=sys.stderr)
    sys.exit(1)


def main():
    compose_path, schema_path, dockerfile_path, env_example_path = sys.argv[1:5]
    api_binary = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else None
    with open(compose_path) as f:
        compose = yaml.safe_load(f)
    with open(schema_path) as f:
        schema = json.load(f)

    errors = []
    validator = jsonschema.Draft7Validator(schema)
    for e in sorted(validator.iter_errors(compose), key=lambda e: list(e.path)):
        errors.append(f"schema: {'/'.join(map(str, e.path)) or '(root)'}: {e.message}")
    if errors:
        fail(errors)

    known_vars = set(LIBRARY_VARS)
    with open(env_example_path) as f:
        for line in f:
            m = re.match(r"^([A-Z][A-Z0-9_]*)=", line)
            if m:
                known_vars.add(m.group(1))

    with open(dockerfile_path) as f:
        dockerfile = f.read()
    stages = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", dockerfile, re.M | re.I)
    if len(stages) < 2:
        errors.append("Dockerfile: expected a multi-stage build (a build stage and a runtime stage)")
    final = dockerfile[[m.start() for m in re.finditer(r"^FROM\s", dockerfile, re.M | re.I)][-1]:]
    if "COPY --from=" not in final:
        errors.append("Dockerfile: the runtime stage must copy the binaries from the build stage")
    for binary in ROLE_BINARIES:
        if f"target/release/{binary}" not in dockerfile:
            errors.append(f"Dockerfile: does not build {binary}")

    subcommands = None
    if api_binary:
        help_text = subprocess.run([api_binary, "--help"], capture_output=True, text=True, check=True).stdout
        section = help_text.split("Commands:", 1)[1].split("Options:", 1)[0]
        subcommands = {line.split()[0] for line in section.splitlines() if line.strip()}

    services = compose.get("services", {})
    unprofiled = {name for name, s in services.items() if not s.get("profiles")}
    builds = set()
    for name, s in services.items():
        image = s.get("image", "")
        if "build" in s:
            build = s["build"] if isinstance(s["build"], dict) else {"context": s["build"]}
            if build.get("context") != "." or build.get("dockerfile", "Dockerfile") != "Dockerfile":
                errors.append(f"{name}: roles build from ./Dockerfile")
            builds.add(image)
            entry = (s.get("entrypoint") or ["api"])[0]
            if entry not in ROLE_BINARIES:
                errors.append(f"{name}: entrypoint {entry!r} is not one of {sorted(ROLE_BINARIES)}")
            command = s.get("command")
            if entry == "api" and subcommands is not None:
                if not command or command[0] not in subcommands:
                    errors.append(f"{name}: api command {command!r} is not one of {sorted(subcommands)}")
            env = s.get("environment", {})
            if isinstance(env, list):
                env = dict(item.split("=", 1) for item in env)
            for var in env:
                if var not in known_vars:
                    errors.append(f"{name}: {var} is not a variable the code reads (see .env.example)")
            published = {str(p).split(":")[-1] for p in s.get("ports", [])}
            for var in ("API_ADDR", "ORCHESTRATOR_METRICS_ADDR", "WORKERS_METRICS_ADDR"):
                addr = str(env.get(var, ""))
                if addr.startswith("0.0.0.0:") and addr.split(":")[1] not in published:
                    errors.append(f"{name}: listens on {addr} ({var}) but does not publish that port")
        else:
            repo, _, tag = image.partition(":")
            if repo not in REAL_IMAGES:
                errors.append(f"{name}: image {image!r} is not one of the real images {sorted(REAL_IMAGES)}")
            if not tag or tag == "latest":
                errors.append(f"{name}: pin the image tag ({image!r})")
        for dep in s.get("depends_on", {}) or {}:
            if dep not in services:
                errors.append(f"{name}: depends on unknown service {dep!r}")
            elif name in unprofiled and dep not in unprofiled:
                errors.append(f"{name}: depends on {dep!r}, which starts only with a profile")
    if len(builds) != 1:
        errors.append(f"the roles should share one image, found {sorted(builds)}")
    for role in ("api", "orchestrator", "workers", "migrate"):
        if role not in services:
            errors.append(f"missing service {role!r}")
    if errors:
        fail(errors)
    print(f"docker-compose.yml: {len(services)} services valid against the Compose schema and project rules")


if __name__ == "__main__":
    main()
