//! Payments: the gateway abstraction, its deterministic test implementation, and the worker.

pub mod gateway;
pub mod worker;

pub use gateway::{GatewayError, PaymentGateway, TestGateway};
