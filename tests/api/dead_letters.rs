//! Dead letters: a message its consumer gave up on waits in the dead-letter topic; once the cause
//! is fixed, `api dead-letters replay` (or `drain` to a file, then `replay --from` it) sends it
//! back and its saga finishes, with one effect. The commands run as the operator runs them (the
//! `api` binary against the test's broker namespace), except on the in-process transport, which
//! no other process can reach: there the test calls the same functions.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use ecommerce_platform::broker::Topic;
use ecommerce_platform::config::{BrokerKind, ExposeSecret};
use ecommerce_platform::dead_letters::{self, Record, Take};
use serde_json::Value;

use crate::helpers::{db_id, spawn_app_with, TestApp};

/// Makes the stock worker fail every reservation (a fault in its database, as a bad migration
/// or a full disk would), counting the attempts in a sequence (which a rollback does not undo).
async fn break_reservations(app: &TestApp) {
    for sql in [
        "CREATE SEQUENCE refused_reservations",
        "CREATE FUNCTION refuse_reservation() RETURNS trigger AS $$
         BEGIN PERFORM nextval('refused_reservations'); RAISE EXCEPTION 'simulated fault'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER refuse_reservation BEFORE INSERT ON stock_reservations
         FOR EACH ROW EXECUTE FUNCTION refuse_reservation()",
    ] {
        sqlx::query(sql).execute(app.pool()).await.unwrap();
    }
}

async fn fix_reservations(app: &TestApp) {
    sqlx::query("DROP TRIGGER refuse_reservation ON stock_reservations").execute(app.pool()).await.unwrap();
}

