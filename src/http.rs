//! The API's HTTP surface: GraphQL (POST), GraphiQL (GET), subscriptions over graphql-transport-ws,
//! the JWKS, health/readiness probes, metrics, the saga monitor page and payment webhooks.

use std::sync::Arc;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::Data;
use async_graphql::{BatchRequest, BatchResponse, ServerError};
use async_graphql_axum::{GraphQLBatchRequest, GraphQLResponse};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Request, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use tracing::Instrument;

use crate::graphql::error::ensure_codes;
use crate::graphql::{ApiState, AppSchema, Caller, ClientAddr, TraceId};
use crate::ws::Refusal;
use ecommerce_platform::broker::Transport;
use ecommerce_platform::telemetry::TraceHeaders;

#[derive(Clone)]
pub struct HttpState {
    pub api: ApiState,
    /// Open subscription connections, by user and address.
    pub connections: Arc<crate::ws::Connections>,
    /// The signed-in ones, with what they were opened with.
    pub sessions: Arc<crate::ws::Sessions>,
    pub schema: AppSchema,
    pub transport: Arc<dyn Transport>,
    pub metrics: Arc<ecommerce_platform::metrics::Metrics>,
}

/// The API's routes. Serve with `into_make_service_with_connect_info::<SocketAddr>()`: the client
/// address feeds the login and register limits.
pub fn router(state: HttpState) -> Router {
    let limit = state.api.config.api.http_body_limit;
    let mut router = Router::new();
    if state.api.config.api.graphql.playground {
        router = router.merge(crate::playground::routes());
    }
    let mut router = router
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/graphql/ws", get(subscriptions))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(|| async { "ok" }))
        .merge(crate::monitor::routes())
        .merge(crate::webhooks::routes(&state.api.config.api, state.api.pool.clone(), state.metrics.clone()))
        // A request that takes longer, its body included (a client sending it slowly), is
        // answered 408; the head's own timeout is the listener's (`crate::serve`).
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.api.config.api.request_timeout,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(axum::middleware::from_fn_with_state(limit, refuse_oversized_bodies));
    if state.api.config.api.compression {
        // Bodies under 32 bytes (and a websocket's `101`) stay as they are.
        router = router.layer(CompressionLayer::new());
    }
    // A span per request (`tower_http=debug` shows them); GraphQL requests get their own below.
    router = router.layer(TraceLayer::new_for_http());
    if let Some(cors) = cors(&state.api.config.api.cors_allowed_origins) {
        // Outermost, so preflights and refusals (413, 429) carry the CORS headers too.
        router = router.layer(cors);
    }
    router.with_state(state)
}

/// The admin routes, on their own listener (`API_ADMIN_ADDR`) that clients never reach:
/// Prometheus `/metrics`, `/readyz` (the stores and the broker answer) and `/healthz`.
pub fn admin_router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

/// The CORS policy for `origins` (see `CORS_ALLOWED_ORIGINS`); `None` when there are none.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse::<header::HeaderValue>().ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers(
                [header::AUTHORIZATION, header::CONTENT_TYPE]
                    .into_iter()
                    .chain(TraceHeaders::FIELDS.map(header::HeaderName::from_static))
                    .collect::<Vec<_>>(),
            )
            .max_age(std::time::Duration::from_secs(3600)),
    )
}

