//! The transport the saga runs over. Brokers differ; this trait names what the project relies on:
//! durable topics, at-least-once delivery to named consumers, explicit ack after the handler's
//! transaction commits, and a negative ack that redelivers later. Duplicates are expected and
//! handled by the consumers' inbox, not by the broker.

pub mod chaos;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kafka")]
pub mod kafka_leases;
pub mod memory;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "nsq")]
pub mod nsq;
#[cfg(feature = "nsq")]
pub mod nsq_wire;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
pub mod versioned;

use crate::config::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::config::{BrokerKind, Config};
pub use crate::telemetry::TraceHeaders;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to the broker: {0}")]
    Connect(String),
    #[error("publish failed: {0}")]
    Publish(String),
    #[error("consume failed: {0}")]
    Consume(String),
    #[error("ack failed: {0}")]
    Ack(String),
}

use ecommerce_core::saga::messages::MESSAGE_VERSION;
pub use ecommerce_core::Topic;

/// The application's durable subscriptions: (consumer name, topic). Brokers that route through
/// queues declare these up front so nothing published before a consumer's first start is lost.
pub const SUBSCRIPTIONS: [(&str, Topic); 4] = [
    ("stock-worker", Topic::StockCommands),
    ("payment-worker", Topic::PaymentCommands),
    ("cart-worker", Topic::OrderEvents),
    ("orchestrator", Topic::Replies),
];

/// The subscription dead letters wait in until an operator drains or replays them
/// (`api dead-letters`); declared up front like [`SUBSCRIPTIONS`], so none is dropped before.
pub const DEAD_LETTERS: (&str, Topic) = ("dead-letters", Topic::DeadLetters);

/// Settles one delivery.
#[async_trait]
pub trait Acker: Send {
    /// The message was handled (its effects are committed): never deliver it again.
    async fn ack(self: Box<Self>) -> Result<(), BrokerError>;
    /// The handler failed: deliver it again after `delay`.
    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BrokerError>;
}

pub struct Delivery {
    pub payload: Bytes,
    /// The W3C trace context the message was published with (its `traceparent` and `tracestate`
    /// headers).
    pub trace: TraceHeaders,
    /// How many times the broker has delivered this message, this time included (1 = first).
    pub delivery_count: u64,
    pub acker: Box<dyn Acker>,
}

pub type Deliveries = BoxStream<'static, Result<Delivery, BrokerError>>;

/// The acker of a broadcast delivery: nothing to settle.
pub struct NoAck;

#[async_trait]
impl Acker for NoAck {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        Ok(())
    }
    async fn nak(self: Box<Self>, _delay: Duration) -> Result<(), BrokerError> {
        Ok(())
    }
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub topic: Topic,
    pub key: String,
    pub payload: Bytes,
    /// Sent as headers (`traceparent`, `tracestate`).
    pub trace: TraceHeaders,
}

#[async_trait]
pub trait Transport: Send + Sync {
    /// Returns once the broker has durably accepted the message. `key` keeps one saga's messages
    /// together on brokers that partition.
    async fn publish(&self, topic: Topic, key: &str, payload: Bytes) -> Result<(), BrokerError> {
        self.publish_batch(&[Outgoing {
            topic,
            key: key.to_string(),
            payload,
            trace: TraceHeaders::default(),
        }])
        .await
    }
    /// Publishes `messages` in this order, each with its headers; returns once the broker durably
    /// accepted all of them. On an error some may have been accepted (the caller publishes them
    /// again; consumers deduplicate). Brokers with pipelined confirms send everything first and
    /// then wait for the confirms: one round trip per batch instead of one per message.
    async fn publish_batch(&self, messages: &[Outgoing]) -> Result<(), BrokerError>;
    /// A durable subscription: `consumer` names it, so a restarted consumer resumes where it left off
    /// and several instances with the same name share the work.
    async fn subscribe(&self, consumer: &str, topic: Topic) -> Result<Deliveries, BrokerError>;
    /// Every message published to `topic` from now on, to this subscriber alone (each subscriber
    /// gets each message; none is redelivered; acks do nothing). For notifications whose loss a
    /// reader tolerates (live subscriptions re-read the database).
    async fn subscribe_broadcast(&self, topic: Topic) -> Result<Deliveries, BrokerError>;
    /// Ok when the broker is reachable.
    async fn health(&self) -> Result<(), BrokerError>;
    /// The longest the broker keeps a message, and so the longest after its publication that it
    /// (or a copy) can be delivered: what the broker is configured with, read at connect. `None`
    /// when nothing bounds it (a queue keeps a message until it is consumed). Consumers keep
    /// their inbox rows at least this long (`postgres::inbox::prune`).
    fn max_message_age(&self) -> Option<Duration> {
        None
    }
    /// Removes everything this namespace created (used by tests).
    async fn destroy(&self) -> Result<(), BrokerError>;
}

