use std::time::Duration;

use bytes::Bytes;
use ecommerce_saga::broker::Topic;
use ecommerce_saga::saga::messages::{Body, Command, Envelope, StockLine};
use uuid::Uuid;

use crate::helpers::{code, spawn_app};

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
        .map(|r| {
            r["data"]["placeOrder"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{r}"))
                .to_string()
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0], ids[2]);
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(app.pool())
        .await
        .unwrap();
    let sagas: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!((orders, sagas), (1, 1));
    app.wait_terminal(&buyer, &ids[0]).await;
    assert_eq!(app.stock("MUG-001").await, 99, "charged and reserved once");

    let bad = app.place_order(&buyer, "has spaces", "tok_visa").await;
    assert_eq!(code(&bad), "BAD_USER_INPUT");
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
            lines: vec![StockLine {
                sku: "PEN-004".into(),
                quantity: 3,
            }],
        }),
    );
    let payload = Bytes::from(env.encode());
    let transport = app.services.transport.clone();
    transport
        .publish(Topic::StockCommands, "k", payload.clone())
        .await
        .unwrap();
    transport
        .publish(Topic::StockCommands, "k", payload)
        .await
        .unwrap();

    for _ in 0..200 {
        if app.stats.handled() + app.stats.duplicates() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.stats.handled(), 1, "handled once");
    assert_eq!(
        app.stats.duplicates(),
        1,
        "second delivery recognised as a duplicate"
    );
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
    let app = spawn_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let id = app.place(&buyer, "reply-dup", "tok_visa").await;
    app.wait_terminal(&buyer, &id).await;

    // Re-deliver a copy of a reply the orchestrator already applied, with the same message id.
    let order_id: Uuid = id.parse().unwrap();
    let saga_id: Uuid = sqlx::query_scalar("SELECT id FROM sagas WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    let message_id: Uuid = sqlx::query_scalar("SELECT message_id FROM inbox WHERE consumer = 'orchestrator' ORDER BY processed_at LIMIT 1")
        .fetch_one(app.pool())
        .await
        .unwrap();
    let mut reply = Envelope::new(
        saga_id,
        order_id,
        "t",
        Body::Reply(ecommerce_saga::saga::messages::Reply {
            kind: ecommerce_saga::saga::messages::ReplyKind::StockReserved,
            reason: None,
        }),
    );
    reply.message_id = message_id;
    app.services
        .transport
        .publish(Topic::Replies, "k", Bytes::from(reply.encode()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM saga_events WHERE saga_id = $1")
        .bind(saga_id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(events, 6, "history unchanged");
    assert_eq!(app.stock("MUG-001").await, 99);
    app.stop().await;
}
