//! Placing an order: the buyer's cart (MongoDB) priced from the catalog becomes order lines, and
//! the checkout crate writes the order and starts its saga.

use ecommerce_checkout::order::service::{self, NewOrder};
use ecommerce_checkout::order::{Order, OrderLine};
use ecommerce_checkout::saga::SagaDefinition;
use ecommerce_core::address::ShippingAddress;
use ecommerce_core::domain::{Email, IdempotencyKey, Money, PaymentToken};
use ecommerce_core::refusal::{Refusal, UserErrorCode};
use ecommerce_platform::error::{AppError, AppResult};
use sqlx::PgPool;
use uuid::Uuid;

use crate::mongo::{carts, catalog, Mongo};

/// What a buyer asks when placing an order.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    pub user_id: Uuid,
    /// The client's idempotency key, as sent.
    pub key: &'a str,
    pub payment_token: &'a str,
    pub trace_id: &'a str,
    /// Who to reach about the order (checked by the caller: the buyer's, or the account's).
    pub email: Option<&'a Email>,
    /// Where it ships (checked by the caller).
    pub shipping_address: Option<&'a ShippingAddress>,
    /// Refused while the user has this many orders still being checked out.
    pub open_orders_below: u32,
}

/// Turns the user's cart into an order and starts its saga, in one transaction. Repeating the same
/// idempotency key returns the order the first call created. Refused while the user has
/// `open_orders_below` orders still being checked out.
pub async fn place(
    pool: &PgPool,
    mongo: &Mongo,
    def: &SagaDefinition,
    req: Placement<'_>,
) -> AppResult<Order> {
    let Placement { user_id, key, payment_token, trace_id, email, shipping_address, open_orders_below } = req;
    let key = IdempotencyKey::parse(key).map_err(Refusal::invalid(UserErrorCode::InvalidIdempotencyKey))?;
    let token =
        PaymentToken::parse(payment_token).map_err(Refusal::invalid(UserErrorCode::InvalidPaymentToken))?;
    let cart = carts::load(mongo, carts::CartKey::User(user_id)).await?;
    if cart.items.is_empty() {
        // Repeating a placement finds the cart emptied by the first one: answer with its order.
        return service::by_key(pool, user_id, &key)
            .await?
            .ok_or_else(|| AppError::refused(UserErrorCode::EmptyCart, "the cart is empty"));
    }
    let skus: Vec<String> = cart.items.iter().map(|i| i.sku.clone()).collect();
    let products = catalog::by_skus(mongo, &skus).await?;
    let mut total: Option<Money> = None;
    let mut lines = Vec::with_capacity(cart.items.len());
    for item in &cart.items {
        let product = products.iter().find(|p| p.sku == item.sku).ok_or_else(|| {
            AppError::refused(UserErrorCode::NoLongerSold, format!("{} is no longer sold", item.sku))
        })?;
        let line_total = product
            .price
            .times(item.quantity)
            .ok_or_else(|| AppError::refused(UserErrorCode::TotalTooLarge, "order total too large"))?;
        total = Some(match total {
            None => line_total,
            Some(t) => t
                .checked_add(&line_total)
                .ok_or_else(|| AppError::refused(UserErrorCode::MixedCurrencies, "cart mixes currencies"))?,
        });
        lines.push(OrderLine {
            sku: item.sku.clone(),
            quantity: item.quantity,
            unit_price_minor: product.price.minor(),
        });
    }
    let total = total.expect("non-empty cart");

    let new = NewOrder {
        user_id,
        key,
        token,
        lines,
        total,
        trace_id: trace_id.to_string(),
        email: email.cloned(),
        shipping_address: shipping_address.cloned(),
        open_orders_below: Some(open_orders_below),
    };
    let Some(order) = service::create(pool, def, &new).await? else {
        // An order with this key exists already (a repeated request, or a concurrent one that
        // won), or the buyer has as many orders waiting as allowed.
        return service::by_key(pool, user_id, &new.key).await?.ok_or_else(|| {
            AppError::refused(
                UserErrorCode::TooManyOpenOrders,
                format!(
                    "{open_orders_below} of your orders are still being checked out: wait for one to end"
                ),
            )
        });
    };
    let order_id = order.id;
    // The ordered units leave the cart now, so the next order cannot include them again; a
    // cancelled order puts them back (cart worker). Should this fail (or the process die here),
    // the cart worker takes them out when the order is confirmed.
    let ordered: Vec<(String, i32)> = new.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
    if let Err(e) = carts::take_order(mongo, user_id, order_id, &ordered, Some(cart)).await {
        tracing::warn!(%order_id, error = %e, "ordered items not taken out of the cart yet");
    }
    Ok(order)
}
