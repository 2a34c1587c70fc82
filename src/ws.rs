//! Subscriptions over WebSocket (graphql-transport-ws, and the older subscriptions-transport-ws),
//! with the limits that keep one client from exhausting the server:
//!
//! - subscriptions per connection: one more gets an `error` message (`TOO_MANY_REQUESTS`) and
//!   the connection stays; a second subscription under an id still open closes it (4409), as the
//!   protocol says;
//! - connections per signed-in user and per client address: closed with 1013 (try again later,
//!   which graphql-ws clients retry with back-off);
//! - `connection_init` within a time (4408, the protocol's code);
//! - keep-alive: the server pings, and a client silent past the ping interval and the pong
//!   timeout is closed (4499);
//! - a bounded send buffer: what async-graphql produces is written one message at a time, and a
//!   client that does not take a message within the send timeout is closed (1008), so nothing is
//!   buffered for it beyond the socket's own buffers.
//!
//! A connection lives no longer than what it was opened with ([`Sessions`]): it is closed with
//! 4403 when its access token expires, when its session ends (logout, or a refresh token used
//! twice, on whichever replica), and, if it was opened with the operator role, when the role is
//! taken away. graphql-ws clients then ask their `connectionParams` again (a fresh token) and
//! reconnect.
//!
//! async-graphql's [`WebSocket`] runs the protocol; this module stands between it and the socket.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_graphql::http::{ClientMessage, WebSocket, WebSocketProtocols, WsMessage};
use async_graphql::Data;
use axum::extract::ws::{CloseFrame, Message, WebSocket as Socket};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::graphql::error::TOO_MANY_REQUESTS;
use crate::graphql::AppSchema;
use ecommerce_platform::config::WebSocketConfig;
use ecommerce_platform::metrics::Metrics;

/// graphql-ws close codes, and the standard ones used here.
pub mod close {
    /// The client must try again later (a connection limit); graphql-ws clients retry.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The client did not read what the server sent in time.
    pub const POLICY: u16 = 1008;
    pub const BAD_REQUEST: u16 = 4400;
    pub const FORBIDDEN: u16 = 4403;
    pub const INIT_TIMEOUT: u16 = 4408;
    pub const SUBSCRIBER_EXISTS: u16 = 4409;
    /// Nothing heard from the client, not even a pong.
    pub const TERMINATED: u16 = 4499;
}

/// Client messages async-graphql has not taken yet; past this the client is flooding.
const INBOX: usize = 1024;

/// Connections open at once, per key (user or address).
pub struct Slots<K> {
    open: Arc<Mutex<HashMap<K, usize>>>,
    max: usize,
}

/// One connection's place under a limit; freed when dropped.
pub struct Slot<K: Eq + Hash + Copy> {
    open: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Eq + Hash + Copy> Slots<K> {
    pub fn new(max: usize) -> Self {
        Slots { open: Default::default(), max }
    }

    /// A place for one more connection of `key`, unless it has `max` open.
    pub fn take(&self, key: K) -> Option<Slot<K>> {
        let mut open = self.open.lock().expect("slots lock");
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot { open: self.open.clone(), key })
    }
}

impl<K: Eq + Hash + Copy> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("slots lock");
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The process's open connections: signed-in ones by user, anonymous ones by address, and those
/// still waiting for `connection_init` by address.
pub struct Connections {
    pub config: WebSocketConfig,
    pub by_user: Slots<Uuid>,
    pub by_address: Slots<IpAddr>,
    pub pending: Slots<IpAddr>,
}

impl Connections {
    pub fn new(config: WebSocketConfig) -> Self {
        Connections {
            config,
            by_user: Slots::new(config.max_connections_per_user),
            by_address: Slots::new(config.max_connections_per_address),
            pending: Slots::new(config.max_connections_per_address),
        }
    }
}

/// How a connection is told to end from outside: a close code and reason.
pub type End = watch::Sender<Option<(u16, String)>>;

/// What a signed-in connection was opened with.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    pub session: Uuid,
    /// Whether the connection may use operator-only subscriptions.
    pub operator: bool,
    /// When its access token expires, in Unix seconds.
    pub expires_at: u64,
}

