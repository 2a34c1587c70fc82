//! The API role: GraphQL over HTTP on a listener, with the outbox relay that publishes the first
//! command of each saga placed here. The orchestrator and worker roles are in the checkout and
//! storefront crates.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use ecommerce_checkout::order::live::OrderFeed;
use ecommerce_checkout::roles::{Services, StartupError};
use ecommerce_checkout::saga::feed::EventFeed;
use ecommerce_storefront::cart::live::CartFeed;
use ecommerce_storefront::mongo::Mongo;

use crate::auth::{AuthService, KeyRing};
use crate::graphql::persisted::{self, PersistedQueries};
use crate::graphql::{build_schema, ApiState};
use crate::http::{admin_router, router, HttpState};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("cannot load signing keys: {0}")]
    Keys(#[from] crate::auth::keys::KeyError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves the API on `listener` (and its admin routes on `admin`) until `shutdown`. Also relays
/// the outbox (the API writes each saga's first command there).
pub async fn run_api(
    s: Services,
    mongo: Mongo,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), ApiError> {
    let keys = KeyRing::load(s.pool.clone(), &s.config.api.auth).await?;
    let keys = Arc::new(keys);
    let auth = Arc::new(AuthService {
        pool: s.pool.clone(),
        keys: keys.clone(),
        refresh_ttl: s.config.api.auth.refresh_token_ttl,
        refresh_reuse_grace: s.config.api.auth.refresh_reuse_grace,
        limits: s.config.api.auth.rate_limits,
    });
    let feed = EventFeed::start(s.pool.clone(), s.transport.clone(), s.metrics.clone(), shutdown.clone());
    let api = ApiState {
        pool: s.pool.clone(),
        orders: OrderFeed::start(s.pool.clone(), feed.clone(), shutdown.clone()),
        carts: CartFeed::start(mongo.clone(), feed.clone(), shutdown.clone()),
        feed,
        mongo,
        keys,
        auth,
        sagas: s.sagas.clone(),
        config: s.config.clone(),
        metrics: s.metrics.clone(),
        persisted_queries: PersistedQueries::new(persisted::MAX_BYTES, persisted::MAX_ENTRIES),
    };
    let schema = build_schema(Some(api.clone()), &s.config);
    let connections = Arc::new(crate::ws::Connections::new(s.config.api.websocket));
    let sessions = crate::ws::Sessions::start(api.auth.clone(), shutdown.clone());
    let state = HttpState {
        api,
        schema,
        connections,
        sessions,
        transport: s.transport.clone(),
        metrics: s.metrics.clone(),
    };
    if let Some(admin) = admin {
        let routes = admin_router(state.clone());
        let stop = shutdown.clone().cancelled_owned();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(admin, routes).with_graceful_shutdown(stop).await {
                tracing::warn!(error = %e, "admin listener failed");
            }
        });
    }
    let app = router(state);
    let relay = tokio::spawn(ecommerce_platform::postgres::outbox::run_relay(
        s.pool.clone(),
        s.transport.clone(),
        s.config.outbox.poll_interval,
        shutdown.clone(),
    ));
    let pruner = tokio::spawn(prune_rate_limits(
        s.pool.clone(),
        s.config.api.auth.rate_limits.window,
        shutdown.clone(),
    ));
    let sessions_pruner =
        tokio::spawn(prune_sessions(s.pool.clone(), s.config.retention, s.metrics.clone(), shutdown.clone()));
    let api_config = &s.config.api;
    crate::serve::serve(
        listener,
        app,
        api_config.header_timeout,
        api_config.request_timeout,
        shutdown.clone(),
    )
    .await;
    pruner.abort();
    sessions_pruner.abort();
    shutdown.cancel();
    let _ = relay.await;
    Ok(())
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

/// Deletes expired refresh tokens and ended sessions once they are no use, every retention
/// interval.
async fn prune_sessions(
    pool: PgPool,
    config: ecommerce_platform::config::RetentionConfig,
    metrics: Arc<ecommerce_platform::metrics::Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = shutdown.cancelled() => return,
        }
        match crate::auth::service::prune_sessions(&pool, config.sessions, config.batch).await {
            Ok((tokens, sessions)) => {
                metrics.retention_deleted("refresh_tokens", tokens);
                metrics.retention_deleted("sessions", sessions);
            }
            Err(e) => tracing::warn!(error = %e, "pruning sessions failed"),
        }
    }
}

/// Logs to stderr; `RUST_LOG` filters (default `info`), `LOG_FORMAT=json` for JSON lines.
/// Logs only, no span export (tests, short commands).
pub fn init_tracing() {
    let _ = ecommerce_platform::telemetry::init("ecommerce-saga", None);
}
