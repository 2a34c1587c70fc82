//! Payment provider webhooks: `POST /webhooks/stripe`, served when `STRIPE_WEBHOOK_SECRET` is set.
//!
//! The answer tells Stripe whether to deliver again: `400` for a request that is not a valid
//! signed event (delivering it again will not help), `500` when the event could not be recorded
//! (Stripe retries), `200` once it is recorded, including for a duplicate.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use tracing::Instrument;

use ecommerce_checkout::payment::webhook::{self, Applied, PROVIDER};
use ecommerce_platform::config::{ApiConfig, ExposeSecret, SecretString};
use ecommerce_platform::metrics::Metrics;

/// What the webhook endpoints need.
#[derive(Clone)]
struct Webhooks {
    pool: sqlx::PgPool,
    metrics: Arc<Metrics>,
    secret: SecretString,
    tolerance: Duration,
}

/// The webhook routes; none when `STRIPE_WEBHOOK_SECRET` is not set.
pub fn routes<S: Clone + Send + Sync + 'static>(
    config: &ApiConfig,
    pool: sqlx::PgPool,
    metrics: Arc<Metrics>,
) -> Router<S> {
    let Some(secret) = config.stripe_webhook_secret.clone() else {
        return Router::new();
    };
    let state = Webhooks { pool, metrics, secret, tolerance: config.stripe_webhook_tolerance };
    Router::new().route("/webhooks/stripe", post(stripe)).with_state(state)
}

async fn stripe(State(s): State<Webhooks>, headers: HeaderMap, body: Bytes) -> Response {
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    let event = webhook::verify(signature, &body, s.secret.expose_secret(), now, s.tolerance)
        .and_then(|()| webhook::read_event(&body));
    let event = match event {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(error = %e, "webhook refused");
            s.metrics.webhook(PROVIDER, "refused");
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": e.to_string() }))).into_response();
        }
    };
    let span = tracing::info_span!("webhook", provider = PROVIDER, event = %event.id, kind = %event.kind,
        order_id = ?event.order_id);
    match webhook::apply(&s.pool, &event).instrument(span).await {
        Ok(applied) => {
            let outcome = match applied {
                Applied::Duplicate => "duplicate",
                Applied::Recorded => "recorded",
                Applied::Replied(_) => "replied",
            };
            s.metrics.webhook(PROVIDER, outcome);
            Json(json!({ "received": true, "outcome": outcome })).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "webhook not recorded; the provider will deliver it again");
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": "not recorded" }))).into_response()
        }
    }
}
