//! Typed configuration, read from the environment. `.env.example` lists every variable with its default.

use std::net::SocketAddr;
use std::time::Duration;

pub use secrecy::{ExposeSecret, SecretString};

use clap::{ArgAction, CommandFactory, FromArgMatches};
use ecommerce_core::saga::definition::{SagaDefinition, SagaTiming};

#[derive(Debug, thiserror::Error)]
#[error("invalid value for {name}: {value:?} ({why})")]
pub struct ConfigError {
    /// The environment variable.
    pub name: String,
    pub value: String,
    pub why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokerKind {
    Nats,
    #[value(name = "rabbitmq")]
    RabbitMq,
    Kafka,
    Nsq,
    /// In-process queues: every role in one process (`api all`), nothing durable.
    Memory,
}

impl BrokerKind {
    pub fn parse(s: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(s, false).ok()
    }
}

/// Where Kafka consumers keep their offsets, and how a consumer's instances split partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KafkaOffsets {
    /// In PostgreSQL, with partitions shared through leases there: no consumer group, so a
    /// restarted or replaced instance does not wait for the broker's group coordinator.
    Postgres,
    /// In the broker's consumer groups.
    Broker,
}

/// Where a Kafka partition without a stored offset (`KAFKA_OFFSETS=postgres`) starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KafkaOffsetsStart {
    /// At its first message.
    Beginning,
    /// At the offset the consumer group committed (`KAFKA_OFFSETS=broker` kept them there), else
    /// at its first message: for the first start after moving from broker-kept offsets, so that
    /// the topic is not read again from the beginning. Asks the group coordinator once per such
    /// partition.
    Group,
}

/// How Kafka clients reach the brokers (`KAFKA_SECURITY_PROTOCOL`, librdkafka's
/// `security.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KafkaSecurityProtocol {
    /// No authentication, no encryption: anything on the network can publish. Development only.
    Plaintext,
    /// TLS without a client identity. Development only: it does not say who publishes.
    Ssl,
    /// SASL (`KAFKA_SASL_MECHANISM`) without TLS.
    #[value(name = "sasl_plaintext")]
    SaslPlaintext,
    /// SASL over TLS: the production setting.
    #[value(name = "sasl_ssl")]
    SaslSsl,
}

impl KafkaSecurityProtocol {
    /// librdkafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

/// The SASL mechanism of Kafka clients (`KAFKA_SASL_MECHANISM`, librdkafka's `sasl.mechanisms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KafkaSaslMechanism {
    /// The password never crosses the network.
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    /// The password crosses the network as it is: only over TLS (`sasl_ssl`).
    #[value(name = "PLAIN")]
    Plain,
}

impl KafkaSaslMechanism {
    /// librdkafka's (and Kafka's) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::Plain => "PLAIN",
        }
    }
}

/// How Kafka clients authenticate to the brokers and encrypt the connection.
#[derive(Debug, Clone)]
pub struct KafkaSecurity {
    pub protocol: KafkaSecurityProtocol,
    pub sasl_mechanism: KafkaSaslMechanism,
    /// The deployment's own Kafka user (with SASL).
    pub sasl_username: String,
    pub sasl_password: SecretString,
    /// PEM file of the certificate authorities that sign the brokers' certificates (with TLS);
    /// `None`: the system's.
    pub ssl_ca_location: Option<String>,
}

/// The payment provider the payment worker talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PaymentGatewayKind {
    /// The deterministic built-in gateway: the payment token decides the outcome (no money moves).
    Test,
    /// Stripe's PaymentIntents API at `STRIPE_API_BASE`, with `STRIPE_SECRET_KEY`.
    Stripe,
}

/// Where the service runs; decides the defaults of the development conveniences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AppEnv {
    Development,
    Production,
}

/// Abuse limits on the account endpoints: fixed windows shared by every API instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub window: Duration,
    /// Login attempts per e-mail address (existing or not) per window.
    pub login_per_account: u32,
    /// Login attempts per client address per window.
    pub login_per_address: u32,
    /// Registrations per client address per window.
    pub register_per_address: u32,
    /// `placeOrder` calls per signed-in user per window.
    pub place_order_per_user: u32,
    /// Cart mutations per signed-in user per window.
    pub cart_writes_per_user: u32,
    /// Orders of one user still waiting for their checkout to end (PENDING) at once; one more
    /// is refused (`TOO_MANY_OPEN_ORDERS`), so nobody holds the stock of many unpaid orders.
    pub open_orders_per_user: u32,
}

/// Every setting, grouped by who reads it. Secrets (URLs that can carry passwords) are
/// [`SecretString`]s: `Debug` and the logs show `[REDACTED]`; [`redact_url`] describes them.
#[derive(Debug, Clone)]
pub struct Config {
    pub app_env: AppEnv,
    pub postgres: PostgresConfig,
    pub mongo: MongoConfig,
    pub broker: BrokerConfig,
    /// The checkout saga's timing (every role builds the saga definition from it).
    pub saga: SagaTiming,
    pub outbox: OutboxConfig,
    pub consumers: ConsumerConfig,
    pub retention: RetentionConfig,
    pub telemetry: TelemetryConfig,
    pub api: ApiConfig,
    pub orchestrator: OrchestratorConfig,
    pub workers: WorkersConfig,
}

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub url: SecretString,
    pub max_connections: u32,
}

#[derive(Debug, Clone)]
pub struct MongoConfig {
    pub url: SecretString,
    pub database: String,
}

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub kind: BrokerKind,
    /// Prefix of every subject and name of the JetStream stream; lets several deployments (or
    /// tests) share one broker.
    pub namespace: String,
    pub nats_url: SecretString,
    pub rabbitmq_url: SecretString,
    /// Comma-separated `host:port` list.
    pub kafka_brokers: String,
    pub kafka_offsets: KafkaOffsets,
    pub kafka_offsets_start: KafkaOffsetsStart,
    pub kafka_security: KafkaSecurity,
    /// `nsqd` TCP addresses (`host:port`): publishes go to the first that answers, consumers read
    /// from every one.
    pub nsqd_tcp_addresses: Vec<String>,
    /// Their HTTP addresses: live-update channels are deleted there, and tests' topics.
    pub nsqd_http_addresses: Vec<String>,
    /// The secret sent with `AUTH` to an nsqd that requires it (`--auth-http-address`).
    pub nsq_auth_secret: Option<SecretString>,
    /// Deliveries of one message before it is moved to the dead-letter topic.
    pub max_deliveries: u64,
    /// How long a broker waits for an ack before redelivering (NATS).
    pub ack_wait: Duration,
    /// The message format version this process writes: the current one, or during a rolling
    /// upgrade the previous release's (`MESSAGE_WRITE_VERSION`).
    pub write_version: u16,
    pub chaos: ChaosConfig,
}

