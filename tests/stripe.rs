//! The Stripe gateway against localstripe, a stateful fake of Stripe's API over HTTP (started by
//! `scripts/services.sh up`; `STRIPE_API_BASE` points elsewhere). localstripe ignores
//! `Idempotency-Key`, so what these tests see of "once only" is the gateway's own doing: it looks
//! at the provider's state before it acts. Every test uses orders of its own, so they run in
//! parallel on one server.

use std::time::Duration;

use ecommerce_checkout::payment::stripe::StripeGateway;
use ecommerce_checkout::payment::{Call, GatewayError, PaymentGateway};
use ecommerce_platform::config::SecretString;
use serde_json::Value;
use uuid::Uuid;

fn base() -> String {
    std::env::var("STRIPE_API_BASE").unwrap_or_else(|_| "http://127.0.0.1:8420".into())
}

fn gateway() -> StripeGateway {
    StripeGateway::new(&base(), SecretString::from("sk_test_ecommerce_saga"), Duration::from_secs(10))
        .unwrap()
}

/// What localstripe holds for the order, read without the gateway.
async fn intents(order: Uuid) -> Vec<Value> {
    gateway().intents_of(order).await.unwrap()
}

async fn refunds(intent: &str) -> Vec<Value> {
    let body: Value = reqwest::Client::new()
        .get(format!("{}/v1/refunds", base()))
        .query(&[("payment_intent", intent)])
        .basic_auth("sk_test_ecommerce_saga", Some(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn authorize_and_capture_charge_once_however_often_they_are_repeated() {
    let g = gateway();
    let order = Uuid::now_v7();
    let auth = g.authorize(Call::new(order, 1), "pm_card_visa", 1499, "USD").await.unwrap();
    assert!(auth.reference.starts_with("pi_"), "{auth:?}");
    // The worker crashed before recording the answer (or the provider failed and the next
    // attempt is a new request), and the command came again.
    let again = g.authorize(Call::new(order, 2), "pm_card_visa", 1499, "USD").await.unwrap();
    assert_eq!(again, auth, "the intent made first is taken over");
    g.capture(Call::new(order, 1), &auth.reference, 1499).await.unwrap();
    g.capture(Call::new(order, 1), &auth.reference, 1499).await.unwrap();

    let at_provider = intents(order).await;
    assert_eq!(at_provider.len(), 1, "one intent for the order: {at_provider:?}");
    let intent = &at_provider[0];
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount"], 1499);
    assert_eq!(intent["currency"], "usd");
    assert_eq!(intent["capture_method"], "manual");
    assert_eq!(intent["metadata"]["order_id"], order.to_string());
    let captured: Vec<&Value> =
        intent["charges"]["data"].as_array().unwrap().iter().filter(|c| c["captured"] == true).collect();
    assert_eq!(captured.len(), 1, "captured once: {intent}");
}

#[tokio::test]
async fn a_refused_card_is_a_decline() {
    let g = gateway();
    let order = Uuid::now_v7();
    let refused = g.authorize(Call::new(order, 1), "pm_card_chargeCustomerFail", 1499, "USD").await;
    assert!(matches!(refused, Err(GatewayError::Declined(_))), "{refused:?}");
    // Asked again, it stays refused and charges nothing.
    let again = g.authorize(Call::new(order, 1), "pm_card_chargeCustomerFail", 1499, "USD").await;
    assert!(matches!(again, Err(GatewayError::Declined(_))), "{again:?}");
    assert!(intents(order)
        .await
        .iter()
        .all(|i| i["status"] != "succeeded" && i["status"] != "requires_capture"));
    // A payment method the provider does not know is refused for good, not retried.
    let unknown = g.authorize(Call::new(Uuid::now_v7(), 1), "pm_does_not_exist", 1499, "USD").await;
    assert!(matches!(unknown, Err(GatewayError::Declined(_))), "{unknown:?}");
}

#[tokio::test]
async fn void_cancels_the_authorization_once() {
    let g = gateway();
    let order = Uuid::now_v7();
    let auth = g.authorize(Call::new(order, 1), "pm_card_visa", 2500, "EUR").await.unwrap();
    g.void(Call::new(order, 1), Some(&auth.reference)).await.unwrap();
    g.void(Call::new(order, 1), Some(&auth.reference)).await.unwrap();
    let at_provider = intents(order).await;
    assert_eq!(at_provider.len(), 1);
    assert_eq!(at_provider[0]["status"], "canceled", "no hanging authorization");
    // A voided authorization cannot be captured any more.
    assert!(matches!(
        g.capture(Call::new(order, 1), &auth.reference, 2500).await,
        Err(GatewayError::Declined(_))
    ));
}

#[tokio::test]
async fn refund_returns_the_captured_amount_once() {
    let g = gateway();
    let order = Uuid::now_v7();
    let auth = g.authorize(Call::new(order, 1), "pm_card_visa", 4200, "USD").await.unwrap();
    g.capture(Call::new(order, 1), &auth.reference, 4200).await.unwrap();
    g.refund(Call::new(order, 1), &auth.reference, 4200).await.unwrap();
    g.refund(Call::new(order, 1), &auth.reference, 4200).await.unwrap();
    let issued = refunds(&auth.reference).await;
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0]["amount"], 4200);
}

#[tokio::test]
async fn a_key_the_provider_refuses_is_permanent_not_a_decline() {
    // A publishable key where the secret one belongs: every call is refused, whatever the card.
    let g = StripeGateway::new(&base(), SecretString::from("pk_test_publishable"), Duration::from_secs(10))
        .unwrap();
    let r = g.authorize(Call::new(Uuid::now_v7(), 1), "pm_card_visa", 100, "USD").await;
    assert!(matches!(r, Err(GatewayError::Permanent(ref why)) if why.contains("401")), "{r:?}");
}

#[tokio::test]
async fn an_unreachable_provider_leaves_the_outcome_unknown() {
    let g = StripeGateway::new("http://127.0.0.1:9", SecretString::from("sk_test_x"), Duration::from_secs(2))
        .unwrap();
    let r = g.authorize(Call::new(Uuid::now_v7(), 1), "pm_card_visa", 100, "USD").await;
    assert!(matches!(r, Err(GatewayError::Unavailable(_))), "{r:?}");
}

/// Stripe writes ISK and UGX amounts with two decimals that are always 00, although ISO 4217
/// gives them none: 500 ISK is `amount=50000`. The gateway converts whatever it sends and reads
/// back (it sent 500 ISK as 5 ISK).
#[tokio::test]
async fn currencies_stripe_writes_with_two_decimals_are_converted() {
    let g = gateway();
    for currency in ["ISK", "UGX"] {
        let order = Uuid::now_v7();
        let auth = g.authorize(Call::new(order, 1), "pm_card_visa", 500, currency).await.unwrap();
        g.capture(Call::new(order, 1), &auth.reference, 500).await.unwrap();
        g.refund(Call::new(order, 1), &auth.reference, 500).await.unwrap();
        let intent = &intents(order).await[0];
        assert_eq!(intent["amount"], 50_000, "{currency}: {intent}");
        assert_eq!(intent["currency"], currency.to_ascii_lowercase());
        let refunded = refunds(&auth.reference).await;
        assert_eq!(refunded.len(), 1, "{refunded:?}");
        assert_eq!(refunded[0]["amount"], 50_000, "{currency}: {refunded:?}");
    }
    // And the others as they are.
    let order = Uuid::now_v7();
    let auth = g.authorize(Call::new(order, 1), "pm_card_visa", 500, "JPY").await.unwrap();
    g.capture(Call::new(order, 1), &auth.reference, 500).await.unwrap();
    assert_eq!(intents(order).await[0]["amount"], 500);
}
