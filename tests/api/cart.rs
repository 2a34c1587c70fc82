use serde_json::{json, Value};

use crate::helpers::{code, spawn_app};

#[tokio::test]
async fn cart_operations_and_totals() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    let r = app.add_to_cart(&buyer, "MUG-001", 2).await;
    assert_eq!(r["data"]["addToCart"]["userErrors"], json!([]));
    assert_eq!(r["data"]["addToCart"]["cart"]["total"], json!({ "amountMinor": 2998, "currency": "USD" }));
    let r = app.add_to_cart(&buyer, "MUG-001", 1).await;
    assert_eq!(r["data"]["addToCart"]["cart"]["items"], json!([{ "sku": "MUG-001", "quantity": 3 }]));
    app.add_to_cart(&buyer, "TEE-002", 1).await;

    let upd = app
        .data(
            Some(&buyer.token),
            "mutation { updateCartItem(sku: \"MUG-001\", quantity: 5) { cart { itemCount } userErrors { code } } }",
            json!({}),
        )
        .await;
    assert_eq!(upd["updateCartItem"], json!({ "cart": { "itemCount": 6 }, "userErrors": [] }));
    let rm = app
        .data(
            Some(&buyer.token),
            "mutation { removeFromCart(sku: \"TEE-002\") { cart { items { sku } total { amount amountMinor currencyCode } } } }",
            json!({}),
        )
        .await;
    let cart = &rm["removeFromCart"]["cart"];
    assert_eq!(cart["total"]["currencyCode"], "USD", "an enum value: {cart}");
    assert_eq!(cart["items"], json!([{ "sku": "MUG-001" }]));
    assert_eq!(cart["total"]["amountMinor"], 5 * 1_499);
    assert_eq!(cart["total"]["amount"], "74.95", "a decimal string in dollars");
    let cleared = app
        .data(
            Some(&buyer.token),
            "mutation { clearCart { cart { itemCount total { amountMinor } } } }",
            json!({}),
        )
        .await;
    assert_eq!(cleared["clearCart"]["cart"], json!({ "itemCount": 0, "total": null }));
    app.stop().await;
}

/// A cart change that the API made last costs one round trip to MongoDB (the write, conditional on
/// the version it remembers) instead of a read and a write.
#[tokio::test]
async fn changing_a_cart_this_api_wrote_last_is_one_mongodb_command() {
    use std::sync::atomic::Ordering::SeqCst;
    let app = spawn_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let before = app.api_cart_commands.load(SeqCst);
    let r = app.add_to_cart(&buyer, "MUG-001", 2).await;
    assert_eq!(r["data"]["addToCart"]["cart"]["items"], json!([{ "sku": "MUG-001", "quantity": 3 }]));
    assert_eq!(app.api_cart_commands.load(SeqCst) - before, 1, "one write, no read");
    app.stop().await;
}

/// Another API instance changed the cart since this one last saw it: every change still applies to
/// the stored cart, and only the stored cart can refuse one (the remembered copy held the most
/// units a line may have; the stored cart had been emptied).
#[tokio::test]
async fn a_cart_changed_through_another_instance_is_read_again_before_it_is_changed() {
    let mut app = spawn_app().await;
    let (other, _) = app.replica().await;
    let buyer = app.register().await;
    let add_there = |sku: &'static str, quantity: i64| {
        let (app, token) = (&app, buyer.token.clone());
        async move {
            let add = "mutation($s: String!, $q: Int!) { addToCart(sku: $s, quantity: $q) { userErrors { code } } }";
            let r = app.gql_at(other, Some(&token), add, json!({ "s": sku, "q": quantity })).await;
            assert_eq!(r["data"]["addToCart"]["userErrors"], json!([]), "{r}");
        }
    };
    let r = app.add_to_cart(&buyer, "MUG-001", 99).await;
    assert_eq!(r["data"]["addToCart"]["userErrors"], json!([]), "{r}");
    let clear = "mutation { clearCart { cart { itemCount } } }";
    let cleared = app.gql_at(other, Some(&buyer.token), clear, json!({})).await;
    assert_eq!(cleared["data"]["clearCart"]["cart"]["itemCount"], 0, "{cleared}");

    let r = app.add_to_cart(&buyer, "MUG-001", 1).await;
    assert_eq!(r["data"]["addToCart"]["userErrors"], json!([]), "the stored cart is empty: {r}");
    assert_eq!(r["data"]["addToCart"]["cart"]["items"], json!([{ "sku": "MUG-001", "quantity": 1 }]));
    add_there("TEE-002", 1).await;
    let r = app.add_to_cart(&buyer, "MUG-001", 2).await;
    assert_eq!(
        r["data"]["addToCart"]["cart"]["items"],
        json!([{ "sku": "MUG-001", "quantity": 3 }, { "sku": "TEE-002", "quantity": 1 }]),
        "{r}"
    );
    add_there("MUG-001", 1).await;
    let cart = app.data(Some(&buyer.token), "{ cart { items { sku quantity } } }", json!({})).await;
    assert_eq!(
        cart["cart"]["items"],
        json!([{ "sku": "MUG-001", "quantity": 4 }, { "sku": "TEE-002", "quantity": 1 }])
    );
    app.stop().await;
}