/// Fault injection (tests and drills only).
#[derive(Debug, Clone, Copy)]
pub struct ChaosConfig {
    /// Publish every message twice.
    pub duplicate: bool,
    /// The duplicate is published after a random delay up to this.
    pub reorder_max: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct OutboxConfig {
    /// How often every role's relay looks for rows no dispatcher published.
    pub poll_interval: Duration,
}

/// What the database stops keeping, and when.
#[derive(Debug, Clone, Copy)]
pub struct RetentionConfig {
    /// How long a consumer keeps the inbox rows of messages it handled.
    pub inbox: InboxRetention,
    /// Expired refresh tokens, and sessions revoked or with every token expired, are deleted
    /// this long after.
    pub sessions: Duration,
    /// Finished sagas' histories (`saga_events`) are deleted this long after the saga finished;
    /// `None`: kept for good.
    pub saga_history: Option<Duration>,
    /// How often each process deletes what it no longer keeps.
    pub interval: Duration,
    /// Rows per `DELETE`, so no statement holds locks long.
    pub batch: i64,
}

/// How long inbox rows are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxRetention {
    /// As long as the broker can still deliver a copy of the message (its configured maximum
    /// message age) and a day more; kept for good when the broker has no such bound.
    Auto,
    /// For good.
    Off,
    /// For this long (it must be longer than the broker keeps messages).
    For(Duration),
}

/// `auto`, `off` or a number of hours.
/// A retention setting of `off` (`None`: kept for good) or a number of days.
#[derive(Debug, Clone, Copy)]
struct DaysOrOff(Option<Duration>);

fn days_or_off(value: &str) -> Result<DaysOrOff, String> {
    match value {
        "off" => Ok(DaysOrOff(None)),
        n => n
            .parse::<u64>()
            .map(|d| DaysOrOff(Some(Duration::from_secs(d.saturating_mul(86_400)))))
            .map_err(|_| "`off` or a number of days".to_string()),
    }
}

/// `current` or a message format version this code can write.
fn write_version(value: &str) -> Result<u16, String> {
    use ecommerce_core::saga::messages::{MESSAGE_VERSION, OLDEST_READ_VERSION};
    if value == "current" {
        return Ok(MESSAGE_VERSION);
    }
    match value.parse::<u16>() {
        Ok(v) if (OLDEST_READ_VERSION..=MESSAGE_VERSION).contains(&v) => Ok(v),
        _ => Err(format!("`current` or a version from {OLDEST_READ_VERSION} to {MESSAGE_VERSION}")),
    }
}

fn inbox_retention(value: &str) -> Result<InboxRetention, String> {
    match value.trim() {
        "auto" => Ok(InboxRetention::Auto),
        "off" => Ok(InboxRetention::Off),
        hours => hours
            .parse::<u64>()
            .ok()
            .filter(|h| *h > 0)
            .map(|h| InboxRetention::For(Duration::from_secs(h * 3600)))
            .ok_or_else(|| format!("`auto`, `off` or a number of hours above 0, not {hours:?}")),
    }
}

/// How the orchestrator and the workers consume.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerConfig {
    /// Messages a consumer without batches handles at once.
    pub concurrency: usize,
    /// Messages a batching consumer takes into one transaction at most (1: no batching).
    pub max_batch: usize,
    /// Batches a batching consumer handles at once.
    pub batches_in_flight: usize,
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// An OpenTelemetry collector (OTLP/HTTP) to export spans to, e.g. `http://127.0.0.1:4318`.
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub addr: SocketAddr,
    /// Where `/metrics` and `/readyz` are served (never on `addr`, which clients reach); `None`
    /// (`off`) for nowhere.
    pub admin_addr: Option<SocketAddr>,
    pub auth: AuthConfig,
    /// Proxies in front of the API that append the address they received a request from to
    /// `X-Forwarded-For`; 0 means the header is ignored.
    pub trusted_proxy_hops: usize,
    pub graphql: GraphqlConfig,
    pub http_body_limit: usize,
    /// How long a client may take to send a request's head (or, on a kept-alive connection, the
    /// next one) before its connection is closed.
    pub header_timeout: Duration,
    /// How long a request may take, its body included, before it is answered 408 (a WebSocket's
    /// upgrade is answered at once; the connection then lives by its own limits).
    pub request_timeout: Duration,
    /// Origins a browser may call the API from (CORS); empty: the API's own origin only, `*`:
    /// any (tokens travel in the `Authorization` header, never in cookies).
    pub cors_allowed_origins: Vec<String>,
    /// gzip for responses when the client accepts it.
    pub compression: bool,
    /// The signing secret of the Stripe webhook endpoint (`POST /webhooks/stripe`, served only
    /// when set).
    pub stripe_webhook_secret: Option<SecretString>,
    /// How far a webhook's signature timestamp may be from now.
    pub stripe_webhook_tolerance: Duration,
    /// How long after placing an order its buyer may ask for a refund (operators: any time).
    pub refund_window: Duration,
    pub websocket: WebSocketConfig,
}

/// Limits on subscriptions over WebSocket (graphql-transport-ws), so that one client cannot
/// exhaust the server.
#[derive(Debug, Clone, Copy)]
pub struct WebSocketConfig {
    /// Subscriptions open at once on one connection; one more is refused with an `error` message
    /// (`TOO_MANY_REQUESTS`) and the connection stays.
    pub max_subscriptions_per_connection: usize,
    /// Connections open at once for one signed-in user (close code 1013, try again later).
    pub max_connections_per_user: usize,
    /// Connections open at once from one client address that are not signed in: waiting for
    /// `connection_init`, or anonymous (close code 1013). A signed-in connection counts under its
    /// user's limit instead, so anonymous connections never crowd out an address's users.
    pub max_connections_per_address: usize,
    /// How long a connection may take to send `connection_init` (close code 4408).
    pub init_timeout: Duration,
    /// How often the server pings; a client that has sent nothing, not even the `pong`, for this
    /// long and [`WebSocketConfig::pong_timeout`] more is closed (4499).
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    /// How long writing one message may wait for a client that does not read; then the
    /// connection is closed (1008) instead of buffering for it.
    pub send_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// How long after a refresh token was spent presenting it again returns the same new refresh
    /// token (two tabs refreshing at once) instead of ending the session; zero: never.
    pub refresh_reuse_grace: Duration,
    /// How stale an API's copy of the signing keys may get: how soon a key rotated by another
    /// instance signs here (tokens under a key not yet seen are verified after a re-read anyway).
    pub signing_keys_refresh: Duration,
    pub rate_limits: RateLimits,
}

