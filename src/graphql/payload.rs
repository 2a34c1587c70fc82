//! Mutation results a buyer's client can act on: the changed object, or `userErrors` saying
//! what the buyer can fix, each with a closed `code` and the input it concerns. Top-level errors
//! stay for what the buyer cannot fix (authentication, rate limits, internal failures).

use async_graphql::connection::{Edge, EmptyFields};
use async_graphql::SimpleObject;

use ecommerce_core::refusal::{Refusal, UserErrorCode};
use ecommerce_platform::error::AppError;

use super::cart::CartGql;
use super::order::OrderGql;

/// Something about the request the buyer can fix.
#[derive(SimpleObject, Debug)]
#[graphql(name = "UserError")]
pub struct UserErrorGql {
    /// What is wrong, from a closed set a client can switch on.
    pub code: UserErrorCode,
    /// The path to the argument at fault (`["quantity"]`); `null` when it concerns the request
    /// as a whole (an empty cart, say).
    pub field: Option<Vec<String>>,
    /// What to tell the buyer (English).
    pub message: String,
}

/// The argument a refusal concerns, by its code.
fn field_of(code: UserErrorCode) -> Option<&'static str> {
    use UserErrorCode::*;
    match code {
        InvalidSku | UnknownSku | NotInCart => Some("sku"),
        InvalidQuantity | LineQuantityTooLarge => Some("quantity"),
        InvalidIdempotencyKey => Some("idempotencyKey"),
        InvalidPaymentToken => Some("paymentToken"),
        InvalidOrderId
        | OrderNotFound
        | OrderAlreadyConfirmed
        | OrderAlreadyCancelled
        | OrderNotConfirmed
        | RefundWindowClosed => Some("orderId"),
        InvalidRefundReason => Some("reason"),
        InvalidEmail | EmailTaken => Some("email"),
        CartNotFound => Some("cartId"),
        // The refusal names the address field itself.
        InvalidAddress => Some("shippingAddress"),
        PasswordTooShort | PasswordTooLong => Some("password"),
        // Which of the two is wrong is not told.
        InvalidCredentials => None,
        TooManyLines | EmptyCart | TooManyOpenOrders | NoLongerSold | TotalTooLarge | MixedCurrencies => None,
    }
}

impl From<Refusal> for UserErrorGql {
    fn from(r: Refusal) -> Self {
        UserErrorGql {
            code: r.code,
            field: match r.field {
                Some(path) => Some(path),
                None => field_of(r.code).map(|f| vec![f.to_string()]),
            },
            message: r.message,
        }
    }
}

impl UserErrorGql {
    /// The same error for a mutation whose arguments sit in an input object: its `field` starts
    /// with that argument's name (`["input", "email"]`).
    pub fn within(mut self, argument: &str) -> Self {
        if let Some(path) = &mut self.field {
            path.insert(0, argument.to_string());
        }
        self
    }
}

/// Splits a service result: a refusal becomes `userErrors`, anything else stays an error.
pub fn split<T>(result: Result<T, AppError>) -> Result<(Option<T>, Vec<UserErrorGql>), AppError> {
    match result {
        Ok(v) => Ok((Some(v), Vec::new())),
        Err(AppError::Refused(r)) => Ok((None, vec![r.into()])),
        Err(e) => Err(e),
    }
}

/// What a cart mutation did.
#[derive(SimpleObject)]
pub struct CartPayload {
    /// The cart after the change, or as it is when the change was refused (see `userErrors`);
    /// `null` only when there is no cart: an unknown `cartId`, or a guest's `cartCreate` refused.
    pub cart: Option<CartGql>,
    /// Why the change was refused; empty when it was made.
    pub user_errors: Vec<UserErrorGql>,
}

/// An order as an edge of the `orders` connection.
pub type OrderEdge = Edge<String, OrderGql, EmptyFields>;

/// What an order mutation did.
#[derive(SimpleObject)]
pub struct OrderPayload {
    /// The order; `null` when the request was refused (see `userErrors`).
    pub order: Option<OrderGql>,
    /// `placeOrder` only: the new order as an edge of `orders`, with its cursor, for a client to
    /// put at the head of a cached `orders` list; `null` from the other mutations and on a refusal.
    pub order_edge: Option<OrderEdge>,
    /// `placeOrder` only: the buyer's cart after the ordered units left it (unchanged on a
    /// refusal), so a cached cart empties itself; `null` from the other mutations.
    pub cart: Option<CartGql>,
    /// Why the request was refused; empty when it was carried out.
    pub user_errors: Vec<UserErrorGql>,
}

impl OrderPayload {
    /// The order, or why nothing was done.
    pub fn of(order: Option<OrderGql>, user_errors: Vec<UserErrorGql>) -> Self {
        OrderPayload { order, order_edge: None, cart: None, user_errors }
    }

    /// Nothing was done, for these reasons.
    pub fn refused(user_errors: Vec<UserErrorGql>) -> Self {
        Self::of(None, user_errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    #[test]
    fn every_code_names_its_argument_or_none_on_purpose() {
        // A new code must be placed in `field_of` (the match is exhaustive); this pins the ones
        // that name an argument to arguments the mutations have.
        let args = [
            "sku",
            "quantity",
            "idempotencyKey",
            "paymentToken",
            "orderId",
            "reason",
            "email",
            "password",
            "shippingAddress",
            "cartId",
        ];
        for code in UserErrorCode::iter() {
            if let Some(f) = field_of(code) {
                assert!(args.contains(&f), "{code}: {f}");
            }
        }
    }

    #[test]
    fn only_refusals_become_user_errors() {
        let refused: Result<(), AppError> =
            Err(AppError::refused(UserErrorCode::EmptyCart, "the cart is empty"));
        let (v, errors) = split(refused).unwrap();
        assert!(v.is_none());
        assert_eq!(errors[0].code, UserErrorCode::EmptyCart);
        assert_eq!(errors[0].field, None);
        assert!(split::<()>(Err(AppError::Unauthenticated)).is_err());
    }
}
