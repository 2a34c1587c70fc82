//! Broker conformance: the guarantees the saga relies on, checked against each real broker
//! (NATS JetStream, RabbitMQ, Kafka via tansu, NSQ) and the in-process transport, through the same trait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ecommerce_core::saga::messages::{Body, Command, Envelope};
use ecommerce_platform::broker::{self, Topic, Transport};
use ecommerce_platform::config::{BrokerKind, Config, KafkaOffsets};
use ecommerce_platform::consumer::{self, Handler};
use ecommerce_platform::error::AppError;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A broker, and for Kafka where its consumers keep their offsets.
#[derive(Debug, Clone, Copy)]
struct Setup(BrokerKind, KafkaOffsets);

/// The database Kafka consumers keep offsets and partition leases in (`KAFKA_OFFSETS=postgres`),
/// shared by these tests: each uses its own namespace, so its own rows.
const OFFSETS_DATABASE: &str = "postgres://postgres@127.0.0.1:5432/broker_conformance";

fn config(setup: Setup) -> Config {
    let mut c = Config::from_env().expect("config");
    c.broker.kind = setup.0;
    c.broker.kafka_offsets = setup.1;
    c.broker.namespace = format!("c_{}", &Uuid::new_v4().simple().to_string()[..16]);
    c.broker.ack_wait = Duration::from_secs(2);
    c.postgres.url = OFFSETS_DATABASE.to_string().into();
    c
}

async fn connect(c: &Config) -> Arc<dyn Transport> {
    if c.broker.kind == BrokerKind::Kafka && c.broker.kafka_offsets == KafkaOffsets::Postgres {
        static MIGRATED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        MIGRATED
            .get_or_init(|| async {
                ecommerce_platform::postgres::migrate(c).await.expect("offsets database")
            })
            .await;
    }
    broker::connect(c).await.expect("broker reachable (scripts/services.sh up)")
}

/// A message whose trace id carries its sequence number.
fn message(saga: Uuid, n: usize) -> Envelope {
    Envelope::new(saga, saga, n.to_string(), Body::Command(Command::ReleaseStock))
}

async fn publish_n(t: &dyn Transport, saga: Uuid, range: std::ops::Range<usize>) {
    for n in range {
        t.publish(Topic::StockCommands, &saga.to_string(), Bytes::from(message(saga, n).encode()))
            .await
            .unwrap();
    }
}

/// The next delivery, within a minute.
async fn next_delivery(stream: &mut broker::Deliveries) -> broker::Delivery {
    tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("delivery in time")
        .expect("stream open")
        .expect("delivery")
}

/// Reads `n` deliveries from `consumer`, acking each when `ack` says so; returns their numbers.
async fn read(t: &dyn Transport, consumer: &str, n: usize, ack: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut stream = t.subscribe(consumer, Topic::StockCommands).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < n {
        let d = next_delivery(&mut stream).await;
        let k: usize = Envelope::decode(&d.payload).unwrap().trace_id.parse().unwrap();
        if ack(k) {
            d.acker.ack().await.unwrap();
        }
        seen.push(k);
    }
    seen
}

fn spawn_consumer(
    t: Arc<dyn Transport>,
    name: &str,
    topic: Topic,
    max_deliveries: u64,
    handler: Handler,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let spec = consumer::ConsumerSpec {
        name: name.to_string(),
        topic,
        concurrency: 4,
        max_batch: 1,
        max_deliveries,
        metrics: Default::default(),
    };
    let task = tokio::spawn(consumer::run(t, spec, handler, stop.clone()));
    (stop, task)
}

async fn publish_consume_and_order_per_key(kind: Setup) {
    let c = config(kind);
    let t = connect(&c).await;
    // Subscribe first so queue-based brokers have the queue bound before anything is published.
    drop(t.subscribe("reader", Topic::StockCommands).await.unwrap());
    let saga = Uuid::now_v7();
    publish_n(t.as_ref(), saga, 0..30).await;
    let seen = read(t.as_ref(), "reader", 30, |_| true).await;
    assert_eq!(seen, (0..30).collect::<Vec<_>>(), "one key's messages arrive in publish order");
    t.destroy().await.unwrap();
}

