//! The payment worker: authorize, capture and void (refunding a capture) through the gateway.
//!
//! The payments row, keyed by order id, is the business-level idempotency record. Gateway calls
//! happen outside transactions (they are network calls) and carry the order id as idempotency key.
//! Authorize writes a PENDING row first, so a VoidPayment that overtakes a slow authorization
//! marks it VOIDED and the authorization, when it completes, is voided instead of kept.
//!
//! The gateway's answer is recorded in the same transaction as the inbox claim and the reply
//! (authorize: two commits, capture: one): a crash before that commit leaves the row as it was,
//! and the redelivered command asks the gateway again under the same idempotency key.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgPool, Row};
use tracing::{info, warn};

use super::gateway::{GatewayError, PaymentGateway};
use crate::saga::messages::{Body, Command, Envelope, Reply, ReplyKind};
use ecommerce_platform::error::AppError;
use ecommerce_platform::postgres::{inbox, outbox};

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

/// What a command leaves to the transaction that claims it and sends the reply.
enum Finish {
    /// Send this reply (or none), nothing else to record.
    Reply(Option<Reply>),
    /// Move the payment from `from` to `to` and send `reply`; if the row is no longer in `from`,
    /// `contested` says what then.
    Move {
        from: &'static str,
        to: &'static str,
        gateway_ref: Option<String>,
        reason: Option<String>,
        reply: Reply,
        contested: Contested,
    },
}

