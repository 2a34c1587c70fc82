//! Refunds: the second saga on the engine. A confirmed order is refunded once (payment given back,
//! stock returned, order `REFUNDED`), followed over the same subscription as its checkout; a
//! refused refund leaves the order confirmed; requests that cannot be granted change nothing.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{code, db_id, spawn_app, spawn_app_with, TestApp, User};

const REFUND: &str = "mutation($id: ID!, $r: String!) { requestRefund(orderId: $id, reason: $r) { \
    order { id status refund { type status } } userErrors { code field message } } }";

const REFUND_EVENTS: &str =
    "subscription($id: ID!) { orderEvents(orderId: $id, saga: REFUND) { sequence type detail } }";

async fn request_refund(app: &TestApp, user: &User, order: &str, reason: &str) -> Value {
    app.data(Some(&user.token), REFUND, json!({ "id": order, "r": reason })).await["requestRefund"].clone()
}

/// A confirmed order of `quantity` MUG-001 paid with `token`.
async fn confirmed(app: &TestApp, buyer: &User, key: &str, token: &str, quantity: i64) -> String {
    app.add_to_cart(buyer, "MUG-001", quantity).await;
    let id = app.place(buyer, key, token).await;
    assert_eq!(app.wait_terminal(buyer, &id).await["status"], "CONFIRMED");
    id
}

async fn refund_of(app: &TestApp, user: &User, order: &str) -> Value {
    app.data(
        Some(&user.token),
        "query($id: ID!) { order(id: $id) { status saga { type status } refund { type status failureReason \
         orderStatus step events { type detail } } } }",
        json!({ "id": order }),
    )
    .await["order"]
        .clone()
}