async fn redelivery_after_handler_error(kind: Setup) {
    let c = config(kind);
    let t = connect(&c).await;
    let attempts: Arc<Mutex<HashMap<String, u32>>> = Default::default();
    let a = attempts.clone();
    let handler: Handler = Arc::new(move |env: Envelope| {
        let a = a.clone();
        Box::pin(async move {
            let mut a = a.lock().unwrap();
            let n = a.entry(env.trace_id.clone()).or_default();
            *n += 1;
            if *n == 1 {
                Err(AppError::Internal("first attempt fails".into()))
            } else {
                Ok(())
            }
        })
    });
    let (stop, task) = spawn_consumer(t.clone(), "flaky", Topic::StockCommands, 10, handler);
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish_n(t.as_ref(), Uuid::now_v7(), 0..5).await;
    for _ in 0..600 {
        if attempts.lock().unwrap().values().filter(|n| **n >= 2).count() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 5);
    assert!(attempts.values().all(|n| *n == 2), "each redelivered once after its failure: {attempts:?}");
    stop.cancel();
    let _ = task.await;
    t.destroy().await.unwrap();
}

async fn no_loss_when_the_consumer_restarts(kind: Setup) {
    let c = config(kind);
    let t = connect(&c).await;
    drop(t.subscribe("restarts", Topic::StockCommands).await.unwrap());
    let saga = Uuid::now_v7();
    publish_n(t.as_ref(), saga, 0..10).await;
    // First run: handles 0..4, then "crashes" holding 4..6 unacked.
    let first = read(t.as_ref(), "restarts", 6, |k| k < 4).await;
    assert_eq!(first, (0..6).collect::<Vec<_>>());
    drop(t);
    publish_n(connect(&c).await.as_ref(), saga, 10..15).await; // published while it is down

    // Second run, new connection: everything not acked comes (again), nothing acked is lost.
    let t = connect(&c).await;
    let second = read(t.as_ref(), "restarts", 11, |_| true).await;
    let mut unique = second.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique, (4..15).collect::<Vec<_>>(), "got {second:?}");
    t.destroy().await.unwrap();
}

/// The W3C trace context travels as `traceparent` and `tracestate` headers, also on a redelivery.
async fn trace_context_travels_in_headers(kind: Setup) {
    let c = config(kind);
    let t = connect(&c).await;
    drop(t.subscribe("tracer", Topic::StockCommands).await.unwrap());
    let saga = Uuid::now_v7();
    let sent = broker::TraceHeaders::read(|name| match name {
        "traceparent" => Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".into()),
        "tracestate" => Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".into()),
        _ => None,
    });
    let out = |n: usize, trace: &broker::TraceHeaders| broker::Outgoing {
        topic: Topic::StockCommands,
        key: saga.to_string(),
        payload: Bytes::from(message(saga, n).encode()),
        trace: trace.clone(),
    };
    t.publish_batch(&[out(0, &sent), out(1, &Default::default())]).await.unwrap();

    let mut stream = t.subscribe("tracer", Topic::StockCommands).await.unwrap();
    let mut seen = HashMap::new();
    let mut redelivered = None;
    while seen.len() < 2 || redelivered.is_none() {
        let d = next_delivery(&mut stream).await;
        let k: usize = Envelope::decode(&d.payload).unwrap().trace_id.parse().unwrap();
        if k == 0 && seen.contains_key(&0) {
            redelivered = Some(d.trace.clone());
            d.acker.ack().await.unwrap();
            continue;
        }
        seen.insert(k, d.trace.clone());
        if k == 0 {
            d.acker.nak(Duration::ZERO).await.unwrap();
        } else {
            d.acker.ack().await.unwrap();
        }
    }
    assert_eq!(seen[&0], sent);
    assert!(seen[&1].is_empty(), "no headers when none were sent: {:?}", seen[&1]);
    assert_eq!(redelivered, Some(sent), "kept on redelivery");
    t.destroy().await.unwrap();
}

