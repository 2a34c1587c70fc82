//! What travels over the broker: one envelope type for commands, replies and events.
//!
//! Every envelope has its own `message_id` (consumers deduplicate on it) and carries the saga id,
//! order id and trace id, so a worker's logs join the orchestrator's and the API's.
//!
//! Every envelope also says which version of this format it is written in (`v`; absent in
//! version 1). A consumer reads [`MESSAGE_VERSION`] and the version before it, so messages still in
//! flight when a deploy replaces their consumer are handled; and, while older consumers still run,
//! producers can write the older version ([`Envelope::encode_as`], `MESSAGE_WRITE_VERSION`). The
//! committed fixtures (`crates/core/fixtures/messages/v<N>.json`) hold one message of every kind in
//! each version; the tests below read them with this code. The rules for changing the format are
//! in `docs/operations.md` ("Rolling upgrades").

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

/// The version of the message format this code writes (unless told to write an older one).
/// Version 2 added `v`; otherwise it is version 1.
pub const MESSAGE_VERSION: u16 = 2;
/// The oldest version this code reads: messages written by the release before are still handled.
pub const OLDEST_READ_VERSION: u16 = 1;

fn version_1() -> u16 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The format version the message was written in; absent (1) from versions before `v` existed.
    #[serde(default = "version_1")]
    pub v: u16,
    pub message_id: Uuid,
    pub saga_id: Uuid,
    pub order_id: Uuid,
    pub trace_id: String,
    #[serde(flatten)]
    pub body: Body,
}

impl Envelope {
    pub fn new(saga_id: Uuid, order_id: Uuid, trace_id: impl Into<String>, body: Body) -> Self {
        Self {
            v: MESSAGE_VERSION,
            message_id: Uuid::now_v7(),
            saga_id,
            order_id,
            trace_id: trace_id.into(),
            body,
        }
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

    /// This message as `version` writes it: [`MESSAGE_VERSION`] is [`Envelope::encode`]; an older
    /// one (down to [`OLDEST_READ_VERSION`]) is what a consumer of that version reads.
    pub fn encode_as(&self, version: u16) -> Result<Vec<u8>, VersionError> {
        let mut value = serde_json::to_value(self).expect("envelope serializes");
        downgrade(&mut value, version)?;
        Ok(serde_json::to_vec(&value).expect("a JSON value serializes"))
    }

    /// Reads a message of any version from [`OLDEST_READ_VERSION`] up. A newer message is read too
    /// when it only adds to this version (new fields are ignored); one that does not fit is
    /// [`DecodeError::TooNew`], for a consumer of its version.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match serde_json::from_slice::<Envelope>(bytes) {
            Ok(e) if e.v < OLDEST_READ_VERSION => Err(DecodeError::TooOld { version: e.v }),
            Ok(e) => Ok(e),
            Err(source) => {
                #[derive(Deserialize)]
                struct VersionOnly {
                    v: u16,
                }
                match serde_json::from_slice::<VersionOnly>(bytes) {
                    Ok(VersionOnly { v }) if v > MESSAGE_VERSION => {
                        Err(DecodeError::TooNew { version: v, source })
                    }
                    _ => Err(DecodeError::Malformed(source)),
                }
            }
        }
    }
}

/// Rewrites a message of [`MESSAGE_VERSION`] (as a JSON value) into `version`, one version at a
/// time. Each version that changes the format adds its step here, and the step that reads the
/// older version back, if serde's defaults cannot, to [`Envelope::decode`].
fn downgrade(value: &mut serde_json::Value, version: u16) -> Result<(), VersionError> {
    if !(OLDEST_READ_VERSION..=MESSAGE_VERSION).contains(&version) {
        return Err(VersionError(version));
    }
    let fields = value.as_object_mut().expect("an envelope is a JSON object");
    for from in (version + 1..=MESSAGE_VERSION).rev() {
        match from {
            // 2 → 1: version 1 has no `v` (and reads as 1 without it); nothing else changed.
            2 => {
                fields.remove("v");
            }
            _ => unreachable!("every version above the oldest read has a step"),
        }
    }
    if version > 1 {
        fields.insert("v".into(), version.into());
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error(
    "message format version {0} is not one this code writes ({OLDEST_READ_VERSION} to {MESSAGE_VERSION})"
)]
pub struct VersionError(pub u16);

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Written by a newer version in a way this one cannot read: a consumer of that version can.
    #[error("message format version {version} is newer than this code reads ({MESSAGE_VERSION}): {source}")]
    TooNew { version: u16, source: serde_json::Error },
    /// Written by a version older than this code reads.
    #[error("message format version {version} is older than this code reads ({OLDEST_READ_VERSION})")]
    TooOld { version: u16 },
    /// Not a message of any version.
    #[error("not a message: {0}")]
    Malformed(serde_json::Error),
}

