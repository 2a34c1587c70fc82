use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{code, spawn_app, spawn_app_with};

const HAPPY: [&str; 6] = [
    "ORDER_PLACED",
    "STOCK_RESERVED",
    "PAYMENT_AUTHORIZED",
    "PAYMENT_CAPTURED",
    "ORDER_CONFIRMED",
    "COMPLETED",
];

#[tokio::test]
async fn happy_path_confirms_captures_decrements_stock_and_empties_cart() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 2).await;
    app.add_to_cart(&buyer, "TEE-002", 1).await;

    let id = app.place(&buyer, "happy-1", "tok_visa").await;
    assert_eq!(app.cart(&buyer).await["itemCount"], 0, "the ordered items left the cart");
    // Subscribed right after placing: the stream replays what was recorded, then follows live.
    let events = app.order_events(&buyer, &id).await.expect("subscription");
    assert_eq!(events, HAPPY);

    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CONFIRMED");
    assert_eq!(order["total"]["amountMinor"], 2 * 1_499 + 2_900);
    assert_eq!(order["lines"][0]["product"]["name"], "Enamel camp mug");
    let history: Vec<_> =
        order["saga"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(history, HAPPY);
    assert_eq!(app.stock("MUG-001").await, 98);
    assert_eq!(app.stock("TEE-002").await, 49);
    assert_eq!(app.payment_status(&id).await.as_deref(), Some("CAPTURED"));

    // The cart worker empties the cart asynchronously, after confirmation.
    let cart = app.wait_cart(&buyer, |c| c["itemCount"] == 0).await;
    assert_eq!(cart["itemCount"], 0, "cart emptied: {cart}");
    app.stop().await;
}

#[tokio::test]
async fn declined_payment_cancels_restores_stock_and_puts_the_items_back() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "BAG-003", 3).await;

    let id = app.place(&buyer, "declined-1", "tok_declined").await;
    // (Usually the cart is empty now; on a loaded machine the whole saga may even have been
    // cancelled before the API took the units out, and then it leaves them in. Either way:)
    app.add_to_cart(&buyer, "BAG-003", 1).await; // added while the order is processed
    let events = app.order_events(&buyer, &id).await.expect("subscription");
    assert_eq!(
        events,
        [
            "ORDER_PLACED",
            "STOCK_RESERVED",
            "PAYMENT_DECLINED",
            "STOCK_RELEASED",
            "ORDER_CANCELLED",
            "COMPENSATED"
        ]
    );

    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["cancelReason"], "PAYMENT_DECLINED");
    assert_eq!(order["saga"]["events"][2]["detail"], Value::Null, "the provider's words are for operators");
    let op = app.operator().await;
    assert_eq!(app.operator_details(&op, &id, "CHECKOUT").await[2], "card_declined");
    assert_eq!(app.stock("BAG-003").await, 20, "stock restored");
    assert_eq!(app.payment_status(&id).await.as_deref(), Some("DECLINED"), "nothing captured");
    // The cart worker puts the order's units back, next to the one added meanwhile.
    let cart = app.wait_cart(&buyer, |c| c["itemCount"] == 4).await;
    assert_eq!(cart["items"], json!([{ "sku": "BAG-003", "quantity": 4 }]), "{cart}");
    app.stop().await;
}

