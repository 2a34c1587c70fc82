//! The workers binary: stock, payment and cart workers, executing commands idempotently and
//! replying through the outbox.

use std::sync::Arc;

use clap::Parser;
use ecommerce_saga::app::{self, Services};
use ecommerce_saga::broker::consumer::ConsumerStats;
use ecommerce_saga::config::Config;
use ecommerce_saga::payment::TestGateway;
use tokio_util::sync::CancellationToken;

/// Runs the stock, payment and cart workers. Configuration comes from the environment (see .env.example).
#[derive(Parser)]
#[command(name = "workers", version)]
struct Cli {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Cli::parse();
    let config = Config::from_env()?;
    let telemetry = ecommerce_saga::telemetry::init("workers", config.otlp_endpoint.as_deref())?;
    config.require_shared_broker("the workers binary")?;
    let s = Services::connect(config).await?;
    let shutdown = CancellationToken::new();
    app::cancel_on_signal(shutdown.clone());
    s.announce("workers").await;
    if let Some(addr) = s.config.workers_metrics_addr {
        app::serve_metrics(&s, addr, "WORKERS_METRICS_ADDR", shutdown.clone()).await?;
    }
    app::run_workers(s, Arc::new(TestGateway), Arc::new(ConsumerStats::default()), shutdown).await;
    telemetry.shutdown().await;
    Ok(())
}
