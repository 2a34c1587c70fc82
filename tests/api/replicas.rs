//! Live updates on every API instance: saga changes travel through the broker (a broadcast
//! topic), so a client subscribed on instance B sees an order placed through instance A.

use std::time::Duration;

use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_subscriber_on_one_instance_sees_an_order_placed_through_another() {
    let mut app = spawn_app().await;
    let (b, b_metrics) = app.replica().await;
    let op = app.operator().await;
    let buyer = app.register().await;

    // B hears changes once its broadcast subscription is live (a Kafka group needs a moment):
    // place orders through A until B has heard one.
    for n in 0.. {
        app.add_to_cart(&buyer, "MUG-001", 1).await;
        let id = app.place(&buyer, &format!("warm-{n}"), "tok_visa").await;
        app.wait_terminal(&buyer, &id).await;
        if b_metrics.live_updates() > 0 {
            break;
        }
        assert!(n < 60, "instance B heard no saga change from the broker");
    }

    // An operator watches every saga on B; the order is placed through A.
    let mut watch = app.ws_to(b, Some(&op.token)).await;
    watch.expect_ack().await;
    watch.start("all", "subscription { sagaChanges { orderId status } }", json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let heard_before = b_metrics.live_updates();
    app.add_to_cart(&buyer, "TEE-002", 1).await;
    let order = app.place(&buyer, "replica-1", "tok_slow").await;

    // The buyer follows the order on B while its payment is still being authorized.
    let mut follow = app.ws_to(b, Some(&buyer.token)).await;
    follow.expect_ack().await;
    follow.subscribe(&order).await;
    let events = follow.collect().await.expect("order events on B");
    assert_eq!(events.first().map(String::as_str), Some("ORDER_PLACED"));
    assert_eq!(events.last().map(String::as_str), Some("COMPLETED"), "{events:?}");

    let mut statuses = Vec::new();
    while statuses.last().map(String::as_str) != Some("COMPLETED") {
        let p = tokio::time::timeout(Duration::from_secs(30), watch.next_payload())
            .await
            .expect("a change in time")
            .expect("stream open");
        let s = &p["data"]["sagaChanges"];
        if s["orderId"] == order.as_str() {
            statuses.push(s["status"].as_str().unwrap().to_string());
        }
    }
    // Start, stock reserved, payment authorized, captured: four transitions B heard of.
    assert!(b_metrics.live_updates() >= heard_before + 4, "B heard the changes through the broker");
    app.stop().await;
}
