//! Checkout with `PAYMENT_GATEWAY=stripe` against localstripe (a stateful fake of Stripe's API,
//! started by `scripts/services.sh up`): the saga's outcome, and what the provider holds for the
//! order, agree, also when the provider answers late or changes its mind (through a
//! fault-injecting proxy), and its webhooks reach the saga.

use std::time::Duration;

use ecommerce_checkout::payment::stripe::StripeGateway;
use ecommerce_checkout::payment::webhook;
use ecommerce_platform::config::{Config, PaymentGatewayKind, SecretString};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{db_id, spawn_app_with, TestApp};
use crate::stripe_proxy::StripeProxy;

const WEBHOOK_SECRET: &str = "whsec_ecommerce_saga_tests";

fn stripe_base() -> String {
    std::env::var("STRIPE_API_BASE").unwrap_or_else(|_| "http://127.0.0.1:8420".into())
}

fn use_stripe(c: &mut Config, base: &str) {
    c.workers.payment_gateway = PaymentGatewayKind::Stripe;
    c.workers.stripe_api_base = base.to_string();
    c.workers.stripe_secret_key = Some(SecretString::from("sk_test_ecommerce_saga"));
    c.api.stripe_webhook_secret = Some(SecretString::from(WEBHOOK_SECRET));
}

async fn stripe_app() -> TestApp {
    spawn_app_with(|c| use_stripe(c, &stripe_base())).await
}

/// Has localstripe send its events to `app`'s webhook endpoint (signed with [`WEBHOOK_SECRET`]).
/// localstripe sends every event to every endpoint registered with it: those of tests running
/// beside this one too, which record them and find no saga of theirs.
async fn subscribe_webhooks(app: &TestApp) {
    let url = app.url("/webhooks/stripe");
    let r = reqwest::Client::new()
        .post(format!("{}/_config/webhooks/{}", stripe_base(), app.database()))
        .form(&[("url", url.as_str()), ("secret", WEBHOOK_SECRET)])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "localstripe refused the webhook: {}", r.status());
}

async fn webhook_events(app: &TestApp, order: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM webhook_events WHERE order_id = $1 ORDER BY received_at")
        .bind(db_id(order))
        .fetch_all(app.pool())
        .await
        .unwrap()
}

