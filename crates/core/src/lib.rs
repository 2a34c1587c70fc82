//! The shop's core, with no I/O: domain types (ids, money, products, carts and their rules), the
//! saga's definition (steps, commands, compensations, timeouts as data), its pure state machine,
//! and the messages and topics it exchanges. It builds without tokio, sqlx, MongoDB or any broker
//! client; everything that talks to the outside world lives in the crates above it.

pub mod address;
pub mod cart;
pub mod catalog;
pub mod currency;
pub mod domain;
pub mod refusal;
pub mod saga;
pub mod topic;

pub use topic::Topic;
