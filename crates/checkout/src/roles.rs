//! The orchestrator and worker roles as functions the binaries and the tests share, and the
//! connections they need (PostgreSQL and the broker; no MongoDB).

use ecommerce_platform::config::ExposeSecret;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use ecommerce_platform::broker::{self, BrokerError, Topic, Transport};
use ecommerce_platform::config::{redact_url, BrokerKind, Config};
use ecommerce_platform::consumer::{self, counted, counted_batch, BatchHandler, ConsumerSpec, Handler};
use ecommerce_platform::metrics::{ConsumerStats, Metrics};

use crate::payment::worker::{self as payment_worker, PaymentWorker};
use crate::payment::PaymentGateway;
use crate::saga::{orchestrator, Sagas};
use crate::stock::worker::{self as stock_worker, StockWorker};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot reach {target}: {source}")]
    Postgres { target: String, source: sqlx::Error },
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot serve metrics on {addr}: {source} (set {var} to another address, or to `off`)")]
    MetricsListen { addr: std::net::SocketAddr, var: &'static str, source: std::io::Error },
}

/// Connections every role needs: PostgreSQL, the broker, the saga definition and this process's
/// metrics. The API and the cart worker also read MongoDB; they connect to it themselves.
#[derive(Clone)]
pub struct Services {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub transport: Arc<dyn Transport>,
    /// Every saga definition the engine runs.
    pub sagas: Arc<Sagas>,
    /// This process's metrics, shared by its roles.
    pub metrics: Arc<Metrics>,
}

impl Services {
    pub async fn connect(config: Config) -> Result<Self, StartupError> {
        let target = ecommerce_platform::postgres::describe(config.postgres.url.expose_secret());
        let pool = ecommerce_platform::postgres::connect(&config)
            .await
            .map_err(|source| StartupError::Postgres { target, source })?;
        let transport = broker::connect(&config).await?;
        let sagas = Arc::new(Sagas::new(config.saga.clone()));
        let metrics = Arc::new(Metrics::new());
        Ok(Services { config: Arc::new(config), pool, transport, sagas, metrics })
    }

    /// Logs one line saying what this process runs and what it is connected to, with versions.
    /// `documents` describes the MongoDB connection of the roles that have one.
    pub async fn announce(&self, roles: &str, documents: Option<&str>) {
        let c = &self.config;
        let pg_version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|_| "unknown".into());
        let broker = match c.broker.kind {
            BrokerKind::Nats => {
                format!("NATS JetStream at {}", redact_url(c.broker.nats_url.expose_secret()))
            }
            BrokerKind::RabbitMq => {
                format!("RabbitMQ at {}", redact_url(c.broker.rabbitmq_url.expose_secret()))
            }
            BrokerKind::Kafka => format!("Kafka at {}", c.broker.kafka_brokers),
            BrokerKind::Nsq => format!("NSQ at {}", c.broker.nsqd_tcp_addresses.join(",")),
            BrokerKind::Memory => "in-process queues".to_string(),
        };
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            roles,
            broker = %broker,
            namespace = %c.broker.namespace,
            postgres = %format!(
                "{} (server {pg_version})",
                ecommerce_platform::postgres::describe(c.postgres.url.expose_secret())
            ),
            mongo = documents.unwrap_or("not used"),
            env = ?c.app_env,
            "ecommerce-saga starting"
        );
    }
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
    let app = ecommerce_platform::metrics::router(s.metrics.clone(), s.pool.clone(), s.transport.clone());
    tokio::spawn(async move {
        let stop = shutdown.cancelled_owned();
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
            tracing::warn!(error = %e, "metrics listener failed");
        }
    });
    tracing::info!(%bound, "serving /metrics");
    Ok(bound)
}

