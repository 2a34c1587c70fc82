//! Saga history as a live stream, for subscriptions.
//!
//! Events are rows in `saga_events`. Every transition also publishes a `SagaChanged` message
//! (through the outbox, in the transition's transaction) to the broadcast topic
//! [`Topic::SagaChanges`]; each API instance subscribes once and wakes the streams of that saga.
//! The notice carries the events its transaction recorded: a stream that has everything before
//! them passes them on as they are; one that sees a gap (a notice lost, or out of order) re-reads
//! from its last sequence number. So a late subscriber first gets the recorded history, every
//! subscriber sees events in order without gaps, and it works whichever process or instance
//! recorded them. Should a notification be lost, the process finds the missed events itself: once
//! a second, one query reads what is new for every saga its streams watch and passes it on as a
//! notice, so waiting costs one query per process, however many streams wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;

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
    transport: Arc<dyn Transport>,
    wake: broadcast::Sender<Arc<Notice>>,
    watched: Arc<Mutex<HashMap<Uuid, Watch>>>,
}

/// A saga the process's event streams wait on: how many streams, and the newest event sequence
/// the process has passed on for it (from a notice or a catch-up read).
#[derive(Debug, Clone, Copy)]
struct Watch {
    streams: usize,
    seen: i32,
}

/// Unregisters a stream's saga when the stream is dropped.
struct Watching {
    watched: Arc<Mutex<HashMap<Uuid, Watch>>>,
    saga_id: Uuid,
}

impl Watching {
    fn new(watched: &Arc<Mutex<HashMap<Uuid, Watch>>>, saga_id: Uuid, after: i32) -> Self {
        let mut w = watched.lock().expect("watched lock");
        w.entry(saga_id).or_insert(Watch { streams: 0, seen: after }).streams += 1;
        Watching { watched: watched.clone(), saga_id }
    }

    /// The stream read `saga_id`'s events up to `seq` itself.
    fn read_up_to(&self, seq: i32) {
        note_seen(&self.watched, self.saga_id, seq);
    }
}

fn note_seen(watched: &Mutex<HashMap<Uuid, Watch>>, saga_id: Uuid, seq: i32) {
    if let Some(w) = watched.lock().expect("watched lock").get_mut(&saga_id) {
        w.seen = w.seen.max(seq);
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut w = self.watched.lock().expect("watched lock");
        if let Some(entry) = w.get_mut(&self.saga_id) {
            entry.streams -= 1;
            if entry.streams == 0 {
                w.remove(&self.saga_id);
            }
        }
    }
}

/// What the broadcast topic said changed.
#[derive(Debug)]
enum Notice {
    /// A saga changed; with its buyer and the events its transaction recorded, when the notice
    /// carried them.
    Saga { saga_id: Uuid, user_id: Option<Uuid>, events: Vec<SagaEventRow> },
    /// A buyer's cart changed.
    Cart { user_id: Uuid },
}

impl Notice {
    /// Whether this notice may concern `user_id`'s orders (one from an older version that does
    /// not name the buyer may).
    fn may_concern_orders_of(&self, user_id: Uuid) -> bool {
        matches!(self, Notice::Saga { user_id: u, .. } if u.is_none_or(|u| u == user_id))
    }
}

/// A buyer or change stream re-reads at least this often, so a missed notification delays, never
/// loses, a change.
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// How often the process reads, in one query, the events its event streams may have missed.
const CATCH_UP: Duration = Duration::from_secs(1);
/// A change stream gathers notifications this long before it reads, so a busy system costs each
/// subscriber at most one query per window.
const CHANGE_BATCH: Duration = Duration::from_millis(100);
/// `updated_at` is a transaction's start time, so a transition can commit with a time older than
/// one already seen; a change stream re-reads this far back.
const COMMIT_SKEW: chrono::TimeDelta = chrono::TimeDelta::seconds(10);
/// Rows read per change-stream query.
const CHANGE_PAGE: i64 = 500;
/// A cart stream re-reads at least this often: a cart notice lost, or one from a worker of an
/// older version, which sends none, delays a change by at most this much.
const CART_FALLBACK: Duration = Duration::from_secs(5);

