//! The checkout: orders, stock, payments and the saga that keeps them consistent, over PostgreSQL
//! and the broker. Services write state and outgoing messages in one transaction; workers execute
//! commands idempotently; the orchestrator drives each saga to its end. No GraphQL, no MongoDB.

pub mod order;
pub mod page;
pub mod payment;
pub mod roles;
pub mod saga;
pub mod stock;
