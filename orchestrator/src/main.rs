//! The orchestrator binary: drives persisted checkout sagas (replies, timeouts, retries,
//! compensation). It connects to PostgreSQL and the broker only.

use clap::Parser;
use ecommerce_checkout::roles::{self, Services};
use ecommerce_platform::config::Config;
use tokio_util::sync::CancellationToken;

/// Runs the saga orchestrator. Configuration comes from the environment (see .env.example).
#[derive(Parser)]
#[command(name = "orchestrator", version)]
struct Cli {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Cli::parse();
    let config = Config::from_env()?;
    let telemetry =
        ecommerce_platform::telemetry::init("orchestrator", config.telemetry.otlp_endpoint.as_deref())?;
    config.require_shared_broker("the orchestrator binary")?;
    let s = Services::connect(config).await?;
    let shutdown = CancellationToken::new();
    roles::cancel_on_signal(shutdown.clone());
    s.announce("orchestrator", None).await;
    if let Some(addr) = s.config.orchestrator.metrics_addr {
        roles::serve_metrics(&s, addr, "ORCHESTRATOR_METRICS_ADDR", shutdown.clone()).await?;
    }
    roles::run_orchestrator(s, Default::default(), shutdown).await;
    telemetry.shutdown().await;
    Ok(())
}
