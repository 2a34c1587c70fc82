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

/// Within each crate, the top-level modules depend on each other without circles: a module that
/// imports another is never imported back, directly or through others.
#[test]
fn modules_depend_on_each_other_without_circles() {
    use std::collections::{BTreeMap, BTreeSet};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for src in
        ["crates/core/src", "crates/platform/src", "crates/checkout/src", "crates/storefront/src", "src"]
    {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut stack = vec![root.join(src)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let rel = path.strip_prefix(root.join(src)).unwrap();
                let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
                let module = first.trim_end_matches(".rs").to_string();
                let code = std::fs::read_to_string(&path).unwrap();
                for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                    for (i, _) in line.match_indices("crate::") {
                        let name: String = line[i + 7..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() && name != module {
                            graph.entry(module.clone()).or_default().insert(name);
                        }
                    }
                }
            }
        }
        // Depth-first search for a path from a module back to itself.
        fn reaches(
            graph: &BTreeMap<String, BTreeSet<String>>,
            from: &str,
            to: &str,
            seen: &mut BTreeSet<String>,
        ) -> bool {
            graph
                .get(from)
                .into_iter()
                .flatten()
                .any(|next| next == to || (seen.insert(next.clone()) && reaches(graph, next, to, seen)))
        }
        for module in graph.keys() {
            assert!(
                !reaches(&graph, module, module, &mut BTreeSet::new()),
                "{src}: {module} imports a module that imports it back ({graph:?})"
            );
        }
        assert!(src == "crates/core/src" || !graph.is_empty(), "{src}: no imports found; is the path right?");
    }
}