/// A broadcast topic gives every live subscriber every message, in order.
async fn broadcast_reaches_every_subscriber(kind: Setup) {
    let c = config(kind);
    let t = connect(&c).await;
    let mut a = t.subscribe_broadcast(Topic::SagaChanges).await.unwrap();
    let mut b = t.subscribe_broadcast(Topic::SagaChanges).await.unwrap();
    let saga = Uuid::now_v7();
    let send = |n: usize| {
        let t = t.clone();
        async move {
            t.publish(Topic::SagaChanges, &saga.to_string(), Bytes::from(message(saga, n).encode()))
                .await
                .unwrap()
        }
    };
    let number =
        |d: broker::Delivery| -> usize { Envelope::decode(&d.payload).unwrap().trace_id.parse().unwrap() };
    // Subscriptions may take a moment to be live (a Kafka group's assignment): ping until both hear.
    let mut ping = 1000;
    for stream in [&mut a, &mut b] {
        loop {
            send(ping).await;
            ping += 1;
            if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
                number(d.unwrap());
                break;
            }
            assert!(ping < 1200, "a broadcast subscriber heard nothing");
        }
    }
    for n in 0..5 {
        send(n).await;
    }
    for stream in [&mut a, &mut b] {
        let mut got = Vec::new();
        while got.len() < 5 {
            let d = next_delivery(stream).await;
            let n = number(d);
            if n < 1000 {
                got.push(n);
            }
        }
        assert_eq!(got, (0..5).collect::<Vec<_>>(), "every subscriber gets every message in order");
    }
    t.destroy().await.unwrap();
}

/// Live updates come in bursts (one outbox batch carries many sagas' notices): a burst published
/// in one batch reaches every subscriber whole. Order between messages is not asked (NSQ keeps
/// none); that each subscriber gets each message is.
async fn a_burst_of_broadcasts_reaches_every_subscriber(kind: Setup) {
    const BURST: usize = 300;
    let c = config(kind);
    let t = connect(&c).await;
    let mut a = t.subscribe_broadcast(Topic::SagaChanges).await.unwrap();
    let mut b = t.subscribe_broadcast(Topic::SagaChanges).await.unwrap();
    let saga = Uuid::now_v7();
    let out = |n: usize| broker::Outgoing {
        topic: Topic::SagaChanges,
        key: saga.to_string(),
        payload: Bytes::from(message(saga, n).encode()),
        trace: Default::default(),
    };
    let number =
        |d: broker::Delivery| -> usize { Envelope::decode(&d.payload).unwrap().trace_id.parse().unwrap() };
    // Subscriptions may take a moment to be live (a Kafka group's assignment): ping until both hear.
    let mut ping = 10_000;
    for stream in [&mut a, &mut b] {
        loop {
            t.publish_batch(&[out(ping)]).await.unwrap();
            ping += 1;
            if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
                number(d.unwrap());
                break;
            }
            assert!(ping < 10_200, "a broadcast subscriber heard nothing");
        }
    }
    let burst: Vec<_> = (0..BURST).map(out).collect();
    t.publish_batch(&burst).await.unwrap();
    for stream in [&mut a, &mut b] {
        let mut got = std::collections::BTreeSet::new();
        while got.len() < BURST {
            // Ends the test (rather than hang) if the rest never comes.
            let d = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
            let Ok(Some(d)) = d else {
                panic!(
                    "{} of {BURST} broadcasts arrived; missing e.g. {:?}",
                    got.len(),
                    (0..BURST).find(|n| !got.contains(n))
                )
            };
            let n = number(d.unwrap());
            if n < BURST {
                got.insert(n);
            }
        }
    }
    t.destroy().await.unwrap();
}

