//! `loadgen`: buyers place orders through the GraphQL API and follow each saga to its end.
//! Prints sagas/s, place→terminal latency percentiles, outcomes and errors (`--json` for scripts).

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use loadgen::Options;

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for ecommerce-saga (works with any broker: it only talks to the API)"
)]
struct Cli {
    /// The API's base URL.
    #[arg(long, env = "LOADGEN_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent buyers (each with its own account, cart and subscription connection).
    #[arg(long, default_value_t = 32)]
    buyers: usize,
    /// Orders to place in all (the run also ends after --duration, if given).
    #[arg(long)]
    orders: Option<u64>,
    /// Run for this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Open loop: orders per second, taken by free buyers. Default: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Comma-separated SKUs, bought one unit per order, in turn.
    #[arg(long, value_delimiter = ',', default_value = "MUG-001,TEE-002,BAG-003,PEN-004")]
    skus: Vec<String>,
    /// Comma-separated test-gateway payment tokens, in turn (tok_visa, tok_declined, tok_capture_fails).
    #[arg(long, value_delimiter = ',', default_value = "tok_visa")]
    payment_tokens: Vec<String>,
    /// Seconds one order may take before it counts as an error.
    #[arg(long, default_value_t = 120.0)]
    order_timeout: f64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let orders = match (cli.orders, cli.duration) {
        (None, None) => Some(1000),
        (o, _) => o,
    };
    let opts = Options {
        url: cli.url.trim_end_matches('/').to_string(),
        buyers: cli.buyers,
        orders,
        duration: cli.duration.map(Duration::from_secs_f64),
        rate: cli.rate,
        skus: cli.skus,
        payment_tokens: cli.payment_tokens,
        order_timeout: Duration::from_secs_f64(cli.order_timeout),
        progress: !cli.quiet && !cli.json,
    };
    let report = loadgen::run(opts).await.with_context(|| format!("load against {}", cli.url))?;
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.text());
    }
    if report.error_count() > 0 {
        std::process::exit(1);
    }
    Ok(())
}
