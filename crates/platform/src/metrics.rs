//! Prometheus metrics of every role, at `GET /metrics` (OpenMetrics text): on the API's port, and
//! on `ORCHESTRATOR_METRICS_ADDR` / `WORKERS_METRICS_ADDR` for the separate binaries.
//!
//! What a process does (GraphQL requests, messages consumed, saga transitions, step latencies) is
//! counted as it happens, in that process. Saga and outbox totals are read from PostgreSQL when
//! scraped, so every process reports the same whole-system numbers for them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sqlx::{PgPool, Row};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SagaLabels {
    status: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    /// `ORDER_PLACED`, `STOCK_RESERVED`, ..., `COMPLETED`, `COMPENSATED`.
    event: String,
    /// The saga's failure reason once it has one (`OUT_OF_STOCK`, ...), else empty.
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    /// The command the reply answers: `RESERVE_STOCK`, `VOID_PAYMENT`, ...
    command: String,
    /// The reply: `STOCK_RESERVED`, `PAYMENT_DECLINED`, ...
    reply: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    /// Why the server ended a subscription connection (`client` when the client did).
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    /// `stripe`.
    provider: String,
    /// `replied` (the saga was answered), `recorded`, `duplicate`, `refused` (bad signature).
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RepairLabels {
    /// `RETRY_STEP`, `RESUME`, `FORCE_COMPENSATE`, `FORCE_COMPLETE`.
    action: String,
    /// `applied`, `replayed` (same idempotency key), `refused` (CONFLICT), `failed`.
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    consumer: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    consumer: String,
    /// `ok`, `failed` (redelivered later), `unavailable` (a store or the broker was out of reach:
    /// redelivered later, not counted towards dead-lettering), `dead_lettered`, `unreadable`
    /// (dead-lettered at once), `too_new` (left for a newer consumer); `new` / `duplicate` (inbox).
    outcome: String,
}

/// Counts of messages a consumer handled and of duplicates it skipped (read by tests and by [`Metrics`], which exports them per consumer).
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub handled: AtomicU64,
    pub duplicates: AtomicU64,
}

impl ConsumerStats {
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }
}

/// Distinct operation names kept as labels; later ones are counted as `other`.
const MAX_OPERATIONS: usize = 100;

pub struct Metrics {
    registry: Registry,
    graphql: Family<OperationLabels, Histogram>,
    operations: Mutex<HashSet<String>>,
    sagas: Family<SagaLabels, Gauge>,
    outbox_pending: Gauge,
    outbox_oldest: Gauge<f64, std::sync::atomic::AtomicU64>,
    saga_events: Family<EventLabels, Counter>,
    step_duration: Family<StepLabels, Histogram>,
    message_age: Family<ConsumerLabels, Histogram>,
    message_versions: Family<VersionLabels, Counter>,
    handle_duration: Family<OutcomeLabels, Histogram>,
    messages: Family<OutcomeLabels, Counter>,
    repairs: Family<RepairLabels, Counter>,
    webhooks: Family<WebhookLabels, Counter>,
    live_updates: Counter,
    ws_open: Gauge,
    ws_closed: Family<CloseLabels, Counter>,
    retention_deleted: Family<TableLabels, Counter>,
    inbox_retention: Gauge,
    /// Inbox counts of consumers, copied into `messages` at scrape.
    consumers: Mutex<Vec<(String, Arc<ConsumerStats>)>>,
}

