//! NSQ: one topic per project topic (`{namespace}.{topic}`), one channel per consumer name (the
//! instances of a consumer share its messages), and one channel of its own per broadcast
//! subscriber (`b<uuid>`, deleted when the subscription ends; see [`NsqTransport::sweep`]). Talks NSQ's TCP protocol itself ([`super::nsq_wire`]) to
//! every `nsqd` of `NSQD_TCP_ADDRESSES`: publishes go to the first that answers, consumers read
//! from all of them.
//!
//! How the project's guarantees map (docs/brokers.md):
//! - published means acknowledged: every `PUB` is answered `OK` once nsqd holds the message (run
//!   it with `--mem-queue-size=0` so it holds it on disk);
//! - at least once: a message not finished (`FIN`) within `BROKER_ACK_WAIT_MS` (`msg_timeout`)
//!   or whose connection dropped is delivered again; a negative ack is `REQ` with its delay;
//! - the delivery count is nsqd's `attempts`; after `MAX_DELIVERIES` the consumer moves the
//!   message to the dead-letter topic, as on every broker;
//! - no order between messages, no replay, no per-message headers: the trace context travels at
//!   the front of the body.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::nsq_wire::{self, Frame, FrameReader, Identify, WireError};
use super::{Acker, BrokerError, Deliveries, Delivery, NoAck, Outgoing, Topic, TraceHeaders, Transport};
use super::{DEAD_LETTERS, SUBSCRIPTIONS};

/// Messages nsqd may send a durable consumer's connection before it finishes any.
const DURABLE_RDY: u32 = 256;
/// Broadcast messages are finished as they arrive; a larger window only absorbs bursts.
const BROADCAST_RDY: u32 = 1024;
/// nsqd's default `--max-req-timeout`: the longest a `REQ` may defer.
const MAX_REQUEUE: Duration = Duration::from_secs(3600);
/// How long a publish waits for nsqd's `OK`.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(10);
/// Marks a body that starts with trace headers (see [`wrap`]).
const TRACED: u8 = 1;

pub struct NsqTransport {
    namespace: String,
    tcp: Vec<String>,
    http: Vec<String>,
    identify: Identify,
    auth: Option<String>,
    publisher: Mutex<Option<Arc<PubConn>>>,
    http_client: reqwest::Client,
    broadcasts: Arc<SyncMutex<Broadcasts>>,
}

/// This process's broadcast channels, and others' seen without a client by the last sweep.
#[derive(Default)]
struct Broadcasts {
    ours: HashSet<String>,
    idle: HashSet<(String, String)>,
    sweeping: bool,
}