/// How much of an oversized body is read (and thrown away) before it is answered, and for how long.
const DRAIN_MAX_BYTES: usize = 32 << 20;
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Answers a body larger than `limit` with `413 Payload Too Large` and a GraphQL error.
///
/// Why read it first: a client that does not wait for `100 Continue` is still sending when the
/// answer is ready, and a server that closes a socket with unread data makes the kernel send a
/// reset, which the client reports as a broken connection instead of the 413 (nginx calls the
/// cure "lingering close"). So the rest of the body is read and dropped, up to
/// [`DRAIN_MAX_BYTES`] within [`DRAIN_MAX_TIME`]; past that the connection is closed anyway. A
/// client that sent `Expect: 100-continue` has sent no body yet and gets the answer at once. A
/// body without a declared length (chunked) is read up to the limit here, so that it too gets a
/// 413 rather than the GraphQL extractor's 400.
async fn refuse_oversized_bodies(
    State(limit): State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = req.headers();
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let chunked = declared.is_none() && headers.contains_key(header::TRANSFER_ENCODING);
    let expects_continue =
        headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if chunked {
        let (parts, body) = req.into_parts();
        let mut stream = body.into_data_stream();
        let mut kept = bytes::BytesMut::new();
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            let Ok(chunk) = chunk else { return StatusCode::BAD_REQUEST.into_response() };
            kept.extend_from_slice(&chunk);
            if kept.len() > limit {
                drain(stream).await;
                return payload_too_large(limit);
            }
        }
        return next
            .run(axum::extract::Request::from_parts(parts, axum::body::Body::from(kept.freeze())))
            .await;
    }
    if declared.is_none_or(|n| n <= limit as u64) {
        return next.run(req).await;
    }
    if !expects_continue {
        drain(req.into_body().into_data_stream()).await;
    }
    payload_too_large(limit)
}

/// Reads and drops what is left of a refused body (see [`refuse_oversized_bodies`]).
async fn drain(mut body: axum::body::BodyDataStream) {
    let mut read = 0usize;
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
        while let Some(Ok(chunk)) = futures::StreamExt::next(&mut body).await {
            read += chunk.len();
            if read > DRAIN_MAX_BYTES {
                break;
            }
        }
    })
    .await;
}

fn payload_too_large(limit: usize) -> Response {
    let message = format!("The request body is larger than {limit} bytes.");
    let code = crate::graphql::error::BAD_USER_INPUT;
    let body = serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (StatusCode::PAYLOAD_TOO_LARGE, [(header::CONNECTION, "close")], Json(body)).into_response()
}

async fn caller(api: &ApiState, token: Option<&str>) -> Caller {
    match token {
        None => Caller::Anonymous,
        Some(t) => match api.auth.authenticate(t).await {
            Ok((user, session)) => Caller::User(user, session),
            Err(e) => Caller::BadToken(e),
        },
    }
}

/// The client's address. Directly connected (`trusted_proxy_hops` = 0): the peer. Behind `n`
/// proxies that each append the address they received the request from to `X-Forwarded-For`:
/// the `n`th entry from the right, which the outermost trusted proxy wrote. Entries left of it
/// are whatever the client sent and must not count, or a client could pick its own rate-limit
/// bucket. Several header lines are one list, in order (RFC 9110, 5.3). A list shorter than `n`
/// (the request did not come through every proxy) or an entry that is not an address leaves the
/// peer: the one address nobody in the request could choose.
fn client_addr(api: &ApiState, peer: Option<std::net::SocketAddr>, headers: &HeaderMap) -> ClientAddr {
    let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
    let unknown = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    ClientAddr(limit_key(
        forwarded_client(forwarded, api.config.api.trusted_proxy_hops)
            .or(peer.map(|p| p.ip()))
            .unwrap_or(unknown),
    ))
}

/// What per-address limits count a client by: an IPv4 address as it is; an IPv6 address by its
/// /64 network, since one subscriber is routinely given a whole /64 and can pick any address in
/// it (an IPv4 address mapped into IPv6 counts as that IPv4 address).
pub fn limit_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(std::net::Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

/// The entry `hops` places from the right of the `X-Forwarded-For` lines, if there is one.
fn forwarded_client<'a>(lines: impl Iterator<Item = &'a str>, hops: usize) -> Option<std::net::IpAddr> {
    if hops == 0 {
        return None;
    }
    let entries: Vec<&str> = lines.flat_map(|l| l.split(',')).map(str::trim).collect();
    let entry = entries.len().checked_sub(hops).map(|i| entries[i])?;
    // A proxy may write an IPv6 address in brackets, or an address with a port.
    entry.parse().ok().or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

fn bearer(value: &str) -> Option<&str> {
    value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim)
}

