//! Output types more than one feature's resolvers return.

use async_graphql::{Enum, SimpleObject};
use ecommerce_checkout::order::OrderStatus;
use ecommerce_core::domain::{decimal, Money};

/// An amount of money in one currency.
#[derive(SimpleObject, Clone)]
#[graphql(name = "Money")]
pub struct MoneyGql {
    /// The amount in major units as a decimal string, exact at any size (`"12.50"` for 12.50
    /// USD, `"1250"` for 1250 JPY): parse it with a decimal type, not a float.
    pub amount: String,
    /// Integer minor units (cents).
    #[graphql(deprecation = "A GraphQL Int is 32 bits: amounts over 21,474,836.47 do not fit. Use amount.")]
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
}

impl MoneyGql {
    pub fn new(minor: i64, currency: &str) -> Self {
        MoneyGql { amount: decimal(minor, currency), amount_minor: minor, currency: currency.to_string() }
    }
}

impl From<&Money> for MoneyGql {
    fn from(m: &Money) -> Self {
        MoneyGql::new(m.minor(), m.currency())
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
