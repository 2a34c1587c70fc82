//! Saga persistence: load a saga under a row lock, persist a transition with its events, the next
//! command (through the outbox) and the order's outcome, all in the caller's transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, Postgres, Row, Transaction};
use uuid::Uuid;

use super::definition::FailureReason;
use super::machine::{OrderOutcome, SagaState, SagaStatus, Transition};
use super::messages::{
    Body, ChangedEvent, Command, CommandKind, DomainEvent, Envelope, SagaChanged, StockLine,
};
use ecommerce_platform::postgres::outbox;

/// What the saga needs to build its commands; written once when the order is placed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SagaPayload {
    pub lines: Vec<StockLine>,
    pub amount_minor: i64,
    pub currency: String,
    pub payment_token: String,
}

#[derive(Debug, Clone)]
pub struct SagaRow {
    pub id: Uuid,
    /// The name of the definition that drives it (see `Sagas::get`).
    pub definition: String,
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub state: SagaState,
    pub payload: SagaPayload,
    pub trace_id: String,
    pub event_count: i32,
    /// When the last transition committed (its command, if any, was sent then).
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct SagaEventRow {
    pub saga_id: Uuid,
    pub seq: i32,
    pub kind: String,
    pub detail: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl SagaEventRow {
    pub fn is_terminal(&self) -> bool {
        super::EventKind::parse(&self.kind).is_some_and(|k| k.is_terminal())
    }
}

pub fn command_for(kind: CommandKind, p: &SagaPayload) -> Command {
    match kind {
        CommandKind::ReserveStock => Command::ReserveStock { lines: p.lines.clone() },
        CommandKind::ReleaseStock => Command::ReleaseStock,
        CommandKind::AuthorizePayment => Command::AuthorizePayment {
            amount_minor: p.amount_minor,
            currency: p.currency.clone(),
            payment_token: p.payment_token.clone(),
        },
        CommandKind::CapturePayment => Command::CapturePayment,
        CommandKind::VoidPayment => Command::VoidPayment,
        CommandKind::RefundPayment => Command::RefundPayment,
    }
}

const SAGA_COLUMNS: &str =
    "id, definition, order_id, user_id, status, step, attempt, failure_reason, payload, trace_id, event_count, updated_at, \
     interrupted_status, last_error";

/// The machine's part of a saga row (`status`, `step`, `attempt`, `failure_reason`,
/// `interrupted_status`, `last_error`): the one decoder of saga states. A status this build does
/// not know is an error, never taken for another.
pub fn state_from_row(row: &sqlx::postgres::PgRow) -> Result<SagaState, sqlx::Error> {
    let status = |name: &str| -> Result<SagaStatus, sqlx::Error> {
        SagaStatus::parse(name)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown saga status {name}").into()))
    };
    Ok(SagaState {
        status: status(&row.try_get::<String, _>("status")?)?,
        step: row.try_get::<i32, _>("step")? as usize,
        attempt: row.try_get::<i32, _>("attempt")? as u32,
        failure_reason: row
            .try_get::<Option<String>, _>("failure_reason")?
            .map(|r| {
                FailureReason::parse(&r)
                    .ok_or_else(|| sqlx::Error::Decode(format!("unknown failure reason {r}").into()))
            })
            .transpose()?,
        interrupted: row
            .try_get::<Option<String>, _>("interrupted_status")?
            .as_deref()
            .map(status)
            .transpose()?,
        last_error: row.try_get("last_error")?,
    })
}

fn row_to_saga(row: &sqlx::postgres::PgRow) -> Result<SagaRow, sqlx::Error> {
    let payload: serde_json::Value = row.try_get("payload")?;
    Ok(SagaRow {
        id: row.try_get("id")?,
        definition: row.try_get("definition")?,
        order_id: row.try_get("order_id")?,
        user_id: row.try_get("user_id")?,
        state: state_from_row(row)?,
        payload: serde_json::from_value(payload).map_err(|e| sqlx::Error::Decode(e.into()))?,
        trace_id: row.try_get("trace_id")?,
        event_count: row.try_get("event_count")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Clears the deadline of a saga that needs none (a terminal one the timeout scan found).
pub async fn clear_deadline(tx: &mut Transaction<'_, Postgres>, saga_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sagas SET deadline = NULL WHERE id = $1").bind(saga_id).execute(&mut **tx).await?;
    Ok(())
}

/// Loads sagas and locks their rows until the transaction ends, in id order (so two transactions
/// that lock overlapping sets wait for each other rather than deadlock).
pub async fn lock_many(
    tx: &mut Transaction<'_, Postgres>,
    saga_ids: &[Uuid],
) -> Result<Vec<SagaRow>, sqlx::Error> {
    let sql = format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = ANY($1) ORDER BY id FOR UPDATE");
    sqlx::query(&sql).bind(saga_ids).fetch_all(&mut **tx).await?.iter().map(row_to_saga).collect()
}

/// Loads a saga and locks its row until the transaction ends: one transition at a time per saga.
pub async fn lock(tx: &mut Transaction<'_, Postgres>, saga_id: Uuid) -> Result<Option<SagaRow>, sqlx::Error> {
    let sql = format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = $1 FOR UPDATE");
    sqlx::query(&sql).bind(saga_id).fetch_optional(&mut **tx).await?.as_ref().map(row_to_saga).transpose()
}

/// Loads the order's saga of `definition` and locks its row until the transaction ends.
pub async fn lock_by_order(
    tx: &mut Transaction<'_, Postgres>,
    order_id: Uuid,
    definition: &str,
) -> Result<Option<SagaRow>, sqlx::Error> {
    let sql = format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE order_id = $1 AND definition = $2 FOR UPDATE");
    sqlx::query(&sql)
        .bind(order_id)
        .bind(definition)
        .fetch_optional(&mut **tx)
        .await?
        .as_ref()
        .map(row_to_saga)
        .transpose()
}

/// Moves every deadline `by` later (the saga clock stopped for that long); returns how many.
/// The rows are locked in id order, as [`lock_many`] does, so this waits for a batch of replies
/// rather than deadlock with it.
pub async fn postpone_deadlines(
    tx: &mut Transaction<'_, Postgres>,
    by: Duration,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sagas SET deadline = deadline + $1 * interval '1 millisecond'
          WHERE id IN (SELECT id FROM sagas WHERE deadline IS NOT NULL ORDER BY id FOR UPDATE)",
    )
    .bind(by.as_millis() as i64)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Sagas whose deadline passed, locked with `SKIP LOCKED` so concurrent scanners split the work.
pub async fn lock_expired(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> Result<Vec<SagaRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {SAGA_COLUMNS} FROM sagas WHERE deadline <= now() ORDER BY deadline LIMIT $1 FOR UPDATE SKIP LOCKED"
    );
    sqlx::query(&sql).bind(limit).fetch_all(&mut **tx).await?.iter().map(row_to_saga).collect()
}

/// Inserts a new saga row in its initial state; call [`apply`] with the start transition next.
pub async fn insert(tx: &mut Transaction<'_, Postgres>, saga: &SagaRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sagas (id, order_id, user_id, definition, status, step, attempt, payload, trace_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(saga.id)
    .bind(saga.order_id)
    .bind(saga.user_id)
    .bind(&saga.definition)
    .bind(saga.state.status.as_str())
    .bind(saga.state.step as i32)
    .bind(saga.state.attempt as i32)
    .bind(serde_json::to_value(&saga.payload).expect("payload serializes"))
    .bind(&saga.trace_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Persists `t` for `saga` (whose row the transaction holds locked). Returns the outbox rows, for
/// [`outbox::committed`] once the transaction commits.
pub async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    saga: &SagaRow,
    t: &Transition,
) -> Result<Vec<outbox::OutboxRow>, sqlx::Error> {
    let mut writes = Writes::default();
    writes.add(&mut saga.clone(), t);
    writes.flush(tx).await
}

/// Transitions of one or many sagas (whose rows the transaction holds locked), written with one
/// statement per table: the sagas' new states, their history, the outbox (commands and order
/// events; the one `SagaChanged` notice per saga is only published) and the orders' outcomes. Group commit in the
/// orchestrator hands a whole batch of replies to one `Writes`.
#[derive(Default)]
pub struct Writes {
    sagas: Vec<SagaWrite>,
    index: std::collections::HashMap<Uuid, usize>,
    events: Vec<(Uuid, i32, &'static str, Option<String>)>,
    outbox: Vec<outbox::OutboxRow>,
    orders: Vec<(Uuid, &'static str, Option<&'static str>)>,
}

struct SagaWrite {
    id: Uuid,
    order_id: Uuid,
    user_id: Uuid,
    trace_id: String,
    state: SagaState,
    deadline_ms: Option<i64>,
    added_events: i32,
    event_count: i32,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.sagas.is_empty()
    }

    /// Adds `t` for `saga` and moves `saga` on to the state after it, so a second transition of
    /// the same saga in this transaction continues from there. Messages take their trace context
    /// from the current span: call it in the span of the work that caused the transition.
    pub fn add(&mut self, saga: &mut SagaRow, t: &Transition) {
        for (i, (kind, detail)) in t.events.iter().enumerate() {
            self.events.push((saga.id, saga.event_count + 1 + i as i32, kind.as_str(), detail.clone()));
        }
        if let Some(kind) = t.command {
            let command = Body::Command(command_for(kind, &saga.payload));
            let envelope = Envelope::new(saga.id, saga.order_id, saga.trace_id.clone(), command);
            self.outbox.push(outbox::OutboxRow::new(&envelope, t.delay));
        }
        let lines = || saga.payload.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
        let event = match &t.outcome {
            Some(OrderOutcome::Confirm) => {
                self.orders.push((saga.order_id, "CONFIRMED", None));
                let skus = saga.payload.lines.iter().map(|l| l.sku.clone()).collect();
                Some(DomainEvent::OrderConfirmed { user_id: saga.user_id, skus, lines: lines() })
            }
            Some(OrderOutcome::Cancel { reason }) => {
                self.orders.push((saga.order_id, "CANCELLED", Some(reason.as_str())));
                Some(DomainEvent::OrderCancelled { user_id: saga.user_id, lines: lines() })
            }
            // A refund leaves the buyer's cart as it is.
            Some(OrderOutcome::Refund) => {
                self.orders.push((saga.order_id, "REFUNDED", None));
                None
            }
            Some(OrderOutcome::KeepConfirmed { .. }) => {
                self.orders.push((saga.order_id, "CONFIRMED", None));
                None
            }
            None => None,
        };
        if let Some(event) = event {
            let envelope = Envelope::new(saga.id, saga.order_id, saga.trace_id.clone(), Body::Event(event));
            self.outbox.push(outbox::OutboxRow::new(&envelope, std::time::Duration::ZERO));
        }
        saga.state = t.state.clone();
        saga.event_count += t.events.len() as i32;
        let write = SagaWrite {
            id: saga.id,
            order_id: saga.order_id,
            user_id: saga.user_id,
            trace_id: saga.trace_id.clone(),
            state: t.state.clone(),
            deadline_ms: t.deadline.map(|d| d.as_millis() as i64),
            added_events: t.events.len() as i32,
            event_count: saga.event_count,
        };
        match self.index.get(&saga.id) {
            Some(&i) => {
                let earlier = &mut self.sagas[i];
                earlier.added_events += write.added_events;
                earlier.state = write.state;
                earlier.deadline_ms = write.deadline_ms;
                earlier.event_count = write.event_count;
            }
            None => {
                self.index.insert(saga.id, self.sagas.len());
                self.sagas.push(write);
            }
        }
    }

    /// Writes everything added; returns the outbox rows, for [`outbox::committed`] once the
    /// transaction commits.
    pub async fn flush(
        mut self,
        tx: &mut Transaction<'_, Postgres>,
    ) -> Result<Vec<outbox::OutboxRow>, sqlx::Error> {
        if self.sagas.is_empty() {
            return Ok(Vec::new());
        }
        let s = &self.sagas;
        let ids: Vec<Uuid> = s.iter().map(|w| w.id).collect();
        let statuses: Vec<&str> = s.iter().map(|w| w.state.status.as_str()).collect();
        let steps: Vec<i32> = s.iter().map(|w| w.state.step as i32).collect();
        let attempts: Vec<i32> = s.iter().map(|w| w.state.attempt as i32).collect();
        let reasons: Vec<Option<&str>> =
            s.iter().map(|w| w.state.failure_reason.map(|r| r.as_str())).collect();
        let deadlines: Vec<Option<i64>> = s.iter().map(|w| w.deadline_ms).collect();
        let added: Vec<i32> = s.iter().map(|w| w.added_events).collect();
        let interrupted: Vec<Option<&str>> =
            s.iter().map(|w| w.state.interrupted.map(|i| i.as_str())).collect();
        let errors: Vec<Option<&str>> = s.iter().map(|w| w.state.last_error.as_deref()).collect();
        sqlx::query(
            "UPDATE sagas s SET status = v.status, step = v.step, attempt = v.attempt,
                 failure_reason = v.failure_reason,
                 deadline = now() + v.deadline_ms * interval '1 millisecond',
                 event_count = s.event_count + v.added, updated_at = now(),
                 interrupted_status = v.interrupted, last_error = v.last_error
               FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[], $5::text[], $6::bigint[],
                           $7::int[], $8::text[], $9::text[])
                 AS v(id, status, step, attempt, failure_reason, deadline_ms, added, interrupted, last_error)
              WHERE s.id = v.id",
        )
        .bind(&ids)
        .bind(&statuses)
        .bind(&steps)
        .bind(&attempts)
        .bind(&reasons)
        .bind(&deadlines)
        .bind(&added)
        .bind(&interrupted)
        .bind(&errors)
        .execute(&mut **tx)
        .await?;

        // When the events were recorded (the transaction's time), for the notices.
        let mut at = None;
        if !self.events.is_empty() {
            let e = &self.events;
            let saga_ids: Vec<Uuid> = e.iter().map(|x| x.0).collect();
            let seqs: Vec<i32> = e.iter().map(|x| x.1).collect();
            let kinds: Vec<&str> = e.iter().map(|x| x.2).collect();
            let details: Vec<Option<&str>> = e.iter().map(|x| x.3.as_deref()).collect();
            at = sqlx::query_scalar::<_, DateTime<Utc>>(
                "INSERT INTO saga_events (saga_id, seq, kind, detail)
                 SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[])
                 RETURNING created_at",
            )
            .bind(&saga_ids)
            .bind(&seqs)
            .bind(&kinds)
            .bind(&details)
            .fetch_all(&mut **tx)
            .await?
            .first()
            .copied();
        }

        outbox::insert_all(tx, &self.outbox).await?;

        // Every API instance hears of the change through the broker and wakes its live
        // subscriptions: one notice per saga, with where it ended up and the events it recorded.
        // Published after the commit, not stored (`OutboxRow::notice`): a lost one is found by
        // the API's catch-up read within a second.
        for w in &self.sagas {
            let events = match at {
                Some(at) => self
                    .events
                    .iter()
                    .filter(|e| e.0 == w.id)
                    .map(|e| ChangedEvent { seq: e.1, kind: e.2.to_string(), detail: e.3.clone(), at })
                    .collect(),
                None => Vec::new(),
            };
            let changed = SagaChanged {
                user_id: Some(w.user_id),
                status: w.state.status.as_str().to_string(),
                event_count: w.event_count,
                events,
            };
            let envelope = Envelope::new(w.id, w.order_id, w.trace_id.clone(), Body::Changed(changed));
            self.outbox.push(outbox::OutboxRow::notice(&envelope));
        }

        if !self.orders.is_empty() {
            let o = &self.orders;
            let ids: Vec<Uuid> = o.iter().map(|x| x.0).collect();
            let statuses: Vec<&str> = o.iter().map(|x| x.1).collect();
            let reasons: Vec<Option<&str>> = o.iter().map(|x| x.2).collect();
            sqlx::query(
                "UPDATE orders o SET status = v.status, cancel_reason = COALESCE(v.reason, o.cancel_reason),
                     updated_at = now()
                   FROM unnest($1::uuid[], $2::text[], $3::text[]) AS v(id, status, reason)
                  WHERE o.id = v.id",
            )
            .bind(&ids)
            .bind(&statuses)
            .bind(&reasons)
            .execute(&mut **tx)
            .await?;
        }
        Ok(self.outbox)
    }
}

fn row_to_event(r: &sqlx::postgres::PgRow) -> Result<SagaEventRow, sqlx::Error> {
    Ok(SagaEventRow {
        saga_id: r.try_get("saga_id")?,
        seq: r.try_get("seq")?,
        kind: r.try_get("kind")?,
        detail: r.try_get("detail")?,
        created_at: r.try_get("created_at")?,
    })
}

/// A saga's history after `after_seq`, in order.
pub async fn events_after<'e>(
    db: impl PgExecutor<'e>,
    saga_id: Uuid,
    after_seq: i32,
) -> Result<Vec<SagaEventRow>, sqlx::Error> {
    sqlx::query(
        "SELECT saga_id, seq, kind, detail, created_at FROM saga_events WHERE saga_id = $1 AND seq > $2 ORDER BY seq",
    )
    .bind(saga_id)
    .bind(after_seq)
    .fetch_all(db)
    .await?
    .iter()
    .map(row_to_event)
    .collect()
}

/// The events of each of `saga_ids` after its sequence in `after` (same order), each saga's in
/// order, in one query.
pub async fn events_after_each<'e>(
    db: impl PgExecutor<'e>,
    saga_ids: &[Uuid],
    after: &[i32],
) -> Result<Vec<SagaEventRow>, sqlx::Error> {
    sqlx::query(
        "SELECT e.saga_id, e.seq, e.kind, e.detail, e.created_at
           FROM unnest($1::uuid[], $2::int[]) AS w(saga_id, after)
           JOIN saga_events e ON e.saga_id = w.saga_id AND e.seq > w.after
          ORDER BY e.saga_id, e.seq",
    )
    .bind(saga_ids)
    .bind(after)
    .fetch_all(db)
    .await?
    .iter()
    .map(row_to_event)
    .collect()
}

/// What [`delete_histories`] deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HistoriesDeleted {
    pub sagas: u64,
    pub events: u64,
}