/// How often a process looks for broadcast channels nobody reads (their process died).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl NsqTransport {
    /// `tcp`: nsqd TCP addresses; `http`: their HTTP addresses (topic deletion in tests).
    pub async fn connect(
        tcp: &[String],
        http: &[String],
        auth: Option<&str>,
        namespace: &str,
        ack_wait: Duration,
    ) -> Result<Self, BrokerError> {
        if tcp.is_empty() {
            return Err(BrokerError::Connect("NSQD_TCP_ADDRESSES is empty".into()));
        }
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "ecommerce-saga".into());
        let t = NsqTransport {
            namespace: namespace.to_string(),
            tcp: tcp.to_vec(),
            http: http.to_vec(),
            identify: Identify {
                client_id: format!("{host}-{}", std::process::id()),
                hostname: host,
                user_agent: concat!("ecommerce-saga/", env!("CARGO_PKG_VERSION")).into(),
                feature_negotiation: true,
                heartbeat_interval: 5_000,
                msg_timeout: ack_wait.as_millis().clamp(1_000, 15 * 60_000) as u64,
                output_buffer_size: -1,
            },
            auth: auth.map(str::to_string),
            publisher: Mutex::new(None),
            broadcasts: Default::default(),
            http_client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| BrokerError::Connect(e.to_string()))?,
        };
        for name in [t.topic_name(Topic::SagaChanges), t.topic_name(Topic::DeadLetters)] {
            if !nsq_wire::valid_name(&name) {
                return Err(BrokerError::Connect(format!(
                    "NSQ topic {name}: names are 1 to 64 of .a-zA-Z0-9_- (BROKER_NAMESPACE is too long?)"
                )));
            }
        }
        // Channels exist before anything is published: a channel created later would not get
        // what the topic already passed on to the others.
        for (consumer, topic) in SUBSCRIPTIONS.iter().chain([&DEAD_LETTERS]) {
            for addr in &t.tcp {
                let (mut reader, mut writer) = t.subscribed(addr, &t.topic_name(*topic), consumer).await?;
                writer.write_all(b"CLS\n").await.map_err(|e| BrokerError::Connect(e.to_string()))?;
                let _ = nsq_wire::expect_ok(&mut reader, &mut writer, true).await;
            }
        }
        t.publisher().await?;
        Ok(t)
    }

    fn topic_name(&self, topic: Topic) -> String {
        format!("{}.{}", self.namespace, topic.as_str())
    }

    /// Deletes broadcast channels no client has read in two sweeps in a row: a subscriber
    /// deletes its own when it ends, so these are a killed process's, and would otherwise
    /// collect every live update on disk for ever. A live subscriber whose connection is down
    /// across both sweeps subscribes again (recreating its channel) and catches up from the
    /// database, as after any missed update. Returns the channels deleted.
    pub async fn sweep(&self) -> Result<Vec<String>, BrokerError> {
        self.sweeper().sweep(&self.broadcasts).await
    }

    fn sweeper(&self) -> Sweeper {
        Sweeper {
            topic: self.topic_name(Topic::SagaChanges),
            http: self.http.clone(),
            client: self.http_client.clone(),
        }
    }

    /// Sweeps every [`SWEEP_EVERY`] while the transport lives.
    fn start_sweeping(&self) {
        let (sweeper, weak) = (self.sweeper(), Arc::downgrade(&self.broadcasts));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(broadcasts) = weak.upgrade() else { return };
                if let Err(e) = sweeper.sweep(&broadcasts).await {
                    tracing::warn!(error = %e, "sweeping NSQ broadcast channels");
                }
            }
        });
    }

    /// A connection that has subscribed to `topic` on `channel` (with `RDY 0`: nothing is sent yet).
    async fn subscribed(
        &self,
        addr: &str,
        topic: &str,
        channel: &str,
    ) -> Result<(FrameReader, OwnedWriteHalf), BrokerError> {
        let consume = |e: WireError| BrokerError::Consume(format!("NSQ at {addr}, {topic}/{channel}: {e}"));
        let (mut reader, mut writer) =
            nsq_wire::connect(addr, &self.identify, self.auth.as_deref()).await.map_err(consume)?;
        writer
            .write_all(&nsq_wire::command(&format!("SUB {topic} {channel}"), None))
            .await
            .map_err(|e| consume(e.into()))?;
        nsq_wire::expect_ok(&mut reader, &mut writer, false).await.map_err(consume)?;
        Ok((reader, writer))
    }

    /// The publishing connection, connected again if it was lost.
    async fn publisher(&self) -> Result<Arc<PubConn>, BrokerError> {
        let mut slot = self.publisher.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.closed()) {
            return Ok(conn.clone());
        }
        let mut last = None;
        for addr in &self.tcp {
            match nsq_wire::connect(addr, &self.identify, self.auth.as_deref()).await {
                Ok((reader, writer)) => {
                    let conn = PubConn::start(reader, writer, self.identify.heartbeat());
                    *slot = Some(conn.clone());
                    return Ok(conn);
                }
                Err(e) => last = Some(format!("NSQ at {addr}: {e}")),
            }
        }
        Err(BrokerError::Connect(last.unwrap_or_default()))
    }

    /// Reads `topic` on `channel` from every nsqd into one stream.
    async fn consume(
        &self,
        topic: String,
        channel: String,
        broadcast: bool,
    ) -> Result<Deliveries, BrokerError> {
        if !nsq_wire::valid_name(&channel) {
            return Err(BrokerError::Consume(format!("NSQ channel name {channel:?}")));
        }
        let rdy = if broadcast { BROADCAST_RDY } else { DURABLE_RDY };
        // Room for every message in flight: a reader never waits on the stream, so it always
        // answers heartbeats.
        let (tx, rx) = mpsc::channel(rdy as usize * self.tcp.len());
        let mut readers = Vec::new();
        for addr in &self.tcp {
            // The first subscription is made here, so the subscriber hears what is published
            // once this returns; the loop makes the next ones after a connection is lost.
            let first = self.subscribed(addr, &topic, &channel).await?;
            let reader = ChannelReader {
                addr: addr.clone(),
                topic: topic.clone(),
                channel: channel.clone(),
                identify: self.identify.clone(),
                auth: self.auth.clone(),
                rdy,
                broadcast,
                tx: tx.clone(),
            };
            readers.push(tokio::spawn(reader.run(first)));
        }
        if broadcast {
            // The channel is this subscriber's alone: when it goes, so does the channel (else
            // nsqd would keep every later update in it).
            let (http, client, broadcasts) =
                (self.http.clone(), self.http_client.clone(), self.broadcasts.clone());
            tokio::spawn(async move {
                tx.closed().await;
                for reader in readers {
                    let _ = reader.await;
                }
                for http in &http {
                    if let Err(e) = delete_channel(&client, http, &topic, &channel).await {
                        tracing::warn!(topic = %topic, channel = %channel, error = %e, "broadcast channel not deleted; a sweep will");
                    }
                }
                broadcasts.lock().expect("not poisoned").ours.remove(&channel);
            });
        }
        Ok(tokio_stream_from(rx))
    }
}

