//! The consume loop every role uses: decode, handle, ack after the handler committed, nak with
//! backoff when it failed, resubscribe when the broker connection breaks.
//!
//! Group commit: a consumer with a [`BatchHandler`] takes whatever deliveries are ready at once
//! (up to [`ConsumerSpec::max_batch`]) and handles them in one transaction, acking each after the
//! commit. At low load a batch is one message and nothing waits for company; under load, messages
//! pile up while a batch commits, so the next one is larger and the commit (and, for hot rows such
//! as a popular product's stock, the row lock) is paid once per batch instead of once per message.
//! If a batch fails, its messages are handled one by one, so one poison message fails alone.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{error, info_span, warn, Instrument};

use crate::broker::{Delivery, Topic, Transport};
use crate::error::AppError;
use crate::metrics::{ConsumerStats, Metrics};
use crate::telemetry::TraceHeaders;
use ecommerce_core::saga::messages::{DecodeError, Envelope};

pub type Handler = Arc<dyn Fn(Envelope) -> BoxFuture<'static, Result<(), AppError>> + Send + Sync>;

/// Handles several messages in one transaction, all or nothing; each comes with the span it is
/// handled in (the `handle` span the message's trace continues in). Returns, in order, whether
/// each message was new (`false`: a duplicate the inbox dropped).
pub type BatchHandler = Arc<
    dyn Fn(Vec<(Envelope, tracing::Span)>) -> BoxFuture<'static, Result<Vec<bool>, AppError>> + Send + Sync,
>;

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

/// Counts a batch handler's new and duplicate messages in `stats`.
pub fn counted_batch<F>(stats: Arc<ConsumerStats>, f: F) -> BatchHandler
where
    F: Fn(Vec<(Envelope, tracing::Span)>) -> BoxFuture<'static, Result<Vec<bool>, AppError>>
        + Send
        + Sync
        + 'static,
{
    Arc::new(move |batch| {
        let stats = stats.clone();
        let fut = f(batch);
        Box::pin(async move {
            let fresh = fut.await?;
            let new = fresh.iter().filter(|n| **n).count() as u64;
            stats.handled.fetch_add(new, Ordering::Relaxed);
            stats.duplicates.fetch_add(fresh.len() as u64 - new, Ordering::Relaxed);
            Ok(fresh)
        })
    })
}

/// How long a failed message waits before it is delivered again.
fn backoff(delivery_count: u64) -> Duration {
    let attempt = u32::try_from(delivery_count).unwrap_or(u32::MAX);
    crate::retry::delay(attempt, Duration::from_millis(100), Duration::from_secs(10))
}

