//! Kafka via rdkafka (its bundled librdkafka): an idempotent producer (`acks=all`), one topic per
//! logical topic, messages keyed by saga id so one saga's messages stay in one partition, in order,
//! and consumer groups that commit offsets only after the handler committed.
//!
//! Kafka has no per-message negative ack: a failed message is re-published to the end of its topic
//! with an incremented `x-delivery-count` header, then its offset is released. Offsets are committed
//! per partition up to the lowest message still in flight, so a crash redelivers (never skips) work
//! that was not finished.
//!
//! Where offsets live, and how a consumer's instances split partitions, is `KAFKA_OFFSETS`:
//! `postgres` keeps them in PostgreSQL and shares partitions through leases there
//! ([`super::kafka_leases`]), with no consumer group at all; `broker` uses the broker's consumer
//! groups and commits offsets to them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::kafka_leases::{self, Leases};
use super::{Acker, BrokerError, Deliveries, Delivery, NoAck, Outgoing, Topic, TraceHeaders, Transport};
use crate::config::{ExposeSecret, KafkaOffsetsStart, KafkaSecurity};

const PARTITIONS: i32 = 3;
const DELIVERY_COUNT: &str = "x-delivery-count";

/// What every Kafka client of this process starts from: where the brokers are, and how it
/// authenticates and encrypts (`KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*`, `KAFKA_SSL_CA_LOCATION`).
pub fn client_config(brokers: &str, security: &KafkaSecurity) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers).set("security.protocol", security.protocol.as_str());
    if security.protocol.sasl() {
        config
            .set("sasl.mechanisms", security.sasl_mechanism.as_str())
            .set("sasl.username", &security.sasl_username)
            .set("sasl.password", security.sasl_password.expose_secret());
    }
    if let Some(ca) = security.ssl_ca_location.as_deref().filter(|_| security.protocol.tls()) {
        config.set("ssl.ca.location", ca);
    }
    config
}

pub struct KafkaTransport {
    brokers: String,
    /// [`client_config`]: every client this transport creates starts from it.
    client: ClientConfig,
    namespace: String,
    producer: FutureProducer,
    /// With `KAFKA_OFFSETS=postgres`: where offsets and partition leases live, and where a
    /// partition with none stored starts.
    offsets: Option<(sqlx::PgPool, KafkaOffsetsStart)>,
    /// How long the broker keeps the topics' messages ([`Transport::max_message_age`]).
    retention: Option<Duration>,
}

impl KafkaTransport {
    /// `offsets`: keep offsets and share partitions in this database instead of the broker's
    /// consumer groups.
    pub async fn connect(
        brokers: &str,
        security: &KafkaSecurity,
        namespace: &str,
        offsets: Option<(sqlx::PgPool, KafkaOffsetsStart)>,
    ) -> Result<Self, BrokerError> {
        let client = client_config(brokers, security);
        let producer: FutureProducer = client
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "1")
            .create()
            .map_err(|e| BrokerError::Connect(format!("Kafka at {brokers}: {e}")))?;
        let admin: AdminClient<DefaultClientContext> =
            client.create().map_err(|e| BrokerError::Connect(format!("Kafka at {brokers}: {e}")))?;
        let mut t = KafkaTransport {
            brokers: brokers.to_string(),
            client,
            namespace: namespace.to_string(),
            producer,
            offsets,
            retention: None,
        };
        let names: Vec<String> = Topic::DURABLE
            .iter()
            .chain([&Topic::SagaChanges, &Topic::DeadLetters])
            .map(|topic| t.topic_name(*topic))
            .collect();
        let topics: Vec<NewTopic> =
            names.iter().map(|n| NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(1))).collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(&topics, &opts)
            .await
            .map_err(|e| BrokerError::Connect(format!("Kafka at {brokers}: {e}")))?;
        for r in results {
            if let Err((name, code)) = r {
                if code != RDKafkaErrorCode::TopicAlreadyExists {
                    return Err(BrokerError::Connect(format!("creating topic {name}: {code}")));
                }
            }
        }
        t.retention = retention(&admin, &names, &opts).await;
        Ok(t)
    }

    fn topic_name(&self, topic: Topic) -> String {
        format!("{}.{}", self.namespace, topic.as_str())
    }
}

