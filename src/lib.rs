//! ecommerce-saga: orders, stock and payments kept consistent with an orchestrated checkout saga,
//! served as a GraphQL backend-for-frontend.
//!
//! The pure core (domain types, the saga's definition, state machine and messages) is the
//! `ecommerce-core` crate, re-exported here as `domain` and `saga::{definition, machine, messages}`.
//! Features (`auth`, `catalog`, `cart`, `order`, `payment`, `stock`, `saga`) hold their services;
//! infrastructure (`postgres`, `mongo`, `broker`) implements the I/O they need; `app` wires roles.

pub mod app;
pub mod auth;
pub mod broker;
pub mod cart;
pub mod catalog;
pub mod config;
pub mod error;
pub mod graphql;
pub mod http;
pub mod metrics;
pub mod mongo;
pub mod monitor;
pub mod order;
pub mod payment;
pub mod playground;
pub mod postgres;
pub mod saga;
pub mod stock;
pub mod telemetry;

/// Domain types without I/O, from the core crate.
pub use ecommerce_core::domain;