#[derive(Debug, Clone, Copy)]
pub struct GraphqlConfig {
    pub max_depth: usize,
    pub max_complexity: usize,
    /// Aliased fields per document.
    pub max_aliases: usize,
    /// Operations per batched request.
    pub max_batch: usize,
    pub introspection: bool,
    /// GraphiQL at `GET /graphql`.
    pub playground: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct OrchestratorConfig {
    /// Where the orchestrator binary serves `/metrics`; `None` (`off`) for nowhere.
    pub metrics_addr: Option<SocketAddr>,
    /// How often the orchestrator looks for sagas whose step timed out.
    pub timeout_scan_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct WorkersConfig {
    /// Where the workers binary serves `/metrics`; `None` (`off`) for nowhere.
    pub metrics_addr: Option<SocketAddr>,
    pub payment_gateway: PaymentGatewayKind,
    pub payment_gateway_timeout: Duration,
    /// Stripe's API (`https://api.stripe.com`; a localstripe server in tests).
    pub stripe_api_base: String,
    /// Stripe's secret key; required when `payment_gateway` is Stripe.
    pub stripe_secret_key: Option<SecretString>,
}

/// `url` without its user and password, for logs and error messages
/// (`amqp://guest:secret@host:5672/%2f` → `amqp://host:5672/%2f`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a URL that does not parse)".into();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, hosts)| hosts);
    format!("{scheme}://{hosts}{path}")
}

/// A comma-separated list, without blanks.
fn list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// The user a URL names (`scheme://USER[:PASSWORD]@host`), if any.
fn url_user(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    Some(user).filter(|u| !u.is_empty())
}

/// Settings no longer read, what replaced them, and the value that means the same as leaving them
/// out. Any other value is an error rather than a silent no-op.
pub const RETIRED: &[(&str, &str, &str)] = &[(
    "TRUST_FORWARDED_FOR",
    "set TRUSTED_PROXY_HOPS to the number of proxies in front of the API (1 for one proxy)",
    "false",
)];

/// `SAGA_NEEDS_ATTENTION_STEPS`: comma-separated names of the checkout saga's steps, as its
/// definition names them.
fn steps(value: &str) -> Result<StepNames, String> {
    let checkout = SagaDefinition::checkout(SagaTiming::default());
    let known: Vec<&str> = checkout.steps.iter().map(|s| s.name.as_str()).collect();
    let names: Vec<String> =
        value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    match names.iter().find(|n| !known.contains(&n.as_str())) {
        Some(bad) => Err(format!("unknown step {bad}; steps are {}", known.join(", "))),
        None => Ok(StepNames(names)),
    }
}

/// `CORS_ALLOWED_ORIGINS`: comma-separated origins (`https://shop.example.com`, with a port when
/// it is not the scheme's), or `*`.
fn origins(value: &str) -> Result<Origins, String> {
    let origins: Vec<String> =
        value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    let valid = |o: &str| {
        o == "*"
            || ["http://", "https://"].iter().any(|scheme| {
                o.strip_prefix(scheme).is_some_and(|host| {
                    !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
                })
            })
    };
    match origins.iter().find(|o| !valid(o)) {
        Some(bad) => Err(format!("{bad} is not an origin: scheme://host[:port] without a path, or *")),
        None => Ok(Origins(origins)),
    }
}

impl Config {
    /// Refuses the in-process broker for a role running in its own process: it would talk to
    /// nobody.
    pub fn require_shared_broker(&self, role: &str) -> Result<(), ConfigError> {
        if self.broker.kind == BrokerKind::Memory {
            return Err(ConfigError {
                name: "BROKER".into(),
                value: "memory".into(),
                why: format!(
                    "the in-process broker only connects roles in one process (`api all`), not {role}"
                ),
            });
        }
        Ok(())
    }

    /// `api all` without a named broker: every role in this process over in-process queues,
    /// which production refuses like `BROKER=memory`.
    pub fn use_in_process_broker(&mut self) -> Result<(), ConfigError> {
        if self.app_env == AppEnv::Production {
            return Err(ConfigError {
                name: "BROKER".into(),
                value: String::new(),
                why: "`api all` without a broker runs over in-process queues, which keep nothing durable (APP_ENV=production)".into(),
            });
        }
        self.broker.kind = BrokerKind::Memory;
        Ok(())
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads every setting through `lookup` (name to value); unset and empty mean the default.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // A retired setting that is still set would otherwise be ignored without a word.
        for &(name, instead, harmless) in RETIRED {
            if let Some(value) = lookup(name).filter(|v| !v.is_empty() && v != harmless) {
                return Err(ConfigError {
                    name: name.into(),
                    value,
                    why: format!("no longer read: {instead}"),
                });
            }
        }
        Settings::read(lookup)?.into_config()
    }
}

/// Every variable with its type and default, as clap reads them (each also has a flag, which only
/// [`Settings::read`] uses). `.env.example` documents them; a test holds the two together.
#[derive(Debug, clap::Parser)]
#[command(name = "ecommerce-saga", no_binary_name = true)]
pub struct Settings {
    #[arg(long, env = "APP_ENV", value_enum, default_value = "development")]
    app_env: AppEnv,