/// Finds and deletes the broadcast channels of processes that are gone.
struct Sweeper {
    topic: String,
    http: Vec<String>,
    client: reqwest::Client,
}

impl Sweeper {
    async fn sweep(&self, broadcasts: &SyncMutex<Broadcasts>) -> Result<Vec<String>, BrokerError> {
        let topic = &self.topic;
        let mut seen = HashSet::new();
        for http in &self.http {
            let url = format!("http://{http}/stats?format=json&topic={topic}&include_clients=false");
            let failed = |e: reqwest::Error| BrokerError::Consume(format!("{url}: {e}"));
            let stats: serde_json::Value = self
                .client
                .get(&url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(failed)?
                .json()
                .await
                .map_err(failed)?;
            let topics = stats["topics"].as_array().into_iter().flatten();
            let channels =
                topics.filter(|t| t["topic_name"] == **topic).flat_map(|t| t["channels"].as_array());
            for channel in channels.flatten() {
                let name = channel["channel_name"].as_str().unwrap_or_default();
                if is_broadcast_channel(name) && channel["client_count"].as_u64() == Some(0) {
                    seen.insert((http.clone(), name.to_string()));
                }
            }
        }
        let doomed: Vec<(String, String)> = {
            let mut b = broadcasts.lock().expect("not poisoned");
            seen.retain(|(_, name)| !b.ours.contains(name));
            let doomed = seen.intersection(&b.idle).cloned().collect();
            b.idle = seen;
            doomed
        };
        let mut deleted = Vec::new();
        for (http, channel) in doomed {
            delete_channel(&self.client, &http, topic, &channel).await?;
            tracing::info!(topic = %topic, channel = %channel, "deleted a broadcast channel nobody reads");
            deleted.push(channel);
        }
        Ok(deleted)
    }
}

/// `b` and a simple UUID: the channels [`Transport::subscribe_broadcast`] makes.
fn is_broadcast_channel(name: &str) -> bool {
    name.len() == 33 && name.starts_with('b') && name[1..].bytes().all(|c| c.is_ascii_hexdigit())
}

async fn delete_channel(
    client: &reqwest::Client,
    http: &str,
    topic: &str,
    channel: &str,
) -> Result<(), BrokerError> {
    let url = format!("http://{http}/channel/delete?topic={topic}&channel={channel}");
    let response = client.post(&url).send().await.map_err(|e| BrokerError::Consume(format!("{url}: {e}")))?;
    // 404: not on this nsqd (or already gone).
    if !response.status().is_success() && response.status() != reqwest::StatusCode::NOT_FOUND {
        return Err(BrokerError::Consume(format!("{url}: {}", response.status())));
    }
    Ok(())
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Result<Delivery, BrokerError>>) -> Deliveries {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// One consumer connection to one nsqd, subscribed again whenever it is lost.
struct ChannelReader {
    addr: String,
    topic: String,
    channel: String,
    identify: Identify,
    auth: Option<String>,
    rdy: u32,
    broadcast: bool,
    tx: mpsc::Sender<Result<Delivery, BrokerError>>,
}

impl ChannelReader {
    async fn run(self, first: (FrameReader, OwnedWriteHalf)) {
        let mut next = Some(first);
        let mut attempt = 0;
        loop {
            let conn = match next.take() {
                Some(conn) => Ok(conn),
                None => self.subscribe().await,
            };
            match conn {
                Ok((reader, writer)) => {
                    attempt = 0;
                    match self.read(reader, writer).await {
                        Ok(()) => return, // the subscriber is gone
                        Err(e) => {
                            tracing::warn!(addr = %self.addr, topic = %self.topic, error = %e, "NSQ connection lost; subscribing again")
                        }
                    }
                }
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(addr = %self.addr, topic = %self.topic, error = %e, attempt, "cannot subscribe to NSQ; trying again");
                }
            }
            let wait = crate::retry::delay(attempt, Duration::from_millis(100), Duration::from_secs(5));
            tokio::select! {
                _ = self.tx.closed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn subscribe(&self) -> Result<(FrameReader, OwnedWriteHalf), WireError> {
        let (mut reader, mut writer) =
            nsq_wire::connect(&self.addr, &self.identify, self.auth.as_deref()).await?;
        writer.write_all(&nsq_wire::command(&format!("SUB {} {}", self.topic, self.channel), None)).await?;
        nsq_wire::expect_ok(&mut reader, &mut writer, false).await?;
        Ok((reader, writer))
    }

    /// Passes messages on until the subscriber goes (`Ok`) or the connection fails.
    async fn read(&self, mut reader: FrameReader, mut writer: OwnedWriteHalf) -> Result<(), WireError> {
        writer.write_all(&nsq_wire::command(&format!("RDY {}", self.rdy), None)).await?;
        let writer = Arc::new(Mutex::new(writer));
        // nsqd sends a heartbeat every interval: two missed ones mean the connection is dead.
        let silence = self.identify.heartbeat() * 2;
        loop {
            let frame = tokio::select! {
                _ = self.tx.closed() => return close(reader, &writer).await,
                frame = tokio::time::timeout(silence, reader.next()) => {
                    frame.map_err(|_| WireError::Timeout(silence))??
                }
            };
            match frame {
                Frame::Response(r) if r == nsq_wire::HEARTBEAT => {
                    writer.lock().await.write_all(b"NOP\n").await?
                }
                Frame::Response(_) => {}
                // E_FIN_FAILED / E_REQ_FAILED: the message had timed out and is delivered again.
                Frame::Error(e) => {
                    tracing::debug!(addr = %self.addr, topic = %self.topic, error = %String::from_utf8_lossy(&e), "nsqd")
                }
                Frame::Message(m) => {
                    let (trace, payload) = unwrap(m.body);
                    let acker: Box<dyn Acker> = if self.broadcast {
                        writer.lock().await.write_all(&nsq_wire::finish(&m.id)).await?;
                        Box::new(NoAck)
                    } else {
                        Box::new(NsqAcker { writer: writer.clone(), id: m.id, settled: false })
                    };
                    let delivery =
                        Delivery { payload, trace, delivery_count: u64::from(m.attempts.max(1)), acker };
                    if let Err(unsent) = self.tx.send(Ok(delivery)).await {
                        // Nobody took it: it goes back (its acker's drop) as the connection closes.
                        drop(unsent);
                        return close(reader, &writer).await;
                    }
                }
            }
        }
    }
}

/// Ends a subscription without leaving messages in flight: nsqd keeps a message it sent on a
/// connection that closed in flight until its `msg_timeout`, so first `RDY 0` (send no more),
/// then every message still arriving goes back (`REQ`), until nsqd confirms the close.
async fn close(mut reader: FrameReader, writer: &Mutex<OwnedWriteHalf>) -> Result<(), WireError> {
    writer.lock().await.write_all(b"RDY 0\nCLS\n").await?;
    let patience = Duration::from_secs(2);
    let drained = async {
        loop {
            match reader.next().await? {
                // Sent before nsqd read RDY 0: REQ is still taken while closing.
                Frame::Message(m) => {
                    writer.lock().await.write_all(&nsq_wire::requeue(&m.id, Duration::ZERO)).await?
                }
                Frame::Response(r) if r == "CLOSE_WAIT" => return Ok::<_, WireError>(()),
                Frame::Response(r) if r == nsq_wire::HEARTBEAT => {
                    writer.lock().await.write_all(b"NOP\n").await?
                }
                Frame::Response(_) | Frame::Error(_) => {}
            }
        }
    };
    // Past the patience, what is still in flight comes back after its msg_timeout.
    let _ = tokio::time::timeout(patience, drained).await;
    Ok(())
}

struct NsqAcker {
    writer: Arc<Mutex<OwnedWriteHalf>>,
    id: [u8; 16],
    settled: bool,
}

impl NsqAcker {
    async fn send(mut self: Box<Self>, command: Bytes) -> Result<(), BrokerError> {
        self.settled = true;
        let mut w = self.writer.lock().await;
        w.write_all(&command).await.map_err(|e| BrokerError::Ack(e.to_string()))
    }
}

#[async_trait]
impl Acker for NsqAcker {
    /// `FIN` has no answer: if it is lost with its connection, nsqd delivers the message again
    /// (and the consumer's inbox drops it).
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        let command = nsq_wire::finish(&self.id);
        self.send(command).await
    }
    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BrokerError> {
        let command = nsq_wire::requeue(&self.id, delay.min(MAX_REQUEUE));
        self.send(command).await
    }
}

/// A delivery dropped unsettled (its subscriber went away) goes back at once, rather than stay
/// in flight until its `msg_timeout`.
impl Drop for NsqAcker {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (writer, command) = (self.writer.clone(), nsq_wire::requeue(&self.id, Duration::ZERO));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = writer.lock().await.write_all(&command).await;
            });
        }
    }
}

