//! Stripe's webhooks: outcomes the provider reports on its own, fed into the saga as replies.
//!
//! The payment worker asks Stripe and records the answer; when the answer is lost (the call timed
//! out on our side but went through at Stripe), Stripe still tells us, later, with an event. An
//! event is accepted only with a valid `Stripe-Signature` (HMAC-SHA256 of `"{t}.{body}"` under the
//! endpoint's secret, `t` within the tolerance of now, any of several `v1` signatures matching, as
//! during a secret's rotation). Each event id is recorded once (`webhook_events`), in the same
//! transaction as what it changes, so a redelivered event changes nothing.
//!
//! What an event changes is the payment row, by the same compare-and-set the worker uses, and
//! only a change sends a reply: an authorization Stripe reports for a PENDING payment makes it
//! AUTHORIZED and answers the saga's authorize step; a capture of an AUTHORIZED payment makes it
//! CAPTURED and answers the capture step; a failed confirmation of a PENDING payment declines it.
//! Whichever of worker and webhook records the outcome first answers; the other finds the row
//! moved (the saga ignores a second identical answer). An event for a payment that has moved on
//! (voided, say) changes nothing: the worker's own path settles it.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use sqlx::PgPool;
use tracing::{info, warn};
use uuid::Uuid;

use super::store::{self, PaymentStatus as Status};
use crate::saga::messages::{Body, Envelope, Reply, ReplyKind};
use ecommerce_platform::error::AppError;
use ecommerce_platform::postgres::outbox;

/// The provider name events are recorded under.
pub const PROVIDER: &str = "stripe";

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing Stripe-Signature header")]
    MissingSignature,
    #[error("malformed Stripe-Signature header")]
    MalformedSignature,
    #[error("signature timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
    #[error("not a Stripe event: {0}")]
    Unreadable(String),
}

/// Checks `header` (`t=…,v1=…[,v1=…]`) against `payload` and `secret`, at `now` (Unix seconds).
pub fn verify(
    header: Option<&str>,
    payload: &[u8],
    secret: &str,
    now: i64,
    tolerance: Duration,
) -> Result<(), WebhookError> {
    let header = header.ok_or(WebhookError::MissingSignature)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", s)) => signatures.push(decode_hex(s).ok_or(WebhookError::MalformedSignature)?),
            // v0 (test-mode legacy) and unknown schemes are ignored, as Stripe's libraries do.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(WebhookError::MalformedSignature)?;
    if signatures.is_empty() {
        return Err(WebhookError::MalformedSignature);
    }
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    // Checked: a timestamp near i64::MIN or MAX is as stale as any other far one, not an overflow.
    if now.checked_sub(timestamp).and_then(i64::checked_abs).is_none_or(|age| age > tolerance) {
        return Err(WebhookError::Stale);
    }
    let matches = signatures.iter().any(|s| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        // Constant-time comparison.
        mac.verify_slice(s).is_ok()
    });
    if matches {
        Ok(())
    } else {
        Err(WebhookError::Mismatch)
    }
}

/// The `Stripe-Signature` header for `payload` at `timestamp` (what Stripe sends; for tests and
/// tools that replay events).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(payload);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// What an event says happened to a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The amount is held (`requires_capture`): how much, in the currency's ISO 4217 minor unit
    /// (converted from how Stripe writes it), and in which currency (upper case).
    Authorized { reference: String, amount_minor: Option<i64>, currency: Option<String> },
    /// The held amount was captured.
    Captured { reference: String },
    /// The confirmation failed: the card was refused.
    Failed { reason: String },
}

/// A verified event, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub kind: String,
    /// The order the intent was made for (from its metadata), if any.
    pub order_id: Option<Uuid>,
    /// `None` for events that change nothing here.
    pub outcome: Option<Outcome>,
}

/// Reads an event's JSON.
pub fn read_event(payload: &[u8]) -> Result<Event, WebhookError> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| WebhookError::Unreadable(e.to_string()))?;
    let id =
        v["id"].as_str().filter(|s| !s.is_empty()).ok_or_else(|| WebhookError::Unreadable("no id".into()))?;
    let kind = v["type"].as_str().ok_or_else(|| WebhookError::Unreadable("no type".into()))?;
    let object = &v["data"]["object"];
    let order_id = object["metadata"]["order_id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    let reference = object["id"].as_str().unwrap_or_default().to_string();
    let is_intent = object["object"] == "payment_intent" && !reference.is_empty();
    let outcome = match kind {
        _ if !is_intent => None,
        "payment_intent.amount_capturable_updated" if object["status"] == "requires_capture" => {
            let currency = object["currency"].as_str().map(str::to_ascii_uppercase);
            let amount_minor = match (object["amount"].as_i64(), &currency) {
                (Some(amount), Some(c)) => Some(super::stripe::from_stripe(c, amount)),
                _ => None,
            };
            Some(Outcome::Authorized { reference, amount_minor, currency })
        }
        // An intent with manual capture succeeds when it is captured.
        "payment_intent.succeeded" if object["capture_method"] == "manual" => {
            Some(Outcome::Captured { reference })
        }
        "payment_intent.payment_failed" => Some(Outcome::Failed {
            reason: object["last_payment_error"]["decline_code"]
                .as_str()
                .or_else(|| object["last_payment_error"]["code"].as_str())
                .unwrap_or("card_declined")
                .to_string(),
        }),
        _ => None,
    };
    Ok(Event { id: id.to_string(), kind: kind.to_string(), order_id, outcome })
}