type Peer = Option<Extension<ConnectInfo<std::net::SocketAddr>>>;

/// `POST /graphql`: an operation, or a batch of them, as JSON.
async fn graphql_post(State(s): State<HttpState>, peer: Peer, headers: HeaderMap, req: Request) -> Response {
    // A body that does not say it is JSON is not taken for JSON.
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        let message = "A POST to /graphql carries Content-Type: application/json";
        return refusal(&headers, StatusCode::UNSUPPORTED_MEDIA_TYPE, message);
    }
    let req = match <GraphQLBatchRequest as FromRequest<()>>::from_request(req, &()).await {
        Ok(r) => r,
        Err(rejection) => return rejection.into_response(),
    };
    let resp = execute(&s, peer, &headers, req.into_inner()).await;
    respond(&headers, resp)
}

/// `GET /graphql`: a query in the query string (`query`, `operationName`, and `variables` and
/// `extensions` as JSON), as GraphQL over HTTP specifies; with automatic persisted queries, the
/// document's hash alone will do. Without a query, the playground when it is enabled. A mutation
/// or subscription is refused with `405` (`Allow: POST`): a GET must not change anything, and
/// caches and prefetchers send GETs on their own.
async fn graphql_get(
    State(s): State<HttpState>,
    peer: Peer,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let query = uri.query().unwrap_or_default();
    if query.is_empty() {
        if s.api.config.api.graphql.playground {
            return crate::playground::page();
        }
        return refusal(
            &headers,
            StatusCode::BAD_REQUEST,
            "GET /graphql takes an operation in its query string",
        );
    }
    let request = match get_request(&uri) {
        Ok(r) => r,
        Err(why) => {
            return refusal(&headers, StatusCode::BAD_REQUEST, &format!("Invalid query string: {why}"))
        }
    };
    if let Some(kind) = operation_kind(&s.api, &request).await {
        if kind != OperationType::Query {
            let mut out = refusal(
                &headers,
                StatusCode::METHOD_NOT_ALLOWED,
                "Only queries may be sent with GET; use POST",
            );
            out.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            return out;
        }
    }
    let resp = execute(&s, peer, &headers, BatchRequest::Single(request)).await;
    respond(&headers, resp)
}

/// The parameters of a GraphQL request sent by GET, as GraphQL over HTTP names them.
#[derive(serde::Deserialize)]
struct GetParams {
    #[serde(default)]
    query: String,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    /// JSON.
    variables: Option<String>,
    /// JSON.
    extensions: Option<String>,
}

/// The request a GET carries. Not `async_graphql::http::parse_query_string`: that one reads
/// `operation_name` where the spec (and every client) writes `operationName`.
fn get_request(uri: &axum::http::Uri) -> Result<async_graphql::Request, String> {
    let axum::extract::Query(p) =
        axum::extract::Query::<GetParams>::try_from_uri(uri).map_err(|e| e.body_text())?;
    let mut request = async_graphql::Request::new(p.query);
    if let Some(name) = p.operation_name {
        request = request.operation_name(name);
    }
    if let Some(v) = p.variables {
        let v: serde_json::Value = serde_json::from_str(&v).map_err(|e| format!("variables: {e}"))?;
        request = request.variables(async_graphql::Variables::from_json(v));
    }
    if let Some(e) = p.extensions {
        request.extensions = serde_json::from_str(&e).map_err(|e| format!("extensions: {e}"))?;
    }
    Ok(request)
}

