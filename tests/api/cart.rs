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

/// The `userErrors` of a payload as `(code, field)` pairs, checking the payload's object: no
/// order, or the cart as it is (a refused change changes nothing, and the client's cached cart
/// stays right).
fn refusals(payload: &Value, object: &str) -> Vec<(String, Value)> {
    match object {
        "cart" => {
            assert!(payload["cart"].is_object(), "a refused change returns the cart as it is: {payload}")
        }
        _ => assert_eq!(payload[object], Value::Null, "a refused change returns no {object}: {payload}"),
    }
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
        assert_eq!(body["data"]["addToCart"]["cart"]["items"], before["items"], "the cart as it is");
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

const CART: &str = "id totalQuantity lines { id sku quantity unitPrice { amount } lineTotal { amount } }
    cost { subtotal { amount currencyCode } total { amount } }";

/// `(sku, quantity)` of each line of a cart.
fn lines(cart: &Value) -> Vec<(String, i64)> {
    cart["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no lines in {cart}"))
        .iter()
        .map(|l| (l["sku"].as_str().unwrap().to_string(), l["quantity"].as_i64().unwrap()))
        .collect()
}

fn owned(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(s, q)| (s.to_string(), *q)).collect()
}

/// A guest fills a cart without an account, signs in with its id, and finds its lines merged into
/// the account's cart; the guest cart is gone, and signing in again with its id adds nothing twice.
#[tokio::test]
async fn a_guest_cart_is_merged_into_the_account_cart_at_sign_in() {
    let app = spawn_app().await;
    let create = format!("mutation($input: CartCreateInput) {{ cartCreate(input: $input) {{ cart {{ {CART} }} userErrors {{ code field }} }} }}");
    let d = app
        .data(None, &create, json!({ "input": { "lines": [{ "sku": "MUG-001", "quantity": 2 }, { "sku": "TEE-002", "quantity": 1 }] } }))
        .await;
    let cart = &d["cartCreate"]["cart"];
    assert_eq!(d["cartCreate"]["userErrors"], json!([]), "{d}");
    assert_eq!(lines(cart), owned(&[("MUG-001", 2), ("TEE-002", 1)]));
    assert_eq!(cart["totalQuantity"], 3);
    assert_eq!(
        cart["cost"],
        json!({ "subtotal": { "amount": "58.98", "currencyCode": "USD" }, "total": { "amount": "58.98" } })
    );
    assert_eq!(cart["lines"][0]["lineTotal"]["amount"], "29.98");
    let guest_id = cart["id"].as_str().unwrap().to_string();

    let add = format!("mutation($id: ID!, $lines: [CartLineInput!]!) {{ cartLinesAdd(cartId: $id, lines: $lines) {{ cart {{ {CART} }} userErrors {{ code field }} }} }}");
    let d = app
        .data(None, &add, json!({ "id": guest_id, "lines": [{ "sku": "MUG-001", "quantity": 1 }, { "sku": "BAG-003", "quantity": 1 }] }))
        .await;
    assert_eq!(lines(&d["cartLinesAdd"]["cart"]), owned(&[("MUG-001", 3), ("TEE-002", 1), ("BAG-003", 1)]));
    let node = "query($id: ID!) { node(id: $id) { ... on Cart { id totalQuantity } } }";
    let seen = app.data(None, node, json!({ "id": guest_id })).await;
    assert_eq!(seen["node"], json!({ "id": guest_id, "totalQuantity": 5 }), "anyone with the id reads it");

    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    app.add_to_cart(&buyer, "PEN-004", 1).await;
    let sign_in = format!("mutation($input: SignInInput!) {{ signIn(input: $input) {{ session {{ accessToken }} cart {{ {CART} }} userErrors {{ code }} }} }}");
    let input =
        json!({ "input": { "email": buyer.email, "password": "correct horse battery", "cartId": guest_id } });
    let d = app.data(None, &sign_in, input.clone()).await;
    assert_eq!(d["signIn"]["userErrors"], json!([]), "{d}");
    let merged = owned(&[("MUG-001", 4), ("PEN-004", 1), ("TEE-002", 1), ("BAG-003", 1)]);
    assert_eq!(lines(&d["signIn"]["cart"]), merged, "the guest's lines added to the account's");
    let account_cart = d["signIn"]["cart"]["id"].clone();
    assert_ne!(account_cart, json!(guest_id));
    let token = d["signIn"]["session"]["accessToken"].as_str().unwrap().to_string();
    let mine = app.data(Some(&token), &format!("{{ cart {{ {CART} }} }}"), json!({})).await;
    assert_eq!(lines(&mine["cart"]), merged);

    // The guest cart is gone: its id names nothing, for reading or changing.
    assert_eq!(app.data(None, node, json!({ "id": guest_id })).await["node"], Value::Null);
    let d =
        app.data(None, &add, json!({ "id": guest_id, "lines": [{ "sku": "MUG-001", "quantity": 1 }] })).await;
    assert_eq!(
        d["cartLinesAdd"],
        json!({ "cart": null, "userErrors": [{ "code": "CART_NOT_FOUND", "field": ["cartId"] }] })
    );
    // A retried sign-in with the same id adds nothing twice.
    let again = app.data(None, &sign_in, input).await;
    assert_eq!(lines(&again["signIn"]["cart"]), merged);
    app.stop().await;
}

