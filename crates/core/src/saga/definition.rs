//! The checkout saga, declared as data.
//!
//! Every remote step names the command that performs it, the command that undoes it, the events its
//! replies record, how long the orchestrator waits for a reply and how often it retries. The state
//! machine in [`super::machine`] interprets this table and knows nothing checkout-specific.

use std::time::Duration;

use super::messages::{CommandKind, ReplyKind};

/// What is recorded in a saga's history. The names are the wire values clients see.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumString, strum::EnumIter,
)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "graphql", derive(async_graphql::Enum))]
#[cfg_attr(feature = "graphql", graphql(name = "SagaEventType"))]
pub enum EventKind {
    /// The order was placed and its checkout started (always the first event).
    OrderPlaced,
    /// The ordered units are held for the order.
    StockReserved,
    /// Not enough units: the order cannot be filled.
    StockRejected,
    /// The payment provider holds the amount on the buyer's payment method.
    PaymentAuthorized,
    /// The payment provider refused the payment.
    PaymentDeclined,
    /// The held amount was charged.
    PaymentCaptured,
    /// Charging the held amount failed.
    PaymentCaptureFailed,
    /// The order is confirmed.
    OrderConfirmed,
    /// Every step succeeded (the last event of a confirmed order).
    Completed,
    /// A step's command was sent again after its reply did not come in time.
    StepRetried,
    /// A step's reply did not come in time, however often it was sent.
    StepTimedOut,
    /// The buyer cancelled the order.
    CancelRequested,
    /// An undo command was sent again.
    CompensationRetried,
    /// The held units were given back.
    StockReleased,
    /// The payment was released (or refunded, when it had been charged).
    PaymentVoided,
    /// The order is cancelled.
    OrderCancelled,
    /// Everything done was undone (the last event of a cancelled order).
    Compensated,
    /// Retries (or compensation attempts) ran out; the saga waits for an operator.
    NeedsAttention,
    /// An operator had the paused step's command sent again.
    OperatorRetried,
    /// An operator confirmed that the paused step took effect.
    OperatorResumed,
    /// An operator had the order undone.
    OperatorCompensated,
    /// An operator confirmed the order.
    OperatorCompleted,
}

impl EventKind {
    /// The name stored and sent (`SCREAMING_SNAKE_CASE`, derived).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// The last event a saga ever records.
    pub fn is_terminal(self) -> bool {
        matches!(self, EventKind::Completed | EventKind::Compensated)
    }
}

/// A step of the checkout saga.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
    strum::Display,
)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "graphql", derive(async_graphql::Enum))]
#[cfg_attr(feature = "graphql", graphql(name = "SagaStep"))]
pub enum Step {
    /// Hold the ordered units (undone by releasing them).
    ReserveStock,
    /// Have the payment provider hold the amount (undone by releasing it).
    AuthorizePayment,
    /// Charge the held amount (undone by the authorization's release, which refunds).
    CapturePayment,
}

impl Step {
    /// The name stored and configured (`SCREAMING_SNAKE_CASE`, derived).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// Why a saga compensated and its order was cancelled.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
    strum::Display,
)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "graphql", derive(async_graphql::Enum))]
pub enum FailureReason {
    /// Not enough units of a product.
    OutOfStock,
    /// The stock service did not answer in time.
    StockTimeout,
    /// The payment provider refused the payment.
    PaymentDeclined,
    /// The payment provider did not answer an authorization in time.
    PaymentTimeout,
    /// Charging the held amount failed.
    PaymentCaptureFailed,
    /// The payment provider did not answer a capture in time.
    CaptureTimeout,
    /// The buyer cancelled the order.
    CancelledByUser,
    /// An operator had the order undone.
    CompensatedByOperator,
}

impl FailureReason {
    /// The name stored and sent (`SCREAMING_SNAKE_CASE`, derived).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// What a step does when its retries run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExhausted {
    /// Undo the completed steps (and this one, whose outcome is unknown).
    Compensate,
    /// Stop and wait for an operator (`retrySagaStep`, `resumeSaga`, `forceCompensateSaga`, ...).
    NeedsAttention,
}

/// One remote step of a saga.
#[derive(Debug, Clone)]
pub struct StepDef {
    pub name: Step,
    pub command: CommandKind,
    /// Undoes the step. `None` for a step whose effect is undone by an earlier step's compensation.
    pub compensation: Option<CommandKind>,
    pub success: (ReplyKind, EventKind),
    pub failure: (ReplyKind, EventKind),
    /// Recorded as the saga's failure reason when the step's command is refused.
    pub failure_reason: FailureReason,
    /// Recorded as the saga's failure reason when every attempt timed out.
    pub timeout_reason: FailureReason,
    /// How long the first attempt waits for a reply; attempt `n` waits `n` times as long.
    pub timeout: Duration,
    pub max_attempts: u32,
    /// Pause before re-sending: attempt `n` (from 2) is sent `backoff * 2^(n-2)` after the
    /// previous one timed out, at most `timeout`.
    pub backoff: Duration,
    pub on_exhausted: OnExhausted,
}

