//! The saga state machine: a pure function from (definition, state, input) to a transition.
//!
//! No I/O happens here. The orchestrator loads a saga row, calls [`handle`], and persists the
//! returned transition (new state, events, the next command, the next deadline, the order's outcome)
//! in one transaction, with the command going through the outbox.

use std::time::Duration;

use super::definition::{
    compensation_event, EventKind, FailureReason, OnExhausted, OrderEnd, SagaDefinition,
};
use super::messages::{CommandKind, ReplyKind};

/// Where a saga is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumString, strum::EnumIter,
)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "graphql", derive(async_graphql::Enum))]
pub enum SagaStatus {
    /// Forward steps are running.
    Running,
    /// A step failed (or the buyer cancelled); completed steps are being undone in reverse.
    Compensating,
    /// Every step succeeded and the order is confirmed.
    Completed,
    /// Every compensation succeeded and the order is cancelled.
    Compensated,
    /// Retries ran out; nothing is sent until an operator acts (or a late reply arrives).
    NeedsAttention,
}

impl SagaStatus {
    /// The name stored and sent (`SCREAMING_SNAKE_CASE`, derived).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
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
    /// Why the saga compensates.
    pub failure_reason: Option<FailureReason>,
    /// While `NeedsAttention`: what was interrupted (`Running` or `Compensating`).
    pub interrupted: Option<SagaStatus>,
    /// While `NeedsAttention`: what went wrong, for the operator.
    pub last_error: Option<String>,
}

impl SagaState {
    /// The state a paused saga continues from.
    fn resumed(&self) -> SagaState {
        SagaState {
            status: self.interrupted.unwrap_or(SagaStatus::Running),
            interrupted: None,
            last_error: None,
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Reply {
        kind: ReplyKind,
        reason: Option<String>,
    },
    /// The command `command` failed in a way no retry fixes (see `ReplyKind::Faulted`).
    Fault {
        command: CommandKind,
        reason: String,
    },
    /// The deadline of the command in flight passed without a reply.
    Timeout,
    /// The buyer asked to cancel the order.
    Cancel,
}

/// What an operator can do to a saga.
// Applied by `operate`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumString, strum::EnumIter,
)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "graphql", derive(async_graphql::Enum))]
#[cfg_attr(feature = "graphql", graphql(name = "SagaAction"))]
pub enum OperatorAction {
    /// Send the paused step's command (or compensation) again, with a fresh attempt budget.
    RetryStep,
    /// The operator checked that the paused step (or compensation) took effect: continue after it.
    Resume,
    /// Undo what was done, as if the current step had failed.
    ForceCompensate,
    /// The operator asserts every step took effect: confirm the order and end the saga.
    ForceComplete,
}

impl OperatorAction {
    /// The name stored and sent (`SCREAMING_SNAKE_CASE`, derived).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Why an operator action does not apply to a saga in its current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// What the order becomes when the saga ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderOutcome {
    Confirm,
    Cancel {
        reason: FailureReason,
    },
    Refund,
    /// A refund that did not happen: the order is confirmed as before.
    KeepConfirmed {
        reason: FailureReason,
    },
}

impl OrderOutcome {
    fn of(end: OrderEnd, reason: FailureReason) -> Self {
        match end {
            OrderEnd::Confirmed => OrderOutcome::Confirm,
            OrderEnd::Cancelled => OrderOutcome::Cancel { reason },
            OrderEnd::Refunded => OrderOutcome::Refund,
            OrderEnd::StaysConfirmed => OrderOutcome::KeepConfirmed { reason },
        }
    }
}

/// The events and outcome of a saga whose steps all succeeded.
fn completion(def: &SagaDefinition) -> (Vec<(EventKind, Option<String>)>, OrderOutcome) {
    let events = vec![(def.completed.event, None), (EventKind::Completed, None)];
    // No step failed, so the reason is never read.
    (events, OrderOutcome::of(def.completed.order, FailureReason::CompensatedByOperator))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub state: SagaState,
    /// Recorded in the saga's history, in order, each with an optional detail.
    pub events: Vec<(EventKind, Option<String>)>,
    /// Sent through the outbox.
    pub command: Option<CommandKind>,
    /// How long the command waits in the outbox before it is sent (retry backoff).
    pub delay: Duration,
    /// When to fire [`Input::Timeout`] if no reply came; `None` once the saga is terminal.
    pub deadline: Option<Duration>,
    pub outcome: Option<OrderOutcome>,
}