#[tokio::test]
async fn out_of_stock_cancels_with_reason_and_never_touches_payment() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    // Reserved in SKU order: BAG-003 is available and comes before the short LMT-005.
    app.add_to_cart(&buyer, "BAG-003", 1).await;
    app.add_to_cart(&buyer, "LMT-005", 2).await; // only 1 in stock

    let id = app.place(&buyer, "oos-1", "tok_visa").await;
    let events = app.order_events(&buyer, &id).await.expect("subscription");
    assert_eq!(events, ["ORDER_PLACED", "STOCK_REJECTED", "ORDER_CANCELLED", "COMPENSATED"]);

    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["cancelReason"], "OUT_OF_STOCK");
    assert_eq!(order["saga"]["events"][1]["detail"], Value::Null);
    let op = app.operator().await;
    assert_eq!(app.operator_details(&op, &id, "CHECKOUT").await[1], "insufficient stock for LMT-005");
    assert_eq!(app.payment_status(&id).await, None, "no payment attempted");
    assert_eq!(app.stock("LMT-005").await, 1);
    assert_eq!(app.stock("MUG-001").await, 100, "partial reservation rolled back");
    assert_eq!(app.stock("BAG-003").await, 20, "partial reservation rolled back");
    let lines: i64 = sqlx::query_scalar("SELECT count(*) FROM stock_reservation_lines")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(lines, 0, "a rejected reservation keeps no lines");
    app.stop().await;
}

#[tokio::test]
async fn gateway_timeout_retries_then_compensates_after_the_step_timeout() {
    let app = spawn_app_with(|c| {
        c.saga.step_timeout = Duration::from_millis(600);
        c.saga.max_attempts = 2;
        c.saga.compensation_timeout = Duration::from_secs(5);
        c.workers.payment_gateway_timeout = Duration::from_millis(200);
    })
    .await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "PEN-004", 1).await;

    let id = app.place(&buyer, "timeout-1", "tok_timeout").await;
    let events = app.order_events(&buyer, &id).await.expect("subscription");
    assert_eq!(
        events,
        [
            "ORDER_PLACED",
            "STOCK_RESERVED",
            "STEP_RETRIED",
            "STEP_TIMED_OUT",
            "PAYMENT_VOIDED",
            "STOCK_RELEASED",
            "ORDER_CANCELLED",
            "COMPENSATED"
        ]
    );
    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["cancelReason"], "PAYMENT_TIMEOUT");
    assert_eq!(app.stock("PEN-004").await, 10);
    assert_eq!(app.payment_status(&id).await.as_deref(), Some("VOIDED"));
    app.stop().await;
}

#[tokio::test]
async fn a_late_subscriber_gets_the_recorded_history_then_completion() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let id = app.place(&buyer, "late-1", "tok_visa").await;
    app.wait_terminal(&buyer, &id).await;
    let events = app.order_events(&buyer, &id).await.expect("subscription");
    assert_eq!(events, HAPPY);
    app.stop().await;
}

/// "This saga changed" notices wake live streams but are not written to the outbox: they are
/// published after the commit (a lost one is found by the catch-up read), while commands, replies
/// and order events are stored with the change that sends them.
#[tokio::test]
async fn saga_change_notices_are_published_without_being_stored() {
    let app = spawn_app().await;
    // What the outbox is asked to store, kept by a trigger (the rows themselves are deleted once
    // published).
    for statement in [
        "CREATE TABLE outbox_written (topic text NOT NULL)",
        "CREATE FUNCTION outbox_written() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO outbox_written VALUES (NEW.topic); RETURN NEW; END $$",
        "CREATE TRIGGER outbox_written AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION outbox_written()",
    ] {
        sqlx::query(statement).execute(app.pool()).await.unwrap();
    }
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let id = app.place(&buyer, "notices-1", "tok_visa").await;
    let events = app.order_events(&buyer, &id).await.expect("subscription");
    assert_eq!(events, HAPPY);
    let topics: Vec<String> = sqlx::query_scalar("SELECT topic FROM outbox_written ORDER BY topic")
        .fetch_all(app.pool())
        .await
        .unwrap();
    assert!(topics.iter().any(|t| t.starts_with("cmd.")), "commands are stored: {topics:?}");
    assert!(!topics.iter().any(|t| t == "evt.saga"), "no notice is stored: {topics:?}");
    app.stop().await;
}