/// Deletes the history (`saga_events`) of every saga that finished (`COMPLETED`, `COMPENSATED`)
/// more than `older_than` ago, `batch` sagas per statement, and marks each saga with when
/// (`history_deleted_at`). The saga and its order stay. A finished saga takes no transitions, so
/// nothing waits on these rows; `SKIP LOCKED` lets several orchestrators share the work.
pub async fn delete_histories(
    pool: &sqlx::PgPool,
    older_than: std::time::Duration,
    batch: i64,
) -> Result<HistoriesDeleted, sqlx::Error> {
    let events = std::sync::atomic::AtomicU64::new(0);
    let sagas = ecommerce_platform::postgres::delete_in_batches(batch, || async {
        let (sagas, deleted): (i64, i64) = sqlx::query_as(
            "WITH done AS (
                 SELECT id FROM sagas
                  WHERE history_deleted_at IS NULL AND status IN ('COMPLETED', 'COMPENSATED')
                    AND updated_at < now() - make_interval(secs => $1)
                  ORDER BY updated_at LIMIT $2
                  FOR UPDATE SKIP LOCKED),
             gone AS (DELETE FROM saga_events e USING done WHERE e.saga_id = done.id RETURNING 1),
             marked AS (UPDATE sagas s SET history_deleted_at = now() FROM done WHERE s.id = done.id RETURNING 1)
             SELECT (SELECT count(*) FROM marked), (SELECT count(*) FROM gone)",
        )
        .bind(older_than.as_secs_f64())
        .bind(batch)
        .fetch_one(pool)
        .await?;
        events.fetch_add(deleted as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(sagas as u64)
    })
    .await?;
    Ok(HistoriesDeleted { sagas, events: events.into_inner() })
}

