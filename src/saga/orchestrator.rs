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

use super::machine::{self, Input};
use super::messages::{Body, Envelope};
use super::{store, SagaDefinition};
use crate::broker::consumer::{self, counted, ConsumerSpec, ConsumerStats};
use crate::broker::{Topic, Transport};
use crate::error::AppError;
use crate::metrics::{screaming_snake, Metrics};
use crate::postgres::inbox;
use crate::telemetry::TraceParent;

pub const CONSUMER: &str = "orchestrator";

#[derive(Clone)]
pub struct Orchestrator {
    pool: PgPool,
    def: Arc<SagaDefinition>,
    metrics: Arc<Metrics>,
}

impl Orchestrator {
    pub fn new(pool: PgPool, def: Arc<SagaDefinition>, metrics: Arc<Metrics>) -> Self {
        Self { pool, def, metrics }
    }

    /// Counts a committed transition's events.
    fn record(&self, t: &machine::Transition) {
        self.metrics.saga_events(t.events.iter().map(|(k, _)| k.as_str()), t.state.failure_reason.as_deref());
    }

    /// Returns `false` when the reply was a duplicate and nothing was done.
    pub async fn handle_reply(&self, envelope: Envelope) -> Result<bool, AppError> {
        let Body::Reply(reply) = &envelope.body else {
            warn!("orchestrator received a non-reply message; ignoring");
            return Ok(true);
        };
        let mut tx = self.pool.begin().await?;
        if !inbox::claim(&mut tx, CONSUMER, envelope.message_id).await? {
            tx.commit().await?;
            return Ok(false);
        }
        let Some(saga) = store::lock(&mut tx, envelope.saga_id).await? else {
            warn!("reply for an unknown saga; ignoring");
            tx.commit().await?;
            return Ok(true);
        };
        let input = Input::Reply { kind: reply.kind, reason: reply.reason.clone() };
        let t = machine::handle(&self.def, &saga.state, &input);
        match &t {
            Some(t) => {
                store::apply(&mut tx, &saga, t).await?;
                info!(reply = ?reply.kind, status = t.state.status.as_str(), "saga advanced");
            }
            None => {
                info!(reply = ?reply.kind, status = saga.state.status.as_str(), "reply does not apply; ignored")
            }
        }
        tx.commit().await?;
        if let Some(t) = t {
            self.record(&t);
            let waited = (chrono::Utc::now() - saga.updated_at).to_std().unwrap_or_default();
            self.metrics.step_duration(
                &screaming_snake(&format!("{:?}", reply.kind.answers())),
                &screaming_snake(&format!("{:?}", reply.kind)),
                waited.as_secs_f64(),
            );
        }
        Ok(true)
    }

    /// Fires the timeout of every saga whose deadline passed; returns how many.
    pub async fn fire_timeouts(&self) -> Result<usize, AppError> {
        let mut tx = self.pool.begin().await?;
        let expired = store::lock_expired(&mut tx, 100).await?;
        let mut fired = Vec::new();
        for saga in &expired {
            let span = info_span!("timeout", saga_id = %saga.id, order_id = %saga.order_id, trace_id = %saga.trace_id);
            crate::telemetry::join(&span, TraceParent::derived(&saga.trace_id, saga.id).as_ref());
            let _g = span.enter();
            match machine::handle(&self.def, &saga.state, &Input::Timeout) {
                Some(t) => {
                    info!(status = t.state.status.as_str(), attempt = t.state.attempt, "step timed out");
                    store::apply(&mut tx, saga, &t).await?;
                    fired.push(t);
                }
                None => {
                    // A terminal saga keeps no deadline; clear a stray one so it is not scanned again.
                    sqlx::query("UPDATE sagas SET deadline = NULL WHERE id = $1")
                        .bind(saga.id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        fired.iter().for_each(|t| self.record(t));
        Ok(expired.len())
    }
}

/// Cancels a saga on the buyer's request, in the caller's transaction (which holds the saga's row
/// lock). Returns `false` when the saga is past cancelling or already compensating.
pub async fn cancel(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    def: &SagaDefinition,
    saga: &store::SagaRow,
) -> Result<bool, sqlx::Error> {
    match machine::handle(def, &saga.state, &Input::Cancel) {
        Some(t) => {
            store::apply(tx, saga, &t).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Runs the orchestrator role until `shutdown`: reply consumer, timeout scanner and outbox relay.
pub async fn run(
    pool: PgPool,
    transport: Arc<dyn Transport>,
    def: Arc<SagaDefinition>,
    config: &crate::config::Config,
    stats: Arc<ConsumerStats>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let orchestrator = Orchestrator::new(pool.clone(), def, metrics.clone());
    let o = orchestrator.clone();
    let handler = counted(stats, move |env| {
        let o = o.clone();
        Box::pin(async move { o.handle_reply(env).await })
    });
    let spec = ConsumerSpec {
        name: CONSUMER.to_string(),
        topic: Topic::Replies,
        concurrency: config.worker_concurrency,
        max_deliveries: config.max_deliveries,
        metrics,
    };
    let consumer = tokio::spawn(consumer::run(transport.clone(), spec, handler, shutdown.clone()));
    let relay = tokio::spawn(crate::postgres::outbox::run_relay(
        pool.clone(),
        transport.clone(),
        config.outbox_poll_interval,
        shutdown.clone(),
    ));
    let scan_every = config.timeout_scan_interval;
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
