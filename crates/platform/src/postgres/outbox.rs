//! The transactional outbox. A state change and the message announcing it are written in one
//! transaction; the relay publishes committed rows and deletes them once the broker confirmed.
//! A crash between publish and delete publishes the row again: consumers deduplicate.
//!
//! Publishing: whoever commits outbox rows hands them to [`committed`], and this process's
//! dispatcher publishes them at once (no query: it has them) and deletes them in batches after the
//! broker confirmed. The relay polls for what the dispatcher did not do: rows committed by a
//! process that died before publishing (once they are [`DISPATCH_GRACE`] old), rows whose
//! publication failed, and delayed rows (a retry's backoff) when they fall due.
//!
//! Notices ([`OutboxRow::notice`]: "this saga changed", which wakes live streams) go the same
//! way after the commit but are not stored: their receivers read the database once a second for
//! what no notice brought, so a notice lost with a process that died before publishing it costs a
//! second, not a change. Storing them cost an insert and a delete (and two index entries each) on
//! every transition.
//!
//! Why not `NOTIFY` from an insert trigger, as before: PostgreSQL (up to 16) holds a database-wide
//! lock from a notifying transaction's pre-commit until its commit record is flushed, so every
//! writer of the outbox committed one at a time, and every relay of every process woke for every
//! commit and raced the others for the same rows (24 relay queries per saga, most of them empty,
//! measured with `pg_stat_statements`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::broker::{Outgoing, Topic, Transport};
use crate::telemetry::TraceHeaders;
use ecommerce_core::saga::messages::Envelope;

/// How old an undelayed row must be before the relay publishes it: younger ones are the
/// dispatcher's (of whichever process wrote them).
pub const DISPATCH_GRACE: Duration = Duration::from_secs(2);

/// One wake-up and one dispatcher per database this process writes to (tests run many databases
/// in one process).
static WAKERS: LazyLock<Mutex<HashMap<String, Arc<Notify>>>> = LazyLock::new(Default::default);
static DISPATCHERS: LazyLock<Mutex<HashMap<String, mpsc::UnboundedSender<Vec<OutboxRow>>>>> =
    LazyLock::new(Default::default);

fn database(pool: &PgPool) -> String {
    pool.connect_options().get_database().unwrap_or_default().to_string()
}

fn waker(pool: &PgPool) -> Arc<Notify> {
    WAKERS.lock().expect("outbox wakers").entry(database(pool)).or_default().clone()
}

/// Hands rows this process just committed to its dispatcher for `pool`'s database, which
/// publishes them now; delayed rows wake the relay, which publishes them when they fall due. Rows
/// that miss the dispatcher (none running, or it failed) are the relay's after [`DISPATCH_GRACE`].
pub fn committed(pool: &PgPool, rows: Vec<OutboxRow>) {
    let (now, later): (Vec<OutboxRow>, Vec<OutboxRow>) = rows.into_iter().partition(|r| r.delay_ms == 0);
    if !later.is_empty() {
        waker(pool).notify_one();
    }
    if now.is_empty() {
        return;
    }
    let sent = DISPATCHERS.lock().expect("outbox dispatchers").get(&database(pool)).map(|d| d.send(now));
    if !matches!(sent, Some(Ok(()))) {
        waker(pool).notify_one();
    }
}

/// Writes `envelope` to the outbox in `tx`; returns the row, for [`committed`] after the commit.
pub async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &Envelope,
) -> Result<OutboxRow, sqlx::Error> {
    let row = OutboxRow::new(envelope, Duration::ZERO);
    insert_all(tx, std::slice::from_ref(&row)).await?;
    Ok(row)
}

/// A message on its way into the outbox. Its trace context is taken when it is made, from the
/// span current then (the span that writes it), so make it in the span of the work it belongs to.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    message_id: uuid::Uuid,
    topic: &'static str,
    key: String,
    payload: Vec<u8>,
    trace: TraceHeaders,
    delay_ms: i64,
    /// Written to the table (a message), or only published after the commit (a notice).
    stored: bool,
}

impl OutboxRow {
    fn outgoing(&self) -> Option<Outgoing> {
        Some(Outgoing {
            topic: Topic::parse(self.topic)?,
            key: self.key.clone(),
            payload: Bytes::from(self.payload.clone()),
            trace: self.trace.clone(),
        })
    }

    /// `delay`: the relay publishes it only once this has passed (a retry's backoff). It is
    /// committed with the rest, so a crash cannot lose it.
    pub fn new(envelope: &Envelope, delay: Duration) -> Self {
        OutboxRow {
            message_id: envelope.message_id,
            topic: envelope.topic().as_str(),
            key: envelope.saga_id.to_string(),
            payload: envelope.encode(),
            trace: TraceHeaders::for_message(&envelope.trace_id, envelope.message_id),
            delay_ms: delay.as_millis() as i64,
            stored: true,
        }
    }

    /// A best-effort notice: published after the commit like the rows, but never written, so a
    /// crash before it is published loses it. Only for messages whose receivers find what they
    /// missed by themselves (see the module doc).
    pub fn notice(envelope: &Envelope) -> Self {
        OutboxRow { stored: false, ..Self::new(envelope, Duration::ZERO) }
    }
}