/// The longest a message waits between tries while a store is unavailable.
pub const UNAVAILABLE_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How long a message whose handler found a store unavailable waits before it is tried again.
fn unavailable_backoff(delivery_count: u64) -> Duration {
    let attempt = u32::try_from(delivery_count).unwrap_or(u32::MAX);
    crate::retry::delay(attempt, Duration::from_millis(200), UNAVAILABLE_BACKOFF_MAX)
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
    /// Messages handled at once (batches, with a batch handler).
    pub concurrency: usize,
    /// With a batch handler: the most messages one transaction takes.
    pub max_batch: usize,
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

/// Decodes a delivery. One no version of this code can read is dead-lettered at once (retrying
/// will not change it; an operator can look at it and replay it). One written by a newer version
/// in a way this one cannot read is delivered again later, for a consumer of that version (during
/// a rolling deploy the new instances take it), and dead-lettered like a failure if none comes.
async fn decode(delivery: Delivery, s: &Settle) -> Option<(Delivery, Envelope)> {
    match Envelope::decode(&delivery.payload) {
        Ok(e) => {
            if let Some(age) = age_seconds(&e) {
                s.metrics.message_age(&s.consumer, age);
            }
            s.metrics.message_version(&s.consumer, e.v);
            Some((delivery, e))
        }
        Err(e @ DecodeError::TooNew { .. }) if delivery.delivery_count < s.max_deliveries => {
            warn!(consumer = %s.consumer, error = %e, "a newer version's message; leaving it for a consumer of that version");
            s.metrics.message_handled(&s.consumer, "too_new", 0.0);
            let _ = delivery.acker.nak(backoff(delivery.delivery_count)).await;
            None
        }
        Err(e) => {
            let bytes = delivery.payload.len();
            let start = String::from_utf8_lossy(&delivery.payload[..bytes.min(64)]).into_owned();
            error!(consumer = %s.consumer, error = %e, bytes, start = %start.escape_debug(), "a message this version cannot read; dead-lettering");
            s.metrics.message_handled(&s.consumer, "unreadable", 0.0);
            dead_letter(delivery, s).await;
            None
        }
    }
}

/// Moves `delivery` to [`Topic::DeadLetters`] (keyed by the consumer that gave up on it) and acks
/// it; if the dead-letter topic cannot be written, it is delivered again instead.
async fn dead_letter(delivery: Delivery, s: &Settle) {
    match s.transport.publish(Topic::DeadLetters, &s.consumer, delivery.payload.clone()).await {
        Ok(()) => {
            let _ = delivery.acker.ack().await;
        }
        Err(e) => {
            warn!(error = %e, "dead-lettering failed; redelivering");
            let _ = delivery.acker.nak(backoff(delivery.delivery_count)).await;
        }
    }
}

/// The span a message is handled in, a child of the context it was sent in (its trace context
/// headers; else the envelope's trace).
fn handle_span(delivery: &Delivery, envelope: &Envelope, consumer: &str) -> tracing::Span {
    let parent = match delivery.trace.span_context() {
        Some(_) => delivery.trace.clone(),
        None => TraceHeaders::derived(&envelope.trace_id, envelope.message_id),
    };
    let trace_id = parent.trace_id().unwrap_or_else(|| envelope.trace_id.clone());
    let span = info_span!(
        "handle",
        consumer,
        message_id = %envelope.message_id,
        saga_id = %envelope.saga_id,
        order_id = %envelope.order_id,
        trace_id = %trace_id,
    );
    crate::telemetry::join(&span, &parent);
    span
}

async fn settle(delivery: Delivery, handler: &Handler, s: &Settle) {
    if let Some((delivery, envelope)) = decode(delivery, s).await {
        settle_one(delivery, envelope, handler, s).await;
    }
}

async fn settle_one(delivery: Delivery, envelope: Envelope, handler: &Handler, s: &Settle) {
    let consumer = s.consumer.as_str();
    let started = std::time::Instant::now();
    let span = handle_span(&delivery, &envelope, consumer);
    async {
        match handler(envelope).await {
            Ok(()) => {
                s.metrics.message_handled(consumer, "ok", started.elapsed().as_secs_f64());
                if let Err(e) = delivery.acker.ack().await {
                    // The effect is committed and recorded in the inbox; a redelivery is a no-op.
                    warn!(error = %e, "ack failed; the message will be redelivered and deduplicated");
                }
            }
            Err(e) if e.is_unavailable() => {
                // A store or the broker is out of reach: nothing is wrong with the message, so
                // this delivery does not count towards dead-lettering it. It waits (up to
                // UNAVAILABLE_BACKOFF_MAX between tries) for as long as the outage lasts.
                s.metrics.message_handled(consumer, "unavailable", started.elapsed().as_secs_f64());
                let delay = unavailable_backoff(delivery.delivery_count);
                warn!(error = %e, attempt = delivery.delivery_count, ?delay, "a store is unavailable; the message waits");
                let _ = delivery.acker.nak(delay).await;
            }
            Err(e) if delivery.delivery_count >= s.max_deliveries => {
                error!(error = %e, attempt = delivery.delivery_count, "handler keeps failing; dead-lettering");
                s.metrics.message_handled(consumer, "dead_lettered", started.elapsed().as_secs_f64());
                dead_letter(delivery, s).await;
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

/// Handles `deliveries` in one transaction with `batch`; on failure, one by one with `single`.
async fn settle_batch(deliveries: Vec<Delivery>, batch: &BatchHandler, single: &Handler, s: &Settle) {
    let mut decoded = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        if let Some(pair) = decode(d, s).await {
            decoded.push(pair);
        }
    }
    if decoded.len() <= 1 {
        if let Some((delivery, envelope)) = decoded.pop() {
            settle_one(delivery, envelope, single, s).await;
        }
        return;
    }
    let consumer = s.consumer.as_str();
    let started = std::time::Instant::now();
    let spans: Vec<tracing::Span> = decoded.iter().map(|(d, e)| handle_span(d, e, consumer)).collect();
    let items = decoded.iter().zip(&spans).map(|((_, e), span)| (e.clone(), span.clone())).collect();
    match batch(items).await {
        Ok(_) => {
            let took = started.elapsed().as_secs_f64();
            let acks = decoded.into_iter().zip(spans).map(|((delivery, _), span)| {
                s.metrics.message_handled(consumer, "ok", took);
                async move {
                    if let Err(e) = delivery.acker.ack().await {
                        warn!(parent: &span, error = %e, "ack failed; the message will be redelivered and deduplicated");
                    }
                }
            });
            futures::future::join_all(acks).await;
        }
        Err(e) => {
            warn!(consumer, error = %e, messages = decoded.len(), "batch failed; handling its messages one by one");
            drop(spans);
            for (delivery, envelope) in decoded {
                settle_one(delivery, envelope, single, s).await;
            }
        }
    }
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
    run_with(transport, spec, handler, None, shutdown).await
}

/// Like [`run`], but with `batch` handling whatever deliveries are ready in one transaction
/// (up to `spec.max_batch`, `spec.concurrency` batches at once); `handler` takes the messages of a
/// batch that failed, one by one.
pub async fn run_batched(
    transport: Arc<dyn Transport>,
    spec: ConsumerSpec,
    handler: Handler,
    batch: BatchHandler,
    shutdown: CancellationToken,
) {
    run_with(transport, spec, handler, Some(batch), shutdown).await
}

async fn run_with(
    transport: Arc<dyn Transport>,
    spec: ConsumerSpec,
    handler: Handler,
    batch: Option<BatchHandler>,
    shutdown: CancellationToken,
) {
    let ConsumerSpec { name: consumer, topic, concurrency, max_batch, max_deliveries, metrics } = spec;
    let settings =
        Settle { transport: transport.clone(), consumer: consumer.clone(), max_deliveries, metrics };
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let deliveries = match transport.subscribe(&consumer, topic).await {
            Ok(d) => d,
            Err(e) => {
                failures += 1;
                let wait = crate::retry::delay(failures, Duration::from_millis(200), Duration::from_secs(6));
                warn!(%consumer, ?topic, error = %e, ?wait, "subscribe failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        failures = 0;
        let deliveries = deliveries.take_until(shutdown.clone().cancelled_owned()).filter_map(|d| {
            let consumer = consumer.clone();
            async move { d.map_err(|e| warn!(%consumer, error = %e, "delivery error")).ok() }
        });
        match &batch {
            Some(batch) if max_batch > 1 => {
                deliveries
                    .ready_chunks(max_batch)
                    .for_each_concurrent(concurrency, |chunk| {
                        let (batch, handler, settings) = (batch.clone(), handler.clone(), settings.clone());
                        async move { settle_batch(chunk, &batch, &handler, &settings).await }
                    })
                    .await
            }
            _ => {
                deliveries
                    .for_each_concurrent(concurrency, |d| {
                        let (handler, settings) = (handler.clone(), settings.clone());
                        async move { settle(d, &handler, &settings).await }
                    })
                    .await
            }
        }
        if !shutdown.is_cancelled() {
            warn!(%consumer, ?topic, "subscription ended; resubscribing");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