/// A client that lost its connection resumes after the last sequence it got instead of replaying
/// the order's history; one that saw the end gets a subscription that completes at once.
#[tokio::test]
async fn a_reconnecting_subscriber_resumes_after_the_last_sequence_it_got() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let id = app.place(&buyer, "resume-1", "tok_visa").await;
    app.wait_terminal(&buyer, &id).await;
    let follow = "subscription($id: ID!, $after: Int!) { orderEvents(orderId: $id, afterSequence: $after) { sequence type } }";
    for after in [0usize, 3, HAPPY.len()] {
        let mut ws = app.ws(Some(&buyer.token)).await;
        ws.expect_ack().await;
        ws.start("1", follow, json!({ "id": id, "after": after })).await;
        let mut got = Vec::new();
        while let Some(p) = ws.next_payload().await {
            let e = &p["data"]["orderEvents"];
            assert_eq!(e["sequence"], after + got.len() + 1, "{p}");
            got.push(e["type"].as_str().unwrap().to_string());
        }
        assert_eq!(got, HAPPY[after..], "after {after}");
    }
    let mut ws = app.ws(Some(&buyer.token)).await;
    ws.expect_ack().await;
    ws.start("1", follow, json!({ "id": id, "after": -1 })).await;
    let refused = ws.next_payload().await.expect("an answer");
    assert_eq!(code(&refused), "BAD_USER_INPUT", "{refused}");
    app.stop().await;
}

#[tokio::test]
async fn cancel_before_confirmation_compensates_and_confirmed_orders_cannot_be_cancelled() {
    // A gateway that never answers keeps the saga waiting at authorization long enough to cancel.
    let app = spawn_app_with(|c| c.workers.payment_gateway_timeout = Duration::from_secs(60)).await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "BAG-003", 2).await;
    let id = app.place(&buyer, "cancel-1", "tok_timeout").await;

    // Wait until the saga has recorded the reservation, so it is at the payment step (the stock
    // level alone can drop before the orchestrator has seen the reply; a cancel then compensates
    // from the first step and never touches payment).
    for _ in 0..300 {
        let order = app.order(&buyer, &id).await;
        let events = order["data"]["order"]["saga"]["events"].as_array().cloned().unwrap_or_default();
        if events.iter().any(|e| e["type"] == "STOCK_RESERVED") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cancel =
        "mutation($id: ID!) { cancelOrder(orderId: $id) { order { id status } userErrors { code } } }";
    let body = app.gql(Some(&buyer.token), cancel, json!({ "id": id })).await;
    assert!(body.get("errors").is_none(), "{body}");
    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["cancelReason"], "CANCELLED_BY_USER");
    assert_eq!(app.stock("BAG-003").await, 20);
    assert_eq!(app.payment_status(&id).await.as_deref(), Some("VOIDED"));
    let events = app.order_events(&buyer, &id).await.expect("subscription");
    assert_eq!(
        events,
        [
            "ORDER_PLACED",
            "STOCK_RESERVED",
            "CANCEL_REQUESTED",
            "PAYMENT_VOIDED",
            "STOCK_RELEASED",
            "ORDER_CANCELLED",
            "COMPENSATED"
        ]
    );

    let again = app.data(Some(&buyer.token), cancel, json!({ "id": id })).await;
    assert_eq!(again["cancelOrder"]["userErrors"][0]["code"], "ORDER_ALREADY_CANCELLED", "{again}");

    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let confirmed = app.place(&buyer, "cancel-2", "tok_visa").await;
    app.wait_terminal(&buyer, &confirmed).await;
    let too_late = app.data(Some(&buyer.token), cancel, json!({ "id": confirmed })).await;
    assert_eq!(too_late["cancelOrder"]["userErrors"][0]["code"], "ORDER_ALREADY_CONFIRMED", "{too_late}");
    assert_eq!(too_late["cancelOrder"]["order"], Value::Null);
    app.stop().await;
}

