//! Orders: an order and its checkout saga are written in one transaction; the saga decides whether
//! it ends CONFIRMED or CANCELLED. Turning a cart into an order is the storefront crate's part.

pub mod live;
pub mod refund;
pub mod service;

use chrono::{DateTime, Utc};
use ecommerce_core::address::ShippingAddress;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Cancelled,
    Refunding,
    Refunded,
}

impl OrderStatus {
    /// The name stored in `orders.status` (derived).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

#[derive(Debug, Clone)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: OrderStatus,
    pub total_minor: i64,
    pub currency: String,
    pub idempotency_key: String,
    pub cancel_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The contact address given at checkout; `None` for orders placed without one.
    pub email: Option<String>,
    /// Where it ships; `None` for orders placed without one.
    pub shipping_address: Option<ShippingAddress>,
}

#[derive(Debug, Clone)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
}
