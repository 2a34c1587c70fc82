//! The payment worker: authorize, capture, void (refunding a capture) and refund through the
//! gateway.
//!
//! The payments row, keyed by order id, is the business-level idempotency record. Gateway calls
//! happen outside transactions (they are network calls) and carry the order id as idempotency key.
//! Authorize writes a PENDING row first, so a VoidPayment that overtakes a slow authorization
//! marks it VOIDED and the authorization, when it completes, is voided instead of kept.
//!
//! The gateway's answer is recorded in the same transaction as the inbox claim and the reply
//! (authorize: two commits, capture: one): a crash before that commit leaves the row as it was,
//! and the redelivered command asks the gateway again under the same idempotency key.
//!
//! Only one delivery at a time calls the gateway for an order: it takes a lease on the payment
//! row first (`call_until`), and a concurrent delivery of the same command (a broker duplicate,
//! an orchestrator retry) that finds the lease held sends no reply, claims nothing in the inbox
//! (a broker duplicate has the holder's message id) and leaves the answer to the holder. The lease ends with the recorded outcome, or after the gateway timeout when its
//! holder died; the next retry then asks again, and the gateway finds what the first call did.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tracing::{error, info, warn};

use super::gateway::{Call, GatewayError, PaymentGateway};
use super::store::{self, PaymentStatus as Status};
use crate::saga::messages::{Body, Command, CommandKind, Envelope, Reply, ReplyKind};
use ecommerce_platform::error::AppError;
use ecommerce_platform::postgres::{inbox, outbox};

pub const CONSUMER: &str = "payment-worker";

#[derive(Clone)]
pub struct PaymentWorker {
    pool: PgPool,
    gateway: Arc<dyn PaymentGateway>,
    gateway_timeout: Duration,
}

fn reply(kind: ReplyKind, reason: Option<String>) -> Option<Reply> {
    Some(Reply { kind, reason, command: None })
}

/// What a command leaves to the transaction that claims it and sends the reply.
enum Finish {
    /// Another delivery holds the lease and will record the outcome: nothing is claimed, so that
    /// this delivery (a broker duplicate carries the same message id) cannot take the message
    /// from the holder, whose claim then would fail and whose answer would be dropped.
    Skip,
    /// Send this reply (or none), nothing else to record.
    Reply(Option<Reply>),
    /// Move the payment from `from` to `to` and send `reply`; if the row is no longer in `from`,
    /// `contested` says what then.
    Move {
        from: Status,
        to: Status,
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

/// What a void asks the provider for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Cancel an authorization (or whatever was made for the order).
    Cancel,
    /// Refund a capture.
    Refund,
}

impl PaymentWorker {
    pub fn new(pool: PgPool, gateway: Arc<dyn PaymentGateway>, gateway_timeout: Duration) -> Self {
        Self { pool, gateway, gateway_timeout }
    }