#[tokio::test]
async fn confirming_takes_only_the_ordered_units_out_of_the_cart() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 2).await;
    let id = app.place(&buyer, "more-later", "tok_visa").await;
    // The buyer adds another mug while the order is being processed.
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CONFIRMED");

    // Wait until the cart worker has applied the confirmation.
    let carts = app.mongo.db.collection::<mongodb::bson::Document>("carts");
    for _ in 0..100 {
        let applied =
            carts.find_one(mongodb::bson::doc! { "_id": &buyer.id, "applied_orders": &id }).await.unwrap();
        if applied.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cart = app.cart(&buyer).await;
    assert_eq!(
        cart["items"],
        serde_json::json!([{ "sku": "MUG-001", "quantity": 1 }]),
        "the later mug stays: {cart}"
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_report_requests_sagas_and_outbox_lag() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let id = app.place(&buyer, "metrics-1", "tok_declined").await;
    app.wait_terminal(&buyer, &id).await;
    let named = app.gql(Some(&buyer.token), "query MyOrders { orders { nodes { id } } }", json!({})).await;
    assert!(named.get("errors").is_none(), "{named}");
    // Names the engine resolves, where the document's text does not start with them.
    for doc in [
        "# the orders page\nquery CommentedFirst { orders { nodes { id } } }",
        "fragment O on Order { id } query FragmentFirst { orders { nodes { ...O } } }",
    ] {
        let r = app.gql(Some(&buyer.token), doc, json!({})).await;
        assert!(r.get("errors").is_none(), "{r}");
    }

    let resp = app.http.get(app.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    for expected in [
        "ecommerce_saga_graphql_request_duration_seconds_count{operation=\"MyOrders\"} 1",
        "ecommerce_saga_graphql_request_duration_seconds_count{operation=\"CommentedFirst\"} 1",
        "ecommerce_saga_graphql_request_duration_seconds_count{operation=\"FragmentFirst\"} 1",
        "ecommerce_saga_graphql_request_duration_seconds_count{operation=\"anonymous\"}",
        "ecommerce_saga_outbox_pending ",
        "ecommerce_saga_outbox_oldest_age_seconds ",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from\n{text}");
    }
    // Finished sagas are counted by the orchestrator as it finishes them (the gauge holds only
    // unfinished ones).
    let orchestrator = app.orchestrator_metrics.render(app.pool()).await.unwrap();
    let finished = "ecommerce_saga_saga_events_total{event=\"COMPENSATED\",reason=\"PAYMENT_DECLINED\"} 1";
    assert!(orchestrator.contains(finished), "{finished:?} missing from\n{orchestrator}");
    app.stop().await;
}

/// Every metric the alerting rules (deploy/prometheus/alerts.yml) use is one the processes
/// export, under that name and type: a renamed metric would silence its alert.
#[tokio::test]
async fn the_alerting_rules_use_metrics_the_processes_export() {
    let app = spawn_app().await;
    let text = app.http.get(app.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    // Families: `# TYPE name type`.
    let families: std::collections::HashMap<&str, &str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_once(' ')).collect();
    let rules = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yml"))
        .unwrap();
    let mut used = std::collections::BTreeSet::new();
    for (i, _) in rules.match_indices("ecommerce_saga_") {
        let name: String =
            rules[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        used.insert(name);
    }
    assert!(used.len() >= 7, "{used:?}");
    for name in &used {
        let (family, kind) = [("_bucket", "histogram"), ("_total", "counter")]
            .into_iter()
            .find_map(|(suffix, kind)| name.strip_suffix(suffix).map(|f| (f, Some(kind))))
            .unwrap_or((name.as_str(), None));
        let exported = families.get(family).copied();
        assert!(exported.is_some(), "{name}: no family {family} in /metrics");
        if let Some(kind) = kind {
            assert_eq!(exported, Some(kind), "{name}");
        }
    }
    app.stop().await;
}

const PLACE_WITH_INPUT: &str = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) {
    order { id email subtotal { amount } total { amount currencyCode }
            shippingAddress { name line1 line2 city region postalCode countryCode }
            lines { sku quantity unitPrice { amount } lineTotal { amount } } }
    userErrors { code field message } } }";

fn address() -> Value {
    json!({ "name": " Ada Lovelace ", "line1": "12 St James's Square", "line2": "", "city": "London",
            "postalCode": "SW1Y 4JH", "countryCode": "gb" })
}

/// A checkout form sends an e-mail and a shipping address; each field at fault comes back as a
/// user error naming it, and nothing is ordered; a valid one is stored with the order and shown on
/// it, with line totals and a subtotal.
#[tokio::test]
async fn place_order_takes_an_email_and_a_checked_shipping_address() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 2).await;
    app.add_to_cart(&buyer, "TEE-002", 1).await;
    let input = |key: &str, email: Value, address: Value| json!({ "input": { "idempotencyKey": key, "paymentToken": "tok_visa", "email": email, "shippingAddress": address } });

    let mut bad = address();
    bad["name"] = json!("  ");
    bad["postalCode"] = json!("SW1Y_4JH");
    bad["countryCode"] = json!("XX");
    let d = app.data(Some(&buyer.token), PLACE_WITH_INPUT, input("k-bad", json!("not-an-email"), bad)).await;
    assert!(d["placeOrder"]["order"].is_null(), "{d}");
    let errors: Vec<(&str, Value)> = d["placeOrder"]["userErrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["code"].as_str().unwrap(), e["field"].clone()))
        .collect();
    assert_eq!(
        errors,
        [
            ("INVALID_EMAIL", json!(["input", "email"])),
            ("INVALID_ADDRESS", json!(["input", "shippingAddress", "name"])),
            ("INVALID_ADDRESS", json!(["input", "shippingAddress", "postalCode"])),
            ("INVALID_ADDRESS", json!(["input", "shippingAddress", "countryCode"])),
        ]
    );
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(app.pool()).await.unwrap();
    assert_eq!(orders, 0, "a refused checkout orders nothing");
    assert_eq!(app.cart(&buyer).await["itemCount"], 3, "and leaves the cart alone");

    // Both shapes at once is a malformed request.
    let both = app
        .gql(
            Some(&buyer.token),
            "mutation($input: PlaceOrderInput!) { placeOrder(input: $input, idempotencyKey: \"k\", paymentToken: \"tok_visa\") { order { id } } }",
            input("k", Value::Null, address()),
        )
        .await;
    assert_eq!(code(&both), "BAD_USER_INPUT", "{both}");

    // Without an e-mail, the account's.
    let d = app.data(Some(&buyer.token), PLACE_WITH_INPUT, input("k-ok", Value::Null, address())).await;
    assert_eq!(d["placeOrder"]["userErrors"], json!([]), "{d}");
    let order = &d["placeOrder"]["order"];
    assert_eq!(order["email"], buyer.email.as_str());
    assert_eq!(
        order["shippingAddress"],
        json!({ "name": "Ada Lovelace", "line1": "12 St James's Square", "line2": null, "city": "London",
                "region": null, "postalCode": "SW1Y 4JH", "countryCode": "GB" })
    );
    assert_eq!(order["total"], json!({ "amount": "58.98", "currencyCode": "USD" }));
    assert_eq!(order["subtotal"], json!({ "amount": "58.98" }));
    assert_eq!(
        order["lines"],
        json!([
            { "sku": "MUG-001", "quantity": 2, "unitPrice": { "amount": "14.99" }, "lineTotal": { "amount": "29.98" } },
            { "sku": "TEE-002", "quantity": 1, "unitPrice": { "amount": "29.00" }, "lineTotal": { "amount": "29.00" } },
        ])
    );
    // Read back, it is the stored order's.
    let id = order["id"].as_str().unwrap();
    let again = app
        .data(
            Some(&buyer.token),
            "query($id: ID!) { node(id: $id) { ... on Order { email shippingAddress { countryCode postalCode } } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        again["node"],
        json!({ "email": buyer.email, "shippingAddress": { "countryCode": "GB", "postalCode": "SW1Y 4JH" } })
    );
    let done = app.wait_terminal(&buyer, id).await;
    assert_eq!(done["status"], "CONFIRMED", "{done}");

    // An e-mail given is the order's, not the account's.
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let d = app
        .data(Some(&buyer.token), PLACE_WITH_INPUT, input("k-gift", json!(" Gift@Example.COM "), address()))
        .await;
    assert_eq!(d["placeOrder"]["order"]["email"], "gift@example.com", "{d}");
    app.stop().await;
}

