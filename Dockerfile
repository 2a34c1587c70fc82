# syntax=docker/dockerfile:1
# Multi-stage build of the three roles (api, orchestrator, workers) into one small image; compose
# picks the role with `command`/`entrypoint`. Docker does not run on the development machines: CI
# checks this file with hadolint and docker-compose.yml against the Compose schema
# (scripts/lint-docker.sh).

# Build: the toolchain the project is tested with. librdkafka is compiled from source by rdkafka
# (needs make, gcc, perl, zlib and OpenSSL's headers, for TLS and SASL/SCRAM: all in the rust image).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Registry and target directory are BuildKit caches, so a code change rebuilds only this project.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
        -p ecommerce-saga -p ecommerce-saga-orchestrator -p ecommerce-saga-workers \
    && mkdir -p /out \
    && cp target/release/api target/release/orchestrator target/release/workers /out/

# Run: Debian slim with CA certificates (rustls verifies TLS peers against them) and OpenSSL's
# library (librdkafka's TLS and SASL/SCRAM), as nobody.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
USER 65534:65534
# API (GraphQL, /monitor, /metrics), orchestrator /metrics, workers /metrics.
EXPOSE 8080 9101 9102
ENTRYPOINT ["api"]
CMD ["serve"]
