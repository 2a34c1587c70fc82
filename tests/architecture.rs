//! The crates depend only downwards, and each binary carries only what its role uses
//! (docs/architecture.md). Checked with `cargo tree` over the locked dependency graph.

use std::process::Command;

/// The packages `package` depends on (normal dependencies, transitively), by name.
fn dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--locked", "--offline", "-e", "normal", "--prefix", "none", "-p", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
    let mut names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn assert_without(package: &str, forbidden: &[&str]) {
    let deps = dependencies(package);
    assert!(deps.iter().any(|d| d == package), "cargo tree listed nothing for {package}: {deps:?}");
    let found: Vec<&&str> = forbidden.iter().filter(|f| deps.iter().any(|d| d == **f)).collect();
    assert!(found.is_empty(), "{package} depends on {found:?}");
}

#[test]
fn the_core_crate_does_no_io() {
    assert_without(
        "ecommerce-core",
        &["tokio", "sqlx", "mongodb", "async-nats", "lapin", "rdkafka", "ecommerce-platform"],
    );
}

#[test]
fn platform_and_checkout_know_no_graphql_and_no_documents() {
    for package in ["ecommerce-platform", "ecommerce-checkout"] {
        assert_without(package, &["async-graphql", "async-graphql-axum", "mongodb", "ecommerce-storefront"]);
    }
    assert_without("ecommerce-storefront", &["async-graphql", "async-graphql-axum", "ecommerce-saga"]);
}

#[test]
fn the_orchestrator_binary_carries_neither_graphql_nor_mongodb() {
    assert_without(
        "ecommerce-saga-orchestrator",
        &["async-graphql", "async-graphql-axum", "mongodb", "ecommerce-storefront", "ecommerce-saga"],
    );
}

#[test]
fn the_workers_binary_carries_no_graphql() {
    // MongoDB it does use: the cart worker keeps carts in step with orders.
    assert_without("ecommerce-saga-workers", &["async-graphql", "async-graphql-axum", "ecommerce-saga"]);
}
