use std::time::Duration;

use bytes::Bytes;
use ecommerce_core::saga::messages::{Body, Command, Envelope, Reply, ReplyKind, StockLine};
use ecommerce_platform::broker::Topic;
use uuid::Uuid;

use crate::helpers::{db_id, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_order() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;

    let (a, b) = tokio::join!(
        app.place_order(&buyer, "same-key", "tok_visa"),
        app.place_order(&buyer, "same-key", "tok_visa")
    );
    let c = app.place_order(&buyer, "same-key", "tok_visa").await;
    let ids: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|r| r["data"]["placeOrder"]["order"]["id"].as_str().unwrap_or_else(|| panic!("{r}")).to_string())
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0], ids[2]);
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(app.pool()).await.unwrap();
    let sagas: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas").fetch_one(app.pool()).await.unwrap();
    assert_eq!((orders, sagas), (1, 1));
    app.wait_terminal(&buyer, &ids[0]).await;
    assert_eq!(app.stock("MUG-001").await, 99, "charged and reserved once");

    app.stop().await;
}

#[tokio::test]
async fn a_command_delivered_twice_has_one_effect() {
    let app = spawn_app().await;
    let env = Envelope::new(
        Uuid::now_v7(),
        Uuid::now_v7(),
        "dup-test",
        Body::Command(Command::ReserveStock {
            lines: vec![StockLine { sku: "PEN-004".into(), quantity: 3 }],
        }),
    );
    let payload = Bytes::from(env.encode());
    let transport = app.services.transport.clone();
    transport.publish(Topic::StockCommands, "k", payload.clone()).await.unwrap();
    transport.publish(Topic::StockCommands, "k", payload).await.unwrap();

    for _ in 0..200 {
        if app.stats.handled() + app.stats.duplicates() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.stats.handled(), 1, "handled once");
    assert_eq!(app.stats.duplicates(), 1, "second delivery recognised as a duplicate");
    assert_eq!(app.stock("PEN-004").await, 7, "reserved once");
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE message_id = $1")
        .bind(env.message_id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(inbox, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_reply_delivered_twice_advances_the_saga_once() {
    // The saga waits at the payment step (the gateway never answers), so a reply that applies there
    // would advance it: only the orchestrator's inbox stops a redelivered one.
    let app = spawn_app_with(|c| c.workers.payment_gateway_timeout = Duration::from_secs(60)).await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let id = app.place(&buyer, "reply-dup", "tok_timeout").await;
    let order_id = db_id(&id);
    let saga_id: Uuid = sqlx::query_scalar("SELECT id FROM sagas WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    let events = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM saga_events WHERE saga_id = $1")
            .bind(saga_id)
            .fetch_one(app.pool())
            .await
            .unwrap()
    };
    for _ in 0..200 {
        if events().await == 2 {
            break; // ORDER_PLACED, STOCK_RESERVED
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(events().await, 2);
    let handled = app.orchestrator_stats.handled();

    // A PaymentAuthorized reply carrying the id of the reply the orchestrator already applied.
    let applied: Uuid = sqlx::query_scalar("SELECT message_id FROM inbox WHERE consumer = 'orchestrator'")
        .fetch_one(app.pool())
        .await
        .unwrap();
    let mut dup = Envelope::new(
        saga_id,
        order_id,
        "t",
        Body::Reply(Reply { kind: ReplyKind::PaymentAuthorized, reason: None, command: None }),
    );
    dup.message_id = applied;
    app.services.transport.publish(Topic::Replies, "k", Bytes::from(dup.encode())).await.unwrap();
    // (On a loaded machine a Kafka consumer may take seconds to fetch it.)
    for _ in 0..600 {
        if app.orchestrator_stats.duplicates() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.orchestrator_stats.duplicates(), 1, "recognised as a duplicate");
    assert_eq!(app.orchestrator_stats.handled(), handled);
    assert_eq!(events().await, 2, "history unchanged: the saga did not advance");
    let step: i32 = sqlx::query_scalar("SELECT step FROM sagas WHERE id = $1")
        .bind(saga_id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(step, 1, "still waiting for the payment authorization");
    app.stop().await;
}
