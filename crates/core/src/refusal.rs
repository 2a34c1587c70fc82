//! Why a buyer's request was refused, when the buyer can fix it: the account, cart and order operations
//! return a [`Refusal`] with a closed [`UserErrorCode`], which the API hands back as a typed
//! `userErrors` entry instead of a top-level error.

/// What the buyer can fix about an account, cart or order request.
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
    #[cfg_attr(
        feature = "graphql",
        graphql(
            deprecation = "Not answered any more: a malformed order id is ORDER_NOT_FOUND, like an absent one."
        )
    )]
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
    /// Not an e-mail address (an `@`, a dotted domain, no spaces, at most 254 characters).
    InvalidEmail,
    /// An account with this e-mail address exists: sign in instead.
    EmailTaken,
    /// A password shorter than 8 characters.
    PasswordTooShort,
    /// A password longer than 128 characters.
    PasswordTooLong,
    /// The e-mail address and password do not match an account (which of the two is wrong is not
    /// told, so that nobody learns who has an account).
    InvalidCredentials,
    /// No cart has this id for the caller: it is malformed, someone else's, or a guest cart
    /// that was merged into an account (use the account's cart).
    CartNotFound,
    /// A shipping address field that is missing, too long, or not of its form (see the field).
    InvalidAddress,
}

/// A request the buyer can fix, and what to tell them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: UserErrorCode,
    pub message: String,
    /// The input field at fault, as a path of GraphQL names (`["shippingAddress", "postalCode"]`),
    /// when the code alone does not tell (the API otherwise names the argument by the code).
    pub field: Option<Vec<String>>,
}

impl Refusal {
    pub fn new(code: UserErrorCode, message: impl Into<String>) -> Self {
        Refusal { code, message: message.into(), field: None }
    }

    /// The same refusal, naming the input field at fault.
    pub fn at(mut self, field: &[&str]) -> Self {
        self.field = Some(field.iter().map(|f| f.to_string()).collect());
        self
    }

    /// An input that failed to parse: the parser's message with the given code.
    pub fn invalid(code: UserErrorCode) -> impl FnOnce(crate::domain::ValidationError) -> Self {
        move |e| Refusal::new(code, e.0)
    }
}