/// How often the process checks every open connection's session, in one query.
pub const SESSION_CHECK: Duration = Duration::from_secs(1);

/// The process's signed-in connections, each with its [`Grant`]. Once a second, one query reads
/// the sessions of all of them; a connection whose token expired, whose session ended, or that
/// lost the operator role it was opened with is told to close with 4403.
pub struct Sessions {
    next: std::sync::atomic::AtomicU64,
    open: Mutex<HashMap<u64, (Grant, End)>>,
}

/// A connection's place among the [`Sessions`]; leaves when dropped.
pub struct Registered {
    sessions: Arc<Sessions>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sessions.open.lock().expect("sessions lock").remove(&self.id);
    }
}

impl Sessions {
    /// Starts the process's checks.
    pub fn start(auth: Arc<crate::auth::AuthService>, shutdown: CancellationToken) -> Arc<Self> {
        let sessions = Arc::new(Sessions { next: Default::default(), open: Default::default() });
        let checking = sessions.clone();
        ecommerce_checkout::saga::feed::every(
            SESSION_CHECK,
            shutdown,
            "checking connections' sessions",
            move || {
                let (sessions, auth) = (checking.clone(), auth.clone());
                async move { sessions.check(&auth).await }
            },
        );
        sessions
    }

    pub fn register(self: &Arc<Self>, grant: Grant, end: End) -> Registered {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.open.lock().expect("sessions lock").insert(id, (grant, end));
        Registered { sessions: self.clone(), id }
    }

    /// Connections signed in now.
    pub fn len(&self) -> usize {
        self.open.lock().expect("sessions lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn check(&self, auth: &crate::auth::AuthService) -> Result<(), sqlx::Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let grants: Vec<(u64, Grant)> =
            self.open.lock().expect("sessions lock").iter().map(|(id, (g, _))| (*id, *g)).collect();
        if grants.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<Uuid> = grants.iter().map(|(_, g)| g.session).collect();
        ids.sort_unstable();
        ids.dedup();
        let states: HashMap<Uuid, (bool, bool)> = auth
            .session_states(&ids)
            .await?
            .into_iter()
            .map(|(id, open, operator)| (id, (open, operator)))
            .collect();
        let open = self.open.lock().expect("sessions lock");
        for (id, grant) in grants {
            let why = match states.get(&grant.session) {
                _ if grant.expires_at <= now => "Forbidden: the access token expired",
                None | Some((false, _)) => "Forbidden: the session ended",
                Some((true, false)) if grant.operator => "Forbidden: the operator role was revoked",
                Some(_) => continue,
            };
            if let Some((_, end)) = open.get(&id) {
                let _ = end.send(Some((close::FORBIDDEN, why.to_string())));
            }
        }
        Ok(())
    }
}

/// The protocol a client asked for in `Sec-WebSocket-Protocol`.
pub fn protocol(headers: &axum::http::HeaderMap) -> Option<WebSocketProtocols> {
    headers
        .get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)?
        .to_str()
        .ok()?
        .split(',')
        .find_map(|p| p.trim().parse().ok())
}

/// Why `connection_init` was refused, as async-graphql's close reason carries it.
pub enum Refusal {
    /// A bad or expired token: 4403, so the client refreshes it and connects again.
    BadToken(String),
    /// The user has as many connections open as allowed: 1013.
    TooManyConnections(usize),
    /// The address has as many anonymous connections open as allowed: 1013.
    TooManyFromAddress(usize),
}

const BAD_TOKEN: &str = "unauthenticated: ";
const TOO_MANY: &str = "too many connections for this user";
const TOO_MANY_FROM_ADDRESS: &str = "too many connections from this address";

impl Refusal {
    pub fn into_error(self) -> async_graphql::Error {
        match self {
            Refusal::BadToken(e) => async_graphql::Error::new(format!("{BAD_TOKEN}{e}")),
            Refusal::TooManyConnections(max) => {
                async_graphql::Error::new(format!("{TOO_MANY} (limit {max})"))
            }
            Refusal::TooManyFromAddress(max) => {
                async_graphql::Error::new(format!("{TOO_MANY_FROM_ADDRESS} (limit {max})"))
            }
        }
    }

