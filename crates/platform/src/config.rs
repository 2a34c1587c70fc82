//! Typed configuration, read from the environment. `.env.example` lists every variable with its default.

use std::net::SocketAddr;
use std::time::Duration;

pub use secrecy::{ExposeSecret, SecretString};

use ecommerce_core::saga::definition::{SagaDefinition, SagaTiming};

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
    /// In-process queues: every role in one process (`api all`), nothing durable.
    Memory,
}

impl BrokerKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "nats" => Some(BrokerKind::Nats),
            "rabbitmq" => Some(BrokerKind::RabbitMq),
            "kafka" => Some(BrokerKind::Kafka),
            "memory" => Some(BrokerKind::Memory),
            _ => None,
        }
    }
}

/// The payment provider the payment worker talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentGatewayKind {
    /// The deterministic built-in gateway: the payment token decides the outcome (no money moves).
    Test,
}

/// Where the service runs; decides the defaults of the development conveniences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Deliveries of one message before it is moved to the dead-letter topic.
    pub max_deliveries: u64,
    /// How long a broker waits for an ack before redelivering (NATS).
    pub ack_wait: Duration,
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
    pub auth: AuthConfig,
    /// Proxies in front of the API that append the address they received a request from to
    /// `X-Forwarded-For`; 0 means the header is ignored.
    pub trusted_proxy_hops: usize,
    pub graphql: GraphqlConfig,
    pub http_body_limit: usize,
    /// Origins a browser may call the API from (CORS); empty: the API's own origin only, `*`:
    /// any (tokens travel in the `Authorization` header, never in cookies).
    pub cors_allowed_origins: Vec<String>,
    /// gzip for responses when the client accepts it.
    pub compression: bool,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
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

#[derive(Debug, Clone, Copy)]
pub struct WorkersConfig {
    /// Where the workers binary serves `/metrics`; `None` (`off`) for nowhere.
    pub metrics_addr: Option<SocketAddr>,
    pub payment_gateway: PaymentGatewayKind,
    pub payment_gateway_timeout: Duration,
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

/// Settings no longer read, what replaced them, and the value that means the same as leaving them
/// out. Any other value is an error rather than a silent no-op.
pub const RETIRED: &[(&str, &str, &str)] = &[(
    "TRUST_FORWARDED_FOR",
    "set TRUSTED_PROXY_HOPS to the number of proxies in front of the API (1 for one proxy)",
    "false",
)];

/// Where settings come from: the process environment, or a map in tests.
struct Source<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Source<'_> {
    /// The value, or `default` when unset or empty.
    fn var(&self, name: &'static str, default: &str) -> String {
        (self.0)(name).filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
    }

    fn secret(&self, name: &'static str, default: &str) -> SecretString {
        SecretString::from(self.var(name, default))
    }

    fn parse<T: std::str::FromStr>(&self, name: &'static str, default: &str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let value = self.var(name, default);
        value.parse().map_err(|e: T::Err| ConfigError { name, value, why: e.to_string() })
    }

    /// An address, or `None` when the value is `off`.
    fn addr_or_off(&self, name: &'static str, default: &str) -> Result<Option<SocketAddr>, ConfigError> {
        if self.var(name, default) == "off" {
            return Ok(None);
        }
        self.parse(name, default).map(Some)
    }

    fn millis(&self, name: &'static str, default: &str) -> Result<Duration, ConfigError> {
        self.parse::<u64>(name, default).map(Duration::from_millis)
    }
}

/// `SAGA_NEEDS_ATTENTION_STEPS`: comma-separated names of the checkout saga's steps, as its
/// definition names them.
fn steps(value: &str) -> Result<Vec<String>, ConfigError> {
    let checkout = SagaDefinition::checkout(SagaTiming::default());
    let known: Vec<&str> = checkout.steps.iter().map(|s| s.name).collect();
    let names: Vec<String> =
        value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    match names.iter().find(|n| !known.contains(&n.as_str())) {
        Some(bad) => Err(ConfigError {
            name: "SAGA_NEEDS_ATTENTION_STEPS",
            value: value.to_string(),
            why: format!("unknown step {bad}; steps are {}", known.join(", ")),
        }),
        None => Ok(names),
    }
}

/// `CORS_ALLOWED_ORIGINS`: comma-separated origins (`https://shop.example.com`, with a port when
/// it is not the scheme's), or `*`.
fn origins(value: &str) -> Result<Vec<String>, ConfigError> {
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
        Some(bad) => Err(ConfigError {
            name: "CORS_ALLOWED_ORIGINS",
            value: value.to_string(),
            why: format!("{bad} is not an origin: scheme://host[:port] without a path, or *"),
        }),
        None => Ok(origins),
    }
}