/// One message of every kind (every command, every reply, every event and notice), with fixed
/// ids and times: the set the compatibility fixtures (`crates/core/fixtures/messages/`) hold in
/// each format version.
pub fn samples() -> Vec<Envelope> {
    use strum::IntoEnumIterator;
    let saga = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
    let order = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002);
    let user = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0003);
    let at = chrono::DateTime::from_timestamp(1_764_000_000, 0).expect("a valid time");
    let commands = CommandKind::iter().map(|kind| match kind {
        CommandKind::ReserveStock => Command::ReserveStock {
            lines: vec![
                StockLine { sku: "MUG-001".into(), quantity: 2 },
                StockLine { sku: "PEN-004".into(), quantity: 1 },
            ],
        },
        CommandKind::ReleaseStock => Command::ReleaseStock,
        CommandKind::AuthorizePayment => Command::AuthorizePayment {
            amount_minor: 2_599,
            currency: "USD".into(),
            payment_token: "tok_visa".into(),
        },
        CommandKind::CapturePayment => Command::CapturePayment,
        CommandKind::VoidPayment => Command::VoidPayment,
        CommandKind::RefundPayment => Command::RefundPayment,
    });
    let replies = ReplyKind::iter().map(|kind| match kind {
        ReplyKind::Faulted => Reply::faulted(CommandKind::CapturePayment, "provider refused the key".into()),
        ReplyKind::StockRejected | ReplyKind::PaymentDeclined => {
            Reply { kind, reason: Some("declined".into()), command: None }
        }
        kind => Reply { kind, reason: None, command: None },
    });
    let bodies = commands.map(Body::Command).chain(replies.map(Body::Reply)).chain([
        Body::Event(DomainEvent::OrderConfirmed {
            user_id: user,
            skus: vec!["MUG-001".into()],
            lines: vec![("MUG-001".into(), 2)],
        }),
        Body::Event(DomainEvent::OrderCancelled { user_id: user, lines: vec![("MUG-001".into(), 2)] }),
        Body::Changed(SagaChanged {
            user_id: Some(user),
            status: "COMPLETED".into(),
            event_count: 5,
            events: vec![ChangedEvent { seq: 5, kind: "PAYMENT_CAPTURED".into(), detail: None, at }],
        }),
        Body::CartChanged(CartChanged { user_id: user }),
    ]);
    bodies
        .enumerate()
        .map(|(n, body)| Envelope {
            v: MESSAGE_VERSION,
            message_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0001_0000 + n as u128),
            saga_id: saga,
            order_id: order,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            body,
        })
        .collect()
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

    fn fixture(version: u16) -> Vec<serde_json::Value> {
        let path = format!("{}/fixtures/messages/v{version}.json", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn this_version_writes_what_its_fixture_holds() {
        // The fixture of the current version is what the code writes; a change to the format shows
        // here. Such a change bumps MESSAGE_VERSION, adds its downgrade step and a new fixture,
        // and keeps the previous one (read by the next test).
        let written: Vec<serde_json::Value> =
            samples().iter().map(|e| serde_json::from_slice(&e.encode()).unwrap()).collect();
        assert_eq!(written, fixture(MESSAGE_VERSION), "fixtures/messages/v{MESSAGE_VERSION}.json is stale");
        assert!(written.iter().all(|m| m["v"] == MESSAGE_VERSION));
    }

    #[test]
    fn every_version_still_read_decodes_to_the_same_messages() {
        for version in OLDEST_READ_VERSION..=MESSAGE_VERSION {
            let messages = fixture(version);
            assert_eq!(messages.len(), samples().len(), "v{version}: one message of every kind");
            for (raw, expected) in messages.iter().zip(samples()) {
                let bytes = serde_json::to_vec(raw).unwrap();
                let read = Envelope::decode(&bytes).unwrap_or_else(|e| panic!("v{version}: {e}: {raw}"));
                assert_eq!(read.v, version);
                assert_eq!(Envelope { v: MESSAGE_VERSION, ..read }, expected, "v{version}");
            }
        }
    }

    #[test]
    fn writing_an_older_version_writes_its_fixture() {
        for version in OLDEST_READ_VERSION..=MESSAGE_VERSION {
            let written: Vec<serde_json::Value> = samples()
                .iter()
                .map(|e| serde_json::from_slice(&e.encode_as(version).unwrap()).unwrap())
                .collect();
            assert_eq!(written, fixture(version), "as v{version}");
        }
        assert!(samples()[0].encode_as(OLDEST_READ_VERSION - 1).is_err());
        assert!(samples()[0].encode_as(MESSAGE_VERSION + 1).is_err());
    }

    #[test]
    fn a_newer_message_is_read_when_it_only_adds_and_told_apart_when_it_does_not() {
        let mut added: serde_json::Value = serde_json::from_slice(&samples()[0].encode()).unwrap();
        added["v"] = (MESSAGE_VERSION + 1).into();
        added["priority"] = "high".into();
        let read = Envelope::decode(&serde_json::to_vec(&added).unwrap()).unwrap();
        assert_eq!(read.v, MESSAGE_VERSION + 1);
        assert_eq!(read.body, samples()[0].body);

        let mut changed = added.clone();
        changed["type"] = "workflow".into();
        assert!(matches!(
            Envelope::decode(&serde_json::to_vec(&changed).unwrap()),
            Err(DecodeError::TooNew { version, .. }) if version == MESSAGE_VERSION + 1
        ));
        let mut old = added;
        old["v"] = 0.into();
        assert!(matches!(
            Envelope::decode(&serde_json::to_vec(&old).unwrap()),
            Err(DecodeError::TooOld { version: 0 })
        ));
        assert!(matches!(Envelope::decode(b"{\"hello\": 1}"), Err(DecodeError::Malformed(_))));
        assert!(matches!(Envelope::decode(b"\xff"), Err(DecodeError::Malformed(_))));
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
