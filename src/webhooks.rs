//! Payment provider webhooks: `POST /webhooks/stripe`, served when `STRIPE_WEBHOOK_SECRET` is set.
//!
//! The answer tells Stripe whether to deliver again: `400` for a request that is not a valid
//! signed event (delivering it again will not help), `500` when the event could not be recorded
//! (Stripe retries), `200` once it is recorded, including for a duplicate.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use tracing::Instrument;

use crate::http::HttpState;
use ecommerce_checkout::payment::webhook::{self, Applied, PROVIDER};
use ecommerce_platform::config::ExposeSecret;

pub fn routes() -> Router<HttpState> {
    Router::new().route("/webhooks/stripe", post(stripe))
}

async fn stripe(State(s): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let api = &s.api.config.api;
    let Some(secret) = &api.stripe_webhook_secret else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    let event = webhook::verify(signature, &body, secret.expose_secret(), now, api.stripe_webhook_tolerance)
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
    match webhook::apply(&s.api.pool, &event).instrument(span).await {
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
