//! The sagas (checkout, refund): their definitions (data), state machine (pure) and messages come from the core
//! crate; here is the I/O around them (the orchestrator loop, the saga store, the event feed for
//! subscriptions, operator repairs).

pub use ecommerce_core::saga::{definition, machine, messages};

pub mod clock;
pub mod feed;
pub mod operator;
pub mod orchestrator;
pub mod store;

pub use definition::{EventKind, FailureReason, SagaDefinition, SagaTiming, Sagas, Step, CHECKOUT, REFUND};
pub use machine::{SagaState, SagaStatus};