/// A cart id is a key only to the cart it was given for: an account's cart id is nobody else's
/// (signed in or not), and a guest id that was never handed out names nothing, even one made
/// from an account's id, and changing it creates nothing.
#[tokio::test]
async fn cart_ids_are_keys_only_to_their_own_cart() {
    use base64::Engine;
    let app = spawn_app().await;
    let bob = app.register().await;
    app.add_to_cart(&bob, "MUG-001", 1).await;
    let bob_cart = app.data(Some(&bob.token), "{ cart { id } }", json!({})).await["cart"]["id"].clone();
    let alice = app.register().await;
    let b64 = |raw: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let forged = [
        bob_cart.as_str().unwrap().to_string(),
        b64(format!("GuestCart/{}", bob.id)),
        b64(format!("GuestCart/{}", uuid::Uuid::new_v4())),
        "not-an-id".to_string(),
    ];
    let add = "mutation($id: ID!) { cartLinesAdd(cartId: $id, lines: [{ sku: \"TEE-002\", quantity: 1 }]) { cart { id } userErrors { code field } } }";
    for id in &forged {
        for token in [None, Some(alice.token.as_str())] {
            let d = app.data(token, add, json!({ "id": id })).await;
            assert_eq!(
                d["cartLinesAdd"],
                json!({ "cart": null, "userErrors": [{ "code": "CART_NOT_FOUND", "field": ["cartId"] }] }),
                "{id} as {token:?}"
            );
            let node = app.gql(token, "query($id: ID!) { node(id: $id) { id } }", json!({ "id": id })).await;
            assert_eq!(node["data"]["node"], Value::Null, "{id}");
            if node.get("errors").is_some() {
                // An account's cart asked for without an account: sign in first, like an order.
                assert_eq!((code(&node), token, id), ("UNAUTHENTICATED", None, &forged[0]), "{node}");
            }
        }
    }
    let guests: u64 = app
        .mongo
        .db
        .collection::<mongodb::bson::Document>("guest_carts")
        .count_documents(mongodb::bson::doc! {})
        .await
        .unwrap();
    assert_eq!(guests, 0, "no forged key created a cart");
    assert_eq!(
        app.cart(&bob).await["items"],
        json!([{ "sku": "MUG-001", "quantity": 1 }]),
        "Bob's cart untouched"
    );
    app.stop().await;
}

