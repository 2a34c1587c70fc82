//! The GraphQL playground works offline: GraphiQL and React come from the API itself, the page
//! runs under a strict content security policy, and a headless Chromium that can reach nothing
//! but loopback runs a query, browses the schema and follows an order over a subscription.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, BrowserCheck, TestApp};

#[tokio::test]
async fn playground_assets_come_from_the_api_with_a_content_security_policy() {
    let app = spawn_app().await;
    let page = app.http.get(app.url("/graphql")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self';") && csp.contains("connect-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("://"), "the page names no other origin:\n{html}");
    for (path, kind, at_least) in [
        ("/graphql/assets/graphiql.min.js", "text/javascript", 500_000),
        ("/graphql/assets/graphiql.min.css", "text/css", 100_000),
        ("/graphql/assets/react.production.min.js", "text/javascript", 5_000),
        ("/graphql/assets/react-dom.production.min.js", "text/javascript", 100_000),
        ("/graphql/assets/playground.js", "text/javascript", 500),
    ] {
        assert!(html.contains(path), "{path} is on the page");
        let res = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
        assert!(res.bytes().await.unwrap().len() >= at_least, "{path} is the real file");
    }
    app.stop().await;
}

#[tokio::test]
async fn playground_runs_a_query_browses_the_schema_and_follows_an_order_offline() {
    // The payment never answers and its step waits long, so the order stays pending until the
    // test cancels it: every event after the first comes live, in whatever time the browser takes.
    let app: TestApp = spawn_app_with(|c| c.saga.step_timeout = Duration::from_secs(600)).await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;

    let url = app.url("/graphql");
    let mut page = BrowserCheck::start("playground.mjs", &[&url, &buyer.token], "playground.png");
    page.expect("READY", 120).await;
    let order = app.place(&buyer, "playground-1", "tok_timeout").await;
    page.send(&order).await;
    let first = page.expect("SUBSCRIBED ", 90).await;
    assert_ne!(first, "SUBSCRIBED COMPENSATED", "the order was still pending");

    let cancelled = app
        .data(
            Some(&buyer.token),
            "mutation($id: ID!) { cancelOrder(orderId: $id) { order { id } } }",
            json!({ "id": order }),
        )
        .await;
    assert_eq!(cancelled["cancelOrder"]["order"]["id"], order.as_str());
    page.finish(120).await;
    let final_order = app.wait_terminal(&buyer, &order).await;
    assert_eq!(final_order["cancelReason"], "CANCELLED_BY_USER", "{final_order}");
    app.stop().await;
}