fn latency_buckets() -> Histogram {
    // 1 ms .. ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ecommerce_saga");
        let graphql = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        registry.register(
            "graphql_request_duration_seconds",
            "GraphQL requests by operation name (`anonymous` when unnamed)",
            graphql.clone(),
        );
        let sagas = Family::<SagaLabels, Gauge>::default();
        registry.register(
            "sagas",
            "Unfinished sagas (running, compensating, waiting for an operator) by status and failure reason; finished ones are counted by saga_events_total",
            sagas.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "outbox_pending",
            "Messages committed but not yet published",
            outbox_pending.clone(),
        );
        let outbox_oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest unpublished message (outbox lag)",
            outbox_oldest.clone(),
        );
        let saga_events = Family::<EventLabels, Counter>::default();
        registry.register(
            "saga_events",
            "Saga history events this process recorded (COMPLETED and COMPENSATED count finished sagas), with the failure reason",
            saga_events.clone(),
        );
        let step_duration = Family::<StepLabels, Histogram>::new_with_constructor(latency_buckets);
        registry.register(
            "saga_step_duration_seconds",
            "From sending a step's command (its latest attempt) to handling its reply, by command and reply",
            step_duration.clone(),
        );
        let message_age = Family::<ConsumerLabels, Histogram>::new_with_constructor(latency_buckets);
        registry.register(
            "consumer_message_age_seconds",
            "Consumer lag: age of a message (since written to the outbox) when its consumer starts handling it",
            message_age.clone(),
        );
        let message_versions = Family::<VersionLabels, Counter>::default();
        registry.register(
            "consumer_message_versions",
            "Messages a consumer read, by the format version they were written in (a rolling upgrade is \
             over for the messages once no older version is read)",
            message_versions.clone(),
        );
        let handle_duration = Family::<OutcomeLabels, Histogram>::new_with_constructor(latency_buckets);
        registry.register(
            "consumer_handle_duration_seconds",
            "Time a consumer spent handling a message, by outcome",
            handle_duration.clone(),
        );
        let messages = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "consumer_messages",
            "Messages consumed, by outcome: ok, failed, dead_lettered, unreadable (no version of the \
             code reads it: dead-lettered at once), too_new (left for a newer consumer); and, from the \
             inbox, new or duplicate",
            messages.clone(),
        );
        let repairs = Family::<RepairLabels, Counter>::default();
        registry.register(
            "saga_repairs",
            "Operator actions on sagas, by action and outcome (applied, replayed, refused, failed)",
            repairs.clone(),
        );
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_events",
            "Payment provider webhook deliveries, by provider and outcome (replied, recorded, duplicate, refused)",
            webhooks.clone(),
        );
        let live_updates = Counter::default();
        registry.register(
            "live_updates_received",
            "Saga change notices this API instance received from the broker (they wake live subscriptions)",
            live_updates.clone(),
        );
        let ws_open = Gauge::default();
        registry.register(
            "websocket_connections",
            "Subscription connections (graphql-ws) open on this API instance",
            ws_open.clone(),
        );
        let ws_closed = Family::<CloseLabels, Counter>::default();
        registry.register(
            "websocket_connections_closed",
            "Subscription connections ended, by reason: client, init_timeout, no_pong, not_reading, \
             too_many_connections, refused (a bad token at connection_init), session_ended (token \
             expired, logout, session revoked, operator role revoked), protocol",
            ws_closed.clone(),
        );
        let retention_deleted = Family::<TableLabels, Counter>::default();
        registry.register(
            "retention_deleted_rows",
            "Rows deleted because they are no longer needed, by table (inbox, refresh_tokens, sessions)",
            retention_deleted.clone(),
        );
        let inbox_retention = Gauge::default();
        registry.register(
            "inbox_retention_seconds",
            "How long this process's consumers keep inbox rows (0: for good)",
            inbox_retention.clone(),
        );
        Metrics {
            retention_deleted,
            inbox_retention,
            ws_open,
            ws_closed,
            live_updates,
            repairs,
            webhooks,
            registry,
            graphql,
            operations: Mutex::default(),
            sagas,
            outbox_pending,
            outbox_oldest,
            saga_events,
            step_duration,
            message_age,
            message_versions,
            handle_duration,
            messages,
            consumers: Mutex::default(),
        }
    }

    /// Counts the events of a committed transition.
    pub fn saga_events<'a>(&self, events: impl IntoIterator<Item = &'a str>, reason: Option<&str>) {
        for event in events {
            let labels =
                EventLabels { event: event.to_string(), reason: reason.unwrap_or_default().to_string() };
            self.saga_events.get_or_create(&labels).inc();
        }
    }

    /// A reply handled `seconds` after its command was sent.
    pub fn step_duration(&self, command: &str, reply: &str, seconds: f64) {
        let labels = StepLabels { command: command.to_string(), reply: reply.to_string() };
        self.step_duration.get_or_create(&labels).observe(seconds.max(0.0));
    }

    /// A consumer started handling a message `age_seconds` after it was written.
    pub fn message_age(&self, consumer: &str, age_seconds: f64) {
        let labels = ConsumerLabels { consumer: consumer.to_string() };
        self.message_age.get_or_create(&labels).observe(age_seconds.max(0.0));
    }

    /// A consumer read a message written in format `version`.
    pub fn message_version(&self, consumer: &str, version: u16) {
        let labels = VersionLabels { consumer: consumer.to_string(), version: version.to_string() };
        self.message_versions.get_or_create(&labels).inc();
    }

    /// How many messages of format `version` `consumer` read.
    pub fn messages_of_version(&self, consumer: &str, version: u16) -> u64 {
        let labels = VersionLabels { consumer: consumer.to_string(), version: version.to_string() };
        self.message_versions.get_or_create(&labels).get()
    }

    /// How many messages `consumer` finished with `outcome`.
    pub fn messages_with_outcome(&self, consumer: &str, outcome: &str) -> u64 {
        let labels = OutcomeLabels { consumer: consumer.to_string(), outcome: outcome.to_string() };
        self.messages.get_or_create(&labels).get()
    }

    /// A consumer finished with a message: `ok`, `failed`, `dead_lettered`, `unreadable`, `too_new`.
    pub fn message_handled(&self, consumer: &str, outcome: &'static str, seconds: f64) {
        let labels = OutcomeLabels { consumer: consumer.to_string(), outcome: outcome.to_string() };
        self.handle_duration.get_or_create(&labels).observe(seconds);
        self.messages.get_or_create(&labels).inc();
    }

    /// A saga change notice arrived from the broker.
    pub fn live_update(&self) {
        self.live_updates.inc();
    }

    /// Saga change notices received so far.
    pub fn live_updates(&self) -> u64 {
        self.live_updates.get()
    }

    /// An operator action's outcome.
    pub fn saga_repair(&self, action: &str, outcome: &str) {
        let labels = RepairLabels { action: action.to_string(), outcome: outcome.to_string() };
        self.repairs.get_or_create(&labels).inc();
    }

    /// A webhook delivery's outcome.
    pub fn webhook(&self, provider: &str, outcome: &str) {
        let labels = WebhookLabels { provider: provider.to_string(), outcome: outcome.to_string() };
        self.webhooks.get_or_create(&labels).inc();
    }

    /// Rows of `table` deleted by retention.
    pub fn retention_deleted(&self, table: &str, rows: u64) {
        self.retention_deleted.get_or_create(&TableLabels { table: table.to_string() }).inc_by(rows);
    }

    /// How many rows of `table` retention deleted.
    pub fn retention_deleted_of(&self, table: &str) -> u64 {
        self.retention_deleted.get_or_create(&TableLabels { table: table.to_string() }).get()
    }

    /// How long inbox rows are kept.
    pub fn inbox_retention(&self, keep: Duration) {
        self.inbox_retention.set(keep.as_secs() as i64);
    }

    /// A subscription connection opened.
    pub fn ws_opened(&self) {
        self.ws_open.inc();
    }

    /// A subscription connection ended, for `reason`.
    pub fn ws_closed(&self, reason: &str) {
        self.ws_open.dec();
        self.ws_closed.get_or_create(&CloseLabels { reason: reason.to_string() }).inc();
    }

    /// How many subscription connections ended for `reason`.
    pub fn ws_closed_for(&self, reason: &str) -> u64 {
        self.ws_closed.get_or_create(&CloseLabels { reason: reason.to_string() }).get()
    }

    /// Reports `stats` (new and duplicate messages, as the inbox decided) under `consumer`.
    pub fn track_consumer(&self, consumer: &str, stats: Arc<ConsumerStats>) {
        self.consumers.lock().expect("consumers").push((consumer.to_string(), stats));
    }

    /// Records one GraphQL request. Client-chosen names are labels only while there are few.
    pub fn observe_graphql(&self, operation: Option<&str>, seconds: f64) {
        let name = match operation {
            None => "anonymous".to_string(),
            Some(op) if op.len() <= 64 && op.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                let mut seen = self.operations.lock().expect("operations");
                if seen.contains(op) || seen.len() < MAX_OPERATIONS {
                    seen.insert(op.to_string());
                    op.to_string()
                } else {
                    "other".to_string()
                }
            }
            Some(_) => "other".to_string(),
        };
        self.graphql.get_or_create(&OperationLabels { operation: name }).observe(seconds);
    }

    /// The metrics as OpenMetrics text, with saga and outbox figures read now (what a scrape
    /// reads costs as much as the sagas in flight, however many have finished).
    pub async fn render(&self, pool: &PgPool) -> Result<String, sqlx::Error> {
        let rows = sqlx::query(UNFINISHED_SAGAS).fetch_all(pool).await?;
        self.sagas.clear();
        for r in &rows {
            let labels = SagaLabels { status: r.get("status"), reason: r.get("reason") };
            self.sagas.get_or_create(&labels).set(r.get::<i64, _>("n"));
        }
        let outbox = sqlx::query(
            "SELECT count(*) AS n,
                    coalesce(EXTRACT(EPOCH FROM now() - min(available_at) FILTER (WHERE available_at <= now())), 0)::float8 AS age
             FROM outbox",
        )
        .fetch_one(pool)
        .await?;
        self.outbox_pending.set(outbox.get::<i64, _>("n"));
        self.outbox_oldest.set(outbox.get::<f64, _>("age"));
        for (consumer, stats) in self.consumers.lock().expect("consumers").iter() {
            for (outcome, now) in [("new", stats.handled()), ("duplicate", stats.duplicates())] {
                let labels = OutcomeLabels { consumer: consumer.clone(), outcome: outcome.to_string() };
                let counter = self.messages.get_or_create(&labels);
                counter.inc_by(now.saturating_sub(counter.get()));
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        Ok(out)
    }
}

/// The sagas gauge's query: only unfinished sagas, found through the `(status, updated_at)`
/// index, so a scrape reads as many rows as are in flight however many sagas have finished (it
/// was a `GROUP BY` over every saga).
pub const UNFINISHED_SAGAS: &str =
    "SELECT status, coalesce(failure_reason, '') AS reason, count(*) AS n FROM sagas
     WHERE status IN ('RUNNING', 'COMPENSATING', 'NEEDS_ATTENTION') GROUP BY 1, 2";

/// The metrics as an OpenMetrics response; 503 when the database gauges cannot be read.
pub async fn response(metrics: &Metrics, pool: &PgPool) -> Response {
    match metrics.render(pool).await {
        Ok(text) => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics unavailable");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// `/metrics`, `/healthz` (the process runs) and `/readyz` (PostgreSQL and the broker answer),
/// for the roles that serve no API (orchestrator, workers).
pub fn router(metrics: Arc<Metrics>, pool: PgPool, transport: Arc<dyn crate::broker::Transport>) -> Router {
    let ready_pool = pool.clone();
    Router::new()
        .route("/metrics", get(move || async move { response(&metrics, &pool).await }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(move || async move { readiness(&ready_pool, transport.as_ref()).await }))
}

/// 200 when PostgreSQL and the broker each answer within 2 s, else 503; the body says which.
async fn readiness(pool: &PgPool, transport: &dyn crate::broker::Transport) -> Response {
    let pg = within(async { sqlx::query("SELECT 1").execute(pool).await.map(|_| ()) }).await;
    let broker = within(transport.health()).await;
    ready(&[("postgres", pg), ("broker", broker)])
}

/// Runs a readiness check, as good as failed when it does not answer within 2 s.
pub async fn within<E: ToString>(f: impl std::future::Future<Output = Result<(), E>>) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(2), f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("no answer within 2 s".into()),
    }
}

/// The readiness answer: 200 when every check passed, else 503. The body names each dependency
/// with `ok` or `unavailable` only; what failed and why goes to the log, never to the caller.
pub fn ready(checks: &[(&str, Result<(), String>)]) -> Response {
    let mut body = serde_json::Map::new();
    for (name, result) in checks {
        if let Err(e) = result {
            tracing::warn!(dependency = name, error = %e, "not ready");
        }
        let state = if result.is_ok() { "ok" } else { "unavailable" };
        body.insert(name.to_string(), serde_json::Value::from(state));
    }
    let status = match checks.iter().all(|(_, r)| r.is_ok()) {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, axum::Json(serde_json::Value::Object(body))).into_response()
}
