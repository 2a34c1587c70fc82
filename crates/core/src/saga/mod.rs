//! The checkout saga as data and rules: its definition, state machine and messages.

pub mod definition;
pub mod machine;
pub mod messages;

pub use definition::{EventKind, SagaDefinition, SagaTiming};
pub use machine::{SagaState, SagaStatus};
