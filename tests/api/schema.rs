use std::path::PathBuf;

use serde_json::{json, Value};

use crate::helpers::spawn_app;

/// The committed SDL must match the code. Regenerate with `make schema`.
#[test]
fn committed_schema_is_up_to_date() {
    let committed =
        std::fs::read_to_string(root().join("schema/schema.graphql")).expect("schema/schema.graphql exists");
    let current = ecommerce_saga::graphql::sdl();
    assert!(
        committed == current,
        "schema/schema.graphql is out of date: run `make schema` (cargo run --bin api -- print-schema > schema/schema.graphql)"
    );
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The introspection query GraphiQL, GraphQL Code Generator, Apollo and Relay send: graphql-js 16's
/// `getIntrospectionQuery()` with every option on, as committed.
fn introspection_query() -> String {
    std::fs::read_to_string(root().join("tests/fixtures/introspection-query.graphql")).unwrap()
}

/// Runs `node tests/browser/introspection.mjs <args>` (graphql-js from tests/browser/node_modules).
fn graphql_js(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let dir = root().join("tests/browser");
    assert!(
        dir.join("node_modules/graphql").is_dir(),
        "graphql-js is not installed in {}: run scripts/services.sh browser",
        dir.display()
    );
    std::process::Command::new("node")
        .current_dir(&dir)
        .arg("introspection.mjs")
        .args(args)
        .output()
        .expect("node runs (Node.js 20 is on the machine)")
}

#[test]
fn the_fixture_is_what_graphql_js_sends() {
    let out = graphql_js(&["query".as_ref()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        introspection_query(),
        "tests/fixtures/introspection-query.graphql differs from graphql-js's getIntrospectionQuery(): \
         regenerate it with `node tests/browser/introspection.mjs query`"
    );
}

#[tokio::test]
async fn the_standard_introspection_query_builds_the_committed_schema() {
    let app = spawn_app().await;
    let resp = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": introspection_query(), "operationName": "IntrospectionQuery" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert!(answer.get("errors").is_none(), "introspection refused: {answer}");
    assert!(answer["data"]["__schema"]["types"].as_array().is_some_and(|t| t.len() > 20), "{answer}");

    // graphql-js builds a client schema from the answer, as codegen does, and it is the committed SDL.
    let file = std::env::temp_dir().join(format!("introspection-{}.json", app.database()));
    std::fs::write(&file, answer.to_string()).unwrap();
    let sdl = root().join("schema/schema.graphql");
    let out = graphql_js(&["compare".as_ref(), file.as_os_str(), sdl.as_os_str()]);
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("SAME"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The same query over a websocket (GraphiQL sends its schema query there when told to).
    let mut ws = app.ws(None).await;
    ws.expect_ack().await;
    ws.start("schema", &introspection_query(), json!({})).await;
    let p = ws.next_payload().await.expect("an answer");
    assert!(p.get("errors").is_none() && p["data"]["__schema"]["queryType"]["name"] == "Query", "{p}");
    app.stop().await;
}

/// Every type, field, argument, input field and enum value a client can see has a description:
/// what GraphiQL shows and codegen tools write into the generated types' doc comments.
#[tokio::test]
async fn everything_a_client_sees_is_described() {
    let app = spawn_app().await;
    let answer: Value = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": introspection_query(), "operationName": "IntrospectionQuery" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schema = &answer["data"]["__schema"];
    let described = |v: &Value| v["description"].as_str().is_some_and(|d| !d.trim().is_empty());
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let mut missing = Vec::new();
    let mut counted = 0;
    let mut check = |what: String, v: &Value| {
        counted += 1;
        if !described(v) {
            missing.push(what);
        }
    };
    for t in list(&schema["types"]) {
        let name = t["name"].as_str().unwrap().to_string();
        // Introspection's own types, and the scalars the GraphQL spec defines (described there;
        // codegen tools map them to the language's own types).
        if name.starts_with("__") || ["String", "Int", "Float", "Boolean", "ID"].contains(&name.as_str()) {
            continue;
        }
        check(name.clone(), &t);
        for f in list(&t["fields"]) {
            let field = format!("{name}.{}", f["name"].as_str().unwrap());
            for a in list(&f["args"]) {
                check(format!("{field}({})", a["name"].as_str().unwrap()), &a);
            }
            check(field, &f);
        }
        for f in list(&t["inputFields"]) {
            check(format!("{name}.{}", f["name"].as_str().unwrap()), &f);
        }
        for v in list(&t["enumValues"]) {
            check(format!("{name}.{}", v["name"].as_str().unwrap()), &v);
        }
    }
    assert!(counted > 200, "introspection answered: {answer}");
    assert!(missing.is_empty(), "{} of {counted} undescribed: {missing:#?}", missing.len());
    app.stop().await;
}

/// GraphQL Code Generator, as a frontend team runs it, types the operations in
/// tests/browser/codegen/operations.graphql from this running server and from the committed SDL
/// (byte for byte the same file), and `tsc --strict` compiles a small client against them with no
/// `any` (tests/browser/codegen/run.mjs).
#[tokio::test]
async fn codegen_types_a_frontend_from_the_running_server_and_tsc_compiles_it() {
    let app = spawn_app().await;
    let url = app.url("/graphql");
    let sdl = root().join("schema/schema.graphql");
    let dir = root().join("tests/browser");
    assert!(
        dir.join("node_modules/@graphql-codegen/cli").is_dir(),
        "GraphQL Code Generator is not installed in {}: run scripts/services.sh browser",
        dir.display()
    );
    // Blocking: node calls back into the server this test's runtime serves.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .current_dir(&dir)
            .arg("codegen/run.mjs")
            .arg(&url)
            .arg(&sdl)
            .output()
            .expect("node runs (Node.js 20 is on the machine)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("IDENTICAL") && stdout.contains("TSC OK"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.stop().await;
}
