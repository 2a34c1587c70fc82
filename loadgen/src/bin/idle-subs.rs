//! `idle-subs`: what open order pages cost while nothing happens (issue 20's measurement).
//!
//! Places one order whose payment never answers (`tok_timeout`; start the API with
//! `SAGA_NEEDS_ATTENTION_STEPS=AUTHORIZE_PAYMENT`, so its saga pauses instead of ending), opens
//! `--connections` graphql-ws connections holding `--subscriptions` `orderEvents` subscriptions to
//! it in all, waits until every one got the recorded history, then measures for `--seconds`:
//! PostgreSQL transactions per second in the API's database (`pg_stat_database.xact_commit`,
//! every process's), and the API process's CPU and resident memory (`--api-pid`, from `/proc`).
//! `--subscriptions 0` measures the idle system itself.
//!
//! Then the fan-out: the buyer cancels the order, and every subscription hears the saga's next
//! event; latency is from sending the cancellation to each subscription receiving that event
//! (p50, p99, max over all of them), and to the last one receiving the end (`COMPENSATED`). The
//! client runs on the same machine as the server, so its own work on thousands of messages counts.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::SinkExt;
use loadgen::{gql, next_json, open_ws};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(name = "idle-subs", version, about = "Cost of idle orderEvents subscriptions")]
struct Cli {
    /// The API's base URL.
    #[arg(long, env = "LOADGEN_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The API's database, for its transaction counter.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The API process, for its CPU time and memory.
    #[arg(long)]
    api_pid: Option<u32>,
    /// Subscriptions to hold, in all.
    #[arg(long, default_value_t = 1000)]
    subscriptions: usize,
    /// WebSocket connections to spread them over.
    #[arg(long, default_value_t = 10)]
    connections: usize,
    /// How long to measure.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// CPU seconds (user + system) and resident bytes of `pid`.
fn usage(pid: u32) -> anyhow::Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/<pid>/stat")?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    let cpu = ticks / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((cpu, rss_kb * 1024))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let url = cli.url.trim_end_matches('/').to_string();
    let http = reqwest::Client::new();
    let pool = sqlx::PgPool::connect(&cli.database_url).await.context("connecting to the database")?;

    let email = format!("idle-subs-{}@example.com", uuid::Uuid::new_v4().simple());
    let q = "mutation($e: String!) { register(email: $e, password: \"idle subs password\") { accessToken } }";
    let data = gql(&http, &url, None, q, json!({ "e": email })).await.map_err(anyhow::Error::msg)?;
    let token = data["register"]["accessToken"].as_str().context("no access token")?.to_string();
    let add = "mutation { addToCart(sku: \"MUG-001\", quantity: 1) { cart { itemCount } } }";
    gql(&http, &url, Some(&token), add, json!({})).await.map_err(anyhow::Error::msg)?;
    let place = "mutation { placeOrder(idempotencyKey: \"idle-subs\", paymentToken: \"tok_timeout\") { order { id } } }";
    let data = gql(&http, &url, Some(&token), place, json!({})).await.map_err(anyhow::Error::msg)?;
    let order = data["placeOrder"]["order"]["id"].as_str().context("no order")?.to_string();