/// Keeps finished sagas' histories for `keep` (none: for good), deleting older ones every
/// `config.interval` until `shutdown`.
pub async fn keep_histories_pruned(
    pool: sqlx::PgPool,
    keep: Option<std::time::Duration>,
    config: ecommerce_platform::config::RetentionConfig,
    metrics: std::sync::Arc<ecommerce_platform::metrics::Metrics>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let Some(keep) = keep else {
        tracing::info!("finished sagas' histories are kept for good (SAGA_HISTORY_RETENTION_DAYS=off)");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.interval) => {}
        }
        match delete_histories(&pool, keep, config.batch).await {
            Ok(d) => {
                metrics.retention_deleted("saga_events", d.events);
                metrics.retention_deleted("saga_histories", d.sagas);
            }
            Err(e) => tracing::warn!(error = %e, "deleting finished sagas' histories failed"),
        }
    }
}

/// The histories of `saga_ids`, each in order, in one query (a page of sagas with their events).
pub async fn events_of<'e>(
    db: impl PgExecutor<'e>,
    saga_ids: &[Uuid],
) -> Result<Vec<SagaEventRow>, sqlx::Error> {
    sqlx::query(
        "SELECT saga_id, seq, kind, detail, created_at FROM saga_events WHERE saga_id = ANY($1) ORDER BY saga_id, seq",
    )
    .bind(saga_ids)
    .fetch_all(db)
    .await?
    .iter()
    .map(row_to_event)
    .collect()
}

