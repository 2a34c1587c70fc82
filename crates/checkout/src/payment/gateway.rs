//! The payment provider, behind a trait. Every call names the order and the attempt it belongs
//! to ([`Call`]), from which a provider's idempotency key is made, so a retried call cannot
//! charge twice.

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The provider refused; retrying will not help.
    #[error("declined: {0}")]
    Declined(String),
    /// The provider could not be reached or did not answer; the outcome is unknown.
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
    /// The provider failed while carrying the request out (a server error): the outcome is
    /// unknown, and the provider answers the same idempotency key with this failure again, so the
    /// next attempt must be a new request.
    #[error("gateway failed: {0}")]
    ServerError(String),
    /// The provider refused the request itself, not the payment (our credentials, our
    /// parameters): nothing was done, retrying as it is will not help, and the buyer is not at
    /// fault. An operator fixes the cause and retries.
    #[error("gateway refused the request: {0}")]
    Permanent(String),
}

/// Which order a call is for, and which attempt at the provider: the same attempt is the same
/// request (a retry after a lost answer), the next one a new request (after a server error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub order_id: Uuid,
    /// From 1.
    pub attempt: u32,
}

impl Call {
    pub fn new(order_id: Uuid, attempt: u32) -> Self {
        Call { order_id, attempt }
    }

    /// The idempotency key of this call's `step`: order, step and attempt.
    pub fn key(&self, step: &str) -> String {
        format!("{}:{step}:{}", self.order_id, self.attempt)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub reference: String,
}

#[async_trait]
pub trait PaymentGateway: Send + Sync {
    async fn authorize(
        &self,
        call: Call,
        token: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<Authorization, GatewayError>;
    /// The first authorization ever asked for the order (no earlier attempt can have reached
    /// the provider), so nothing needs looking up first. The same as `authorize` unless a
    /// gateway can skip that lookup.
    async fn authorize_first(
        &self,
        call: Call,
        token: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<Authorization, GatewayError> {
        self.authorize(call, token, amount_minor, currency).await
    }
    async fn capture(&self, call: Call, reference: &str, amount_minor: i64) -> Result<(), GatewayError>;
    /// Releases what the provider holds (or has taken) for the order: the authorization at
    /// `reference`, or, with no reference recorded (the worker stopped between asking for an
    /// authorization and recording it), whatever the provider made for the order. Done when
    /// nothing is held any more; a capture that went through meanwhile is refunded.
    async fn void(&self, call: Call, reference: Option<&str>) -> Result<(), GatewayError>;
    async fn refund(&self, call: Call, reference: &str, amount_minor: i64) -> Result<(), GatewayError>;
}

/// A deterministic gateway for development and tests. The payment token decides the outcome:
///
/// | token                  | authorize                | capture  | refund   |
/// |------------------------|--------------------------|----------|----------|
/// | `tok_visa` (any other) | approved                 | approved | approved |
/// | `tok_declined`         | declined `card_declined` | -        | -        |
/// | `tok_capture_fails`    | approved                 | declined | -        |
/// | `tok_refund_fails`     | approved                 | approved | declined |
/// | `tok_refund_hangs`     | approved                 | approved | never answers |
/// | `tok_timeout`          | never answers            | -        | -        |
/// | `tok_slow`             | approved after 2 s       | approved | approved |
#[derive(Debug, Default, Clone)]
pub struct TestGateway;

/// How long `tok_slow` takes to authorize.
pub const SLOW_AUTHORIZE: Duration = Duration::from_secs(2);

impl TestGateway {
    fn reference(order_id: Uuid, token: &str) -> String {
        format!("auth_{}_{}", order_id.simple(), token)
    }
}

#[async_trait]
impl PaymentGateway for TestGateway {
    async fn authorize(
        &self,
        call: Call,
        token: &str,
        _amount: i64,
        _currency: &str,
    ) -> Result<Authorization, GatewayError> {
        match token {
            "tok_declined" => Err(GatewayError::Declined("card_declined".into())),
            "tok_timeout" => {
                // Models a provider that accepted the connection and never answers.
                tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
                Err(GatewayError::Unavailable("no answer".into()))
            }
            "tok_slow" => {
                // A slow provider that answers within the step timeout: the saga is seen running.
                tokio::time::sleep(SLOW_AUTHORIZE).await;
                Ok(Authorization { reference: Self::reference(call.order_id, token) })
            }
            _ => Ok(Authorization { reference: Self::reference(call.order_id, token) }),
        }
    }

    async fn capture(&self, _call: Call, reference: &str, _amount: i64) -> Result<(), GatewayError> {
        if reference.ends_with("_tok_capture_fails") {
            Err(GatewayError::Declined("capture_refused".into()))
        } else {
            Ok(())
        }
    }

    async fn void(&self, _call: Call, _reference: Option<&str>) -> Result<(), GatewayError> {
        Ok(())
    }

    async fn refund(&self, _call: Call, reference: &str, _amount: i64) -> Result<(), GatewayError> {
        if reference.ends_with("_tok_refund_fails") {
            Err(GatewayError::Declined("refund_refused".into()))
        } else if reference.ends_with("_tok_refund_hangs") {
            tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
            Err(GatewayError::Unavailable("no answer".into()))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_decide_outcomes() {
        let g = TestGateway;
        let id = Call::new(Uuid::nil(), 1);
        let auth = g.authorize(id, "tok_visa", 100, "USD").await.unwrap();
        assert!(g.capture(id, &auth.reference, 100).await.is_ok());
        assert_eq!(
            g.authorize(id, "tok_declined", 100, "USD").await,
            Err(GatewayError::Declined("card_declined".into()))
        );
        let auth = g.authorize(id, "tok_capture_fails", 100, "USD").await.unwrap();
        assert!(g.capture(id, &auth.reference, 100).await.is_err());
        let auth = g.authorize(id, "tok_refund_fails", 100, "USD").await.unwrap();
        assert!(g.capture(id, &auth.reference, 100).await.is_ok());
        assert_eq!(
            g.refund(id, &auth.reference, 100).await,
            Err(GatewayError::Declined("refund_refused".into()))
        );
        let pending =
            tokio::time::timeout(Duration::from_millis(50), g.authorize(id, "tok_timeout", 1, "USD")).await;
        assert!(pending.is_err(), "tok_timeout must never answer");
        let started = std::time::Instant::now();
        g.authorize(id, "tok_slow", 1, "USD").await.unwrap();
        assert!(started.elapsed() >= SLOW_AUTHORIZE, "tok_slow answers, late");
    }
}
