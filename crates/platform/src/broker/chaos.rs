//! Fault injection for tests and drills: wraps a real transport and publishes every message twice,
//! the second copy after a random delay, so consumers see duplicates and messages out of order.
//! Enabled only by configuration (`CHAOS_DUPLICATE=true`); never on by default.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use tracing::debug;

use super::{BrokerError, Deliveries, Outgoing, Topic, Transport};

pub struct ChaosTransport {
    inner: Arc<dyn Transport>,
    /// Upper bound of the delay before the duplicate is published.
    reorder_max: Duration,
}

impl ChaosTransport {
    pub fn new(inner: Arc<dyn Transport>, reorder_max: Duration) -> Self {
        Self { inner, reorder_max }
    }
}

#[async_trait]
impl Transport for ChaosTransport {
    async fn publish_batch(&self, messages: &[Outgoing]) -> Result<(), BrokerError> {
        self.inner.publish_batch(messages).await?;
        let max = self.reorder_max.as_millis() as u64;
        for m in messages {
            let inner = self.inner.clone();
            let m = m.clone();
            let delay =
                Duration::from_millis(if max == 0 { 0 } else { rand::thread_rng().gen_range(0..=max) });
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Err(e) = inner.publish_batch(std::slice::from_ref(&m)).await {
                    debug!(error = %e, "chaos duplicate not published");
                }
            });
        }
        Ok(())
    }

    async fn subscribe(&self, consumer: &str, topic: Topic) -> Result<Deliveries, BrokerError> {
        self.inner.subscribe(consumer, topic).await
    }

    async fn subscribe_broadcast(&self, topic: Topic) -> Result<Deliveries, BrokerError> {
        self.inner.subscribe_broadcast(topic).await
    }

    async fn health(&self) -> Result<(), BrokerError> {
        self.inner.health().await
    }

    fn max_message_age(&self) -> Option<Duration> {
        self.inner.max_message_age()
    }

    async fn destroy(&self) -> Result<(), BrokerError> {
        self.inner.destroy().await
    }
}