/// The transition that starts a saga.
pub fn start(def: &SagaDefinition) -> Transition {
    let first = &def.steps[0];
    Transition {
        state: SagaState {
            status: SagaStatus::Running,
            step: 0,
            attempt: 1,
            failure_reason: None,
            interrupted: None,
            last_error: None,
        },
        events: vec![(def.started, None)],
        command: Some(first.command),
        delay: Duration::ZERO,
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
        // A late reply (or a cancel) is applied as if the saga had not paused; timeouts have none.
        SagaStatus::NeedsAttention => match input {
            Input::Timeout | Input::Fault { .. } => None,
            _ => handle(def, &state.resumed(), input),
        },
        SagaStatus::Completed | SagaStatus::Compensated => None,
    }
}

/// Applies an operator's action, or says why it does not apply. `reason` is recorded.
pub fn operate(
    def: &SagaDefinition,
    state: &SagaState,
    action: OperatorAction,
    reason: &str,
) -> Result<Transition, Refusal> {
    let refuse = |why: &str| {
        Err(Refusal(format!("cannot {}: {why}", action.as_str().to_lowercase().replace('_', " "))))
    };
    if state.status.is_terminal() {
        return refuse(&format!("the saga is already {}", state.status.as_str()));
    }
    let paused = state.status == SagaStatus::NeedsAttention;
    let forward = state.status == SagaStatus::Running || state.interrupted == Some(SagaStatus::Running);
    let step = def.steps.get(state.step).ok_or_else(|| Refusal("the saga's step is unknown".into()))?;
    let note = |kind: EventKind| (kind, Some(reason.to_string()));
    match action {
        OperatorAction::RetryStep | OperatorAction::Resume if !paused => {
            refuse(&format!("the saga is {}, not NEEDS_ATTENTION", state.status.as_str()))
        }
        OperatorAction::RetryStep => {
            let resumed = SagaState { attempt: 1, ..state.resumed() };
            let (command, deadline) = if forward {
                (step.command, step.timeout)
            } else {
                (step.compensation.expect("compensating steps have a compensation"), def.compensation_timeout)
            };
            Ok(Transition {
                state: resumed,
                events: vec![note(EventKind::OperatorRetried)],
                command: Some(command),
                delay: Duration::ZERO,
                deadline: Some(deadline),
                outcome: None,
            })
        }
        OperatorAction::Resume => {
            let resumed = state.resumed();
            let done = if forward {
                step.success.0
            } else {
                let compensation = step.compensation.expect("compensating steps have a compensation");
                <ReplyKind as strum::IntoEnumIterator>::iter()
                    .find(|r| r.answers() == Some(compensation))
                    .expect("a reply answers it")
            };
            let input = Input::Reply { kind: done, reason: Some("done, as checked by an operator".into()) };
            let mut t = handle(def, &resumed, &input).expect("the step's own reply applies");
            t.events.insert(0, note(EventKind::OperatorResumed));
            Ok(t)
        }
        OperatorAction::ForceCompensate if !forward => {
            refuse("the saga is already compensating (retry or resume the compensation)")
        }
        OperatorAction::ForceCompensate if def.past_pivot(state.step) => {
            refuse("a step that cannot be undone has taken effect; only going forward can finish it")
        }
        OperatorAction::ForceCompensate if !step.reversible => {
            // Its outcome is unknown, and a late answer (or a webhook) may still say it took
            // effect: undoing the order now could leave money returned on a confirmed order.
            refuse(
                "the step in flight cannot be undone and its outcome is unknown: retry it (the \
                 provider tells what it did) or resume it once checked",
            )
        }
        OperatorAction::ForceCompensate => {
            // The current step's outcome is unknown: undo it too.
            Ok(compensate_from(
                def,
                Some(state.step),
                FailureReason::CompensatedByOperator,
                vec![note(EventKind::OperatorCompensated)],
            ))
        }
        OperatorAction::ForceComplete if !forward => {
            refuse("the saga has undone steps already; only compensation can finish it")
        }
        OperatorAction::ForceComplete => {
            let (ending, outcome) = completion(def);
            let mut events = vec![note(EventKind::OperatorCompleted)];
            events.extend(ending);
            Ok(Transition {
                state: SagaState {
                    status: SagaStatus::Completed,
                    interrupted: None,
                    last_error: None,
                    ..state.clone()
                },
                events,
                command: None,
                delay: Duration::ZERO,
                deadline: None,
                outcome: Some(outcome),
            })
        }
    }
}

