# Build output is shared outside the clone (see scripts/test.sh).
export CARGO_TARGET_DIR ?= $(HOME)/.cache/ecommerce-saga/target
BIN := $(CARGO_TARGET_DIR)/debug

.PHONY: services up migrate-up seed run-api run-worker run-orchestrator run-all test lint build schema sqlx loadgen bench

services:          ## install/start PostgreSQL, NATS and the MongoDB-wire server
	scripts/services.sh up

up:                ## the whole system: services, migrations, seed, all three roles
	scripts/dev.sh

migrate-up:        ## create the database if needed and apply migrations
	cargo run --bin api -- migrate

seed:              ## load the demo catalog
	cargo run --bin api -- seed

run-api:
	cargo run --bin api -- serve

run-worker:
	cargo run --bin workers

run-orchestrator:
	cargo run --bin orchestrator

run-all:           ## every role in one process
	cargo run --bin api -- all

test:              ## every check and test, services started first
	scripts/test.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo build --bin api
	scripts/lint-docker.sh $(BIN)/api
	scripts/lint-k8s.sh $(BIN)/api

build:
	cargo build --workspace --release

schema:            ## regenerate schema/schema.graphql from the code
	cargo run -q --bin api -- print-schema > schema/schema.graphql

sqlx:              ## regenerate .sqlx/ (compile-time checked queries) after changing a query! or a migration
	scripts/sqlx-prepare.sh

loadgen:           ## 1000 checkouts through the running API (see loadgen --help)
	cargo run --release --bin loadgen -- --orders 1000

bench:             ## the benchmark tables of docs/benchmarks.md (release build, every broker)
	scripts/bench.sh
