//! Draining and replaying dead letters (`api dead-letters drain|replay`).
//!
//! A message goes to the dead-letter topic when its consumer failed it `MAX_DELIVERIES` times, or
//! could not read it at all. Nothing else handles it: the saga it belongs to waits (its step times
//! out and is retried, and eventually stops for an operator). Once the cause is fixed, `replay`
//! publishes each dead letter again to the topic it came from, where its consumer handles it as if
//! it were new: it carries its original message id, and a consumer that failed it committed
//! nothing, so the inbox lets it through once (and drops any copy). `drain` moves dead letters to
//! a file of JSON lines instead (to look at them, keep them, or replay them later with
//! `replay --from`).

use std::io::{BufRead, Write};
use std::time::Duration;

use bytes::Bytes;
use ecommerce_core::saga::messages::{Body, Envelope};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::broker::{BrokerError, Delivery, Transport, DEAD_LETTERS};

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("writing or reading dead letters: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: not a dead letter: {why}")]
    BadLine { line: usize, why: String },
}

/// One dead letter, as `drain` writes it and `replay --from` reads it (a JSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Where it goes when replayed; absent for a message this version cannot read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<uuid::Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saga_id: Option<uuid::Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<uuid::Uuid>,
    /// What it is: a command, reply or event name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// What was done with it: `replayed`, `drained`, or `kept` (left in the dead-letter topic:
    /// unreadable, so there is nowhere to replay it).
    pub action: String,
    /// The message as it was published: its JSON, or (not JSON) its bytes in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
}

impl Record {
    fn of(payload: &[u8], action: &str) -> Self {
        let envelope = Envelope::decode(payload).ok();
        let kind = envelope.as_ref().map(|e| match &e.body {
            Body::Command(c) => c.kind().as_str().to_string(),
            Body::Reply(r) => r.kind.as_str().to_string(),
            Body::Event(_) => "EVENT".to_string(),
            Body::Changed(_) | Body::CartChanged(_) => "NOTICE".to_string(),
        });
        let message = serde_json::from_slice::<serde_json::Value>(payload).ok();
        Record {
            topic: envelope.as_ref().map(|e| e.topic().as_str().to_string()),
            message_id: envelope.as_ref().map(|e| e.message_id),
            saga_id: envelope.as_ref().map(|e| e.saga_id),
            order_id: envelope.as_ref().map(|e| e.order_id),
            kind,
            action: action.to_string(),
            hex: message.is_none().then(|| payload.iter().map(|b| format!("{b:02x}")).collect()),
            message,
        }
    }

    /// The bytes to publish.
    fn payload(&self) -> Option<Bytes> {
        match (&self.message, &self.hex) {
            (Some(m), _) => Some(Bytes::from(serde_json::to_vec(m).expect("a JSON value serializes"))),
            (None, Some(hex)) => (0..hex.len())
                .step_by(2)
                .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                .collect::<Option<Vec<u8>>>()
                .map(Bytes::from),
            (None, None) => None,
        }
    }
}

/// How long to take dead letters.
#[derive(Debug, Clone, Copy)]
pub struct Take {
    /// Stop once none arrived for this long.
    pub idle: Duration,
    /// Stop after this many.
    pub limit: Option<usize>,
}

/// What a run did, by action.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub replayed: usize,
    pub drained: usize,
    pub kept: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Replay,
    Drain,
}

/// Publishes every dead letter again to the topic it came from, and writes a line per message
/// to `out`. One that cannot be read (so has nowhere to go) stays in the dead-letter topic.
pub async fn replay(
    transport: &dyn Transport,
    take: Take,
    out: &mut dyn Write,
) -> Result<Summary, DeadLetterError> {
    run(transport, take, Mode::Replay, out).await
}

/// Moves every dead letter to `out` (a JSON line each, readable by [`replay_from`]).
pub async fn drain(
    transport: &dyn Transport,
    take: Take,
    out: &mut dyn Write,
) -> Result<Summary, DeadLetterError> {
    run(transport, take, Mode::Drain, out).await
}