    // Stores
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/ecommerce_saga")]
    database_url: String,
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value = "10")]
    database_max_connections: u32,
    #[arg(long, env = "MONGO_URL", default_value = "mongodb://127.0.0.1:27017")]
    mongo_url: String,
    #[arg(long, env = "MONGO_DATABASE", default_value = "ecommerce_saga")]
    mongo_database: String,

    // Broker
    #[arg(long, env = "BROKER", value_enum, default_value = "nats")]
    broker: BrokerKind,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[arg(long, env = "RABBITMQ_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    rabbitmq_url: String,
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    #[arg(long, env = "KAFKA_OFFSETS", value_enum, default_value = "postgres")]
    kafka_offsets: KafkaOffsets,
    #[arg(long, env = "KAFKA_OFFSETS_START", value_enum, default_value = "beginning")]
    kafka_offsets_start: KafkaOffsetsStart,
    #[arg(long, env = "KAFKA_SECURITY_PROTOCOL", value_enum, default_value = "plaintext")]
    kafka_security_protocol: KafkaSecurityProtocol,
    #[arg(long, env = "KAFKA_SASL_MECHANISM", value_enum, default_value = "SCRAM-SHA-512")]
    kafka_sasl_mechanism: KafkaSaslMechanism,
    #[arg(long, env = "KAFKA_SASL_USERNAME", default_value = "")]
    kafka_sasl_username: String,
    #[arg(long, env = "KAFKA_SASL_PASSWORD", default_value = "")]
    kafka_sasl_password: String,
    #[arg(long, env = "KAFKA_SSL_CA_LOCATION", default_value = "")]
    kafka_ssl_ca_location: String,
    #[arg(long, env = "NSQD_TCP_ADDRESSES", default_value = "127.0.0.1:4150")]
    nsqd_tcp_addresses: String,
    #[arg(long, env = "NSQD_HTTP_ADDRESSES", default_value = "127.0.0.1:4151")]
    nsqd_http_addresses: String,
    #[arg(long, env = "NSQ_AUTH_SECRET", default_value = "")]
    nsq_auth_secret: String,
    #[arg(long, env = "BROKER_NAMESPACE", default_value = "ecommerce_saga", value_parser = namespace)]
    broker_namespace: String,
    #[arg(long, env = "MAX_DELIVERIES", default_value = "10")]
    max_deliveries: u64,
    #[arg(long, env = "BROKER_ACK_WAIT_MS", default_value = "30000")]
    broker_ack_wait_ms: u64,
    #[arg(long, env = "MESSAGE_WRITE_VERSION", default_value = "current", value_parser = write_version)]
    message_write_version: u16,
    #[arg(long, env = "CHAOS_DUPLICATE", default_value = "false", action = ArgAction::Set)]
    chaos_duplicate: bool,
    #[arg(long, env = "CHAOS_REORDER_MAX_MS", default_value = "200")]
    chaos_reorder_max_ms: u64,

    // Saga timing, relay, consumers
    #[arg(long, env = "SAGA_STEP_TIMEOUT_MS", default_value = "5000")]
    saga_step_timeout_ms: u64,
    #[arg(long, env = "SAGA_STEP_MAX_ATTEMPTS", default_value = "3")]
    saga_step_max_attempts: u32,
    #[arg(long, env = "SAGA_COMPENSATION_TIMEOUT_MS", default_value = "5000")]
    saga_compensation_timeout_ms: u64,
    #[arg(long, env = "SAGA_STEP_RETRY_BACKOFF_MS", default_value = "500")]
    saga_step_retry_backoff_ms: u64,
    #[arg(long, env = "SAGA_COMPENSATION_MAX_ATTEMPTS", default_value = "20")]
    saga_compensation_max_attempts: u32,
    #[arg(long, env = "SAGA_NEEDS_ATTENTION_STEPS", default_value = "", value_parser = steps)]
    saga_needs_attention_steps: StepNames,
    #[arg(long, env = "SAGA_TIMEOUT_SCAN_MS", default_value = "250")]
    saga_timeout_scan_ms: u64,
    #[arg(long, env = "OUTBOX_POLL_MS", default_value = "200")]
    outbox_poll_ms: u64,
    #[arg(long, env = "INBOX_RETENTION_HOURS", default_value = "auto", value_parser = inbox_retention)]
    inbox_retention_hours: InboxRetention,
    #[arg(long, env = "SAGA_HISTORY_RETENTION_DAYS", default_value = "90", value_parser = days_or_off)]
    saga_history_retention_days: DaysOrOff,
    #[arg(long, env = "SESSION_RETENTION_DAYS", default_value = "7")]
    session_retention_days: u64,
    #[arg(long, env = "RETENTION_INTERVAL_SECS", default_value = "300")]
    retention_interval_secs: u64,
    #[arg(long, env = "RETENTION_BATCH", default_value = "1000")]
    retention_batch: i64,
    #[arg(long, env = "WORKER_CONCURRENCY", default_value = "16")]
    worker_concurrency: usize,
    #[arg(long, env = "CONSUMER_MAX_BATCH", default_value = "64")]
    consumer_max_batch: usize,
    #[arg(long, env = "CONSUMER_BATCHES_IN_FLIGHT", default_value = "2")]
    consumer_batches_in_flight: usize,

    // Telemetry and the processes' addresses
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otel_exporter_otlp_endpoint: Option<String>,
    #[arg(long, env = "API_ADDR", default_value = "127.0.0.1:8080")]
    api_addr: SocketAddr,
    #[arg(long, env = "API_ADMIN_ADDR", default_value = "127.0.0.1:9100", value_parser = addr_or_off)]
    api_admin_addr: Listen,
    #[arg(long, env = "ORCHESTRATOR_METRICS_ADDR", default_value = "127.0.0.1:9101", value_parser = addr_or_off)]
    orchestrator_metrics_addr: Listen,
    #[arg(long, env = "WORKERS_METRICS_ADDR", default_value = "127.0.0.1:9102", value_parser = addr_or_off)]
    workers_metrics_addr: Listen,

    // Accounts and tokens
    #[arg(long, env = "JWT_ISSUER", default_value = "ecommerce-saga")]
    jwt_issuer: String,
    #[arg(long, env = "JWT_AUDIENCE", default_value = "ecommerce-saga-api")]
    jwt_audience: String,
    #[arg(long, env = "ACCESS_TOKEN_TTL_SECS", default_value = "900")]
    access_token_ttl_secs: u64,
    #[arg(long, env = "REFRESH_TOKEN_TTL_SECS", default_value = "2592000")]
    refresh_token_ttl_secs: u64,
    #[arg(long, env = "REFRESH_REUSE_GRACE_MS", default_value = "10000")]
    refresh_reuse_grace_ms: u64,
    #[arg(long, env = "SIGNING_KEYS_REFRESH_SECS", default_value = "5")]
    signing_keys_refresh_secs: u64,
    #[arg(long, env = "RATE_LIMIT_WINDOW_SECS", default_value = "300")]
    rate_limit_window_secs: u64,
    #[arg(long, env = "LOGIN_MAX_PER_ACCOUNT", default_value = "10")]
    login_max_per_account: u32,
    #[arg(long, env = "LOGIN_MAX_PER_ADDRESS", default_value = "100")]
    login_max_per_address: u32,
    #[arg(long, env = "REGISTER_MAX_PER_ADDRESS", default_value = "20")]
    register_max_per_address: u32,
    #[arg(long, env = "ORDER_PLACE_MAX_PER_USER", default_value = "30")]
    order_place_max_per_user: u32,
    #[arg(long, env = "CART_WRITES_MAX_PER_USER", default_value = "300")]
    cart_writes_max_per_user: u32,
    #[arg(long, env = "ORDER_MAX_OPEN_PER_USER", default_value = "3")]
    order_max_open_per_user: u32,

    // HTTP and GraphQL
    #[arg(long, env = "TRUSTED_PROXY_HOPS", default_value = "0")]
    trusted_proxy_hops: usize,
    #[arg(long, env = "GRAPHQL_MAX_DEPTH", default_value = "12")]
    graphql_max_depth: usize,
    #[arg(long, env = "GRAPHQL_MAX_COMPLEXITY", default_value = "1000")]
    graphql_max_complexity: usize,
    #[arg(long, env = "GRAPHQL_MAX_ALIASES", default_value = "30")]
    graphql_max_aliases: usize,
    #[arg(long, env = "GRAPHQL_MAX_BATCH", default_value = "10")]
    graphql_max_batch: usize,
    /// Default: on in development, off in production.
    #[arg(long, env = "GRAPHQL_INTROSPECTION", action = ArgAction::Set)]
    graphql_introspection: Option<bool>,
    /// Default: on in development, off in production.
    #[arg(long, env = "GRAPHQL_PLAYGROUND", action = ArgAction::Set)]
    graphql_playground: Option<bool>,
    #[arg(long, env = "HTTP_BODY_LIMIT_BYTES", default_value = "65536")]
    http_body_limit_bytes: usize,
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_MS", default_value = "10000")]
    http_header_timeout_ms: u64,
    #[arg(long, env = "HTTP_REQUEST_TIMEOUT_MS", default_value = "30000")]
    http_request_timeout_ms: u64,
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "", value_parser = origins)]
    cors_allowed_origins: Origins,
    #[arg(long, env = "HTTP_COMPRESSION", default_value = "true", action = ArgAction::Set)]
    http_compression: bool,

    // Payments
    #[arg(long, env = "PAYMENT_GATEWAY", value_enum, default_value = "test")]
    payment_gateway: PaymentGatewayKind,
    #[arg(long, env = "PAYMENT_GATEWAY_TIMEOUT_MS", default_value = "3000")]
    payment_gateway_timeout_ms: u64,
    #[arg(long, env = "STRIPE_API_BASE", default_value = "https://api.stripe.com")]
    stripe_api_base: String,
    #[arg(long, env = "STRIPE_SECRET_KEY")]
    stripe_secret_key: Option<String>,
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET")]
    stripe_webhook_secret: Option<String>,
    #[arg(long, env = "STRIPE_WEBHOOK_TOLERANCE_S", default_value = "300")]
    stripe_webhook_tolerance_s: u64,
    #[arg(long, env = "REFUND_WINDOW_DAYS", default_value = "30")]
    refund_window_days: u64,

    // Subscriptions over WebSocket
    #[arg(long, env = "WS_MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value = "100")]
    ws_max_subscriptions_per_connection: usize,
    #[arg(long, env = "WS_MAX_CONNECTIONS_PER_USER", default_value = "32")]
    ws_max_connections_per_user: usize,
    #[arg(long, env = "WS_MAX_CONNECTIONS_PER_ADDRESS", default_value = "256")]
    ws_max_connections_per_address: usize,
    #[arg(long, env = "WS_INIT_TIMEOUT_MS", default_value = "10000")]
    ws_init_timeout_ms: u64,
    #[arg(long, env = "WS_PING_INTERVAL_MS", default_value = "30000")]
    ws_ping_interval_ms: u64,
    #[arg(long, env = "WS_PONG_TIMEOUT_MS", default_value = "15000")]
    ws_pong_timeout_ms: u64,
    #[arg(long, env = "WS_SEND_TIMEOUT_MS", default_value = "10000")]
    ws_send_timeout_ms: u64,
}

