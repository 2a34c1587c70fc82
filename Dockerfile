# Multi-stage build of the three roles. (Docker does not run on the development machines; this is
# for users who run the stack with docker compose.)
FROM rust:1.85-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/api /src/target/release/orchestrator /src/target/release/workers /usr/local/bin/
USER 65534
ENTRYPOINT ["api"]