/// Offsets in flight per partition; the committable offset is the lowest one not yet finished.
#[derive(Default)]
struct Tracker {
    inflight: HashMap<i32, BTreeSet<i64>>,
    highest: HashMap<i32, i64>,
    committed: HashMap<i32, i64>,
    /// Offsets that moved forward since the last commit request, per partition.
    pending: HashMap<i32, i64>,
    /// How often each partition was assigned afresh ([`Tracker::reset`]): a message read under
    /// an earlier assignment says nothing about this one's offsets.
    generation: HashMap<i32, u64>,
}

impl Tracker {
    /// Notes `offset` in flight; returns the partition's generation, to finish it with.
    fn start(&mut self, partition: i32, offset: i64) -> u64 {
        self.inflight.entry(partition).or_default().insert(offset);
        let h = self.highest.entry(partition).or_insert(offset);
        *h = (*h).max(offset);
        self.generation.get(&partition).copied().unwrap_or(0)
    }

    /// Marks `offset` finished; returns the offset to commit if it moved forward. A message of
    /// an earlier assignment of the partition (lost, then taken again) moves nothing: its offset
    /// could be past messages the new assignment has not finished, or not even read.
    fn finish(&mut self, partition: i32, offset: i64, generation: u64) -> Option<i64> {
        if self.generation.get(&partition).copied().unwrap_or(0) != generation {
            return None;
        }
        let inflight = self.inflight.entry(partition).or_default();
        inflight.remove(&offset);
        let next =
            inflight.first().copied().unwrap_or(self.highest.get(&partition).copied().unwrap_or(offset) + 1);
        let committed = self.committed.entry(partition).or_insert(-1);
        (next > *committed).then(|| {
            *committed = next;
            self.pending.insert(partition, next);
            next
        })
    }

    /// Forgets `partition`: it was assigned afresh, from its stored offset.
    fn reset(&mut self, partition: i32) {
        self.inflight.remove(&partition);
        self.highest.remove(&partition);
        self.committed.remove(&partition);
        self.pending.remove(&partition);
        *self.generation.entry(partition).or_insert(0) += 1;
    }

    /// The offsets to commit now, forgetting them.
    fn take_pending(&mut self) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> = self.pending.drain().collect();
        out.sort_unstable();
        out
    }
}

/// How often finished offsets are committed. Committing once per message costs the broker a write
/// per message and, on a single-broker cluster, queues fetches and heartbeats behind the commits; a
/// crash redelivers at most this much finished work, which the inbox deduplicates.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// Commits the tracker's finished offsets every `COMMIT_INTERVAL`, and once more when `stop` fires
/// (the delivery stream was dropped), then lets the consumer go.
async fn commit_loop(
    consumer: Arc<StreamConsumer>,
    tracker: Arc<Mutex<Tracker>>,
    topic: String,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(COMMIT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.cancelled() => true,
        };
        let pending = tracker.lock().expect("tracker lock").take_pending();
        if !pending.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (partition, offset) in &pending {
                let _ = tpl.add_partition_offset(&topic, *partition, Offset::Offset(*offset));
            }
            let mode = if last { CommitMode::Sync } else { CommitMode::Async };
            let consumer = consumer.clone();
            let result = tokio::task::spawn_blocking(move || consumer.commit(&tpl, mode)).await;
            if let Ok(Err(e)) = result {
                tracing::warn!(error = %e, topic, "committing Kafka offsets failed; the next commit covers them");
                // Put them back unless a later offset was finished meanwhile.
                let mut t = tracker.lock().expect("tracker lock");
                for (partition, offset) in pending {
                    t.pending.entry(partition).or_insert(offset);
                }
            }
        }
        if last {
            return;
        }
    }
}

