//! What the database stops keeping: inbox rows once no copy of their message can arrive any more
//! (and not before: a redelivery inside the window is still a duplicate), expired refresh tokens
//! and ended sessions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ecommerce_core::saga::messages::{Body, Command, Envelope, StockLine};
use ecommerce_platform::broker::Topic;
use ecommerce_platform::config::InboxRetention;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{code, spawn_app_with};

/// A UUIDv7 made `ago` before now, as a message made then has.
fn made_ago(ago: Duration) -> Uuid {
    let at = SystemTime::now() - ago;
    let d = at.duration_since(UNIX_EPOCH).unwrap();
    Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, d.as_secs(), d.subsec_nanos()))
}

/// The number of rows `sql` counts for `id`.
async fn rows(pool: &sqlx::PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql).bind(id).fetch_one(pool).await.unwrap()
}

const INBOX: &str = "SELECT count(*) FROM inbox WHERE message_id = $1";
const SESSIONS: &str = "SELECT count(*) FROM sessions WHERE id = $1";

/// Waits (at most a minute) until `done` holds.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    for _ in 0..600 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within a minute");
}

#[tokio::test]
async fn inbox_rows_go_once_no_copy_can_arrive_and_a_redelivery_inside_the_window_is_a_duplicate() {
    let app = spawn_app_with(|c| {
        c.retention.inbox = InboxRetention::For(Duration::from_secs(3600));
        c.retention.interval = Duration::from_millis(100);
    })
    .await;
    // A message made 30 minutes ago (a consumer that was down meanwhile), handled now.
    let mut env = Envelope::new(
        Uuid::now_v7(),
        Uuid::now_v7(),
        "retention-test",
        Body::Command(Command::ReserveStock {
            lines: vec![StockLine { sku: "PEN-004".into(), quantity: 3 }],
        }),
    );
    env.message_id = made_ago(Duration::from_secs(1800));
    let payload = Bytes::from(env.encode());
    let transport = app.services.transport.clone();
    transport.publish(Topic::StockCommands, "k", payload.clone()).await.unwrap();
    eventually("the first delivery", || async { app.stats.handled() == 1 }).await;
    // Handled 30 minutes ago, as far as the inbox knows; and a row handled three hours ago.
    sqlx::query("UPDATE inbox SET processed_at = now() - interval '30 minutes' WHERE message_id = $1")
        .bind(env.message_id)
        .execute(app.pool())
        .await
        .unwrap();
    let old = made_ago(Duration::from_secs(3 * 3600));
    sqlx::query(
        "INSERT INTO inbox (consumer, message_id, processed_at) VALUES ('stock-worker', $1, now() - interval '3 hours')",
    )
    .bind(old)
    .execute(app.pool())
    .await
    .unwrap();

    let pool = app.pool();
    eventually("the three-hour-old row's deletion", || async { rows(pool, INBOX, old).await == 0 }).await;
    assert_eq!(rows(pool, INBOX, env.message_id).await, 1, "a row inside the hour is kept");

    // A copy arriving now, inside the window, is recognised.
    transport.publish(Topic::StockCommands, "k", payload).await.unwrap();
    eventually("the second delivery", || async { app.stats.duplicates() == 1 }).await;
    assert_eq!(app.stats.handled(), 1, "handled once");
    assert_eq!(app.stock("PEN-004").await, 7, "reserved once");
    app.stop().await;
}

