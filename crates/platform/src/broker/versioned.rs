//! Writing an older message format during a rolling upgrade: wraps a transport and rewrites every
//! message it publishes into `MESSAGE_WRITE_VERSION`, so consumers still on the previous release
//! read what the new one sends. Set it to the previous version while a deploy that changes the
//! format rolls out, and remove it once every process runs the new release (see
//! `docs/operations.md`, "Rolling upgrades").

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use ecommerce_core::saga::messages::Envelope;
use tracing::warn;

use super::{BrokerError, Deliveries, Outgoing, Topic, Transport};

pub struct WriteVersion {
    inner: Arc<dyn Transport>,
    version: u16,
}

impl WriteVersion {
    pub fn new(inner: Arc<dyn Transport>, version: u16) -> Self {
        Self { inner, version }
    }

    /// `payload` in the version written; a payload that is not a message of this version (a dead
    /// letter being moved, say) goes as it is.
    fn rewrite(&self, payload: &Bytes) -> Bytes {
        match Envelope::decode(payload) {
            Ok(envelope) if envelope.v > self.version => match envelope.encode_as(self.version) {
                Ok(bytes) => Bytes::from(bytes),
                Err(e) => {
                    warn!(error = %e, "cannot write this message in the configured version; sending it as it is");
                    payload.clone()
                }
            },
            _ => payload.clone(),
        }
    }
}

#[async_trait]
impl Transport for WriteVersion {
    async fn publish_batch(&self, messages: &[Outgoing]) -> Result<(), BrokerError> {
        let rewritten: Vec<Outgoing> =
            messages.iter().map(|m| Outgoing { payload: self.rewrite(&m.payload), ..m.clone() }).collect();
        self.inner.publish_batch(&rewritten).await
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
