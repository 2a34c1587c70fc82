//! Typed configuration, read from the environment. `.env.example` lists every variable with its default.

use std::net::SocketAddr;
use std::time::Duration;

use crate::saga::SagaTiming;

#[derive(Debug, thiserror::Error)]
#[error("invalid value for {name}: {value:?} ({why})")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Nats,
    RabbitMq,
    Kafka,
}

impl BrokerKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "nats" => Some(BrokerKind::Nats),
            "rabbitmq" => Some(BrokerKind::RabbitMq),
            "kafka" => Some(BrokerKind::Kafka),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub database_max_connections: u32,
    pub mongo_url: String,
    pub mongo_database: String,
    pub broker: BrokerKind,
    pub nats_url: String,
    pub rabbitmq_url: String,
    /// Comma-separated `host:port` list.
    pub kafka_brokers: String,
    /// Deliveries of one message before it is moved to the dead-letter topic.
    pub max_deliveries: u64,
    /// How long a broker waits for an ack before redelivering (NATS).
    pub ack_wait: Duration,
    /// Fault injection: publish every message twice (tests and drills only).
    pub chaos_duplicate: bool,
    /// Fault injection: the duplicate is published after a random delay up to this.
    pub chaos_reorder_max: Duration,
    /// Prefix of every subject and name of the JetStream stream; lets several deployments (or
    /// tests) share one broker.
    pub broker_namespace: String,
    pub api_addr: SocketAddr,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_token_ttl: Duration,
    pub saga: SagaTiming,
    pub payment_gateway_timeout: Duration,
    pub outbox_poll_interval: Duration,
    pub timeout_scan_interval: Duration,
    pub worker_concurrency: usize,
    pub graphql_max_depth: usize,
    pub graphql_max_complexity: usize,
    pub http_body_limit: usize,
}

fn var(name: &'static str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

fn parse<T: std::str::FromStr>(name: &'static str, default: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let value = var(name, default);
    value.parse().map_err(|e: T::Err| ConfigError { name, value, why: e.to_string() })
}

fn millis(name: &'static str, default: &str) -> Result<Duration, ConfigError> {
    parse::<u64>(name, default).map(Duration::from_millis)
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let broker_name = var("BROKER", "nats");
        let broker = BrokerKind::parse(&broker_name).ok_or_else(|| ConfigError {
            name: "BROKER",
            value: broker_name.clone(),
            why: "supported: nats, rabbitmq, kafka".into(),
        })?;
        let namespace = var("BROKER_NAMESPACE", "ecommerce_saga");
        if namespace.is_empty() || !namespace.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError {
                name: "BROKER_NAMESPACE",
                value: namespace,
                why: "letters, digits and _ only".into(),
            });
        }
        Ok(Config {
            database_url: var("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ecommerce_saga"),
            database_max_connections: parse("DATABASE_MAX_CONNECTIONS", "10")?,
            mongo_url: var("MONGO_URL", "mongodb://127.0.0.1:27017"),
            mongo_database: var("MONGO_DATABASE", "ecommerce_saga"),
            broker,
            nats_url: var("NATS_URL", "nats://127.0.0.1:4222"),
            rabbitmq_url: var("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            kafka_brokers: var("KAFKA_BROKERS", "127.0.0.1:9092"),
            max_deliveries: parse("MAX_DELIVERIES", "10")?,
            ack_wait: millis("BROKER_ACK_WAIT_MS", "30000")?,
            chaos_duplicate: parse("CHAOS_DUPLICATE", "false")?,
            chaos_reorder_max: millis("CHAOS_REORDER_MAX_MS", "200")?,
            broker_namespace: namespace,
            api_addr: parse("API_ADDR", "127.0.0.1:8080")?,
            jwt_issuer: var("JWT_ISSUER", "ecommerce-saga"),
            jwt_audience: var("JWT_AUDIENCE", "ecommerce-saga-api"),
            access_token_ttl: Duration::from_secs(parse("ACCESS_TOKEN_TTL_SECS", "900")?),
            saga: SagaTiming {
                step_timeout: millis("SAGA_STEP_TIMEOUT_MS", "5000")?,
                max_attempts: parse("SAGA_STEP_MAX_ATTEMPTS", "3")?,
                compensation_timeout: millis("SAGA_COMPENSATION_TIMEOUT_MS", "5000")?,
            },
            payment_gateway_timeout: millis("PAYMENT_GATEWAY_TIMEOUT_MS", "3000")?,
            outbox_poll_interval: millis("OUTBOX_POLL_MS", "50")?,
            timeout_scan_interval: millis("SAGA_TIMEOUT_SCAN_MS", "250")?,
            worker_concurrency: parse("WORKER_CONCURRENCY", "16")?,
            graphql_max_depth: parse("GRAPHQL_MAX_DEPTH", "12")?,
            graphql_max_complexity: parse("GRAPHQL_MAX_COMPLEXITY", "1000")?,
            http_body_limit: parse("HTTP_BODY_LIMIT_BYTES", "65536")?,
        })
    }
}
