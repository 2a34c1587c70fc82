//! The checkout saga, declared as data.
//!
//! Every remote step names the command that performs it, the command that undoes it, the events its
//! replies record, how long the orchestrator waits for a reply and how often it retries. The state
//! machine in [`super::machine`] interprets this table and knows nothing checkout-specific.

use std::time::Duration;

use super::messages::{CommandKind, ReplyKind};

/// What is recorded in a saga's history. The names are the wire values clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
}

impl EventKind {
    pub const ALL: [EventKind; 17] = [
        EventKind::OrderPlaced,
        EventKind::StockReserved,
        EventKind::StockRejected,
        EventKind::PaymentAuthorized,
        EventKind::PaymentDeclined,
        EventKind::PaymentCaptured,
        EventKind::PaymentCaptureFailed,
        EventKind::OrderConfirmed,
        EventKind::Completed,
        EventKind::StepRetried,
        EventKind::StepTimedOut,
        EventKind::CancelRequested,
        EventKind::CompensationRetried,
        EventKind::StockReleased,
        EventKind::PaymentVoided,
        EventKind::OrderCancelled,
        EventKind::Compensated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::OrderPlaced => "ORDER_PLACED",
            EventKind::StockReserved => "STOCK_RESERVED",
            EventKind::StockRejected => "STOCK_REJECTED",
            EventKind::PaymentAuthorized => "PAYMENT_AUTHORIZED",
            EventKind::PaymentDeclined => "PAYMENT_DECLINED",
            EventKind::PaymentCaptured => "PAYMENT_CAPTURED",
            EventKind::PaymentCaptureFailed => "PAYMENT_CAPTURE_FAILED",
            EventKind::OrderConfirmed => "ORDER_CONFIRMED",
            EventKind::Completed => "COMPLETED",
            EventKind::StepRetried => "STEP_RETRIED",
            EventKind::StepTimedOut => "STEP_TIMED_OUT",
            EventKind::CancelRequested => "CANCEL_REQUESTED",
            EventKind::CompensationRetried => "COMPENSATION_RETRIED",
            EventKind::StockReleased => "STOCK_RELEASED",
            EventKind::PaymentVoided => "PAYMENT_VOIDED",
            EventKind::OrderCancelled => "ORDER_CANCELLED",
            EventKind::Compensated => "COMPENSATED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The last event a saga ever records.
    pub fn is_terminal(self) -> bool {
        matches!(self, EventKind::Completed | EventKind::Compensated)
    }
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
}

/// Timing knobs, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct SagaTiming {
    pub step_timeout: Duration,
    pub max_attempts: u32,
    pub compensation_timeout: Duration,
}

impl Default for SagaTiming {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(5),
            max_attempts: 3,
            compensation_timeout: Duration::from_secs(5),
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
                },
            ],
            compensation_timeout: t.compensation_timeout,
            max_compensation_backoff: t.compensation_timeout * 6,
        }
    }
}