/// A saga as operators and order owners see it, without its payload.
#[derive(Debug, Clone)]
pub struct SagaSummary {
    pub id: Uuid,
    /// The name of its definition.
    pub definition: String,
    pub order_id: Uuid,
    pub status: String,
    pub step: i32,
    pub failure_reason: Option<String>,
    pub event_count: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub attempt: i32,
    /// While `NEEDS_ATTENTION`: what was interrupted, and what went wrong.
    pub interrupted: Option<String>,
    pub last_error: Option<String>,
}

pub const SUMMARY_COLUMNS: &str =
    "id, definition, order_id, status, step, failure_reason, event_count, created_at, updated_at, \
     attempt, interrupted_status, last_error";

pub fn row_to_summary(r: &sqlx::postgres::PgRow) -> Result<SagaSummary, sqlx::Error> {
    Ok(SagaSummary {
        id: r.try_get("id")?,
        definition: r.try_get("definition")?,
        order_id: r.try_get("order_id")?,
        status: r.try_get("status")?,
        step: r.try_get("step")?,
        failure_reason: r.try_get("failure_reason")?,
        event_count: r.try_get("event_count")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        attempt: r.try_get("attempt")?,
        interrupted: r.try_get("interrupted_status")?,
        last_error: r.try_get("last_error")?,
    })
}