/// Stops the saga for an operator.
fn pause(
    state: &SagaState,
    interrupted: SagaStatus,
    error: String,
    mut events: Vec<(EventKind, Option<String>)>,
) -> Transition {
    events.push((EventKind::NeedsAttention, Some(error.clone())));
    Transition {
        state: SagaState {
            status: SagaStatus::NeedsAttention,
            interrupted: Some(interrupted),
            last_error: Some(error),
            ..state.clone()
        },
        events,
        command: None,
        delay: Duration::ZERO,
        deadline: None,
        outcome: None,
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
                    delay: Duration::ZERO,
                    deadline: Some(next.timeout),
                    outcome: None,
                }),
                None => {
                    let (ending, outcome) = completion(def);
                    events.extend(ending);
                    Some(Transition {
                        state: SagaState { status: SagaStatus::Completed, ..state.clone() },
                        events,
                        command: None,
                        delay: Duration::ZERO,
                        deadline: None,
                        outcome: Some(outcome),
                    })
                }
            }
        }
        Input::Reply { kind, reason } if step.failure.is_some_and(|f| f.0 == *kind) => {
            // The step was refused, so it had no effect: undo only the steps before it.
            let events = vec![(step.failure.expect("matched").1, reason.clone())];
            Some(compensate_from(def, state.step.checked_sub(1), step.failure_reason, events))
        }
        Input::Reply { .. } => None,
        Input::Timeout if state.attempt < step.max_attempts => {
            let attempt = state.attempt + 1;
            let delay = step.backoff_before(attempt);
            Some(Transition {
                state: SagaState { attempt, ..state.clone() },
                events: vec![(EventKind::StepRetried, Some(format!("{} attempt {attempt}", step.name)))],
                command: Some(step.command),
                delay,
                deadline: Some(delay + step.timeout * attempt),
                outcome: None,
            })
        }
        Input::Timeout if step.on_exhausted == OnExhausted::NeedsAttention => {
            let error = format!("{} got no reply after {} attempts", step.name, state.attempt);
            Some(pause(
                state,
                SagaStatus::Running,
                error,
                vec![(EventKind::StepTimedOut, Some(step.name.to_string()))],
            ))
        }
        Input::Timeout => {
            // The outcome of the step in flight is unknown: undo it too (compensations are safe to
            // run for a command that never took effect).
            let events = vec![(EventKind::StepTimedOut, Some(step.name.as_str().to_string()))];
            Some(compensate_from(def, Some(state.step), step.timeout_reason, events))
        }
        Input::Fault { command, reason } if *command == step.command => {
            let error = format!("{} failed: {reason}", step.name);
            Some(pause(
                state,
                SagaStatus::Running,
                error,
                vec![(EventKind::StepFaulted, Some(reason.clone()))],
            ))
        }
        Input::Fault { .. } => None,
        // Nothing irreversible may have happened for a cancel to undo everything.
        Input::Cancel if def.past_pivot(state.step + 1) => None,
        Input::Cancel => {
            let events = vec![(EventKind::CancelRequested, None)];
            Some(compensate_from(def, Some(state.step), FailureReason::CancelledByUser, events))
        }
    }
}

