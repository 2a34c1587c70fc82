use std::io::{Read, Write};

use serde_json::{json, Value};

use crate::helpers::{code, spawn_app};

fn message(body: &Value) -> &str {
    body["errors"][0]["message"].as_str().unwrap_or_else(|| panic!("no error message in {body}"))
}

#[tokio::test]
async fn depth_and_fragment_shapes_are_limited_and_errors_carry_codes() {
    let app = spawn_app().await;
    let buyer = app.register().await;

    // The application's fields nest at most 12 deep (13 here; the engine would refuse the
    // nonsense fields too, but the depth limit answers first).
    let deep = format!("{{ orders {{ nodes {{ {}id{} }} }} }}", "lines { ".repeat(10), " }".repeat(10));
    let body = app.gql(Some(&buyer.token), &deep, json!({})).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert!(message(&body).contains("deep"), "{body}");

    // Introspection is not counted in depth, but three nested lists of it are refused
    // (graphql-js's MaxIntrospectionDepthRule): each level multiplies the answer.
    let fan_out = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }";
    let body = app.gql(None, fan_out, json!({})).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert!(message(&body).contains("introspection depth"), "{body}");
    let two_lists = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { fields { name } } } } } } } } } } } } } }";
    let body = app.gql(None, two_lists, json!({})).await;
    assert!(body.get("errors").is_none(), "deep ofType chains are what introspection tools send: {body}");

    // Fragments that spread the next one twice: 2^24 fields once expanded. The engine's own walk
    // over such a document took a minute of CPU per request; it is refused before that.
    let mut doubling = String::from("{ ...F0 }");
    for i in 0..24 {
        doubling.push_str(&format!(" fragment F{i} on Query {{ ...F{n} ...F{n} }}", n = i + 1));
    }
    doubling.push_str(" fragment F24 on Query { __typename }");
    let body = app.gql(None, &doubling, json!({})).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert!(message(&body).contains("too large") || message(&body).contains("recursion depth"), "{body}");
    let cycle = app.gql(None, "{ ...A } fragment A on Query { ...A ...A }", json!({})).await;
    assert_eq!(code(&cycle), "BAD_USER_INPUT", "{cycle}");
    assert!(message(&cycle).contains("within itself"), "{cycle}");

    let syntax = app.gql(None, "{ products { ", json!({})).await;
    assert_eq!(code(&syntax), "BAD_USER_INPUT");
    let unknown_field = app.gql(None, "{ products { password } }", json!({})).await;
    assert_eq!(code(&unknown_field), "BAD_USER_INPUT");
    // An id that names no order is absent, like one that names someone else's.
    let bad_id = app.gql(Some(&buyer.token), "{ order(id: \"not-a-uuid\") { id } }", json!({})).await;
    assert_eq!(bad_id["data"], json!({ "order": null }));
    assert!(bad_id.get("errors").is_none(), "{bad_id}");

    let ready = app.http.get(app.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn errors_do_not_quote_the_document_back() {
    let app = spawn_app().await;
    // A syntax error says where and what, not the line it is on (which may be the whole body).
    let filler = "q".repeat(20_000);
    let body = app.gql(None, &format!("{{ products {{ sku {filler} ( }}"), json!({})).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert!(message(&body).starts_with("Syntax error"), "{body}");
    assert!(!message(&body).contains("qqq"), "{body}");
    assert!(body["errors"][0]["locations"][0]["column"].as_u64().unwrap() > 20_000, "{body}");
    // Other messages quote names from the document, but only so much of them.
    let body = app.gql(None, &format!("{{ products {{ {filler} }} }}"), json!({})).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert!(message(&body).starts_with("Unknown field"), "{body}");
    assert!(message(&body).chars().count() <= 301, "{} characters", message(&body).len());
    // Over a websocket the same errors carry codes too.
    let mut ws = app.ws(None).await;
    ws.expect_ack().await;
    ws.start("bad", "subscription { orderEvents(", json!({})).await;
    let p = ws.next_payload().await.expect("an answer");
    assert_eq!(code(&p), "BAD_USER_INPUT", "{p}");
    let mut ws = app.ws(None).await;
    ws.expect_ack().await;
    ws.start("unknown", "subscription { nope }", json!({})).await;
    let p = ws.next_payload().await.expect("an answer");
    assert_eq!(code(&p), "BAD_USER_INPUT", "{p}");
    app.stop().await;
}

/// Sends `head` and then `body` on a plain socket, as a client that does not wait for
/// `100 Continue` does, and returns the status line and body of the answer.
fn send_raw(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> std::io::Result<(String, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer.lines().next().unwrap_or_default().to_string();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    Ok((status, body))
}

#[tokio::test]
async fn oversized_bodies_get_413_with_a_graphql_error() {
    let app = spawn_app().await;
    let addr = app.addr;
    // 8 MiB against the 64 KiB limit, with its length declared up front.
    let big = format!("{{\"query\":\"{{ products {{ sku }} }} #{}\"}}", "x".repeat(8 << 20));
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let (status, body) = tokio::task::spawn_blocking(move || send_raw(addr, &head, big.as_bytes()))
        .await
        .unwrap()
        .expect("an answer, not a broken connection");
    assert!(status.contains(" 413 "), "{status}");
    let body: Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert!(message(&body).contains("65536"), "{body}");

    // Without a declared length (chunked), the body is cut off at the limit: also a 413.
    let chunk = "x".repeat(100_000);
    let chunked = format!("{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len());
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let (status, _) = tokio::task::spawn_blocking(move || send_raw(addr, &head, chunked.as_bytes()))
        .await
        .unwrap()
        .expect("an answer");
    assert!(status.contains(" 413 "), "{status}");

    // A client that asks first (Expect: 100-continue) is answered at once, without a 100.
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        8 << 20
    );
    let (status, _) =
        tokio::task::spawn_blocking(move || send_raw(addr, &head, b"")).await.unwrap().expect("an answer");
    assert!(status.contains(" 413 "), "{status}");
    // And an HTTP client library sees the 413 too.
    let resp = app
        .http
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body(format!("{{\"query\":\"{{ products {{ sku }} }} #{}\"}}", "x".repeat(200_000)))
        .send()
        .await
        .expect("an answer");
    assert_eq!(resp.status(), 413);

    // The server is fine afterwards, and a body within the limit is served.
    let small = app.gql(None, "{ products(first: 1) { nodes { sku } } }", json!({})).await;
    assert!(small["data"]["products"]["nodes"].is_array(), "{small}");
    app.stop().await;
}

/// A client can price a document before the limit refuses it: every answer carries
/// `extensions.cost` (what this document cost, and the limits), growing with the page size it
/// asks for; a refusal names its cost and the limit the same way.
#[tokio::test]
async fn every_answer_tells_what_its_query_cost_and_the_limits() {
    let app = spawn_app().await;
    let g = &app.config().api.graphql;
    let limits =
        json!({ "maxComplexity": g.max_complexity, "maxDepth": g.max_depth, "maxAliases": g.max_aliases });
    let cost = |body: &Value| -> u64 {
        let c = &body["extensions"]["cost"];
        for k in ["maxComplexity", "maxDepth", "maxAliases"] {
            assert_eq!(c[k], limits[k], "{body}");
        }
        c["complexity"].as_u64().unwrap_or_else(|| panic!("no cost in {body}"))
    };
    let page = |n: usize| format!("{{ products(first: {n}) {{ nodes {{ sku name }} }} }}");
    let small = cost(&app.gql(None, &page(2), json!({})).await);
    let large = cost(&app.gql(None, &page(20), json!({})).await);
    assert!(small > 0 && large > small * 5, "a page costs by its size: {small} vs {large}");
    // Mutations and failed resolvers are priced too: the document was validated.
    let refused = app.gql(None, "{ me { id } }", json!({})).await;
    assert_eq!(code(&refused), "UNAUTHENTICATED");
    assert!(cost(&refused) > 0, "{refused}");

    let expensive = "{ a: products(first: 100) { nodes { sku name price { amount currency } stockLevel } }
                       b: products(first: 100) { nodes { sku name price { amount currency } stockLevel } } }";
    let body = app.gql(None, expensive, json!({})).await;
    assert_eq!(code(&body), "BAD_USER_INPUT");
    assert!(body.get("data").is_none_or(Value::is_null), "{body}");
    let priced = &body["errors"][0]["extensions"]["cost"];
    assert!(priced["complexity"].as_u64().unwrap() > g.max_complexity as u64, "{body}");
    assert_eq!(priced["maxComplexity"], g.max_complexity);
    assert!(message(&body).contains(&format!("the limit is {}", g.max_complexity)), "{body}");
    app.stop().await;
}