    /// How long a delivery holds the right to call the gateway for an order: its call is cut
    /// off after `gateway_timeout`, and recording the answer takes a moment more. A worker that
    /// died holding it holds it no longer than this.
    fn lease(&self) -> Duration {
        self.gateway_timeout + Duration::from_secs(1)
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
            Command::RefundPayment => self.refund(&envelope).await?,
            other => return Err(AppError::Internal(format!("payment worker got {:?}", other.kind()))),
        };
        if let Finish::Skip = finish {
            return Ok(false);
        }
        let mut tx = self.pool.begin().await?;
        if !inbox::claim(&mut tx, CONSUMER, envelope.message_id).await? {
            tx.commit().await?;
            return Ok(false);
        }
        let reply = match finish {
            Finish::Skip => None,
            Finish::Reply(reply) => reply,
            Finish::Move { from, to, gateway_ref, reason, reply, contested } => {
                let moved = store::transition(
                    &mut *tx,
                    envelope.order_id,
                    from,
                    to,
                    gateway_ref.as_deref(),
                    reason.as_deref(),
                )
                .await?;
                if moved {
                    info!(from = from.as_str(), to = to.as_str(), "payment recorded");
                    Some(reply)
                } else {
                    // Someone moved the row while the gateway was deciding.
                    let now = store::load(&mut *tx, envelope.order_id)
                        .await?
                        .ok_or_else(|| AppError::Internal("payment row vanished".into()))?;
                    match (contested, now.status) {
                        (Contested::Keep, _) => Some(reply),
                        // A concurrent delivery of the same command did it (same idempotency key).
                        (Contested::Authorized { .. }, Status::Authorized | Status::Captured) => Some(reply),
                        (Contested::Captured { .. }, Status::Captured) => Some(reply),
                        // Voided, or declined (a webhook said the card was refused) while the
                        // provider authorized after all: nothing will capture it, so it goes.
                        (
                            Contested::Authorized { reference },
                            Status::Voided | Status::Refunded | Status::Declined,
                        ) => {
                            tx.rollback().await?;
                            warn!(
                                status = now.status.as_str(),
                                "authorization completed after the payment ended; voiding it"
                            );
                            self.call(
                                self.gateway
                                    .void(Call::new(envelope.order_id, now.call_attempt), Some(&reference)),
                            )
                            .await
                            .map_err(|e| AppError::Internal(e.to_string()))?;
                            let declined = Reply {
                                kind: ReplyKind::PaymentDeclined,
                                reason: Some("payment was voided".into()),
                                command: None,
                            };
                            return self.reply_only(&envelope, declined).await;
                        }
                        (Contested::Authorized { .. }, _) => Some(Reply {
                            kind: ReplyKind::PaymentDeclined,
                            reason: now.reason,
                            command: None,
                        }),
                        (Contested::Captured { reference, amount }, _) => {
                            // Voided concurrently: the money must not stay captured.
                            tx.rollback().await?;
                            self.call(self.gateway.refund(
                                Call::new(envelope.order_id, now.call_attempt),
                                &reference,
                                amount,
                            ))
                            .await
                            .map_err(|e| AppError::Internal(e.to_string()))?;
                            let failed = Reply {
                                kind: ReplyKind::PaymentCaptureFailed,
                                reason: Some("payment was voided".into()),
                                command: None,
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
        let first = store::insert_pending(&self.pool, env.order_id, amount, currency).await?;
        if !first {
            let p = store::load(&self.pool, env.order_id)
                .await?
                .ok_or_else(|| AppError::Internal("payment row vanished".into()))?;
            match p.status {
                Status::Authorized | Status::Captured => {
                    return Ok(Finish::Reply(reply(ReplyKind::PaymentAuthorized, None)))
                }
                Status::Declined => return Ok(Finish::Reply(reply(ReplyKind::PaymentDeclined, p.reason))),
                Status::Voided | Status::Refunded => {
                    return Ok(Finish::Reply(reply(
                        ReplyKind::PaymentDeclined,
                        Some("payment was voided".into()),
                    )))
                }
                // An earlier attempt did not finish; ask the gateway again (idempotent).
                Status::Pending => {}
            }
        }
        let Some(attempt) =
            store::lease_call(&self.pool, env.order_id, Status::Pending, self.lease()).await?
        else {
            info!("another delivery is asking the gateway; it will answer");
            return Ok(Finish::Skip);
        };
        let call = Call::new(env.order_id, attempt);
        info!("asking the gateway to authorize");
        // The delivery that wrote the PENDING row makes the first call: no earlier one can have
        // reached the provider. Later ones (the row was PENDING already) may follow a call whose
        // answer was lost, and the gateway looks for what it did.
        let asked = if first {
            self.gateway.authorize_first(call, token, amount, currency)
        } else {
            self.gateway.authorize(call, token, amount, currency)
        };
        match self.call(asked).await {
            Ok(auth) => Ok(Finish::Move {
                from: Status::Pending,
                to: Status::Authorized,
                gateway_ref: Some(auth.reference.clone()),
                reason: None,
                reply: Reply { kind: ReplyKind::PaymentAuthorized, reason: None, command: None },
                contested: Contested::Authorized { reference: auth.reference },
            }),
            Err(GatewayError::Declined(reason)) => {
                info!(%reason, "payment declined");
                Ok(Finish::Move {
                    from: Status::Pending,
                    to: Status::Declined,
                    gateway_ref: None,
                    reason: Some(reason.clone()),
                    reply: Reply { kind: ReplyKind::PaymentDeclined, reason: Some(reason), command: None },
                    contested: Contested::Keep,
                })
            }
            Err(GatewayError::ServerError(why)) => self.server_error(env, why).await,
            Err(GatewayError::Unavailable(why)) => {
                // Unknown outcome: send no reply. The orchestrator's step timeout retries or compensates.
                warn!(%why, "gateway did not answer; leaving the step to the orchestrator's timeout");
                store::release_call(&self.pool, env.order_id).await?;
                Ok(Finish::Reply(None))
            }
            // The payment stays PENDING: a retry after the fix asks again.
            Err(GatewayError::Permanent(why)) => self.faulted(env, CommandKind::AuthorizePayment, why).await,
        }
    }

    async fn capture(&self, env: &Envelope) -> Result<Finish, AppError> {
        let Some(p) = store::load(&self.pool, env.order_id).await? else {
            return Ok(Finish::Reply(reply(
                ReplyKind::PaymentCaptureFailed,
                Some("no authorization".into()),
            )));
        };
        match p.status {
            Status::Captured => return Ok(Finish::Reply(reply(ReplyKind::PaymentCaptured, None))),
            Status::Authorized => {}
            other => {
                return Ok(Finish::Reply(reply(
                    ReplyKind::PaymentCaptureFailed,
                    Some(format!("payment is {}", other.as_str())),
                )))
            }
        }
        let Some(attempt) =
            store::lease_call(&self.pool, env.order_id, Status::Authorized, self.lease()).await?
        else {
            info!("another delivery is capturing; it will answer");
            return Ok(Finish::Skip);
        };
        info!("asking the gateway to capture");
        let reference = p.gateway_ref.unwrap_or_default();
        match self
            .call(self.gateway.capture(Call::new(env.order_id, attempt), &reference, p.amount_minor))
            .await
        {
            Ok(()) => Ok(Finish::Move {
                from: Status::Authorized,
                to: Status::Captured,
                gateway_ref: None,
                reason: None,
                reply: Reply { kind: ReplyKind::PaymentCaptured, reason: None, command: None },
                contested: Contested::Captured { reference, amount: p.amount_minor },
            }),
            Err(GatewayError::Declined(reason)) => {
                store::release_call(&self.pool, env.order_id).await?;
                Ok(Finish::Reply(reply(ReplyKind::PaymentCaptureFailed, Some(reason))))
            }
            Err(GatewayError::ServerError(why)) => self.server_error(env, why).await,
            Err(GatewayError::Unavailable(why)) => {
                warn!(%why, "capture outcome unknown; leaving it to the orchestrator's timeout");
                store::release_call(&self.pool, env.order_id).await?;
                Ok(Finish::Reply(None))
            }
            Err(GatewayError::Permanent(why)) => self.faulted(env, CommandKind::CapturePayment, why).await,
        }
    }

    /// The refund saga's step: gives a captured payment back, once. Refused when nothing was
    /// captured; a payment already refunded (a retry, a duplicate) is answered as refunded
    /// without calling the gateway again, and a retry after a crash mid-call finds the refund the
    /// provider made (the gateway looks before it refunds).
    async fn refund(&self, env: &Envelope) -> Result<Finish, AppError> {
        let Some(p) = store::load(&self.pool, env.order_id).await? else {
            return Ok(Finish::Reply(reply(ReplyKind::RefundDeclined, Some("no payment".into()))));
        };
        match p.status {
            Status::Refunded => return Ok(Finish::Reply(reply(ReplyKind::PaymentRefunded, None))),
            Status::Captured => {}
            other => {
                return Ok(Finish::Reply(reply(
                    ReplyKind::RefundDeclined,
                    Some(format!("payment is {}, nothing was charged", other.as_str())),
                )))
            }
        }
        let Some(attempt) =
            store::lease_call(&self.pool, env.order_id, Status::Captured, self.lease()).await?
        else {
            info!("another delivery is refunding; it will answer");
            return Ok(Finish::Skip);
        };
        info!("asking the gateway to refund");
        let reference = p.gateway_ref.unwrap_or_default();
        match self
            .call(self.gateway.refund(Call::new(env.order_id, attempt), &reference, p.amount_minor))
            .await
        {
            Ok(()) => Ok(Finish::Move {
                from: Status::Captured,
                to: Status::Refunded,
                gateway_ref: None,
                reason: None,
                reply: Reply { kind: ReplyKind::PaymentRefunded, reason: None, command: None },
                contested: Contested::Keep,
            }),
            Err(GatewayError::Declined(reason)) => {
                info!(%reason, "refund refused");
                store::release_call(&self.pool, env.order_id).await?;
                Ok(Finish::Reply(reply(ReplyKind::RefundDeclined, Some(reason))))
            }
            Err(GatewayError::ServerError(why)) => self.server_error(env, why).await,
            Err(GatewayError::Unavailable(why)) => {
                warn!(%why, "refund outcome unknown; leaving it to the orchestrator's timeout");
                store::release_call(&self.pool, env.order_id).await?;
                Ok(Finish::Reply(None))
            }
            Err(GatewayError::Permanent(why)) => self.faulted(env, CommandKind::RefundPayment, why).await,
        }
    }

    /// The provider failed while carrying the call out: the outcome is unknown, as after no
    /// answer, and the provider would answer the same key with the same failure, so the next
    /// call is a new attempt (a new key). The step's retry asks again, and looks first for what
    /// this call may have done.
    async fn server_error(&self, env: &Envelope, why: String) -> Result<Finish, AppError> {
        warn!(%why, "the provider failed; the next call is a new request");
        store::next_call_attempt(&self.pool, env.order_id).await?;
        store::release_call(&self.pool, env.order_id).await?;
        Ok(Finish::Reply(None))
    }

    /// The gateway refused `command`'s request itself: the lease ends, the payment stays as it
    /// was, and the saga is told, to stop for an operator.
    async fn faulted(&self, env: &Envelope, command: CommandKind, why: String) -> Result<Finish, AppError> {
        error!(%why, command = command.as_str(), "the gateway refused the request; the saga waits for an operator");
        store::release_call(&self.pool, env.order_id).await?;
        Ok(Finish::Reply(Some(Reply::faulted(command, why))))
    }

    /// Releases what the provider holds: `Ok(None)` when done, the faulted reply when the
    /// provider refused for good (the request itself, or a refund of a capture); an unknown
    /// outcome is an error (redelivered). A refused cancellation is redelivered too: the
    /// authorization may have moved meanwhile (captured between our read and the cancel), and
    /// the next delivery reads it again and releases it as it is then.
    async fn release(
        &self,
        env: &Envelope,
        kind: Release,
        released: impl std::future::Future<Output = Result<(), GatewayError>>,
    ) -> Result<Option<Reply>, AppError> {
        let refused = match self.call(released).await {
            Ok(()) => return Ok(None),
            Err(GatewayError::ServerError(why)) => {
                store::next_call_attempt(&self.pool, env.order_id).await?;
                return Err(AppError::Internal(format!(
                    "the provider failed; redelivered as a new request: {why}"
                )));
            }
            Err(GatewayError::Permanent(why)) => why,
            Err(GatewayError::Declined(why)) if kind == Release::Refund => why,
            Err(e) => return Err(AppError::Internal(e.to_string())),
        };
        error!(why = %refused, "the gateway refused to release the payment; the saga waits for an operator");
        Ok(Some(Reply::faulted(CommandKind::VoidPayment, refused)))
    }

    /// Releases at the provider what `payment_releases` asks for (authorizations reported for
    /// orders that will not capture them), a few at a time; one that fails is tried again once
    /// its lease ran out. Returns how many were released.
    pub async fn release_requested(&self) -> Result<usize, AppError> {
        let due = store::take_releases(&self.pool, 16, self.lease() * 10).await?;
        let mut done = 0;
        for (order_id, reference) in due {
            match self.call(self.gateway.void(Call::new(order_id, 1), Some(&reference))).await {
                Ok(()) => {
                    store::released(&self.pool, &reference).await?;
                    info!(%order_id, reference, "released at the provider");
                    done += 1;
                }
                Err(e) => {
                    warn!(%order_id, reference, error = %e, "release at the provider failed; tried again later")
                }
            }
        }
        Ok(done)
    }

    async fn void(&self, env: &Envelope) -> Result<Option<Reply>, AppError> {
        // No row yet: leave a VOIDED tombstone so a late authorization is voided, not kept.
        if store::insert_void_tombstone(&self.pool, env.order_id).await? {
            return Ok(reply(ReplyKind::PaymentVoided, None));
        }
        let p = store::load(&self.pool, env.order_id)
            .await?
            .ok_or_else(|| AppError::Internal("payment row vanished".into()))?;
        let reference = p.gateway_ref.clone().unwrap_or_default();
        let call = Call::new(env.order_id, p.call_attempt);
        let (from, to) = match p.status {
            Status::Pending => {
                // An authorization may have been asked for and its answer lost: whatever the
                // provider made for the order is released before the payment is closed.
                if let Some(fault) = self.release(env, Release::Cancel, self.gateway.void(call, None)).await?
                {
                    return Ok(Some(fault));
                }
                (Status::Pending, Status::Voided)
            }
            Status::Authorized => {
                if let Some(fault) =
                    self.release(env, Release::Cancel, self.gateway.void(call, Some(&reference))).await?
                {
                    return Ok(Some(fault));
                }
                (Status::Authorized, Status::Voided)
            }
            Status::Captured => {
                if let Some(fault) = self
                    .release(env, Release::Refund, self.gateway.refund(call, &reference, p.amount_minor))
                    .await?
                {
                    return Ok(Some(fault));
                }
                (Status::Captured, Status::Refunded)
            }
            // Nothing held.
            Status::Declined | Status::Voided | Status::Refunded => {
                return Ok(reply(ReplyKind::PaymentVoided, None))
            }
        };
        if !store::transition(&self.pool, env.order_id, from, to, None, None).await? {
            // The row moved under us (e.g. PENDING became AUTHORIZED): fail so the message is redelivered.
            return Err(AppError::Conflict("payment changed while voiding; retrying".into()));
        }
        info!(from = from.as_str(), to = to.as_str(), "payment voided");
        Ok(reply(ReplyKind::PaymentVoided, None))
    }
}
