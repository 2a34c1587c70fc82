//! What travels over the broker: one envelope type for commands, replies and events.
//!
//! Every envelope has its own `message_id` (consumers deduplicate on it) and carries the saga id,
//! order id and trace id, so a worker's logs join the orchestrator's and the API's.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Topic;

/// Commands a worker executes. Each is idempotent on the order id, so a retried command (with a new
/// message id) has the same effect as the first one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr, strum::EnumIter,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandKind {
    ReserveStock,
    ReleaseStock,
    AuthorizePayment,
    CapturePayment,
    VoidPayment,
    /// Give a captured payment back (the refund saga's; a checkout compensation voids instead).
    RefundPayment,
}

impl CommandKind {
    /// The name sent and used as a metrics label (`SCREAMING_SNAKE_CASE`, as serialized).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn topic(self) -> Topic {
        match self {
            CommandKind::ReserveStock | CommandKind::ReleaseStock => Topic::StockCommands,
            CommandKind::AuthorizePayment
            | CommandKind::CapturePayment
            | CommandKind::VoidPayment
            | CommandKind::RefundPayment => Topic::PaymentCommands,
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr, strum::EnumIter,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplyKind {
    StockReserved,
    StockRejected,
    StockReleased,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentCaptured,
    PaymentCaptureFailed,
    PaymentVoided,
    PaymentRefunded,
    RefundDeclined,
    /// The command failed in a way no retry fixes (the provider refused our credentials or our
    /// request): `Reply::command` says which; the saga stops for an operator.
    Faulted,
}

impl ReplyKind {
    /// The name sent and used as a metrics label (`SCREAMING_SNAKE_CASE`, as serialized).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The command this reply answers; `None` for [`ReplyKind::Faulted`], which names it in
    /// [`Reply::command`].
    pub fn answers(self) -> Option<CommandKind> {
        Some(match self {
            ReplyKind::StockReserved | ReplyKind::StockRejected => CommandKind::ReserveStock,
            ReplyKind::StockReleased => CommandKind::ReleaseStock,
            ReplyKind::PaymentAuthorized | ReplyKind::PaymentDeclined => CommandKind::AuthorizePayment,
            ReplyKind::PaymentCaptured | ReplyKind::PaymentCaptureFailed => CommandKind::CapturePayment,
            ReplyKind::PaymentVoided => CommandKind::VoidPayment,
            ReplyKind::PaymentRefunded | ReplyKind::RefundDeclined => CommandKind::RefundPayment,
            ReplyKind::Faulted => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLine {
    pub sku: String,
    pub quantity: i32,
}

/// A command with the data the worker needs. The orchestrator builds it from the saga's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Command {
    ReserveStock { lines: Vec<StockLine> },
    ReleaseStock,
    AuthorizePayment { amount_minor: i64, currency: String, payment_token: String },
    CapturePayment,
    VoidPayment,
    RefundPayment,
}

impl Command {
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::ReserveStock { .. } => CommandKind::ReserveStock,
            Command::ReleaseStock => CommandKind::ReleaseStock,
            Command::AuthorizePayment { .. } => CommandKind::AuthorizePayment,
            Command::CapturePayment => CommandKind::CapturePayment,
            Command::VoidPayment => CommandKind::VoidPayment,
            Command::RefundPayment => CommandKind::RefundPayment,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub kind: ReplyKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The command a [`ReplyKind::Faulted`] reply answers (other kinds name theirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandKind>,
}

impl Reply {
    /// The command this reply answers.
    pub fn answers(&self) -> Option<CommandKind> {
        self.kind.answers().or(self.command)
    }

    /// `command` failed for good: retrying it as it is will not help.
    pub fn faulted(command: CommandKind, reason: String) -> Self {
        Reply { kind: ReplyKind::Faulted, reason: Some(reason), command: Some(command) }
    }
}

/// Facts other services react to (not part of the saga's request/reply flow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DomainEvent {
    /// The cart service takes the ordered units out of the buyer's cart.
    OrderConfirmed {
        user_id: Uuid,
        /// Every ordered sku (kept for consumers of older messages).
        skus: Vec<String>,
        /// (sku, quantity) per order line; absent in messages from older versions, which
        /// remove the skus' lines whole.
        #[serde(default)]
        lines: Vec<(String, i32)>,
    },
    /// The cart service puts the order's units back into the buyer's cart.
    OrderCancelled { user_id: Uuid, lines: Vec<(String, i32)> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "body", rename_all = "snake_case")]
pub enum Body {
    Command(Command),
    Reply(Reply),
    Event(DomainEvent),
    /// A saga changed (broadcast to every API instance, for live subscriptions).
    Changed(SagaChanged),
    /// A buyer's cart changed (broadcast to every API instance, for `myCart` subscriptions).
    /// Older versions do not know it and skip it.
    CartChanged(CartChanged),
}

/// A buyer's cart changed: whose (subscribers read the cart again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartChanged {
    pub user_id: Uuid,
}

/// What a saga looks like after a transition, with the history events the transition recorded
/// (so a live subscription can pass them on without reading them back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaChanged {
    /// The order's buyer, so that a subscription to one buyer's orders reads only on their
    /// changes; absent from versions that did not send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    pub status: String,
    pub event_count: i32,
    /// Events recorded by the transaction that sent this notice, in order; empty from versions
    /// that did not send them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<ChangedEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedEvent {
    pub seq: i32,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub message_id: Uuid,
    pub saga_id: Uuid,
    pub order_id: Uuid,
    pub trace_id: String,
    #[serde(flatten)]
    pub body: Body,
}

impl Envelope {
    pub fn new(saga_id: Uuid, order_id: Uuid, trace_id: impl Into<String>, body: Body) -> Self {
        Self { message_id: Uuid::now_v7(), saga_id, order_id, trace_id: trace_id.into(), body }
    }

    /// Where this message goes.
    pub fn topic(&self) -> Topic {
        match &self.body {
            Body::Command(c) => c.kind().topic(),
            Body::Reply(_) => Topic::Replies,
            Body::Event(_) => Topic::OrderEvents,
            Body::Changed(_) | Body::CartChanged(_) => Topic::SagaChanges,
        }
    }

    /// A reply to this message, with the same saga, order and trace.
    pub fn reply(&self, reply: Reply) -> Envelope {
        Envelope::new(self.saga_id, self.order_id, self.trace_id.clone(), Body::Reply(reply))
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("envelope serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips() {
        let env = Envelope::new(
            Uuid::now_v7(),
            Uuid::now_v7(),
            "trace-1",
            Body::Command(Command::AuthorizePayment {
                amount_minor: 1999,
                currency: "USD".into(),
                payment_token: "tok_visa".into(),
            }),
        );
        let back = Envelope::decode(&env.encode()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.topic(), Topic::PaymentCommands);
        let reply = env.reply(Reply { kind: ReplyKind::PaymentAuthorized, reason: None, command: None });
        assert_eq!(reply.topic(), Topic::Replies);
        assert_eq!(reply.saga_id, env.saga_id);
        assert_ne!(reply.message_id, env.message_id);
    }

    #[test]
    fn every_reply_answers_a_command_on_the_right_topic() {
        for (reply, topic) in [
            (ReplyKind::StockReserved, Topic::StockCommands),
            (ReplyKind::StockReleased, Topic::StockCommands),
            (ReplyKind::PaymentVoided, Topic::PaymentCommands),
            (ReplyKind::PaymentCaptureFailed, Topic::PaymentCommands),
            (ReplyKind::RefundDeclined, Topic::PaymentCommands),
        ] {
            assert_eq!(reply.answers().unwrap().topic(), topic);
        }
    }
}
