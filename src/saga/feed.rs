//! Saga history as a live stream, for subscriptions.
//!
//! Events are rows in `saga_events`; an insert trigger sends `NOTIFY saga_events, '<saga id>'`.
//! Each API process listens once and wakes the streams of that saga, which re-read from their last
//! sequence number. So a late subscriber first gets the recorded history, every subscriber sees
//! events in order without gaps, and it works whichever process recorded them.

use std::time::Duration;

use futures::Stream;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use super::store::{self, SagaEventRow};

#[derive(Clone)]
pub struct EventFeed {
    pool: PgPool,
    wake: broadcast::Sender<Uuid>,
}

/// A stream re-reads at least this often, so a missed notification delays, never loses, an event.
const FALLBACK_POLL: Duration = Duration::from_secs(1);

impl EventFeed {
    pub fn start(pool: PgPool, shutdown: CancellationToken) -> Self {
        let (wake, _) = broadcast::channel(1024);
        let feed = EventFeed { pool: pool.clone(), wake: wake.clone() };
        tokio::spawn(async move {
            while !shutdown.is_cancelled() {
                if let Err(e) = listen(&pool, &wake, &shutdown).await {
                    warn!(error = %e, "saga event listener failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
        feed
    }

    /// Every event of `saga_id` in order, ending after the terminal one.
    pub fn stream(
        &self,
        saga_id: Uuid,
    ) -> impl Stream<Item = Result<SagaEventRow, sqlx::Error>> + Send + 'static {
        let pool = self.pool.clone();
        let mut wake = self.wake.subscribe();
        async_stream::try_stream! {
            let mut last = 0;
            loop {
                let events = store::events_after(&pool, saga_id, last).await?;
                let mut done = false;
                for e in events {
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
                            Ok(id) if id == saga_id => break,
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

async fn listen(
    pool: &PgPool,
    wake: &broadcast::Sender<Uuid>,
    shutdown: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen("saga_events").await?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            n = listener.recv() => {
                let n = n?;
                if let Ok(id) = n.payload().parse::<Uuid>() {
                    let _ = wake.send(id);
                }
            }
        }
    }
}