impl Config {
    /// Refuses the in-process broker for a role running in its own process: it would talk to
    /// nobody.
    pub fn require_shared_broker(&self, role: &str) -> Result<(), ConfigError> {
        if self.broker.kind == BrokerKind::Memory {
            return Err(ConfigError {
                name: "BROKER",
                value: "memory".into(),
                why: format!(
                    "the in-process broker only connects roles in one process (`api all`), not {role}"
                ),
            });
        }
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
                return Err(ConfigError { name, value, why: format!("no longer read: {instead}") });
            }
        }
        let src = Source(lookup);
        let var = |name, default| src.var(name, default);
        let broker_name = var("BROKER", "nats");
        let broker = BrokerKind::parse(&broker_name).ok_or_else(|| ConfigError {
            name: "BROKER",
            value: broker_name.clone(),
            why: "supported: nats, rabbitmq, kafka, memory (api all only)".into(),
        })?;
        let namespace = var("BROKER_NAMESPACE", "ecommerce_saga");
        if namespace.is_empty() || !namespace.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError {
                name: "BROKER_NAMESPACE",
                value: namespace,
                why: "letters, digits and _ only".into(),
            });
        }
        let env_name = var("APP_ENV", "development");
        let app_env = match env_name.as_str() {
            "development" => AppEnv::Development,
            "production" => AppEnv::Production,
            _ => {
                return Err(ConfigError {
                    name: "APP_ENV",
                    value: env_name,
                    why: "development or production".into(),
                })
            }
        };
        let gateway_name = var("PAYMENT_GATEWAY", "test");
        let payment_gateway = match gateway_name.as_str() {
            "test" => PaymentGatewayKind::Test,
            _ => {
                return Err(ConfigError {
                    name: "PAYMENT_GATEWAY",
                    value: gateway_name,
                    why: "supported: test (the deterministic built-in gateway)".into(),
                })
            }
        };
        let dev_default = if app_env == AppEnv::Development { "true" } else { "false" };
        Ok(Config {
            app_env,
            postgres: PostgresConfig {
                url: src.secret("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ecommerce_saga"),
                max_connections: src.parse("DATABASE_MAX_CONNECTIONS", "10")?,
            },
            mongo: MongoConfig {
                url: src.secret("MONGO_URL", "mongodb://127.0.0.1:27017"),
                database: var("MONGO_DATABASE", "ecommerce_saga"),
            },
            broker: BrokerConfig {
                kind: broker,
                namespace,
                nats_url: src.secret("NATS_URL", "nats://127.0.0.1:4222"),
                rabbitmq_url: src.secret("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
                kafka_brokers: var("KAFKA_BROKERS", "127.0.0.1:9092"),
                max_deliveries: src.parse("MAX_DELIVERIES", "10")?,
                ack_wait: src.millis("BROKER_ACK_WAIT_MS", "30000")?,
                chaos: ChaosConfig {
                    duplicate: src.parse("CHAOS_DUPLICATE", "false")?,
                    reorder_max: src.millis("CHAOS_REORDER_MAX_MS", "200")?,
                },
            },
            saga: SagaTiming {
                step_timeout: src.millis("SAGA_STEP_TIMEOUT_MS", "5000")?,
                max_attempts: src.parse("SAGA_STEP_MAX_ATTEMPTS", "3")?,
                compensation_timeout: src.millis("SAGA_COMPENSATION_TIMEOUT_MS", "5000")?,
                retry_backoff: src.millis("SAGA_STEP_RETRY_BACKOFF_MS", "500")?,
                compensation_max_attempts: src.parse("SAGA_COMPENSATION_MAX_ATTEMPTS", "20")?,
                needs_attention_steps: steps(&var("SAGA_NEEDS_ATTENTION_STEPS", ""))?,
            },
            outbox: OutboxConfig { poll_interval: src.millis("OUTBOX_POLL_MS", "200")? },
            consumers: ConsumerConfig {
                concurrency: src.parse("WORKER_CONCURRENCY", "16")?,
                max_batch: src.parse("CONSUMER_MAX_BATCH", "64")?,
                batches_in_flight: src.parse("CONSUMER_BATCHES_IN_FLIGHT", "2")?,
            },
            telemetry: TelemetryConfig {
                otlp_endpoint: Some(var("OTEL_EXPORTER_OTLP_ENDPOINT", "")).filter(|v| !v.is_empty()),
            },
            api: ApiConfig {
                addr: src.parse("API_ADDR", "127.0.0.1:8080")?,
                auth: AuthConfig {
                    jwt_issuer: var("JWT_ISSUER", "ecommerce-saga"),
                    jwt_audience: var("JWT_AUDIENCE", "ecommerce-saga-api"),
                    access_token_ttl: Duration::from_secs(src.parse("ACCESS_TOKEN_TTL_SECS", "900")?),
                    refresh_token_ttl: Duration::from_secs(src.parse("REFRESH_TOKEN_TTL_SECS", "2592000")?),
                    signing_keys_refresh: Duration::from_secs(src.parse("SIGNING_KEYS_REFRESH_SECS", "5")?),
                    rate_limits: RateLimits {
                        window: Duration::from_secs(src.parse("RATE_LIMIT_WINDOW_SECS", "300")?),
                        login_per_account: src.parse("LOGIN_MAX_PER_ACCOUNT", "10")?,
                        login_per_address: src.parse("LOGIN_MAX_PER_ADDRESS", "100")?,
                        register_per_address: src.parse("REGISTER_MAX_PER_ADDRESS", "20")?,
                    },
                },
                trusted_proxy_hops: src.parse("TRUSTED_PROXY_HOPS", "0")?,
                graphql: GraphqlConfig {
                    max_depth: src.parse("GRAPHQL_MAX_DEPTH", "12")?,
                    max_complexity: src.parse("GRAPHQL_MAX_COMPLEXITY", "1000")?,
                    max_aliases: src.parse("GRAPHQL_MAX_ALIASES", "30")?,
                    max_batch: src.parse("GRAPHQL_MAX_BATCH", "10")?,
                    introspection: src.parse("GRAPHQL_INTROSPECTION", dev_default)?,
                    playground: src.parse("GRAPHQL_PLAYGROUND", dev_default)?,
                },
                http_body_limit: src.parse("HTTP_BODY_LIMIT_BYTES", "65536")?,
                cors_allowed_origins: origins(&var("CORS_ALLOWED_ORIGINS", ""))?,
                compression: src.parse("HTTP_COMPRESSION", "true")?,
            },
            orchestrator: OrchestratorConfig {
                metrics_addr: src.addr_or_off("ORCHESTRATOR_METRICS_ADDR", "127.0.0.1:9101")?,
                timeout_scan_interval: src.millis("SAGA_TIMEOUT_SCAN_MS", "250")?,
            },
            workers: WorkersConfig {
                metrics_addr: src.addr_or_off("WORKERS_METRICS_ADDR", "127.0.0.1:9102")?,
                payment_gateway,
                payment_gateway_timeout: src.millis("PAYMENT_GATEWAY_TIMEOUT_MS", "3000")?,
            },
        })
    }
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
        let prod = config(&[("APP_ENV", "production")]).unwrap();
        assert!(!prod.api.graphql.introspection && !prod.api.graphql.playground);
        let opted_in = config(&[("APP_ENV", "production"), ("GRAPHQL_INTROSPECTION", "true")]).unwrap();
        assert!(opted_in.api.graphql.introspection && !opted_in.api.graphql.playground);
        let empty = config(&[("APP_ENV", "production"), ("GRAPHQL_PLAYGROUND", "")]).unwrap();
        assert!(!empty.api.graphql.playground, "empty means the default");
    }

    /// `.env.example` names every variable the code reads, and its values are the defaults.
    #[test]
    fn env_example_lists_every_variable_with_its_default() {
        let example: std::collections::HashMap<String, String> = include_str!("../../../.env.example")
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let read = std::sync::Mutex::new(Vec::new());
        let defaults = Config::from_lookup(&|name| {
            read.lock().unwrap().push(name.to_string());
            None
        })
        .unwrap();
        for name in read.lock().unwrap().iter().filter(|n| !RETIRED.iter().any(|(r, ..)| r == n)) {
            assert!(example.contains_key(name), "{name} is read but missing from .env.example");
        }
        // And says what each means: every group of variables (lines between blank lines) has a comment.
        for block in include_str!("../../../.env.example").split("\n\n") {
            let has_comment = block.lines().any(|l| l.trim_start().starts_with('#'));
            let vars: Vec<&str> = block.lines().filter(|l| !l.starts_with('#') && l.contains('=')).collect();
            assert!(vars.is_empty() || has_comment, "undocumented in .env.example: {vars:?}");
        }
        let from_example = Config::from_lookup(&|name| example.get(name).cloned()).unwrap();
        // Debug shows every setting but the secrets; those are compared as they are.
        let all = |c: &Config| {
            let secrets = [&c.postgres.url, &c.mongo.url, &c.broker.nats_url, &c.broker.rabbitmq_url];
            format!("{c:?} {:?}", secrets.map(|s| s.expose_secret().to_string()))
        };
        assert_eq!(all(&defaults), all(&from_example), ".env.example values differ from defaults");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = config(&[("APP_ENV", "staging")]).unwrap_err();
        assert_eq!(e.name, "APP_ENV");
        let e = config(&[("LOGIN_MAX_PER_ACCOUNT", "-1")]).unwrap_err();
        assert_eq!(e.name, "LOGIN_MAX_PER_ACCOUNT");
        let e = config(&[("BROKER", "kafkaesque")]).unwrap_err();
        assert_eq!(e.name, "BROKER");
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
}
