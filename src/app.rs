//! The roles (API, orchestrator, workers) as functions the binaries and the tests share.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthService, KeyRing};
use crate::broker::consumer::{
    self, counted, counted_batch, BatchHandler, ConsumerSpec, ConsumerStats, Handler,
};
use crate::broker::{self, BrokerError, Topic, Transport};
use crate::cart::worker::{self as cart_worker, CartWorker};
use crate::config::Config;
use crate::graphql::{build_schema, ApiState};
use crate::http::{router, HttpState};
use crate::metrics::Metrics;
use crate::mongo::Mongo;
use crate::payment::worker::{self as payment_worker, PaymentWorker};
use crate::payment::PaymentGateway;
use crate::saga::feed::EventFeed;
use crate::saga::{orchestrator, SagaDefinition};
use crate::stock::worker::{self as stock_worker, StockWorker};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot reach {target}: {source}")]
    Postgres { target: String, source: sqlx::Error },
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot reach MongoDB at {url}: {source}")]
    Mongo { url: String, source: mongodb::error::Error },
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("cannot load signing keys: {0}")]
    Keys(#[from] crate::auth::keys::KeyError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot serve metrics on {addr}: {source} (set {var} to another address, or to `off`)")]
    MetricsListen { addr: std::net::SocketAddr, var: &'static str, source: std::io::Error },
}

/// Connections every role needs.
#[derive(Clone)]
pub struct Services {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub mongo: Mongo,
    pub transport: Arc<dyn Transport>,
    pub saga: Arc<SagaDefinition>,
    /// This process's metrics, shared by its roles.
    pub metrics: Arc<Metrics>,
}

impl Services {
    pub async fn connect(config: Config) -> Result<Self, StartupError> {
        let target = crate::postgres::describe(&config.database_url);
        let pool = crate::postgres::connect(&config)
            .await
            .map_err(|source| StartupError::Postgres { target, source })?;
        let mongo = Mongo::connect(&config)
            .await
            .map_err(|source| StartupError::Mongo { url: config.mongo_url.clone(), source })?;
        mongo.ping().await.map_err(|source| StartupError::Mongo { url: config.mongo_url.clone(), source })?;
        let transport = broker::connect(&config).await?;
        let saga = Arc::new(SagaDefinition::checkout(config.saga.clone()));
        let metrics = Arc::new(Metrics::new());
        Ok(Services { config: Arc::new(config), pool, mongo, transport, saga, metrics })
    }

    /// Logs one line saying what this process runs and what it is connected to, with versions.
    pub async fn announce(&self, roles: &str) {
        let c = &self.config;
        let pg_version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|_| "unknown".into());
        let mongo_version = self
            .mongo
            .db
            .run_command(mongodb::bson::doc! { "buildInfo": 1 })
            .await
            .ok()
            .and_then(|d| d.get_str("version").ok().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        let broker = match c.broker {
            crate::config::BrokerKind::Nats => format!("NATS JetStream at {}", c.nats_url),
            crate::config::BrokerKind::RabbitMq => "RabbitMQ".to_string(), // the URL carries credentials
            crate::config::BrokerKind::Kafka => format!("Kafka at {}", c.kafka_brokers),
            crate::config::BrokerKind::Memory => "in-process queues".to_string(),
        };
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            roles,
            broker = %broker,
            namespace = %c.broker_namespace,
            postgres = %format!("{} (server {pg_version})", crate::postgres::describe(&c.database_url)),
            mongo = %format!("database {} (server {mongo_version})", c.mongo_database),
            env = ?c.app_env,
            "ecommerce-saga starting"
        );
    }
}

/// Serves the API on `listener` until `shutdown`. Also relays the outbox (the API writes each
/// saga's first command there).
pub async fn run_api(
    s: Services,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartupError> {
    let keys = KeyRing::load(
        s.pool.clone(),
        s.config.jwt_issuer.clone(),
        s.config.jwt_audience.clone(),
        s.config.access_token_ttl,
    )
    .await?;
    let keys = Arc::new(keys);
    let auth = Arc::new(AuthService {
        pool: s.pool.clone(),
        keys: keys.clone(),
        refresh_ttl: s.config.refresh_token_ttl,
        limits: s.config.rate_limits,
    });
    let api = ApiState {
        pool: s.pool.clone(),
        mongo: s.mongo.clone(),
        keys,
        auth,
        saga: s.saga.clone(),
        feed: EventFeed::start(s.pool.clone(), s.transport.clone(), s.metrics.clone(), shutdown.clone()),
        config: s.config.clone(),
        metrics: s.metrics.clone(),
    };
    let schema = build_schema(Some(api.clone()), &s.config);
    let app = router(HttpState { api, schema, transport: s.transport.clone(), metrics: s.metrics.clone() });
    let relay = tokio::spawn(crate::postgres::outbox::run_relay(
        s.pool.clone(),
        s.transport.clone(),
        s.config.outbox_poll_interval,
        shutdown.clone(),
    ));
    let pruner =
        tokio::spawn(prune_rate_limits(s.pool.clone(), s.config.rate_limits.window, shutdown.clone()));
    let stop = shutdown.clone();
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await?;
    pruner.abort();
    shutdown.cancel();
    let _ = relay.await;
    Ok(())
}

/// Serves `/metrics` (and `/healthz`) on `addr` until `shutdown`, for a role without the API.
/// `var` names the setting, for the error when the address is taken. Returns the bound address.
pub async fn serve_metrics(
    s: &Services,
    addr: std::net::SocketAddr,
    var: &'static str,
    shutdown: CancellationToken,
) -> Result<std::net::SocketAddr, StartupError> {
    let listener =
        TcpListener::bind(addr).await.map_err(|source| StartupError::MetricsListen { addr, var, source })?;
    let bound = listener.local_addr()?;
    let app = crate::metrics::router(s.metrics.clone(), s.pool.clone());
    tokio::spawn(async move {
        let stop = shutdown.cancelled_owned();
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
            tracing::warn!(error = %e, "metrics listener failed");
        }
    });
    tracing::info!(%bound, "serving /metrics");
    Ok(bound)
}

