//! The saga monitor: a static page at `/monitor` (HTML, CSS and plain JavaScript, compiled into
//! the binary). It signs in as an operator and uses only the public GraphQL API: `recentSagas`
//! for the table, `sagaChanges` over graphql-transport-ws to keep it live, and `saga(id)` for one
//! saga's timeline. The page holds no secret; the API refuses non-operators with `FORBIDDEN`.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("monitor.js");
const STYLE: &str = include_str!("monitor.css");

/// Scripts and styles only from this origin, no framing, no inline code.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/monitor", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/monitor/monitor.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/monitor/monitor.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}