/// What receiving an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event id was seen before: nothing done.
    Duplicate,
    /// Recorded; it changed nothing (not ours, no outcome, or the payment had moved on).
    Recorded,
    /// Recorded, the payment moved and the saga was sent this reply.
    Replied(ReplyKind),
}

/// Records `event` and applies its outcome, in one transaction.
pub async fn apply(pool: &PgPool, event: &Event) -> Result<Applied, AppError> {
    let mut tx = pool.begin().await?;
    let fresh = sqlx::query!(
        "INSERT INTO webhook_events (provider, event_id, kind, order_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        PROVIDER,
        event.id,
        event.kind,
        event.order_id,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        tx.commit().await?;
        return Ok(Applied::Duplicate);
    }
    let (Some(order_id), Some(outcome)) = (event.order_id, &event.outcome) else {
        tx.commit().await?;
        return Ok(Applied::Recorded);
    };
    let Some(saga) = sqlx::query!(
        "SELECT id, trace_id FROM sagas WHERE order_id = $1 AND definition = $2",
        order_id,
        crate::saga::CHECKOUT
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        // Another deployment's intent, on the same Stripe account.
        tx.commit().await?;
        return Ok(Applied::Recorded);
    };
    let moved = match outcome {
        Outcome::Authorized { reference, amount_minor, currency } => {
            let payment = store::load(&mut *tx, order_id).await?;
            let expected = store::amount_of(&mut *tx, order_id).await?;
            let matches = expected.as_ref().is_some_and(|(amount, cur)| {
                Some(*amount) == *amount_minor && Some(cur.to_ascii_uppercase()) == *currency
            });
            let release = match &payment {
                // What the saga waits for: unless it is not for the order's amount and currency.
                Some(p) if p.status == Status::Pending && matches => None,
                Some(p) if p.status == Status::Pending => Some("not the order's amount or currency"),
                // Already known.
                Some(p) if p.gateway_ref.as_deref() == Some(reference.as_str()) => None,
                Some(p) if matches!(p.status, Status::Voided | Status::Declined | Status::Refunded) => {
                    Some("authorized after the payment ended")
                }
                Some(_) => Some("not the payment's own authorization"),
                None => Some("no payment for the order"),
            };
            match release {
                None => store::transition(
                    &mut *tx,
                    order_id,
                    Status::Pending,
                    Status::Authorized,
                    Some(reference),
                    None,
                )
                .await?
                .then_some(Reply {
                    kind: ReplyKind::PaymentAuthorized,
                    reason: None,
                    command: None,
                }),
                Some(why) => {
                    // Held at the provider for an order that will not capture it: let it go.
                    warn!(%order_id, reference, why, "releasing an authorization at the provider");
                    store::request_release(&mut *tx, order_id, reference, why).await?;
                    None
                }
            }
        }
        Outcome::Captured { reference } => {
            let ours = store::load(&mut *tx, order_id)
                .await?
                .is_some_and(|p| p.gateway_ref.as_deref() == Some(reference.as_str()));
            (ours
                && store::transition(&mut *tx, order_id, Status::Authorized, Status::Captured, None, None)
                    .await?)
                .then_some(Reply { kind: ReplyKind::PaymentCaptured, reason: None, command: None })
        }
        Outcome::Failed { reason } => {
            store::transition(&mut *tx, order_id, Status::Pending, Status::Declined, None, Some(reason))
                .await?
                .then(|| Reply {
                    kind: ReplyKind::PaymentDeclined,
                    reason: Some(reason.clone()),
                    command: None,
                })
        }
    };
    let Some(reply) = moved else {
        tx.commit().await?;
        return Ok(Applied::Recorded);
    };
    let kind = reply.kind;
    let envelope = Envelope::new(saga.id, order_id, saga.trace_id, Body::Reply(reply));
    let row = outbox::enqueue(&mut tx, &envelope).await?;
    tx.commit().await?;
    outbox::committed(pool, vec![row]);
    info!(%order_id, saga_id = %saga.id, event = %event.id, reply = kind.as_str(), "webhook answered the saga");
    Ok(Applied::Replied(kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "whsec_test";
    const TOLERANCE: Duration = Duration::from_secs(300);

    #[test]
    fn a_signature_made_with_the_secret_verifies() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(body, SECRET, 1_700_000_000);
        assert_eq!(verify(Some(&header), body, SECRET, 1_700_000_100, TOLERANCE), Ok(()));
    }

    #[test]
    fn tampering_a_wrong_secret_or_an_old_timestamp_is_refused() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(body, SECRET, 1_700_000_000);
        let now = 1_700_000_000;
        assert_eq!(
            verify(Some(&header), br#"{"id":"evt_2"}"#, SECRET, now, TOLERANCE),
            Err(WebhookError::Mismatch)
        );
        assert_eq!(verify(Some(&header), body, "whsec_other", now, TOLERANCE), Err(WebhookError::Mismatch));
        assert_eq!(verify(Some(&header), body, SECRET, now + 301, TOLERANCE), Err(WebhookError::Stale));
        assert_eq!(verify(Some(&header), body, SECRET, now - 301, TOLERANCE), Err(WebhookError::Stale));
        // Timestamps at the ends of i64 are stale, not an overflow (a panic in debug builds, a
        // wrapped difference in release ones).
        for t in [i64::MIN, i64::MIN + 1, i64::MAX] {
            let header = sign(body, SECRET, t);
            assert_eq!(
                verify(Some(&header), body, SECRET, now, TOLERANCE),
                Err(WebhookError::Stale),
                "t={t}"
            );
            assert_eq!(
                verify(Some(&header), body, SECRET, -now, TOLERANCE),
                Err(WebhookError::Stale),
                "t={t}"
            );
        }
        // A replayed header with its timestamp changed no longer matches.
        let moved = header.replace("t=1700000000", "t=1700000200");
        assert_eq!(verify(Some(&moved), body, SECRET, now + 200, TOLERANCE), Err(WebhookError::Mismatch));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let body = b"{}";
        assert_eq!(verify(None, body, SECRET, 0, TOLERANCE), Err(WebhookError::MissingSignature));
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz", "t=1,v1=abc"] {
            assert_eq!(
                verify(Some(bad), body, SECRET, 1, TOLERANCE),
                Err(WebhookError::MalformedSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn any_matching_v1_verifies_as_during_a_secret_rotation() {
        let body = b"{}";
        let good = sign(body, SECRET, 10);
        let v1 = good.split_once(",v1=").unwrap().1;
        let header = format!("t=10,v1={},v0=ff,v1={v1}", "00".repeat(32));
        assert_eq!(verify(Some(&header), body, SECRET, 10, TOLERANCE), Ok(()));
    }

    fn event(kind: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({ "id": "evt_9", "type": kind, "data": { "object": object } })).unwrap()
    }

    #[test]
    fn payment_intent_events_read_as_outcomes() {
        let order = Uuid::now_v7();
        let intent = |status: &str| {
            json!({ "object": "payment_intent", "id": "pi_1", "status": status, "capture_method": "manual",
                    "metadata": { "order_id": order.to_string() } })
        };
        let e = read_event(&event("payment_intent.amount_capturable_updated", intent("requires_capture")))
            .unwrap();
        assert_eq!(e.order_id, Some(order));
        assert!(
            matches!(&e.outcome, Some(Outcome::Authorized { reference, .. }) if reference == "pi_1"),
            "{e:?}"
        );
        let e = read_event(&event("payment_intent.succeeded", intent("succeeded"))).unwrap();
        assert_eq!(e.outcome, Some(Outcome::Captured { reference: "pi_1".into() }));
        let mut failed = intent("requires_payment_method");
        failed["last_payment_error"] =
            json!({ "code": "card_declined", "decline_code": "insufficient_funds" });
        let e = read_event(&event("payment_intent.payment_failed", failed)).unwrap();
        assert_eq!(e.outcome, Some(Outcome::Failed { reason: "insufficient_funds".into() }));
        // Events that change nothing here are still read (and recorded).
        let e =
            read_event(&event("customer.created", json!({ "object": "customer", "id": "cus_1" }))).unwrap();
        assert_eq!((e.id.as_str(), e.order_id, e.outcome), ("evt_9", None, None));
        assert!(matches!(read_event(b"not json"), Err(WebhookError::Unreadable(_))));
        assert!(matches!(read_event(b"{\"type\":\"x\"}"), Err(WebhookError::Unreadable(_))));
    }
}
