//! What every role stands on, and nothing about checkout itself: configuration, the service error,
//! the transport trait with its brokers (NATS, RabbitMQ and Kafka each behind a cargo feature; the
//! in-process one always), the PostgreSQL pool with the outbox and inbox, metrics and telemetry.

pub mod broker;
pub mod config;
pub mod consumer;
pub mod dead_letters;
pub mod error;
pub mod metrics;
pub mod postgres;
pub mod retry;
pub mod telemetry;