/// Polls the order until its refund saga ended (at most 60 s). The order and its saga are read
/// one after the other: both must show the end (the saga's last transition writes both at once).
async fn wait_refund(app: &TestApp, user: &User, order: &str) -> Value {
    for _ in 0..600 {
        let o = refund_of(app, user, order).await;
        let ended = o["refund"]["status"] == "COMPLETED" || o["refund"]["status"] == "COMPENSATED";
        if ended && o["status"] != "REFUNDING" {
            return o;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the refund of {order} never ended: {}", refund_of(app, user, order).await);
}

async fn sagas_of(app: &TestApp, order: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT definition FROM sagas WHERE order_id = $1 ORDER BY created_at")
        .bind(db_id(order))
        .fetch_all(app.pool())
        .await
        .unwrap()
}

fn types(events: &Value) -> Vec<&str> {
    events.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_confirmed_order_is_refunded_once_and_its_stock_returned() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    let id = confirmed(&app, &buyer, "refund-1", "tok_visa", 2).await;
    assert_eq!(app.stock("MUG-001").await, 98);
    // Before any refund, the order has none, and there is nothing to follow.
    assert_eq!(refund_of(&app, &buyer, &id).await["refund"], Value::Null);
    let mut early = app.ws(Some(&buyer.token)).await;
    early.expect_ack().await;
    early.start("1", REFUND_EVENTS, json!({ "id": id })).await;
    let refused = early.next_payload().await.expect("an answer");
    assert_eq!(code(&refused), "NOT_FOUND", "{refused}");

    let r = request_refund(&app, &buyer, &id, "arrived broken").await;
    assert_eq!(r["userErrors"], json!([]), "{r}");
    assert_eq!(r["order"]["status"], "REFUNDING");
    assert_eq!(r["order"]["refund"]["type"], "REFUND");

    // The refund streams over the same subscription as the checkout, from its first event.
    let mut ws = app.ws(Some(&buyer.token)).await;
    ws.expect_ack().await;
    ws.start("r", REFUND_EVENTS, json!({ "id": id })).await;
    let mut streamed = Vec::new();
    while let Some(p) = ws.next_payload().await {
        assert!(p.get("errors").is_none(), "{p}");
        let e = &p["data"]["orderEvents"];
        assert_eq!(e["sequence"], streamed.len() + 1, "in order, without gaps");
        streamed.push(e["type"].as_str().unwrap().to_string());
    }
    assert_eq!(
        streamed,
        ["REFUND_REQUESTED", "PAYMENT_REFUNDED", "STOCK_RETURNED", "ORDER_REFUNDED", "COMPLETED"]
    );

    let o = wait_refund(&app, &buyer, &id).await;
    assert_eq!(o["status"], "REFUNDED");
    assert_eq!(o["saga"], json!({ "type": "CHECKOUT", "status": "COMPLETED" }), "the checkout is untouched");
    assert_eq!(o["refund"]["orderStatus"], "REFUNDED");
    assert_eq!(o["refund"]["step"], Value::Null);
    assert_eq!(o["refund"]["events"][0]["detail"], Value::Null, "history text is for operators");
    let op = app.operator().await;
    assert_eq!(app.operator_details(&op, &id, "REFUND").await[0], "buyer: arrived broken");
    assert_eq!(app.stock("MUG-001").await, 100, "the units are back");
    assert_eq!(app.payment_status(&id).await.as_deref(), Some("REFUNDED"));

    // Asked again (a double click, a retry): the same refund, nothing new.
    let again = request_refund(&app, &buyer, &id, "arrived broken").await;
    assert_eq!(again["userErrors"], json!([]));
    assert_eq!(again["order"]["status"], "REFUNDED");
    assert_eq!(sagas_of(&app, &id).await, ["checkout", "refund"]);
    assert_eq!(app.stock("MUG-001").await, 100, "returned once");
    // The checkout's subscription still ends where it ended.
    assert_eq!(app.order_events(&buyer, &id).await.unwrap().last().map(String::as_str), Some("COMPLETED"));

    // Operators find refunds by type and by step.
    let d = app
        .data(
            Some(&op.token),
            "query($o: ID!) { refunds: sagas(filter: { type: REFUND, orderId: $o }) { totalCount nodes { type status } } \
             checkouts: sagas(filter: { type: CHECKOUT, orderId: $o }) { totalCount } \
             capturing: sagas(filter: { step: CAPTURE_PAYMENT, orderId: $o }) { nodes { type } } }",
            json!({ "o": id }),
        )
        .await;
    assert_eq!(d["refunds"]["nodes"], json!([{ "type": "REFUND", "status": "COMPLETED" }]));
    assert_eq!(d["checkouts"]["totalCount"], 1);
    // A step names its saga: the checkout ended at its capture, the refund is not matched.
    assert_eq!(d["capturing"]["nodes"], json!([{ "type": "CHECKOUT" }]));
    let mismatch = app
        .gql(
            Some(&op.token),
            "{ sagas(filter: { type: CHECKOUT, step: RETURN_STOCK }) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&mismatch), "BAD_USER_INPUT", "{mismatch}");
    app.stop().await;
}

#[tokio::test]
async fn a_refused_refund_leaves_the_order_confirmed_and_the_stock_sold() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    let id = confirmed(&app, &buyer, "refund-refused", "tok_refund_fails", 1).await;
    let r = request_refund(&app, &buyer, &id, "changed my mind").await;
    assert_eq!(r["order"]["status"], "REFUNDING");
    let o = wait_refund(&app, &buyer, &id).await;
    assert_eq!(o["status"], "CONFIRMED");
    assert_eq!(o["refund"]["status"], "COMPENSATED");
    assert_eq!(o["refund"]["failureReason"], "REFUND_DECLINED");
    assert_eq!(o["refund"]["orderStatus"], "CONFIRMED");
    assert_eq!(
        types(&o["refund"]["events"]),
        ["REFUND_REQUESTED", "REFUND_DECLINED", "REFUND_ABANDONED", "COMPENSATED"]
    );
    let op = app.operator().await;
    assert_eq!(app.operator_details(&op, &id, "REFUND").await[1], "refund_refused");
    assert_eq!(app.stock("MUG-001").await, 99, "nothing returned");
    assert_eq!(app.payment_status(&id).await.as_deref(), Some("CAPTURED"));
    app.stop().await;
}

/// A checkout that compensates after its capture went through (the capture's reply came too late)
/// voids the payment by refunding it. When the provider refuses that refund, asking again will
/// not change its mind: the worker replies FAULTED at once (the saga waits for an operator)
/// instead of failing the message, which was redelivered and dead-lettered on every attempt.
#[tokio::test]
async fn a_void_whose_refund_the_provider_refuses_faults_at_once() {
    use ecommerce_checkout::payment::worker::PaymentWorker;
    use ecommerce_checkout::payment::TestGateway;
    use ecommerce_core::saga::messages::{Body, Command, Envelope};
    let app = spawn_app().await;
    let buyer = app.register().await;
    let id = confirmed(&app, &buyer, "void-refund-refused", "tok_refund_fails", 1).await;
    let order = db_id(&id);
    let saga: uuid::Uuid = sqlx::query_scalar("SELECT id FROM sagas WHERE order_id = $1")
        .bind(order)
        .fetch_one(app.pool())
        .await
        .unwrap();
    let worker =
        PaymentWorker::new(app.pool().clone(), std::sync::Arc::new(TestGateway), Duration::from_secs(5));
    let void = Envelope::new(saga, order, "test", Body::Command(Command::VoidPayment));
    let handled = worker.handle(void.clone()).await;
    assert!(matches!(handled, Ok(true)), "a reply, not a failure to redeliver: {handled:?}");
    assert_eq!(app.payment_status(&id).await.as_deref(), Some("CAPTURED"), "nothing was refunded");
    let again = worker.handle(void).await;
    assert!(matches!(again, Ok(false)), "a redelivery is a duplicate: {again:?}");
    app.stop().await;
}

#[tokio::test]
async fn refunds_that_cannot_be_granted_are_refused_clearly_and_change_nothing() {
    let app = spawn_app_with(|c| c.api.refund_window = Duration::ZERO).await;
    let buyer = app.register().await;
    let stranger = app.register().await;
    let id = confirmed(&app, &buyer, "refund-window", "tok_visa", 1).await;

    let refused =
        |r: &Value| (r["userErrors"][0]["code"].as_str().unwrap_or("none").to_string(), r["order"].clone());
    // Past the window (zero here), for the buyer.
    let r = request_refund(&app, &buyer, &id, "too late").await;
    assert_eq!(refused(&r), ("REFUND_WINDOW_CLOSED".into(), Value::Null), "{r}");
    assert_eq!(r["userErrors"][0]["field"], json!(["orderId"]));
    // Someone else's order is as absent as one that never was.
    let r = request_refund(&app, &stranger, &id, "mine now").await;
    assert_eq!(refused(&r).0, "ORDER_NOT_FOUND");
    for reason in ["", "   ", &"x".repeat(501)] {
        let r = request_refund(&app, &buyer, &id, reason).await;
        assert_eq!(refused(&r).0, "INVALID_REFUND_REASON");
        assert_eq!(r["userErrors"][0]["field"], json!(["reason"]));
    }
    let r = request_refund(&app, &buyer, "not-an-order", "why").await;
    assert_eq!(refused(&r).0, "ORDER_NOT_FOUND", "a malformed id is as absent as someone else's");
    let anonymous = app.gql(None, REFUND, json!({ "id": id, "r": "why" })).await;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
    // A cancelled order has nothing to refund; a pending one is cancelled instead.
    app.add_to_cart(&buyer, "TEE-002", 1).await;
    let declined = app.place(&buyer, "refund-declined", "tok_declined").await;
    assert_eq!(app.wait_terminal(&buyer, &declined).await["status"], "CANCELLED");
    let r = request_refund(&app, &buyer, &declined, "why").await;
    assert_eq!(refused(&r).0, "ORDER_ALREADY_CANCELLED");
    app.add_to_cart(&buyer, "TEE-002", 1).await;
    let pending = app.place(&buyer, "refund-pending", "tok_timeout").await;
    let r = request_refund(&app, &buyer, &pending, "why").await;
    assert_eq!(refused(&r).0, "ORDER_NOT_CONFIRMED");

    // Nothing changed for any of them.
    for order in [&id, &declined, &pending] {
        assert_eq!(sagas_of(&app, order).await, ["checkout"], "{order}");
    }
    assert_eq!(refund_of(&app, &buyer, &id).await["status"], "CONFIRMED");

    // An operator may refund past the window; the history says who asked.
    let op = app.operator().await;
    let r = request_refund(&app, &op, &id, "goodwill").await;
    assert_eq!(r["userErrors"], json!([]), "{r}");
    let o = wait_refund(&app, &buyer, &id).await;
    assert_eq!(o["status"], "REFUNDED");
    assert_eq!(app.operator_details(&op, &id, "REFUND").await[0], "operator: goodwill");
    app.stop().await;
}

#[tokio::test]
async fn an_unanswered_refund_waits_for_an_operator_who_finishes_it_from_the_monitor_api() {
    let app = spawn_app_with(|c| {
        c.saga.step_timeout = Duration::from_millis(800);
        c.saga.max_attempts = 2;
        c.saga.retry_backoff = Duration::from_millis(50);
    })
    .await;
    let buyer = app.register().await;
    let op = app.operator().await;
    let id = confirmed(&app, &buyer, "refund-hangs", "tok_refund_hangs", 2).await;
    let r = request_refund(&app, &buyer, &id, "never arrived").await;
    assert_eq!(r["userErrors"], json!([]), "{r}");

    // The provider never answers: after its attempts the refund stops, never undone by itself.
    let find = "query($o: ID!) { sagas(filter: { type: REFUND, orderId: $o }) { nodes { id status step \
                orderStatus lastError nextAction } } }";
    let mut saga = Value::Null;
    for _ in 0..300 {
        saga = app.data(Some(&op.token), find, json!({ "o": id })).await["sagas"]["nodes"][0].clone();
        if saga["status"] == "NEEDS_ATTENTION" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(saga["status"], "NEEDS_ATTENTION", "{saga}");
    assert_eq!(saga["step"], "REFUND_PAYMENT");
    assert_eq!(saga["orderStatus"], "REFUNDING");
    assert_eq!(saga["lastError"], "REFUND_PAYMENT got no reply after 2 attempts");
    assert_eq!(refund_of(&app, &buyer, &id).await["status"], "REFUNDING");
    assert_eq!(app.stock("MUG-001").await, 98, "nothing returned while the refund is unknown");

    // The operator checked the provider (the refund went through by hand) and resumes: the
    // saga goes on to return the stock and marks the order refunded.
    let resume =
        "mutation($s: ID!) { resumeSaga(input: { sagaId: $s, reason: \"refunded in the dashboard\", \
                  idempotencyKey: \"resume-1\" }) { saga { status } } }";
    app.data(Some(&op.token), resume, json!({ "s": saga["id"] })).await;
    let o = wait_refund(&app, &buyer, &id).await;
    assert_eq!(o["status"], "REFUNDED");
    assert_eq!(app.stock("MUG-001").await, 100);
    assert!(types(&o["refund"]["events"]).contains(&"OPERATOR_RESUMED"), "{o}");

    // A finished refund is never undone (past the refund step the machine refuses it even while
    // paused: machine::tests::an_unanswered_refund_or_return_waits_for_an_operator...).
    let force = "mutation($s: ID!) { forceCompensateSaga(input: { sagaId: $s, reason: \"undo\", \
                 idempotencyKey: \"undo-1\" }) { saga { status } } }";
    let refused = app.gql(Some(&op.token), force, json!({ "s": saga["id"] })).await;
    assert_eq!(code(&refused), "CONFLICT", "{refused}");
    app.stop().await;
}