/// Line mutations take many lines and apply all or none: a refusal names the line by its index
/// and returns the cart as it is; quantity 0 takes a line out.
#[tokio::test]
async fn cart_lines_change_many_lines_at_once_all_or_none() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    let t = Some(buyer.token.as_str());
    let cart_id = app.data(t, "{ cart { id } }", json!({})).await["cart"]["id"].clone();
    let add = format!("mutation($id: ID!, $lines: [CartLineInput!]!) {{ cartLinesAdd(cartId: $id, lines: $lines) {{ cart {{ {CART} }} userErrors {{ code field }} }} }}");
    let update = format!("mutation($id: ID!, $lines: [CartLineUpdateInput!]!) {{ cartLinesUpdate(cartId: $id, lines: $lines) {{ cart {{ {CART} }} userErrors {{ code field }} }} }}");
    let remove = format!("mutation($id: ID!, $ids: [ID!]!) {{ cartLinesRemove(cartId: $id, lineIds: $ids) {{ cart {{ {CART} }} userErrors {{ code field }} }} }}");

    let d = app.data(t, &add, json!({ "id": cart_id, "lines": [{ "sku": "MUG-001", "quantity": 2 }, { "sku": "NOPE-999", "quantity": 1 }] })).await;
    assert_eq!(
        d["cartLinesAdd"]["userErrors"],
        json!([{ "code": "UNKNOWN_SKU", "field": ["lines", "1", "sku"] }])
    );
    assert_eq!(lines(&d["cartLinesAdd"]["cart"]), owned(&[]), "none of the lines went in");
    assert_eq!(d["cartLinesAdd"]["cart"]["cost"], Value::Null, "an empty cart costs nothing in no currency");
    let d = app.data(t, &add, json!({ "id": cart_id, "lines": [{ "sku": "MUG-001", "quantity": 98 }, { "sku": "MUG-001", "quantity": 2 }] })).await;
    assert_eq!(
        d["cartLinesAdd"]["userErrors"],
        json!([{ "code": "LINE_QUANTITY_TOO_LARGE", "field": ["lines", "1", "quantity"] }])
    );
    let d = app.data(t, &add, json!({ "id": cart_id, "lines": [{ "sku": "MUG-001", "quantity": 2 }, { "sku": "TEE-002", "quantity": 1 }] })).await;
    let cart = &d["cartLinesAdd"]["cart"];
    assert_eq!(d["cartLinesAdd"]["userErrors"], json!([]));
    assert_eq!(lines(cart), owned(&[("MUG-001", 2), ("TEE-002", 1)]));
    let (mug, tee) = (cart["lines"][0]["id"].clone(), cart["lines"][1]["id"].clone());

    let d = app
        .data(
            t,
            &update,
            json!({ "id": cart_id, "lines": [{ "id": mug, "quantity": 5 }, { "id": tee, "quantity": 0 }] }),
        )
        .await;
    assert_eq!(d["cartLinesUpdate"]["userErrors"], json!([]), "{d}");
    assert_eq!(lines(&d["cartLinesUpdate"]["cart"]), owned(&[("MUG-001", 5)]));
    assert_eq!(d["cartLinesUpdate"]["cart"]["cost"]["total"]["amount"], "74.95");
    let d = app.data(t, &update, json!({ "id": cart_id, "lines": [{ "id": mug, "quantity": 4 }, { "id": tee, "quantity": 1 }, { "id": mug, "quantity": 100 }] })).await;
    assert_eq!(
        d["cartLinesUpdate"]["userErrors"],
        json!([{ "code": "INVALID_QUANTITY", "field": ["lines", "2", "quantity"] }]),
        "{d}"
    );
    assert_eq!(lines(&d["cartLinesUpdate"]["cart"]), owned(&[("MUG-001", 5)]), "unchanged");
    let d = app
        .data(
            t,
            &update,
            json!({ "id": cart_id, "lines": [{ "id": mug, "quantity": 4 }, { "id": tee, "quantity": 1 }] }),
        )
        .await;
    assert_eq!(
        d["cartLinesUpdate"]["userErrors"],
        json!([{ "code": "NOT_IN_CART", "field": ["lines", "1", "id"] }]),
        "{d}"
    );
    assert_eq!(lines(&d["cartLinesUpdate"]["cart"]), owned(&[("MUG-001", 5)]), "all or none");

    let d = app.data(t, &remove, json!({ "id": cart_id, "ids": [mug, "not-a-line"] })).await;
    assert_eq!(
        d["cartLinesRemove"]["userErrors"],
        json!([{ "code": "NOT_IN_CART", "field": ["lineIds", "1"] }])
    );
    assert_eq!(lines(&d["cartLinesRemove"]["cart"]), owned(&[("MUG-001", 5)]));
    let d = app.data(t, &remove, json!({ "id": cart_id, "ids": [mug] })).await;
    assert_eq!(d["cartLinesRemove"]["userErrors"], json!([]));
    assert_eq!(d["cartLinesRemove"]["cart"]["totalQuantity"], 0);
    app.stop().await;
}
