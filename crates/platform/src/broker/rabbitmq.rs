//! RabbitMQ via lapin: one durable topic exchange per namespace, one durable quorum queue per
//! (consumer, topic), persistent messages, publisher confirms, manual acks, a prefetch limit.
//!
//! The connection is re-opened (and the topology re-declared) on first use after the broker went
//! away; the consume loop resubscribes when a subscription ends.
//!
//! Quorum queues count deliveries (`x-delivery-count`), which the consume loop uses to dead-letter
//! a message that keeps failing. RabbitMQ has no delayed negative ack, so a nak waits its delay
//! (holding a prefetch slot) before requeueing.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{Mutex, RwLock};

use super::{
    Acker, BrokerError, Deliveries, Delivery, NoAck, Outgoing, Topic, TraceHeaders, Transport, DEAD_LETTERS,
    SUBSCRIPTIONS,
};

const PREFETCH: u16 = 64;

pub struct RabbitTransport {
    url: String,
    exchange: String,
    /// The live connection; replaced after the broker went away (restart, network cut).
    conn: RwLock<Option<Conn>>,
    /// Queues this transport declared, deleted by [`Transport::destroy`].
    queues: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct Conn {
    connection: Arc<Connection>,
    /// Publishing channel in confirm mode; lapin channels are safe to share.
    publisher: Channel,
}

fn err(kind: fn(String) -> BrokerError) -> impl Fn(lapin::Error) -> BrokerError {
    move |e| kind(e.to_string())
}

impl RabbitTransport {
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, BrokerError> {
        let t = RabbitTransport {
            url: url.to_string(),
            exchange: namespace.to_string(),
            conn: RwLock::new(None),
            queues: Mutex::new(Vec::new()),
        };
        t.conn().await?;
        Ok(t)
    }

    /// The current connection, reconnecting (and re-declaring the topology) if it was lost.
    async fn conn(&self) -> Result<Conn, BrokerError> {
        let usable = |c: &&Conn| c.connection.status().connected() && c.publisher.status().connected();
        if let Some(c) = self.conn.read().await.as_ref().filter(usable) {
            return Ok(c.clone());
        }
        let mut slot = self.conn.write().await;
        if let Some(c) = slot.as_ref().filter(usable) {
            return Ok(c.clone());
        }
        let c = self.open().await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn open(&self) -> Result<Conn, BrokerError> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("ecommerce-saga:{}", self.exchange).into())
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let connection = Connection::connect(&self.url, props)
            .await
            .map_err(|e| BrokerError::Connect(format!("RabbitMQ at {}: {e}", redact(&self.url))))?;
        let publisher = connection.create_channel().await.map_err(err(BrokerError::Connect))?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await.map_err(err(BrokerError::Connect))?;
        publisher
            .exchange_declare(
                &self.exchange,
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map_err(err(BrokerError::Connect))?;
        // Declare the application's queues up front: a message published before its consumer first
        // subscribed must not be dropped by an exchange with no queue bound.
        for (consumer, topic) in SUBSCRIPTIONS {
            self.declare_queue(&publisher, consumer, topic).await?;
        }
        self.declare_queue(&publisher, DEAD_LETTERS.0, DEAD_LETTERS.1).await?;
        Ok(Conn { connection: Arc::new(connection), publisher })
    }

    async fn declare_queue(
        &self,
        channel: &Channel,
        consumer: &str,
        topic: Topic,
    ) -> Result<String, BrokerError> {
        let queue = format!("{}.{}.{}", self.exchange, consumer, topic.as_str());
        let mut args = FieldTable::default();
        args.insert(ShortString::from("x-queue-type"), AMQPValue::LongString("quorum".into()));
        channel
            .queue_declare(&queue, QueueDeclareOptions { durable: true, ..Default::default() }, args)
            .await
            .map_err(err(BrokerError::Consume))?;
        channel
            .queue_bind(
                &queue,
                &self.exchange,
                topic.as_str(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(err(BrokerError::Consume))?;
        let mut queues = self.queues.lock().await;
        if !queues.contains(&queue) {
            queues.push(queue.clone());
        }
        Ok(queue)
    }
}

fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((_, host)) => format!("amqp://***@{host}"),
        None => url.to_string(),
    }
}

fn trace(props: &BasicProperties) -> TraceHeaders {
    TraceHeaders::read(|name| {
        Some(props.headers().as_ref()?.inner().get(name)?.as_long_string()?.to_string())
    })
}

fn delivery_count(props: &BasicProperties) -> u64 {
    let previous = props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned())
        .and_then(|v| {
            v.as_long_long_int()
                .or_else(|| v.as_long_int().map(i64::from))
                .or_else(|| v.as_long_uint().map(i64::from))
                .or_else(|| v.as_short_int().map(i64::from))
        })
        .unwrap_or(0);
    previous.max(0) as u64 + 1
}

