//! The sagas, declared as data: checkout and refund.
//!
//! Every remote step names the command that performs it, the command that undoes it, the events its
//! replies record, how long the orchestrator waits for a reply and how often it retries; each saga
//! names the events that open and close it and what its order becomes. The state machine in
//! [`super::machine`] interprets these tables and knows nothing of either saga.

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
    /// A refund of the confirmed order was asked for (the first event of a refund saga).
    RefundRequested,
    /// The payment provider gave the captured amount back.
    PaymentRefunded,
    /// The payment provider refused the refund.
    RefundDeclined,
    /// The order's units are back in stock.
    StockReturned,
    /// The order is refunded.
    OrderRefunded,
    /// The refund was given up; the order stays confirmed.
    RefundAbandoned,
    /// A command failed in a way no retry fixes (the payment provider refused our credentials or
    /// our request); the saga waits for an operator.
    StepFaulted,
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
    /// Have the payment provider give the captured amount back (cannot be undone).
    RefundPayment,
    /// Put the order's units back in stock.
    ReturnStock,
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
    /// The payment provider refused the refund.
    RefundDeclined,
    /// The payment provider did not answer a refund in time.
    RefundTimeout,
    /// The stock service did not answer a return in time.
    ReturnTimeout,
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
    /// The refusal reply, for a step that can be refused.
    pub failure: Option<(ReplyKind, EventKind)>,
    /// Whether the step's effect can be undone. Once an irreversible step (a pivot) may have
    /// taken effect, the saga only goes forward: later steps must not be refusable, and an
    /// operator cannot have the order undone.
    pub reversible: bool,
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

/// What a saga's order becomes when the saga ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEnd {
    /// PENDING → CONFIRMED; the buyer's cart gives up the ordered units.
    Confirmed,
    /// PENDING → CANCELLED; the buyer's cart gets the ordered units back.
    Cancelled,
    /// REFUNDING → REFUNDED.
    Refunded,
    /// REFUNDING → CONFIRMED again: the refund did not happen.
    StaysConfirmed,
}

/// How a saga ends one way: the event recorded (before `COMPLETED` or `COMPENSATED`) and what the
/// order becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    pub event: EventKind,
    pub order: OrderEnd,
}

/// A saga: remote steps run in order, compensated in reverse.
#[derive(Debug, Clone)]
pub struct SagaDefinition {
    /// Stored with every saga (`sagas.definition`): which definition drives it.
    pub name: &'static str,
    /// The first event of every saga of this definition.
    pub started: EventKind,
    /// When every step succeeded.
    pub completed: Ending,
    /// When the saga was undone (or could not start its first step).
    pub compensated: Ending,
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
        CommandKind::ReserveStock
        | CommandKind::AuthorizePayment
        | CommandKind::CapturePayment
        | CommandKind::RefundPayment => EventKind::CompensationRetried,
    }
}