/// What `request` would run, when that can be told before running it: its document (or the one
/// persisted under its hash) parses, and names the operation unambiguously.
async fn operation_kind(api: &ApiState, request: &async_graphql::Request) -> Option<OperationType> {
    let document = if request.query.is_empty() {
        let hash = request.extensions.get("persistedQuery")?;
        let hash = serde_json::to_value(hash).ok()?.get("sha256Hash")?.as_str()?.to_string();
        api.persisted_queries.get(&hash)?
    } else {
        async_graphql::parser::parse_query(&request.query).ok()?
    };
    match (&document.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(name)) => {
            ops.iter().find(|(n, _)| n.as_str() == name).map(|(_, op)| op.node.ty)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// The answer as GraphQL over HTTP specifies. A client that accepts
/// `application/graphql-response+json` gets that media type, and `400` when the request failed
/// before anything ran (it did not parse or validate, or broke a limit: no `data`, and no error
/// with a `path`). Any other client gets `application/json` and `200`, as before the spec.
fn respond(headers: &HeaderMap, resp: BatchResponse) -> Response {
    let modern = accepts_graphql_response(headers);
    let failed_early = match &resp {
        BatchResponse::Single(r) => {
            r.data == async_graphql::Value::Null
                && !r.errors.is_empty()
                && r.errors.iter().all(|e| e.path.is_empty())
        }
        BatchResponse::Batch(_) => false,
    };
    if modern && failed_early {
        // Nothing ran, so there is no `data` entry at all (not even `null`).
        let mut body = serde_json::to_value(&resp).unwrap_or_default();
        if let Some(o) = body.as_object_mut() {
            o.remove("data");
        }
        return (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, media_type(true))], body.to_string())
            .into_response();
    }
    let mut out = GraphQLResponse(resp).into_response();
    out.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(media_type(modern)));
    out
}

/// A request refused before it reached the schema (it is not a well-formed GraphQL request over
/// HTTP, or not one GET may carry), with a GraphQL error body and `status` for either media type.
fn refusal(headers: &HeaderMap, status: StatusCode, message: &str) -> Response {
    let modern = accepts_graphql_response(headers);
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": crate::graphql::error::BAD_USER_INPUT } }]
    });
    (status, [(header::CONTENT_TYPE, media_type(modern))], body.to_string()).into_response()
}

fn media_type(modern: bool) -> &'static str {
    if modern {
        "application/graphql-response+json; charset=utf-8"
    } else {
        "application/json; charset=utf-8"
    }
}

/// Whether the `Accept` header lists `application/graphql-response+json` (with a nonzero weight).
fn accepts_graphql_response(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |item| {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let zero = parts.any(|p| p.replace(' ', "").eq_ignore_ascii_case("q=0"));
            media.eq_ignore_ascii_case("application/graphql-response+json") && !zero
        },
    )
}

/// Runs an operation or a batch for the caller the request names, in the client's trace.
async fn execute(s: &HttpState, peer: Peer, headers: &HeaderMap, batch: BatchRequest) -> BatchResponse {
    if let BatchRequest::Batch(requests) = &batch {
        let max = s.api.config.api.graphql.max_batch;
        if requests.len() > max {
            let e =
                ServerError::new(format!("Batch has too many operations ({} > {max})", requests.len()), None);
            let mut resp = async_graphql::Response::from_errors(vec![e]);
            ensure_codes(&mut resp.errors);
            return resp.into();
        }
    }
    let token = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
    let caller = caller(&s.api, token).await;
    let client = client_addr(&s.api, peer.map(|Extension(ConnectInfo(addr))| addr), headers);
    // The client's trace when it sends a W3C trace context; otherwise a new one. A header sent more
    // than once is one list (RFC 9110), which is what `tracestate` may be split into.
    let incoming = TraceHeaders::read(|name| {
        let values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        (!values.is_empty()).then(|| values.join(","))
    });
    let user_id = match &caller {
        Caller::User(u, _) => u.id.to_string(),
        _ => String::new(),
    };
    let span = tracing::info_span!("graphql", trace_id = tracing::field::Empty, user_id = %user_id);
    let trace = ecommerce_platform::telemetry::join(&span, &incoming)
        .or_else(|| incoming.trace_id())
        .unwrap_or_else(ecommerce_platform::telemetry::new_trace_id);
    span.record("trace_id", trace.as_str());
    let batch = batch.data(caller).data(client).data(TraceId(trace));
    let mut resp = s.schema.execute_batch(batch).instrument(span).await;
    match &mut resp {
        BatchResponse::Single(r) => ensure_codes(&mut r.errors),
        BatchResponse::Batch(rs) => rs.iter_mut().for_each(|r| ensure_codes(&mut r.errors)),
    }
    resp
}