/// `amountMinor` (deprecated) is a GraphQL `Int`: an amount that does not fit 32 bits is a field
/// error naming `amount`, never a number a 32-bit client cannot hold.
#[tokio::test]
async fn amount_minor_refuses_what_a_32_bit_int_cannot_hold() {
    let app = spawn_app().await;
    let product = ecommerce_core::catalog::Product {
        sku: "YACHT-001".into(),
        name: "A yacht".into(),
        price: ecommerce_core::domain::Money::new(3_000_000_000, "USD").unwrap(),
    };
    ecommerce_storefront::catalog::seed::seed(app.pool(), &app.mongo, &[(product, 5)]).await.unwrap();
    let q = "query($sku: String!) { product(sku: $sku) { price { amount amountMinor } } }";
    let big = app.gql(None, q, json!({ "sku": "YACHT-001" })).await;
    assert_eq!(code(&big), "BAD_USER_INPUT", "{big}");
    assert!(big["errors"][0]["message"].as_str().unwrap().contains("read amount"), "{big}");
    assert_eq!(big["errors"][0]["path"], json!(["product", "price", "amountMinor"]));
    let small = app.data(None, q, json!({ "sku": "MUG-001" })).await;
    assert_eq!(small["product"]["price"], json!({ "amount": "14.99", "amountMinor": 1499 }));
    let exact = app.data(None, "{ product(sku: \"YACHT-001\") { price { amount } } }", json!({})).await;
    assert_eq!(exact["product"]["price"]["amount"], "30000000.00");
    app.stop().await;
}

