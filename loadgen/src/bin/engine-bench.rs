//! `engine-bench`: the saga engine alone (PostgreSQL, the broker, the orchestrator and the
//! workers), without the API and MongoDB in the way. Orders are written the way `placeOrder`
//! writes them (order, saga and first command in one transaction), by `concurrency` writers,
//! and the tool waits until every saga is terminal. Latency is each saga's `updated_at` (its last
//! transition) minus its `created_at`, as PostgreSQL recorded them.
//!
//! Compare with `loadgen`, which measures what a buyer sees through the API.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use clap::Parser;
use ecommerce_checkout::order::service::{self, NewOrder};
use ecommerce_checkout::order::OrderLine;
use ecommerce_checkout::roles::{self, Services};
use ecommerce_checkout::saga::SagaDefinition;
use ecommerce_core::domain::{IdempotencyKey, Money, PaymentToken};
use ecommerce_platform::config::{BrokerKind, Config};
use ecommerce_platform::error::{AppError, AppResult};
use ecommerce_platform::metrics::ConsumerStats;
use tokio_util::sync::CancellationToken;

/// Benchmarks the saga engine alone (PostgreSQL, broker, orchestrator, workers; no API, no
/// MongoDB): writes orders the way placeOrder does and waits until every saga ended. The
/// orchestrator and workers must be running; with `BROKER=memory` this process runs them.
/// Configuration comes from the environment (see .env.example).
#[derive(Parser)]
#[command(name = "engine-bench", version)]
struct Cli {
    #[arg(long, default_value_t = 2000)]
    sagas: u64,
    /// Concurrent order writers.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// A sku with stock (e.g. after `api seed --stock 1000000000`).
    #[arg(long, default_value = "MUG-001")]
    sku: String,
    /// Seconds to wait for the last saga.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Print the report as one JSON line.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = ecommerce_platform::telemetry::init("engine-bench", None);
    let s = Services::connect(Config::from_env()?).await?;
    // On the in-process transport no other process can run the sagas: this one does (the
    // checkout's workers; the cart worker has nothing to do for orders without a cart).
    let shutdown = CancellationToken::new();
    let gateway = ecommerce_checkout::payment::configured_gateway(&s.config)?;
    let roles = (s.config.broker.kind == BrokerKind::Memory).then(|| {
        let stats = Arc::new(ConsumerStats::default());
        let workers = roles::checkout_workers(&s, gateway, &stats, &shutdown);
        (
            tokio::spawn(roles::run_orchestrator(
                s.clone(),
                Arc::new(ConsumerStats::default()),
                shutdown.clone(),
            )),
            tokio::spawn(roles::run_workers(s.clone(), workers, stats, shutdown.clone())),
        )
    });
    let timeout = Duration::from_secs(cli.timeout);
    let report = run(&s.pool, &s.sagas.checkout, &cli.sku, cli.sagas, cli.concurrency, timeout).await?;
    shutdown.cancel();
    if let Some((orchestrator, workers)) = roles {
        let _ = tokio::join!(orchestrator, workers);
    }
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report:?}");
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
struct EngineReport {
    pub sagas: u64,
    pub completed: u64,
    pub compensated: u64,
    pub elapsed_secs: f64,
    pub sagas_per_sec: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
}

/// Places `sagas` one-line orders of `sku` (paid with `tok_visa`) with `concurrency` writers, then
/// waits (at most `timeout`) until all of them ended.
async fn run(
    pool: &PgPool,
    def: &SagaDefinition,
    sku: &str,
    sagas: u64,
    concurrency: usize,
    timeout: Duration,
) -> AppResult<EngineReport> {
    let run = Uuid::now_v7().simple().to_string();
    let user_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO users (id, email, password_hash) VALUES ($1, $2, 'engine-bench: cannot log in')",
    )
    .bind(user_id)
    .bind(format!("engine-bench-{run}@example.invalid"))
    .execute(pool)
    .await?;
    let unit: i64 = 1_000;
    let total = Money::new(unit, "USD")?;
    let token = PaymentToken::parse("tok_visa")?;
    let lines = vec![OrderLine { sku: sku.to_string(), quantity: 1, unit_price_minor: unit }];
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let writers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (pool, def, next, lines, total, token) =
                (pool.clone(), def.clone(), next.clone(), lines.clone(), total.clone(), token.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= sagas {
                        return Ok::<_, AppError>(());
                    }
                    let new = NewOrder {
                        user_id,
                        key: IdempotencyKey::parse(&format!("engine-{n}"))?,
                        token: token.clone(),
                        lines: lines.clone(),
                        total: total.clone(),
                        trace_id: "engine-bench".into(),
                        email: None,
                        shipping_address: None,
                        open_orders_below: None,
                    };
                    service::create(&pool, &def, &new).await?;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.map_err(|e| AppError::Internal(e.to_string()))??;
    }
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sagas WHERE user_id = $1 AND status IN ('COMPLETED', 'COMPENSATED')",
        )
        .bind(user_id)
        .fetch_one(pool)
        .await?;
        if done as u64 >= sagas {
            break;
        }
        if started.elapsed() > timeout {
            return Err(AppError::Internal(format!("only {done} of {sagas} sagas ended within {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = sqlx::query(
        "SELECT count(*) FILTER (WHERE status = 'COMPLETED') AS completed,
                count(*) FILTER (WHERE status = 'COMPENSATED') AS compensated,
                EXTRACT(EPOCH FROM max(updated_at) - min(created_at))::float8 AS elapsed,
                percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
                  (ORDER BY EXTRACT(EPOCH FROM updated_at - created_at) * 1000) AS pcts,
                max(EXTRACT(EPOCH FROM updated_at - created_at) * 1000)::float8 AS max_ms
         FROM sagas WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await?;
    let pcts: Vec<f64> = r.get("pcts");
    let elapsed: f64 = r.get("elapsed");
    let round = |x: f64| (x * 10.0).round() / 10.0;
    Ok(EngineReport {
        sagas,
        completed: r.get::<i64, _>("completed") as u64,
        compensated: r.get::<i64, _>("compensated") as u64,
        elapsed_secs: round(elapsed),
        sagas_per_sec: round(sagas as f64 / elapsed.max(f64::EPSILON)),
        latency_ms_p50: round(pcts[0]),
        latency_ms_p95: round(pcts[1]),
        latency_ms_p99: round(pcts[2]),
        latency_ms_max: round(r.get("max_ms")),
    })
}