/// The name of the checkout saga's definition.
pub const CHECKOUT: &str = "checkout";
/// The name of the refund saga's definition.
pub const REFUND: &str = "refund";

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
            name: CHECKOUT,
            started: EventKind::OrderPlaced,
            completed: Ending { event: EventKind::OrderConfirmed, order: OrderEnd::Confirmed },
            compensated: Ending { event: EventKind::OrderCancelled, order: OrderEnd::Cancelled },
            steps: vec![
                StepDef {
                    name: Step::ReserveStock,
                    command: CommandKind::ReserveStock,
                    compensation: Some(CommandKind::ReleaseStock),
                    success: (ReplyKind::StockReserved, EventKind::StockReserved),
                    failure: Some((ReplyKind::StockRejected, EventKind::StockRejected)),
                    reversible: true,
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
                    failure: Some((ReplyKind::PaymentDeclined, EventKind::PaymentDeclined)),
                    reversible: true,
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
                    failure: Some((ReplyKind::PaymentCaptureFailed, EventKind::PaymentCaptureFailed)),
                    reversible: true,
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

    /// refund payment → return stock → (local) mark the order `REFUNDED`.
    ///
    /// The refund is the pivot: money given back cannot be taken again, so nothing before it
    /// needs undoing and everything after it only goes forward. A refused refund ends the saga
    /// with the order confirmed as before; a refund or return that never answers stops for an
    /// operator instead of guessing (retries are safe: the provider is asked for what it did
    /// for the order, and returning stock is idempotent on the order).
    pub fn refund(t: SagaTiming) -> Self {
        SagaDefinition {
            name: REFUND,
            started: EventKind::RefundRequested,
            completed: Ending { event: EventKind::OrderRefunded, order: OrderEnd::Refunded },
            compensated: Ending { event: EventKind::RefundAbandoned, order: OrderEnd::StaysConfirmed },
            steps: vec![
                StepDef {
                    name: Step::RefundPayment,
                    command: CommandKind::RefundPayment,
                    compensation: None,
                    success: (ReplyKind::PaymentRefunded, EventKind::PaymentRefunded),
                    failure: Some((ReplyKind::RefundDeclined, EventKind::RefundDeclined)),
                    reversible: false,
                    failure_reason: FailureReason::RefundDeclined,
                    timeout_reason: FailureReason::RefundTimeout,
                    timeout: t.step_timeout,
                    max_attempts: t.max_attempts,
                    backoff: t.retry_backoff,
                    on_exhausted: OnExhausted::NeedsAttention,
                },
                StepDef {
                    name: Step::ReturnStock,
                    command: CommandKind::ReleaseStock,
                    compensation: None,
                    success: (ReplyKind::StockReleased, EventKind::StockReturned),
                    failure: None,
                    reversible: true,
                    failure_reason: FailureReason::ReturnTimeout,
                    timeout_reason: FailureReason::ReturnTimeout,
                    timeout: t.step_timeout,
                    max_attempts: t.max_attempts,
                    backoff: t.retry_backoff,
                    on_exhausted: OnExhausted::NeedsAttention,
                },
            ],
            compensation_timeout: t.compensation_timeout,
            max_compensation_backoff: t.compensation_timeout * 6,
            compensation_max_attempts: t.compensation_max_attempts,
        }
    }

    /// Whether a step before `step` is irreversible: the saga can only go forward.
    pub fn past_pivot(&self, step: usize) -> bool {
        self.steps.iter().take(step).any(|s| !s.reversible)
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

/// Every saga definition the engine runs, looked up by the name stored with each saga.
#[derive(Debug, Clone)]
pub struct Sagas {
    pub checkout: SagaDefinition,
    pub refund: SagaDefinition,
}

impl Sagas {
    pub fn new(t: SagaTiming) -> Self {
        Sagas { checkout: SagaDefinition::checkout(t.clone()), refund: SagaDefinition::refund(t) }
    }

    pub fn get(&self, name: &str) -> Option<&SagaDefinition> {
        self.all().find(|d| d.name == name)
    }

    pub fn all(&self) -> impl Iterator<Item = &SagaDefinition> {
        [&self.checkout, &self.refund].into_iter()
    }

    /// The definition a step belongs to, and the step's index in it.
    pub fn locate(&self, step: Step) -> Option<(&SagaDefinition, usize)> {
        self.all().find_map(|d| d.steps.iter().position(|s| s.name == step).map(|i| (d, i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_belongs_to_exactly_one_saga() {
        let sagas = Sagas::new(SagaTiming::default());
        for step in <Step as strum::IntoEnumIterator>::iter() {
            let owners = sagas.all().filter(|d| d.step(step).is_some()).count();
            assert_eq!(owners, 1, "{step}");
            assert!(sagas.locate(step).is_some());
        }
        assert_eq!(sagas.get(REFUND).map(|d| d.name), Some(REFUND));
        assert!(sagas.get("nope").is_none());
    }

    #[test]
    fn past_a_pivot_nothing_can_be_refused() {
        let sagas = Sagas::new(SagaTiming::default());
        for def in sagas.all() {
            for (i, step) in def.steps.iter().enumerate() {
                if def.past_pivot(i) {
                    assert!(step.failure.is_none(), "{} can be refused after a pivot", step.name);
                    assert!(step.compensation.is_none(), "{} is undone after a pivot", step.name);
                    assert_eq!(step.on_exhausted, OnExhausted::NeedsAttention, "{}", step.name);
                }
            }
        }
        assert!(!sagas.checkout.past_pivot(sagas.checkout.steps.len()));
        assert!(sagas.refund.past_pivot(1));
    }
}