/// With offsets in PostgreSQL: renews this instance's leases every heartbeat and follows what it
/// holds (assigning partitions it took, from their stored offsets; unassigning those it lost or
/// gave back), and stores finished offsets every `COMMIT_INTERVAL`. When `stop` fires it stores
/// the last offsets and gives its leases back.
async fn keep_leased(
    consumer: Arc<StreamConsumer>,
    leases: Arc<Leases>,
    tracker: Arc<Mutex<Tracker>>,
    topic: String,
    mut owned: BTreeSet<i32>,
    start: KafkaOffsetsStart,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut commits = tokio::time::interval(COMMIT_INTERVAL);
    commits.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats = tokio::time::interval(kafka_leases::HEARTBEAT);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    beats.tick().await; // the first beat happened at subscribe
    loop {
        let (last, beat) = tokio::select! {
            _ = commits.tick() => (false, false),
            _ = beats.tick() => (false, true),
            _ = stop.cancelled() => (true, false),
        };
        let pending = tracker.lock().expect("tracker lock").take_pending();
        if !pending.is_empty() {
            if let Err(e) = leases.save(&pending).await {
                tracing::warn!(error = %e, topic, "storing Kafka offsets failed; the next store covers them");
                let mut t = tracker.lock().expect("tracker lock");
                for (partition, offset) in pending {
                    t.pending.entry(partition).or_insert(offset);
                }
            }
        }
        if last {
            if let Err(e) = leases.leave().await {
                tracing::warn!(error = %e, topic, "giving Kafka partition leases back failed; they expire");
            }
            return;
        }
        if beat {
            match leases.beat().await {
                Ok(held) => follow(&consumer, &tracker, &topic, &mut owned, &held, start),
                // Without the database it cannot know what it still holds: stop reading until a
                // beat succeeds (the leases expire meanwhile and others take the partitions).
                Err(e) => {
                    tracing::warn!(error = %e, topic, "renewing Kafka partition leases failed; pausing");
                    follow(&consumer, &tracker, &topic, &mut owned, &[], start);
                }
            }
        }
    }
}

/// How many partitions `topic` has, as the broker says (the topics this transport creates have
/// [`PARTITIONS`]; one made elsewhere may have others).
async fn partitions_of(consumer: &Arc<StreamConsumer>, topic: &str) -> Result<i32, BrokerError> {
    let (consumer, name) = (consumer.clone(), topic.to_string());
    let metadata = tokio::task::spawn_blocking(move || {
        consumer.fetch_metadata(Some(&name), Duration::from_secs(10)).map(|m| {
            m.topics().iter().find(|t| t.name() == name).map(|t| t.partitions().len() as i32).unwrap_or(0)
        })
    })
    .await
    .map_err(|e| BrokerError::Consume(e.to_string()))?
    .map_err(|e| BrokerError::Consume(format!("partitions of {topic}: {e}")))?;
    Ok(if metadata > 0 { metadata } else { PARTITIONS })
}