async fn dead_letters_after_the_retry_limit(kind: Setup) {
    let c = config(kind);
    let t = connect(&c).await;
    let calls = Arc::new(Mutex::new(0u32));
    let k = calls.clone();
    let handler: Handler = Arc::new(move |_env| {
        let k = k.clone();
        Box::pin(async move {
            *k.lock().unwrap() += 1;
            Err(AppError::Internal("poison".into()))
        })
    });
    let mut dlq = t.subscribe("dead-letters", Topic::DeadLetters).await.unwrap();
    let (stop, task) = spawn_consumer(t.clone(), "poisoned", Topic::StockCommands, 3, handler);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let poison = message(Uuid::now_v7(), 42);
    t.publish(Topic::StockCommands, "k", Bytes::from(poison.encode())).await.unwrap();

    let d = tokio::time::timeout(Duration::from_secs(60), dlq.next())
        .await
        .unwrap_or_else(|_| panic!("no dead letter in time; handler called {} times", *calls.lock().unwrap()))
        .unwrap()
        .unwrap();
    assert_eq!(Envelope::decode(&d.payload).unwrap(), poison);
    d.acker.ack().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*calls.lock().unwrap(), 3, "tried exactly max_deliveries times");
    stop.cancel();
    let _ = task.await;
    t.destroy().await.unwrap();
}