/// The publishing connection: commands are written in order under `writer`, and nsqd answers
/// them in that order, so each answer settles the oldest waiting publish.
struct PubConn {
    writer: Mutex<OwnedWriteHalf>,
    waiting: SyncMutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    answers: VecDeque<oneshot::Sender<Result<(), String>>>,
    /// Why the connection ended, once it has.
    closed: Option<String>,
}

impl PubConn {
    fn start(mut reader: FrameReader, writer: OwnedWriteHalf, heartbeat: Duration) -> Arc<Self> {
        let conn =
            Arc::new(PubConn { writer: Mutex::new(writer), waiting: SyncMutex::new(Waiting::default()) });
        let weak = Arc::downgrade(&conn);
        tokio::spawn(async move {
            let why = loop {
                let frame = match tokio::time::timeout(heartbeat * 2, reader.next()).await {
                    Ok(Ok(frame)) => frame,
                    Ok(Err(e)) => break e.to_string(),
                    Err(_) => break format!("nsqd silent for {:?}", heartbeat * 2),
                };
                let Some(conn) = weak.upgrade() else { return };
                let answer = match frame {
                    Frame::Response(r) if r == nsq_wire::HEARTBEAT => {
                        if let Err(e) = conn.writer.lock().await.write_all(b"NOP\n").await {
                            break e.to_string();
                        }
                        continue;
                    }
                    Frame::Response(_) => Ok(()),
                    Frame::Error(e) => Err(String::from_utf8_lossy(&e).into_owned()),
                    Frame::Message(_) => continue,
                };
                let waiter = conn.waiting.lock().expect("not poisoned").answers.pop_front();
                if let Some(waiter) = waiter {
                    let _ = waiter.send(answer);
                }
            };
            if let Some(conn) = weak.upgrade() {
                conn.close(why);
            }
        });
        conn
    }