    // Wait until the saga pauses: its streams then stay open, and nothing more happens.
    let status = "query($id: ID!) { order(id: $id) { saga { status eventCount } } }";
    let started = Instant::now();
    let events = loop {
        let d = gql(&http, &url, Some(&token), status, json!({ "id": order }))
            .await
            .map_err(anyhow::Error::msg)?;
        match d["order"]["saga"]["status"].as_str() {
            Some("NEEDS_ATTENTION") => break d["order"]["saga"]["eventCount"].as_u64().unwrap_or(0),
            Some("COMPLETED" | "COMPENSATED") => {
                bail!("the saga ended: start the API with SAGA_NEEDS_ATTENTION_STEPS=AUTHORIZE_PAYMENT")
            }
            _ if started.elapsed() > Duration::from_secs(120) => bail!("the saga never paused"),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };

    // Open the subscriptions; each first gets the recorded history.
    let connections = cli.connections.max(1);
    let mut readers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    // When each subscription heard the first event after the history, and the end.
    let (heard_tx, mut heard_rx) = tokio::sync::mpsc::unbounded_channel::<(bool, Instant)>();
    for c in 0..connections {
        let per = cli.subscriptions / connections + usize::from(c < cli.subscriptions % connections);
        let mut ws = open_ws(&url, &token).await.map_err(anyhow::Error::msg)?;
        for i in 0..per {
            let msg = json!({
                "id": format!("{c}-{i}"),
                "type": "subscribe",
                "payload": {
                    "query": "subscription($id: ID!) { orderEvents(orderId: $id) { sequence type } }",
                    "variables": { "id": order }
                }
            });
            ws.send(Message::Text(msg.to_string().into())).await?;
        }
        let ready = ready_tx.clone();
        let heard = heard_tx.clone();
        let expected = per as u64 * events;
        readers.push(tokio::spawn(async move {
            let mut got = 0u64;
            if expected == 0 {
                let _ = ready.send(c);
            }
            let mut first_new = std::collections::HashSet::new();
            while let Some(m) = next_json(&mut ws).await {
                match m["type"].as_str() {
                    Some("next") => {
                        got += 1;
                        if got == expected {
                            let _ = ready.send(c);
                        }
                        let e = &m["payload"]["data"]["orderEvents"];
                        if e["sequence"].as_u64().unwrap_or(0) > events
                            && first_new.insert(m["id"].as_str().unwrap_or_default().to_string())
                        {
                            let _ = heard.send((false, Instant::now()));
                        }
                        if e["type"] == "COMPENSATED" {
                            let _ = heard.send((true, Instant::now()));
                        }
                    }
                    Some("error") | Some("complete") => eprintln!("subscription ended: {m}"),
                    _ => {}
                }
            }
        }));
    }
    drop(ready_tx);
    drop(heard_tx);
    for _ in 0..connections {
        tokio::time::timeout(Duration::from_secs(120), ready_rx.recv())
            .await
            .context("subscriptions did not all get their history within 2 minutes")?;
    }
    // Let the setup's own queries pass.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let commits = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()";
    let before: i64 = sqlx::query_scalar(commits).fetch_one(&pool).await?;
    let cpu_before = cli.api_pid.map(usage).transpose()?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(cli.seconds)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let after: i64 = sqlx::query_scalar(commits).fetch_one(&pool).await?;
    let cpu_after = cli.api_pid.map(usage).transpose()?;
    // The counter's own two reads are transactions too.
    let tps = ((after - before - 1).max(0)) as f64 / elapsed;
    let (cpu_pct, rss_mb) = match (cpu_before, cpu_after) {
        (Some((c0, _)), Some((c1, rss))) => (Some((c1 - c0) / elapsed * 100.0), Some(rss as f64 / 1e6)),
        _ => (None, None),
    };
    let round = |x: f64| (x * 10.0).round() / 10.0;

    // The fan-out: one transition, heard by every subscription.
    let mut fan_out: Option<(f64, f64, f64, f64)> = None;
    if cli.subscriptions > 0 {
        let cancel =
            "mutation($id: ID!) { cancelOrder(orderId: $id) { order { status } userErrors { code } } }";
        let sent = Instant::now();
        let d = gql(&http, &url, Some(&token), cancel, json!({ "id": order }))
            .await
            .map_err(anyhow::Error::msg)?;
        if let Some(code) = d["cancelOrder"]["userErrors"][0]["code"].as_str() {
            bail!("cancelOrder refused: {code}");
        }
        let mut firsts = Vec::with_capacity(cli.subscriptions);
        let mut last_end = Duration::ZERO;
        let mut ends = 0;
        while firsts.len() < cli.subscriptions || ends < cli.subscriptions {
            let (end, at) = tokio::time::timeout(Duration::from_secs(120), heard_rx.recv())
                .await
                .context("not every subscription heard the cancellation within 2 minutes")?
                .context("readers ended")?;
            if end {
                ends += 1;
                last_end = last_end.max(at - sent);
            } else {
                firsts.push(at - sent);
            }
        }
        firsts.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let pct = |p: f64| ms(firsts[((firsts.len() as f64 * p).ceil() as usize).clamp(1, firsts.len()) - 1]);
        fan_out = Some((pct(0.5), pct(0.99), ms(*firsts.last().unwrap_or(&Duration::ZERO)), ms(last_end)));
    }

    if cli.json {
        println!(
            "{}",
            json!({
                "subscriptions": cli.subscriptions,
                "connections": connections,
                "seconds": round(elapsed),
                "pg_transactions_per_sec": round(tps),
                "api_cpu_percent": cpu_pct.map(round),
                "api_rss_mb": rss_mb.map(round),
                "fan_out_ms": fan_out.map(|(p50, p99, max, end)| json!({
                    "p50": round(p50), "p99": round(p99), "max": round(max), "all_ended": round(end),
                })),
            })
        );
    } else {
        let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}", round(v)));
        println!(
            "idle orderEvents subscriptions={} connections={connections}: {:.1} PostgreSQL transactions/s, \
             API CPU {} % of a core, API RSS {} MB (over {:.1} s)",
            cli.subscriptions,
            tps,
            show(cpu_pct),
            show(rss_mb),
            elapsed
        );
        if let Some((p50, p99, max, end)) = fan_out {
            println!(
                "  fan-out of one transition to {} subscriptions: first new event p50 {p50:.0} ms, p99 {p99:.0} ms, \
                 max {max:.0} ms; all heard the end after {end:.0} ms",
                cli.subscriptions
            );
        }
    }
    for r in readers {
        r.abort();
    }
    Ok(())
}
