//! The transactional outbox. A state change and the message announcing it are written in one
//! transaction; the relay publishes committed rows and deletes them once the broker confirmed.
//! A crash between publish and delete publishes the row again: consumers deduplicate.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::broker::{Topic, Transport};
use crate::saga::messages::Envelope;

pub async fn enqueue(tx: &mut Transaction<'_, Postgres>, envelope: &Envelope) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO outbox (message_id, topic, key, payload) VALUES ($1, $2, $3, $4)")
        .bind(envelope.message_id)
        .bind(envelope.topic().as_str())
        .bind(envelope.saga_id.to_string())
        .bind(envelope.encode())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Publishes up to `batch` rows; returns how many. Rows are locked with `SKIP LOCKED`, so several
/// relays (one per process) share the table without publishing the same row twice in normal operation.
pub async fn relay_once(pool: &PgPool, transport: &dyn Transport, batch: i64) -> Result<usize, RelayError> {
    let mut tx = pool.begin().await?;
    let rows =
        sqlx::query("SELECT id, topic, key, payload FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED")
            .bind(batch)
            .fetch_all(&mut *tx)
            .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    for row in &rows {
        let topic: String = row.get("topic");
        let Some(topic) = Topic::parse(&topic) else {
            warn!(%topic, "outbox row with unknown topic; dropping");
            ids.push(row.get::<i64, _>("id"));
            continue;
        };
        let key: String = row.get("key");
        let payload: Vec<u8> = row.get("payload");
        transport.publish(topic, &key, Bytes::from(payload)).await?;
        ids.push(row.get::<i64, _>("id"));
    }
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

/// Relays until `shutdown`; polls every `interval` while idle and drains without pausing while busy.
pub async fn run_relay(
    pool: PgPool,
    transport: Arc<dyn Transport>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let wait = match relay_once(&pool, transport.as_ref(), 256).await {
            Ok(n) if n > 0 => {
                failures = 0;
                continue;
            }
            Ok(_) => {
                failures = 0;
                interval
            }
            Err(e) => {
                failures += 1;
                let wait = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                warn!(error = %e, ?wait, "outbox relay failed; retrying");
                wait
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