    /// The close code and reason for a refusal async-graphql closes with 1002.
    fn close(reason: &str) -> Option<(u16, String)> {
        if reason.starts_with(BAD_TOKEN) {
            Some((close::FORBIDDEN, "Forbidden".into()))
        } else if reason.starts_with(TOO_MANY) || reason.starts_with(TOO_MANY_FROM_ADDRESS) {
            Some((close::TRY_AGAIN_LATER, reason.into()))
        } else {
            None
        }
    }
}

/// Closes a socket at once with `code` (a connection refused before it started).
pub async fn refuse(mut socket: Socket, metrics: &Metrics, code: u16, reason: String) {
    metrics.ws_opened();
    metrics.ws_closed(why_code(code));
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

/// The `reason` label of the metric of ended connections.
fn why(closing: Option<&(u16, String)>) -> &'static str {
    match closing.map(|(code, reason)| (*code, reason.as_str())) {
        None => "client",
        Some((close::FORBIDDEN, reason)) if reason.starts_with("Forbidden: the") => "session_ended",
        Some((code, _)) => why_code(code),
    }
}

fn why_code(code: u16) -> &'static str {
    match Some(code) {
        Some(close::INIT_TIMEOUT) => "init_timeout",
        Some(close::TERMINATED) => "no_pong",
        Some(close::POLICY) => "not_reading",
        Some(close::TRY_AGAIN_LATER) => "too_many_connections",
        Some(close::FORBIDDEN) => "refused",
        _ => "protocol",
    }
}

/// Serves one connection until either side ends it or a limit closes it. `on_init` decides what
/// `connection_init` gives the connection (or refuses it, see [`Refusal`]).
pub async fn serve<F, Fut>(
    socket: Socket,
    schema: AppSchema,
    protocol: WebSocketProtocols,
    config: WebSocketConfig,
    metrics: &Metrics,
    mut ended: watch::Receiver<Option<(u16, String)>>,
    on_init: F,
) where
    F: FnOnce(serde_json::Value) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = async_graphql::Result<Data>> + Send + 'static,
{
    metrics.ws_opened();
    let (mut sink, mut source) = socket.split();
    let (inbox, taken) = mpsc::channel::<serde_json::Result<ClientMessage>>(INBOX);
    let mut taken = taken;
    let messages = futures::stream::poll_fn(move |cx| taken.poll_recv(cx));
    let gql = WebSocket::from_message_stream(schema, messages, protocol).on_connection_init(on_init);
    futures::pin_mut!(gql);

    let mut open: HashSet<String> = HashSet::new();
    let mut acknowledged = false;
    let init_deadline = tokio::time::sleep(config.init_timeout);
    futures::pin_mut!(init_deadline);
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + config.ping_interval, config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = Instant::now();

    // What to close with, when the loop ends for a reason of its own.
    let closing: Option<(u16, String)> = loop {
        // What the client sent first: a pong waiting in the socket must count before the ping
        // timer looks, however late this task runs.
        let step = tokio::select! {
            biased;
            incoming = source.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
                    Some(Ok(Message::Binary(b))) => match String::from_utf8(b.to_vec()) {
                        Ok(t) => t,
                        Err(_) => break Some((close::BAD_REQUEST, "Invalid message received".into())),
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        heard = Instant::now();
                        continue;
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break None,
                };
                heard = Instant::now();
                let message = ClientMessage::from_bytes(text);
                match &message {
                    // Counted whether or not `connection_init` was acknowledged yet: async-graphql
                    // queues subscriptions sent right after it and starts them once it is.
                    Ok(ClientMessage::Start { id, .. }) => {
                        if open.contains(id) {
                            Step::Close(Some((close::SUBSCRIBER_EXISTS, format!("Subscriber for {id} already exists"))))
                        } else if open.len() >= config.max_subscriptions_per_connection {
                            Step::Send(too_many(protocol, id, config.max_subscriptions_per_connection))
                        } else {
                            open.insert(id.clone());
                            forward(&inbox, message)
                        }
                    }
                    Ok(ClientMessage::Stop { id }) => {
                        open.remove(id);
                        forward(&inbox, message)
                    }
                    _ => forward(&inbox, message),
                }
            }
            Ok(()) = ended.changed() => match ended.borrow_and_update().clone() {
                Some(closing) => Step::Close(Some(closing)),
                None => Step::Nothing,
            },
            sent = gql.next() => match sent {
                Some(WsMessage::Text(text)) => {
                    track(&text, &mut acknowledged, &mut open);
                    Step::Send(text)
                }
                Some(WsMessage::Close(code, reason)) => {
                    Step::Close(Some(Refusal::close(&reason).filter(|_| code == 1002).unwrap_or((code, reason))))
                }
                None => Step::Close(None),
            },
            _ = &mut init_deadline, if !acknowledged => {
                Step::Close(Some((close::INIT_TIMEOUT, "Connection initialisation timeout".into())))
            }
            _ = ping.tick() => {
                if heard.elapsed() > config.ping_interval + config.pong_timeout {
                    Step::Close(Some((close::TERMINATED, "No pong".into())))
                } else if protocol == WebSocketProtocols::GraphQLWS {
                    Step::Send(json!({ "type": "ping" }).to_string())
                } else {
                    Step::Send(json!({ "type": "ka" }).to_string())
                }
            }
        };
        match step {
            Step::Nothing => {}
            Step::Send(text) => {
                match tokio::time::timeout(config.send_timeout, sink.send(Message::Text(text.into()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break None,
                    Err(_) => {
                        // Not reading: closed rather than buffered for (the close frame may
                        // never reach it).
                        tracing::info!("closing a subscription connection whose client does not read");
                        break Some((close::POLICY, "Not reading".into()));
                    }
                }
            }
            Step::Close(closing) => break closing,
        }
    };
    metrics.ws_closed(why(closing.as_ref()));
    if let Some((code, reason)) = closing {
        let frame = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(frame)).await;
    }
}