/// Makes the consumer's assignment `held`: assigns the partitions it did not have, from their
/// stored offsets (when none is stored, where `start` says), and unassigns those it has no more.
fn follow(
    consumer: &StreamConsumer,
    tracker: &Mutex<Tracker>,
    topic: &str,
    owned: &mut BTreeSet<i32>,
    held: &[(i32, Option<i64>)],
    start: KafkaOffsetsStart,
) {
    let now: BTreeSet<i32> = held.iter().map(|(p, _)| *p).collect();
    let unstored: Vec<i32> =
        held.iter().filter(|(p, next)| !owned.contains(p) && next.is_none()).map(|(p, _)| *p).collect();
    let committed = match start {
        KafkaOffsetsStart::Group if !unstored.is_empty() => group_offsets(consumer, topic, &unstored),
        _ => HashMap::new(),
    };
    let mut gained = TopicPartitionList::new();
    for (partition, next) in held.iter().filter(|(p, _)| !owned.contains(p)) {
        let offset = match next.or_else(|| committed.get(partition).copied()) {
            Some(next) => Offset::Offset(next),
            None => Offset::Beginning,
        };
        let _ = gained.add_partition_offset(topic, *partition, offset);
        tracker.lock().expect("tracker lock").reset(*partition);
    }
    let mut lost = TopicPartitionList::new();
    for partition in owned.difference(&now) {
        lost.add_partition(topic, *partition);
    }
    if lost.count() > 0 {
        tracing::info!(topic, partitions = ?lost.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), "Kafka partitions given up");
        if let Err(e) = consumer.incremental_unassign(&lost) {
            tracing::warn!(error = %e, topic, "unassigning Kafka partitions failed");
        }
    }
    if gained.count() > 0 {
        tracing::info!(topic, partitions = ?gained.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), "Kafka partitions taken");
        if let Err(e) = consumer.incremental_assign(&gained) {
            tracing::warn!(error = %e, topic, "assigning Kafka partitions failed");
        }
    }
    *owned = now;
}

/// The offsets the consumer group committed for `partitions` (where it committed one), as
/// `KAFKA_OFFSETS=broker` keeps them; none when the group coordinator does not answer in time.
fn group_offsets(consumer: &StreamConsumer, topic: &str, partitions: &[i32]) -> HashMap<i32, i64> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    match consumer.committed_offsets(tpl, Duration::from_secs(10)) {
        Ok(list) => list
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some((e.partition(), o)),
                _ => None,
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, topic, "reading the consumer group's offsets failed; starting at the beginning");
            HashMap::new()
        }
    }
}

struct KafkaAcker {
    tracker: Arc<Mutex<Tracker>>,
    transport: Arc<KafkaTransportHandle>,
    topic: String,
    partition: i32,
    offset: i64,
    /// The partition's assignment this message was read under.
    generation: u64,
    key: String,
    payload: Bytes,
    count: u64,
    trace: TraceHeaders,
}

/// A record header's value as text.
fn header(m: &impl Message, name: &str) -> Option<String> {
    let value = m.headers()?.iter().find(|h| h.key == name)?.value?;
    std::str::from_utf8(value).ok().map(str::to_string)
}

fn with_trace(headers: OwnedHeaders, trace: &TraceHeaders) -> OwnedHeaders {
    trace.iter().fold(headers, |headers, (key, value)| headers.insert(Header { key, value: Some(value) }))
}

/// A record's trace context headers.
fn trace(m: &impl Message) -> TraceHeaders {
    TraceHeaders::read(|name| header(m, name))
}

/// What an acker needs to re-publish a failed message.
struct KafkaTransportHandle {
    producer: FutureProducer,
}

impl KafkaAcker {
    /// Marks the message finished; `commit_loop` commits it with its neighbours.
    fn release(&self) -> Result<(), BrokerError> {
        self.tracker.lock().expect("tracker lock").finish(self.partition, self.offset, self.generation);
        Ok(())
    }
}

#[async_trait]
impl Acker for KafkaAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        self.release()
    }

    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BrokerError> {
        tokio::time::sleep(delay).await;
        let count = (self.count + 1).to_string();
        let headers = with_trace(
            OwnedHeaders::new().insert(Header { key: DELIVERY_COUNT, value: Some(count.as_str()) }),
            &self.trace,
        );
        self.transport
            .producer
            .send(
                FutureRecord::to(&self.topic).key(&self.key).payload(self.payload.as_ref()).headers(headers),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| BrokerError::Ack(e.to_string()))?;
        self.release()
    }
}