/// What to do when the payment moved while the gateway was deciding.
enum Contested {
    /// Reply as planned (a decline stays a decline).
    Keep,
    /// An authorization at `reference` must be voided if the payment was voided meanwhile.
    Authorized { reference: String },
    /// A capture must be refunded if the payment was voided meanwhile.
    Captured { reference: String, amount: i64 },
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
        let finish = match command {
            Command::AuthorizePayment { amount_minor, currency, payment_token } => {
                self.authorize(&envelope, *amount_minor, currency, payment_token).await?
            }
            Command::CapturePayment => self.capture(&envelope).await?,
            Command::VoidPayment => Finish::Reply(self.void(&envelope).await?),
            other => return Err(AppError::Internal(format!("payment worker got {:?}", other.kind()))),
        };
        let mut tx = self.pool.begin().await?;
        if !inbox::claim(&mut tx, CONSUMER, envelope.message_id).await? {
            tx.commit().await?;
            return Ok(false);
        }
        let reply = match finish {
            Finish::Reply(reply) => reply,
            Finish::Move { from, to, gateway_ref, reason, reply, contested } => {
                let moved = sqlx::query(
                    "UPDATE payments SET status = $3, gateway_ref = COALESCE($4, gateway_ref),
                         reason = COALESCE($5, reason), updated_at = now()
                     WHERE order_id = $1 AND status = $2",
                )
                .bind(envelope.order_id)
                .bind(from)
                .bind(to)
                .bind(&gateway_ref)
                .bind(&reason)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if moved == 1 {
                    info!(from, to, "payment recorded");
                    Some(reply)
                } else {
                    // Someone moved the row while the gateway was deciding.
                    let (status, reason): (String, Option<String>) =
                        sqlx::query_as("SELECT status, reason FROM payments WHERE order_id = $1")
                            .bind(envelope.order_id)
                            .fetch_one(&mut *tx)
                            .await?;
                    match (contested, status.as_str()) {
                        (Contested::Keep, _) => Some(reply),
                        // A concurrent delivery of the same command did it (same idempotency key).
                        (Contested::Authorized { .. }, "AUTHORIZED" | "CAPTURED") => Some(reply),
                        (Contested::Captured { .. }, "CAPTURED") => Some(reply),
                        (Contested::Authorized { reference }, "VOIDED" | "REFUNDED") => {
                            tx.rollback().await?;
                            warn!("authorization completed after the payment was voided; voiding it");
                            self.call(self.gateway.void(envelope.order_id, &reference))
                                .await
                                .map_err(|e| AppError::Internal(e.to_string()))?;
                            let declined = Reply {
                                kind: ReplyKind::PaymentDeclined,
                                reason: Some("payment was voided".into()),
                            };
                            return self.reply_only(&envelope, declined).await;
                        }
                        (Contested::Authorized { .. }, _) => {
                            Some(Reply { kind: ReplyKind::PaymentDeclined, reason })
                        }
                        (Contested::Captured { reference, amount }, _) => {
                            // Voided concurrently: the money must not stay captured.
                            tx.rollback().await?;
                            self.call(self.gateway.refund(envelope.order_id, &reference, amount))
                                .await
                                .map_err(|e| AppError::Internal(e.to_string()))?;
                            let failed = Reply {
                                kind: ReplyKind::PaymentCaptureFailed,
                                reason: Some("payment was voided".into()),
                            };
                            return self.reply_only(&envelope, failed).await;
                        }
                    }
                }
            }
        };
        let mut rows = Vec::new();
        if let Some(reply) = reply {
            rows.push(outbox::enqueue(&mut tx, &envelope.reply(reply)).await?);
        }
        tx.commit().await?;
        outbox::committed(&self.pool, rows);
        Ok(true)
    }

    /// Claims the message and sends `reply`, in one transaction; `false` for a duplicate.
    async fn reply_only(&self, envelope: &Envelope, reply: Reply) -> Result<bool, AppError> {
        let mut tx = self.pool.begin().await?;
        if !inbox::claim(&mut tx, CONSUMER, envelope.message_id).await? {
            tx.commit().await?;
            return Ok(false);
        }
        let row = outbox::enqueue(&mut tx, &envelope.reply(reply)).await?;
        tx.commit().await?;
        outbox::committed(&self.pool, vec![row]);
        Ok(true)
    }

    async fn authorize(
        &self,
        env: &Envelope,
        amount: i64,
        currency: &str,
        token: &str,
    ) -> Result<Finish, AppError> {
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
                "AUTHORIZED" | "CAPTURED" => {
                    return Ok(Finish::Reply(reply(ReplyKind::PaymentAuthorized, None)))
                }
                "DECLINED" => return Ok(Finish::Reply(reply(ReplyKind::PaymentDeclined, p.reason))),
                "VOIDED" | "REFUNDED" => {
                    return Ok(Finish::Reply(reply(
                        ReplyKind::PaymentDeclined,
                        Some("payment was voided".into()),
                    )))
                }
                _ => {} // PENDING: an earlier attempt did not finish; ask the gateway again (idempotent).
            }
        }
        match self.call(self.gateway.authorize(env.order_id, token, amount, currency)).await {
            Ok(auth) => Ok(Finish::Move {
                from: "PENDING",
                to: "AUTHORIZED",
                gateway_ref: Some(auth.reference.clone()),
                reason: None,
                reply: Reply { kind: ReplyKind::PaymentAuthorized, reason: None },
                contested: Contested::Authorized { reference: auth.reference },
            }),
            Err(GatewayError::Declined(reason)) => {
                info!(%reason, "payment declined");
                Ok(Finish::Move {
                    from: "PENDING",
                    to: "DECLINED",
                    gateway_ref: None,
                    reason: Some(reason.clone()),
                    reply: Reply { kind: ReplyKind::PaymentDeclined, reason: Some(reason) },
                    contested: Contested::Keep,
                })
            }
            Err(GatewayError::Unavailable(why)) => {
                // Unknown outcome: send no reply. The orchestrator's step timeout retries or compensates.
                warn!(%why, "gateway did not answer; leaving the step to the orchestrator's timeout");
                Ok(Finish::Reply(None))
            }
        }
    }

    async fn capture(&self, env: &Envelope) -> Result<Finish, AppError> {
        let Some(p) = self.load(env.order_id).await? else {
            return Ok(Finish::Reply(reply(
                ReplyKind::PaymentCaptureFailed,
                Some("no authorization".into()),
            )));
        };
        match p.status.as_str() {
            "CAPTURED" => return Ok(Finish::Reply(reply(ReplyKind::PaymentCaptured, None))),
            "AUTHORIZED" => {}
            other => {
                return Ok(Finish::Reply(reply(
                    ReplyKind::PaymentCaptureFailed,
                    Some(format!("payment is {other}")),
                )))
            }
        }
        let reference = p.gateway_ref.unwrap_or_default();
        match self.call(self.gateway.capture(env.order_id, &reference, p.amount_minor)).await {
            Ok(()) => Ok(Finish::Move {
                from: "AUTHORIZED",
                to: "CAPTURED",
                gateway_ref: None,
                reason: None,
                reply: Reply { kind: ReplyKind::PaymentCaptured, reason: None },
                contested: Contested::Captured { reference, amount: p.amount_minor },
            }),
            Err(GatewayError::Declined(reason)) => {
                Ok(Finish::Reply(reply(ReplyKind::PaymentCaptureFailed, Some(reason))))
            }
            Err(GatewayError::Unavailable(why)) => {
                warn!(%why, "capture outcome unknown; leaving it to the orchestrator's timeout");
                Ok(Finish::Reply(None))
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