/// What the connection does next.
enum Step {
    Nothing,
    Send(String),
    /// Ends the connection, with a close frame or (the client went) without.
    Close(Option<(u16, String)>),
}

/// Hands a client message to async-graphql; a client that floods it is closed.
fn forward(
    inbox: &mpsc::Sender<serde_json::Result<ClientMessage>>,
    message: serde_json::Result<ClientMessage>,
) -> Step {
    match inbox.try_send(message) {
        Ok(()) => Step::Nothing,
        Err(mpsc::error::TrySendError::Full(_)) => {
            Step::Close(Some((close::BAD_REQUEST, "Too many messages".into())))
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Step::Close(None),
    }
}

/// Follows what async-graphql sends: the acknowledgement, and subscriptions that ended.
fn track(text: &str, acknowledged: &mut bool, open: &mut HashSet<String>) {
    // Data messages are most of the traffic and change nothing here.
    if text.starts_with(r#"{"type":"next""#) || text.starts_with(r#"{"type":"data""#) {
        return;
    }
    if let Ok(m) = serde_json::from_str::<serde_json::Value>(text) {
        match m["type"].as_str() {
            Some("connection_ack") => *acknowledged = true,
            Some("complete" | "error") => {
                if let Some(id) = m["id"].as_str() {
                    open.remove(id);
                }
            }
            _ => {}
        }
    }
}

/// The `error` message refusing subscription `id` for the per-connection limit.
fn too_many(protocol: WebSocketProtocols, id: &str, max: usize) -> String {
    let error = json!({
        "message": format!("too many subscriptions on this connection (limit {max}); complete one first"),
        "extensions": { "code": TOO_MANY_REQUESTS },
    });
    let payload = if protocol == WebSocketProtocols::GraphQLWS { json!([error]) } else { error };
    json!({ "type": "error", "id": id, "payload": payload }).to_string()
}