pub async fn connect(config: &Config) -> Result<Arc<dyn Transport>, BrokerError> {
    let mut transport = connect_broker(config).await?;
    if config.broker.write_version < MESSAGE_VERSION {
        tracing::info!(
            version = config.broker.write_version,
            "MESSAGE_WRITE_VERSION: writing messages in an older format, for consumers of the previous release"
        );
        transport = Arc::new(versioned::WriteVersion::new(transport, config.broker.write_version));
    }
    Ok(match config.broker.chaos.duplicate {
        true => {
            tracing::warn!("CHAOS_DUPLICATE is on: every message is published twice, some out of order");
            Arc::new(chaos::ChaosTransport::new(transport, config.broker.chaos.reorder_max))
        }
        false => transport,
    })
}

async fn connect_broker(config: &Config) -> Result<Arc<dyn Transport>, BrokerError> {
    match config.broker.kind {
        #[cfg(feature = "nats")]
        BrokerKind::Nats => Ok(Arc::new(
            nats::NatsTransport::connect(
                config.broker.nats_url.expose_secret(),
                &config.broker.namespace,
                config.broker.ack_wait,
            )
            .await?,
        )),
        #[cfg(feature = "rabbitmq")]
        BrokerKind::RabbitMq => Ok(Arc::new(
            rabbitmq::RabbitTransport::connect(
                config.broker.rabbitmq_url.expose_secret(),
                &config.broker.namespace,
            )
            .await?,
        )),
        #[cfg(feature = "kafka")]
        BrokerKind::Kafka => {
            let offsets = match config.broker.kafka_offsets {
                crate::config::KafkaOffsets::Broker => None,
                // A pool of its own: the leases are renewed on time even when the role's pool is
                // busy.
                crate::config::KafkaOffsets::Postgres => Some(
                    sqlx::postgres::PgPoolOptions::new()
                        .max_connections(2)
                        .acquire_timeout(Duration::from_secs(5))
                        .connect(config.postgres.url.expose_secret())
                        .await
                        .map_err(|e| BrokerError::Connect(format!("PostgreSQL for Kafka offsets: {e}")))?,
                ),
            };
            Ok(Arc::new(
                kafka::KafkaTransport::connect(
                    &config.broker.kafka_brokers,
                    &config.broker.kafka_security,
                    &config.broker.namespace,
                    offsets.map(|pool| (pool, config.broker.kafka_offsets_start)),
                )
                .await?,
            ))
        }
        #[cfg(feature = "nsq")]
        BrokerKind::Nsq => Ok(Arc::new(
            nsq::NsqTransport::connect(
                &config.broker.nsqd_tcp_addresses,
                &config.broker.nsqd_http_addresses,
                config.broker.nsq_auth_secret.as_ref().map(|s| s.expose_secret()),
                &config.broker.namespace,
                config.broker.ack_wait,
            )
            .await?,
        )),
        BrokerKind::Memory => Ok(Arc::new(memory::MemoryTransport::connect(&config.broker.namespace))),
        #[allow(unreachable_patterns)] // every broker compiled in
        other => Err(BrokerError::Connect(format!(
            "{other:?} is not compiled into this binary (cargo feature of ecommerce-platform)"
        ))),
    }
}
