//! The sagas (checkout, refund) as data and rules: its definition, state machine and messages.

pub mod definition;
pub mod machine;
pub mod messages;

pub use definition::{EventKind, SagaDefinition, SagaTiming, Sagas};
pub use machine::{SagaState, SagaStatus};
