//! The orchestrator role: applies replies and timeouts to persisted sagas.
//!
//! Each reply is handled in one transaction: claim the message in the inbox, lock the saga row,
//! run the pure state machine, persist the transition (state, history, next command via the outbox,
//! order outcome). A crash at any point leaves either the whole transition or none of it; the
//! broker redelivers what was not acked and the inbox drops what was already applied.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use super::clock::{self, ScanClock};
use super::machine::{self, Input};
use super::messages::{Body, Envelope, ReplyKind};
use super::{store, SagaDefinition, Sagas};
use ecommerce_platform::broker::{Topic, Transport};
use ecommerce_platform::consumer::{self, counted, counted_batch, ConsumerSpec};
use ecommerce_platform::error::AppError;
use ecommerce_platform::metrics::ConsumerStats;
use ecommerce_platform::metrics::Metrics;
use ecommerce_platform::postgres::inbox;
use ecommerce_platform::telemetry::TraceHeaders;

pub const CONSUMER: &str = "orchestrator";

#[derive(Clone)]
pub struct Orchestrator {
    pool: PgPool,
    sagas: Arc<Sagas>,
    metrics: Arc<Metrics>,
    clock: ScanClock,
}

impl Orchestrator {
    pub fn new(pool: PgPool, sagas: Arc<Sagas>, metrics: Arc<Metrics>, clock: ScanClock) -> Self {
        Self { pool, sagas, metrics, clock }
    }

    /// The definition that drives `saga`; `None` (logged) for a name this build does not know,
    /// which is left alone rather than driven by the wrong definition.
    fn definition(&self, saga: &store::SagaRow) -> Option<&SagaDefinition> {
        let def = self.sagas.get(&saga.definition);
        if def.is_none() {
            warn!(saga_id = %saga.id, definition = %saga.definition, "saga of an unknown definition; left alone");
        }
        def
    }

    /// Counts a committed transition's events.
    fn record(&self, t: &machine::Transition) {
        self.metrics.saga_events(
            t.events.iter().map(|(k, _)| k.as_str()),
            t.state.failure_reason.map(|r| r.as_str()),
        );
    }

    /// Returns `false` when the reply was a duplicate and nothing was done.
    pub async fn handle_reply(&self, envelope: Envelope) -> Result<bool, AppError> {
        let span = tracing::Span::current();
        Ok(self.handle_replies(vec![(envelope, span)]).await?[0])
    }

    /// Applies a batch of replies in one transaction (all or nothing): claims them in the inbox,
    /// locks their sagas in id order, runs the state machine over each reply in delivery order
    /// (two replies of one saga apply one after the other) and writes every transition with one
    /// statement per table. Returns, in order, whether each reply was new.
    pub async fn handle_replies(&self, batch: Vec<(Envelope, tracing::Span)>) -> Result<Vec<bool>, AppError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<uuid::Uuid> = batch.iter().map(|(e, _)| e.message_id).collect();
        let new = inbox::claim_each(&mut tx, CONSUMER, &ids).await?;
        let mut saga_ids: Vec<uuid::Uuid> =
            batch.iter().zip(&new).filter(|(_, n)| **n).map(|((e, _), _)| e.saga_id).collect();
        saga_ids.sort();
        saga_ids.dedup();
        let mut sagas: std::collections::HashMap<uuid::Uuid, store::SagaRow> =
            store::lock_many(&mut tx, &saga_ids).await?.into_iter().map(|s| (s.id, s)).collect();
        let mut writes = store::Writes::default();
        let mut applied = Vec::new();
        for ((envelope, span), _) in batch.iter().zip(&new).filter(|(_, n)| **n) {
            let _entered = span.enter();
            let Body::Reply(reply) = &envelope.body else {
                warn!("orchestrator received a non-reply message; ignoring");
                continue;
            };
            let Some(saga) = sagas.get_mut(&envelope.saga_id) else {
                warn!("reply for an unknown saga; ignoring");
                continue;
            };
            let input = match (reply.kind, reply.command) {
                (ReplyKind::Faulted, Some(command)) => {
                    Input::Fault { command, reason: reply.reason.clone().unwrap_or_default() }
                }
                (ReplyKind::Faulted, None) => {
                    warn!("a faulted reply that names no command; ignoring");
                    continue;
                }
                (kind, _) => Input::Reply { kind, reason: reply.reason.clone() },
            };
            let Some(def) = self.definition(saga) else { continue };
            match machine::handle(def, &saga.state, &input) {
                Some(t) => {
                    info!(reply = ?reply.kind, status = t.state.status.as_str(), "saga advanced");
                    let waited = (chrono::Utc::now() - saga.updated_at).to_std().unwrap_or_default();
                    writes.add(saga, &t);
                    applied.push((t, reply.clone(), waited));
                }
                None => {
                    info!(reply = ?reply.kind, status = saga.state.status.as_str(), "reply does not apply; ignored")
                }
            }
        }
        let rows = writes.flush(&mut tx).await?;
        tx.commit().await?;
        ecommerce_platform::postgres::outbox::committed(&self.pool, rows);
        for (t, reply, waited) in &applied {
            self.record(t);
            let command = reply.answers().map_or("?", |c| c.as_str());
            self.metrics.step_duration(command, reply.kind.as_str(), waited.as_secs_f64());
        }
        Ok(new)
    }

    /// Fires the timeout of every saga whose deadline passed; returns how many. First ticks the
    /// saga clock: after a gap in which no scan ran, every deadline moves on by the gap.
    pub async fn fire_timeouts(&self) -> Result<usize, AppError> {
        let mut tx = self.pool.begin().await?;
        let gap = clock::tick(&mut tx).await?;
        if let Some(stopped) = self.clock.stopped_for(gap) {
            let sagas = store::postpone_deadlines(&mut tx, stopped).await?;
            warn!(
                gap_ms = gap.as_millis() as u64,
                postponed_ms = stopped.as_millis() as u64,
                sagas,
                "no timeout scan ran for a while (database or orchestrators down): deadlines postponed by the gap"
            );
        }
        let mut expired = store::lock_expired(&mut tx, 100).await?;
        let count = expired.len();
        let mut fired = Vec::new();
        let mut writes = store::Writes::default();
        for saga in &mut expired {
            let span = info_span!("timeout", saga_id = %saga.id, order_id = %saga.order_id, trace_id = %saga.trace_id);
            ecommerce_platform::telemetry::join(&span, &TraceHeaders::derived(&saga.trace_id, saga.id));
            let _g = span.enter();
            let Some(def) = self.definition(saga) else { continue };
            match machine::handle(def, &saga.state, &Input::Timeout) {
                Some(t) => {
                    info!(status = t.state.status.as_str(), attempt = t.state.attempt, "step timed out");
                    writes.add(saga, &t);
                    fired.push(t);
                }
                None => {
                    // A terminal saga keeps no deadline; clear a stray one so it is not scanned again.
                    store::clear_deadline(&mut tx, saga.id).await?;
                }
            }
        }
        let rows = writes.flush(&mut tx).await?;
        tx.commit().await?;
        ecommerce_platform::postgres::outbox::committed(&self.pool, rows);
        fired.iter().for_each(|t| self.record(t));
        Ok(count)
    }
}

