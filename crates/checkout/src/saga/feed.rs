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
//!
//! The other live streams follow the same design: the process keeps what its streams wait on in a
//! [`Watched`] registry, wakes them from the broker's notices, and one catch-up read per process
//! and interval finds what a lost notice did not bring (`order::live` for a buyer's orders,
//! `cart::live` in the storefront for carts, and [`EventFeed::changes`] for operators, whose
//! streams share one reader).

use std::collections::HashMap;
use std::hash::Hash;
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
    /// Sagas the process's event streams wait on, with the newest event sequence the process has
    /// passed on for each (from a notice or a catch-up read).
    watched: Watched<Uuid, i32>,
    /// What the process's one change reader found, for every operator change stream.
    changed: broadcast::Sender<Arc<SagaSummary>>,
}

/// Keys a process's live streams wait on: for each, how many streams wait and what the process
/// knows of it (the newest event passed on, a cart's version, ...). One catch-up read per process
/// covers every key, however many streams wait on it.
pub struct Watched<K, V> {
    map: Arc<Mutex<HashMap<K, (usize, V)>>>,
}

impl<K, V> Clone for Watched<K, V> {
    fn clone(&self) -> Self {
        Watched { map: self.map.clone() }
    }
}

impl<K: Eq + Hash + Copy, V: Copy> Default for Watched<K, V> {
    fn default() -> Self {
        Watched { map: Arc::new(Mutex::new(HashMap::new())) }
    }
}

impl<K: Eq + Hash + Copy, V: Copy> Watched<K, V> {
    /// A stream starts waiting on `key`; what the process knows of it starts as `known` unless
    /// another stream waits on it already. It stops when the guard is dropped.
    pub fn watch(&self, key: K, known: V) -> Watching<K, V> {
        self.map.lock().expect("watched lock").entry(key).or_insert((0, known)).0 += 1;
        Watching { watched: self.clone(), key }
    }

    /// Every key waited on, with what is known of it.
    pub fn snapshot(&self) -> Vec<(K, V)> {
        self.map.lock().expect("watched lock").iter().map(|(k, (_, v))| (*k, *v)).collect()
    }

    /// Changes what is known of `key`, if a stream still waits on it.
    pub fn update(&self, key: &K, f: impl FnOnce(&mut V)) {
        if let Some((_, v)) = self.map.lock().expect("watched lock").get_mut(key) {
            f(v);
        }
    }

