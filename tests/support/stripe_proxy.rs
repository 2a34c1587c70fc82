//! A fault-injecting HTTP proxy in front of localstripe (the way toxiproxy sits in front of a
//! database): every request goes through to the real fake server, and the proxy only decides
//! *when* the answer comes back, or changes the provider's state first, the way the network and
//! the provider misbehave in production.
//!
//! - `hold_answers(paths, d)`: POSTs whose path ends with one of `paths` reach the provider at
//!   once; their answers are held back `d`. The provider did it, the caller gives up waiting: an
//!   outcome our side never hears of (except by webhook).
//! - `refuse_credentials(true)`: every request is answered 401 `authentication_error` without
//!   reaching the provider, as Stripe answers a wrong or revoked secret key.
//! - `replay_idempotency_keys(true)`: the proxy keeps the first answer to each `Idempotency-Key`
//!   and answers later requests with the same key with it, as Stripe does (localstripe does not).
//! - `fail_next(path)`: the next POST whose path ends with `path` is answered `500 api_error`
//!   without reaching the provider (with replay on, that answer is what the key replays).
//! - `expire_authorizations(true)`: an authorization is cancelled at the provider the moment the
//!   caller reads it, as an authorization that expired before its capture.
//! - `creates_in_flight()`, `captures_in_flight()`, `refunds_in_flight()`: calls whose answers
//!   have not gone back yet;
//!   a harness kills a worker while one is non-zero, to crash it in the middle of the call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Default)]
struct Faults {
    held: Vec<String>,
    hold: Duration,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    faults: Mutex<Faults>,
    expire: AtomicBool,
    refuse: AtomicBool,
    replay: AtomicBool,
    saved: Mutex<HashMap<String, (StatusCode, Bytes)>>,
    fail_next: Mutex<Option<String>>,
    creates: AtomicUsize,
    captures: AtomicUsize,
    refunds: AtomicUsize,
}

#[derive(Clone)]
pub struct StripeProxy {
    pub base: String,
    shared: Arc<Shared>,
}

impl StripeProxy {
    /// Starts a proxy to `upstream` on a free port; it runs as long as the runtime does.
    pub async fn start(upstream: &str) -> StripeProxy {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            faults: Mutex::default(),
            expire: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            replay: AtomicBool::new(false),
            saved: Mutex::default(),
            fail_next: Mutex::default(),
            creates: AtomicUsize::new(0),
            captures: AtomicUsize::new(0),
            refunds: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(forward).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        StripeProxy { base, shared }
    }

    pub fn hold_answers(&self, paths: &[&str], hold: Duration) {
        *self.shared.faults.lock().unwrap() =
            Faults { held: paths.iter().map(|p| p.to_string()).collect(), hold };
    }

    pub fn replay_idempotency_keys(&self, on: bool) {
        self.shared.replay.store(on, Ordering::SeqCst);
    }

    pub fn fail_next(&self, path: &str) {
        *self.shared.fail_next.lock().unwrap() = Some(path.to_string());
    }

    pub fn refuse_credentials(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }

    pub fn expire_authorizations(&self, on: bool) {
        self.shared.expire.store(on, Ordering::SeqCst);
    }

    /// Intents being created (authorizations) whose answer has not gone back.
    pub fn creates_in_flight(&self) -> usize {
        self.shared.creates.load(Ordering::SeqCst)
    }

    /// Captures whose answer has not gone back.
    pub fn captures_in_flight(&self) -> usize {
        self.shared.captures.load(Ordering::SeqCst)
    }

    /// Refunds being made whose answer has not gone back.
    pub fn refunds_in_flight(&self) -> usize {
        self.shared.refunds.load(Ordering::SeqCst)
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn forward(State(s): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(b) => b,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    if s.refuse.load(Ordering::SeqCst) {
        let error = r#"{"error":{"type":"authentication_error","message":"Invalid API Key provided"}}"#;
        return (StatusCode::UNAUTHORIZED, [("content-type", "application/json")], error).into_response();
    }
    let path = parts.uri.path().to_string();
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let counter = match (&parts.method, path.as_str()) {
        (&Method::POST, "/v1/payment_intents") => Some(&s.creates),
        (&Method::POST, p) if p.ends_with("/capture") => Some(&s.captures),
        (&Method::POST, "/v1/refunds") => Some(&s.refunds),
        _ => None,
    };
    let _guard = counter.map(|c| {
        c.fetch_add(1, Ordering::SeqCst);
        InFlight(c)
    });
    if s.expire.load(Ordering::SeqCst) && parts.method == Method::GET {
        if let Some(id) = path.strip_prefix("/v1/payment_intents/").filter(|id| id.starts_with("pi_")) {
            let _ = send(
                &s,
                Method::POST,
                &format!("/v1/payment_intents/{id}/cancel"),
                &parts.headers,
                Bytes::new(),
            )
            .await;
        }
    }
    let key = parts
        .headers
        .get("idempotency-key")
        .and_then(|k| k.to_str().ok())
        .filter(|_| parts.method == Method::POST && s.replay.load(Ordering::SeqCst))
        .map(str::to_string);
    let saved = key.as_ref().and_then(|k| s.saved.lock().unwrap().get(k).cloned());
    let failed = parts.method == Method::POST && {
        let mut next = s.fail_next.lock().unwrap();
        let hit = next.as_ref().is_some_and(|p| path.ends_with(p.as_str()));
        if hit && saved.is_none() {
            *next = None;
        }
        hit && saved.is_none()
    };
    let answer = match saved {
        Some(answer) => Ok(answer),
        None if failed => {
            let error = r#"{"error":{"type":"api_error","message":"An unknown error occurred"}}"#;
            Ok((StatusCode::INTERNAL_SERVER_ERROR, Bytes::from_static(error.as_bytes())))
        }
        None => send(&s, parts.method.clone(), &path_and_query, &parts.headers, body).await,
    };
    if let (Some(key), Ok(answer)) = (key, &answer) {
        s.saved.lock().unwrap().entry(key).or_insert_with(|| answer.clone());
    }
    let hold = {
        let f = s.faults.lock().unwrap();
        let held = parts.method == Method::POST && f.held.iter().any(|p| path.ends_with(p.as_str()));
        held.then_some(f.hold)
    };
    if let Some(hold) = hold {
        tokio::time::sleep(hold).await;
    }
    match answer {
        Ok((status, body)) => {
            (status, [("content-type", "application/json")], Body::from(body)).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
    }
}

async fn send(
    s: &Shared,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    let mut request = s.http.request(method, format!("{}{path_and_query}", s.upstream)).body(body);
    for name in ["authorization", "content-type", "idempotency-key"] {
        if let Some(v) = headers.get(name) {
            request = request.header(name, v.clone());
        }
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}
