//! The transactional outbox. A state change and the message announcing it are written in one
//! transaction; the relay publishes committed rows and deletes them once the broker confirmed.
//! A crash between publish and delete publishes the row again: consumers deduplicate.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::broker::{Outgoing, Topic, Transport};
use crate::saga::messages::Envelope;
use crate::telemetry::TraceParent;

pub async fn enqueue(tx: &mut Transaction<'_, Postgres>, envelope: &Envelope) -> Result<(), sqlx::Error> {
    enqueue_after(tx, envelope, Duration::ZERO).await
}

/// Like [`enqueue`], but the relay publishes the message only once `delay` has passed (a retry's
/// backoff). It is committed now, so a crash cannot lose it.
pub async fn enqueue_after(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &Envelope,
    delay: Duration,
) -> Result<(), sqlx::Error> {
    let traceparent = TraceParent::for_message(&envelope.trace_id, envelope.message_id).map(|t| t.header());
    sqlx::query(
        "INSERT INTO outbox (message_id, topic, key, payload, traceparent, available_at)
         VALUES ($1, $2, $3, $4, $5, now() + $6::bigint * interval '1 millisecond')",
    )
    .bind(envelope.message_id)
    .bind(envelope.topic().as_str())
    .bind(envelope.saga_id.to_string())
    .bind(envelope.encode())
    .bind(traceparent)
    .bind(delay.as_millis() as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Publishes up to `batch` rows; returns how many. Rows are locked with `SKIP LOCKED`, so several
/// relays (one per process) share the table without publishing the same row twice in normal operation.
pub async fn relay_once(pool: &PgPool, transport: &dyn Transport, batch: i64) -> Result<usize, RelayError> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "SELECT id, topic, key, payload, traceparent FROM outbox WHERE available_at <= now()
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut messages = Vec::with_capacity(rows.len());
    for row in &rows {
        ids.push(row.get::<i64, _>("id"));
        let topic: String = row.get("topic");
        let Some(topic) = Topic::parse(&topic) else {
            warn!(%topic, "outbox row with unknown topic; dropping");
            continue;
        };
        let payload: Vec<u8> = row.get("payload");
        messages.push(Outgoing {
            topic,
            key: row.get("key"),
            payload: Bytes::from(payload),
            traceparent: row.get("traceparent"),
        });
    }
    // In id order, so one saga's messages leave in the order they were written.
    transport.publish_batch(&messages).await?;
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(&ids).execute(&mut *tx).await?;
    tx.commit().await?;
    debug!(published = ids.len(), "outbox relayed");
    Ok(ids.len())
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
}

/// Relays until `shutdown`. Drains without pausing while rows come; when idle, waits for the
/// insert trigger's `NOTIFY outbox` (a committed row), or `interval` as a fallback should a
/// notification be missed (the listening connection is re-established after a failure).
pub async fn run_relay(
    pool: PgPool,
    transport: Arc<dyn Transport>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    let mut listener: Option<PgListener> = None;
    while !shutdown.is_cancelled() {
        if listener.is_none() {
            listener = listen(&pool).await;
        }
        match relay_once(&pool, transport.as_ref(), 256).await {
            Ok(n) => {
                failures = 0;
                if n > 0 {
                    continue;
                }
            }
            Err(e) => {
                // Back off without listening: notifications would cut the backoff short.
                failures += 1;
                let wait = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                warn!(error = %e, ?wait, "outbox relay failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        }
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        let listener_lost = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = notified => r.is_err(),
            _ = tokio::time::sleep(interval) => false,
        };
        if listener_lost {
            listener = None;
        }
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut l = PgListener::connect_with(pool).await.ok()?;
    l.listen("outbox").await.ok()?;
    Some(l)
}
