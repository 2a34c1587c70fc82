//! ecommerce-saga's API: the GraphQL backend-for-frontend over HTTP (queries, mutations,
//! graphql-ws subscriptions), accounts and tokens, the playground and the saga monitor.
//!
//! Below it (see docs/architecture.md): `ecommerce-storefront` (catalog, carts, placing an
//! order), `ecommerce-checkout` (orders, stock, payments, the saga store, orchestrator and
//! workers), `ecommerce-platform` (configuration, brokers, PostgreSQL, metrics, telemetry) and
//! `ecommerce-core` (domain types, the saga definition and state machine; no I/O).

pub mod app;
pub mod auth;
pub mod graphql;
pub mod http;
pub mod monitor;
pub mod playground;
pub mod serve;
pub mod webhooks;
pub mod ws;
