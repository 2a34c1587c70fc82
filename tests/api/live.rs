//! The live data a storefront shows: "my orders" and "my cart" over graphql-ws, following
//! changes made elsewhere (another tab, device or API instance), and only the caller's own.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{spawn_app, BrowserCheck, Ws};

/// The next payload within 60 s, failing the test otherwise.
async fn next(ws: &mut Ws) -> Value {
    tokio::time::timeout(Duration::from_secs(60), ws.next_payload())
        .await
        .expect("a live update within 60 s")
        .expect("the subscription is still open")
}

#[tokio::test]
async fn my_orders_follows_orders_placed_elsewhere_and_only_mine() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    let other = app.register().await;
    let mut ws = app.ws(Some(&buyer.token)).await;
    ws.expect_ack().await;
    ws.start("mine", "subscription { myOrders { id status total { amount } } }", json!({})).await;

    // Placed "from another tab": plain HTTP requests, not this socket.
    app.add_to_cart(&other, "TEE-002", 1).await;
    let theirs = app.place(&other, "other-1", "tok_visa").await;
    let mut placed = Vec::new();
    for i in 0..2 {
        app.add_to_cart(&buyer, "MUG-001", 1).await;
        placed.push(app.place(&buyer, &format!("tab-{i}"), "tok_visa").await);
    }

    let mut latest: HashMap<String, String> = HashMap::new();
    while placed.iter().any(|id| latest.get(id).map(String::as_str) != Some("CONFIRMED")) {
        let p = next(&mut ws).await;
        assert!(p.get("errors").is_none(), "{p}");
        let order = &p["data"]["myOrders"];
        let id = order["id"].as_str().unwrap().to_string();
        assert_ne!(id, theirs, "another buyer's order reached this subscription");
        assert!(placed.contains(&id), "an order that is not this buyer's: {p}");
        assert_eq!(order["total"]["amount"], "14.99");
        latest.insert(id, order["status"].as_str().unwrap().to_string());
    }
    app.stop().await;
}

#[tokio::test]
async fn my_cart_starts_with_the_cart_and_follows_changes_from_elsewhere() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    let other = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let mut ws = app.ws(Some(&buyer.token)).await;
    ws.expect_ack().await;
    ws.start("cart", "subscription { myCart { id itemCount items { sku quantity } } }", json!({})).await;
    let first = next(&mut ws).await;
    assert_eq!(first["data"]["myCart"]["itemCount"], 1, "the cart as it is now: {first}");
    let cart_id = first["data"]["myCart"]["id"].clone();

    // Another buyer's change is not this one's; this buyer's change from another tab is.
    app.add_to_cart(&other, "BAG-003", 3).await;
    app.add_to_cart(&buyer, "TEE-002", 2).await;
    let changed = next(&mut ws).await;
    assert_eq!(changed["data"]["myCart"]["id"], cart_id);
    assert_eq!(
        changed["data"]["myCart"]["items"],
        json!([{ "sku": "MUG-001", "quantity": 1 }, { "sku": "TEE-002", "quantity": 2 }]),
        "{changed}"
    );

    // Placing the order empties the cart, and the subscription says so.
    let order = app.place(&buyer, "cart-live-1", "tok_visa").await;
    let emptied = next(&mut ws).await;
    assert_eq!(emptied["data"]["myCart"]["itemCount"], 0, "{emptied}");
    app.wait_terminal(&buyer, &order).await;
    app.stop().await;
}

/// A storefront page in headless Chromium follows `myOrders` with graphql-ws's browser client
/// and a normalized cache, while another tab of the buyer places two orders: the page's cache
/// ends with both CONFIRMED (tests/browser/my-orders.mjs).
#[tokio::test]
async fn a_browser_tab_following_my_orders_sees_both_orders_from_another_tab_confirmed() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    let base = app.url("");
    let base = base.trim_end_matches('/');
    let mut page = BrowserCheck::start("my-orders.mjs", &[base, &buyer.token], "my-orders.png");
    let line = page.expect("CONFIRMED ", 120).await;
    let ids: Vec<&str> = line.split_whitespace().skip(1).collect();
    assert_eq!(ids.len(), 2, "{line}");
    page.finish(60).await;
    // They are the buyer's two orders, and they are confirmed.
    let orders = app.data(Some(&buyer.token), "{ orders { nodes { id status } } }", json!({})).await;
    let mut listed: Vec<(String, String)> = orders["orders"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["id"].as_str().unwrap().to_string(), o["status"].as_str().unwrap().to_string()))
        .collect();
    listed.sort();
    let mut expected: Vec<(String, String)> =
        ids.iter().map(|id| (id.to_string(), "CONFIRMED".to_string())).collect();
    expected.sort();
    assert_eq!(listed, expected);
    app.stop().await;
}