/// The longest `retention.ms` of the durable topics, as the broker describes them; `None` when
/// one keeps messages forever (-1) or the broker does not say (then nothing bounds it).
async fn retention(
    admin: &AdminClient<DefaultClientContext>,
    names: &[String],
    opts: &AdminOptions,
) -> Option<Duration> {
    use rdkafka::admin::ResourceSpecifier;
    let specs: Vec<ResourceSpecifier> = names.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
    let described = match admin.describe_configs(&specs, opts).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "topic retention unknown: inbox rows are kept");
            return None;
        }
    };
    let mut longest = Duration::ZERO;
    for topic in described {
        let ms = topic
            .ok()
            .and_then(|c| c.get("retention.ms").and_then(|e| e.value.clone()))
            .and_then(|v| v.parse::<i64>().ok())?;
        if ms < 0 {
            return None;
        }
        longest = longest.max(Duration::from_millis(ms as u64));
    }
    (!longest.is_zero()).then_some(longest)
}

#[async_trait]
impl Transport for KafkaTransport {
    /// Queues every message with the (idempotent, so per-partition ordered) producer, then awaits
    /// the deliveries.
    async fn publish_batch(&self, messages: &[Outgoing]) -> Result<(), BrokerError> {
        let count = "1";
        let mut deliveries = Vec::with_capacity(messages.len());
        for m in messages {
            let topic = self.topic_name(m.topic);
            let headers = with_trace(
                OwnedHeaders::new().insert(Header { key: DELIVERY_COUNT, value: Some(count) }),
                &m.trace,
            );
            let record = FutureRecord::to(&topic).key(&m.key).payload(m.payload.as_ref()).headers(headers);
            // Fails at once if the producer queue is full (it holds far more than one batch).
            let delivery =
                self.producer.send_result(record).map_err(|(e, _)| BrokerError::Publish(e.to_string()))?;
            deliveries.push(delivery);
        }
        for d in deliveries {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(BrokerError::Publish(e.to_string())),
                Err(_) => return Err(BrokerError::Publish("producer dropped the message".into())),
            }
        }
        Ok(())
    }

    async fn subscribe(&self, consumer: &str, topic: Topic) -> Result<Deliveries, BrokerError> {
        let name = self.topic_name(topic);
        let group = format!("{}.{}", self.namespace, consumer);
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let stop = tokio_util::sync::CancellationToken::new();
        let kafka = match &self.offsets {
            None => {
                let kafka: StreamConsumer = self
                    .client
                    .clone()
                    .set("group.id", &group)
                    .set("enable.auto.commit", "false")
                    .set("auto.offset.reset", "earliest")
                    .set("session.timeout.ms", "6000")
                    .set("heartbeat.interval.ms", "500")
                    .set("fetch.wait.max.ms", "50")
                    .set("topic.metadata.refresh.interval.ms", "5000")
                    .create()
                    .map_err(|e| BrokerError::Consume(e.to_string()))?;
                kafka.subscribe(&[&name]).map_err(|e| BrokerError::Consume(e.to_string()))?;
                let kafka = Arc::new(kafka);
                tokio::spawn(commit_loop(kafka.clone(), tracker.clone(), name.clone(), stop.clone()));
                kafka
            }
            Some((pool, start)) => {
                let start = *start;
                // No group membership: partitions are assigned by hand, from the leases.
                let kafka: StreamConsumer = self
                    .client
                    .clone()
                    .set("group.id", &group)
                    .set("enable.auto.commit", "false")
                    .set("enable.auto.offset.store", "false")
                    .set("fetch.wait.max.ms", "50")
                    .set("topic.metadata.refresh.interval.ms", "5000")
                    .create()
                    .map_err(|e| BrokerError::Consume(e.to_string()))?;
                let kafka = Arc::new(kafka);
                let partitions = partitions_of(&kafka, &name).await?;
                let leases = Arc::new(Leases::new(pool.clone(), group, name.clone(), partitions));
                let db = |e: sqlx::Error| BrokerError::Consume(format!("Kafka partition leases: {e}"));
                leases.join().await.map_err(db)?;
                let held = leases.beat().await.map_err(db)?;
                let mut owned = BTreeSet::new();
                follow(&kafka, &tracker, &name, &mut owned, &held, start);
                tokio::spawn(keep_leased(
                    kafka.clone(),
                    leases,
                    tracker.clone(),
                    name.clone(),
                    owned,
                    start,
                    stop.clone(),
                ));
                kafka
            }
        };
        let handle = Arc::new(KafkaTransportHandle { producer: self.producer.clone() });
        // Owned by the stream (even if it is never polled): dropping the stream stops the commit
        // loop after a last commit.
        let stop_commits = stop.drop_guard();
        let stream = async_stream::stream! {
            let _stop_commits = stop_commits;
            loop {
                let m = match kafka.recv().await {
                    Ok(m) => m.detach(),
                    // A topic just created may not be in the consumer's metadata yet.
                    Err(rdkafka::error::KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Err(e) => {
                        yield Err(BrokerError::Consume(e.to_string()));
                        continue;
                    }
                };
                let count = header(&m, DELIVERY_COUNT).and_then(|v| v.parse().ok()).unwrap_or(1u64);
                let trace = trace(&m);
                let generation = tracker.lock().expect("tracker lock").start(m.partition(), m.offset());
                let payload = Bytes::copy_from_slice(m.payload().unwrap_or_default());
                let acker = KafkaAcker {
                    tracker: tracker.clone(),
                    transport: handle.clone(),
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    generation,
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
                    payload: payload.clone(),
                    count,
                    trace: trace.clone(),
                };
                yield Ok(Delivery { payload, trace, delivery_count: count, acker: Box::new(acker) });
            }
        };
        Ok(stream.boxed())
    }

    async fn subscribe_broadcast(&self, topic: Topic) -> Result<Deliveries, BrokerError> {
        let name = self.topic_name(topic);
        // A group of its own: every subscriber reads every partition, from what comes next.
        let group = format!("{}.live.{}", self.namespace, uuid::Uuid::new_v4().simple());
        let kafka: StreamConsumer = self
            .client
            .clone()
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .set("fetch.wait.max.ms", "50")
            .create()
            .map_err(|e| BrokerError::Consume(e.to_string()))?;
        match self.offsets {
            // Every partition by hand, from its end: nothing waits for a group to form.
            Some(_) => {
                let mut all = TopicPartitionList::new();
                for partition in 0..PARTITIONS {
                    let _ = all.add_partition_offset(&name, partition, Offset::End);
                }
                kafka.assign(&all).map_err(|e| BrokerError::Consume(e.to_string()))?;
            }
            None => kafka.subscribe(&[&name]).map_err(|e| BrokerError::Consume(e.to_string()))?,
        }
        let stream = async_stream::stream! {
            loop {
                match kafka.recv().await {
                    Ok(m) => {
                        let trace = trace(&m);
                        let payload = Bytes::copy_from_slice(m.payload().unwrap_or_default());
                        yield Ok(Delivery { payload, trace, delivery_count: 1, acker: Box::new(NoAck) });
                    }
                    Err(rdkafka::error::KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => yield Err(BrokerError::Consume(e.to_string())),
                }
            }
        };
        Ok(stream.boxed())
    }

    fn max_message_age(&self) -> Option<Duration> {
        self.retention
    }

    async fn health(&self) -> Result<(), BrokerError> {
        // librdkafka's metadata call blocks; keep it off the async workers.
        let producer = self.producer.clone();
        let brokers = self.brokers.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|_| ())
                .map_err(|e| BrokerError::Connect(format!("Kafka at {brokers}: {e}")))
        })
        .await
        .map_err(|e| BrokerError::Connect(e.to_string()))?
    }

    /// Leaves the topics in place. Deleting a topic while any client of it is still alive makes
    /// librdkafka 2.12 crash in its metadata cache (seen against tansu), and namespaced topics cost
    /// the broker little; remove a namespace's topics with the broker's own tools.
    async fn destroy(&self) -> Result<(), BrokerError> {
        // Topics stay: deleting them through rdkafka's admin client crashed the test process
        // against tansu 0.6 (SIGSEGV), so a long-lived tansu collects each namespace's topics.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{client_config, Tracker};
    use crate::config::{KafkaSaslMechanism, KafkaSecurity, KafkaSecurityProtocol, SecretString};
    use rdkafka::producer::BaseProducer;

    fn security(protocol: KafkaSecurityProtocol, sasl_mechanism: KafkaSaslMechanism) -> KafkaSecurity {
        KafkaSecurity {
            protocol,
            sasl_mechanism,
            sasl_username: "shop".into(),
            sasl_password: SecretString::from("kafka-pass"),
            ssl_ca_location: Some("/etc/kafka/ca.pem".into()),
        }
    }

    /// The settings reach every client: the protocol always, the account with SASL only, the
    /// certificate authorities with TLS only.
    #[test]
    fn clients_carry_the_security_settings() {
        use KafkaSecurityProtocol::*;
        let c = client_config("k1:9093,k2:9093", &security(SaslSsl, KafkaSaslMechanism::ScramSha512));
        assert_eq!(c.get("bootstrap.servers"), Some("k1:9093,k2:9093"));
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.username"), Some("shop"));
        assert_eq!(c.get("sasl.password"), Some("kafka-pass"));
        assert_eq!(c.get("ssl.ca.location"), Some("/etc/kafka/ca.pem"));
        let plain = client_config("k1:9092", &security(Plaintext, KafkaSaslMechanism::ScramSha512));
        assert_eq!(plain.get("security.protocol"), Some("plaintext"));
        for key in ["sasl.mechanisms", "sasl.username", "sasl.password", "ssl.ca.location"] {
            assert_eq!(plain.get(key), None, "{key} without SASL or TLS");
        }
        let scram = client_config("k1:9092", &security(SaslPlaintext, KafkaSaslMechanism::ScramSha256));
        assert_eq!(scram.get("sasl.mechanisms"), Some("SCRAM-SHA-256"));
        assert_eq!(scram.get("ssl.ca.location"), None);
    }

    /// librdkafka takes every combination the settings allow: SCRAM and TLS need it built with
    /// OpenSSL (the `ssl` feature), which a build without refuses when the client is created.
    #[test]
    fn librdkafka_accepts_every_security_setting() {
        use KafkaSaslMechanism::*;
        use KafkaSecurityProtocol::*;
        for protocol in [Plaintext, Ssl, SaslPlaintext, SaslSsl] {
            for mechanism in [ScramSha512, ScramSha256, Plain] {
                let mut s = security(protocol, mechanism);
                s.ssl_ca_location = None; // the system's: a file that does not exist is refused
                let created = client_config("127.0.0.1:1", &s).create::<BaseProducer>();
                assert!(created.is_ok(), "{protocol:?} {mechanism:?}: {:?}", created.err());
            }
        }
    }

    #[test]
    fn commits_only_up_to_the_lowest_unfinished_offset() {
        let mut t = Tracker::default();
        for o in 10..13 {
            t.start(0, o);
        }
        assert_eq!(t.finish(0, 11, 0), Some(10), "10 still in flight");
        assert_eq!(t.finish(0, 12, 0), None);
        assert_eq!(t.finish(0, 10, 0), Some(13));
        t.start(1, 5);
        assert_eq!(t.finish(1, 5, 0), Some(6), "partitions are independent");
        assert_eq!(t.take_pending(), vec![(0, 13), (1, 6)], "the latest offset per partition");
        assert!(t.take_pending().is_empty());
    }

    /// A partition lost and taken again (from its stored offset, 3) while a message of the old
    /// assignment (9) was still being handled: that message finishing stores nothing, where it
    /// stored 10, past 3..8, which the new assignment had not even read.
    #[test]
    fn a_message_of_an_earlier_assignment_moves_no_offset() {
        let mut t = Tracker::default();
        let old = t.start(0, 9);
        t.reset(0);
        assert_eq!(t.finish(0, 9, old), None);
        assert!(t.take_pending().is_empty());
        let new = t.start(0, 3);
        assert_ne!(new, old);
        assert_eq!(t.finish(0, 3, new), Some(4));
    }
}