async fn run(
    transport: &dyn Transport,
    take: Take,
    mode: Mode,
    out: &mut dyn Write,
) -> Result<Summary, DeadLetterError> {
    let (consumer, topic) = DEAD_LETTERS;
    let mut letters = transport.subscribe(consumer, topic).await?;
    let mut summary = Summary::default();
    // Unreadable letters are held unsettled until the end, so this run does not take them again;
    // then they go back.
    let mut kept: Vec<Delivery> = Vec::new();
    while take.limit.is_none_or(|limit| summary.replayed + summary.drained + summary.kept < limit) {
        let delivery = match tokio::time::timeout(take.idle, letters.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(d)) => d?,
        };
        let topic = Envelope::decode(&delivery.payload).ok().map(|e| e.topic());
        let action = match (mode, topic) {
            (Mode::Drain, _) => "drained",
            (Mode::Replay, Some(_)) => "replayed",
            (Mode::Replay, None) => "kept",
        };
        let record = Record::of(&delivery.payload, action);
        match (mode, topic) {
            (Mode::Replay, Some(topic)) => {
                let key = record.saga_id.map(|s| s.to_string()).unwrap_or_default();
                transport.publish(topic, &key, delivery.payload.clone()).await?;
                summary.replayed += 1;
            }
            (Mode::Replay, None) => summary.kept += 1,
            (Mode::Drain, _) => summary.drained += 1,
        }
        // Written (and flushed) before the ack: a drained letter is in the file before it leaves
        // the topic.
        serde_json::to_writer(&mut *out, &record).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        out.flush()?;
        match action {
            "kept" => kept.push(delivery),
            _ => delivery.acker.ack().await?,
        }
    }
    for delivery in kept {
        delivery.acker.nak(Duration::ZERO).await?;
    }
    Ok(summary)
}

/// Publishes the dead letters `drain` wrote to `input` (JSON lines) to their topics; lines
/// without a topic (unreadable messages) are written to `out` as they are and not published.
pub async fn replay_from(
    transport: &dyn Transport,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<Summary, DeadLetterError> {
    let mut summary = Summary::default();
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| DeadLetterError::BadLine { line: n + 1, why };
        let mut record: Record = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let payload = record.payload().ok_or_else(|| bad("neither `message` nor `hex`".into()))?;
        let topic = Envelope::decode(&payload).ok().map(|e| e.topic());
        match topic {
            Some(topic) => {
                let key = record.saga_id.map(|s| s.to_string()).unwrap_or_default();
                transport.publish(topic, &key, payload).await?;
                record.action = "replayed".into();
                summary.replayed += 1;
            }
            None => {
                record.action = "kept".into();
                summary.kept += 1;
            }
        }
        serde_json::to_writer(&mut *out, &record).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Topic;
    use ecommerce_core::saga::messages::samples;

    #[test]
    fn a_record_keeps_the_message_and_says_where_it_goes() {
        let env = &samples()[0];
        let r = Record::of(&env.encode(), "drained");
        assert_eq!(r.topic.as_deref(), Some(Topic::StockCommands.as_str()));
        assert_eq!(r.message_id, Some(env.message_id));
        assert_eq!(r.kind.as_deref(), Some("RESERVE_STOCK"));
        assert_eq!(Envelope::decode(&r.payload().unwrap()).unwrap(), *env);
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
    }

    #[test]
    fn a_payload_that_is_not_json_travels_as_hex() {
        let r = Record::of(&[0xff, 0x00, 0x7b], "kept");
        assert_eq!(r.hex.as_deref(), Some("ff007b"));
        assert_eq!((r.topic, r.message), (None, None));
        let back: Record =
            serde_json::from_str(&serde_json::to_string(&Record::of(&[0xff, 0x00, 0x7b], "kept")).unwrap())
                .unwrap();
        assert_eq!(back.payload().unwrap().as_ref(), &[0xff, 0x00, 0x7b]);
        let odd = Record { hex: Some("abc".into()), ..back };
        assert_eq!(odd.payload(), None);
    }
}
