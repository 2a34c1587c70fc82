//! Saga history as a live stream, for subscriptions.
//!
//! Events are rows in `saga_events`. Every transition also publishes a `SagaChanged` message
//! (through the outbox, in the transition's transaction) to the broadcast topic
//! [`Topic::SagaChanges`]; each API instance subscribes once and wakes the streams of that saga.
//! The notice carries the events its transaction recorded: a stream that has everything before
//! them passes them on as they are; one that sees a gap (a notice lost, or out of order) re-reads
//! from its last sequence number. So a late subscriber first gets the recorded history, every
//! subscriber sees events in order without gaps, and it works whichever process or instance
//! recorded them. Should a notification be lost, streams re-read every second.

use std::time::Duration;

use futures::Stream;
use std::sync::Arc;

use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use super::messages::{Body, Envelope};
use super::store::{self, SagaEventRow, SagaSummary};
use ecommerce_platform::broker::{BrokerError, Topic, Transport};
use ecommerce_platform::metrics::Metrics;

#[derive(Clone)]
pub struct EventFeed {
    pool: PgPool,
    wake: broadcast::Sender<Arc<Notice>>,
}

/// A saga changed; with the events its transaction recorded, when the notice carried them.
#[derive(Debug)]
struct Notice {
    saga_id: Uuid,
    events: Vec<SagaEventRow>,
}

/// A stream re-reads at least this often, so a missed notification delays, never loses, an event.
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// A change stream gathers notifications this long before it reads, so a busy system costs each
/// subscriber at most one query per window.
const CHANGE_BATCH: Duration = Duration::from_millis(100);
/// `updated_at` is a transaction's start time, so a transition can commit with a time older than
/// one already seen; a change stream re-reads this far back.
const COMMIT_SKEW: chrono::TimeDelta = chrono::TimeDelta::seconds(10);
/// Rows read per change-stream query.
const CHANGE_PAGE: i64 = 500;

impl EventFeed {
    /// Starts listening to the broker's saga changes.
    pub fn start(
        pool: PgPool,
        transport: Arc<dyn Transport>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let (wake, _) = broadcast::channel(1024);
        let feed = EventFeed { pool, wake: wake.clone() };
        tokio::spawn(async move {
            while !shutdown.is_cancelled() {
                if let Err(e) = listen(transport.as_ref(), &wake, &metrics, &shutdown).await {
                    warn!(error = %e, "saga change subscription failed; resubscribing");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
        feed
    }

    /// Every event of `saga_id` after sequence `after` (0 for all) in order, ending after the
    /// terminal one. The caller checks that one is still to come.
    pub fn stream(
        &self,
        saga_id: Uuid,
        after: i32,
    ) -> impl Stream<Item = Result<SagaEventRow, sqlx::Error>> + Send + 'static {
        let pool = self.pool.clone();
        let mut wake = self.wake.subscribe();
        async_stream::try_stream! {
            let mut last = after;
            // Events a notice carried, when they follow on from `last`; else read them.
            let mut carried: Option<Vec<SagaEventRow>> = None;
            loop {
                let events = match carried.take() {
                    Some(events) => events,
                    None => store::events_after(&pool, saga_id, last).await?,
                };
                let mut done = false;
                for e in events {
                    if e.seq <= last {
                        continue;
                    }
                    last = e.seq;
                    done = e.is_terminal();
                    yield e;
                }
                if done {
                    break;
                }
                let _ = tokio::time::timeout(FALLBACK_POLL, async {
                    loop {
                        match wake.recv().await {
                            Ok(n) if n.saga_id == saga_id => {
                                let follows = n.events.first().is_some_and(|e| e.seq <= last + 1)
                                    && n.events.last().is_some_and(|e| e.seq > last);
                                if follows {
                                    carried = Some(n.events.clone());
                                }
                                break;
                            }
                            Ok(_) => continue,
                            Err(broadcast::error::RecvError::Lagged(_)) => break,
                            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                        }
                    }
                })
                .await;
            }
        }
    }
}

impl EventFeed {
    /// Every change of every saga from now on that leaves it matching `filter`, each as the
    /// saga's summary after the change. A saga that changes several times
    /// within a moment may be reported once, with its latest state.
    pub fn changes(
        &self,
        filter: super::operator::Filter,
    ) -> impl Stream<Item = Result<SagaSummary, sqlx::Error>> + Send + 'static {
        let pool = self.pool.clone();
        let mut wake = self.wake.subscribe();
        async_stream::try_stream! {
            let mut watermark: chrono::DateTime<chrono::Utc> =
                sqlx::query_scalar("SELECT now()").fetch_one(&pool).await?;
            // Sagas reported, with the event count reported; forgotten once out of the re-read window.
            let mut seen: std::collections::HashMap<Uuid, (i32, chrono::DateTime<chrono::Utc>)> =
                Default::default();
            loop {
                let woken = tokio::time::timeout(FALLBACK_POLL, async {
                    loop {
                        match wake.recv().await {
                            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                        }
                    }
                })
                .await
                .is_ok();
                if woken {
                    tokio::time::sleep(CHANGE_BATCH).await;
                    while wake.try_recv().is_ok() {}
                }
                let mut from = watermark - COMMIT_SKEW;
                loop {
                    let rows = store::changed_since(&pool, from, CHANGE_PAGE).await?;
                    let full = rows.len() as i64 == CHANGE_PAGE;
                    let before = from;
                    for saga in rows {
                        from = saga.updated_at;
                        watermark = watermark.max(saga.updated_at);
                        if seen.get(&saga.id).is_some_and(|(count, _)| *count >= saga.event_count) {
                            continue;
                        }
                        seen.insert(saga.id, (saga.event_count, saga.updated_at));
                        if filter.matches(&saga) {
                            yield saga;
                        }
                    }
                    if !full || from == before {
                        break;
                    }
                }
                seen.retain(|_, (_, at)| *at > watermark - COMMIT_SKEW * 2);
            }
        }
    }
}

async fn listen(
    transport: &dyn Transport,
    wake: &broadcast::Sender<Arc<Notice>>,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<(), BrokerError> {
    let mut changes = transport.subscribe_broadcast(Topic::SagaChanges).await?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = changes.next() => {
                let delivery = match next {
                    Some(d) => d?,
                    None => return Err(BrokerError::Consume("saga change stream ended".into())),
                };
                if let Ok(envelope) = Envelope::decode(&delivery.payload) {
                    metrics.live_update();
                    let events = match envelope.body {
                        Body::Changed(changed) => changed
                            .events
                            .into_iter()
                            .map(|e| SagaEventRow {
                                saga_id: envelope.saga_id,
                                seq: e.seq,
                                kind: e.kind,
                                detail: e.detail,
                                created_at: e.at,
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    let _ = wake.send(Arc::new(Notice { saga_id: envelope.saga_id, events }));
                }
            }
        }
    }
}