struct RabbitAcker(lapin::acker::Acker);

#[async_trait]
impl Acker for RabbitAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        self.0.ack(BasicAckOptions::default()).await.map(|_| ()).map_err(err(BrokerError::Ack))
    }
    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BrokerError> {
        tokio::time::sleep(delay).await;
        self.0
            .nack(BasicNackOptions { requeue: true, ..Default::default() })
            .await
            .map(|_| ())
            .map_err(err(BrokerError::Ack))
    }
}

#[async_trait]
impl Transport for RabbitTransport {
    /// Publishes every message on the confirm channel, then awaits the confirms.
    async fn publish_batch(&self, messages: &[Outgoing]) -> Result<(), BrokerError> {
        let conn = self.conn().await?;
        let mut confirms = Vec::with_capacity(messages.len());
        for m in messages {
            let mut props =
                BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
            if !m.trace.is_empty() {
                let mut headers = FieldTable::default();
                for (name, value) in m.trace.iter() {
                    headers.insert(ShortString::from(name), AMQPValue::LongString(value.into()));
                }
                props = props.with_headers(headers);
            }
            let pending = conn
                .publisher
                .basic_publish(
                    &self.exchange,
                    m.topic.as_str(),
                    BasicPublishOptions { mandatory: false, ..Default::default() },
                    &m.payload,
                    props,
                )
                .await
                .map_err(|e| BrokerError::Publish(e.to_string()))?;
            confirms.push(pending);
        }
        for pending in confirms {
            let confirm = pending.await.map_err(|e| BrokerError::Publish(e.to_string()))?;
            if confirm.is_nack() {
                return Err(BrokerError::Publish("broker refused the message (nack)".into()));
            }
        }
        Ok(())
    }

    async fn subscribe(&self, consumer: &str, topic: Topic) -> Result<Deliveries, BrokerError> {
        let conn = self.conn().await?;
        let queue = self.declare_queue(&conn.publisher, consumer, topic).await?;
        let channel = Arc::new(conn.connection.create_channel().await.map_err(err(BrokerError::Consume))?);
        channel.basic_qos(PREFETCH, BasicQosOptions::default()).await.map_err(err(BrokerError::Consume))?;
        let tag = format!("{consumer}-{}", uuid::Uuid::new_v4().simple());
        let stream = channel
            .basic_consume(&queue, &tag, BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(err(BrokerError::Consume))?;
        // The channel lives as long as the stream: dropping the stream closes it, which requeues
        // every unacked delivery.
        Ok(stream
            .map(move |d| {
                let _keep = &channel;
                let d = d.map_err(err(BrokerError::Consume))?;
                let trace = trace(&d.properties);
                Ok(Delivery {
                    trace,
                    payload: Bytes::from(d.data),
                    delivery_count: delivery_count(&d.properties),
                    acker: Box::new(RabbitAcker(d.acker)),
                })
            })
            .boxed())
    }

    async fn subscribe_broadcast(&self, topic: Topic) -> Result<Deliveries, BrokerError> {
        let conn = self.conn().await?;
        let channel = Arc::new(conn.connection.create_channel().await.map_err(err(BrokerError::Consume))?);
        // A server-named queue of this subscriber's own, gone with its channel.
        let queue = channel
            .queue_declare(
                "",
                QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map_err(err(BrokerError::Consume))?;
        channel
            .queue_bind(
                queue.name().as_str(),
                &self.exchange,
                topic.as_str(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(err(BrokerError::Consume))?;
        let tag = format!("live-{}", uuid::Uuid::new_v4().simple());
        let stream = channel
            .basic_consume(
                queue.name().as_str(),
                &tag,
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map_err(err(BrokerError::Consume))?;
        Ok(stream
            .map(move |d| {
                let _keep = &channel;
                let d = d.map_err(err(BrokerError::Consume))?;
                let trace = trace(&d.properties);
                Ok(Delivery {
                    trace,
                    payload: Bytes::from(d.data),
                    delivery_count: 1,
                    acker: Box::new(NoAck),
                })
            })
            .boxed())
    }

    async fn health(&self) -> Result<(), BrokerError> {
        self.conn().await.map(|_| ())
    }

    async fn destroy(&self) -> Result<(), BrokerError> {
        let conn = self.conn().await?;
        for queue in self.queues.lock().await.iter() {
            let _ = conn.publisher.queue_delete(queue, QueueDeleteOptions::default()).await;
        }
        conn.publisher
            .exchange_delete(&self.exchange, ExchangeDeleteOptions::default())
            .await
            .map_err(err(BrokerError::Consume))
    }
}