/// The order's saga of `definition`.
pub async fn summary_by_order<'e>(
    db: impl PgExecutor<'e>,
    order_id: Uuid,
    definition: &str,
) -> Result<Option<SagaSummary>, sqlx::Error> {
    let sql = format!("SELECT {SUMMARY_COLUMNS} FROM sagas WHERE order_id = $1 AND definition = $2");
    sqlx::query(&sql)
        .bind(order_id)
        .bind(definition)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(row_to_summary)
        .transpose()
}

/// The sagas of `order_ids` (at most one of each definition per order), in one query.
pub async fn summaries_by_orders<'e>(
    db: impl PgExecutor<'e>,
    order_ids: &[Uuid],
) -> Result<Vec<SagaSummary>, sqlx::Error> {
    let sql = format!("SELECT {SUMMARY_COLUMNS} FROM sagas WHERE order_id = ANY($1)");
    sqlx::query(&sql).bind(order_ids).fetch_all(db).await?.iter().map(row_to_summary).collect()
}

/// The sagas among `saga_ids`, in one query.
pub async fn summaries<'e>(
    db: impl PgExecutor<'e>,
    saga_ids: &[Uuid],
) -> Result<Vec<SagaSummary>, sqlx::Error> {
    if saga_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("SELECT {SUMMARY_COLUMNS} FROM sagas WHERE id = ANY($1)");
    sqlx::query(&sql).bind(saga_ids).fetch_all(db).await?.iter().map(row_to_summary).collect()
}

