//! Output types more than one feature's resolvers return.

use async_graphql::{Enum, SimpleObject};
use ecommerce_checkout::order::OrderStatus;
use ecommerce_core::currency::CurrencyCode;
use ecommerce_core::domain::{decimal, Money};
use ecommerce_platform::error::AppError;

/// An amount of money in one currency.
#[derive(SimpleObject, Clone)]
#[graphql(name = "Money", complex)]
pub struct MoneyGql {
    /// The amount in major units as a decimal string, exact at any size (`"12.50"` for 12.50
    /// USD, `"1250"` for 1250 JPY): parse it with a decimal type, not a float.
    pub amount: String,
    #[graphql(skip)]
    pub amount_minor: i64,
    /// The currency, from the closed set the shop prices in.
    pub currency_code: CurrencyCode,
    /// ISO 4217 code.
    #[graphql(deprecation = "A string does not tell a client which codes can come. Use currencyCode.")]
    pub currency: String,
}

#[async_graphql::ComplexObject]
impl MoneyGql {
    /// Integer minor units (cents), when they fit a GraphQL `Int` (32 bits); a larger amount is
    /// a field error (`BAD_USER_INPUT`), as the GraphQL spec asks, not a number a client cannot
    /// hold.
    #[graphql(deprecation = "A GraphQL Int is 32 bits: amounts over 21,474,836.47 do not fit. Use amount.")]
    async fn amount_minor(&self) -> async_graphql::Result<i32> {
        i32::try_from(self.amount_minor).map_err(|_| {
            AppError::bad_input(format!(
                "{} {} does not fit amountMinor, a 32-bit Int: read amount instead",
                self.amount, self.currency
            ))
            .into()
        })
    }
}

impl MoneyGql {
    /// An amount read back from the shop's own data, whose currency was checked when it was
    /// written (`Money::new`); one this build does not know is a fault of the data, `INTERNAL`.
    pub fn new(minor: i64, currency: &str) -> async_graphql::Result<Self> {
        let code = crate::graphql::saga::known(currency, CurrencyCode::parse, "currency")?;
        Ok(MoneyGql {
            amount: decimal(minor, currency),
            amount_minor: minor,
            currency_code: code,
            currency: currency.to_string(),
        })
    }
}

impl TryFrom<&Money> for MoneyGql {
    type Error = async_graphql::Error;

    fn try_from(m: &Money) -> async_graphql::Result<Self> {
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
    /// A refund was asked for and is running (`requestRefund`); it ends `REFUNDED`, or
    /// `CONFIRMED` again when the payment provider refuses it.
    Refunding,
    /// The payment was given back and the units returned to stock.
    Refunded,
}