/// Prometheus metrics (OpenMetrics text).
async fn metrics(State(s): State<HttpState>) -> Response {
    ecommerce_platform::metrics::response(&s.metrics, &s.api.pool).await
}

/// The places a subscription connection holds once initialised (freed when dropped).
#[allow(dead_code)] // held for their `Drop`
enum Held {
    User(crate::ws::Slot<uuid::Uuid>, crate::ws::Registered),
    Anonymous(crate::ws::Slot<std::net::IpAddr>),
}

/// What a subscription connection reads the socket into, at first.
const READ_BUFFER: usize = 4 * 1024;

/// Subscriptions. Authenticate in `connection_init` with `{"authorization": "Bearer <token>"}`;
/// a connection with a bad or expired token is closed with graphql-ws's `4403 Forbidden` (so a
/// client refreshes its token and connects again), one without a token gets `UNAUTHENTICATED`
/// per subscription. The limits on connections and subscriptions are [`crate::ws`]'s.
async fn subscriptions(
    State(s): State<HttpState>,
    peer: Peer,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(protocol) = crate::ws::protocol(&headers) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let client = client_addr(&s.api, peer.map(|Extension(ConnectInfo(addr))| addr), &headers);
    // Connections waiting for `connection_init` are bounded per address too (each for at most
    // WS_INIT_TIMEOUT_MS).
    let pending = s.connections.pending.take(client.0);
    let refused = pending.is_none();
    let config = s.api.config.api.websocket;
    // Thousands of mostly idle connections: small buffers that grow for a large message
    // (tungstenite's defaults, 128 KiB each way, cost 20 KB and more per connection), and each
    // message written at once (`crate::ws` waits for each anyway).
    let upgrade = upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(s.api.config.api.http_body_limit)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0);
    upgrade.on_upgrade(move |socket| async move {
        if refused {
            let max = config.max_connections_per_address;
            let reason = format!("too many connections from this address (limit {max})");
            return crate::ws::refuse(socket, &s.metrics, crate::ws::close::TRY_AGAIN_LATER, reason).await;
        }
        let pending = Arc::new(std::sync::Mutex::new(pending));
        let initialised = pending.clone();
        // Places taken at `connection_init`, held while the connection lives: a signed-in
        // connection's among its user's, an anonymous one's among its address's. So anonymous
        // connections from an address never crowd out its signed-in users.
        let held = Arc::new(std::sync::Mutex::new(None));
        let keep = held.clone();
        let (end, ended) = tokio::sync::watch::channel(None);
        let api = s.api.clone();
        let connections = s.connections.clone();
        let sessions = s.sessions.clone();
        let on_init = move |payload: serde_json::Value| async move {
            let token = payload
                .get("authorization")
                .or_else(|| payload.get("Authorization"))
                .and_then(|v| v.as_str())
                .map(|v| bearer(v).unwrap_or(v).to_string());
            let caller = caller(&api, token.as_deref()).await;
            initialised.lock().expect("pending slot lock").take();
            match &caller {
                Caller::BadToken(e) => return Err(Refusal::BadToken(e.to_string()).into_error()),
                Caller::User(u, session) => {
                    let Some(slot) = connections.by_user.take(u.id) else {
                        let max = connections.config.max_connections_per_user;
                        return Err(Refusal::TooManyConnections(max).into_error());
                    };
                    // The token was verified just now; its expiry bounds the connection.
                    let expires_at = match api.keys.verify(token.as_deref().unwrap_or_default()).await {
                        Ok(claims) => claims.exp,
                        Err(e) => return Err(Refusal::BadToken(e.to_string()).into_error()),
                    };
                    let operator = u.has(crate::auth::Role::Operator);
                    let grant = crate::ws::Grant { session: *session, operator, expires_at };
                    *keep.lock().expect("held lock") = Some(Held::User(slot, sessions.register(grant, end)));
                }
                Caller::Anonymous => {
                    let Some(slot) = connections.by_address.take(client.0) else {
                        let max = connections.config.max_connections_per_address;
                        return Err(Refusal::TooManyFromAddress(max).into_error());
                    };
                    *keep.lock().expect("held lock") = Some(Held::Anonymous(slot));
                }
            }
            let mut data = Data::default();
            data.insert(caller);
            // Mutations over the connection (login, register) count against its address.
            data.insert(client);
            Ok(data)
        };
        crate::ws::serve(socket, s.schema.clone(), protocol, config, &s.metrics, ended, on_init).await;
        drop(held);
        drop(pending);
    })
}