fn history(order: &Value) -> Vec<String> {
    order["saga"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

fn captured_charges(intent: &Value) -> usize {
    intent["charges"]["data"].as_array().unwrap().iter().filter(|c| c["captured"] == true).count()
}

/// The intents localstripe holds for an order (by its global id).
async fn at_provider(order: &str) -> Vec<Value> {
    let g = StripeGateway::new(
        &stripe_base(),
        SecretString::from("sk_test_ecommerce_saga"),
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    g.intents_of(db_id(order)).await.unwrap()
}

#[tokio::test]
async fn a_confirmed_order_is_captured_once_at_the_provider_for_its_total() {
    let app = stripe_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 2).await;
    let id = app.place(&buyer, "stripe-ok", "pm_card_visa").await;
    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    let intents = at_provider(&id).await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(intents[0]["status"], "succeeded");
    assert_eq!(intents[0]["amount"], order["total"]["amountMinor"]);
    let captured =
        intents[0]["charges"]["data"].as_array().unwrap().iter().filter(|c| c["captured"] == true).count();
    assert_eq!(captured, 1);
    assert_eq!(app.payment_status(&id).await.as_deref(), Some("CAPTURED"));
    app.stop().await;
}

#[tokio::test]
async fn a_refund_gives_the_captured_amount_back_once_at_the_provider() {
    let app = stripe_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "TEE-002", 2).await;
    let id = app.place(&buyer, "stripe-refund", "pm_card_visa").await;
    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    let stock = app.stock("TEE-002").await;
    let refund = "mutation($id: ID!) { requestRefund(orderId: $id, reason: \"wrong size\") { order { status } userErrors { code } } }";
    for _ in 0..2 {
        let r = app.data(Some(&buyer.token), refund, json!({ "id": id })).await;
        assert_eq!(r["requestRefund"]["userErrors"], json!([]), "{r}");
    }
    let mut status = Value::Null;
    for _ in 0..600 {
        let o = app
            .data(Some(&buyer.token), "query($id: ID!) { order(id: $id) { status } }", json!({ "id": id }))
            .await;
        status = o["order"]["status"].clone();
        if status != "REFUNDING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "REFUNDED");
    assert_eq!(app.stock("TEE-002").await, stock + 2, "the units are back, once");
    let intents = at_provider(&id).await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    let charge = &intents[0]["charges"]["data"][0];
    assert_eq!(charge["amount_refunded"], order["total"]["amountMinor"], "{charge}");
    let refunds = charge["refunds"]["data"].as_array().map_or(0, Vec::len);
    assert_eq!(refunds, 1, "one refund at the provider: {charge}");
    assert_eq!(app.payment_status(&id).await.as_deref(), Some("REFUNDED"));
    app.stop().await;
}

#[tokio::test]
async fn refused_credentials_stop_the_saga_for_an_operator_who_retries_after_the_fix() {
    let proxy = StripeProxy::start(&stripe_base()).await;
    // As Stripe answers a revoked or mistyped secret key: no retry helps, and it is not the
    // buyer's doing, so the order is neither declined nor retried into a timeout.
    proxy.refuse_credentials(true);
    let app = spawn_app_with(|c| use_stripe(c, &proxy.base)).await;
    let op = app.operator().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "BAG-003", 1).await;
    let id = app.place(&buyer, "stripe-bad-key", "pm_card_visa").await;
    let saga =
        "query($o: ID!) { sagas(filter: { orderId: $o }) { nodes { id status step lastError orderStatus \
                events { type detail } } } }";
    let mut paused = Value::Null;
    for _ in 0..300 {
        paused = app.data(Some(&op.token), saga, json!({ "o": id })).await["sagas"]["nodes"][0].clone();
        if paused["status"] == "NEEDS_ATTENTION" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(paused["status"], "NEEDS_ATTENTION", "{paused}");
    assert_eq!(paused["step"], "AUTHORIZE_PAYMENT");
    assert_eq!(paused["orderStatus"], "PENDING");
    let types: Vec<&str> =
        paused["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ORDER_PLACED", "STOCK_RESERVED", "STEP_FAULTED", "NEEDS_ATTENTION"]);
    assert!(paused["lastError"].as_str().unwrap().contains("stripe 401"), "{paused}");
    assert!(at_provider(&id).await.is_empty(), "nothing reached the provider");

    // The key is fixed; the operator sends the step again and the checkout goes through.
    proxy.refuse_credentials(false);
    let retry = "mutation($s: ID!) { retrySagaStep(input: { sagaId: $s, reason: \"secret key rotated\", \
                 idempotencyKey: \"fix-1\" }) { saga { status } } }";
    app.data(Some(&op.token), retry, json!({ "s": paused["id"] })).await;
    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    let intents = at_provider(&id).await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(captured_charges(&intents[0]), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_duplicate_that_arrives_while_the_provider_answers_leaves_the_answer_to_the_first() {
    let proxy = StripeProxy::start(&stripe_base()).await;
    // Every create and capture is at the provider for a second, and every message is delivered
    // twice, the copy within 50 ms: the copy always finds the first delivery's call in flight.
    proxy.hold_answers(&["/v1/payment_intents", "/capture"], Duration::from_secs(1));
    let app = spawn_app_with(|c| {
        use_stripe(c, &proxy.base);
        c.broker.chaos.duplicate = true;
        c.broker.chaos.reorder_max = Duration::from_millis(50);
    })
    .await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let id = app.place(&buyer, "stripe-duplicates", "pm_card_visa").await;
    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    // The copy stood aside without taking the message from the first delivery, which recorded
    // the answer: nothing waited for a step timeout.
    let events = history(&order);
    assert!(!events.iter().any(|e| e == "STEP_RETRIED"), "answered at once: {events:?}");
    let intents = at_provider(&id).await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(captured_charges(&intents[0]), 1);
    app.stop().await;
}

#[tokio::test]
async fn after_a_server_error_the_retry_is_a_new_request_and_charges_once() {
    let proxy = StripeProxy::start(&stripe_base()).await;
    // As Stripe: the first answer to an idempotency key is saved and replayed, a 500 included.
    // The first create fails with one, so the same key would fail forever.
    proxy.replay_idempotency_keys(true);
    proxy.fail_next("/v1/payment_intents");
    let app = spawn_app_with(|c| {
        use_stripe(c, &proxy.base);
        c.saga.step_timeout = Duration::from_secs(2);
    })
    .await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "TEE-002", 1).await;
    let id = app.place(&buyer, "stripe-500", "pm_card_visa").await;
    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    let events = history(&order);
    assert!(events.iter().any(|e| e == "STEP_RETRIED"), "the step was retried: {events:?}");
    let intents = at_provider(&id).await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(captured_charges(&intents[0]), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_refused_card_cancels_the_order_and_leaves_no_authorization_behind() {
    let app = stripe_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "TEE-002", 1).await;
    let stock = app.stock("TEE-002").await;
    let id = app.place(&buyer, "stripe-declined", "pm_card_chargeCustomerFail").await;
    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    assert_eq!(order["cancelReason"], "PAYMENT_DECLINED");
    assert_eq!(app.stock("TEE-002").await, stock, "the reservation was released");
    let held: Vec<Value> = at_provider(&id)
        .await
        .into_iter()
        .filter(|i| i["status"] == "requires_capture" || i["status"] == "succeeded")
        .collect();
    assert!(held.is_empty(), "nothing authorized or charged: {held:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_capture_that_went_through_after_the_worker_gave_up_completes_the_saga_by_webhook() {
    let proxy = StripeProxy::start(&stripe_base()).await;
    // The capture reaches Stripe at once and its answer never comes back in time: the worker
    // stops waiting after 5 s (time enough to read the intent first, however loaded the
    // machine). Retrying the step would take 30 s (the tests' step timeout): the webhook, sent a
    // second after the capture, is what completes the saga.
    proxy.hold_answers(&["/capture"], Duration::from_secs(120));
    let app = spawn_app_with(|c| {
        use_stripe(c, &proxy.base);
        c.workers.payment_gateway_timeout = Duration::from_secs(5);
    })
    .await;
    subscribe_webhooks(&app).await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let id = app.place(&buyer, "stripe-late-capture", "pm_card_visa").await;
    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    let events = history(&order);
    assert!(!events.iter().any(|e| e == "STEP_RETRIED"), "answered without a retry: {events:?}");
    assert!(
        webhook_events(&app, &id).await.iter().any(|k| k == "payment_intent.succeeded"),
        "the capture was reported by webhook"
    );
    assert_eq!(app.payment_status(&id).await.as_deref(), Some("CAPTURED"));
    let intents = at_provider(&id).await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(captured_charges(&intents[0]), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_authorization_answered_too_late_is_taken_over_by_the_retry_not_made_twice() {
    let proxy = StripeProxy::start(&stripe_base()).await;
    // Creating the intent works at Stripe, its answer is lost to the worker's timeout; the step
    // is retried (after 2 s) and finds the intent instead of making a second one.
    proxy.hold_answers(&["/v1/payment_intents"], Duration::from_secs(3));
    let app = spawn_app_with(|c| {
        use_stripe(c, &proxy.base);
        c.workers.payment_gateway_timeout = Duration::from_secs(1);
        c.saga.step_timeout = Duration::from_secs(2);
    })
    .await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "TEE-002", 1).await;
    let id = app.place(&buyer, "stripe-slow-authorize", "pm_card_visa").await;
    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert!(history(&order).iter().any(|e| e == "STEP_RETRIED"), "{order}");
    let intents = at_provider(&id).await;
    assert_eq!(intents.len(), 1, "one intent however often it was asked for: {intents:?}");
    assert_eq!(intents[0]["status"], "succeeded");
    assert_eq!(captured_charges(&intents[0]), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_authorization_that_expired_before_its_capture_cancels_the_order() {
    let proxy = StripeProxy::start(&stripe_base()).await;
    // The authorization is gone at Stripe when the capture step reads it.
    proxy.expire_authorizations(true);
    let app = spawn_app_with(|c| use_stripe(c, &proxy.base)).await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "BAG-003", 1).await;
    let stock = app.stock("BAG-003").await;
    let id = app.place(&buyer, "stripe-expired", "pm_card_visa").await;
    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    assert_eq!(order["cancelReason"], "PAYMENT_CAPTURE_FAILED");
    assert_eq!(app.stock("BAG-003").await, stock, "the reservation was released");
    let intents = at_provider(&id).await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(intents[0]["status"], "canceled");
    assert_eq!(captured_charges(&intents[0]), 0, "nothing charged");
    app.stop().await;
}

/// Posts `body` to the app's webhook endpoint with `signature`.
async fn deliver(app: &TestApp, body: &[u8], signature: Option<&str>) -> (u16, Value) {
    let mut request = app.http.post(app.url("/webhooks/stripe")).body(body.to_vec());
    if let Some(s) = signature {
        request = request.header("Stripe-Signature", s);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn webhooks_are_verified_and_recorded_once() {
    let app = stripe_app().await;
    let now = chrono::Utc::now().timestamp();
    let body = serde_json::to_vec(&json!({
        "id": format!("evt_{}", Uuid::new_v4().simple()), "type": "payment_intent.succeeded",
        "data": { "object": { "object": "payment_intent", "id": "pi_unknown", "capture_method": "manual",
                              "status": "succeeded", "metadata": { "order_id": Uuid::now_v7().to_string() } } }
    }))
    .unwrap();
    let recorded = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_events")
            .fetch_one(app.pool())
            .await
            .unwrap()
    };

    // Refused, and nothing recorded: no signature, another secret, an old one, a changed body.
    let (status, answer) = deliver(&app, &body, None).await;
    assert_eq!(status, 400, "{answer}");
    let (status, _) = deliver(&app, &body, Some(&webhook::sign(&body, "whsec_other", now))).await;
    assert_eq!(status, 400);
    let (status, _) = deliver(&app, &body, Some(&webhook::sign(&body, WEBHOOK_SECRET, now - 3600))).await;
    assert_eq!(status, 400);
    let mut changed = body.clone();
    changed.extend_from_slice(b" ");
    let (status, _) = deliver(&app, &changed, Some(&webhook::sign(&body, WEBHOOK_SECRET, now))).await;
    assert_eq!(status, 400);
    assert_eq!(recorded().await, 0);

    // Accepted once; the same event again changes nothing. Its order is not one of ours.
    let signature = webhook::sign(&body, WEBHOOK_SECRET, now);
    let (status, answer) = deliver(&app, &body, Some(&signature)).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("recorded")), "{answer}");
    let (status, answer) = deliver(&app, &body, Some(&signature)).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("duplicate")), "{answer}");
    assert_eq!(recorded().await, 1);
    let metrics = app.http.get(app.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    for outcome in ["refused\"} 4", "recorded\"} 1", "duplicate\"} 1"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("ecommerce_saga_webhook_events_total") && l.ends_with(outcome)),
            "{outcome} in {metrics}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn without_a_secret_there_is_no_webhook_endpoint() {
    let app = spawn_app_with(|_| {}).await;
    let (status, _) = deliver(&app, b"{}", Some("t=1,v1=00")).await;
    assert_eq!(status, 404);
    app.stop().await;
}

/// Creates an authorization (manual capture, confirmed) for `order` at localstripe directly, as
/// one whose answer came late, or that somebody else made.
async fn authorization_at_provider(order: &str, amount: i64) -> Value {
    reqwest::Client::new()
        .post(format!("{}/v1/payment_intents", stripe_base()))
        .basic_auth("sk_test_ecommerce_saga", Some(""))
        .form(&[
            ("amount", amount.to_string()),
            ("currency", "usd".into()),
            ("capture_method", "manual".into()),
            ("confirm", "true".into()),
            ("payment_method", "pm_card_visa".into()),
            ("metadata[order_id]", db_id(order).to_string()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Posts the signed `amount_capturable_updated` event of `intent` to the app.
async fn report_authorized(app: &TestApp, intent: &Value) {
    let body = serde_json::to_vec(&json!({
        "id": format!("evt_{}", Uuid::new_v4().simple()),
        "type": "payment_intent.amount_capturable_updated",
        "data": { "object": intent },
    }))
    .unwrap();
    let signature = webhook::sign(&body, WEBHOOK_SECRET, chrono::Utc::now().timestamp());
    let (status, answer) = deliver(app, &body, Some(&signature)).await;
    assert_eq!(status, 200, "{answer}");
}

/// Waits until the intent `reference` of `order` has `status` at the provider.
async fn wait_intent(order: &str, reference: &str, status: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..150 {
        last = at_provider(order).await.into_iter().find(|i| i["id"] == reference).unwrap_or_default();
        if last["status"] == status {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("intent {reference} never became {status}: {last}");
}

/// Whatever the provider holds for an order that is not going to be captured is released: an
/// authorization reported for a payment that already ended (declined), and one that is not the
/// payment's own on a confirmed order (another amount). Both were only recorded, and stayed held
/// at the provider. The order's own capture is left alone.
#[tokio::test]
async fn authorizations_reported_for_orders_that_will_not_capture_them_are_released() {
    let app = stripe_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "TEE-002", 1).await;
    let declined = app.place(&buyer, "late-auth-declined", "pm_card_chargeCustomerFail").await;
    assert_eq!(app.wait_terminal(&buyer, &declined).await["status"], "CANCELLED");
    let late = authorization_at_provider(&declined, 2499).await;
    assert_eq!(late["status"], "requires_capture", "{late}");
    report_authorized(&app, &late).await;
    wait_intent(&declined, late["id"].as_str().unwrap(), "canceled").await;
    assert_eq!(app.payment_status(&declined).await.as_deref(), Some("DECLINED"));

    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let confirmed = app.place(&buyer, "late-auth-confirmed", "pm_card_visa").await;
    assert_eq!(app.wait_terminal(&buyer, &confirmed).await["status"], "CONFIRMED");
    let own: Value = at_provider(&confirmed).await.into_iter().next().unwrap();
    let stray = authorization_at_provider(&confirmed, 1).await;
    report_authorized(&app, &stray).await;
    wait_intent(&confirmed, stray["id"].as_str().unwrap(), "canceled").await;
    let own = wait_intent(&confirmed, own["id"].as_str().unwrap(), "succeeded").await;
    assert_eq!(captured_charges(&own), 1, "the order's own capture stays: {own}");
    assert_eq!(app.payment_status(&confirmed).await.as_deref(), Some("CAPTURED"));
    app.stop().await;
}

/// The card is reported refused (the payment became DECLINED, as a webhook does) while the
/// worker's authorization is still on its way back, and then the provider authorizes after all:
/// nothing will capture it, so the worker cancels it. It only did so for a payment voided
/// meanwhile, and left this one held at the provider.
#[tokio::test]
async fn an_authorization_that_returns_after_the_payment_was_declined_is_cancelled() {
    let proxy = StripeProxy::start(&stripe_base()).await;
    proxy.hold_answers(&["/v1/payment_intents"], Duration::from_secs(2));
    let app = spawn_app_with(|c| use_stripe(c, &proxy.base)).await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "TEE-002", 1).await;
    let id = app.place(&buyer, "declined-meanwhile", "pm_card_visa").await;
    let waiting = std::time::Instant::now();
    while proxy.creates_in_flight() == 0 {
        assert!(waiting.elapsed() < Duration::from_secs(30), "no authorization was asked for");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let declined = sqlx::query(
        "UPDATE payments SET status = 'DECLINED', reason = 'card_declined' WHERE order_id = $1 AND status = 'PENDING'",
    )
    .bind(db_id(&id))
    .execute(app.pool())
    .await
    .unwrap();
    assert_eq!(declined.rows_affected(), 1, "the payment was still waiting for its answer");
    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    let intent = at_provider(&id).await.into_iter().next().expect("the intent the worker made");
    wait_intent(&id, intent["id"].as_str().unwrap(), "canceled").await;
    app.stop().await;
}
