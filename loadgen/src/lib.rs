//! Drives ecommerce-saga through its public API, like real buyers: each buyer registers, then
//! repeatedly adds to its cart, places an order and follows the order's saga over the
//! `orderEvents` subscription until `COMPLETED` or `COMPENSATED`. Nothing is polled.
//!
//! Two ways to apply load:
//! - closed loop (default): `buyers` buyers, each placing its next order when the last one ended;
//! - open loop (`rate`): orders arrive at a fixed rate, each taken by a free buyer. Arrivals that
//!   found no free buyer within 10 ms are counted as `late_arrivals` (the generator, not the
//!   system, was the limit then: add buyers).
//!
//! Latency is measured from sending `placeOrder` to receiving the saga's terminal event.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const PASSWORD: &str = "loadgen password";

#[derive(Debug, Clone)]
pub struct Options {
    /// The API's base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub buyers: usize,
    /// Stop placing orders after this many (with `duration`, whichever comes first).
    pub orders: Option<u64>,
    pub duration: Option<Duration>,
    /// Open loop: orders per second. `None`: closed loop.
    pub rate: Option<f64>,
    /// Products to buy, one unit per order, in turn.
    pub skus: Vec<String>,
    /// Payment tokens of the test gateway, in turn (e.g. `tok_visa`, `tok_declined`).
    pub payment_tokens: Vec<String>,
    /// How long one order may take before it counts as an error.
    pub order_timeout: Duration,
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            url: "http://127.0.0.1:8080".into(),
            buyers: 32,
            orders: Some(1000),
            duration: None,
            rate: None,
            skus: vec!["MUG-001".into(), "TEE-002".into(), "BAG-003".into(), "PEN-004".into()],
            payment_tokens: vec!["tok_visa".into()],
            order_timeout: Duration::from_secs(120),
            progress: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples`, in milliseconds.
    pub fn of(samples: &mut [Duration]) -> Self {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
        let rank = |p: f64| samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
        let total: Duration = samples.iter().sum();
        Percentiles {
            p50: ms(rank(0.50)),
            p95: ms(rank(0.95)),
            p99: ms(rank(0.99)),
            max: ms(samples[samples.len() - 1]),
            mean: ms(total / samples.len() as u32),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: String,
    pub buyers: usize,
    pub placed: u64,
    /// Orders that reached a terminal saga state.
    pub completed: u64,
    pub elapsed_secs: f64,
    /// Completed sagas per second of the run.
    pub sagas_per_sec: f64,
    /// `placeOrder` sent → terminal event received.
    pub latency_ms: Percentiles,
    /// `CONFIRMED`, or `CANCELLED:<reason>`.
    pub outcomes: BTreeMap<String, u64>,
    /// What went wrong, by step and code; empty in a clean run.
    pub errors: BTreeMap<String, u64>,
    /// The first message seen for each kind of error.
    pub error_samples: BTreeMap<String, String>,
    pub late_arrivals: u64,
}

impl Report {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// A few lines for people.
    pub fn text(&self) -> String {
        let join = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
            }
        };
        let l = &self.latency_ms;
        format!(
            "mode={} buyers={} placed={} completed={} elapsed={:.2}s sagas_per_sec={:.1}\n\
             latency_ms p50={} p95={} p99={} max={} mean={}\n\
             outcomes: {}\nerrors: {}{}\nlate_arrivals={}",
            self.mode,
            self.buyers,
            self.placed,
            self.completed,
            self.elapsed_secs,
            self.sagas_per_sec,
            l.p50,
            l.p95,
            l.p99,
            l.max,
            l.mean,
            join(&self.outcomes),
            join(&self.errors),
            self.error_samples.iter().map(|(k, m)| format!("\n  {k}: {m}")).collect::<String>(),
            self.late_arrivals
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("setting up buyers: {0}")]
    Setup(String),
}

/// One GraphQL answer (`data`), or why there was none (`CODE|message`).
pub async fn gql(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    query: &str,
    vars: Value,
) -> Result<Value, String> {
    let mut req = http.post(format!("{url}/graphql")).json(&json!({ "query": query, "variables": vars }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("http:{}", if e.is_timeout() { "timeout" } else { "failed" }))?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|_| format!("http:{}", status.as_u16()))?;
    match body["errors"][0]["extensions"]["code"].as_str() {
        Some(code) => Err(format!("{code}|{}", body["errors"][0]["message"].as_str().unwrap_or_default())),
        None => Ok(body["data"].clone()),
    }
}

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Buyer {
    token: String,
    refresh_token: String,
    /// When `token` expires, in Unix seconds, and when to renew it: a minute before, or half
    /// way for tokens shorter-lived than two minutes.
    expires_at: u64,
    renew_at: u64,
    ws: Socket,
}

fn renew_at(expires_at: u64) -> u64 {
    let left = expires_at.saturating_sub(unix_now());
    expires_at - (left / 2).min(60)
}

/// An `accessExpiresAt` in Unix seconds (0, so renewed at once, if unreadable).
fn expiry(at: &Value) -> u64 {
    at.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp().max(0) as u64)
        .unwrap_or_default()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Buyer {
    /// Renews the session, and reconnects the subscription connection with the new token, when
    /// the access token is about to expire (runs longer than `ACCESS_TOKEN_TTL_SECS`): the API
    /// closes a subscription connection whose token expired.
    async fn renew_if_due(&mut self, http: &reqwest::Client, url: &str) -> Result<(), String> {
        if unix_now() < self.renew_at {
            return Ok(());
        }
        let q = "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken refreshToken accessExpiresAt } }";
        let data = gql(http, url, None, q, json!({ "t": self.refresh_token }))
            .await
            .map_err(|code| format!("refreshSession:{code}"))?;
        let s = &data["refreshSession"];
        self.token = s["accessToken"].as_str().ok_or("refreshSession: no token")?.to_string();
        self.refresh_token =
            s["refreshToken"].as_str().ok_or("refreshSession: no refresh token")?.to_string();
        self.expires_at = expiry(&s["accessExpiresAt"]);
        self.renew_at = renew_at(self.expires_at);
        self.ws = open_ws(url, &self.token).await?;
        Ok(())
    }
}

/// A graphql-transport-ws connection to the API at `url`, initialised with `token`.
pub async fn open_ws(url: &str, token: &str) -> Result<Socket, String> {
    let ws_url = format!("{}/graphql/ws", url.replacen("http", "ws", 1));
    let mut req = ws_url.into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().expect("header value"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.map_err(|e| format!("ws connect: {e}"))?;
    let init =
        json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
    ws.send(Message::Text(init.to_string().into())).await.map_err(|e| e.to_string())?;
    match next_json(&mut ws).await {
        Some(m) if m["type"] == "connection_ack" => Ok(ws),
        other => Err(format!("ws init refused: {other:?}")),
    }
}

/// The next text message as JSON, the server's pings answered and skipped, as graphql-ws clients
/// do; `None` once the connection closed.
pub async fn next_json(ws: &mut Socket) -> Option<Value> {
    loop {
        match ws.next().await?.ok()? {
            Message::Text(t) => {
                let m: Value = serde_json::from_str(&t).ok()?;
                if m["type"] == "ping" {
                    ws.send(Message::Text(json!({ "type": "pong" }).to_string().into())).await.ok()?;
                    continue;
                }
                return Some(m);
            }
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

async fn new_buyer(http: &reqwest::Client, url: &str, run: &str, i: usize) -> Result<Buyer, String> {
    let email = format!("loadgen-{run}-{i}@example.com");
    let q = "mutation($e: String!, $p: String!) { register(email: $e, password: $p) { accessToken refreshToken accessExpiresAt } }";
    let data = gql(http, url, None, q, json!({ "e": email, "p": PASSWORD })).await.map_err(|code| {
        if code.starts_with("TOO_MANY_REQUESTS") {
            "registration is rate-limited per address: start the API with REGISTER_MAX_PER_ADDRESS \
             (and LOGIN_MAX_PER_ADDRESS) above the number of buyers"
                .to_string()
        } else {
            format!("register: {code}")
        }
    })?;
    let token = data["register"]["accessToken"].as_str().ok_or("register: no token")?.to_string();
    let refresh_token =
        data["register"]["refreshToken"].as_str().ok_or("register: no refresh token")?.to_string();
    let expires_at = expiry(&data["register"]["accessExpiresAt"]);
    let ws = open_ws(url, &token).await?;
    Ok(Buyer { token, refresh_token, expires_at, renew_at: renew_at(expires_at), ws })
}

/// The end of one order: the outcome, or an error key.
async fn one_order(
    http: &reqwest::Client,
    opts: &Options,
    buyer: &mut Buyer,
    n: u64,
) -> Result<(String, Duration), String> {
    buyer.renew_if_due(http, &opts.url).await?;
    let sku = &opts.skus[n as usize % opts.skus.len()];
    let pay = &opts.payment_tokens[n as usize % opts.payment_tokens.len()];
    let add = "mutation($s: String!) { addToCart(sku: $s, quantity: 1) { cart { itemCount } userErrors { code } } }";
    let added = gql(http, &opts.url, Some(&buyer.token), add, json!({ "s": sku }))
        .await
        .map_err(|c| format!("addToCart:{c}"))?;
    if let Some(code) = added["addToCart"]["userErrors"][0]["code"].as_str() {
        return Err(format!("addToCart:{code}"));
    }
    let started = Instant::now();
    let place =
        "mutation($k: String!, $t: String!) { placeOrder(idempotencyKey: $k, paymentToken: $t) { order { id } userErrors { code } } }";
    let key = uuid::Uuid::new_v4().simple().to_string();
    let data = gql(http, &opts.url, Some(&buyer.token), place, json!({ "k": key, "t": pay }))
        .await
        .map_err(|c| format!("placeOrder:{c}"))?;
    if let Some(code) = data["placeOrder"]["userErrors"][0]["code"].as_str() {
        return Err(format!("placeOrder:{code}"));
    }
    let id = data["placeOrder"]["order"]["id"].as_str().ok_or("placeOrder:no id")?.to_string();
    let sub = json!({
        "id": id, "type": "subscribe",
        "payload": { "query": "subscription($id: ID!) { orderEvents(orderId: $id) { type } }", "variables": { "id": id } }
    });
    buyer.ws.send(Message::Text(sub.to_string().into())).await.map_err(|_| "subscription:send")?;
    let mut outcome = None;
    let follow = async {
        while let Some(m) = next_json(&mut buyer.ws).await {
            if m["id"] != id.as_str() {
                continue;
            }
            match m["type"].as_str() {
                Some("next") => {
                    let e = &m["payload"]["data"]["orderEvents"];
                    match e["type"].as_str() {
                        Some("COMPLETED") => outcome = Some("CONFIRMED".to_string()),
                        Some("COMPENSATED") => outcome = Some("CANCELLED".to_string()),
                        Some(_) => {}
                        None => return Err("subscription:error".to_string()),
                    }
                }
                Some("complete") => {
                    return outcome.take().ok_or_else(|| "subscription:ended early".to_string())
                }
                Some("error") => return Err("subscription:error".to_string()),
                _ => {}
            }
        }
        Err("subscription:closed".to_string())
    };
    let outcome =
        tokio::time::timeout(opts.order_timeout, follow).await.map_err(|_| "order:timeout".to_string())??;
    let elapsed = started.elapsed();
    if outcome == "CONFIRMED" {
        return Ok((outcome, elapsed));
    }
    // Why, from the order (event details are for operators): one more request, cancellations only.
    let why = "query($id: ID!) { order(id: $id) { cancelReason } }";
    let order = gql(http, &opts.url, Some(&buyer.token), why, json!({ "id": id }))
        .await
        .map_err(|c| format!("order:{c}"))?;
    Ok((format!("CANCELLED:{}", order["order"]["cancelReason"].as_str().unwrap_or_default()), elapsed))
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    outcomes: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    error_samples: BTreeMap<String, String>,
    last_done: Option<Instant>,
}

struct Shared {
    http: reqwest::Client,
    opts: Options,
    tally: Mutex<Tally>,
    placed: AtomicU64,
    late: AtomicU64,
    bar: ProgressBar,
    start: Instant,
}

impl Shared {
    /// Claims the next order number, or `None` when the run is over.
    fn claim(&self) -> Option<u64> {
        if self.opts.duration.is_some_and(|d| self.start.elapsed() >= d) {
            return None;
        }
        let n = self.placed.fetch_add(1, Ordering::SeqCst);
        if self.opts.orders.is_some_and(|max| n >= max) {
            self.placed.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(n)
    }

    async fn run(&self, buyer: &mut Buyer, n: u64) {
        let result = one_order(&self.http, &self.opts, buyer, n).await;
        let mut t = self.tally.lock().expect("tally");
        match result {
            Ok((outcome, latency)) => {
                t.latencies.push(latency);
                *t.outcomes.entry(outcome).or_default() += 1;
            }
            Err(e) => {
                let (key, message) = e.split_once('|').unwrap_or((&e, ""));
                *t.errors.entry(key.to_string()).or_default() += 1;
                t.error_samples.entry(key.to_string()).or_insert_with(|| message.to_string());
            }
        }
        t.last_done = Some(Instant::now());
        self.bar.inc(1);
    }
}

/// Runs the load described by `opts` and reports what it saw.
pub async fn run(opts: Options) -> Result<Report, LoadError> {
    if opts.skus.is_empty() || opts.payment_tokens.is_empty() || opts.buyers == 0 {
        return Err(LoadError::Setup("need at least one buyer, sku and payment token".into()));
    }
    if opts.orders.is_none() && opts.duration.is_none() {
        return Err(LoadError::Setup("give a number of orders, a duration, or both".into()));
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.buyers)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| LoadError::Setup(e.to_string()))?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let buyers: Vec<Buyer> = futures::stream::iter(0..opts.buyers)
        .map(|i| new_buyer(&http, &opts.url, &run_id, i))
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(LoadError::Setup)?;
    // The set-up (sign-ups: argon2 on the server) is over; scripts measure from here.
    eprintln!("loadgen: {} buyers signed up; load starts", buyers.len());

    let bar = if !opts.progress {
        ProgressBar::hidden()
    } else if let Some(n) = opts.orders {
        ProgressBar::new(n)
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} sagas ({per_sec})")
            .expect("template"),
    );
    let shared = Arc::new(Shared {
        http,
        opts: opts.clone(),
        tally: Mutex::new(Tally::default()),
        placed: AtomicU64::new(0),
        late: AtomicU64::new(0),
        bar,
        start: Instant::now(),
    });

    let mode = match opts.rate {
        None => {
            let tasks: Vec<_> = buyers
                .into_iter()
                .map(|mut buyer| {
                    let s = shared.clone();
                    tokio::spawn(async move {
                        while let Some(n) = s.claim() {
                            s.run(&mut buyer, n).await;
                        }
                    })
                })
                .collect();
            futures::future::join_all(tasks).await;
            "closed".to_string()
        }
        Some(rate) => {
            let (free_tx, free_rx) = tokio::sync::mpsc::channel::<Buyer>(buyers.len());
            for b in buyers {
                free_tx.try_send(b).expect("room for every buyer");
            }
            let free_rx = Arc::new(tokio::sync::Mutex::new(free_rx));
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tasks = Vec::new();
            loop {
                tick.tick().await;
                let Some(n) = shared.claim() else { break };
                let (s, rx, tx) = (shared.clone(), free_rx.clone(), free_tx.clone());
                tasks.push(tokio::spawn(async move {
                    let asked = Instant::now();
                    let buyer = rx.lock().await.recv().await;
                    if asked.elapsed() > Duration::from_millis(10) {
                        s.late.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(mut buyer) = buyer {
                        s.run(&mut buyer, n).await;
                        let _ = tx.send(buyer).await;
                    }
                }));
            }
            futures::future::join_all(tasks).await;
            format!("open@{rate}/s")
        }
    };
    shared.bar.finish_and_clear();

    let mut t = shared.tally.lock().expect("tally");
    let elapsed = t.last_done.map(|d| d - shared.start).unwrap_or_default().as_secs_f64();
    let completed = t.latencies.len() as u64;
    Ok(Report {
        mode,
        buyers: opts.buyers,
        placed: shared.placed.load(Ordering::SeqCst),
        completed,
        elapsed_secs: (elapsed * 100.0).round() / 100.0,
        sagas_per_sec: if elapsed > 0.0 { ((completed as f64 / elapsed) * 10.0).round() / 10.0 } else { 0.0 },
        latency_ms: Percentiles::of(&mut t.latencies),
        outcomes: std::mem::take(&mut t.outcomes),
        errors: std::mem::take(&mut t.errors),
        error_samples: std::mem::take(&mut t.error_samples),
        late_arrivals: shared.late.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(p.mean, 50.5);
        let mut one = vec![Duration::from_micros(1500)];
        assert_eq!(Percentiles::of(&mut one).p99, 1.5);
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }
}
