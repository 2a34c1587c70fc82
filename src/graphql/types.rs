//! Output types more than one feature's resolvers return.

use async_graphql::{Enum, SimpleObject};
use ecommerce_checkout::order::OrderStatus;
use ecommerce_core::domain::Money;

/// An amount of money in one currency.
#[derive(SimpleObject, Clone)]
#[graphql(name = "Money")]
pub struct MoneyGql {
    /// Integer minor units (cents).
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
}

impl From<&Money> for MoneyGql {
    fn from(m: &Money) -> Self {
        MoneyGql { amount_minor: m.minor(), currency: m.currency().to_string() }
    }
}

/// Where an order is.
#[derive(Enum, Copy, Clone, PartialEq, Eq)]
#[graphql(name = "OrderStatus", remote = "OrderStatus")]
pub enum OrderStatusGql {
    /// Placed; checkout is running (or undoing what it did).
    Pending,
    /// Stock reserved and payment captured: the order will ship.
    Confirmed,
    /// Nothing was charged or kept: see `cancelReason`.
    Cancelled,
}
