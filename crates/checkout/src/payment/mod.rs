//! Payments: the gateway abstraction, its deterministic test implementation, and the worker.

pub mod gateway;
pub mod store;
pub mod stripe;
pub mod webhook;
pub mod worker;

pub use gateway::{Call, GatewayError, PaymentGateway, TestGateway};

use std::sync::Arc;

use ecommerce_platform::config::{Config, PaymentGatewayKind};

/// The gateway `PAYMENT_GATEWAY` names.
pub fn configured_gateway(config: &Config) -> Result<Arc<dyn PaymentGateway>, GatewayError> {
    let w = &config.workers;
    Ok(match w.payment_gateway {
        PaymentGatewayKind::Test => Arc::new(TestGateway),
        PaymentGatewayKind::Stripe => {
            let key = w
                .stripe_secret_key
                .clone()
                .ok_or_else(|| GatewayError::Declined("STRIPE_SECRET_KEY is not set".into()))?;
            Arc::new(stripe::StripeGateway::new(&w.stripe_api_base, key, w.payment_gateway_timeout)?)
        }
    })
}
