//! The saga state machine: a pure function from (definition, state, input) to a transition.
//!
//! No I/O happens here. The orchestrator loads a saga row, calls [`handle`], and persists the
//! returned transition (new state, events, the next command, the next deadline, the order's outcome)
//! in one transaction, with the command going through the outbox.

use std::time::Duration;

use super::definition::{compensation_event, EventKind, SagaDefinition};
use super::messages::{CommandKind, ReplyKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SagaStatus {
    /// Forward steps are running.
    Running,
    /// A step failed (or the buyer cancelled); completed steps are being undone in reverse.
    Compensating,
    /// Every step succeeded and the order is confirmed.
    Completed,
    /// Every compensation succeeded and the order is cancelled.
    Compensated,
}

impl SagaStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "RUNNING",
            SagaStatus::Compensating => "COMPENSATING",
            SagaStatus::Completed => "COMPLETED",
            SagaStatus::Compensated => "COMPENSATED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [SagaStatus::Running, SagaStatus::Compensating, SagaStatus::Completed, SagaStatus::Compensated]
            .into_iter()
            .find(|v| v.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, SagaStatus::Completed | SagaStatus::Compensated)
    }
}

/// The persisted part of a saga that the machine reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaState {
    pub status: SagaStatus,
    /// Running: the step whose command is in flight. Compensating: the step being undone.
    pub step: usize,
    /// 1-based attempt of the command in flight.
    pub attempt: u32,
    /// Why the saga compensates (`OUT_OF_STOCK`, `PAYMENT_DECLINED`, `PAYMENT_TIMEOUT`, ...).
    pub failure_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Reply {
        kind: ReplyKind,
        reason: Option<String>,
    },
    /// The deadline of the command in flight passed without a reply.
    Timeout,
    /// The buyer asked to cancel the order.
    Cancel,
}

/// What the order becomes when the saga ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderOutcome {
    Confirm,
    Cancel { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub state: SagaState,
    /// Recorded in the saga's history, in order, each with an optional detail.
    pub events: Vec<(EventKind, Option<String>)>,
    /// Sent through the outbox.
    pub command: Option<CommandKind>,
    /// When to fire [`Input::Timeout`] if no reply came; `None` once the saga is terminal.
    pub deadline: Option<Duration>,
    pub outcome: Option<OrderOutcome>,
}

/// The transition that starts a saga.
pub fn start(def: &SagaDefinition) -> Transition {
    let first = &def.steps[0];
    Transition {
        state: SagaState { status: SagaStatus::Running, step: 0, attempt: 1, failure_reason: None },
        events: vec![(EventKind::OrderPlaced, None)],
        command: Some(first.command),
        deadline: Some(first.timeout),
        outcome: None,
    }
}

/// Applies `input` to `state`. `None` means the input does not apply (a duplicate or late reply, a
/// timeout for a saga that moved on, a cancel of a saga already compensating or finished) and
/// nothing must change.
pub fn handle(def: &SagaDefinition, state: &SagaState, input: &Input) -> Option<Transition> {
    match state.status {
        SagaStatus::Running => running(def, state, input),
        SagaStatus::Compensating => compensating(def, state, input),
        SagaStatus::Completed | SagaStatus::Compensated => None,
    }
}

