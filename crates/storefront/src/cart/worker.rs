//! Keeps carts in step with orders: a confirmed order's units are out of the cart (the API takes
//! them out when the order is placed; this catches the case where it could not), and a cancelled
//! order's units go back in.

use std::sync::Arc;

use tracing::info;

use crate::mongo::{carts, Mongo};
use ecommerce_checkout::saga::feed::announce_cart_change;
use ecommerce_core::saga::messages::{Body, DomainEvent, Envelope};
use ecommerce_platform::broker::Transport;
use ecommerce_platform::error::AppError;

pub const CONSUMER: &str = "cart-worker";

#[derive(Clone)]
pub struct CartWorker {
    mongo: Mongo,
    transport: Arc<dyn Transport>,
}

impl CartWorker {
    pub fn new(mongo: Mongo, transport: Arc<dyn Transport>) -> Self {
        Self { mongo, transport }
    }

    /// Idempotent through the cart's `applied_orders` / `restored_orders` guards; returns `false`
    /// for a duplicate.
    pub async fn handle(&self, envelope: Envelope) -> Result<bool, AppError> {
        let order = envelope.order_id;
        let (applied, user_id) = match &envelope.body {
            Body::Event(DomainEvent::OrderConfirmed { user_id, skus, lines }) if lines.is_empty() => {
                (carts::apply_order(&self.mongo, *user_id, order, skus).await?, user_id)
            }
            Body::Event(DomainEvent::OrderConfirmed { user_id, lines, .. }) => {
                (carts::take_order(&self.mongo, *user_id, order, lines, None).await?, user_id)
            }
            Body::Event(DomainEvent::OrderCancelled { user_id, lines }) => {
                (carts::restore_order(&self.mongo, *user_id, order, lines).await?, user_id)
            }
            _ => return Ok(true),
        };
        if applied {
            info!("cart updated for the order");
            announce_cart_change(self.transport.as_ref(), *user_id).await;
        }
        Ok(applied)
    }
}
