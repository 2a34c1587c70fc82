//! The saga monitor: operator-only queries and change stream, and the page itself driven in
//! headless Chromium (Debian's `chromium` with `playwright-core`, installed by
//! `scripts/services.sh up`).

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{code, spawn_app, spawn_app_with, BrowserCheck, TestApp};

const SAGA: &str = "id orderId orderStatus status step failureReason eventCount";

#[tokio::test]
async fn operators_see_every_saga_live_and_buyers_are_forbidden() {
    let app = spawn_app().await;
    let op = app.operator().await;
    let buyer = app.register().await;

    let mut ws = app.ws(Some(&op.token)).await;
    ws.expect_ack().await;
    ws.start("all", &format!("subscription {{ sagaChanges {{ {SAGA} }} }}"), json!({})).await;
    let mut done_only = app.ws(Some(&op.token)).await;
    done_only.expect_ack().await;
    done_only
        .start("done", "subscription { sagaChanges(status: COMPLETED) { orderId status } }", json!({}))
        .await;
    // Subscriptions start before the order; give the streams a moment to read their start time.
    tokio::time::sleep(Duration::from_millis(300)).await;

    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let order = app.place(&buyer, "monitor-1", "tok_visa").await;

    // The change stream follows the saga to its end: status never goes back, the event count grows.
    let mut seen = Vec::new();
    loop {
        let p = ws.next_payload().await.expect("stream open");
        let s = &p["data"]["sagaChanges"];
        assert!(p.get("errors").is_none(), "{p}");
        if s["orderId"] != order.as_str() {
            continue;
        }
        if let Some(prev) = seen.last() {
            let prev: &Value = prev;
            assert!(s["eventCount"].as_i64() > prev["eventCount"].as_i64(), "{prev} then {s}");
        }
        seen.push(s.clone());
        if s["status"] == "COMPLETED" {
            break;
        }
        assert_eq!(s["orderStatus"], "PENDING", "{s}");
    }
    let last = seen.last().unwrap();
    assert_eq!(last["orderStatus"], "CONFIRMED");
    assert_eq!(last["step"], json!(null), "no step once finished");
    let p = done_only.next_payload().await.expect("filtered stream open");
    assert_eq!(p["data"]["sagaChanges"], json!({ "orderId": order, "status": "COMPLETED" }), "{p}");

    // The table and one saga's timeline.
    let recent =
        app.data(Some(&op.token), &format!("{{ recentSagas(first: 10) {{ {SAGA} }} }}"), json!({})).await;
    let row = recent["recentSagas"].as_array().unwrap().iter().find(|s| s["orderId"] == order.as_str());
    let row = row.expect("the order's saga is listed").clone();
    let saga = app
        .data(
            Some(&op.token),
            "query($id: ID!) { saga(id: $id) { orderId events { sequence type at } } }",
            json!({ "id": row["id"] }),
        )
        .await;
    let types: Vec<&str> =
        saga["saga"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"ORDER_PLACED"));
    assert_eq!(types.last(), Some(&"COMPLETED"));
    let completed =
        app.data(Some(&op.token), "{ recentSagas(status: COMPENSATED) { orderId } }", json!({})).await;
    assert_eq!(completed["recentSagas"], json!([]), "status filter");

    // Refusals: buyers, anonymous callers, bad input, unknown ids.
    for doc in ["{ recentSagas { id } }", "query($id: ID!) { saga(id: $id) { id } }"] {
        let vars = json!({ "id": row["id"] });
        assert_eq!(code(&app.gql(Some(&buyer.token), doc, vars.clone()).await), "FORBIDDEN", "{doc}");
        assert_eq!(code(&app.gql(None, doc, vars).await), "UNAUTHENTICATED", "{doc}");
    }
    let mut buyer_ws = app.ws(Some(&buyer.token)).await;
    buyer_ws.expect_ack().await;
    buyer_ws.start("x", "subscription { sagaChanges { id } }", json!({})).await;
    let refused = buyer_ws.next_payload().await.expect("an answer");
    assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
    let mut op_ws = app.ws(Some(&op.token)).await;
    op_ws.expect_ack().await;
    op_ws
        .start("bad", "subscription { sagaChanges(filter: { unchangedForMinutes: 5 }) { id } }", json!({}))
        .await;
    let refused = op_ws.next_payload().await.expect("an answer");
    assert_eq!(code(&refused), "BAD_USER_INPUT", "{refused}");
    let bad = app.gql(Some(&op.token), "{ recentSagas(status: \"DONE\") { id } }", json!({})).await;
    assert_eq!(code(&bad), "BAD_USER_INPUT", "{bad}");
    let bad = app.gql(Some(&op.token), "{ recentSagas(first: 0) { id } }", json!({})).await;
    assert_eq!(code(&bad), "BAD_USER_INPUT", "{bad}");
    let missing = app
        .data(Some(&op.token), "query($id: ID!) { saga(id: $id) { id } }", json!({ "id": uuid::Uuid::nil() }))
        .await;
    assert_eq!(missing["saga"], serde_json::Value::Null, "{missing}");

    // Taking the role away counts at the next request, even with a token that names it.
    ecommerce_saga::auth::service::set_role(
        app.pool(),
        &op.email,
        ecommerce_saga::auth::Role::Operator,
        false,
    )
    .await
    .unwrap();
    let after = app.gql(Some(&op.token), "{ recentSagas { id } }", json!({})).await;
    assert_eq!(code(&after), "FORBIDDEN", "{after}");
    let me = app.data(Some(&op.token), "{ me { roles } }", json!({})).await;
    assert_eq!(me["me"]["roles"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn monitor_assets_are_served_with_a_strict_content_security_policy() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/monitor", "text/html"),
        ("/monitor/monitor.js", "text/javascript"),
        ("/monitor/monitor.css", "text/css"),
    ] {
        let res = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    let html = app.http.get(app.url("/monitor")).send().await.unwrap().text().await.unwrap();
    assert!(!html.contains("<script>") && !html.contains("style="), "no inline code the CSP would block");
    app.stop().await;
}

#[tokio::test]
async fn monitor_page_shows_an_order_turn_confirmed_in_headless_chromium() {
    // Authorization that never answers stops the saga for an operator (the second part).
    let app: TestApp = spawn_app_with(|c| {
        c.saga.step_timeout = Duration::from_secs(3);
        c.saga.max_attempts = 1;
        c.saga.needs_attention_steps = vec!["AUTHORIZE_PAYMENT".into()];
        // Longer than `tok_slow` (2 s), shorter than the step timeout.
        c.workers.payment_gateway_timeout = Duration::from_millis(2500);
    })
    .await;
    let op = app.operator().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "TEE-002", 2).await;

    let url = app.url("/monitor");
    let mut page = BrowserCheck::start(
        "monitor.mjs",
        &[&url, &op.email, &buyer.email, TestApp::PASSWORD],
        "monitor.png",
    );
    page.expect("READY", 90).await;

    // Slow authorization keeps the order PENDING on the page for a while before it confirms.
    let order = app.place(&buyer, "monitor-browser-1", "tok_slow").await;
    page.send(&order).await;
    page.expect("TIMELINE", 90).await;
    page.expect("READY2", 30).await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let stuck = app.place(&buyer, "monitor-browser-2", "tok_timeout").await;
    page.send(&stuck).await;
    let screenshot = page.screenshot.clone();
    page.finish(120).await;
    let final_status = app.order(&buyer, &order).await["data"]["order"]["status"].clone();
    assert_eq!(final_status, "CONFIRMED");
    let repaired = app.order(&buyer, &stuck).await["data"]["order"].clone();
    assert_eq!(repaired["status"], "CANCELLED");
    assert_eq!(repaired["cancelReason"], "COMPENSATED_BY_OPERATOR");
    let (actor, reason): (String, String) =
        sqlx::query_as("SELECT actor_email, reason FROM saga_audit WHERE action = 'FORCE_COMPENSATE'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(
        (actor.as_str(), reason.as_str()),
        (op.email.as_str(), "customer asked to cancel (browser test)")
    );
    let repair_png =
        std::fs::read(screenshot.with_file_name("monitor-repair.png")).expect("second screenshot");
    assert!(repair_png.starts_with(b"\x89PNG"));
    app.stop().await;
}

