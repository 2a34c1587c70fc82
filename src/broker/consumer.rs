//! The consume loop every role uses: decode, handle, ack after the handler committed, nak with
//! backoff when it failed, resubscribe when the broker connection breaks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{error, info_span, warn, Instrument};

use super::{Delivery, Topic, Transport};
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::saga::messages::Envelope;
use crate::telemetry::TraceParent;

pub type Handler = Arc<dyn Fn(Envelope) -> BoxFuture<'static, Result<(), AppError>> + Send + Sync>;

/// Counts of messages a consumer handled and of duplicates it skipped (read by tests and, later, metrics).
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub handled: AtomicU64,
    pub duplicates: AtomicU64,
}

impl ConsumerStats {
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }
}

/// Wraps a handler that reports whether the message was new (`true`) or a duplicate it skipped.
pub fn counted<F>(stats: Arc<ConsumerStats>, f: F) -> Handler
where
    F: Fn(Envelope) -> BoxFuture<'static, Result<bool, AppError>> + Send + Sync + 'static,
{
    Arc::new(move |env| {
        let stats = stats.clone();
        let fut = f(env);
        Box::pin(async move {
            let counter = if fut.await? { &stats.handled } else { &stats.duplicates };
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
    })
}

fn backoff(delivery_count: u64) -> Duration {
    let exp = delivery_count.min(7) as u32;
    Duration::from_millis(100 * 2u64.pow(exp)).min(Duration::from_secs(10))
}

/// How a consumer treats failures, and where it reports.
#[derive(Clone)]
struct Settle {
    transport: Arc<dyn Transport>,
    consumer: String,
    max_deliveries: u64,
    metrics: Arc<Metrics>,
}

/// What a consumer consumes and how.
#[derive(Clone)]
pub struct ConsumerSpec {
    /// The durable subscription's name; instances with the same name share the work.
    pub name: String,
    pub topic: Topic,
    /// Messages handled at once.
    pub concurrency: usize,
    /// Deliveries before a message is dead-lettered.
    pub max_deliveries: u64,
    pub metrics: Arc<Metrics>,
}

/// How old a message is: its id is a UUIDv7, stamped when it was written to the outbox.
fn age_seconds(envelope: &Envelope) -> Option<f64> {
    let (secs, nanos) = envelope.message_id.get_timestamp()?.to_unix();
    let written = std::time::UNIX_EPOCH + Duration::new(secs, nanos);
    Some(std::time::SystemTime::now().duration_since(written).unwrap_or_default().as_secs_f64())
}

async fn settle(delivery: Delivery, handler: &Handler, s: &Settle) {
    let consumer = s.consumer.as_str();
    let envelope = match Envelope::decode(&delivery.payload) {
        Ok(e) => e,
        Err(e) => {
            // A message no version of this code can read will not become readable by retrying.
            error!(consumer, error = %e, "dropping undecodable message");
            let _ = delivery.acker.ack().await;
            return;
        }
    };
    if let Some(age) = age_seconds(&envelope) {
        s.metrics.message_age(consumer, age);
    }
    let started = std::time::Instant::now();
    // The context the message was sent in (its header; else the envelope's trace).
    let parent = delivery
        .traceparent
        .as_deref()
        .and_then(TraceParent::parse)
        .or_else(|| TraceParent::derived(&envelope.trace_id, envelope.message_id));
    let span = info_span!(
        "handle",
        consumer,
        message_id = %envelope.message_id,
        saga_id = %envelope.saga_id,
        order_id = %envelope.order_id,
        trace_id = %parent.as_ref().map_or(envelope.trace_id.as_str(), |p| p.trace_id.as_str()),
    );
    crate::telemetry::join(&span, parent.as_ref());
    async {
        match handler(envelope).await {
            Ok(()) => {
                s.metrics.message_handled(consumer, "ok", started.elapsed().as_secs_f64());
                if let Err(e) = delivery.acker.ack().await {
                    // The effect is committed and recorded in the inbox; a redelivery is a no-op.
                    warn!(error = %e, "ack failed; the message will be redelivered and deduplicated");
                }
            }
            Err(e) if delivery.delivery_count >= s.max_deliveries => {
                error!(error = %e, attempt = delivery.delivery_count, "handler keeps failing; dead-lettering");
                s.metrics.message_handled(consumer, "dead_lettered", started.elapsed().as_secs_f64());
                match s.transport.publish(Topic::DeadLetters, consumer, delivery.payload.clone()).await {
                    Ok(()) => {
                        let _ = delivery.acker.ack().await;
                    }
                    Err(e) => {
                        warn!(error = %e, "dead-lettering failed; redelivering");
                        let _ = delivery.acker.nak(backoff(delivery.delivery_count)).await;
                    }
                }
            }
            Err(e) => {
                s.metrics.message_handled(consumer, "failed", started.elapsed().as_secs_f64());
                let delay = backoff(delivery.delivery_count);
                warn!(error = %e, attempt = delivery.delivery_count, ?delay, "handler failed; redelivering");
                let _ = delivery.acker.nak(delay).await;
            }
        }
    }
    .instrument(span)
    .await
}

/// Consumes `spec.topic` as `spec.name` until `shutdown`, handling up to `spec.concurrency` messages
/// at once. A message that failed `spec.max_deliveries` times goes to [`Topic::DeadLetters`]. In-flight messages
/// finish before it returns.
pub async fn run(
    transport: Arc<dyn Transport>,
    spec: ConsumerSpec,
    handler: Handler,
    shutdown: CancellationToken,
) {
    let ConsumerSpec { name: consumer, topic, concurrency, max_deliveries, metrics } = spec;
    let settings =
        Settle { transport: transport.clone(), consumer: consumer.clone(), max_deliveries, metrics };
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let deliveries = match transport.subscribe(&consumer, topic).await {
            Ok(d) => d,
            Err(e) => {
                failures += 1;
                let wait = Duration::from_millis(200 * 2u64.pow(failures.min(5)));
                warn!(%consumer, ?topic, error = %e, ?wait, "subscribe failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        failures = 0;
        deliveries
            .take_until(shutdown.clone().cancelled_owned())
            .for_each_concurrent(concurrency, |d| {
                let handler = handler.clone();
                let consumer = consumer.clone();
                let settings = settings.clone();
                async move {
                    match d {
                        Ok(d) => settle(d, &handler, &settings).await,
                        Err(e) => warn!(%consumer, error = %e, "delivery error"),
                    }
                }
            })
            .await;
        if !shutdown.is_cancelled() {
            warn!(%consumer, ?topic, "subscription ended; resubscribing");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
