//! The logical destinations of messages.

/// The logical destinations; each broker maps them to its own names under a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    StockCommands,
    PaymentCommands,
    Replies,
    OrderEvents,
    /// Messages that failed past the retry limit, kept for inspection.
    DeadLetters,
    /// Saga and cart changes, broadcast to every live subscriber (the transport's
    /// `subscribe_broadcast`); not durable: a subscriber gets what is published while it listens.
    SagaChanges,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 6] = [
        Topic::StockCommands,
        Topic::PaymentCommands,
        Topic::Replies,
        Topic::OrderEvents,
        Topic::DeadLetters,
        Topic::SagaChanges,
    ];
    /// The topics the saga's commands, replies and events travel on, each consumed by a named
    /// durable subscription.
    pub const DURABLE: [Topic; 4] =
        [Topic::StockCommands, Topic::PaymentCommands, Topic::Replies, Topic::OrderEvents];

    pub fn as_str(self) -> &'static str {
        match self {
            Topic::StockCommands => "cmd.stock",
            Topic::PaymentCommands => "cmd.payment",
            Topic::Replies => "reply.orchestrator",
            Topic::OrderEvents => "evt.order",
            Topic::DeadLetters => "dlq",
            Topic::SagaChanges => "evt.saga",
        }
    }

    pub fn parse(s: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_has_a_distinct_name_that_parses_back() {
        let names: std::collections::HashSet<_> = Topic::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names.len(), Topic::ALL.len());
        for t in Topic::ALL {
            assert_eq!(Topic::parse(t.as_str()), Some(t));
        }
        assert!(Topic::DURABLE.iter().all(|t| Topic::ALL.contains(t)));
        assert_eq!(Topic::parse("nope"), None);
    }
}
