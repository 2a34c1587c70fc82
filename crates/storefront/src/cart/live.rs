//! A buyer's cart as a live stream, for the `myCart` subscription: woken by cart notices (from the
//! API's mutations and the cart worker, on any instance), it reads the cart and passes it on when
//! its version changed. Waiting costs nothing per stream: a lost notice (or a change by a worker
//! of an older version, which sends none) is found by the process's one catch-up read over the
//! carts of every buyer its streams watch.

use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::mongo::{carts, Mongo};
use ecommerce_checkout::saga::feed::{every, EventFeed, Watched};
use ecommerce_core::cart::Cart;
use ecommerce_platform::error::AppError;

/// How often the process reads the versions of the carts its streams watch, in one query: the
/// longest a lost cart notice delays a change.
pub const CART_CATCH_UP: Duration = Duration::from_secs(2);

/// The process's cart streams: the carts they watch, each with the version last passed on.
#[derive(Clone)]
pub struct CartFeed {
    mongo: Mongo,
    feed: EventFeed,
    watched: Watched<Uuid, i64>,
}

impl CartFeed {
    /// Starts the process's catch-up read.
    pub fn start(mongo: Mongo, feed: EventFeed, shutdown: CancellationToken) -> Self {
        let carts = CartFeed { mongo, feed, watched: Watched::default() };
        let catching_up = carts.clone();
        every(CART_CATCH_UP, shutdown, "catching up on carts", move || {
            let carts = catching_up.clone();
            async move { carts.catch_up().await }
        });
        carts
    }

    /// Wakes the streams of every watched cart whose version is not the one passed on.
    async fn catch_up(&self) -> Result<(), mongodb::error::Error> {
        let watched = self.watched.snapshot();
        if watched.is_empty() {
            return Ok(());
        }
        let users: Vec<Uuid> = watched.iter().map(|(u, _)| *u).collect();
        let now: std::collections::HashMap<Uuid, i64> =
            carts::versions(&self.mongo, &users).await?.into_iter().collect();
        for (user_id, passed_on) in watched {
            if now.get(&user_id).copied().unwrap_or(0) != passed_on {
                self.feed.wake_cart(user_id);
            }
        }
        Ok(())
    }

    /// `user_id`'s cart as it is now, then each time it changes.
    pub fn cart_of(&self, user_id: Uuid) -> impl Stream<Item = Result<Cart, AppError>> + Send + 'static {
        let notices = self.feed.cart_notices(user_id);
        let feed = self.clone();
        async_stream::try_stream! {
            futures::pin_mut!(notices);
            let cart = carts::load(&feed.mongo, carts::CartKey::User(user_id)).await.map_err(AppError::from)?;
            let mut version = cart.version;
            let watching = feed.watched.watch(user_id, version);
            watching.update(|v| *v = version);
            yield cart;
            while notices.next().await.is_some() {
                let cart = carts::load(&feed.mongo, carts::CartKey::User(user_id)).await.map_err(AppError::from)?;
                watching.update(|v| *v = cart.version);
                if cart.version != version {
                    version = cart.version;
                    yield cart;
                }
            }
        }
    }
}
