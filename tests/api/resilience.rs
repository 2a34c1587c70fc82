use std::time::Duration;

use sqlx::{Connection, PgConnection};

use crate::helpers::spawn_app;

async fn ready_status(app: &crate::helpers::TestApp) -> u16 {
    app.http.get(app.admin_url("/readyz")).send().await.unwrap().status().as_u16()
}

async fn wait_for_status(app: &crate::helpers::TestApp, status: u16) {
    for _ in 0..120 {
        if ready_status(app).await == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("/readyz never answered {status}");
}

/// While PostgreSQL refuses connections the API reports not-ready; once it is back, the services
/// reconnect by themselves and checkouts complete again.
#[tokio::test]
async fn readiness_follows_the_database_and_services_reconnect() {
    let app = spawn_app().await;
    assert_eq!(ready_status(&app).await, 200);
    let mut admin = PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
    let db = app.database().to_string();
    sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false")).execute(&mut admin).await.unwrap();
    sqlx::query(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"))
        .execute(&mut admin)
        .await
        .unwrap();
    wait_for_status(&app, 503).await;
    // It says which dependency is down, and nothing of the driver's error (host names, user
    // names, database names), which goes to the log.
    let body: serde_json::Value =
        app.http.get(app.admin_url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(body, serde_json::json!({ "postgres": "unavailable", "mongo": "ok", "broker": "ok" }));

    sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true")).execute(&mut admin).await.unwrap();
    wait_for_status(&app, 200).await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let id = app.place(&buyer, "after-outage", "tok_visa").await;
    assert_eq!(app.wait_terminal(&buyer, &id).await["status"], "CONFIRMED");
    app.stop().await;
}

/// A database outage longer than the delivery budget dead-letters nothing: a handler that cannot
/// reach PostgreSQL does not use up the message's deliveries (every failure counted, so two
/// failed tries during an outage sent a saga's command to the dead letters, and its saga waited
/// for an operator). The message waits, and is handled once the database is back.
#[tokio::test]
async fn a_database_outage_longer_than_the_delivery_budget_dead_letters_nothing() {
    use ecommerce_core::saga::messages::{Body, Command, Envelope};
    use ecommerce_platform::broker::Topic;
    let app = crate::helpers::spawn_app_with(|c| c.broker.max_deliveries = 2).await;
    let mut admin = PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
    let db = app.database().to_string();
    sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false")).execute(&mut admin).await.unwrap();
    sqlx::query(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"))
        .execute(&mut admin)
        .await
        .unwrap();
    // A command for the stock worker (one that changes nothing: releasing what an order that
    // never existed holds), sent while the database is closed.
    let order = uuid::Uuid::now_v7();
    let envelope = Envelope::new(order, order, "outage", Body::Command(Command::ReleaseStock));
    app.services.transport.publish(Topic::StockCommands, "outage", envelope.encode().into()).await.unwrap();
    // Well past two deliveries' worth of tries (100 ms, then 200 ms, before).
    tokio::time::sleep(Duration::from_secs(6)).await;
    sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true")).execute(&mut admin).await.unwrap();

    let handled = || app.stats.handled() + app.stats.duplicates();
    for _ in 0..300 {
        if handled() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = app.worker_metrics.render(app.pool()).await.unwrap();
    assert!(!metrics.contains("outcome=\"dead_lettered\""), "a message was dead-lettered:\n{metrics}");
    assert_eq!(handled(), 1, "handled once the database was back");
    assert!(metrics.contains("outcome=\"unavailable\""), "{metrics}");
    app.stop().await;
}
