//! Output types more than one feature's resolvers return.

use async_graphql::{Enum, SimpleObject};
use ecommerce_checkout::order::OrderStatus;
use ecommerce_core::domain::Money;

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

#[derive(Enum, Copy, Clone, PartialEq, Eq)]
#[graphql(name = "OrderStatus")]
pub enum OrderStatusGql {
    Pending,
    Confirmed,
    Cancelled,
}

impl From<OrderStatus> for OrderStatusGql {
    fn from(s: OrderStatus) -> Self {
        match s {
            OrderStatus::Pending => OrderStatusGql::Pending,
            OrderStatus::Confirmed => OrderStatusGql::Confirmed,
            OrderStatus::Cancelled => OrderStatusGql::Cancelled,
        }
    }
}