impl StepDef {
    /// The pause before sending attempt `attempt` (none before the first).
    pub fn backoff_before(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let factor = 2u32.saturating_pow(attempt.saturating_sub(2).min(16));
        self.backoff.saturating_mul(factor).min(self.timeout)
    }
}

/// A saga: remote steps run in order, compensated in reverse.
#[derive(Debug, Clone)]
pub struct SagaDefinition {
    pub name: &'static str,
    pub steps: Vec<StepDef>,
    /// How long a compensation waits for its reply before it is sent again (compensations retry
    /// until they succeed: they are idempotent and must not be abandoned).
    pub compensation_timeout: Duration,
    /// Upper bound on the wait between compensation attempts.
    pub max_compensation_backoff: Duration,
    /// Compensation attempts before the saga stops in `NEEDS_ATTENTION`; 0 = never stop trying.
    pub compensation_max_attempts: u32,
}

/// Timing and retry knobs, from configuration.
#[derive(Debug, Clone)]
pub struct SagaTiming {
    pub step_timeout: Duration,
    pub max_attempts: u32,
    pub compensation_timeout: Duration,
    /// See [`StepDef::backoff`].
    pub retry_backoff: Duration,
    /// See [`SagaDefinition::compensation_max_attempts`].
    pub compensation_max_attempts: u32,
    /// Steps (by name) that stop in `NEEDS_ATTENTION` instead of compensating when retries run out.
    pub needs_attention_steps: Vec<String>,
}

impl Default for SagaTiming {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(5),
            max_attempts: 3,
            compensation_timeout: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(500),
            compensation_max_attempts: 20,
            needs_attention_steps: Vec::new(),
        }
    }
}

/// compensation event recorded when a compensation command is confirmed
pub fn compensation_event(kind: CommandKind) -> EventKind {
    match kind {
        CommandKind::ReleaseStock => EventKind::StockReleased,
        CommandKind::VoidPayment => EventKind::PaymentVoided,
        // Forward commands are never compensations; listed for exhaustiveness.
        CommandKind::ReserveStock | CommandKind::AuthorizePayment | CommandKind::CapturePayment => {
            EventKind::CompensationRetried
        }
    }
}

impl SagaDefinition {
    /// reserve stock → authorize payment → capture payment → (local) confirm order.
    ///
    /// Capture has no compensation of its own: voiding the payment (authorize's compensation) refunds
    /// a capture that went through, so one command covers both and cannot race with itself.
    pub fn checkout(t: SagaTiming) -> Self {
        let on_exhausted = |name: Step| {
            if t.needs_attention_steps.iter().any(|s| s == name.as_str()) {
                OnExhausted::NeedsAttention
            } else {
                OnExhausted::Compensate
            }
        };
        SagaDefinition {
            name: "checkout",
            steps: vec![
                StepDef {
                    name: Step::ReserveStock,
                    command: CommandKind::ReserveStock,
                    compensation: Some(CommandKind::ReleaseStock),
                    success: (ReplyKind::StockReserved, EventKind::StockReserved),
                    failure: (ReplyKind::StockRejected, EventKind::StockRejected),
                    failure_reason: FailureReason::OutOfStock,
                    timeout_reason: FailureReason::StockTimeout,
                    timeout: t.step_timeout,
                    max_attempts: t.max_attempts,
                    backoff: t.retry_backoff,
                    on_exhausted: OnExhausted::Compensate,
                },
                StepDef {
                    name: Step::AuthorizePayment,
                    command: CommandKind::AuthorizePayment,
                    compensation: Some(CommandKind::VoidPayment),
                    success: (ReplyKind::PaymentAuthorized, EventKind::PaymentAuthorized),
                    failure: (ReplyKind::PaymentDeclined, EventKind::PaymentDeclined),
                    failure_reason: FailureReason::PaymentDeclined,
                    timeout_reason: FailureReason::PaymentTimeout,
                    timeout: t.step_timeout,
                    max_attempts: t.max_attempts,
                    backoff: t.retry_backoff,
                    on_exhausted: OnExhausted::Compensate,
                },
                StepDef {
                    name: Step::CapturePayment,
                    command: CommandKind::CapturePayment,
                    compensation: None,
                    success: (ReplyKind::PaymentCaptured, EventKind::PaymentCaptured),
                    failure: (ReplyKind::PaymentCaptureFailed, EventKind::PaymentCaptureFailed),
                    failure_reason: FailureReason::PaymentCaptureFailed,
                    timeout_reason: FailureReason::CaptureTimeout,
                    timeout: t.step_timeout,
                    max_attempts: t.max_attempts,
                    backoff: t.retry_backoff,
                    on_exhausted: OnExhausted::Compensate,
                },
            ],
            compensation_timeout: t.compensation_timeout,
            max_compensation_backoff: t.compensation_timeout * 6,
            compensation_max_attempts: t.compensation_max_attempts,
        }
        .with_exhaustion(on_exhausted)
    }

    /// Sets each step's [`OnExhausted`] by its name.
    fn with_exhaustion(mut self, by_name: impl Fn(Step) -> OnExhausted) -> Self {
        for step in &mut self.steps {
            step.on_exhausted = by_name(step.name);
        }
        self
    }

    pub fn step(&self, name: Step) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.name == name)
    }
}