/// A listening address, or none (`off`).
#[derive(Debug, Clone, Copy)]
struct Listen(Option<SocketAddr>);

/// Comma-separated step names, checked against the checkout saga's definition.
#[derive(Debug, Clone)]
struct StepNames(Vec<String>);

/// Comma-separated origins, each checked.
#[derive(Debug, Clone)]
struct Origins(Vec<String>);

impl Settings {
    /// Parses the values `lookup` gives for the variables (unset and empty mean the default). They
    /// reach clap as flags rather than through its own reading of the process environment, so that
    /// tests can read a map, and empty means unset whichever clap version reads it.
    pub fn read(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let command = Self::command();
        let mut flags = Vec::new();
        for arg in command.get_arguments() {
            let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else { continue };
            if let Some(value) = lookup(&env.to_string_lossy()).filter(|v| !v.is_empty()) {
                flags.push(format!("--{long}={value}"));
            }
        }
        // Only the flags carry values: clap does not read the environment itself here.
        let command = command.mut_args(|a| a.env(None));
        let matches = command.try_get_matches_from(&flags).map_err(|e| Self::error(e, lookup))?;
        Self::from_arg_matches(&matches).map_err(|e| Self::error(e, lookup))
    }

    /// Each variable's name and default (`None`: no default), in declaration order.
    pub fn variables() -> Vec<(String, Option<String>)> {
        Self::command()
            .get_arguments()
            .filter_map(|a| {
                let env = a.get_env()?.to_string_lossy().into_owned();
                let default = a.get_default_values().first().map(|d| d.to_string_lossy().into_owned());
                Some((env, default))
            })
            .collect()
    }

    /// Names the variable (not the flag) and says what is wrong in clap's words.
    fn error(e: clap::Error, lookup: &dyn Fn(&str) -> Option<String>) -> ConfigError {
        use clap::error::{ContextKind, ContextValue};
        let context = |kind| match e.get(kind) {
            Some(ContextValue::String(s)) => s.clone(),
            Some(ContextValue::Strings(v)) => v.join(", "),
            _ => String::new(),
        };
        let flag = context(ContextKind::InvalidArg);
        let long = flag.trim_start_matches('-').split([' ', '=']).next().unwrap_or_default().to_string();
        let command = Self::command();
        let arg = command.get_arguments().find(|a| a.get_long() == Some(long.as_str()));
        let name = arg
            .and_then(|a| a.get_env())
            .map_or_else(|| flag.clone(), |env| env.to_string_lossy().into_owned());
        let value = lookup(&name).unwrap_or_else(|| context(ContextKind::InvalidValue));
        let valid: Vec<String> = arg
            .map(|a| a.get_possible_values().iter().map(|v| v.get_name().to_string()).collect())
            .unwrap_or_default();
        let why = match std::error::Error::source(&e) {
            Some(source) => source.to_string(),
            None if !valid.is_empty() => format!("supported: {}", valid.join(", ")),
            None => e.kind().to_string(),
        };
        ConfigError { name, value, why }
    }