/// The monitor renews its session before the access token expires and reconnects its
/// subscription with the fresh token, so the server never has to close it: held for several
/// token lifetimes (4 s here), it is still live and shows a new order (tests/browser/monitor-renew.mjs).
#[tokio::test]
async fn monitor_page_renews_its_token_and_stays_live_across_expiry() {
    let app: TestApp = spawn_app_with(|c| c.api.auth.access_token_ttl = Duration::from_secs(4)).await;
    let op = app.operator().await;
    let url = app.url("/monitor");
    let mut page = BrowserCheck::start(
        "monitor-renew.mjs",
        &[&url, &op.email, TestApp::PASSWORD, "10000"],
        "monitor-renew.png",
    );
    page.expect("READY", 90).await;
    let renewed = page.expect("RENEWED ", 90).await;
    let tokens: u32 = renewed.trim_start_matches("RENEWED ").trim().parse().unwrap();
    assert!(tokens >= 2, "the page renewed its access token: {renewed}");
    // A buyer signs up now (their token is fresh) and orders.
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let order = app.place(&buyer, "monitor-renew-1", "tok_visa").await;
    page.send(&order).await;
    page.finish(120).await;
    assert_eq!(
        app.metrics().ws_closed_for("session_ended"),
        0,
        "the page renewed before the server closed it"
    );
    app.wait_terminal(&buyer, &order).await;
    app.stop().await;
}
