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
pub enum EventKind {
    OrderPlaced,
    StockReserved,
    StockRejected,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentCaptured,
    PaymentCaptureFailed,
    OrderConfirmed,
    Completed,
    StepRetried,
    StepTimedOut,
    CancelRequested,
    CompensationRetried,
    StockReleased,
    PaymentVoided,
    OrderCancelled,
    Compensated,
    /// Retries (or compensation attempts) ran out; the saga waits for an operator.
    NeedsAttention,
    OperatorRetried,
    OperatorResumed,
    OperatorCompensated,
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
    pub name: &'static str,
    pub command: CommandKind,
    /// Undoes the step. `None` for a step whose effect is undone by an earlier step's compensation.
    pub compensation: Option<CommandKind>,
    pub success: (ReplyKind, EventKind),
    pub failure: (ReplyKind, EventKind),
    /// Recorded as the saga's failure reason when the step's command is refused.
    pub failure_reason: &'static str,
    /// Recorded as the saga's failure reason when every attempt timed out.
    pub timeout_reason: &'static str,
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
        let on_exhausted = |name: &str| {
            if t.needs_attention_steps.iter().any(|s| s == name) {
                OnExhausted::NeedsAttention
            } else {
                OnExhausted::Compensate
            }
        };
        SagaDefinition {
            name: "checkout",
            steps: vec![
                StepDef {
                    name: "RESERVE_STOCK",
                    command: CommandKind::ReserveStock,
                    compensation: Some(CommandKind::ReleaseStock),
                    success: (ReplyKind::StockReserved, EventKind::StockReserved),
                    failure: (ReplyKind::StockRejected, EventKind::StockRejected),
                    failure_reason: "OUT_OF_STOCK",
                    timeout_reason: "STOCK_TIMEOUT",
                    timeout: t.step_timeout,
                    max_attempts: t.max_attempts,
                    backoff: t.retry_backoff,
                    on_exhausted: OnExhausted::Compensate,
                },
                StepDef {
                    name: "AUTHORIZE_PAYMENT",
                    command: CommandKind::AuthorizePayment,
                    compensation: Some(CommandKind::VoidPayment),
                    success: (ReplyKind::PaymentAuthorized, EventKind::PaymentAuthorized),
                    failure: (ReplyKind::PaymentDeclined, EventKind::PaymentDeclined),
                    failure_reason: "PAYMENT_DECLINED",
                    timeout_reason: "PAYMENT_TIMEOUT",
                    timeout: t.step_timeout,
                    max_attempts: t.max_attempts,
                    backoff: t.retry_backoff,
                    on_exhausted: OnExhausted::Compensate,
                },
                StepDef {
                    name: "CAPTURE_PAYMENT",
                    command: CommandKind::CapturePayment,
                    compensation: None,
                    success: (ReplyKind::PaymentCaptured, EventKind::PaymentCaptured),
                    failure: (ReplyKind::PaymentCaptureFailed, EventKind::PaymentCaptureFailed),
                    failure_reason: "PAYMENT_CAPTURE_FAILED",
                    timeout_reason: "CAPTURE_TIMEOUT",
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
    fn with_exhaustion(mut self, by_name: impl Fn(&str) -> OnExhausted) -> Self {
        for step in &mut self.steps {
            step.on_exhausted = by_name(step.name);
        }
        self
    }

    pub fn step(&self, name: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.name == name)
    }
}
