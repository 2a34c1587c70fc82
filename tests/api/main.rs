//! End-to-end tests through the HTTP/WebSocket API against real PostgreSQL, a MongoDB-wire server
//! and NATS JetStream (start them with `scripts/services.sh up`).

mod access;
mod auth;
mod cart;
mod checkout;
mod contention;
mod dataloader;
mod dead_letters;
mod fuzz;
mod helpers;
mod http;
mod idempotency;
mod idle;
mod limits;
mod live;
mod loadgen;
mod monitor;
mod operator;
mod playground;
mod refund;
mod relay;
mod replicas;
mod resilience;
mod retention;
mod schema;
mod security;
mod sessions;
mod storefront;
mod stripe;
#[allow(dead_code)] // shared by the test crates; each uses part of it
#[path = "../support/stripe_proxy.rs"]
mod stripe_proxy;
mod transport;
mod upgrades;
mod websocket;
