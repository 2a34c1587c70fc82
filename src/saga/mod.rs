//! The checkout saga: its definition (data), state machine (pure), messages, and the I/O around
//! them (the orchestrator loop and the event feed for subscriptions).

pub mod definition;
pub mod feed;
pub mod graphql;
pub mod machine;
pub mod messages;
pub mod operator;
pub mod orchestrator;
pub mod store;

pub use definition::{EventKind, SagaDefinition, SagaTiming};
pub use machine::{SagaState, SagaStatus};