/// Waits until the stock worker failed a reservation `n` times and dead-lettered it.
async fn wait_dead_lettered(app: &TestApp, n: i64) {
    for _ in 0..600 {
        let refused: i64 = sqlx::query_scalar(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM refused_reservations",
        )
        .fetch_one(app.pool())
        .await
        .unwrap();
        if refused >= n && app.worker_metrics.messages_with_outcome("stock-worker", "dead_lettered") >= 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the reservation was not dead-lettered within a minute");
}

/// Runs `api dead-letters <args>` against the app's broker; returns the JSON lines it printed.
async fn command(app: &TestApp, args: &[&str]) -> Vec<Record> {
    let config = app.config();
    let out = if config.broker.kind == BrokerKind::Memory {
        let mut out = Vec::new();
        let take = Take { idle: Duration::from_secs(10), limit: Some(1) };
        let t = app.services.transport.as_ref();
        match args {
            ["replay"] => dead_letters::replay(t, take, &mut out).await.unwrap(),
            ["drain", "--to", path] => {
                let mut file = std::fs::File::create(path).unwrap();
                dead_letters::drain(t, take, &mut file).await.unwrap()
            }
            ["replay", "--from", path] => {
                let mut input = std::io::BufReader::new(std::fs::File::open(path).unwrap());
                dead_letters::replay_from(t, &mut input, &mut out).await.unwrap()
            }
            other => panic!("no such command in this test: {other:?}"),
        };
        out
    } else {
        let broker = match config.broker.kind {
            BrokerKind::Nats => "nats",
            BrokerKind::RabbitMq => "rabbitmq",
            BrokerKind::Kafka => "kafka",
            BrokerKind::Nsq => "nsq",
            BrokerKind::Memory => unreachable!(),
        };
        let mut full: Vec<&str> = vec!["dead-letters"];
        full.extend_from_slice(args);
        if !args.contains(&"--from") {
            full.extend_from_slice(&["--limit", "1", "--idle-ms", "10000"]);
        }
        let output = tokio::task::spawn_blocking({
            let (namespace, full) =
                (config.broker.namespace.clone(), full.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            let broker = broker.to_string();
            // Kafka consumers keep their offsets in the database (KAFKA_OFFSETS=postgres).
            let database = config.postgres.url.expose_secret().to_string();
            move || {
                Command::new(env!("CARGO_BIN_EXE_api"))
                    .args(&full)
                    .env("BROKER", broker)
                    .env("BROKER_NAMESPACE", namespace)
                    .env("DATABASE_URL", database)
                    .output()
                    .expect("api runs")
            }
        })
        .await
        .unwrap();
        assert!(output.status.success(), "api {full:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    };
    String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

#[tokio::test]
async fn a_dead_letter_replayed_once_its_cause_is_fixed_finishes_its_saga_with_one_effect() {
    let app = spawn_app_with(|c| c.broker.max_deliveries = 2).await;
    break_reservations(&app).await;
    let stock = app.stock("MUG-001").await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let id = app.place(&buyer, "dead-letter", "tok_visa").await;
    wait_dead_lettered(&app, 2).await;
    assert_eq!(app.order(&buyer, &id).await["data"]["order"]["status"], "PENDING", "the saga waits");

    fix_reservations(&app).await;
    let printed = command(&app, &["replay"]).await;
    assert_eq!(printed.len(), 1, "{printed:?}");
    assert_eq!(printed[0].action, "replayed");
    assert_eq!(printed[0].kind.as_deref(), Some("RESERVE_STOCK"));
    assert_eq!(printed[0].order_id, Some(db_id(&id)));
    assert_eq!(printed[0].topic.as_deref(), Some(Topic::StockCommands.as_str()));

    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(app.stock("MUG-001").await, stock - 1, "reserved once");
    app.stop().await;
}

#[tokio::test]
async fn dead_letters_drained_to_a_file_can_be_replayed_from_it() {
    let app = spawn_app_with(|c| c.broker.max_deliveries = 2).await;
    break_reservations(&app).await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "PEN-004", 2).await;
    let id = app.place(&buyer, "drained", "tok_visa").await;
    wait_dead_lettered(&app, 2).await;

    let dir = std::env::temp_dir().join(format!("dead-letters-{}", app.database()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("letters.jsonl");
    let path = file.to_str().unwrap();
    let drained = command(&app, &["drain", "--to", path]).await;
    assert!(drained.is_empty(), "drain writes to the file, not standard output: {drained:?}");
    let lines: Vec<Record> =
        std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].action, "drained");
    let message: &Value = lines[0].message.as_ref().expect("the message itself");
    assert_eq!(message["body"]["command"], "RESERVE_STOCK");

    fix_reservations(&app).await;
    let replayed = command(&app, &["replay", "--from", path]).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].action, "replayed");
    let order = app.wait_terminal(&buyer, &id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    std::fs::remove_dir_all(&dir).ok();
    app.stop().await;
}

#[tokio::test]
async fn a_message_no_version_can_read_is_dead_lettered_not_dropped_and_stays_on_replay() {
    let app = spawn_app_with(|c| c.broker.max_deliveries = 2).await;
    let t = app.services.transport.clone();
    t.publish(Topic::StockCommands, "k", Bytes::from_static(b"not a message")).await.unwrap();
    for _ in 0..600 {
        if app.worker_metrics.messages_with_outcome("stock-worker", "unreadable") >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.worker_metrics.messages_with_outcome("stock-worker", "unreadable"), 1);

    let take = Take { idle: Duration::from_secs(10), limit: Some(1) };
    let mut out = Vec::new();
    let summary = dead_letters::replay(t.as_ref(), take, &mut out).await.unwrap();
    assert_eq!((summary.replayed, summary.kept), (0, 1), "nowhere to replay it: it stays");
    let record: Record = serde_json::from_slice(out.trim_ascii_end()).unwrap();
    assert_eq!(
        (record.action.as_str(), record.hex.as_deref()),
        ("kept", Some(hex(b"not a message").as_str()))
    );

    // Still there: drained now.
    let mut out = Vec::new();
    let summary = dead_letters::drain(t.as_ref(), take, &mut out).await.unwrap();
    assert_eq!(summary.drained, 1);
    app.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
