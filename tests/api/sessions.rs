//! A session that ends ends everywhere: an open subscription stops when its session is logged
//! out, when a reused refresh token revokes it, when the access token it was opened with expires,
//! and (operator-only subscriptions) when the role is revoked. Each subscription is opened on a
//! second API replica and the session ended through the first, so the end must cross instances.
//! The client learns why: graphql-ws's close code 4403, on which clients ask for a fresh token.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{code, spawn_app_with, TestApp, User, Ws};

const CART: &str = "subscription { myCart { itemCount } }";

/// A buyer's `myCart` subscription on the replica at `addr`, past its first update.
async fn following_cart(app: &TestApp, addr: std::net::SocketAddr, buyer: &User) -> Ws {
    let mut ws = app.ws_to(addr, Some(&buyer.token)).await;
    ws.expect_ack().await;
    ws.start("cart", CART, json!({})).await;
    let first = ws.next_payload().await.expect("the cart");
    assert!(first.get("errors").is_none(), "{first}");
    ws
}

#[tokio::test]
async fn logging_out_on_one_replica_closes_the_sessions_subscriptions_on_another() {
    let mut app = spawn_app_with(|_| {}).await;
    let (replica, metrics) = app.replica().await;
    let buyer = app.register().await;
    let mut ws = following_cart(&app, replica, &buyer).await;
    // Another session of the same buyer is not this one.
    let other = app
        .gql(
            None,
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } }",
            json!({ "e": buyer.email, "p": TestApp::PASSWORD }),
        )
        .await;
    let other =
        User { token: other["data"]["login"]["accessToken"].as_str().unwrap().to_string(), ..buyer.clone() };
    let mut theirs = following_cart(&app, replica, &other).await;

    app.data(Some(&buyer.token), "mutation { logout }", json!({})).await;
    assert_eq!(ws.close_code().await, Some(4403), "closed as forbidden: the session ended");
    assert_eq!(metrics.ws_closed_for("session_ended"), 1);
    // The other session still follows its cart.
    app.add_to_cart(&other, "MUG-001", 1).await;
    let changed = theirs.next_payload().await.expect("still open");
    assert_eq!(changed["data"]["myCart"]["itemCount"], 1, "{changed}");
    app.stop().await;
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_the_session_and_closes_its_subscriptions() {
    let mut app = spawn_app_with(|c| c.api.auth.refresh_reuse_grace = Duration::ZERO).await;
    let (replica, _) = app.replica().await;
    let buyer = app.register().await;
    let mut ws = following_cart(&app, replica, &buyer).await;
    let refresh = "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken } }";
    app.data(None, refresh, json!({ "t": buyer.refresh_token })).await;
    let reused = app.gql(None, refresh, json!({ "t": buyer.refresh_token })).await;
    assert_eq!(code(&reused), "UNAUTHENTICATED", "{reused}");
    assert_eq!(ws.close_code().await, Some(4403));
    app.stop().await;
}

#[tokio::test]
async fn a_subscription_ends_when_the_access_token_it_was_opened_with_expires() {
    // Long enough to sign up and subscribe on any machine; the test waits for the expiry.
    let mut app = spawn_app_with(|c| c.api.auth.access_token_ttl = Duration::from_secs(6)).await;
    let (replica, metrics) = app.replica().await;
    let buyer = app.register().await;
    let mut ws = following_cart(&app, replica, &buyer).await;
    assert_eq!(ws.close_code().await, Some(4403));
    assert_eq!(metrics.ws_closed_for("session_ended"), 1);
    // The token is refused from now on, and a fresh one from the refresh token opens again.
    let mut again = app.ws_to(replica, Some(&buyer.token)).await;
    assert_eq!(again.close_code().await, Some(4403));
    let refresh = "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken } }";
    let fresh = app.data(None, refresh, json!({ "t": buyer.refresh_token })).await;
    let renewed =
        User { token: fresh["refreshSession"]["accessToken"].as_str().unwrap().to_string(), ..buyer };
    following_cart(&app, replica, &renewed).await;
    app.stop().await;
}

#[tokio::test]
async fn an_operator_whose_role_is_revoked_stops_receiving_saga_changes() {
    let mut app = spawn_app_with(|_| {}).await;
    let (replica, _) = app.replica().await;
    let op = app.operator().await;
    let mut ws = app.ws_to(replica, Some(&op.token)).await;
    ws.expect_ack().await;
    ws.start("changes", "subscription { sagaChanges { orderId status } }", json!({})).await;
    // Live: a buyer's order reaches it.
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let order = app.place(&buyer, "revoke-1", "tok_visa").await;
    let change = ws.next_payload().await.expect("a change");
    assert_eq!(change["data"]["sagaChanges"]["orderId"], order.as_str(), "{change}");

    ecommerce_saga::auth::service::set_role(
        app.pool(),
        &op.email,
        ecommerce_saga::auth::Role::Operator,
        false,
    )
    .await
    .unwrap();
    assert_eq!(ws.close_code().await, Some(4403));
    // Connecting again works (the session is open), but the operator subscription is refused.
    let mut again = app.ws_to(replica, Some(&op.token)).await;
    again.expect_ack().await;
    again.start("changes", "subscription { sagaChanges { orderId status } }", json!({})).await;
    let refused = again.next_payload().await.expect("an answer");
    assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
    app.wait_terminal(&buyer, &order).await;
    app.stop().await;
}