/// `placeOrder` answers with what a normalized cache needs to stay right without refetching: the
/// emptied cart (the same `Cart` id) and the new order as an edge of `orders`, with its cursor.
#[tokio::test]
async fn place_order_returns_the_emptied_cart_and_the_new_orders_edge() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 2).await;
    let cart_id = app.data(Some(&buyer.token), "{ cart { id } }", json!({})).await["cart"]["id"].clone();
    let q = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) {
        order { id } orderEdge { cursor node { id status } } cart { id itemCount } userErrors { code } } }";
    let vars = json!({ "input": { "idempotencyKey": "edge-1", "paymentToken": "tok_visa", "shippingAddress": address() } });
    let d = app.data(Some(&buyer.token), q, vars).await;
    let p = &d["placeOrder"];
    assert_eq!(p["userErrors"], json!([]), "{d}");
    assert_eq!(p["orderEdge"]["node"]["id"], p["order"]["id"]);
    assert_eq!(p["cart"]["itemCount"], 0, "the ordered units left the cart: {d}");
    assert_eq!(p["cart"]["id"], cart_id, "the cached cart, by its id");
    let list = app
        .data(Some(&buyer.token), "{ orders(first: 1) { edges { cursor node { id } } } }", json!({}))
        .await;
    assert_eq!(list["orders"]["edges"][0]["cursor"], p["orderEdge"]["cursor"], "the cursor the list has");
    // A refusal carries the cart as it is.
    let empty = app.data(Some(&buyer.token), q, json!({ "input": { "idempotencyKey": "edge-2", "paymentToken": "tok_visa", "shippingAddress": address() } })).await;
    assert_eq!(empty["placeOrder"]["userErrors"], json!([{ "code": "EMPTY_CART" }]));
    assert_eq!(empty["placeOrder"]["orderEdge"], Value::Null);
    assert_eq!(empty["placeOrder"]["cart"]["itemCount"], 0);
    app.stop().await;
}
