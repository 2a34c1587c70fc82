//! Why a buyer's request was refused, when the buyer can fix it: the cart and order operations
//! return a [`Refusal`] with a closed [`UserErrorCode`], which the API hands back as a typed
//! `userErrors` entry instead of a top-level error.

/// What the buyer can fix about a cart or order request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumIter, strum::Display)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "graphql", derive(async_graphql::Enum))]
#[cfg_attr(feature = "graphql", graphql(name = "UserErrorCode"))]
pub enum UserErrorCode {
    /// The SKU is not one the catalog could hold (empty, too long, or with other characters).
    InvalidSku,
    /// The catalog has no product with this SKU.
    UnknownSku,
    /// A quantity outside 1 to 99.
    InvalidQuantity,
    /// The line would hold more than 99 units.
    LineQuantityTooLarge,
    /// The cart holds as many different products as it can.
    TooManyLines,
    /// The product is not in the cart.
    NotInCart,
    /// There is nothing to order.
    EmptyCart,
    /// The buyer has as many orders waiting for their checkout as allowed: wait for one to end.
    TooManyOpenOrders,
    /// A product in the cart left the catalog: take it out and order again.
    NoLongerSold,
    /// The total is larger than the shop accepts in one order.
    TotalTooLarge,
    /// The cart holds products priced in different currencies.
    MixedCurrencies,
    /// An idempotency key that is empty, too long or has other characters than `A-Z a-z 0-9 _ - : .`.
    InvalidIdempotencyKey,
    /// A payment token the payment provider could not have issued.
    InvalidPaymentToken,
    /// Not an id this API gave out for an order.
    InvalidOrderId,
    /// The buyer has no order with this id.
    OrderNotFound,
    /// The order is confirmed: it can no longer be cancelled.
    OrderAlreadyConfirmed,
    /// The order is cancelled already.
    OrderAlreadyCancelled,
    /// The order is not confirmed yet: cancel it instead of refunding it.
    OrderNotConfirmed,
    /// The order is older than the refund window (an operator can still refund it).
    RefundWindowClosed,
    /// A refund reason that is empty or longer than 500 characters.
    InvalidRefundReason,
}

/// A request the buyer can fix, and what to tell them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: UserErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: UserErrorCode, message: impl Into<String>) -> Self {
        Refusal { code, message: message.into() }
    }

    /// An input that failed to parse: the parser's message with the given code.
    pub fn invalid(code: UserErrorCode) -> impl FnOnce(crate::domain::ValidationError) -> Self {
        move |e| Refusal::new(code, e.0)
    }
}