pub async fn summary<'e>(db: impl PgExecutor<'e>, saga_id: Uuid) -> Result<Option<SagaSummary>, sqlx::Error> {
    let sql = format!("SELECT {SUMMARY_COLUMNS} FROM sagas WHERE id = $1");
    sqlx::query(&sql).bind(saga_id).fetch_optional(db).await?.as_ref().map(row_to_summary).transpose()
}

/// The newest `limit` sagas, optionally only those with `status`.
pub async fn recent<'e>(
    db: impl PgExecutor<'e>,
    limit: i64,
    status: Option<&str>,
) -> Result<Vec<SagaSummary>, sqlx::Error> {
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM sagas WHERE ($2::text IS NULL OR status = $2)
         ORDER BY created_at DESC, id DESC LIMIT $1"
    );
    sqlx::query(&sql).bind(limit).bind(status).fetch_all(db).await?.iter().map(row_to_summary).collect()
}

/// Sagas changed at or after `since` (by `updated_at`, the time of their last transition's transaction),
/// oldest change first, at most `limit`.
pub async fn changed_since<'e>(
    db: impl PgExecutor<'e>,
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<SagaSummary>, sqlx::Error> {
    let sql =
        format!("SELECT {SUMMARY_COLUMNS} FROM sagas WHERE updated_at >= $1 ORDER BY updated_at LIMIT $2");
    sqlx::query(&sql).bind(since).bind(limit).fetch_all(db).await?.iter().map(row_to_summary).collect()
}