/// Removes rate-limit windows that ended, once per window.
async fn prune_rate_limits(pool: PgPool, window: std::time::Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(window.max(std::time::Duration::from_secs(1)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = crate::auth::rate_limit::prune(&pool, window).await {
            tracing::warn!(error = %e, "pruning rate limits failed");
        }
    }
}

pub async fn run_orchestrator(s: Services, stats: Arc<ConsumerStats>, shutdown: CancellationToken) {
    s.metrics.track_consumer(orchestrator::CONSUMER, stats.clone());
    orchestrator::run(
        s.pool.clone(),
        s.transport.clone(),
        s.saga.clone(),
        &s.config,
        stats,
        s.metrics.clone(),
        shutdown,
    )
    .await
}

/// Runs the stock, payment and cart workers and an outbox relay until `shutdown`.
pub async fn run_workers(
    s: Services,
    gateway: Arc<dyn PaymentGateway>,
    stats: Arc<ConsumerStats>,
    shutdown: CancellationToken,
) {
    let stock = StockWorker::new(s.pool.clone());
    let payment = PaymentWorker::new(s.pool.clone(), gateway, s.config.payment_gateway_timeout);
    let cart = CartWorker::new(s.mongo.clone());
    let n = s.config.worker_concurrency;
    s.metrics.track_consumer("workers", stats.clone());
    let stock_batch = {
        let stock = stock.clone();
        counted_batch(stats.clone(), move |batch| {
            let w = stock.clone();
            Box::pin(async move { w.handle_batch(batch).await })
        })
    };
    let consumers: Vec<(&str, Topic, Handler, Option<BatchHandler>)> = vec![
        (
            stock_worker::CONSUMER,
            Topic::StockCommands,
            counted(stats.clone(), move |e| {
                let w = stock.clone();
                Box::pin(async move { w.handle(e).await })
            }),
            Some(stock_batch),
        ),
        (
            payment_worker::CONSUMER,
            Topic::PaymentCommands,
            counted(stats.clone(), move |e| {
                let w = payment.clone();
                Box::pin(async move { w.handle(e).await })
            }),
            None,
        ),
        (
            cart_worker::CONSUMER,
            Topic::OrderEvents,
            counted(stats.clone(), move |e| {
                let w = cart.clone();
                Box::pin(async move { w.handle(e).await })
            }),
            None,
        ),
    ];
    let mut tasks: Vec<_> = consumers
        .into_iter()
        .map(|(name, topic, handler, batch)| {
            let spec = ConsumerSpec {
                name: name.to_string(),
                topic,
                concurrency: if batch.is_some() { s.config.consumer_batches_in_flight } else { n },
                max_batch: s.config.consumer_max_batch,
                max_deliveries: s.config.max_deliveries,
                metrics: s.metrics.clone(),
            };
            let (transport, shutdown) = (s.transport.clone(), shutdown.clone());
            match batch {
                Some(batch) => tokio::spawn(consumer::run_batched(transport, spec, handler, batch, shutdown)),
                None => tokio::spawn(consumer::run(transport, spec, handler, shutdown)),
            }
        })
        .collect();
    tasks.push(tokio::spawn(crate::postgres::outbox::run_relay(
        s.pool.clone(),
        s.transport.clone(),
        s.config.outbox_poll_interval,
        shutdown.clone(),
    )));
    futures::future::join_all(tasks).await;
}

/// Cancels `token` on SIGINT or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down: finishing in-flight work");
        token.cancel();
    });
}

/// Logs to stderr; `RUST_LOG` filters (default `info`), `LOG_FORMAT=json` for JSON lines.
/// Logs only, no span export (tests, short commands).
pub fn init_tracing() {
    let _ = crate::telemetry::init("ecommerce-saga", None);
}
