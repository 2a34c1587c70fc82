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

/// Refuses new connections to `db` and ends the ones it has: the services see an outage.
async fn close_database(admin: &mut PgConnection, db: &str) {
    sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false")).execute(&mut *admin).await.unwrap();
    sqlx::query(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"))
        .execute(&mut *admin)
        .await
        .unwrap();
}

async fn reopen_database(admin: &mut PgConnection, db: &str) {
    sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true")).execute(&mut *admin).await.unwrap();
}

/// While PostgreSQL refuses connections the API reports not-ready; once it is back, the services
/// reconnect by themselves and checkouts complete again.
#[tokio::test]
async fn readiness_follows_the_database_and_services_reconnect() {
    let app = spawn_app().await;
    assert_eq!(ready_status(&app).await, 200);
    let mut admin = PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
    let db = app.database().to_string();
    close_database(&mut admin, &db).await;
    wait_for_status(&app, 503).await;
    // It says which dependency is down, and nothing of the driver's error (host names, user
    // names, database names), which goes to the log.
    let body: serde_json::Value =
        app.http.get(app.admin_url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(body, serde_json::json!({ "postgres": "unavailable", "mongo": "ok", "broker": "ok" }));

    reopen_database(&mut admin, &db).await;
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
    close_database(&mut admin, &db).await;
    // A command for the stock worker (one that changes nothing: releasing what an order that
    // never existed holds), sent while the database is closed.
    let order = uuid::Uuid::now_v7();
    let envelope = Envelope::new(order, order, "outage", Body::Command(Command::ReleaseStock));
    app.services.transport.publish(Topic::StockCommands, "outage", envelope.encode().into()).await.unwrap();
    // Well past two deliveries' worth of tries (100 ms, then 200 ms, before).
    tokio::time::sleep(Duration::from_secs(6)).await;
    reopen_database(&mut admin, &db).await;

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

/// A database outage stops the sagas' clock: a step whose deadline passed while PostgreSQL was
/// out of reach is not timed out when it comes back; its deadline moves on by the outage. (It
/// was timed out at once, so an outage used up an attempt of every saga in flight, and the fault
/// harness's 90 s stop ended some of them with STOCK_TIMEOUT when their workers took a few
/// seconds to catch up.)
#[tokio::test]
async fn a_database_outage_does_not_use_up_a_steps_time() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.saga.step_timeout = Duration::from_secs(4);
        c.saga.max_attempts = 1;
    })
    .await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "PEN-004", 1).await;
    // The test gateway never answers for tok_timeout: the saga waits on its payment step.
    let id = app.place(&buyer, "outage-clock", "tok_timeout").await;
    let order = crate::helpers::db_id(&id);
    let waiting = "SELECT s.deadline FROM sagas s WHERE s.order_id = $1 AND s.status = 'RUNNING'
                      AND EXISTS (SELECT 1 FROM saga_events e WHERE e.saga_id = s.id AND e.kind = 'STOCK_RESERVED')";
    let mut before: Option<chrono::DateTime<chrono::Utc>> = None;
    for _ in 0..300 {
        before = sqlx::query_scalar(waiting).bind(order).fetch_optional(app.pool()).await.unwrap();
        if before.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = before.expect("the saga waits for its payment");

    // Closed for longer than the step's whole timeout.
    let mut admin = PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
    let db = app.database().to_string();
    close_database(&mut admin, &db).await;
    let outage = Duration::from_secs(6);
    tokio::time::sleep(outage).await;
    reopen_database(&mut admin, &db).await;

    // The first scan after it either postpones the deadline or times the step out.
    let mut tries = 0;
    let (status, reason, after) = loop {
        tries += 1;
        assert!(tries < 600, "the saga was not scanned after the outage");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let row: (String, Option<String>, Option<chrono::DateTime<chrono::Utc>>) = match sqlx::query_as(
            "SELECT status, failure_reason, deadline FROM sagas WHERE order_id = $1 AND definition = 'checkout'",
        )
        .bind(order)
        .fetch_one(app.pool())
        .await
        {
            Ok(row) => row,
            Err(_) => continue, // the test's own pool reconnecting
        };
        if row.2 != Some(before) {
            break row;
        }
    };
    assert_eq!((status.as_str(), reason), ("RUNNING", None), "the outage timed the step out");
    let moved = (after.expect("a deadline") - before).to_std().unwrap();
    assert!(moved >= outage - Duration::from_secs(1), "deadline moved by {moved:?} only");

    // The clock runs again: the step times out once its own time is up.
    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["cancelReason"], "PAYMENT_TIMEOUT");
    app.stop().await;
}