    fn closed(&self) -> bool {
        self.waiting.lock().expect("not poisoned").closed.is_some()
    }

    fn close(&self, why: String) {
        let mut waiting = self.waiting.lock().expect("not poisoned");
        for waiter in waiting.answers.drain(..) {
            let _ = waiter.send(Err(format!("connection to nsqd lost: {why}")));
        }
        waiting.closed = Some(why);
    }

    /// Writes `commands` and waits until nsqd has answered each.
    async fn send(&self, commands: Bytes, count: usize) -> Result<(), BrokerError> {
        let mut answers = Vec::with_capacity(count);
        {
            let mut writer = self.writer.lock().await;
            {
                let mut waiting = self.waiting.lock().expect("not poisoned");
                if let Some(why) = &waiting.closed {
                    return Err(BrokerError::Publish(format!("connection to nsqd lost: {why}")));
                }
                for _ in 0..count {
                    let (tx, rx) = oneshot::channel();
                    waiting.answers.push_back(tx);
                    answers.push(rx);
                }
            }
            if let Err(e) = writer.write_all(&commands).await {
                self.close(e.to_string());
                return Err(BrokerError::Publish(e.to_string()));
            }
        }
        for answer in answers {
            match tokio::time::timeout(PUBLISH_PATIENCE, answer).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(BrokerError::Publish(e)),
                Ok(Err(_)) => return Err(BrokerError::Publish("connection to nsqd lost".into())),
                Err(_) => {
                    self.close(format!("no answer within {PUBLISH_PATIENCE:?}"));
                    return Err(BrokerError::Publish(format!(
                        "nsqd did not answer within {PUBLISH_PATIENCE:?}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The body nsqd carries: a marker, the trace headers' size and text (`name=value` lines), then
/// the payload.
fn wrap(trace: &TraceHeaders, payload: &[u8]) -> Vec<u8> {
    let headers: String = trace.iter().map(|(name, value)| format!("{name}={value}\n")).collect();
    let mut body = BytesMut::with_capacity(3 + headers.len() + payload.len());
    body.put_u8(TRACED);
    body.put_u16(headers.len().min(u16::MAX as usize) as u16);
    body.put_slice(&headers.as_bytes()[..headers.len().min(u16::MAX as usize)]);
    body.put_slice(payload);
    body.to_vec()
}

/// The trace headers and payload of a body [`wrap`] made; any other body is all payload.
fn unwrap(body: Bytes) -> (TraceHeaders, Bytes) {
    if body.len() >= 3 && body[0] == TRACED {
        let size = u16::from_be_bytes([body[1], body[2]]) as usize;
        if let Some(Ok(text)) = body.get(3..3 + size).map(std::str::from_utf8) {
            let trace = TraceHeaders::read(|name| {
                text.lines()
                    .find_map(|l| l.split_once('=').filter(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
            });
            return (trace, body.slice(3 + size..));
        }
    }
    (TraceHeaders::default(), body)
}

#[async_trait]
impl Transport for NsqTransport {
    /// Writes every `PUB` on the one publishing connection, then waits for nsqd's `OK`s.
    async fn publish_batch(&self, messages: &[Outgoing]) -> Result<(), BrokerError> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut commands = BytesMut::new();
        for m in messages {
            commands.put_slice(&nsq_wire::publish(&self.topic_name(m.topic), &wrap(&m.trace, &m.payload)));
        }
        let conn = self.publisher().await?;
        conn.send(commands.freeze(), messages.len()).await
    }

    async fn subscribe(&self, consumer: &str, topic: Topic) -> Result<Deliveries, BrokerError> {
        self.consume(self.topic_name(topic), consumer.to_string(), false).await
    }

    async fn subscribe_broadcast(&self, topic: Topic) -> Result<Deliveries, BrokerError> {
        let channel = format!("b{}", uuid::Uuid::new_v4().simple());
        let start_sweeping = {
            let mut b = self.broadcasts.lock().expect("not poisoned");
            b.ours.insert(channel.clone());
            !std::mem::replace(&mut b.sweeping, true)
        };
        if start_sweeping {
            self.start_sweeping();
        }
        let deliveries = self.consume(self.topic_name(topic), channel.clone(), true).await;
        if deliveries.is_err() {
            self.broadcasts.lock().expect("not poisoned").ours.remove(&channel);
        }
        deliveries
    }

    async fn health(&self) -> Result<(), BrokerError> {
        self.publisher().await.map(|_| ())
    }

    /// Deletes the namespace's topics (and so their channels) through nsqd's HTTP API.
    async fn destroy(&self) -> Result<(), BrokerError> {
        for http in &self.http {
            for topic in Topic::ALL {
                let url = format!("http://{http}/topic/delete?topic={}", self.topic_name(topic));
                let response = self
                    .http_client
                    .post(&url)
                    .send()
                    .await
                    .map_err(|e| BrokerError::Consume(e.to_string()))?;
                // 404: never created (nothing was published to it, nobody subscribed).
                if !response.status().is_success() && response.status() != reqwest::StatusCode::NOT_FOUND {
                    return Err(BrokerError::Consume(format!("{url}: {}", response.status())));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_headers_travel_at_the_front_of_the_body() {
        let trace = TraceHeaders::read(|name| match name {
            "traceparent" => Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            "tracestate" => Some("k=v,x=y".into()),
            _ => None,
        });
        let body = Bytes::from(wrap(&trace, b"{\"payload\":1}"));
        let (read, payload) = unwrap(body);
        assert_eq!(&payload[..], b"{\"payload\":1}");
        assert_eq!(read.get("traceparent"), trace.get("traceparent"));
        assert_eq!(read.get("tracestate"), Some("k=v,x=y"));
        let (none, plain) = unwrap(Bytes::from_static(b"{\"published\":\"by another tool\"}"));
        assert!(none.is_empty());
        assert_eq!(&plain[..], b"{\"published\":\"by another tool\"}");
        let (_, empty) = unwrap(Bytes::from(wrap(&TraceHeaders::default(), b"")));
        assert!(empty.is_empty());
    }
}
