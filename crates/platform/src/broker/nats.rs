//! NATS JetStream: one stream per namespace holding every topic as a subject, one durable pull
//! consumer per (consumer name, topic) with explicit acks.

use std::time::Duration;

use async_nats::jetstream::context::CreateStreamErrorKind;
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, stream, AckKind};
use async_trait::async_trait;
use futures::StreamExt;

use super::{Acker, BrokerError, Deliveries, Delivery, NoAck, Outgoing, Topic, TraceHeaders, Transport};

/// How long a starting process waits for JetStream to create (or find) its stream.
const STREAM_PATIENCE: Duration = Duration::from_secs(60);

pub struct NatsTransport {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: String,
    /// How long JetStream waits for an ack before redelivering (also how soon a crashed
    /// consumer's unacked messages come back).
    ack_wait: Duration,
    /// The stream's `max_age` as the server has it (0: unlimited).
    max_age: Duration,
}

impl NatsTransport {
    pub async fn connect(url: &str, namespace: &str, ack_wait: Duration) -> Result<Self, BrokerError> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| BrokerError::Connect(format!("NATS at {url}: {e}")))?;
        let js = jetstream::new(client.clone());
        let stream = namespace.to_string();
        let config = stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{stream}.>")],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            max_age: Duration::from_secs(7 * 24 * 3600),
            ..Default::default()
        };
        // JetStream answers late while it starts, recovers or is busy (a server just restarted,
        // many streams created at once): a process starting then waits for it rather than exit.
        let started = std::time::Instant::now();
        let mut attempt = 0;
        let max_age = loop {
            match js.get_or_create_stream(config.clone()).await {
                // An existing stream keeps its own settings: what it has is what counts.
                Ok(mut s) => break s.info().await.map(|i| i.config.max_age).unwrap_or(config.max_age),
                Err(e)
                    if matches!(
                        e.kind(),
                        CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::JetStreamUnavailable
                    ) && started.elapsed() < STREAM_PATIENCE =>
                {
                    attempt += 1;
                    let wait =
                        crate::retry::delay(attempt, Duration::from_millis(200), Duration::from_secs(5));
                    tracing::warn!(%stream, error = %e, ?wait, "JetStream not answering yet; asking again");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(BrokerError::Connect(format!("JetStream stream {stream}: {e}"))),
            }
        };
        Ok(Self { client, js, stream, ack_wait, max_age })
    }

    fn subject(&self, topic: Topic) -> String {
        format!("{}.{}", self.stream, topic.as_str())
    }

    /// Broadcast topics are plain NATS subjects outside the stream: nothing is stored for them.
    fn live_subject(&self, topic: Topic) -> String {
        format!("live.{}.{}", self.stream, topic.as_str())
    }
}

fn trace(headers: &Option<async_nats::HeaderMap>) -> TraceHeaders {
    TraceHeaders::read(|name| Some(headers.as_ref()?.get(name)?.as_str().to_string()))
}

struct NatsAcker(jetstream::Message);

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        // A double ack waits for the server to confirm, so an ack is never silently lost.
        self.0.double_ack().await.map_err(|e| BrokerError::Ack(e.to_string()))
    }
    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BrokerError> {
        self.0.ack_with(AckKind::Nak(Some(delay))).await.map_err(|e| BrokerError::Ack(e.to_string()))
    }
}

#[async_trait]
impl Transport for NatsTransport {
    /// Sends every message (in order, on the one connection), then awaits the acks.
    async fn publish_batch(&self, messages: &[Outgoing]) -> Result<(), BrokerError> {
        let mut acks = Vec::with_capacity(messages.len());
        let mut broadcast = false;
        for m in messages {
            let mut headers = async_nats::HeaderMap::new();
            for (name, value) in m.trace.iter() {
                headers.insert(name, value);
            }
            if m.topic == Topic::SagaChanges {
                self.client
                    .publish_with_headers(self.live_subject(m.topic), headers, m.payload.clone())
                    .await
                    .map_err(|e| BrokerError::Publish(e.to_string()))?;
                broadcast = true;
                continue;
            }
            let ack = self
                .js
                .publish_with_headers(self.subject(m.topic), headers, m.payload.clone())
                .await
                .map_err(|e| BrokerError::Publish(e.to_string()))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| BrokerError::Publish(e.to_string()))?;
        }
        if broadcast {
            self.client.flush().await.map_err(|e| BrokerError::Publish(e.to_string()))?;
        }
        Ok(())
    }

    async fn subscribe_broadcast(&self, topic: Topic) -> Result<Deliveries, BrokerError> {
        let sub = self
            .client
            .subscribe(self.live_subject(topic))
            .await
            .map_err(|e| BrokerError::Consume(e.to_string()))?;
        Ok(sub
            .map(|m| {
                let trace = trace(&m.headers);
                Ok(Delivery { payload: m.payload, trace, delivery_count: 1, acker: Box::new(NoAck) })
            })
            .boxed())
    }

    async fn subscribe(&self, consumer: &str, topic: Topic) -> Result<Deliveries, BrokerError> {
        let durable = format!("{consumer}-{}", topic.as_str().replace('.', "-"));
        let stream =
            self.js.get_stream(&self.stream).await.map_err(|e| BrokerError::Consume(e.to_string()))?;
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: self.subject(topic),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_ack_pending: 1024,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| BrokerError::Consume(e.to_string()))?;
        let messages = consumer.messages().await.map_err(|e| BrokerError::Consume(e.to_string()))?;
        Ok(messages
            .map(|m| {
                let m = m.map_err(|e| BrokerError::Consume(e.to_string()))?;
                let delivery_count = m.info().map(|i| i.delivered as u64).unwrap_or(1);
                let trace = trace(&m.headers);
                Ok(Delivery {
                    payload: m.payload.clone(),
                    trace,
                    delivery_count,
                    acker: Box::new(NatsAcker(m)),
                })
            })
            .boxed())
    }

    fn max_message_age(&self) -> Option<Duration> {
        (!self.max_age.is_zero()).then_some(self.max_age)
    }

    async fn health(&self) -> Result<(), BrokerError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            other => Err(BrokerError::Connect(format!("NATS connection is {other:?}"))),
        }
    }

    async fn destroy(&self) -> Result<(), BrokerError> {
        self.js.delete_stream(&self.stream).await.map_err(|e| BrokerError::Consume(e.to_string()))?;
        Ok(())
    }
}
