//! A buyer's orders as a live stream, for the `myOrders` subscription: woken by the saga feed's
//! notices of that buyer's sagas, it reads the orders changed since it last looked.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use futures::{Stream, StreamExt};
use sqlx::PgPool;
use uuid::Uuid;

use super::{service, Order, OrderStatus};
use crate::saga::feed::EventFeed;
use ecommerce_platform::error::AppError;

/// `updated_at` is a transaction's start time, so a change can commit with a time older than one
/// already seen; the stream re-reads this far back (and so, at its start, reports changes of the
/// last moments too: none made while a client was subscribing is missed).
const COMMIT_SKEW: TimeDelta = TimeDelta::seconds(10);

/// Each of `user_id`'s orders as it changes (placed, confirmed, cancelled), in its state after
/// the change, whichever process or instance changed it. An order that changes twice within a
/// moment may be reported once, in its latest state.
pub fn orders_of(
    pool: PgPool,
    feed: &EventFeed,
    user_id: Uuid,
) -> impl Stream<Item = Result<Order, AppError>> + Send + 'static {
    let ticks = feed.buyer_ticks(user_id);
    async_stream::try_stream! {
        futures::pin_mut!(ticks);
        let mut watermark: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&pool).await?;
        // Orders reported, with the state reported; forgotten once out of the re-read window.
        let mut seen: HashMap<Uuid, (OrderStatus, DateTime<Utc>)> = HashMap::new();
        while ticks.next().await.is_some() {
            for order in service::changed_since(&pool, user_id, watermark - COMMIT_SKEW).await? {
                watermark = watermark.max(order.updated_at);
                if seen.get(&order.id) == Some(&(order.status, order.updated_at)) {
                    continue;
                }
                seen.insert(order.id, (order.status, order.updated_at));
                yield order;
            }
            seen.retain(|_, (_, at)| *at > watermark - COMMIT_SKEW * 2);
        }
    }
}
