//! The in-process transport, for the all-in-one mode (`api all`) and tests: every role runs in one
//! process and messages never leave it.
//!
//! It keeps the trait's promises inside the process: one queue per subscription (the application's
//! subscriptions are declared up front, so nothing published before a consumer starts is lost),
//! competing consumers per subscription, FIFO per queue, redelivery after a nak or when a delivery
//! is dropped unsettled. What it cannot promise is durability: messages in the queues die with the
//! process. The saga survives that anyway, because the outbox keeps every message until it is
//! published and the orchestrator re-sends a step's command when its reply does not come in time.
//! Use a real broker wherever processes may crash independently.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{
    Acker, BrokerError, Deliveries, Delivery, NoAck, Outgoing, Topic, TraceHeaders, Transport, DEAD_LETTERS,
    SUBSCRIPTIONS,
};

struct Message {
    payload: Bytes,
    trace: TraceHeaders,
    delivery_count: u64,
}

/// One subscription's queue; every stream of the subscription takes from the same receiver.
#[derive(Clone)]
struct Queue {
    tx: mpsc::UnboundedSender<Message>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>>,
}

impl Queue {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Queue { tx, rx: Arc::new(tokio::sync::Mutex::new(rx)) }
    }
}

/// The queues of one namespace: topic → subscription name → queue.
#[derive(Default)]
struct Broker {
    queues: Mutex<HashMap<Topic, HashMap<String, Queue>>>,
}

impl Broker {
    fn queue(&self, topic: Topic, consumer: &str) -> Queue {
        let mut q = self.queues.lock().expect("queues");
        q.entry(topic).or_default().entry(consumer.to_string()).or_insert_with(Queue::new).clone()
    }
}

/// Unregisters a broadcast subscriber's queue when its stream goes away.
struct LiveQueue {
    broker: Arc<Broker>,
    topic: Topic,
    name: String,
}

impl Drop for LiveQueue {
    fn drop(&mut self) {
        if let Some(q) = self.broker.queues.lock().expect("queues").get_mut(&self.topic) {
            q.remove(&self.name);
        }
    }
}

/// Brokers by namespace, so a transport connected again (a restarted role) finds its queues.
fn registry() -> &'static Mutex<HashMap<String, Arc<Broker>>> {
    static BROKERS: OnceLock<Mutex<HashMap<String, Arc<Broker>>>> = OnceLock::new();
    BROKERS.get_or_init(Default::default)
}

pub struct MemoryTransport {
    namespace: String,
    broker: Arc<Broker>,
}

impl MemoryTransport {
    pub fn connect(namespace: &str) -> Self {
        let broker = registry().lock().expect("registry").entry(namespace.to_string()).or_default().clone();
        for (consumer, topic) in SUBSCRIPTIONS.into_iter().chain([DEAD_LETTERS]) {
            broker.queue(topic, consumer);
        }
        MemoryTransport { namespace: namespace.to_string(), broker }
    }
}

/// Settles one delivery; dropping it unsettled puts the message back.
struct MemoryAcker {
    queue: mpsc::UnboundedSender<Message>,
    message: Option<Message>,
}

impl MemoryAcker {
    fn requeue(&mut self, delay: Duration) {
        if let Some(mut m) = self.message.take() {
            m.delivery_count += 1;
            let queue = self.queue.clone();
            if delay.is_zero() {
                let _ = queue.send(m);
            } else {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = queue.send(m);
                });
            }
        }
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        self.requeue(Duration::ZERO);
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), BrokerError> {
        self.message = None;
        Ok(())
    }

    async fn nak(mut self: Box<Self>, delay: Duration) -> Result<(), BrokerError> {
        self.requeue(delay);
        Ok(())
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn publish_batch(&self, messages: &[Outgoing]) -> Result<(), BrokerError> {
        for m in messages {
            let queues: Vec<Queue> = self
                .broker
                .queues
                .lock()
                .expect("queues")
                .get(&m.topic)
                .map(|q| q.values().cloned().collect())
                .unwrap_or_default();
            for q in queues {
                let message =
                    Message { payload: m.payload.clone(), trace: m.trace.clone(), delivery_count: 1 };
                q.tx.send(message).map_err(|_| BrokerError::Publish("queue closed".into()))?;
            }
        }
        Ok(())
    }

    async fn subscribe(&self, consumer: &str, topic: Topic) -> Result<Deliveries, BrokerError> {
        let queue = self.broker.queue(topic, consumer);
        let stream = futures::stream::unfold(queue, |queue| async move {
            let message = queue.rx.lock().await.recv().await?;
            let delivery = Delivery {
                payload: message.payload.clone(),
                trace: message.trace.clone(),
                delivery_count: message.delivery_count,
                acker: Box::new(MemoryAcker { queue: queue.tx.clone(), message: Some(message) }),
            };
            Some((Ok(delivery), queue))
        });
        Ok(stream.boxed())
    }

    async fn subscribe_broadcast(&self, topic: Topic) -> Result<Deliveries, BrokerError> {
        // A queue of its own, removed when the stream is dropped.
        let name = format!("live-{}", uuid::Uuid::new_v4().simple());
        let queue = self.broker.queue(topic, &name);
        let guard = LiveQueue { broker: self.broker.clone(), topic, name };
        let stream = futures::stream::unfold((queue, guard), |(queue, guard)| async move {
            let message = queue.rx.lock().await.recv().await?;
            let delivery = Delivery {
                payload: message.payload,
                trace: message.trace,
                delivery_count: 1,
                acker: Box::new(NoAck),
            };
            Some((Ok(delivery), (queue, guard)))
        });
        Ok(stream.boxed())
    }

    async fn health(&self) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn destroy(&self) -> Result<(), BrokerError> {
        registry().lock().expect("registry").remove(&self.namespace);
        Ok(())
    }
}