async fn jwks(State(s): State<HttpState>) -> Response {
    match s.api.keys.jwks().await {
        Ok(set) => ([(header::CACHE_CONTROL, "public, max-age=300")], Json(set)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "jwks unavailable");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Ready when PostgreSQL, MongoDB and the broker all answer; the body says which did not, and
/// the log why.
async fn readyz(State(s): State<HttpState>) -> Response {
    use ecommerce_platform::metrics::{ready, within};
    let pg = within(async { sqlx::query("SELECT 1").execute(&s.api.pool).await.map(|_| ()) }).await;
    let mongo = within(s.api.mongo.ping()).await;
    let broker = within(s.transport.health()).await;
    ready(&[("postgres", pg), ("mongo", mongo), ("broker", broker)])
}

#[cfg(test)]
mod tests {
    use super::forwarded_client;

    fn ip(s: &str) -> Option<std::net::IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_client_is_the_entry_the_outermost_trusted_proxy_wrote() {
        // The client wrote "6.6.6.6" itself; one proxy appended what it saw.
        assert_eq!(forwarded_client(["6.6.6.6, 203.0.113.7"].into_iter(), 1), ip("203.0.113.7"));
        // Two proxies: the first appended the client, the second appended the first.
        assert_eq!(forwarded_client(["6.6.6.6, 203.0.113.7, 10.0.0.2"].into_iter(), 2), ip("203.0.113.7"));
        // Header lines are one list in order.
        assert_eq!(forwarded_client(["6.6.6.6", "203.0.113.7"].into_iter(), 1), ip("203.0.113.7"));
        assert_eq!(forwarded_client(["[2001:db8::1]:4711"].into_iter(), 1), ip("2001:db8::1"));
        assert_eq!(forwarded_client(["198.51.100.1:80"].into_iter(), 1), ip("198.51.100.1"));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_network() {
        use super::limit_key;
        let key = |s: &str| limit_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), ip("2001:db8:1:2::").unwrap());
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), ip("192.0.2.1").unwrap());
        assert_eq!(key("192.0.2.1"), ip("192.0.2.1").unwrap());
    }

    #[test]
    fn without_trusted_hops_or_enough_entries_the_header_does_not_count() {
        assert_eq!(forwarded_client(["203.0.113.7"].into_iter(), 0), None);
        assert_eq!(forwarded_client(["203.0.113.7"].into_iter(), 2), None);
        assert_eq!(forwarded_client(std::iter::empty(), 1), None);
        assert_eq!(forwarded_client(["1.2.3.4, not-an-address"].into_iter(), 1), None);
    }
}