    /// Under `APP_ENV=production`, the settings that are only safe in development: each is refused
    /// at start, naming its variable, rather than run with.
    fn refuse_development_settings(&self) -> Result<(), ConfigError> {
        let refuse = |name: &str, value: &str, why: &str| {
            Err(ConfigError {
                name: name.into(),
                value: value.into(),
                why: format!("{why} (APP_ENV=production)"),
            })
        };
        if self.payment_gateway == PaymentGatewayKind::Test {
            return refuse(
                "PAYMENT_GATEWAY",
                "test",
                "the test gateway approves any payment token and charges nobody; set PAYMENT_GATEWAY=stripe",
            );
        }
        if !self.stripe_api_base.starts_with("https://") {
            return refuse(
                "STRIPE_API_BASE",
                &self.stripe_api_base,
                "the payment provider is reached over https only",
            );
        }
        if self.stripe_webhook_secret.as_deref().is_none_or(str::is_empty) {
            return refuse(
                "STRIPE_WEBHOOK_SECRET",
                "",
                "required: without the webhook, outcomes the provider reports late (authorizations to release, captures) are never heard of",
            );
        }
        if self.trusted_proxy_hops == 0 {
            return refuse(
                "TRUSTED_PROXY_HOPS",
                "0",
                "the API runs behind a proxy (TLS), so with 0 every client has the proxy's address and every per-address limit (logins, registrations, WebSocket connections) is one limit for everybody; set the number of proxies that append to X-Forwarded-For",
            );
        }
        if self.chaos_duplicate {
            return refuse(
                "CHAOS_DUPLICATE",
                "true",
                "fault injection (every message published twice) is for tests and drills",
            );
        }
        if self.broker == BrokerKind::Memory {
            return refuse(
                "BROKER",
                "memory",
                "the in-process broker keeps nothing durable and connects only the roles of one process",
            );
        }
        // Anything that can publish on the broker can answer the saga's commands (docs/security.md,
        // "Trust boundary"): the broker takes only the deployment's own account.
        const OWN_ACCOUNT: &str = "anything that can publish on the broker can confirm an order, so the roles connect with the deployment's own broker account";
        match self.broker {
            BrokerKind::Nats if url_user(&self.nats_url).is_none() => {
                return refuse(
                    "NATS_URL",
                    &redact_url(&self.nats_url),
                    &format!("{OWN_ACCOUNT}: nats://USER:PASSWORD@HOST:4222"),
                );
            }
            BrokerKind::RabbitMq if url_user(&self.rabbitmq_url).is_none_or(|u| u == "guest") => {
                return refuse(
                    "RABBITMQ_URL",
                    &redact_url(&self.rabbitmq_url),
                    &format!(
                        "{OWN_ACCOUNT}, not RabbitMQ's built-in guest: amqp://USER:PASSWORD@HOST:5672/%2f"
                    ),
                );
            }
            BrokerKind::Kafka if !self.kafka_security_protocol.sasl() => {
                return refuse(
                    "KAFKA_SECURITY_PROTOCOL",
                    self.kafka_security_protocol.as_str(),
                    &format!("{OWN_ACCOUNT}: sasl_ssl, with KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
                );
            }
            BrokerKind::Kafka
                if self.kafka_security_protocol == KafkaSecurityProtocol::SaslPlaintext
                    && self.kafka_sasl_mechanism == KafkaSaslMechanism::Plain =>
            {
                return refuse(
                    "KAFKA_SASL_MECHANISM",
                    "PLAIN",
                    "PLAIN sends the password as it is, and sasl_plaintext does not encrypt it: use SCRAM-SHA-512, or sasl_ssl",
                );
            }
            BrokerKind::Nsq if self.nsq_auth_secret.is_empty() => {
                return refuse(
                    "NSQ_AUTH_SECRET",
                    "",
                    &format!("{OWN_ACCOUNT}: nsqd with --auth-http-address, and the secret its auth server grants the topics"),
                );
            }
            _ => {}
        }
        Ok(())
    }

    fn into_config(self) -> Result<Config, ConfigError> {
        let dev = self.app_env == AppEnv::Development;
        if self.payment_gateway == PaymentGatewayKind::Stripe
            && self.stripe_secret_key.as_deref().is_none_or(str::is_empty)
        {
            return Err(ConfigError {
                name: "STRIPE_SECRET_KEY".into(),
                value: String::new(),
                why: "required with PAYMENT_GATEWAY=stripe".into(),
            });
        }
        if self.broker == BrokerKind::Kafka && self.kafka_security_protocol.sasl() {
            for (name, value) in [
                ("KAFKA_SASL_USERNAME", &self.kafka_sasl_username),
                ("KAFKA_SASL_PASSWORD", &self.kafka_sasl_password),
            ] {
                if value.is_empty() {
                    return Err(ConfigError {
                        name: name.into(),
                        value: String::new(),
                        why: format!(
                            "required with KAFKA_SECURITY_PROTOCOL={}",
                            self.kafka_security_protocol.as_str()
                        ),
                    });
                }
            }
        }
        if self.app_env == AppEnv::Production {
            self.refuse_development_settings()?;
        }
        Ok(Config {
            app_env: self.app_env,
            postgres: PostgresConfig {
                url: SecretString::from(self.database_url),
                max_connections: self.database_max_connections,
            },
            mongo: MongoConfig { url: SecretString::from(self.mongo_url), database: self.mongo_database },
            broker: BrokerConfig {
                kind: self.broker,
                namespace: self.broker_namespace,
                nats_url: SecretString::from(self.nats_url),
                rabbitmq_url: SecretString::from(self.rabbitmq_url),
                kafka_brokers: self.kafka_brokers,
                kafka_offsets: self.kafka_offsets,
                kafka_offsets_start: self.kafka_offsets_start,
                kafka_security: KafkaSecurity {
                    protocol: self.kafka_security_protocol,
                    sasl_mechanism: self.kafka_sasl_mechanism,
                    sasl_username: self.kafka_sasl_username,
                    sasl_password: SecretString::from(self.kafka_sasl_password),
                    ssl_ca_location: Some(self.kafka_ssl_ca_location).filter(|p| !p.is_empty()),
                },
                nsqd_tcp_addresses: list(&self.nsqd_tcp_addresses),
                nsqd_http_addresses: list(&self.nsqd_http_addresses),
                nsq_auth_secret: Some(self.nsq_auth_secret).filter(|s| !s.is_empty()).map(SecretString::from),
                max_deliveries: self.max_deliveries,
                write_version: self.message_write_version,
                ack_wait: Duration::from_millis(self.broker_ack_wait_ms),
                chaos: ChaosConfig {
                    duplicate: self.chaos_duplicate,
                    reorder_max: Duration::from_millis(self.chaos_reorder_max_ms),
                },
            },
            saga: SagaTiming {
                step_timeout: Duration::from_millis(self.saga_step_timeout_ms),
                max_attempts: self.saga_step_max_attempts,
                compensation_timeout: Duration::from_millis(self.saga_compensation_timeout_ms),
                retry_backoff: Duration::from_millis(self.saga_step_retry_backoff_ms),
                compensation_max_attempts: self.saga_compensation_max_attempts,
                needs_attention_steps: self.saga_needs_attention_steps.0,
            },
            outbox: OutboxConfig { poll_interval: Duration::from_millis(self.outbox_poll_ms) },
            retention: RetentionConfig {
                inbox: self.inbox_retention_hours,
                sessions: Duration::from_secs(self.session_retention_days.saturating_mul(86_400)),
                saga_history: self.saga_history_retention_days.0,
                interval: Duration::from_secs(self.retention_interval_secs.max(1)),
                batch: self.retention_batch.max(1),
            },
            consumers: ConsumerConfig {
                concurrency: self.worker_concurrency,
                max_batch: self.consumer_max_batch,
                batches_in_flight: self.consumer_batches_in_flight,
            },
            telemetry: TelemetryConfig { otlp_endpoint: self.otel_exporter_otlp_endpoint },
            api: ApiConfig {
                addr: self.api_addr,
                admin_addr: self.api_admin_addr.0,
                auth: AuthConfig {
                    jwt_issuer: self.jwt_issuer,
                    jwt_audience: self.jwt_audience,
                    access_token_ttl: Duration::from_secs(self.access_token_ttl_secs),
                    refresh_token_ttl: Duration::from_secs(self.refresh_token_ttl_secs),
                    refresh_reuse_grace: Duration::from_millis(self.refresh_reuse_grace_ms),
                    signing_keys_refresh: Duration::from_secs(self.signing_keys_refresh_secs),
                    rate_limits: RateLimits {
                        window: Duration::from_secs(self.rate_limit_window_secs),
                        login_per_account: self.login_max_per_account,
                        login_per_address: self.login_max_per_address,
                        register_per_address: self.register_max_per_address,
                        place_order_per_user: self.order_place_max_per_user,
                        cart_writes_per_user: self.cart_writes_max_per_user,
                        open_orders_per_user: self.order_max_open_per_user,
                    },
                },
                trusted_proxy_hops: self.trusted_proxy_hops,
                graphql: GraphqlConfig {
                    max_depth: self.graphql_max_depth,
                    max_complexity: self.graphql_max_complexity,
                    max_aliases: self.graphql_max_aliases,
                    max_batch: self.graphql_max_batch,
                    introspection: self.graphql_introspection.unwrap_or(dev),
                    playground: self.graphql_playground.unwrap_or(dev),
                },
                http_body_limit: self.http_body_limit_bytes,
                header_timeout: Duration::from_millis(self.http_header_timeout_ms.max(1)),
                request_timeout: Duration::from_millis(self.http_request_timeout_ms.max(1)),
                cors_allowed_origins: self.cors_allowed_origins.0,
                compression: self.http_compression,
                stripe_webhook_secret: self
                    .stripe_webhook_secret
                    .filter(|k| !k.is_empty())
                    .map(SecretString::from),
                stripe_webhook_tolerance: Duration::from_secs(self.stripe_webhook_tolerance_s),
                refund_window: Duration::from_secs(self.refund_window_days.saturating_mul(86_400)),
                websocket: WebSocketConfig {
                    max_subscriptions_per_connection: self.ws_max_subscriptions_per_connection,
                    max_connections_per_user: self.ws_max_connections_per_user,
                    max_connections_per_address: self.ws_max_connections_per_address,
                    init_timeout: Duration::from_millis(self.ws_init_timeout_ms),
                    ping_interval: Duration::from_millis(self.ws_ping_interval_ms),
                    pong_timeout: Duration::from_millis(self.ws_pong_timeout_ms),
                    send_timeout: Duration::from_millis(self.ws_send_timeout_ms),
                },
            },
            orchestrator: OrchestratorConfig {
                metrics_addr: self.orchestrator_metrics_addr.0,
                timeout_scan_interval: Duration::from_millis(self.saga_timeout_scan_ms),
            },
            workers: WorkersConfig {
                metrics_addr: self.workers_metrics_addr.0,
                payment_gateway: self.payment_gateway,
                payment_gateway_timeout: Duration::from_millis(self.payment_gateway_timeout_ms),
                stripe_api_base: self.stripe_api_base,
                stripe_secret_key: self.stripe_secret_key.filter(|k| !k.is_empty()).map(SecretString::from),
            },
        })
    }
}

/// `BROKER_NAMESPACE`: letters, digits and `_`.
fn namespace(value: &str) -> Result<String, String> {
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("letters, digits and _ only".into());
    }
    Ok(value.to_string())
}

