//! Rolling upgrades: messages still in flight in the previous release's format are handled.
//! With MESSAGE_WRITE_VERSION set to the previous version, every message of a checkout travels in
//! that format (as the previous release wrote it), and the saga completes.

use std::time::Duration;

use ecommerce_core::saga::messages::{MESSAGE_VERSION, OLDEST_READ_VERSION};
use ecommerce_platform::broker::Topic;
use futures::StreamExt;
use serde_json::Value;

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn a_checkout_completes_when_every_message_is_in_the_previous_format() {
    let previous = MESSAGE_VERSION - 1;
    assert!(previous >= OLDEST_READ_VERSION, "this release reads the previous one's messages");
    let app = spawn_app_with(|c| c.broker.write_version = previous).await;
    let mut notices = app.services.transport.subscribe_broadcast(Topic::SagaChanges).await.unwrap();
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let id = app.place(&buyer, "previous-format", "tok_visa").await;
    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");

    // What went over the broker was in the previous format (version 1 has no `v`)... A broadcast
    // subscription gets what is published once it is listening (Kafka assigns it a moment after
    // subscribing): cart changes are published until one arrives.
    let mut notice = None;
    for _ in 0..60 {
        app.add_to_cart(&buyer, "PEN-004", 1).await;
        if let Ok(Some(n)) = tokio::time::timeout(Duration::from_secs(1), notices.next()).await {
            notice = Some(n.unwrap());
            break;
        }
    }
    let notice = notice.expect("a change notice within a minute");
    let raw: Value = serde_json::from_slice(&notice.payload).unwrap();
    assert!(raw.get("v").is_none(), "{raw}");
    // ...and the consumers read it as such: every command and reply of the saga.
    let (orchestrator, stock, payment) = (
        app.orchestrator_metrics.messages_of_version("orchestrator", previous),
        app.worker_metrics.messages_of_version("stock-worker", previous),
        app.worker_metrics.messages_of_version("payment-worker", previous),
    );
    assert!(orchestrator >= 3, "the replies to reserve, authorize and capture: {orchestrator}");
    assert!(stock >= 1 && payment >= 2, "stock {stock}, payment {payment}");
    for consumer in ["orchestrator", "stock-worker", "payment-worker"] {
        let m = if consumer == "orchestrator" { &app.orchestrator_metrics } else { &app.worker_metrics };
        assert_eq!(
            m.messages_of_version(consumer, MESSAGE_VERSION),
            0,
            "{consumer} read only the previous format"
        );
    }
    app.stop().await;
}
