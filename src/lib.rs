//! ecommerce-saga: orders, stock and payments kept consistent with an orchestrated checkout saga,
//! served as a GraphQL backend-for-frontend.
//!
//! The pure core (domain types, the saga's definition, state machine and messages) is the
//! `ecommerce-core` crate, re-exported here as `domain` and `saga::{definition, machine, messages}`.
//! Features (`auth`, `catalog`, `cart`, `order`, `payment`, `stock`, `saga`) hold their services;
//! infrastructure (`postgres`, `mongo`, `broker`) implements the I/O they need; `app` wires roles.

pub mod app;
pub mod auth;
pub mod cart;
pub mod catalog;
pub mod graphql;
pub mod http;
pub mod mongo;
pub mod monitor;
pub mod order;
pub mod payment;
pub mod playground;
pub mod saga;
pub mod stock;

/// Configuration, errors, brokers, PostgreSQL, metrics and telemetry, from the platform crate.
pub use ecommerce_platform::{broker, config, error, metrics, postgres, telemetry};

/// Domain types without I/O, from the core crate.
pub use ecommerce_core::domain;