fn compensating(def: &SagaDefinition, state: &SagaState, input: &Input) -> Option<Transition> {
    let step = def.steps.get(state.step)?;
    let compensation = step.compensation?;
    match input {
        Input::Reply { kind, reason } if kind.answers() == Some(compensation) => {
            let events = vec![(compensation_event(compensation), reason.clone())];
            // Compensating always has a reason; a state without one says it was the operator.
            let reason = state.failure_reason.unwrap_or(FailureReason::CompensatedByOperator);
            Some(compensate_from(def, state.step.checked_sub(1), reason, events))
        }
        Input::Fault { command, reason } if *command == compensation => {
            let error = format!("{compensation:?} of {} failed: {reason}", step.name);
            Some(pause(
                state,
                SagaStatus::Compensating,
                error,
                vec![(EventKind::StepFaulted, Some(reason.clone()))],
            ))
        }
        Input::Reply { .. } | Input::Fault { .. } | Input::Cancel => None,
        Input::Timeout
            if def.compensation_max_attempts > 0 && state.attempt >= def.compensation_max_attempts =>
        {
            let error =
                format!("{compensation:?} of {} unconfirmed after {} attempts", step.name, state.attempt);
            Some(pause(state, SagaStatus::Compensating, error, Vec::new()))
        }
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
                delay: Duration::ZERO,
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
    reason: FailureReason,
    mut events: Vec<(EventKind, Option<String>)>,
) -> Transition {
    let next = from.and_then(|from| (0..=from).rev().find(|&i| def.steps[i].compensation.is_some()));
    match next {
        Some(i) => Transition {
            state: SagaState {
                status: SagaStatus::Compensating,
                step: i,
                attempt: 1,
                failure_reason: Some(reason),
                interrupted: None,
                last_error: None,
            },
            events,
            command: def.steps[i].compensation,
            delay: Duration::ZERO,
            deadline: Some(def.compensation_timeout),
            outcome: None,
        },
        None => {
            events.push((def.compensated.event, Some(reason.to_string())));
            events.push((EventKind::Compensated, None));
            Transition {
                state: SagaState {
                    status: SagaStatus::Compensated,
                    step: 0,
                    attempt: 0,
                    failure_reason: Some(reason),
                    interrupted: None,
                    last_error: None,
                },
                events,
                command: None,
                delay: Duration::ZERO,
                deadline: None,
                outcome: Some(OrderOutcome::of(def.compensated.order, reason)),
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
            ..SagaTiming::default()
        })
    }

    fn reply(kind: ReplyKind) -> Input {
        Input::Reply { kind, reason: None }
    }

    /// Runs inputs from the start, returning every recorded event kind, the commands sent and the end state.
    fn run(inputs: &[Input]) -> (Vec<EventKind>, Vec<CommandKind>, SagaState, Option<OrderOutcome>) {
        run_def(&def(), inputs)
    }

    fn refund_def() -> SagaDefinition {
        SagaDefinition::refund(SagaTiming {
            step_timeout: Duration::from_secs(1),
            max_attempts: 2,
            compensation_timeout: Duration::from_secs(1),
            ..SagaTiming::default()
        })
    }

    fn run_def(
        def: &SagaDefinition,
        inputs: &[Input],
    ) -> (Vec<EventKind>, Vec<CommandKind>, SagaState, Option<OrderOutcome>) {
        let t = start(def);
        let mut events: Vec<_> = t.events.iter().map(|e| e.0).collect();
        let mut commands: Vec<_> = t.command.into_iter().collect();
        let mut state = t.state;
        let mut outcome = None;
        for input in inputs {
            if let Some(t) = handle(def, &state, input) {
                events.extend(t.events.iter().map(|e| e.0));
                commands.extend(t.command);
                if t.deadline.is_none() {
                    assert!(
                        t.state.status.is_terminal() || t.state.status == SagaStatus::NeedsAttention,
                        "only terminal or paused sagas have no deadline"
                    );
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
        assert_eq!(state.failure_reason, Some(FailureReason::OutOfStock));
        assert_eq!(outcome, Some(OrderOutcome::Cancel { reason: FailureReason::OutOfStock }));
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
        assert_eq!(state.failure_reason, Some(FailureReason::PaymentDeclined));
        assert_eq!(outcome, Some(OrderOutcome::Cancel { reason: FailureReason::PaymentDeclined }));
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
        assert_eq!(state.failure_reason, Some(FailureReason::PaymentTimeout));
    }

    #[test]
    fn retries_back_off_and_wait_longer_each_attempt() {
        let def = def();
        let s = start(&def).state;
        let t = handle(&def, &s, &Input::Timeout).unwrap();
        assert_eq!(t.state.attempt, 2);
        let backoff = def.steps[0].backoff;
        assert_eq!(t.delay, backoff, "the re-sent command waits in the outbox");
        assert_eq!(t.deadline, Some(backoff + Duration::from_secs(2)));
        let step = &def.steps[0];
        assert_eq!(step.backoff_before(1), Duration::ZERO);
        assert_eq!(step.backoff_before(3), (backoff * 2).min(step.timeout));
        assert_eq!(step.backoff_before(30), step.timeout, "capped");
    }

    fn paused_at_capture() -> (SagaDefinition, SagaState) {
        let def = SagaDefinition::checkout(SagaTiming {
            step_timeout: Duration::from_secs(1),
            max_attempts: 2,
            compensation_timeout: Duration::from_secs(1),
            needs_attention_steps: vec!["CAPTURE_PAYMENT".into()],
            ..SagaTiming::default()
        });
        let mut s = start(&def).state;
        for input in [reply(ReplyKind::StockReserved), reply(ReplyKind::PaymentAuthorized), Input::Timeout] {
            s = handle(&def, &s, &input).unwrap().state;
        }
        let t = handle(&def, &s, &Input::Timeout).unwrap();
        assert_eq!(t.events.iter().map(|e| e.0).collect::<Vec<_>>(), [StepTimedOut, NeedsAttention]);
        assert_eq!(t.command, None);
        assert_eq!(t.deadline, None);
        (def, t.state)
    }

    #[test]
    fn exhausted_steps_marked_so_wait_for_an_operator() {
        let (def, s) = paused_at_capture();
        assert_eq!(s.status, SagaStatus::NeedsAttention);
        assert_eq!(s.interrupted, Some(SagaStatus::Running));
        assert_eq!(s.last_error.as_deref(), Some("CAPTURE_PAYMENT got no reply after 2 attempts"));
        assert_eq!(handle(&def, &s, &Input::Timeout), None, "no deadline fires while paused");
        // A late reply resolves it by itself.
        let t = handle(&def, &s, &reply(ReplyKind::PaymentCaptured)).unwrap();
        assert_eq!(t.state.status, SagaStatus::Completed);
        assert_eq!(t.state.last_error, None);
    }

    #[test]
    fn operators_retry_resume_compensate_or_complete_a_paused_saga() {
        let (def, s) = paused_at_capture();
        let t = operate(&def, &s, OperatorAction::RetryStep, "gateway back").unwrap();
        assert_eq!((t.state.status, t.state.attempt), (SagaStatus::Running, 1));
        assert_eq!(t.command, Some(CommandKind::CapturePayment));
        assert_eq!(t.events, [(OperatorRetried, Some("gateway back".into()))]);

        let t = operate(&def, &s, OperatorAction::Resume, "captured, seen in the gateway").unwrap();
        assert_eq!(t.state.status, SagaStatus::Completed);
        assert_eq!(t.events.first().map(|e| e.0), Some(OperatorResumed));
        assert_eq!(t.outcome, Some(OrderOutcome::Confirm));

        let t = operate(&def, &s, OperatorAction::ForceCompensate, "customer asked").unwrap();
        assert_eq!((t.state.status, t.command), (SagaStatus::Compensating, Some(CommandKind::VoidPayment)));
        assert_eq!(t.state.failure_reason, Some(FailureReason::CompensatedByOperator));

        let t = operate(&def, &s, OperatorAction::ForceComplete, "shipped anyway").unwrap();
        assert_eq!(t.state.status, SagaStatus::Completed);
        assert_eq!(
            t.events.iter().map(|e| e.0).collect::<Vec<_>>(),
            [OperatorCompleted, OrderConfirmed, Completed]
        );
    }

    #[test]
    fn operator_actions_that_do_not_fit_the_state_are_refused() {
        let def = def();
        let running = start(&def).state;
        assert!(operate(&def, &running, OperatorAction::RetryStep, "r").is_err(), "not paused");
        assert!(operate(&def, &running, OperatorAction::Resume, "r").is_err(), "not paused");
        assert!(operate(&def, &running, OperatorAction::ForceCompensate, "r").is_ok());
        let compensating = handle(&def, &running, &Input::Cancel).unwrap().state;
        for action in
            [OperatorAction::ForceCompensate, OperatorAction::ForceComplete, OperatorAction::RetryStep]
        {
            assert!(operate(&def, &compensating, action, "r").is_err(), "{action:?} while compensating");
        }
        let done = SagaState { status: SagaStatus::Completed, ..running };
        for action in [
            OperatorAction::RetryStep,
            OperatorAction::Resume,
            OperatorAction::ForceCompensate,
            OperatorAction::ForceComplete,
        ] {
            let e = operate(&def, &done, action, "r").unwrap_err();
            assert!(e.0.contains("already COMPLETED"), "{e}");
        }
    }

    #[test]
    fn compensations_stop_for_an_operator_after_their_attempts() {
        let def = SagaDefinition { compensation_max_attempts: 3, ..def() };
        let mut s = handle(&def, &start(&def).state, &Input::Cancel).unwrap().state;
        for _ in 0..2 {
            s = handle(&def, &s, &Input::Timeout).unwrap().state;
        }
        let t = handle(&def, &s, &Input::Timeout).unwrap();
        assert_eq!(t.state.status, SagaStatus::NeedsAttention);
        assert_eq!(t.state.interrupted, Some(SagaStatus::Compensating));
        // Retrying sends the compensation again; resuming treats it as done and finishes.
        let retried = operate(&def, &t.state, OperatorAction::RetryStep, "r").unwrap();
        assert_eq!(
            (retried.state.status, retried.command),
            (SagaStatus::Compensating, Some(CommandKind::ReleaseStock))
        );
        let resumed = operate(&def, &t.state, OperatorAction::Resume, "released by hand").unwrap();
        assert_eq!(resumed.state.status, SagaStatus::Compensated);
        assert_eq!(resumed.outcome, Some(OrderOutcome::Cancel { reason: FailureReason::CancelledByUser }));
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
        assert_eq!(state.failure_reason, Some(FailureReason::PaymentCaptureFailed));
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
        assert_eq!(state.failure_reason, Some(FailureReason::CaptureTimeout));
    }

    #[test]
    fn cancel_while_reserving_releases_the_possible_reservation() {
        let (events, commands, state, _) = run(&[Input::Cancel, reply(ReplyKind::StockReleased)]);
        assert_eq!(events, [OrderPlaced, CancelRequested, StockReleased, OrderCancelled, Compensated]);
        assert_eq!(commands, [CommandKind::ReserveStock, CommandKind::ReleaseStock]);
        assert_eq!(state.failure_reason, Some(FailureReason::CancelledByUser));
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
            let s = SagaState { status, step: 2, attempt: 1, ..start(&def).state };
            for input in [Input::Timeout, Input::Cancel, reply(ReplyKind::PaymentCaptured)] {
                assert_eq!(handle(&def, &s, &input), None);
            }
        }
    }

    #[test]
    fn compensations_retry_with_capped_backoff_and_never_give_up() {
        let def = def();
        let def = SagaDefinition { compensation_max_attempts: 0, ..def };
        let mut s = SagaState {
            status: SagaStatus::Compensating,
            step: 0,
            attempt: 1,
            failure_reason: Some(FailureReason::PaymentDeclined),
            interrupted: None,
            last_error: None,
        };
        let mut last = Duration::ZERO;
        for _ in 0..50 {
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
        use strum::IntoEnumIterator;
        for k in EventKind::iter() {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::StepTimedOut.as_str(), "STEP_TIMED_OUT");
        for s in SagaStatus::iter() {
            assert_eq!(SagaStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(SagaStatus::NeedsAttention.as_str(), "NEEDS_ATTENTION");
        assert_eq!(OperatorAction::ForceCompensate.as_str(), "FORCE_COMPENSATE");
        assert_eq!(SagaStatus::parse("Running"), None, "names are exact");
    }

    #[test]
    fn a_refund_gives_the_money_back_then_returns_the_stock() {
        let (events, commands, state, outcome) =
            run_def(&refund_def(), &[reply(ReplyKind::PaymentRefunded), reply(ReplyKind::StockReleased)]);
        assert_eq!(events, [RefundRequested, PaymentRefunded, StockReturned, OrderRefunded, Completed]);
        assert_eq!(commands, [CommandKind::RefundPayment, CommandKind::ReleaseStock]);
        assert_eq!(state.status, SagaStatus::Completed);
        assert_eq!(outcome, Some(OrderOutcome::Refund));
    }

    #[test]
    fn a_refused_refund_keeps_the_order_confirmed_and_touches_no_stock() {
        let (events, commands, state, outcome) = run_def(
            &refund_def(),
            &[Input::Reply { kind: ReplyKind::RefundDeclined, reason: Some("charge_disputed".into()) }],
        );
        assert_eq!(events, [RefundRequested, RefundDeclined, RefundAbandoned, Compensated]);
        assert_eq!(commands, [CommandKind::RefundPayment]);
        assert_eq!(state.failure_reason, Some(FailureReason::RefundDeclined));
        assert_eq!(outcome, Some(OrderOutcome::KeepConfirmed { reason: FailureReason::RefundDeclined }));
    }

    #[test]
    fn an_unanswered_refund_or_return_waits_for_an_operator_instead_of_guessing() {
        let def = refund_def();
        let (events, commands, state, outcome) = run_def(&def, &[Input::Timeout, Input::Timeout]);
        assert_eq!(events, [RefundRequested, StepRetried, StepTimedOut, NeedsAttention]);
        assert_eq!(commands, [CommandKind::RefundPayment, CommandKind::RefundPayment]);
        assert_eq!(state.status, SagaStatus::NeedsAttention);
        assert_eq!(outcome, None);
        // Whether the refund happened is unknown, and it cannot be undone: it is not given up
        // (a late answer could still return the money on an order put back to confirmed); an
        // operator retries it or, having checked the provider, resumes.
        let refused = operate(&def, &state, OperatorAction::ForceCompensate, "no refund at the provider");
        assert!(refused.unwrap_err().0.contains("outcome is unknown"));
        let resumed = operate(&def, &state, OperatorAction::Resume, "refunded at the provider").unwrap();
        assert_eq!(resumed.command, Some(CommandKind::ReleaseStock));

        // Past the refund, only forward: retries, then an operator; never undone.
        let (events, _, state, _) =
            run_def(&def, &[reply(ReplyKind::PaymentRefunded), Input::Timeout, Input::Timeout]);
        assert_eq!(events.last(), Some(&NeedsAttention));
        assert_eq!(state.step, 1);
        let refused = operate(&def, &state, OperatorAction::ForceCompensate, "undo").unwrap_err();
        assert!(refused.0.contains("cannot be undone"), "{refused}");
        let done = operate(&def, &state, OperatorAction::ForceComplete, "restocked by hand").unwrap();
        assert_eq!(done.outcome, Some(OrderOutcome::Refund));
        assert_eq!(
            done.events.iter().map(|e| e.0).collect::<Vec<_>>(),
            [OperatorCompleted, OrderRefunded, Completed]
        );
    }

    #[test]
    fn a_refund_cannot_be_cancelled() {
        let def = refund_def();
        assert_eq!(handle(&def, &start(&def).state, &Input::Cancel), None);
    }

    #[test]
    fn a_faulted_step_stops_for_an_operator_and_stale_faults_change_nothing() {
        let def = def();
        let fault = |command| Input::Fault { command, reason: "stripe 401: authentication_error".into() };
        let (_, _, state, _) = run(&[reply(ReplyKind::StockReserved)]);
        // A fault of a command that is not in flight (an earlier step's, late) is ignored.
        assert_eq!(handle(&def, &state, &fault(CommandKind::ReserveStock)), None);
        let t = handle(&def, &state, &fault(CommandKind::AuthorizePayment)).unwrap();
        assert_eq!(t.events.iter().map(|e| e.0).collect::<Vec<_>>(), [StepFaulted, NeedsAttention]);
        assert_eq!(t.state.status, SagaStatus::NeedsAttention);
        assert_eq!(t.state.interrupted, Some(SagaStatus::Running));
        assert_eq!(
            t.state.last_error.as_deref(),
            Some("AUTHORIZE_PAYMENT failed: stripe 401: authentication_error")
        );
        assert_eq!((t.command, t.outcome, t.deadline), (None, None, None));
        // Paused, another fault changes nothing; the operator's retry sends the step again.
        assert_eq!(handle(&def, &t.state, &fault(CommandKind::AuthorizePayment)), None);
        let retried = operate(&def, &t.state, OperatorAction::RetryStep, "key fixed").unwrap();
        assert_eq!(retried.command, Some(CommandKind::AuthorizePayment));

        // Compensating: a faulted undo stops too, and resumes undoing when retried.
        let (_, _, state, _) = run(&[reply(ReplyKind::StockReserved), reply(ReplyKind::PaymentDeclined)]);
        assert_eq!(state.status, SagaStatus::Compensating);
        assert_eq!(handle(&def, &state, &fault(CommandKind::VoidPayment)), None, "not the undo in flight");
        let t = handle(&def, &state, &fault(CommandKind::ReleaseStock)).unwrap();
        assert_eq!(t.state.interrupted, Some(SagaStatus::Compensating));
        let retried = operate(&def, &t.state, OperatorAction::RetryStep, "fixed").unwrap();
        assert_eq!(retried.command, Some(CommandKind::ReleaseStock));
    }
}
