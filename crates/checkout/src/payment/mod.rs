//! Payments: the gateway abstraction, its deterministic test implementation, and the worker.

pub mod gateway;
pub mod store;
pub mod worker;

pub use gateway::{GatewayError, PaymentGateway, TestGateway};

use std::sync::Arc;

use ecommerce_platform::config::{Config, PaymentGatewayKind};

/// The gateway `PAYMENT_GATEWAY` names.
pub fn configured_gateway(config: &Config) -> Arc<dyn PaymentGateway> {
    match config.workers.payment_gateway {
        PaymentGatewayKind::Test => Arc::new(TestGateway),
    }
}