fn running(def: &SagaDefinition, state: &SagaState, input: &Input) -> Option<Transition> {
    let step = def.steps.get(state.step)?;
    match input {
        Input::Reply { kind, reason } if *kind == step.success.0 => {
            let mut events = vec![(step.success.1, reason.clone())];
            match def.steps.get(state.step + 1) {
                Some(next) => Some(Transition {
                    state: SagaState { step: state.step + 1, attempt: 1, ..state.clone() },
                    events,
                    command: Some(next.command),
                    deadline: Some(next.timeout),
                    outcome: None,
                }),
                None => {
                    events.push((EventKind::OrderConfirmed, None));
                    events.push((EventKind::Completed, None));
                    Some(Transition {
                        state: SagaState { status: SagaStatus::Completed, ..state.clone() },
                        events,
                        command: None,
                        deadline: None,
                        outcome: Some(OrderOutcome::Confirm),
                    })
                }
            }
        }
        Input::Reply { kind, reason } if *kind == step.failure.0 => {
            // The step was refused, so it had no effect: undo only the steps before it.
            let events = vec![(step.failure.1, reason.clone())];
            Some(compensate_from(def, state.step.checked_sub(1), step.failure_reason, events))
        }
        Input::Reply { .. } => None,
        Input::Timeout if state.attempt < step.max_attempts => {
            let attempt = state.attempt + 1;
            Some(Transition {
                state: SagaState { attempt, ..state.clone() },
                events: vec![(EventKind::StepRetried, Some(format!("{} attempt {attempt}", step.name)))],
                command: Some(step.command),
                deadline: Some(step.timeout * attempt),
                outcome: None,
            })
        }
        Input::Timeout => {
            // The outcome of the step in flight is unknown: undo it too (compensations are safe to
            // run for a command that never took effect).
            let events = vec![(EventKind::StepTimedOut, Some(step.name.to_string()))];
            Some(compensate_from(def, Some(state.step), step.timeout_reason, events))
        }
        Input::Cancel => {
            let events = vec![(EventKind::CancelRequested, None)];
            Some(compensate_from(def, Some(state.step), "CANCELLED_BY_USER", events))
        }
    }
}

fn compensating(def: &SagaDefinition, state: &SagaState, input: &Input) -> Option<Transition> {
    let step = def.steps.get(state.step)?;
    let compensation = step.compensation?;
    match input {
        Input::Reply { kind, reason } if kind.answers() == compensation => {
            let events = vec![(compensation_event(compensation), reason.clone())];
            let reason = state.failure_reason.clone().unwrap_or_default();
            Some(compensate_from(def, state.step.checked_sub(1), &reason, events))
        }
        Input::Reply { .. } | Input::Cancel => None,
        Input::Timeout => {
            let attempt = state.attempt + 1;
            let wait = (def.compensation_timeout * attempt).min(def.max_compensation_backoff);
            Some(Transition {
                state: SagaState { attempt, ..state.clone() },
                events: vec![(
                    EventKind::CompensationRetried,
                    Some(format!("{} attempt {attempt}", step.name)),
                )],
                command: Some(compensation),
                deadline: Some(wait),
                outcome: None,
            })
        }
    }
}

