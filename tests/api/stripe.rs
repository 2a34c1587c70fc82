//! Checkout with `PAYMENT_GATEWAY=stripe` against localstripe (a stateful fake of Stripe's API,
//! started by `scripts/services.sh up`): the saga's outcome, and what the provider holds for the
//! order, agree.

use ecommerce_checkout::payment::stripe::StripeGateway;
use ecommerce_platform::config::{PaymentGatewayKind, SecretString};
use serde_json::Value;

use crate::helpers::{db_id, spawn_app_with, TestApp};

fn stripe_base() -> String {
    std::env::var("STRIPE_API_BASE").unwrap_or_else(|_| "http://127.0.0.1:8420".into())
}

async fn stripe_app() -> TestApp {
    spawn_app_with(|c| {
        c.workers.payment_gateway = PaymentGatewayKind::Stripe;
        c.workers.stripe_api_base = stripe_base();
        c.workers.stripe_secret_key = Some(SecretString::from("sk_test_ecommerce_saga"));
    })
    .await
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
