//! The workers binary: stock, payment and cart workers, executing commands idempotently and
//! replying through the outbox. It connects to PostgreSQL, the broker and (for carts) MongoDB.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use ecommerce_checkout::roles::{self, Services};
use ecommerce_platform::config::{redact_url, Config, ExposeSecret};
use ecommerce_platform::metrics::ConsumerStats;
use ecommerce_storefront::mongo::Mongo;
use tokio_util::sync::CancellationToken;

/// Runs the stock, payment and cart workers. Configuration comes from the environment (see .env.example).
#[derive(Parser)]
#[command(name = "workers", version)]
struct Cli {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Cli::parse();
    let config = Config::from_env()?;
    let telemetry =
        ecommerce_platform::telemetry::init("workers", config.telemetry.otlp_endpoint.as_deref())?;
    config.require_shared_broker("the workers binary")?;
    let mongo = Mongo::open(&config).await.with_context(|| {
        format!("cannot reach MongoDB at {}", redact_url(config.mongo.url.expose_secret()))
    })?;
    let s = Services::connect(config).await?;
    let shutdown = CancellationToken::new();
    roles::cancel_on_signal(shutdown.clone());
    s.announce("workers", Some(&mongo.describe().await)).await;
    if let Some(addr) = s.config.workers.metrics_addr {
        roles::serve_metrics(&s, addr, "WORKERS_METRICS_ADDR", shutdown.clone()).await?;
    }
    let gateway = ecommerce_checkout::payment::configured_gateway(&s.config)?;
    let stats = Arc::new(ConsumerStats::default());
    ecommerce_storefront::roles::run_workers(s, mongo, gateway, stats, shutdown).await;
    telemetry.shutdown().await;
    Ok(())
}