impl EventFeed {
    /// Starts listening to the broker's saga changes.
    pub fn start(
        pool: PgPool,
        transport: Arc<dyn Transport>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let (wake, _) = broadcast::channel(1024);
        let watched = Arc::new(Mutex::new(HashMap::new()));
        let feed =
            EventFeed { pool: pool.clone(), transport: transport.clone(), wake: wake.clone(), watched };
        let listening = feed.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                if let Err(e) = listen(transport.as_ref(), &listening, &metrics, &stop).await {
                    warn!(error = %e, "saga change subscription failed; resubscribing");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
        let catching_up = feed.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(CATCH_UP) => {}
                }
                if let Err(e) = catching_up.catch_up().await {
                    warn!(error = %e, "catching up on saga events failed");
                }
            }
        });
        feed
    }

    /// Records that the process passed on `saga_id`'s events up to `seq`.
    fn seen(&self, saga_id: Uuid, seq: i32) {
        note_seen(&self.watched, saga_id, seq);
    }

    /// Reads, in one query, the events of every watched saga after the newest one passed on, and
    /// passes them on as notices: what a lost or late broker notice did not bring.
    async fn catch_up(&self) -> Result<(), sqlx::Error> {
        let (ids, after): (Vec<Uuid>, Vec<i32>) =
            self.watched.lock().expect("watched lock").iter().map(|(id, w)| (*id, w.seen)).unzip();
        if ids.is_empty() {
            return Ok(());
        }
        let mut by_saga: HashMap<Uuid, Vec<SagaEventRow>> = HashMap::new();
        for e in store::events_after_each(&self.pool, &ids, &after).await? {
            by_saga.entry(e.saga_id).or_default().push(e);
        }
        for (saga_id, events) in by_saga {
            if let Some(last) = events.last() {
                self.seen(saga_id, last.seq);
            }
            let _ = self.wake.send(Arc::new(Notice::Saga { saga_id, user_id: None, events }));
        }
        Ok(())
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
        let watched = self.watched.clone();
        async_stream::try_stream! {
            let watching = Watching::new(&watched, saga_id, after);
            let mut last = after;
            // Events a notice carried, when they follow on from `last`; else read them.
            let mut carried: Option<Vec<SagaEventRow>> = None;
            loop {
                let events = match carried.take() {
                    Some(events) => events,
                    None => {
                        let read = store::events_after(&pool, saga_id, last).await?;
                        if let Some(e) = read.last() {
                            watching.read_up_to(e.seq);
                        }
                        read
                    }
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
                // No timer per stream: a notice (from the broker, or the process's catch-up read)
                // wakes it.
                loop {
                    match wake.recv().await {
                        Ok(n) => {
                            let Notice::Saga { saga_id: id, events, .. } = n.as_ref() else {
                                continue;
                            };
                            if *id != saga_id {
                                continue;
                            }
                            if events.last().is_some_and(|e| e.seq <= last) {
                                // Passed on already (a notice and a catch-up can both bring it).
                                continue;
                            }
                            if events.first().is_some_and(|e| e.seq <= last + 1) {
                                carried = Some(events.clone());
                            }
                            // Otherwise a gap, or a notice without its events: read.
                            break;
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            }
        }
    }

    /// Waits until a notice `wanted` arrives (or notices were lost), or `fallback` passed; then
    /// lets [`CHANGE_BATCH`] gather more, so a burst costs one read. `true` when woken.
    async fn wait(
        wake: &mut broadcast::Receiver<Arc<Notice>>,
        fallback: Duration,
        wanted: impl Fn(&Notice) -> bool,
    ) -> bool {
        let woken = tokio::time::timeout(fallback, async {
            loop {
                match wake.recv().await {
                    Ok(n) if wanted(&n) => break,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
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
        woken
    }

    /// A tick whenever one of `user_id`'s sagas may have changed: on a notice of one (or of a
    /// saga an older version's notice does not name the buyer of), and every second, should a
    /// notice be lost. Several notices within a moment make one tick.
    pub fn buyer_ticks(&self, user_id: Uuid) -> impl Stream<Item = ()> + Send + 'static {
        let mut wake = self.wake.subscribe();
        async_stream::stream! {
            loop {
                Self::wait(&mut wake, FALLBACK_POLL, |n| n.may_concern_orders_of(user_id)).await;
                yield ();
            }
        }
    }

    /// A tick whenever `user_id`'s cart may have changed: on a cart notice for them (from any
    /// instance or worker), and every [`CART_FALLBACK`]. The caller reads the cart and compares
    /// versions.
    pub fn cart_ticks(&self, user_id: Uuid) -> impl Stream<Item = ()> + Send + 'static {
        let mut wake = self.wake.subscribe();
        async_stream::stream! {
            loop {
                Self::wait(&mut wake, CART_FALLBACK, |n| matches!(n, Notice::Cart { user_id: u } if *u == user_id)).await;
                yield ();
            }
        }
    }

    /// Tells every instance's `myCart` subscribers of `user_id` that the cart changed.
    pub async fn cart_changed(&self, user_id: Uuid) {
        announce_cart_change(self.transport.as_ref(), user_id).await
    }
}

/// Tells every API instance's `myCart` subscribers of `user_id` that the cart changed (best
/// effort: a lost notice delays the update until the subscribers' next re-read).
pub async fn announce_cart_change(transport: &dyn Transport, user_id: Uuid) {
    let body = Body::CartChanged(super::messages::CartChanged { user_id });
    let envelope = Envelope::new(Uuid::nil(), Uuid::nil(), "", body);
    let key = user_id.to_string();
    if let Err(e) = transport.publish(Topic::SagaChanges, &key, envelope.encode().into()).await {
        warn!(%user_id, error = %e, "cart change notice not sent");
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
                Self::wait(&mut wake, FALLBACK_POLL, |n| matches!(n, Notice::Saga { .. })).await;
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
    feed: &EventFeed,
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
                    let notice = match envelope.body {
                        Body::Changed(changed) => Notice::Saga {
                            saga_id: envelope.saga_id,
                            user_id: changed.user_id,
                            events: changed
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
                        },
                        Body::CartChanged(c) => Notice::Cart { user_id: c.user_id },
                        _ => continue,
                    };
                    if let Notice::Saga { saga_id, events, .. } = &notice {
                        if let Some(last) = events.last() {
                            feed.seen(*saga_id, last.seq);
                        }
                    }
                    let _ = feed.wake.send(Arc::new(notice));
                }
            }
        }
    }
}