/// An address, or `off` for none.
fn addr_or_off(value: &str) -> Result<Listen, String> {
    if value == "off" {
        return Ok(Listen(None));
    }
    value.parse().map(|a| Listen(Some(a))).map_err(|e: std::net::AddrParseError| format!("{e}, or off"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(&move |name| map.get(name).cloned())
    }

    #[test]
    fn introspection_and_playground_default_on_in_development_and_off_in_production() {
        let dev = config(&[]).unwrap();
        assert_eq!(dev.app_env, AppEnv::Development);
        assert!(dev.api.graphql.introspection && dev.api.graphql.playground);
        let prod = production(&[]).unwrap();
        assert!(!prod.api.graphql.introspection && !prod.api.graphql.playground);
        let opted_in = production(&[("GRAPHQL_INTROSPECTION", "true")]).unwrap();
        assert!(opted_in.api.graphql.introspection && !opted_in.api.graphql.playground);
        let empty = production(&[("GRAPHQL_PLAYGROUND", "")]).unwrap();
        assert!(!empty.api.graphql.playground, "empty means the default");
    }

    /// `.env.example` names every variable the code reads, nothing else, and its values are the
    /// defaults.
    #[test]
    fn env_example_lists_every_variable_with_its_default() {
        let text = include_str!("../../../.env.example");
        let example: std::collections::HashMap<String, String> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let variables = Settings::variables();
        assert!(variables.len() > 40, "clap lists the variables: {variables:?}");
        for (name, default) in &variables {
            let listed =
                example.get(name).unwrap_or_else(|| panic!("{name} is read but missing from .env.example"));
            assert_eq!(
                listed,
                default.as_deref().unwrap_or(""),
                "{name}: .env.example differs from the default"
            );
        }
        // The log setup reads these two itself (tracing-subscriber's filter and format).
        for name in example.keys().filter(|n| !["RUST_LOG", "LOG_FORMAT"].contains(&n.as_str())) {
            assert!(
                variables.iter().any(|(v, _)| v == name),
                "{name} is in .env.example but nothing reads it"
            );
        }
        // And says what each means: every group of variables (lines between blank lines) has a comment.
        for block in text.split("\n\n") {
            let has_comment = block.lines().any(|l| l.trim_start().starts_with('#'));
            let vars: Vec<&str> = block.lines().filter(|l| !l.starts_with('#') && l.contains('=')).collect();
            assert!(vars.is_empty() || has_comment, "undocumented in .env.example: {vars:?}");
        }
        // The listed values parse into exactly the defaults (Debug shows every setting but the
        // secrets; those are compared as they are).
        let defaults = Config::from_lookup(&|_| None).unwrap();
        let from_example = Config::from_lookup(&|name| example.get(name).cloned()).unwrap();
        let all = |c: &Config| {
            let secrets = [
                &c.postgres.url,
                &c.mongo.url,
                &c.broker.nats_url,
                &c.broker.rabbitmq_url,
                &c.broker.kafka_security.sasl_password,
            ];
            let nsq = c.broker.nsq_auth_secret.as_ref().map(|s| s.expose_secret().to_string());
            format!("{c:?} {:?} {nsq:?}", secrets.map(|s| s.expose_secret().to_string()))
        };
        assert_eq!(all(&defaults), all(&from_example), ".env.example values differ from defaults");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = config(&[("APP_ENV", "staging")]).unwrap_err();
        assert_eq!(e.name, "APP_ENV");
        let e = config(&[("LOGIN_MAX_PER_ACCOUNT", "-1")]).unwrap_err();
        assert_eq!(e.name, "LOGIN_MAX_PER_ACCOUNT");
        assert!(e.why.contains("4294967295"), "{}", e.why);
        assert_eq!(e.value, "-1");
        let e = config(&[("BROKER", "kafkaesque")]).unwrap_err();
        assert_eq!(e.name, "BROKER");
        assert_eq!(e.why, "supported: nats, rabbitmq, kafka, nsq, memory");
        assert_eq!(config(&[("BROKER", "rabbitmq")]).unwrap().broker.kind, BrokerKind::RabbitMq);
        let e = config(&[("BROKER_NAMESPACE", "shop-eu")]).unwrap_err();
        assert_eq!((e.name.as_str(), e.why.as_str()), ("BROKER_NAMESPACE", "letters, digits and _ only"));
        let e = config(&[("HTTP_COMPRESSION", "yes")]).unwrap_err();
        assert_eq!(e.name, "HTTP_COMPRESSION");
        let e = config(&[("ORCHESTRATOR_METRICS_ADDR", "9101")]).unwrap_err();
        assert_eq!(e.name, "ORCHESTRATOR_METRICS_ADDR");
        let off = config(&[("ORCHESTRATOR_METRICS_ADDR", "off"), ("SAGA_STEP_TIMEOUT_MS", "750")]).unwrap();
        assert_eq!(off.orchestrator.metrics_addr, None);
        assert_eq!(off.saga.step_timeout, Duration::from_millis(750));
        let e = config(&[("TRUST_FORWARDED_FOR", "true")]).unwrap_err();
        assert_eq!(e.name, "TRUST_FORWARDED_FOR");
        assert!(e.why.contains("TRUSTED_PROXY_HOPS"), "{}", e.why);
        assert_eq!(config(&[("TRUST_FORWARDED_FOR", "false")]).unwrap().api.trusted_proxy_hops, 0);
        assert_eq!(config(&[("PAYMENT_GATEWAY", "cash")]).unwrap_err().name, "PAYMENT_GATEWAY");
        for bad in ["shop.example.com", "https://shop.example.com/", "https://", "ftp://x"] {
            assert_eq!(
                config(&[("CORS_ALLOWED_ORIGINS", bad)]).unwrap_err().name,
                "CORS_ALLOWED_ORIGINS",
                "{bad}"
            );
        }
        let cors =
            config(&[("CORS_ALLOWED_ORIGINS", "https://shop.example.com, http://localhost:5173")]).unwrap();
        assert_eq!(cors.api.cors_allowed_origins, ["https://shop.example.com", "http://localhost:5173"]);
        let e = config(&[("SAGA_NEEDS_ATTENTION_STEPS", "CAPTURE_PAYMENT, SHIP_PARCEL")]).unwrap_err();
        assert_eq!(e.name, "SAGA_NEEDS_ATTENTION_STEPS");
        assert!(e.why.contains("RESERVE_STOCK, AUTHORIZE_PAYMENT, CAPTURE_PAYMENT"), "{}", e.why);
        let ok = config(&[("SAGA_NEEDS_ATTENTION_STEPS", " CAPTURE_PAYMENT,AUTHORIZE_PAYMENT ")]).unwrap();
        assert_eq!(ok.saga.needs_attention_steps, ["CAPTURE_PAYMENT", "AUTHORIZE_PAYMENT"]);
    }

    /// The settings a production deployment needs that differ from the development defaults.
    const PRODUCTION: &[(&str, &str)] = &[
        ("APP_ENV", "production"),
        ("PAYMENT_GATEWAY", "stripe"),
        ("STRIPE_SECRET_KEY", "sk_live_x"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_x"),
        ("TRUSTED_PROXY_HOPS", "1"),
        ("NATS_URL", "nats://shop:nats-pass@nats:4222"),
    ];

    fn production(changes: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        let mut pairs: Vec<(&str, &str)> = PRODUCTION.to_vec();
        pairs.retain(|(k, _)| !changes.iter().any(|(c, _)| c == k));
        pairs.extend_from_slice(changes);
        config(&pairs)
    }

    /// Under `APP_ENV=production` every setting that is only safe in development is refused at
    /// start, naming the variable; the same values are accepted in development.
    #[test]
    fn production_refuses_settings_only_safe_in_development() {
        production(&[]).expect("a production configuration starts");
        for (name, value, why) in [
            ("PAYMENT_GATEWAY", "test", "approves any payment token"),
            ("TRUSTED_PROXY_HOPS", "0", "X-Forwarded-For"),
            ("CHAOS_DUPLICATE", "true", "fault injection"),
            ("BROKER", "memory", "in-process"),
            ("STRIPE_API_BASE", "http://127.0.0.1:8420", "https"),
            ("STRIPE_WEBHOOK_SECRET", "", "webhook"),
        ] {
            let e = production(&[(name, value)]).expect_err(name);
            assert_eq!(e.name, name, "{e}");
            assert!(e.why.contains(why), "{name}: {e}");
            assert!(e.to_string().contains(name), "the message names the variable: {e}");
            config(&[(name, value), ("STRIPE_SECRET_KEY", "sk_test_x")]).expect("development allows it");
        }
    }

    /// Anything that can publish on the broker can answer the saga's commands, so production
    /// connects to each broker with an account of its own: a NATS URL with a user, a RabbitMQ user
    /// other than `guest`, Kafka over SASL (and never a PLAIN password without TLS).
    #[test]
    fn production_connects_to_the_broker_with_its_own_account() {
        let refused = |changes: &[(&'static str, &'static str)], name: &str, why: &str| {
            let e = production(changes).expect_err(name);
            assert_eq!(e.name, name, "{e}");
            assert!(e.why.contains(why), "{name}: {e}");
            for password in ["kafka-pass", ":pass@"] {
                assert!(!e.to_string().contains(password), "no password in the message: {e}");
            }
            let dev: Vec<_> = changes.iter().copied().filter(|(k, _)| *k != "APP_ENV").collect();
            config(&dev).expect("development allows it");
        };
        refused(&[("NATS_URL", "nats://nats:4222")], "NATS_URL", "own broker account");
        refused(&[("NATS_URL", "nats://:pass@nats:4222")], "NATS_URL", "own broker account");
        production(&[("NATS_URL", "nats://s3cret-token@nats:4222")]).expect("a token names the account");
        refused(&[("BROKER", "rabbitmq")], "RABBITMQ_URL", "guest");
        refused(&[("BROKER", "rabbitmq"), ("RABBITMQ_URL", "amqp://mq:5672/%2f")], "RABBITMQ_URL", "guest");
        production(&[("BROKER", "rabbitmq"), ("RABBITMQ_URL", "amqp://shop:amqp-pass@mq:5672/%2f")])
            .expect("an account of its own");
        refused(&[("BROKER", "kafka")], "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_USERNAME");
        refused(
            &[("BROKER", "kafka"), ("KAFKA_SECURITY_PROTOCOL", "ssl")],
            "KAFKA_SECURITY_PROTOCOL",
            "sasl_ssl",
        );
        const KAFKA: [(&str, &str); 4] = [
            ("BROKER", "kafka"),
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_USERNAME", "shop"),
            ("KAFKA_SASL_PASSWORD", "kafka-pass"),
        ];
        let c = production(&KAFKA).expect("SASL over TLS");
        let kafka = &c.broker.kafka_security;
        assert_eq!(
            (kafka.protocol, kafka.sasl_mechanism),
            (KafkaSecurityProtocol::SaslSsl, KafkaSaslMechanism::ScramSha512)
        );
        assert_eq!(
            (kafka.sasl_username.as_str(), kafka.sasl_password.expose_secret()),
            ("shop", "kafka-pass")
        );
        assert!(!format!("{c:?}").contains("kafka-pass"), "the password shows in Debug");
        let plain_in_clear = [
            KAFKA[0],
            ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
            KAFKA[2],
            KAFKA[3],
            ("KAFKA_SASL_MECHANISM", "PLAIN"),
        ];
        refused(&plain_in_clear, "KAFKA_SASL_MECHANISM", "PLAIN");
        production(&[KAFKA[0], KAFKA[1], KAFKA[2], KAFKA[3], ("KAFKA_SASL_MECHANISM", "PLAIN")])
            .expect("PLAIN over TLS");
        refused(&[("BROKER", "nsq")], "NSQ_AUTH_SECRET", "--auth-http-address");
        production(&[("BROKER", "nsq"), ("NSQ_AUTH_SECRET", "nsq-secret")])
            .expect("nsqd's auth server grants it");
        // With SASL, both halves of the account are needed, in every environment.
        for missing in ["KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"] {
            let pairs: Vec<_> = KAFKA.iter().copied().filter(|(k, _)| *k != missing).collect();
            let e = config(&pairs).expect_err(missing);
            assert_eq!(
                (e.name.as_str(), e.why.as_str()),
                (missing, "required with KAFKA_SECURITY_PROTOCOL=sasl_ssl")
            );
        }
        // Another broker's settings are not checked.
        production(&[
            ("KAFKA_SECURITY_PROTOCOL", "plaintext"),
            ("RABBITMQ_URL", "amqp://guest:guest@mq:5672/%2f"),
        ])
        .expect("BROKER=nats reads only the NATS settings");
    }

    #[test]
    fn secrets_stay_out_of_debug_and_logs() {
        let c = config(&[
            ("DATABASE_URL", "postgres://app:db-pass@db.internal:5432/shop"),
            ("MONGO_URL", "mongodb://app:mongo-pass@m1:27017,m2:27017/?replicaSet=rs0"),
            ("RABBITMQ_URL", "amqp://app:amqp-pass@mq:5672/%2f"),
            ("NATS_URL", "nats://app:nats-pass@nats:4222"),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        for secret in ["db-pass", "mongo-pass", "amqp-pass", "nats-pass"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(c.postgres.url.expose_secret(), "postgres://app:db-pass@db.internal:5432/shop");
        assert_eq!(redact_url(c.mongo.url.expose_secret()), "mongodb://m1:27017,m2:27017/?replicaSet=rs0");
        assert_eq!(redact_url(c.broker.rabbitmq_url.expose_secret()), "amqp://mq:5672/%2f");
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact_url("p@ss"), "(a URL that does not parse)");
    }

    #[test]
    fn the_stripe_gateway_needs_its_key_and_never_shows_it() {
        assert_eq!(config(&[]).unwrap().workers.payment_gateway, PaymentGatewayKind::Test);
        let missing = config(&[("PAYMENT_GATEWAY", "stripe")]).unwrap_err();
        assert_eq!(missing.name, "STRIPE_SECRET_KEY");
        let c = config(&[("PAYMENT_GATEWAY", "stripe"), ("STRIPE_SECRET_KEY", "sk_live_hush")]).unwrap();
        assert_eq!(c.workers.payment_gateway, PaymentGatewayKind::Stripe);
        assert_eq!(c.workers.stripe_api_base, "https://api.stripe.com");
        assert!(!format!("{c:?}").contains("sk_live_hush"), "the key shows in Debug");
    }
}
