//! A buyer's orders as a live stream, for the `myOrders` subscription: woken by the saga feed's
//! notices of that buyer's sagas, it reads the orders changed since it last looked. Waiting costs
//! nothing per stream: a lost notice is found by the process's one catch-up read a second over
//! the orders of every buyer its streams watch.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use futures::{Stream, StreamExt};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use super::{service, Order, OrderStatus};
use crate::saga::feed::{EventFeed, Watched, CATCH_UP};
use ecommerce_platform::error::AppError;

/// `updated_at` is a transaction's start time, so a change can commit with a time older than one
/// already seen; a read looks this far back (and so, at a stream's start, reports changes of the
/// last moments too: none made while a client was subscribing is missed).
const COMMIT_SKEW: TimeDelta = TimeDelta::seconds(10);

/// How long the process remembers an order version it passed on: longer than any read looks back.
const REMEMBER: std::time::Duration = std::time::Duration::from_secs(60);

/// The process's order streams: which buyers they watch, and which order versions it passed on.
#[derive(Clone)]
pub struct OrderFeed {
    pool: PgPool,
    feed: EventFeed,
    buyers: Watched<Uuid, ()>,
    passed_on: Arc<Mutex<HashMap<Uuid, Version>>>,
}

/// An order's state as passed on, and when the process learnt it.
#[derive(Debug, Clone, Copy)]
struct Version {
    status: OrderStatus,
    updated_at: DateTime<Utc>,
    learnt: Instant,
}

impl OrderFeed {
    /// Starts the process's catch-up read.
    pub fn start(pool: PgPool, feed: EventFeed, shutdown: CancellationToken) -> Self {
        let orders = OrderFeed {
            pool,
            feed,
            buyers: Watched::default(),
            passed_on: Arc::new(Mutex::new(HashMap::new())),
        };
        let catching_up = orders.clone();
        tokio::spawn(async move {
            let mut last = Instant::now();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(CATCH_UP) => {}
                }
                let started = Instant::now();
                match catching_up.catch_up(started - last).await {
                    Ok(()) => last = started,
                    Err(e) => warn!(error = %e, "catching up on buyers' orders failed"),
                }
            }
        });
        orders
    }

    /// Reads, in one query, the orders of every watched buyer changed within `since` (the time
    /// since the last catch-up) and [`COMMIT_SKEW`], and wakes the streams of buyers with a
    /// version not passed on yet: what a lost or late notice did not bring.
    async fn catch_up(&self, since: std::time::Duration) -> Result<(), sqlx::Error> {
        let buyers: Vec<Uuid> = self.buyers.snapshot().into_iter().map(|(u, ())| u).collect();
        if buyers.is_empty() {
            return Ok(());
        }
        // After a long outage, a bounded look back: the streams' own reads go further back anyway.
        let window =
            COMMIT_SKEW + TimeDelta::from_std(since).unwrap_or(TimeDelta::MAX).min(TimeDelta::hours(1));
        let versions = service::versions_of_buyers(&self.pool, &buyers, window).await?;
        let mut wake = HashSet::new();
        {
            let mut passed_on = self.passed_on.lock().expect("passed_on lock");
            for (id, user_id, status, updated_at) in versions {
                let known =
                    passed_on.get(&id).is_some_and(|v| v.status == status && v.updated_at == updated_at);
                if !known {
                    wake.insert(user_id);
                }
            }
            passed_on.retain(|_, v| v.learnt.elapsed() < REMEMBER);
        }
        for user_id in wake {
            self.feed.wake_buyer(user_id);
        }
        Ok(())
    }

    fn passed(&self, order: &Order) {
        self.passed_on.lock().expect("passed_on lock").insert(
            order.id,
            Version { status: order.status, updated_at: order.updated_at, learnt: Instant::now() },
        );
    }

    /// Each of `user_id`'s orders as it changes (placed, confirmed, cancelled, refunded), in its
    /// state after the change, whichever process or instance changed it. An order that changes
    /// twice within a moment may be reported once, in its latest state.
    pub fn orders_of(&self, user_id: Uuid) -> impl Stream<Item = Result<Order, AppError>> + Send + 'static {
        let notices = self.feed.buyer_notices(user_id);
        let feed = self.clone();
        async_stream::try_stream! {
            let _watching = feed.buyers.watch(user_id, ());
            futures::pin_mut!(notices);
            let mut watermark: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&feed.pool).await?;
            // Orders reported, with the state reported; forgotten once out of the re-read window.
            let mut seen: HashMap<Uuid, (OrderStatus, DateTime<Utc>)> = HashMap::new();
            loop {
                for order in service::changed_since(&feed.pool, user_id, watermark - COMMIT_SKEW).await? {
                    watermark = watermark.max(order.updated_at);
                    feed.passed(&order);
                    if seen.get(&order.id) == Some(&(order.status, order.updated_at)) {
                        continue;
                    }
                    seen.insert(order.id, (order.status, order.updated_at));
                    yield order;
                }
                seen.retain(|_, (_, at)| *at > watermark - COMMIT_SKEW * 2);
                if notices.next().await.is_none() {
                    break;
                }
            }
        }
    }
}
