//! The transactional outbox. A state change and the message announcing it are written in one
//! transaction; the relay publishes committed rows and deletes them once the broker confirmed.
//! A crash between publish and delete publishes the row again: consumers deduplicate.
//!
//! Waking the relay: whoever commits outbox rows calls [`committed`], which wakes this process's
//! relay at once; rows another process committed (whose own relay died with it, say) are found by
//! polling. Why not `NOTIFY` from an insert trigger, as before: PostgreSQL (up to 16) holds a
//! database-wide lock from a notifying transaction's pre-commit until its commit record is
//! flushed, so every writer of the outbox committed one at a time, and every relay of every
//! process woke for every commit and raced the others for the same rows (24 relay queries per
//! saga, most of them empty, measured with `pg_stat_statements`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::broker::{Outgoing, Topic, Transport};
use crate::saga::messages::Envelope;
use crate::telemetry::TraceParent;

/// One wake-up per database this process writes to (tests run many databases in one process).
static WAKERS: LazyLock<Mutex<HashMap<String, Arc<Notify>>>> = LazyLock::new(Default::default);

fn waker(pool: &PgPool) -> Arc<Notify> {
    let database = pool.connect_options().get_database().unwrap_or_default().to_string();
    WAKERS.lock().expect("outbox wakers").entry(database).or_default().clone()
}

/// Wakes this process's relay for `pool`'s database: call it after committing outbox rows. A
/// missed call only delays the rows until the relay's next poll.
pub fn committed(pool: &PgPool) {
    waker(pool).notify_one();
}

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
    insert_all(tx, &[OutboxRow::new(envelope, delay)]).await
}

/// A message on its way into the outbox. Its trace context is taken when it is made, from the
/// span current then (the span that writes it), so make it in the span of the work it belongs to.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    message_id: uuid::Uuid,
    topic: &'static str,
    key: String,
    payload: Vec<u8>,
    traceparent: Option<String>,
    delay_ms: i64,
}

impl OutboxRow {
    pub fn new(envelope: &Envelope, delay: Duration) -> Self {
        OutboxRow {
            message_id: envelope.message_id,
            topic: envelope.topic().as_str(),
            key: envelope.saga_id.to_string(),
            payload: envelope.encode(),
            traceparent: TraceParent::for_message(&envelope.trace_id, envelope.message_id)
                .map(|t| t.header()),
            delay_ms: delay.as_millis() as i64,
        }
    }
}

/// Writes `rows` in one statement, in this order (the relay publishes in id order).
pub async fn insert_all(tx: &mut Transaction<'_, Postgres>, rows: &[OutboxRow]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.message_id).collect();
    let topics: Vec<&str> = rows.iter().map(|r| r.topic).collect();
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let payloads: Vec<&[u8]> = rows.iter().map(|r| r.payload.as_slice()).collect();
    let traceparents: Vec<Option<&str>> = rows.iter().map(|r| r.traceparent.as_deref()).collect();
    let delays: Vec<i64> = rows.iter().map(|r| r.delay_ms).collect();
    sqlx::query(
        "INSERT INTO outbox (message_id, topic, key, payload, traceparent, available_at)
         SELECT m, t, k, p, tp, now() + d * interval '1 millisecond'
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::bigint[])
             WITH ORDINALITY AS r(m, t, k, p, tp, d, n)
          ORDER BY n",
    )
    .bind(&ids)
    .bind(&topics)
    .bind(&keys)
    .bind(&payloads)
    .bind(&traceparents)
    .bind(&delays)
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
        tx.commit().await?;
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

/// Rows one relay transaction publishes at most.
const RELAY_BATCH: i64 = 256;

/// Relays until `shutdown`. Drains without pausing while rows come; when idle, waits until this
/// process commits outbox rows ([`committed`]) or `interval` passed (rows of other processes,
/// delayed rows that became due).
pub async fn run_relay(
    pool: PgPool,
    transport: Arc<dyn Transport>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let wake = waker(&pool);
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        match relay_once(&pool, transport.as_ref(), RELAY_BATCH).await {
            Ok(n) => {
                failures = 0;
                // A short batch drained what was committed; rows committed since woke us again.
                if n as i64 == RELAY_BATCH {
                    continue;
                }
            }
            Err(e) => {
                failures += 1;
                let wait = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                warn!(error = %e, ?wait, "outbox relay failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