/// Starts (or continues) compensating at the highest step `<= from` that has a compensation; when
/// none is left, cancels the order and ends the saga.
fn compensate_from(
    def: &SagaDefinition,
    from: Option<usize>,
    reason: &str,
    mut events: Vec<(EventKind, Option<String>)>,
) -> Transition {
    let next = from.and_then(|from| (0..=from).rev().find(|&i| def.steps[i].compensation.is_some()));
    match next {
        Some(i) => Transition {
            state: SagaState {
                status: SagaStatus::Compensating,
                step: i,
                attempt: 1,
                failure_reason: Some(reason.to_string()),
            },
            events,
            command: def.steps[i].compensation,
            deadline: Some(def.compensation_timeout),
            outcome: None,
        },
        None => {
            events.push((EventKind::OrderCancelled, Some(reason.to_string())));
            events.push((EventKind::Compensated, None));
            Transition {
                state: SagaState {
                    status: SagaStatus::Compensated,
                    step: 0,
                    attempt: 0,
                    failure_reason: Some(reason.to_string()),
                },
                events,
                command: None,
                deadline: None,
                outcome: Some(OrderOutcome::Cancel { reason: reason.to_string() }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::definition::SagaTiming;
    use EventKind::*;

    fn def() -> SagaDefinition {
        SagaDefinition::checkout(SagaTiming {
            step_timeout: Duration::from_secs(1),
            max_attempts: 2,
            compensation_timeout: Duration::from_secs(1),
        })
    }

    fn reply(kind: ReplyKind) -> Input {
        Input::Reply { kind, reason: None }
    }

    /// Runs inputs from the start, returning every recorded event kind, the commands sent and the end state.
    fn run(inputs: &[Input]) -> (Vec<EventKind>, Vec<CommandKind>, SagaState, Option<OrderOutcome>) {
        let def = def();
        let t = start(&def);
        let mut events: Vec<_> = t.events.iter().map(|e| e.0).collect();
        let mut commands: Vec<_> = t.command.into_iter().collect();
        let mut state = t.state;
        let mut outcome = None;
        for input in inputs {
            if let Some(t) = handle(&def, &state, input) {
                events.extend(t.events.iter().map(|e| e.0));
                commands.extend(t.command);
                if t.deadline.is_none() {
                    assert!(t.state.status.is_terminal(), "only terminal sagas have no deadline");
                }
                state = t.state;
                outcome = t.outcome.or(outcome);
            }
        }
        (events, commands, state, outcome)
    }

    #[test]
    fn happy_path_confirms_the_order() {
        use ReplyKind::*;
        let (events, commands, state, outcome) =
            run(&[reply(StockReserved), reply(PaymentAuthorized), reply(PaymentCaptured)]);
        assert_eq!(
            events,
            [
                OrderPlaced,
                EventKind::StockReserved,
                EventKind::PaymentAuthorized,
                EventKind::PaymentCaptured,
                OrderConfirmed,
                Completed
            ]
        );
        assert_eq!(
            commands,
            [CommandKind::ReserveStock, CommandKind::AuthorizePayment, CommandKind::CapturePayment]
        );
        assert_eq!(state.status, SagaStatus::Completed);
        assert_eq!(outcome, Some(OrderOutcome::Confirm));
    }

    #[test]
    fn out_of_stock_cancels_without_touching_payment() {
        let (events, commands, state, outcome) = run(&[Input::Reply {
            kind: ReplyKind::StockRejected,
            reason: Some("insufficient stock".into()),
        }]);
        assert_eq!(events, [OrderPlaced, StockRejected, OrderCancelled, Compensated]);
        assert_eq!(commands, [CommandKind::ReserveStock]);
        assert_eq!(state.status, SagaStatus::Compensated);
        assert_eq!(state.failure_reason.as_deref(), Some("OUT_OF_STOCK"));
        assert_eq!(outcome, Some(OrderOutcome::Cancel { reason: "OUT_OF_STOCK".into() }));
    }

    #[test]
    fn declined_payment_releases_stock() {
        use ReplyKind::*;
        let (events, commands, state, outcome) =
            run(&[reply(StockReserved), reply(PaymentDeclined), reply(StockReleased)]);
        assert_eq!(
            events,
            [
                OrderPlaced,
                EventKind::StockReserved,
                EventKind::PaymentDeclined,
                EventKind::StockReleased,
                OrderCancelled,
                Compensated
            ]
        );
        assert_eq!(
            commands,
            [CommandKind::ReserveStock, CommandKind::AuthorizePayment, CommandKind::ReleaseStock]
        );
        assert_eq!(state.failure_reason.as_deref(), Some("PAYMENT_DECLINED"));
        assert_eq!(outcome, Some(OrderOutcome::Cancel { reason: "PAYMENT_DECLINED".into() }));
    }

    #[test]
    fn payment_timeout_retries_then_voids_and_releases() {
        use ReplyKind::*;
        let (events, commands, state, _) = run(&[
            reply(StockReserved),
            Input::Timeout,
            Input::Timeout,
            reply(PaymentVoided),
            reply(StockReleased),
        ]);
        assert_eq!(
            events,
            [
                OrderPlaced,
                EventKind::StockReserved,
                StepRetried,
                StepTimedOut,
                EventKind::PaymentVoided,
                EventKind::StockReleased,
                OrderCancelled,
                Compensated
            ]
        );
        assert_eq!(
            commands,
            [
                CommandKind::ReserveStock,
                CommandKind::AuthorizePayment,
                CommandKind::AuthorizePayment,
                CommandKind::VoidPayment,
                CommandKind::ReleaseStock
            ]
        );
        assert_eq!(state.failure_reason.as_deref(), Some("PAYMENT_TIMEOUT"));
    }

    #[test]
    fn retries_wait_longer_each_attempt() {
        let def = def();
        let s = start(&def).state;
        let t = handle(&def, &s, &Input::Timeout).unwrap();
        assert_eq!(t.state.attempt, 2);
        assert_eq!(t.deadline, Some(Duration::from_secs(2)));
    }

    #[test]
    fn capture_failure_voids_then_releases() {
        use ReplyKind::*;
        let (events, commands, state, _) = run(&[
            reply(StockReserved),
            reply(PaymentAuthorized),
            reply(PaymentCaptureFailed),
            reply(PaymentVoided),
            reply(StockReleased),
        ]);
        assert_eq!(events.last(), Some(&Compensated));
        assert_eq!(&commands[3..], [CommandKind::VoidPayment, CommandKind::ReleaseStock]);
        assert_eq!(state.failure_reason.as_deref(), Some("PAYMENT_CAPTURE_FAILED"));
    }

    #[test]
    fn capture_timeout_compensates_through_void() {
        use ReplyKind::*;
        let (_, commands, state, _) = run(&[
            reply(StockReserved),
            reply(PaymentAuthorized),
            Input::Timeout,
            Input::Timeout,
            reply(PaymentVoided),
            reply(StockReleased),
        ]);
        assert_eq!(&commands[4..], [CommandKind::VoidPayment, CommandKind::ReleaseStock]);
        assert_eq!(state.status, SagaStatus::Compensated);
        assert_eq!(state.failure_reason.as_deref(), Some("CAPTURE_TIMEOUT"));
    }

    #[test]
    fn cancel_while_reserving_releases_the_possible_reservation() {
        let (events, commands, state, _) = run(&[Input::Cancel, reply(ReplyKind::StockReleased)]);
        assert_eq!(events, [OrderPlaced, CancelRequested, StockReleased, OrderCancelled, Compensated]);
        assert_eq!(commands, [CommandKind::ReserveStock, CommandKind::ReleaseStock]);
        assert_eq!(state.failure_reason.as_deref(), Some("CANCELLED_BY_USER"));
    }

    #[test]
    fn late_forward_replies_are_ignored_while_compensating() {
        use ReplyKind::*;
        let (events, _, state, _) = run(&[
            reply(StockReserved),
            Input::Cancel,
            reply(PaymentAuthorized), // late: the void below undoes it
            reply(PaymentVoided),
            reply(PaymentVoided), // duplicate
            reply(StockReleased),
        ]);
        assert_eq!(
            events,
            [
                OrderPlaced,
                EventKind::StockReserved,
                CancelRequested,
                EventKind::PaymentVoided,
                EventKind::StockReleased,
                OrderCancelled,
                Compensated
            ]
        );
        assert_eq!(state.status, SagaStatus::Compensated);
    }

    #[test]
    fn duplicate_and_stale_replies_change_nothing() {
        let def = def();
        let s = start(&def).state;
        let t = handle(&def, &s, &reply(ReplyKind::StockReserved)).unwrap();
        assert_eq!(handle(&def, &t.state, &reply(ReplyKind::StockReserved)), None);
        assert_eq!(handle(&def, &t.state, &reply(ReplyKind::PaymentCaptured)), None);
        assert_eq!(handle(&def, &t.state, &reply(ReplyKind::StockReleased)), None);
    }

    #[test]
    fn terminal_sagas_ignore_everything() {
        let def = def();
        for status in [SagaStatus::Completed, SagaStatus::Compensated] {
            let s = SagaState { status, step: 2, attempt: 1, failure_reason: None };
            for input in [Input::Timeout, Input::Cancel, reply(ReplyKind::PaymentCaptured)] {
                assert_eq!(handle(&def, &s, &input), None);
            }
        }
    }

    #[test]
    fn compensations_retry_with_capped_backoff_and_never_give_up() {
        let def = def();
        let mut s = SagaState {
            status: SagaStatus::Compensating,
            step: 0,
            attempt: 1,
            failure_reason: Some("PAYMENT_DECLINED".into()),
        };
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            let t = handle(&def, &s, &Input::Timeout).unwrap();
            assert_eq!(t.command, Some(CommandKind::ReleaseStock));
            let d = t.deadline.unwrap();
            assert!(d >= last && d <= def.max_compensation_backoff);
            last = d;
            s = t.state;
        }
        assert_eq!(last, def.max_compensation_backoff);
    }

    #[test]
    fn cancel_is_ignored_once_compensating() {
        let def = def();
        let t = handle(&def, &start(&def).state, &Input::Cancel).unwrap();
        assert_eq!(handle(&def, &t.state, &Input::Cancel), None);
    }

    #[test]
    fn status_and_event_names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        for s in
            [SagaStatus::Running, SagaStatus::Compensating, SagaStatus::Completed, SagaStatus::Compensated]
        {
            assert_eq!(SagaStatus::parse(s.as_str()), Some(s));
        }
    }
}