/// Cancels a saga on the buyer's request, in the caller's transaction (which holds the saga's row
/// lock). Returns the outbox rows to hand to [`ecommerce_platform::postgres::outbox::committed`] after the
/// commit; `None` when the saga is past cancelling or already compensating.
pub async fn cancel(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    def: &SagaDefinition,
    saga: &store::SagaRow,
) -> Result<Option<Vec<ecommerce_platform::postgres::outbox::OutboxRow>>, sqlx::Error> {
    match machine::handle(def, &saga.state, &Input::Cancel) {
        Some(t) => Ok(Some(store::apply(tx, saga, &t).await?)),
        None => Ok(None),
    }
}

/// Runs the orchestrator role until `shutdown`: reply consumer, timeout scanner and outbox relay.
pub async fn run(
    pool: PgPool,
    transport: Arc<dyn Transport>,
    sagas: Arc<Sagas>,
    config: &ecommerce_platform::config::Config,
    stats: Arc<ConsumerStats>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let scan_every = config.orchestrator.timeout_scan_interval;
    let orchestrator =
        Orchestrator::new(pool.clone(), sagas, metrics.clone(), ScanClock::for_interval(scan_every));
    let o = orchestrator.clone();
    let handler = counted(stats.clone(), move |env| {
        let o = o.clone();
        Box::pin(async move { o.handle_reply(env).await })
    });
    let o = orchestrator.clone();
    let batch = counted_batch(stats, move |replies| {
        let o = o.clone();
        Box::pin(async move { o.handle_replies(replies).await })
    });
    let spec = ConsumerSpec {
        name: CONSUMER.to_string(),
        topic: Topic::Replies,
        concurrency: config.consumers.batches_in_flight,
        max_batch: config.consumers.max_batch,
        max_deliveries: config.broker.max_deliveries,
        metrics,
    };
    let consumer =
        tokio::spawn(consumer::run_batched(transport.clone(), spec, handler, batch, shutdown.clone()));
    let relay = tokio::spawn(ecommerce_platform::postgres::outbox::run_relay(
        pool.clone(),
        transport.clone(),
        config.outbox.poll_interval,
        shutdown.clone(),
    ));
    let scanner_shutdown = shutdown.clone();
    let scanner = tokio::spawn(
        async move {
            while !scanner_shutdown.is_cancelled() {
                let wait = match orchestrator.fire_timeouts().await {
                    Ok(100..) => Duration::ZERO,
                    Ok(_) => scan_every,
                    Err(e) => {
                        warn!(error = %e, "timeout scan failed");
                        scan_every * 4
                    }
                };
                tokio::select! {
                    _ = scanner_shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        .instrument(info_span!("timeout_scanner")),
    );
    let _ = tokio::join!(consumer, relay, scanner);
}