    /// How many keys streams wait on.
    pub fn len(&self) -> usize {
        self.map.lock().expect("watched lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A stream's wait on one key; dropping it ends the wait.
pub struct Watching<K: Eq + Hash + Copy, V: Copy> {
    watched: Watched<K, V>,
    key: K,
}

impl<K: Eq + Hash + Copy, V: Copy> Watching<K, V> {
    /// Changes what the process knows of the key (the stream read it itself).
    pub fn update(&self, f: impl FnOnce(&mut V)) {
        self.watched.update(&self.key, f)
    }
}

impl<K: Eq + Hash + Copy, V: Copy> Drop for Watching<K, V> {
    fn drop(&mut self) {
        let mut map = self.watched.map.lock().expect("watched lock");
        if let Some(entry) = map.get_mut(&self.key) {
            entry.0 -= 1;
            if entry.0 == 0 {
                map.remove(&self.key);
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
    /// Events of a saga the process's catch-up read found (no notice brought them yet).
    Events { saga_id: Uuid, events: Vec<SagaEventRow> },
    /// A buyer's cart changed.
    Cart { user_id: Uuid },
    /// One of a buyer's orders changed (found by the process's own catch-up read).
    Buyer { user_id: Uuid },
}

impl Notice {
    /// Whether this notice may concern `user_id`'s orders (one from an older version that does
    /// not name the buyer may).
    fn may_concern_orders_of(&self, user_id: Uuid) -> bool {
        match self {
            Notice::Saga { user_id: u, .. } => u.is_none_or(|u| u == user_id),
            Notice::Buyer { user_id: u } => *u == user_id,
            Notice::Cart { .. } | Notice::Events { .. } => false,
        }
    }
}

/// How often the process reads, in one query each, what its live streams may have missed: the
/// events of watched sagas, the changes operators watch, a watched buyer's orders.
pub const CATCH_UP: Duration = Duration::from_secs(1);
/// A stream gathers notifications this long before it reads, so a busy system costs each
/// subscriber at most one query per window.
const CHANGE_BATCH: Duration = Duration::from_millis(100);
/// `updated_at` is a transaction's start time, so a transition can commit with a time older than
/// one already seen; a change stream re-reads this far back.
const COMMIT_SKEW: chrono::TimeDelta = chrono::TimeDelta::seconds(10);
/// Rows read per change query.
const CHANGE_PAGE: i64 = 500;
/// Summaries the change reader may be ahead of the slowest operator stream before that one
/// reads for itself.
const CHANGED_BUFFER: usize = 4096;

impl EventFeed {
    /// Starts listening to the broker's saga changes.
    pub fn start(
        pool: PgPool,
        transport: Arc<dyn Transport>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let (wake, _) = broadcast::channel(1024);
        let (changed, _) = broadcast::channel(CHANGED_BUFFER);
        let feed = EventFeed {
            pool: pool.clone(),
            transport: transport.clone(),
            wake: wake.clone(),
            watched: Watched::default(),
            changed,
        };
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
        let reader = feed.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { reader.read_changes(stop).await });
        let catching_up = feed.clone();
        every(CATCH_UP, shutdown, "catching up on saga events", move || {
            let feed = catching_up.clone();
            async move { feed.catch_up().await }
        });
        feed
    }

    /// Records that the process passed on `saga_id`'s events up to `seq`.
    fn seen(&self, saga_id: Uuid, seq: i32) {
        self.watched.update(&saga_id, |seen| *seen = (*seen).max(seq));
    }

    /// Reads, in one query, the events of every watched saga after the newest one passed on, and
    /// passes them on as notices: what a lost or late broker notice did not bring.
    async fn catch_up(&self) -> Result<(), sqlx::Error> {
        let (ids, after): (Vec<Uuid>, Vec<i32>) = self.watched.snapshot().into_iter().unzip();
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
            let _ = self.wake.send(Arc::new(Notice::Events { saga_id, events }));
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
            let watching = watched.watch(saga_id, after);
            let mut last = after;
            // Events a notice carried, when they follow on from `last`; else read them.
            let mut carried: Option<Vec<SagaEventRow>> = None;
            loop {
                let events = match carried.take() {
                    Some(events) => events,
                    None => {
                        let read = store::events_after(&pool, saga_id, last).await?;
                        if let Some(e) = read.last() {
                            watching.update(|seen| *seen = (*seen).max(e.seq));
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
                            let (Notice::Saga { saga_id: id, events, .. } | Notice::Events { saga_id: id, events }) =
                                n.as_ref()
                            else {
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
        fallback: Option<Duration>,
        wanted: impl Fn(&Notice) -> bool,
    ) -> bool {
        let woken = async {
            loop {
                match wake.recv().await {
                    Ok(n) if wanted(&n) => break,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        let woken = match fallback {
            Some(after) => tokio::time::timeout(after, woken).await.is_ok(),
            None => {
                woken.await;
                true
            }
        };
        if woken {
            tokio::time::sleep(CHANGE_BATCH).await;
            while wake.try_recv().is_ok() {}
        }
        woken
    }

    /// A tick whenever one of `user_id`'s orders may have changed: on a notice of one of their
    /// sagas (or of a saga an older version's notice does not name the buyer of), or when the
    /// process's catch-up read finds a change no notice brought ([`EventFeed::wake_buyer`]).
    /// Several notices within a moment make one tick. No timer: waiting costs nothing.
    pub fn buyer_notices(&self, user_id: Uuid) -> impl Stream<Item = ()> + Send + 'static {
        let mut wake = self.wake.subscribe();
        async_stream::stream! {
            loop {
                Self::wait(&mut wake, None, |n| n.may_concern_orders_of(user_id)).await;
                yield ();
            }
        }
    }

    /// A tick whenever `user_id`'s cart may have changed: on a cart notice for them (from any
    /// instance or worker), or from the process's catch-up read ([`EventFeed::wake_cart`]). The
    /// caller reads the cart and compares versions.
    pub fn cart_notices(&self, user_id: Uuid) -> impl Stream<Item = ()> + Send + 'static {
        let mut wake = self.wake.subscribe();
        async_stream::stream! {
            loop {
                Self::wait(&mut wake, None, |n| matches!(n, Notice::Cart { user_id: u } if *u == user_id)).await;
                yield ();
            }
        }
    }

    /// Wakes this process's streams of `user_id`'s orders (a catch-up read found a change).
    pub fn wake_buyer(&self, user_id: Uuid) {
        let _ = self.wake.send(Arc::new(Notice::Buyer { user_id }));
    }

    /// Wakes this process's streams of `user_id`'s cart (a catch-up read found a change).
    pub fn wake_cart(&self, user_id: Uuid) {
        let _ = self.wake.send(Arc::new(Notice::Cart { user_id }));
    }

    /// Tells every instance's `myCart` subscribers of `user_id` that the cart changed.
    pub async fn cart_changed(&self, user_id: Uuid) {
        announce_cart_change(self.transport.as_ref(), user_id).await
    }
}

/// Runs `tick` every `period` until `shutdown`: a process's catch-up read. A failure is logged as
/// `what` failed, and the next tick tries again.
pub fn every<F, Fut, E>(period: Duration, shutdown: CancellationToken, what: &'static str, mut tick: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(period) => {}
            }
            if let Err(e) = tick().await {
                warn!(error = %e, "{what} failed");
            }
        }
    });
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
    /// saga's summary after the change. A saga that changes several times within a moment may be
    /// reported once, with its latest state. All of a process's change streams share one reader.
    pub fn changes(
        &self,
        filter: super::operator::Filter,
    ) -> impl Stream<Item = Result<SagaSummary, sqlx::Error>> + Send + 'static {
        let pool = self.pool.clone();
        let mut changed = self.changed.subscribe();
        async_stream::try_stream! {
            // What this stream passed on, for when it fell behind the reader and reads itself.
            let mut watermark: Option<chrono::DateTime<chrono::Utc>> = None;
            let mut seen = Seen::default();
            loop {
                let summaries = match changed.recv().await {
                    Ok(summary) => vec![summary],
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow for the reader: read what it passed on meanwhile.
                        let from = match watermark {
                            Some(at) => at,
                            None => sqlx::query_scalar("SELECT now()").fetch_one(&pool).await?,
                        };
                        read_changes_since(&pool, from).await?.into_iter().map(Arc::new).collect()
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                for saga in summaries {
                    watermark = Some(watermark.map_or(saga.updated_at, |w| w.max(saga.updated_at)));
                    if seen.first_time(&saga) && filter.matches(&saga) {
                        yield SagaSummary::clone(&saga);
                    }
                }
                if let Some(at) = watermark {
                    seen.forget_before(at);
                }
            }
        }
    }

    /// The process's one change reader: while any operator stream is open, on saga notices (in
    /// batches) and once a second, reads the sagas changed since it last looked and passes each
    /// change on to every stream.
    async fn read_changes(self, shutdown: CancellationToken) {
        let mut wake = self.wake.subscribe();
        let mut watermark: Option<chrono::DateTime<chrono::Utc>> = None;
        let mut seen = Seen::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = Self::wait(&mut wake, Some(CATCH_UP), |n| matches!(n, Notice::Saga { .. })) => {}
            }
            if self.changed.receiver_count() == 0 {
                // Nobody watches: no reads, and the next watcher starts from then.
                watermark = None;
                seen = Seen::default();
                continue;
            }
            let read = async {
                let from = match watermark {
                    Some(at) => at,
                    None => sqlx::query_scalar("SELECT now()").fetch_one(&self.pool).await?,
                };
                read_changes_since(&self.pool, from).await
            };
            match read.await {
                Ok(sagas) => {
                    for saga in sagas {
                        watermark = Some(watermark.map_or(saga.updated_at, |w| w.max(saga.updated_at)));
                        if seen.first_time(&saga) {
                            let _ = self.changed.send(Arc::new(saga));
                        }
                    }
                    if let Some(at) = watermark {
                        seen.forget_before(at);
                    }
                }
                Err(e) => warn!(error = %e, "reading saga changes failed"),
            }
        }
    }
}

/// Every saga changed since about `watermark` (by [`COMMIT_SKEW`] earlier), page by page.
async fn read_changes_since(
    pool: &PgPool,
    watermark: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<SagaSummary>, sqlx::Error> {
    let mut from = watermark - COMMIT_SKEW;
    let mut all = Vec::new();
    loop {
        let rows = store::changed_since(pool, from, CHANGE_PAGE).await?;
        let full = rows.len() as i64 == CHANGE_PAGE;
        let before = from;
        if let Some(last) = rows.last() {
            from = last.updated_at;
        }
        all.extend(rows);
        if !full || from == before {
            return Ok(all);
        }
    }
}

/// Sagas passed on, with the event count passed on: a re-read finds each change again for a
/// while ([`COMMIT_SKEW`]) and this tells which are new.
#[derive(Default)]
struct Seen(HashMap<Uuid, (i32, chrono::DateTime<chrono::Utc>)>);

impl Seen {
    /// Whether `saga` in this state was not passed on before; records it.
    fn first_time(&mut self, saga: &SagaSummary) -> bool {
        if self.0.get(&saga.id).is_some_and(|(count, _)| *count >= saga.event_count) {
            return false;
        }
        self.0.insert(saga.id, (saga.event_count, saga.updated_at));
        true
    }

    /// Forgets sagas out of the re-read window.
    fn forget_before(&mut self, watermark: chrono::DateTime<chrono::Utc>) {
        self.0.retain(|_, (_, at)| *at > watermark - COMMIT_SKEW * 2);
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