#[tokio::test]
async fn expired_refresh_tokens_and_ended_sessions_are_deleted_and_live_ones_kept() {
    let app = spawn_app_with(|c| {
        c.retention.sessions = Duration::from_secs(3600);
        c.retention.interval = Duration::from_millis(100);
    })
    .await;
    let out = app.register().await;
    let expired = app.register().await;
    let live = app.register().await;
    app.data(Some(&out.token), "mutation { logout }", json!({})).await;
    let session_of = |user: &crate::helpers::User| {
        let claims = user.token.split('.').nth(1).unwrap().to_string();
        use base64::Engine;
        let claims: serde_json::Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap())
                .unwrap();
        Uuid::parse_str(claims["sid"].as_str().unwrap()).unwrap()
    };
    let (out_sid, expired_sid, live_sid) = (session_of(&out), session_of(&expired), session_of(&live));
    // Logged out two hours ago; the other's tokens expired two hours ago.
    sqlx::query("UPDATE sessions SET created_at = now() - interval '1 day', revoked_at = now() - interval '2 hours' WHERE id = $1")
        .bind(out_sid)
        .execute(app.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE sessions SET created_at = now() - interval '40 days' WHERE id = $1")
        .bind(expired_sid)
        .execute(app.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE refresh_tokens SET expires_at = now() - interval '2 hours' WHERE session_id = $1")
        .bind(expired_sid)
        .execute(app.pool())
        .await
        .unwrap();

    let pool = app.pool();
    eventually("the ended sessions' deletion", || async {
        rows(pool, SESSIONS, out_sid).await == 0 && rows(pool, SESSIONS, expired_sid).await == 0
    })
    .await;
    let tokens: i64 = sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE session_id = ANY($1)")
        .bind(vec![out_sid, expired_sid])
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(tokens, 0);
    assert_eq!(rows(pool, SESSIONS, live_sid).await, 1, "a live session is kept");
    // The deleted ones' tokens are refused; the live one refreshes.
    let refresh = "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken } }";
    for gone in [&out, &expired] {
        assert_eq!(
            code(&app.gql(None, refresh, json!({ "t": gone.refresh_token })).await),
            "UNAUTHENTICATED"
        );
        assert_eq!(code(&app.gql(Some(&gone.token), "{ me { id } }", json!({})).await), "UNAUTHENTICATED");
    }
    app.data(None, refresh, json!({ "t": live.refresh_token })).await;
    assert!(app.metrics().retention_deleted_of("sessions") >= 2);
    app.stop().await;
}

#[tokio::test]
async fn a_finished_sagas_history_goes_after_its_window_and_its_order_stays_readable() {
    let app = spawn_app_with(|c| {
        c.retention.saga_history = Some(Duration::from_secs(2 * 86_400));
        c.retention.interval = Duration::from_millis(100);
    })
    .await;
    let buyer = app.register().await;
    let mut orders = Vec::new();
    for key in ["old", "recent"] {
        app.add_to_cart(&buyer, "MUG-001", 1).await;
        let id = app.place(&buyer, key, "tok_visa").await;
        assert_eq!(app.wait_terminal(&buyer, &id).await["status"], "CONFIRMED");
        orders.push(id);
    }
    let saga = "SELECT id FROM sagas WHERE order_id = $1";
    let mut sagas = Vec::new();
    for id in &orders {
        let order_id = crate::helpers::db_id(id);
        sagas.push(sqlx::query_scalar::<_, Uuid>(saga).bind(order_id).fetch_one(app.pool()).await.unwrap());
    }
    let (old, recent) = (sagas[0], sagas[1]);
    let events = "SELECT count(*) FROM saga_events WHERE saga_id = $1";
    let recorded = rows(app.pool(), events, old).await;
    assert!(recorded >= 4, "{recorded}");
    // The first finished three days ago (as time would have it); the second just now.
    sqlx::query("UPDATE sagas SET updated_at = now() - interval '3 days' WHERE id = $1")
        .bind(old)
        .execute(app.pool())
        .await
        .unwrap();

    let pool = app.pool();
    eventually("the old history's deletion", || async { rows(pool, events, old).await == 0 }).await;
    let deleted_at: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT history_deleted_at FROM sagas WHERE id = $1")
            .bind(old)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert!(deleted_at.is_some(), "the saga says when its history went");
    assert_eq!(rows(pool, events, recent).await, recorded, "a recent history is kept");
    assert_eq!(app.orchestrator_metrics.retention_deleted_of("saga_events"), recorded as u64);
    assert_eq!(app.orchestrator_metrics.retention_deleted_of("saga_histories"), 1);

    // The order and its saga's outcome stay; its event stream ends at once instead of waiting
    // for events that will not come. The recent one still streams its history.
    let order = app.order(&buyer, &orders[0]).await;
    assert_eq!(order["data"]["order"]["status"], "CONFIRMED", "{order}");
    assert_eq!(order["data"]["order"]["saga"]["status"], "COMPLETED", "{order}");
    let streamed = tokio::time::timeout(Duration::from_secs(10), app.order_events(&buyer, &orders[0]))
        .await
        .expect("the stream of a finished saga ends");
    assert_eq!(streamed, Ok(vec![]));
    let recent_events = app.order_events(&buyer, &orders[1]).await.unwrap();
    assert_eq!(recent_events.len() as i64, recorded);
    assert_eq!(recent_events.last().map(String::as_str), Some("COMPLETED"));
    app.stop().await;
}
