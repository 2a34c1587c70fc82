//! What keeps one subscription client from exhausting the server: subscriptions per connection,
//! connections per user and per address, the `connection_init` timeout, keep-alive pings, and a
//! client that stops reading being closed instead of buffered for.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Ws};

const CART: &str = "subscription { myCart { itemCount } }";

/// Messages until one `matches`; fails if the connection closes first.
async fn until(ws: &mut Ws, matches: impl Fn(&Value) -> bool) -> Value {
    loop {
        let m = ws.next_json().await.expect("connection open");
        if matches(&m) {
            return m;
        }
    }
}

#[tokio::test]
async fn one_subscription_past_the_limit_is_refused_and_the_connection_stays() {
    let app = spawn_app_with(|c| c.api.websocket.max_subscriptions_per_connection = 3).await;
    let buyer = app.register().await;
    let mut ws = app.ws(Some(&buyer.token)).await;
    ws.expect_ack().await;
    for i in 0..3 {
        ws.start(&format!("c{i}"), CART, json!({})).await;
    }
    ws.start("c3", CART, json!({})).await;
    let refused = until(&mut ws, |m| m["type"] == "error").await;
    assert_eq!(refused["id"], "c3", "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "TOO_MANY_REQUESTS", "{refused}");
    assert!(refused["payload"][0]["message"].as_str().unwrap().contains("limit 3"), "{refused}");

    // Completing one makes room for another on the same connection.
    ws.send_text(json!({ "id": "c0", "type": "complete" }).to_string()).await;
    ws.start("c4", CART, json!({})).await;
    let m = until(&mut ws, |m| m["id"] == "c4").await;
    assert_eq!(m["type"], "next", "{m}");

    // A second subscription under an id still open closes the connection, as graphql-ws says.
    ws.start("c1", CART, json!({})).await;
    assert_eq!(ws.close_code().await, Some(4409));
    app.stop().await;
}

/// Subscriptions sent in the same write as `connection_init`, before the server acknowledged
/// it, count like any other (they were counted only once acknowledged, so a client could open any
/// number that way).
#[tokio::test]
async fn subscriptions_sent_with_connection_init_count_against_the_limit() {
    let app = spawn_app_with(|c| c.api.websocket.max_subscriptions_per_connection = 3).await;
    let buyer = app.register().await;
    let mut ws = app.ws_bare(false).await;
    let mut frames =
        vec![json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", buyer.token) } })
            .to_string()];
    frames.extend((0..6).map(|i| {
        json!({ "id": format!("c{i}"), "type": "subscribe", "payload": { "query": CART } }).to_string()
    }));
    ws.send_all(frames).await;
    let mut first: std::collections::BTreeMap<String, String> = Default::default();
    while first.len() < 6 {
        let m = ws.next_json().await.expect("connection open");
        if let Some(id) = m["id"].as_str() {
            first.entry(id.to_string()).or_insert_with(|| m["type"].as_str().unwrap_or_default().to_string());
        }
    }
    let refused: Vec<&String> = first.iter().filter(|(_, t)| *t == "error").map(|(id, _)| id).collect();
    assert_eq!(refused, ["c3", "c4", "c5"], "{first:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_user_past_the_connection_limit_is_told_to_try_again_and_gets_in_once_one_closes() {
    let app = spawn_app_with(|c| c.api.websocket.max_connections_per_user = 2).await;
    let buyer = app.register().await;
    let other = app.register().await;
    let mut first = app.ws(Some(&buyer.token)).await;
    first.expect_ack().await;
    let mut second = app.ws(Some(&buyer.token)).await;
    second.expect_ack().await;
    let mut third = app.ws(Some(&buyer.token)).await;
    assert_eq!(third.close_code().await, Some(1013), "try again later");
    // Another user is not held back by this one.
    let mut theirs = app.ws(Some(&other.token)).await;
    theirs.expect_ack().await;

    // Once a connection closes, the server frees its place as soon as it notices.
    drop(first);
    let mut admitted = false;
    for _ in 0..300 {
        let mut again = app.ws(Some(&buyer.token)).await;
        match again.init_result().await {
            Some(m) if m["type"] == "connection_ack" => {
                admitted = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(admitted, "a place freed by a closed connection is given again");
    second.start("still", CART, json!({})).await;
    assert_eq!(until(&mut second, |m| m["id"] == "still").await["type"], "next");
    app.stop().await;
}

#[tokio::test]
async fn an_address_past_the_connection_limit_is_told_to_try_again() {
    let app = spawn_app_with(|c| c.api.websocket.max_connections_per_address = 3).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut ws = app.ws(None).await;
        ws.expect_ack().await;
        open.push(ws);
    }
    let mut one_more = app.ws(None).await;
    assert_eq!(one_more.close_code().await, Some(1013));
    app.stop().await;
}

/// The per-address limit bounds connections that are not signed in: anonymous ones from an
/// address never keep its signed-in users out, and signed-in ones use no place of the address's
/// (they are bounded per user).
#[tokio::test]
async fn anonymous_connections_never_crowd_out_signed_in_users_of_their_address() {
    let app = spawn_app_with(|c| c.api.websocket.max_connections_per_address = 2).await;
    let buyers = [app.register().await, app.register().await, app.register().await];
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut ws = app.ws(None).await;
        ws.expect_ack().await;
        open.push(ws);
    }
    for buyer in &buyers {
        let mut ws = app.ws(Some(&buyer.token)).await;
        ws.expect_ack().await;
        ws.start("cart", CART, json!({})).await;
        assert_eq!(until(&mut ws, |m| m["id"] == "cart").await["type"], "next");
        open.push(ws);
    }
    let mut one_more = app.ws(None).await;
    assert_eq!(one_more.close_code().await, Some(1013), "the address's anonymous places are taken");
    app.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_initialises_is_closed_with_4408() {
    let app = spawn_app_with(|c| c.api.websocket.init_timeout = Duration::from_millis(300)).await;
    let mut ws = app.ws_bare(false).await;
    assert_eq!(ws.close_code().await, Some(4408));
    app.stop().await;
}

#[tokio::test]
async fn the_server_pings_and_closes_a_client_that_stopped_answering() {
    // A pong timeout well above any pause of a loaded test machine, so that only the client that
    // never answers is closed.
    let app = spawn_app_with(|c| {
        c.api.websocket.ping_interval = Duration::from_millis(200);
        c.api.websocket.pong_timeout = Duration::from_secs(2);
    })
    .await;
    let buyer = app.register().await;
    // One client answers pings (as graphql-ws does); it keeps reading meanwhile.
    let mut live = app.ws(Some(&buyer.token)).await;
    live.expect_ack().await;
    live.start("cart", CART, json!({})).await;
    let follower = tokio::spawn(async move {
        let mut pings_answered = 0;
        loop {
            let m = live.next_json().await.expect("the answering client stays connected");
            if m["type"] == "next" && m["payload"]["data"]["myCart"]["itemCount"] == 2 {
                return live;
            }
            pings_answered += 1;
            assert!(pings_answered < 10_000, "{m}");
        }
    });
    // The other stops answering.
    let mut silent = app.ws(Some(&buyer.token)).await;
    silent.pong = false;
    silent.expect_ack().await;
    let ping = silent.next_json().await.expect("a ping");
    assert_eq!(ping["type"], "ping", "{ping}");
    assert_eq!(silent.close_code().await, Some(4499));

    // Well past the timeout, the answering client still gets changes.
    app.add_to_cart(&buyer, "MUG-001", 2).await;
    tokio::time::timeout(Duration::from_secs(60), follower).await.expect("the change arrives").unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_not_buffered_for() {
    let app = spawn_app_with(|c| {
        c.api.websocket.send_timeout = Duration::from_millis(500);
        c.api.websocket.max_subscriptions_per_connection = 1000;
    })
    .await;
    let mut ws = app.ws_bare(true).await;
    ws.send_text(json!({ "type": "connection_init", "payload": {} }).to_string()).await;
    ws.expect_ack().await;
    // Each answer is the schema, tens of kilobytes: together far more than the sockets hold.
    let schema = "query { __schema { types { name description fields { name description type { name kind \
                  ofType { name kind } } } } } }";
    const ASKED: usize = 400;
    for i in 0..ASKED {
        ws.start(&i.to_string(), schema, json!({})).await;
    }
    // Not reading: the server gives up on it (counted by the metric, so not by a clock here).
    for _ in 0..600 {
        if app.metrics().ws_closed_for("not_reading") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.metrics().ws_closed_for("not_reading"), 1, "closed as a client that does not read");
    // What the client finds when it reads again: not every answer, and then the end (a reset:
    // the server closed with the rest of the requests unread).
    let mut answered = 0;
    while let Some(m) = ws.next_json().await {
        assert_ne!(m["type"], "error", "{m}");
        answered += (m["type"] == "next") as usize;
    }
    assert!(answered < ASKED, "the server closed the connection instead of buffering {ASKED} answers");
    app.stop().await;
}

/// The npm graphql-ws client, as a frontend runs it: it answers the server's pings by itself, so
/// a connection held past the pong timeout stays; a connection past the per-user limit is closed
/// with 1013, which it retries, and it gets in once the other connection is gone
/// (tests/browser/ws-limits.mjs).
#[tokio::test]
async fn a_graphql_ws_client_answers_pings_and_retries_a_connection_limit() {
    let app = spawn_app_with(|c| {
        c.api.websocket.ping_interval = Duration::from_millis(200);
        c.api.websocket.pong_timeout = Duration::from_secs(2);
        c.api.websocket.max_connections_per_user = 1;
    })
    .await;
    let buyer = app.register().await;
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(dir.join("node_modules/graphql-ws").is_dir(), "run scripts/services.sh browser");
    // Held past the ping interval and the pong timeout.
    let args = [format!("ws://{}/graphql/ws", app.addr), buyer.token.clone(), "3000".to_string()];
    // Off the test's runtime, which serves the API meanwhile.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node").current_dir(&dir).arg("ws-limits.mjs").args(&args).output()
    })
    .await
    .unwrap()
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"A CART 0"), "{stdout}");
    assert!(!stdout.contains("A CLOSED"), "a client that answers pings stays connected: {stdout}");
    let pings: u32 = lines.iter().find_map(|l| l.strip_prefix("A PINGS ")).unwrap().parse().unwrap();
    // Held 3 s with a ping every 200 ms: the count is loose, the point is that pings came.
    assert!(pings >= 2, "{stdout}");
    assert!(lines.contains(&"B CLOSED 1013"), "{stdout}");
    assert!(lines.contains(&"B CART 0"), "{stdout}");
    assert!(lines.contains(&"DONE"), "{stdout}");
    assert_eq!(app.metrics().ws_closed_for("no_pong"), 0);
    app.stop().await;
}
