//! Takes the ordered units out of a buyer's cart when the order is confirmed.

use tracing::info;

use crate::error::AppError;
use crate::mongo::{carts, Mongo};
use crate::saga::messages::{Body, DomainEvent, Envelope};

pub const CONSUMER: &str = "cart-worker";

#[derive(Clone)]
pub struct CartWorker {
    mongo: Mongo,
}

impl CartWorker {
    pub fn new(mongo: Mongo) -> Self {
        Self { mongo }
    }

    /// Idempotent through the cart's `applied_orders` guard; returns `false` for a duplicate.
    pub async fn handle(&self, envelope: Envelope) -> Result<bool, AppError> {
        let Body::Event(DomainEvent::OrderConfirmed { user_id, skus, lines }) = &envelope.body else {
            return Ok(true);
        };
        let applied = if lines.is_empty() {
            carts::apply_order(&self.mongo, *user_id, envelope.order_id, skus).await?
        } else {
            carts::take_order(&self.mongo, *user_id, envelope.order_id, lines).await?
        };
        if applied {
            info!("ordered items removed from cart");
        }
        Ok(applied)
    }
}
