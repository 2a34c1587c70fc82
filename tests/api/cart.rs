use serde_json::json;

use crate::helpers::{code, spawn_app};

#[tokio::test]
async fn cart_operations_and_totals() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    let r = app.add_to_cart(&buyer, "MUG-001", 2).await;
    assert_eq!(r["data"]["addToCart"]["total"], json!({ "amountMinor": 2998, "currency": "USD" }));
    let r = app.add_to_cart(&buyer, "MUG-001", 1).await;
    assert_eq!(r["data"]["addToCart"]["items"], json!([{ "sku": "MUG-001", "quantity": 3 }]));
    app.add_to_cart(&buyer, "TEE-002", 1).await;

    let upd = app
        .data(
            Some(&buyer.token),
            "mutation { updateCartItem(sku: \"MUG-001\", quantity: 5) { itemCount } }",
            json!({}),
        )
        .await;
    assert_eq!(upd["updateCartItem"]["itemCount"], 6);
    let rm = app
        .data(
            Some(&buyer.token),
            "mutation { removeFromCart(sku: \"TEE-002\") { items { sku } total { amount amountMinor } } }",
            json!({}),
        )
        .await;
    assert_eq!(rm["removeFromCart"]["items"], json!([{ "sku": "MUG-001" }]));
    assert_eq!(rm["removeFromCart"]["total"]["amountMinor"], 5 * 1_499);
    assert_eq!(rm["removeFromCart"]["total"]["amount"], "74.95", "a decimal string in dollars");
    let cleared = app
        .data(Some(&buyer.token), "mutation { clearCart { itemCount total { amountMinor } } }", json!({}))
        .await;
    assert_eq!(cleared["clearCart"], json!({ "itemCount": 0, "total": null }));
    app.stop().await;
}

#[tokio::test]
async fn bad_cart_input_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 98).await;
    let before = app.cart(&buyer).await;

    for (sku, q) in
        [("MUG-001", 0), ("MUG-001", -1), ("MUG-001", 100), ("MUG-001", 2), ("NOPE-999", 1), ("bad sku!", 1)]
    {
        let body = app.add_to_cart(&buyer, sku, q).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{sku} x{q}: {body}");
    }
    // Larger than a GraphQL Int: refused by the engine, still with a code.
    let body = app.add_to_cart(&buyer, "MUG-001", 1 << 40).await;
    assert_eq!(code(&body), "BAD_USER_INPUT");
    let body = app
        .gql(
            Some(&buyer.token),
            "mutation { updateCartItem(sku: \"TEE-002\", quantity: 1) { itemCount } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "not in cart");
    let body = app
        .gql(Some(&buyer.token), "mutation { removeFromCart(sku: \"TEE-002\") { itemCount } }", json!({}))
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT");
    assert_eq!(app.cart(&buyer).await, before, "nothing changed");

    let empty = app.register().await;
    let body = app.place_order(&empty, "k-1", "tok_visa").await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "empty cart");
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(app.pool()).await.unwrap();
    assert_eq!(orders, 0);
    app.stop().await;
}
