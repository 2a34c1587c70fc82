//! ecommerce-saga: orders, stock and payments kept consistent with an orchestrated checkout saga,
//! served as a GraphQL backend-for-frontend.
//!
//! Features (`auth`, `catalog`, `cart`, `order`, `payment`, `stock`, `saga`) hold their rules;
//! infrastructure (`postgres`, `mongo`, `broker`) implements the I/O they need; `app` wires roles.

pub mod app;
pub mod auth;
pub mod broker;
pub mod cart;
pub mod catalog;
pub mod config;
pub mod domain;
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
