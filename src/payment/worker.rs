//! The payment worker: authorize, capture and void (refunding a capture) through the gateway.
//!
//! The payments row, keyed by order id, is the business-level idempotency record. Gateway calls
//! happen outside transactions (they are network calls) and carry the order id as idempotency key.
//! Authorize writes a PENDING row first, so a VoidPayment that overtakes a slow authorization
//! marks it VOIDED and the authorization, when it completes, is voided instead of kept.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgPool, Row};
use tracing::{info, warn};

use super::gateway::{GatewayError, PaymentGateway};
use crate::error::AppError;
use crate::postgres::{inbox, outbox};
use crate::saga::messages::{Body, Command, Envelope, Reply, ReplyKind};

pub const CONSUMER: &str = "payment-worker";

#[derive(Clone)]
pub struct PaymentWorker {
    pool: PgPool,
    gateway: Arc<dyn PaymentGateway>,
    gateway_timeout: Duration,
}

struct Payment {
    status: String,
    amount_minor: i64,
    gateway_ref: Option<String>,
    reason: Option<String>,
}

fn reply(kind: ReplyKind, reason: Option<String>) -> Option<Reply> {
    Some(Reply { kind, reason })
}

impl PaymentWorker {
    pub fn new(pool: PgPool, gateway: Arc<dyn PaymentGateway>, gateway_timeout: Duration) -> Self {
        Self { pool, gateway, gateway_timeout }
    }