/// The `userErrors` of a payload as `(code, field)` pairs, checking the payload's object is null.
fn refusals(payload: &Value, object: &str) -> Vec<(String, Value)> {
    assert_eq!(payload[object], Value::Null, "a refused change returns no {object}: {payload}");
    let errors = payload["userErrors"].as_array().unwrap_or_else(|| panic!("no userErrors: {payload}"));
    errors
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
            (e["code"].as_str().unwrap().to_string(), e["field"].clone())
        })
        .collect()
}

#[tokio::test]
async fn what_the_buyer_can_fix_comes_back_as_typed_user_errors_and_changes_nothing() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 98).await;
    let before = app.cart(&buyer).await;

    let sku = json!(["sku"]);
    let quantity = json!(["quantity"]);
    for (s, q, expected) in [
        ("MUG-001", 0, vec![("INVALID_QUANTITY", quantity.clone())]),
        ("MUG-001", -1, vec![("INVALID_QUANTITY", quantity.clone())]),
        ("MUG-001", 100, vec![("INVALID_QUANTITY", quantity.clone())]),
        ("MUG-001", 2, vec![("LINE_QUANTITY_TOO_LARGE", quantity.clone())]),
        ("NOPE-999", 1, vec![("UNKNOWN_SKU", sku.clone())]),
        ("bad sku!", 1, vec![("INVALID_SKU", sku.clone())]),
        // Both inputs wrong: both reported, so the buyer fixes them in one go.
        ("bad sku!", 0, vec![("INVALID_SKU", sku.clone()), ("INVALID_QUANTITY", quantity.clone())]),
    ] {
        let body = app.add_to_cart(&buyer, s, q).await;
        assert!(body.get("errors").is_none(), "{s} x{q}: {body}");
        let expected: Vec<_> = expected.into_iter().map(|(c, f)| (c.to_string(), f)).collect();
        assert_eq!(refusals(&body["data"]["addToCart"], "cart"), expected, "{s} x{q}");
    }
    // Larger than a GraphQL Int: refused by the engine, as a top-level error with a code.
    let body = app.add_to_cart(&buyer, "MUG-001", 1 << 40).await;
    assert_eq!(code(&body), "BAD_USER_INPUT");
    let body = app
        .data(
            Some(&buyer.token),
            "mutation { updateCartItem(sku: \"TEE-002\", quantity: 1) { cart { itemCount } userErrors { code field message } } }",
            json!({}),
        )
        .await;
    assert_eq!(refusals(&body["updateCartItem"], "cart"), [("NOT_IN_CART".to_string(), sku.clone())]);
    let body = app
        .data(
            Some(&buyer.token),
            "mutation { removeFromCart(sku: \"TEE-002\") { cart { itemCount } userErrors { code field message } } }",
            json!({}),
        )
        .await;
    assert_eq!(refusals(&body["removeFromCart"], "cart"), [("NOT_IN_CART".to_string(), sku.clone())]);
    assert_eq!(app.cart(&buyer).await, before, "nothing changed");

    let empty = app.register().await;
    let body = app.place_order(&empty, "k-1", "tok_visa").await;
    assert_eq!(refusals(&body["data"]["placeOrder"], "order"), [("EMPTY_CART".to_string(), Value::Null)]);
    let body = app.place_order(&buyer, "has spaces", "tok_visa").await;
    assert_eq!(
        refusals(&body["data"]["placeOrder"], "order"),
        [("INVALID_IDEMPOTENCY_KEY".to_string(), json!(["idempotencyKey"]))]
    );
    let body = app.place_order(&buyer, "k-2", "").await;
    assert_eq!(
        refusals(&body["data"]["placeOrder"], "order"),
        [("INVALID_PAYMENT_TOKEN".to_string(), json!(["paymentToken"]))]
    );
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(app.pool()).await.unwrap();
    assert_eq!(orders, 0);
    assert_eq!(app.cart(&buyer).await, before, "nothing changed");
    app.stop().await;
}