pub async fn run_orchestrator(s: Services, stats: Arc<ConsumerStats>, shutdown: CancellationToken) {
    s.metrics.track_consumer(orchestrator::CONSUMER, stats.clone());
    tokio::spawn(ecommerce_platform::postgres::inbox::keep_pruned(
        s.pool.clone(),
        vec![orchestrator::CONSUMER.to_string()],
        s.transport.max_message_age(),
        s.config.retention,
        s.metrics.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(crate::saga::store::keep_histories_pruned(
        s.pool.clone(),
        s.config.retention.saga_history,
        s.config.retention,
        s.metrics.clone(),
        shutdown.clone(),
    ));
    orchestrator::run(
        s.pool.clone(),
        s.transport.clone(),
        s.sagas.clone(),
        &s.config,
        stats,
        s.metrics.clone(),
        shutdown,
    )
    .await
}

/// One worker: its durable consumer name, the topic it reads, its handler, and a handler for a
/// batch of messages in one transaction where it has one.
pub struct Worker {
    pub name: &'static str,
    pub topic: Topic,
    pub handler: Handler,
    pub batch: Option<BatchHandler>,
}

/// The checkout's workers: stock and payment.
pub fn checkout_workers(
    s: &Services,
    gateway: Arc<dyn PaymentGateway>,
    stats: &Arc<ConsumerStats>,
    shutdown: &CancellationToken,
) -> Vec<Worker> {
    let stock = StockWorker::new(s.pool.clone());
    let payment = PaymentWorker::new(s.pool.clone(), gateway, s.config.workers.payment_gateway_timeout);
    // What the provider holds for orders that will not capture it is let go (webhooks ask).
    let releasing = payment.clone();
    crate::saga::feed::every(RELEASE_INTERVAL, shutdown.clone(), "releasing payments", move || {
        let w = releasing.clone();
        async move { w.release_requested().await.map(|_| ()) }
    });
    let stock_batch = {
        let stock = stock.clone();
        counted_batch(stats.clone(), move |batch| {
            let w = stock.clone();
            Box::pin(async move { w.handle_batch(batch).await })
        })
    };
    vec![
        Worker {
            name: stock_worker::CONSUMER,
            topic: Topic::StockCommands,
            handler: counted(stats.clone(), move |e| {
                let w = stock.clone();
                Box::pin(async move { w.handle(e).await })
            }),
            batch: Some(stock_batch),
        },
        Worker {
            name: payment_worker::CONSUMER,
            topic: Topic::PaymentCommands,
            handler: counted(stats.clone(), move |e| {
                let w = payment.clone();
                Box::pin(async move { w.handle(e).await })
            }),
            batch: None,
        },
    ]
}

/// How often the payment workers look for authorizations to release at the provider.
pub const RELEASE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs `workers` and an outbox relay until `shutdown`; `stats` is their shared counter.
pub async fn run_workers(
    s: Services,
    workers: Vec<Worker>,
    stats: Arc<ConsumerStats>,
    shutdown: CancellationToken,
) {
    s.metrics.track_consumer("workers", stats);
    let consumers = workers.iter().map(|w| w.name.to_string()).collect();
    let pruner = tokio::spawn(ecommerce_platform::postgres::inbox::keep_pruned(
        s.pool.clone(),
        consumers,
        s.transport.max_message_age(),
        s.config.retention,
        s.metrics.clone(),
        shutdown.clone(),
    ));
    let mut tasks: Vec<_> = workers
        .into_iter()
        .map(|w| {
            let spec = ConsumerSpec {
                name: w.name.to_string(),
                topic: w.topic,
                concurrency: match w.batch {
                    Some(_) => s.config.consumers.batches_in_flight,
                    None => s.config.consumers.concurrency,
                },
                max_batch: s.config.consumers.max_batch,
                max_deliveries: s.config.broker.max_deliveries,
                metrics: s.metrics.clone(),
            };
            let (transport, shutdown) = (s.transport.clone(), shutdown.clone());
            match w.batch {
                Some(batch) => {
                    tokio::spawn(consumer::run_batched(transport, spec, w.handler, batch, shutdown))
                }
                None => tokio::spawn(consumer::run(transport, spec, w.handler, shutdown)),
            }
        })
        .collect();
    tasks.push(tokio::spawn(ecommerce_platform::postgres::outbox::run_relay(
        s.pool.clone(),
        s.transport.clone(),
        s.config.outbox.poll_interval,
        shutdown.clone(),
    )));
    tasks.push(pruner);
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