/// A batching consumer: every message is handled once; a batch with a poison message falls back to
/// one by one, so only the poison message fails (and is dead-lettered) while its batch mates pass.
async fn batches_handle_each_message_once_and_isolate_poison(kind: Setup) {
    let c = config(kind);
    let t = connect(&c).await;
    const POISON: usize = 7;
    let number = |e: &Envelope| -> usize { e.trace_id.parse().unwrap() };
    let done: Arc<Mutex<Vec<usize>>> = Default::default();
    let sizes: Arc<Mutex<Vec<usize>>> = Default::default();
    let (d, z) = (done.clone(), sizes.clone());
    let batch: consumer::BatchHandler = Arc::new(move |items: Vec<(Envelope, tracing::Span)>| {
        let (d, z) = (d.clone(), z.clone());
        Box::pin(async move {
            z.lock().unwrap().push(items.len());
            let numbers: Vec<usize> = items.iter().map(|(e, _)| number(e)).collect();
            if numbers.contains(&POISON) {
                return Err(AppError::Internal("poison in the batch".into())); // all or nothing
            }
            d.lock().unwrap().extend(&numbers);
            Ok(vec![true; numbers.len()])
        })
    });
    let d = done.clone();
    let single: Handler = Arc::new(move |env: Envelope| {
        let d = d.clone();
        Box::pin(async move {
            match number(&env) {
                POISON => Err(AppError::Internal("poison".into())),
                n => {
                    d.lock().unwrap().push(n);
                    Ok(())
                }
            }
        })
    });
    let mut dlq = t.subscribe("dead-letters", Topic::DeadLetters).await.unwrap();
    // Published before the consumer starts, so they are waiting together when it does.
    drop(t.subscribe("batched", Topic::StockCommands).await.unwrap());
    publish_n(t.as_ref(), Uuid::now_v7(), 0..40).await;
    let stop = CancellationToken::new();
    let spec = consumer::ConsumerSpec {
        name: "batched".to_string(),
        topic: Topic::StockCommands,
        concurrency: 2,
        max_batch: 16,
        max_deliveries: 2,
        metrics: Default::default(),
    };
    let task = tokio::spawn(consumer::run_batched(t.clone(), spec, single, batch, stop.clone()));
    let dead = tokio::time::timeout(Duration::from_secs(60), dlq.next())
        .await
        .expect("a dead letter")
        .unwrap()
        .unwrap();
    assert_eq!(number(&Envelope::decode(&dead.payload).unwrap()), POISON);
    dead.acker.ack().await.unwrap();
    for _ in 0..600 {
        if done.lock().unwrap().len() >= 39 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // nothing more may arrive
    let mut handled = done.lock().unwrap().clone();
    handled.sort();
    let expected: Vec<usize> = (0..40).filter(|n| *n != POISON).collect();
    assert_eq!(handled, expected, "every good message once; batch sizes {:?}", sizes.lock().unwrap());
    stop.cancel();
    let _ = task.await;
    t.destroy().await.unwrap();
}

macro_rules! conformance {
    ($($broker:ident => $kind:expr),* $(,)?) => {$(
        mod $broker {
            use super::*;
            #[tokio::test]
            async fn publish_consume_and_order_per_key() { super::publish_consume_and_order_per_key($kind).await }
            #[tokio::test]
            async fn redelivery_after_handler_error() { super::redelivery_after_handler_error($kind).await }
            #[tokio::test]
            async fn no_loss_when_the_consumer_restarts() { super::no_loss_when_the_consumer_restarts($kind).await }
            #[tokio::test]
            async fn broadcast_reaches_every_subscriber() { super::broadcast_reaches_every_subscriber($kind).await }
            #[tokio::test]
            async fn a_burst_of_broadcasts_reaches_every_subscriber() {
                super::a_burst_of_broadcasts_reaches_every_subscriber($kind).await
            }
            #[tokio::test]
            async fn trace_context_travels_in_headers() { super::trace_context_travels_in_headers($kind).await }
            #[tokio::test]
            async fn dead_letters_after_the_retry_limit() { super::dead_letters_after_the_retry_limit($kind).await }
            #[tokio::test]
            async fn batches_handle_each_message_once_and_isolate_poison() {
                super::batches_handle_each_message_once_and_isolate_poison($kind).await
            }
        }
    )*};
}

conformance!(
    nats => Setup(BrokerKind::Nats, KafkaOffsets::Postgres),
    rabbitmq => Setup(BrokerKind::RabbitMq, KafkaOffsets::Postgres),
    kafka => Setup(BrokerKind::Kafka, KafkaOffsets::Postgres),
    kafka_groups => Setup(BrokerKind::Kafka, KafkaOffsets::Broker),
    nsq => Setup(BrokerKind::Nsq, KafkaOffsets::Postgres),
    memory => Setup(BrokerKind::Memory, KafkaOffsets::Postgres),
);

/// Kafka with offsets in PostgreSQL: instances of one consumer split the partitions, and when one
/// is killed (`kill -9`: its leases are not given back) the other takes its partitions over once
/// they expire, from the offsets it stored, and receives everything published meanwhile. The
/// killed instance is a real process: `api dead-letters drain`, which consumes the dead-letter
/// topic.
#[tokio::test]
async fn kafka_partitions_of_a_killed_instance_are_taken_over() {
    let c = config(Setup(BrokerKind::Kafka, KafkaOffsets::Postgres));
    let t = connect(&c).await;
    let pool = sqlx::PgPool::connect(OFFSETS_DATABASE).await.unwrap();
    let group = format!("{}.dead-letters", c.broker.namespace);
    let held_by = |holder_is_null: bool| {
        let (pool, group) = (pool.clone(), group.clone());
        async move {
            let sql = if holder_is_null {
                "SELECT count(*) FROM kafka_partitions WHERE consumer = $1 AND holder IS NULL"
            } else {
                "SELECT count(DISTINCT holder) FROM kafka_partitions WHERE consumer = $1 AND lease_until > now()"
            };
            sqlx::query_scalar::<_, i64>(sql).bind(group).fetch_one(&pool).await.unwrap()
        }
    };
    let dead = |n: usize| {
        let saga = Uuid::now_v7();
        Bytes::from(message(saga, n).encode())
    };
    // The first instance: another process, draining dead letters to a file.
    let out = std::env::temp_dir().join(format!("{}.jsonl", c.broker.namespace));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_api"))
        .args(["dead-letters", "drain", "--idle-ms", "600000", "--to", out.to_str().unwrap()])
        .env("BROKER", "kafka")
        .env("KAFKA_OFFSETS", "postgres")
        .env("BROKER_NAMESPACE", &c.broker.namespace)
        .env("DATABASE_URL", OFFSETS_DATABASE)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("api runs");
    // It holds every partition, and drains what comes.
    for _ in 0..600 {
        if held_by(false).await == 1 && held_by(true).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((held_by(false).await, held_by(true).await), (1, 0), "the process holds the partitions");
    for n in 0..6 {
        t.publish(Topic::DeadLetters, &Uuid::now_v7().to_string(), dead(n)).await.unwrap();
    }
    let drained = |min: usize| {
        let out = out.clone();
        async move {
            for _ in 0..600 {
                let lines = std::fs::read_to_string(&out).map(|s| s.lines().count()).unwrap_or(0);
                if lines >= min {
                    return lines;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("the drain did not write {min} lines");
        }
    };
    assert_eq!(drained(6).await, 6);
    // Give its offsets time to be stored (every 200 ms), then kill it: its leases stay held.
    tokio::time::sleep(Duration::from_millis(600)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for n in 6..12 {
        t.publish(Topic::DeadLetters, &Uuid::now_v7().to_string(), dead(n)).await.unwrap();
    }

    // The second instance gets what was published after the kill, once the leases expired, and
    // not what the first one finished.
    let started = std::time::Instant::now();
    let mut stream = t.subscribe("dead-letters", Topic::DeadLetters).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 6 {
        let d = next_delivery(&mut stream).await;
        got.push(Envelope::decode(&d.payload).unwrap().trace_id.parse::<usize>().unwrap());
        d.acker.ack().await.unwrap();
    }
    let took = started.elapsed();
    got.sort();
    assert_eq!(got, (6..12).collect::<Vec<_>>(), "what the killed instance had not finished, once");
    assert!(
        tokio::time::timeout(Duration::from_secs(2), stream.next()).await.is_err(),
        "nothing more: the killed instance's finished offsets were stored"
    );
    eprintln!("partitions taken over, first messages after {took:?}");
    drop(stream);
    std::fs::remove_file(&out).ok();
}

/// Kafka offsets in PostgreSQL are stored only by the instance that holds the partition: one
/// that lost it (its lease expired and another took it) while it was still handling a message
/// must not move the new holder's offset (it moved it past what the new holder had not read).
#[tokio::test]
async fn kafka_offsets_are_stored_only_by_the_partitions_holder() {
    use ecommerce_platform::broker::kafka_leases::Leases;
    let c = config(Setup(BrokerKind::Kafka, KafkaOffsets::Postgres));
    let _ = connect(&c).await; // migrates the offsets database
    let pool = sqlx::PgPool::connect(OFFSETS_DATABASE).await.unwrap();
    let consumer = format!("{}.leases", c.broker.namespace);
    let old = Leases::new(pool.clone(), consumer.clone(), "t".into(), 1);
    old.join().await.unwrap();
    assert_eq!(old.beat().await.unwrap(), vec![(0, None)], "the first instance takes the partition");
    // Its lease runs out (a long pause), and another instance takes the partition.
    sqlx::query("UPDATE kafka_partitions SET lease_until = now() - interval '1 second' WHERE consumer = $1")
        .bind(&consumer)
        .execute(&pool)
        .await
        .unwrap();
    let new = Leases::new(pool.clone(), consumer.clone(), "t".into(), 1);
    assert_eq!(new.beat().await.unwrap(), vec![(0, None)], "the second takes it over");
    new.save(&[(0, 3)]).await.unwrap();
    old.save(&[(0, 10)]).await.unwrap();
    let next: Option<i64> =
        sqlx::query_scalar("SELECT next_offset FROM kafka_partitions WHERE consumer = $1")
            .bind(&consumer)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(next, Some(3), "the instance that lost the partition stored nothing");
}

/// The offsets Kafka holds for `group` on `topic` (partition, next offset), where it holds any.
fn group_committed(group: &str, topic: &str) -> Vec<(i32, i64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:9092")
        .set("group.id", group)
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        tpl.add_partition(topic, p.id());
    }
    match consumer.committed_offsets(tpl, Duration::from_secs(10)) {
        Ok(list) => list
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Moving from `KAFKA_OFFSETS=broker` to `postgres`: with `KAFKA_OFFSETS_START=group` a partition
/// with no stored offset starts where the consumer group left off; it started at the beginning,
/// so the whole topic was read again.
#[tokio::test]
async fn kafka_partitions_without_a_stored_offset_can_start_where_the_group_left_off() {
    let broker_kept = config(Setup(BrokerKind::Kafka, KafkaOffsets::Broker));
    let t = connect(&broker_kept).await;
    let saga = Uuid::now_v7();
    publish_n(t.as_ref(), saga, 0..5).await;
    assert_eq!(read(t.as_ref(), "moving", 5, |_| true).await, (0..5).collect::<Vec<_>>());
    // The group's offsets are committed shortly after the acks.
    let group = format!("{}.moving", broker_kept.broker.namespace);
    let topic = format!("{}.{}", broker_kept.broker.namespace, Topic::StockCommands.as_str());
    let started = std::time::Instant::now();
    while group_committed(&group, &topic).iter().map(|(_, o)| o).sum::<i64>() < 5 {
        assert!(started.elapsed() < Duration::from_secs(60), "the group committed nothing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    publish_n(t.as_ref(), saga, 5..8).await;

    let mut moved = broker_kept.clone();
    moved.broker.kafka_offsets = KafkaOffsets::Postgres;
    moved.broker.kafka_offsets_start = ecommerce_platform::config::KafkaOffsetsStart::Group;
    let t = connect(&moved).await;
    assert_eq!(read(t.as_ref(), "moving", 3, |_| true).await, vec![5, 6, 7], "where the group left off");
}

/// The path of the running nsqd's binary (`scripts/services.sh up` started it, however it was
/// installed).
fn nsqd_binary() -> std::path::PathBuf {
    let out = std::process::Command::new("pgrep").args(["-x", "nsqd"]).output().expect("pgrep runs");
    let pid = String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string);
    let pid = pid.expect("nsqd is running (scripts/services.sh up)");
    std::fs::read_link(format!("/proc/{pid}/exe")).expect("nsqd's binary")
}

/// NSQ with authentication: an nsqd that asks its auth server (`--auth-http-address`) about
/// every connection takes the secret the server grants (`NSQ_AUTH_SECRET`), and refuses a wrong
/// one or none, before anything is published.
#[tokio::test]
async fn nsq_connects_with_the_secret_its_auth_server_grants() {
    use axum::extract::Query;
    use axum::http::StatusCode;
    use axum::Json;
    // The auth server: one secret, granted every topic of the namespace's.
    async fn auth(Query(q): Query<HashMap<String, String>>) -> Result<Json<serde_json::Value>, StatusCode> {
        if q.get("secret").map(String::as_str) != Some("s3cret-nsq") {
            return Err(StatusCode::FORBIDDEN);
        }
        Ok(Json(serde_json::json!({
            "ttl": 3600,
            "identity": "ecommerce_saga",
            "authorizations": [{ "topic": "^c_.*", "channels": [".*"], "permissions": ["subscribe", "publish"] }],
        })))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let auth_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().route("/auth", axum::routing::get(auth))).await.unwrap()
    });
    let port = |_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (tcp, http) = (port(()), port(()));
    let data = std::env::temp_dir().join(format!("nsqd-auth-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&data).unwrap();
    let mut nsqd = tokio::process::Command::new(nsqd_binary())
        .arg(format!("--tcp-address=127.0.0.1:{tcp}"))
        .arg(format!("--http-address=127.0.0.1:{http}"))
        .arg(format!("--auth-http-address={auth_addr}"))
        .arg(format!("--data-path={}", data.display()))
        .arg("--mem-queue-size=0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nsqd starts");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", tcp)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let with = |secret: Option<&str>| {
        let mut c = config(Setup(BrokerKind::Nsq, KafkaOffsets::Postgres));
        c.broker.nsqd_tcp_addresses = vec![format!("127.0.0.1:{tcp}")];
        c.broker.nsqd_http_addresses = vec![format!("127.0.0.1:{http}")];
        c.broker.nsq_auth_secret = secret.map(|s| s.to_string().into());
        c
    };
    let refused = |c: Config| async move {
        match broker::connect(&c).await {
            Ok(_) => panic!("connected"),
            Err(e) => e.to_string(),
        }
    };
    let none = refused(with(None)).await;
    assert!(none.contains("auth_required") && none.contains("NSQ_AUTH_SECRET"), "{none}");
    let wrong = refused(with(Some("guessed"))).await;
    assert!(wrong.contains("E_AUTH_FAILED"), "{wrong}");

    let c = with(Some("s3cret-nsq"));
    let t = connect(&c).await;
    let mut deliveries = t.subscribe("stock-worker", Topic::StockCommands).await.unwrap();
    let saga = Uuid::now_v7();
    publish_n(t.as_ref(), saga, 0..3).await;
    let mut got = Vec::new();
    while got.len() < 3 {
        let d = next_delivery(&mut deliveries).await;
        got.push(Envelope::decode(&d.payload).unwrap().trace_id.parse::<usize>().unwrap());
        d.acker.ack().await.unwrap();
    }
    got.sort();
    assert_eq!(got, [0, 1, 2]);
    drop(deliveries);
    t.destroy().await.unwrap();
    nsqd.kill().await.unwrap();
    std::fs::remove_dir_all(&data).ok();
}

/// NSQ keeps a channel, and every live update published after it, until somebody deletes it: a
/// broadcast subscriber's channel goes when the subscription ends, and the channel of a process
/// that died without ending it goes at the second sweep that finds no client on it. A live
/// subscriber's channel stays.
#[tokio::test]
async fn nsq_broadcast_channels_end_with_their_subscriber_or_are_swept() {
    use ecommerce_platform::broker::nsq::NsqTransport;
    let c = config(Setup(BrokerKind::Nsq, KafkaOffsets::Postgres));
    let b = &c.broker;
    let t =
        NsqTransport::connect(&b.nsqd_tcp_addresses, &b.nsqd_http_addresses, None, &b.namespace, b.ack_wait)
            .await
            .expect("nsqd reachable (scripts/services.sh up)");
    let (topic, http) = (format!("{}.evt.saga", b.namespace), b.nsqd_http_addresses[0].clone());
    let http_client = reqwest::Client::new();
    let channels = || {
        let (url, client) = (format!("http://{http}/stats?format=json&topic={topic}"), http_client.clone());
        let topic = topic.clone();
        async move {
            let stats: serde_json::Value = client.get(url).send().await.unwrap().json().await.unwrap();
            let mut names: Vec<String> = stats["topics"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["topic_name"] == *topic)
                .flat_map(|t| t["channels"].as_array().unwrap().iter())
                .map(|ch| ch["channel_name"].as_str().unwrap().to_string())
                .collect();
            names.sort();
            names
        }
    };
    let live = t.subscribe_broadcast(Topic::SagaChanges).await.unwrap();
    let ended = t.subscribe_broadcast(Topic::SagaChanges).await.unwrap();
    assert_eq!(channels().await.len(), 2);
    drop(ended);
    let mut left = channels().await;
    for _ in 0..100 {
        if left.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = channels().await;
    }
    assert_eq!(left.len(), 1, "the ended subscription's channel is deleted: {left:?}");
    // A killed process's channel: created, then its client gone without deleting it.
    let orphan = format!("b{}", Uuid::new_v4().simple());
    let created = http_client
        .post(format!("http://{http}/channel/create?topic={topic}&channel={orphan}"))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    // A consumer's channel (not a broadcast one) is never swept.
    let consumer = "projector".to_string();
    http_client
        .post(format!("http://{http}/channel/create?topic={topic}&channel={consumer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(t.sweep().await.unwrap(), Vec::<String>::new(), "one sweep is not enough");
    assert_eq!(t.sweep().await.unwrap(), vec![orphan.clone()]);
    let mut expected = vec![left[0].clone(), consumer];
    expected.sort();
    assert_eq!(channels().await, expected, "the live subscriber's channel and the consumer's stay");
    drop(live);
    t.destroy().await.unwrap();
}