    async fn load(&self, order_id: uuid::Uuid) -> Result<Option<Payment>, sqlx::Error> {
        let row =
            sqlx::query("SELECT status, amount_minor, gateway_ref, reason FROM payments WHERE order_id = $1")
                .bind(order_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| Payment {
            status: r.get("status"),
            amount_minor: r.get("amount_minor"),
            gateway_ref: r.get("gateway_ref"),
            reason: r.get("reason"),
        }))
    }

    async fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, GatewayError>>,
    ) -> Result<T, GatewayError> {
        tokio::time::timeout(self.gateway_timeout, f)
            .await
            .unwrap_or_else(|_| Err(GatewayError::Unavailable("gateway timed out".into())))
    }

    /// Returns `false` when the message was a duplicate and nothing was done.
    pub async fn handle(&self, envelope: Envelope) -> Result<bool, AppError> {
        let Body::Command(command) = &envelope.body else {
            return Ok(true);
        };
        // No early inbox check: a redelivered command finds the payment row in its final state and
        // answers from it without calling the gateway; the claim below drops the duplicate reply.
        let reply = match command {
            Command::AuthorizePayment { amount_minor, currency, payment_token } => {
                self.authorize(&envelope, *amount_minor, currency, payment_token).await?
            }
            Command::CapturePayment => self.capture(&envelope).await?,
            Command::VoidPayment => self.void(&envelope).await?,
            other => return Err(AppError::Internal(format!("payment worker got {:?}", other.kind()))),
        };
        let mut tx = self.pool.begin().await?;
        if !inbox::claim(&mut tx, CONSUMER, envelope.message_id).await? {
            tx.commit().await?;
            return Ok(false);
        }
        if let Some(reply) = &reply {
            outbox::enqueue(&mut tx, &envelope.reply(reply.clone())).await?;
        }
        tx.commit().await?;
        if reply.is_some() {
            outbox::committed(&self.pool);
        }
        Ok(true)
    }

    async fn authorize(
        &self,
        env: &Envelope,
        amount: i64,
        currency: &str,
        token: &str,
    ) -> Result<Option<Reply>, AppError> {
        let inserted = sqlx::query(
            "INSERT INTO payments (order_id, status, amount_minor, currency) VALUES ($1, 'PENDING', $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(env.order_id)
        .bind(amount)
        .bind(currency)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            let p = self
                .load(env.order_id)
                .await?
                .ok_or_else(|| AppError::Internal("payment row vanished".into()))?;
            match p.status.as_str() {
                "AUTHORIZED" | "CAPTURED" => return Ok(reply(ReplyKind::PaymentAuthorized, None)),
                "DECLINED" => return Ok(reply(ReplyKind::PaymentDeclined, p.reason)),
                "VOIDED" | "REFUNDED" => {
                    return Ok(reply(ReplyKind::PaymentDeclined, Some("payment was voided".into())))
                }
                _ => {} // PENDING: an earlier attempt did not finish; ask the gateway again (idempotent).
            }
        }
        match self.call(self.gateway.authorize(env.order_id, token, amount, currency)).await {
            Ok(auth) => {
                let updated = sqlx::query(
                    "UPDATE payments SET status = 'AUTHORIZED', gateway_ref = $2, updated_at = now() WHERE order_id = $1 AND status = 'PENDING'",
                )
                .bind(env.order_id)
                .bind(&auth.reference)
                .execute(&self.pool)
                .await?
                .rows_affected();
                if updated == 0 {
                    // Someone else moved the row while the gateway was deciding.
                    let now =
                        self.load(env.order_id).await?.map(|p| (p.status, p.reason)).unwrap_or_default();
                    return match now.0.as_str() {
                        // A concurrent delivery of the same command authorized it (same idempotency key).
                        "AUTHORIZED" | "CAPTURED" => Ok(reply(ReplyKind::PaymentAuthorized, None)),
                        "VOIDED" | "REFUNDED" => {
                            warn!("authorization completed after the payment was voided; voiding it");
                            self.call(self.gateway.void(env.order_id, &auth.reference))
                                .await
                                .map_err(|e| AppError::Internal(e.to_string()))?;
                            Ok(reply(ReplyKind::PaymentDeclined, Some("payment was voided".into())))
                        }
                        _ => Ok(reply(ReplyKind::PaymentDeclined, now.1)),
                    };
                }
                info!("payment authorized");
                Ok(reply(ReplyKind::PaymentAuthorized, None))
            }
            Err(GatewayError::Declined(reason)) => {
                sqlx::query("UPDATE payments SET status = 'DECLINED', reason = $2, updated_at = now() WHERE order_id = $1 AND status = 'PENDING'")
                    .bind(env.order_id)
                    .bind(&reason)
                    .execute(&self.pool)
                    .await?;
                info!(%reason, "payment declined");
                Ok(reply(ReplyKind::PaymentDeclined, Some(reason)))
            }
            Err(GatewayError::Unavailable(why)) => {
                // Unknown outcome: send no reply. The orchestrator's step timeout retries or compensates.
                warn!(%why, "gateway did not answer; leaving the step to the orchestrator's timeout");
                Ok(None)
            }
        }
    }

    async fn capture(&self, env: &Envelope) -> Result<Option<Reply>, AppError> {
        let Some(p) = self.load(env.order_id).await? else {
            return Ok(reply(ReplyKind::PaymentCaptureFailed, Some("no authorization".into())));
        };
        match p.status.as_str() {
            "CAPTURED" => return Ok(reply(ReplyKind::PaymentCaptured, None)),
            "AUTHORIZED" => {}
            other => return Ok(reply(ReplyKind::PaymentCaptureFailed, Some(format!("payment is {other}")))),
        }
        let reference = p.gateway_ref.unwrap_or_default();
        match self.call(self.gateway.capture(env.order_id, &reference, p.amount_minor)).await {
            Ok(()) => {
                let updated = sqlx::query("UPDATE payments SET status = 'CAPTURED', updated_at = now() WHERE order_id = $1 AND status = 'AUTHORIZED'")
                    .bind(env.order_id)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                if updated == 0 {
                    let now = self.load(env.order_id).await?.map(|p| p.status).unwrap_or_default();
                    if now == "CAPTURED" {
                        // A concurrent delivery of the same command captured it (same idempotency key).
                        return Ok(reply(ReplyKind::PaymentCaptured, None));
                    }
                    // Voided concurrently: the money must not stay captured.
                    self.call(self.gateway.refund(env.order_id, &reference, p.amount_minor))
                        .await
                        .map_err(|e| AppError::Internal(e.to_string()))?;
                    return Ok(reply(ReplyKind::PaymentCaptureFailed, Some("payment was voided".into())));
                }
                info!("payment captured");
                Ok(reply(ReplyKind::PaymentCaptured, None))
            }
            Err(GatewayError::Declined(reason)) => Ok(reply(ReplyKind::PaymentCaptureFailed, Some(reason))),
            Err(GatewayError::Unavailable(why)) => {
                warn!(%why, "capture outcome unknown; leaving it to the orchestrator's timeout");
                Ok(None)
            }
        }
    }

    async fn void(&self, env: &Envelope) -> Result<Option<Reply>, AppError> {
        // No row yet: leave a VOIDED tombstone so a late authorization is voided, not kept.
        let tombstone = sqlx::query(
            "INSERT INTO payments (order_id, status, amount_minor, currency, reason) VALUES ($1, 'VOIDED', 0, 'XXX', 'voided before authorized') ON CONFLICT DO NOTHING",
        )
        .bind(env.order_id)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if tombstone {
            return Ok(reply(ReplyKind::PaymentVoided, None));
        }
        let p = self
            .load(env.order_id)
            .await?
            .ok_or_else(|| AppError::Internal("payment row vanished".into()))?;
        let reference = p.gateway_ref.clone().unwrap_or_default();
        let (from, to) = match p.status.as_str() {
            "PENDING" => ("PENDING", "VOIDED"),
            "AUTHORIZED" => {
                self.call(self.gateway.void(env.order_id, &reference))
                    .await
                    .map_err(|e| AppError::Internal(e.to_string()))?;
                ("AUTHORIZED", "VOIDED")
            }
            "CAPTURED" => {
                self.call(self.gateway.refund(env.order_id, &reference, p.amount_minor))
                    .await
                    .map_err(|e| AppError::Internal(e.to_string()))?;
                ("CAPTURED", "REFUNDED")
            }
            _ => return Ok(reply(ReplyKind::PaymentVoided, None)), // DECLINED, VOIDED, REFUNDED: nothing held
        };
        let updated = sqlx::query(
            "UPDATE payments SET status = $3, updated_at = now() WHERE order_id = $1 AND status = $2",
        )
        .bind(env.order_id)
        .bind(from)
        .bind(to)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 0 {
            // The row moved under us (e.g. PENDING became AUTHORIZED): fail so the message is redelivered.
            return Err(AppError::Conflict("payment changed while voiding; retrying".into()));
        }
        info!(from, to, "payment voided");
        Ok(reply(ReplyKind::PaymentVoided, None))
    }
}
