//! The API's HTTP surface: GraphQL (POST), GraphiQL (GET), subscriptions over graphql-transport-ws,
//! the JWKS, health/readiness probes, metrics and the saga monitor page.

use std::sync::Arc;

use async_graphql::http::{GraphiQLSource, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql::Data;
use async_graphql::{BatchRequest, BatchResponse, ServerError};
use async_graphql_axum::{GraphQLBatchRequest, GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
use axum::extract::{ConnectInfo, DefaultBodyLimit, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use tower_http::limit::RequestBodyLimitLayer;
use tracing::Instrument;

use crate::broker::Transport;
use crate::graphql::{error::ensure_codes, ApiState, AppSchema, Caller, ClientAddr, TraceId};

#[derive(Clone)]
pub struct HttpState {
    pub api: ApiState,
    pub schema: AppSchema,
    pub transport: Arc<dyn Transport>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The API's routes. Serve with `into_make_service_with_connect_info::<SocketAddr>()`: the client
/// address feeds the login and register limits.
pub fn router(state: HttpState) -> Router {
    let limit = state.api.config.http_body_limit;
    let graphql_route =
        if state.api.config.graphql_playground { get(graphiql).post(graphql) } else { post(graphql) };
    Router::new()
        .route("/graphql", graphql_route)
        .route("/graphql/ws", get(subscriptions))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::monitor::routes())
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestBodyLimitLayer::new(limit))
        .with_state(state)
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

/// The peer address, or the first `X-Forwarded-For` hop when the deployment says a proxy sets it.
fn client_addr(api: &ApiState, peer: Option<std::net::SocketAddr>, headers: &HeaderMap) -> ClientAddr {
    let forwarded = api
        .config
        .trust_forwarded_for
        .then(|| headers.get("x-forwarded-for")?.to_str().ok()?.split(',').next()?.trim().parse().ok())
        .flatten();
    ClientAddr(
        forwarded.or(peer.map(|p| p.ip())).unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
    )
}

fn bearer(value: &str) -> Option<&str> {
    value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim)
}

async fn graphql(
    State(s): State<HttpState>,
    peer: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    req: GraphQLBatchRequest,
) -> GraphQLResponse {
    let started = std::time::Instant::now();
    let batch = req.into_inner();
    let operation = match &batch {
        BatchRequest::Single(r) => {
            crate::metrics::operation_name(r.operation_name.as_deref(), &r.query).map(str::to_string)
        }
        BatchRequest::Batch(_) => Some("batch".to_string()),
    };
    if let BatchRequest::Batch(requests) = &batch {
        let max = s.api.config.graphql_max_batch;
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
    let client = client_addr(&s.api, peer.map(|Extension(ConnectInfo(addr))| addr), &headers);
    // The client's trace when it sends a W3C `traceparent`; otherwise a new one.
    let incoming = headers
        .get(crate::broker::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::telemetry::TraceParent::parse);
    let user_id = match &caller {
        Caller::User(u, _) => u.id.to_string(),
        _ => String::new(),
    };
    let span = tracing::info_span!("graphql", trace_id = tracing::field::Empty, user_id = %user_id);
    let trace = crate::telemetry::join(&span, incoming.as_ref())
        .or(incoming.map(|t| t.trace_id))
        .unwrap_or_else(crate::telemetry::new_trace_id);
    span.record("trace_id", trace.as_str());
    let batch = batch.data(caller).data(client).data(TraceId(trace));
    let mut resp = s.schema.execute_batch(batch).instrument(span).await;
    match &mut resp {
        BatchResponse::Single(r) => ensure_codes(&mut r.errors),
        BatchResponse::Batch(rs) => rs.iter_mut().for_each(|r| ensure_codes(&mut r.errors)),
    }
    s.metrics.observe_graphql(operation.as_deref(), started.elapsed().as_secs_f64());
    resp.into()
}

/// Prometheus metrics (OpenMetrics text).
async fn metrics(State(s): State<HttpState>) -> Response {
    render_metrics(&s.metrics, &s.api.pool).await
}

async fn render_metrics(metrics: &crate::metrics::Metrics, pool: &sqlx::PgPool) -> Response {
    match metrics.render(pool).await {
        Ok(text) => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics unavailable");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// `/metrics` and `/healthz` alone, for the roles that serve no API (orchestrator, workers).
pub fn metrics_router(metrics: Arc<crate::metrics::Metrics>, pool: sqlx::PgPool) -> Router {
    Router::new()
        .route("/metrics", get(move || async move { render_metrics(&metrics, &pool).await }))
        .route("/healthz", get(|| async { "ok" }))
}

async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").subscription_endpoint("/graphql/ws").finish())
}

/// Subscriptions. Authenticate in `connection_init` with `{"authorization": "Bearer <token>"}`;
/// a connection with a bad token is refused, one without a token gets `UNAUTHENTICATED` per
/// subscription.
async fn subscriptions(
    State(s): State<HttpState>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade.protocols(ALL_WEBSOCKET_PROTOCOLS).on_upgrade(move |socket| async move {
        let api = s.api.clone();
        GraphQLWebSocket::new(socket, s.schema.clone(), protocol)
            .on_connection_init(move |payload| async move {
                let token = payload
                    .get("authorization")
                    .or_else(|| payload.get("Authorization"))
                    .and_then(|v| v.as_str())
                    .map(|v| bearer(v).unwrap_or(v).to_string());
                let caller = caller(&api, token.as_deref()).await;
                if let Caller::BadToken(e) = &caller {
                    return Err(async_graphql::Error::new(format!("unauthenticated: {e}")));
                }
                let mut data = Data::default();
                data.insert(caller);
                Ok(data)
            })
            .serve()
            .await
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

/// Ready when PostgreSQL, MongoDB and the broker all answer.
async fn readyz(State(s): State<HttpState>) -> Response {
    // A store that does not answer quickly is as good as gone for a load balancer.
    async fn within<E: ToString>(f: impl std::future::Future<Output = Result<(), E>>) -> Result<(), String> {
        match tokio::time::timeout(std::time::Duration::from_secs(2), f).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("no answer within 2 s".into()),
        }
    }
    let pg = within(async { sqlx::query("SELECT 1").execute(&s.api.pool).await.map(|_| ()) }).await;
    let mongo = within(s.api.mongo.ping()).await;
    let broker = within(s.transport.health()).await;
    let body = serde_json::json!({
        "postgres": pg.as_ref().err().map(|e| e.as_str()).unwrap_or("ok"),
        "mongo": mongo.as_ref().err().map(|e| e.as_str()).unwrap_or("ok"),
        "broker": broker.as_ref().err().map(|e| e.as_str()).unwrap_or("ok"),
    });
    let status = if pg.is_ok() && mongo.is_ok() && broker.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