/// Writes `rows` in one statement, in this order (the relay publishes in id order); notices among
/// them are left out (they are only published).
pub async fn insert_all(tx: &mut Transaction<'_, Postgres>, rows: &[OutboxRow]) -> Result<(), sqlx::Error> {
    let stored: Vec<&OutboxRow> = rows.iter().filter(|r| r.stored).collect();
    let rows = stored.as_slice();
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.message_id).collect();
    let topics: Vec<&str> = rows.iter().map(|r| r.topic).collect();
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let payloads: Vec<&[u8]> = rows.iter().map(|r| r.payload.as_slice()).collect();
    let traceparents: Vec<Option<&str>> = rows.iter().map(|r| r.trace.get("traceparent")).collect();
    let tracestates: Vec<Option<&str>> = rows.iter().map(|r| r.trace.get("tracestate")).collect();
    let delays: Vec<i64> = rows.iter().map(|r| r.delay_ms).collect();
    sqlx::query(
        "INSERT INTO outbox (message_id, topic, key, payload, traceparent, tracestate, available_at)
         SELECT m, t, k, p, tp, ts, now() + d * interval '1 millisecond'
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[], $7::bigint[])
             WITH ORDINALITY AS r(m, t, k, p, tp, ts, d, n)
          ORDER BY n",
    )
    .bind(&ids)
    .bind(&topics)
    .bind(&keys)
    .bind(&payloads)
    .bind(&traceparents)
    .bind(&tracestates)
    .bind(&delays)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Publishes up to `batch` rows; returns how many. Rows are locked with `SKIP LOCKED`, so several
/// relays (one per process) share the table without publishing the same row twice in normal operation.
pub async fn relay_once(pool: &PgPool, transport: &dyn Transport, batch: i64) -> Result<usize, RelayError> {
    let mut tx = pool.begin().await?;
    // Delayed rows when due; undelayed ones (available when written) once the dispatcher had its
    // chance.
    let rows = sqlx::query(
        "SELECT id, topic, key, payload, traceparent, tracestate FROM outbox
          WHERE available_at <= now()
            AND (available_at > created_at OR created_at < now() - $2::bigint * interval '1 millisecond')
          ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(batch)
    .bind(DISPATCH_GRACE.as_millis() as i64)
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
            trace: TraceHeaders::read(|field| row.get(field)),
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

/// Relays until `shutdown`, and dispatches what this process commits (see the module doc). The
/// relay polls every `interval`, and at once when a delayed row was committed here.
pub async fn run_relay(
    pool: PgPool,
    transport: Arc<dyn Transport>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let (rows, queue) = mpsc::unbounded_channel();
    DISPATCHERS.lock().expect("outbox dispatchers").insert(database(&pool), rows);
    let dispatcher = tokio::spawn(dispatch(pool.clone(), transport.clone(), queue, shutdown.clone()));
    let wake = waker(&pool);
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        match relay_once(&pool, transport.as_ref(), RELAY_BATCH).await {
            Ok(n) => {
                failures = 0;
                // A short batch drained what was due.
                if n as i64 == RELAY_BATCH {
                    continue;
                }
            }
            Err(e) => {
                failures += 1;
                let wait = crate::retry::delay(failures, Duration::from_millis(100), Duration::from_secs(6));
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
    let _ = dispatcher.await;
}

/// How many published rows wait to be deleted at most, and for how long.
const DELETE_BATCH: usize = 512;
const DELETE_EVERY: Duration = Duration::from_millis(20);

/// Publishes the rows this process committed as they come (everything queued goes in one
/// pipelined batch), then deletes them in batches. A row that fails to publish, or whose delete
/// fails, stays in the table for the relay: published twice at worst, and consumers deduplicate.
async fn dispatch(
    pool: PgPool,
    transport: Arc<dyn Transport>,
    mut queue: mpsc::UnboundedReceiver<Vec<OutboxRow>>,
    shutdown: CancellationToken,
) {
    let mut published: Vec<uuid::Uuid> = Vec::new();
    let mut oldest: Option<tokio::time::Instant> = None;
    loop {
        let due = oldest.map(|t| t + DELETE_EVERY);
        let next = tokio::select! {
            _ = shutdown.cancelled() => None,
            rows = queue.recv() => Some(rows),
            _ = async { tokio::time::sleep_until(due.expect("pending deletes")).await }, if due.is_some() => Some(Some(Vec::new())),
        };
        let mut rows = match next {
            None | Some(None) => break,
            Some(Some(rows)) => rows,
        };
        while let Ok(more) = queue.try_recv() {
            rows.extend(more);
            if rows.len() >= RELAY_BATCH as usize {
                break;
            }
        }
        if !rows.is_empty() {
            let messages: Vec<Outgoing> = rows.iter().filter_map(OutboxRow::outgoing).collect();
            match transport.publish_batch(&messages).await {
                Ok(()) => {
                    oldest.get_or_insert_with(tokio::time::Instant::now);
                    published.extend(rows.iter().filter(|r| r.stored).map(|r| r.message_id));
                }
                Err(e) => warn!(
                    error = %e,
                    rows = rows.iter().filter(|r| r.stored).count(),
                    notices = rows.iter().filter(|r| !r.stored).count(),
                    "dispatch failed; the relay publishes the rows, the notices are dropped"
                ),
            }
        }
        let due = oldest.is_some_and(|t| t.elapsed() >= DELETE_EVERY);
        if !published.is_empty() && (due || published.len() >= DELETE_BATCH) {
            delete_published(&pool, &mut published).await;
            oldest = None;
        }
    }
    if !published.is_empty() {
        delete_published(&pool, &mut published).await;
    }
}

async fn delete_published(pool: &PgPool, published: &mut Vec<uuid::Uuid>) {
    match sqlx::query("DELETE FROM outbox WHERE message_id = ANY($1)").bind(&*published).execute(pool).await {
        Ok(_) => debug!(deleted = published.len(), "outbox dispatched"),
        Err(e) => {
            warn!(error = %e, rows = published.len(), "deleting dispatched rows failed; the relay sends them again")
        }
    }
    published.clear();
}
