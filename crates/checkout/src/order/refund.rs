//! Asking for a refund: starts the refund saga of a confirmed order, in the transaction that
//! marks the order `REFUNDING`.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::service::{self, ORDER_COLUMNS};
use super::{Order, OrderStatus};
use crate::saga::store::{self, SagaRow};
use crate::saga::{machine, SagaDefinition, CHECKOUT};
use ecommerce_core::refusal::UserErrorCode;
use ecommerce_platform::error::{AppError, AppResult};

/// Who asks: the buyer (their own orders, within the window) or an operator (any order, any time).
#[derive(Debug, Clone, Copy)]
pub struct Requester {
    pub user_id: Uuid,
    pub operator: bool,
}

/// The longest refund reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// Checks the reason a refund is asked for with.
pub fn reason(raw: &str) -> Result<&str, AppError> {
    let reason = raw.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(AppError::refused(
            UserErrorCode::InvalidRefundReason,
            format!("reason must be 1 to {MAX_REASON_CHARS} characters"),
        ));
    }
    Ok(reason)
}

/// Whether `order` (in its current status) may be refunded by `who` now; the refusal if not.
/// Pure, so the rules are unit-tested.
pub fn check(
    order: &Order,
    who: Requester,
    window: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), AppError> {
    if !who.operator && order.user_id != who.user_id {
        // Someone else's order is as absent as one that never was.
        return Err(AppError::refused(UserErrorCode::OrderNotFound, "you have no order with this id"));
    }
    match order.status {
        OrderStatus::Confirmed => {}
        OrderStatus::Pending => {
            return Err(AppError::refused(
                UserErrorCode::OrderNotConfirmed,
                "the order is not confirmed yet: cancel it instead",
            ))
        }
        OrderStatus::Cancelled => {
            return Err(AppError::refused(UserErrorCode::OrderAlreadyCancelled, "the order is cancelled"))
        }
        // Found with a refund saga already; the caller answers with it.
        OrderStatus::Refunding | OrderStatus::Refunded => return Ok(()),
    }
    let age = (now - order.created_at).to_std().unwrap_or_default();
    if !who.operator && age > window {
        return Err(AppError::refused(
            UserErrorCode::RefundWindowClosed,
            format!("orders can be refunded within {} days of being placed", window.as_secs() / 86_400),
        ));
    }
    Ok(())
}

/// Starts the refund saga of `order_id` with `reason` and returns the order (`REFUNDING`). Asked
/// again for the same order, it starts nothing and returns the order as it is: one refund per
/// order, whatever became of it (see the order's `refund` saga).
pub async fn request(
    pool: &PgPool,
    def: &SagaDefinition,
    order_id: Uuid,
    who: Requester,
    raw_reason: &str,
    window: Duration,
    trace_id: &str,
) -> AppResult<Order> {
    let reason = reason(raw_reason)?;
    let mut tx = pool.begin().await?;
    // The order row's lock serializes concurrent requests for one order.
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 FOR UPDATE");
    let row = sqlx::query(&sql).bind(order_id).fetch_optional(&mut *tx).await?;
    let Some(order) = row.as_ref().map(service::to_order).transpose()? else {
        return Err(AppError::refused(UserErrorCode::OrderNotFound, "you have no order with this id"));
    };
    check(&order, who, window, chrono::Utc::now())?;
    if store::lock_by_order(&mut tx, order_id, def.name).await?.is_some() {
        tx.commit().await?;
        return Ok(order);
    }
    let checkout = store::lock_by_order(&mut tx, order_id, CHECKOUT)
        .await?
        .ok_or_else(|| AppError::Internal("a confirmed order without its checkout saga".into()))?;
    let mut start = machine::start(def);
    let by = if who.operator && who.user_id != order.user_id { "operator" } else { "buyer" };
    start.events[0].1 = Some(format!("{by}: {reason}"));
    let saga = SagaRow {
        id: Uuid::now_v7(),
        definition: def.name.to_string(),
        order_id,
        user_id: order.user_id,
        state: start.state.clone(),
        // What the checkout charged and reserved is what the refund gives back.
        payload: checkout.payload.clone(),
        trace_id: trace_id.to_string(),
        event_count: 0,
        updated_at: chrono::Utc::now(),
    };
    store::insert(&mut tx, &saga).await?;
    sqlx::query("UPDATE orders SET status = 'REFUNDING', updated_at = now() WHERE id = $1")
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
    let rows = store::apply(&mut tx, &saga, &start).await?;
    tx.commit().await?;
    ecommerce_platform::postgres::outbox::committed(pool, rows);
    tracing::info!(%order_id, saga_id = %saga.id, requested_by = by, "refund requested");
    service::get(pool, order.user_id, order_id).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn order(status: OrderStatus, age_days: i64) -> Order {
        let created_at = Utc::now() - chrono::Duration::days(age_days);
        Order {
            id: Uuid::now_v7(),
            user_id: Uuid::from_u128(1),
            status,
            total_minor: 1000,
            currency: "USD".into(),
            idempotency_key: "k".into(),
            cancel_reason: None,
            created_at,
            updated_at: created_at,
            email: None,
            shipping_address: None,
        }
    }

    fn code(r: Result<(), AppError>) -> Option<UserErrorCode> {
        match r {
            Ok(()) => None,
            Err(AppError::Refused(r)) => Some(r.code),
            Err(e) => panic!("not a refusal: {e}"),
        }
    }

    #[test]
    fn buyers_refund_their_confirmed_orders_within_the_window_operators_any() {
        let window = Duration::from_secs(30 * 86_400);
        let buyer = Requester { user_id: Uuid::from_u128(1), operator: false };
        let stranger = Requester { user_id: Uuid::from_u128(2), operator: false };
        let operator = Requester { user_id: Uuid::from_u128(3), operator: true };
        let now = Utc::now();
        let check = |o: &Order, who| code(check(o, who, window, now));
        assert_eq!(check(&order(OrderStatus::Confirmed, 1), buyer), None);
        assert_eq!(check(&order(OrderStatus::Confirmed, 1), stranger), Some(UserErrorCode::OrderNotFound));
        assert_eq!(check(&order(OrderStatus::Confirmed, 31), buyer), Some(UserErrorCode::RefundWindowClosed));
        assert_eq!(check(&order(OrderStatus::Confirmed, 400), operator), None);
        assert_eq!(check(&order(OrderStatus::Pending, 0), buyer), Some(UserErrorCode::OrderNotConfirmed));
        assert_eq!(
            check(&order(OrderStatus::Cancelled, 0), operator),
            Some(UserErrorCode::OrderAlreadyCancelled)
        );
        // Asked again: answered with the refund that exists.
        assert_eq!(check(&order(OrderStatus::Refunded, 0), buyer), None);
    }

    #[test]
    fn a_reason_is_required_and_bounded() {
        assert_eq!(reason("  damaged in transit ").unwrap(), "damaged in transit");
        for bad in ["", "   ", &"x".repeat(501)] {
            assert!(
                matches!(reason(bad), Err(AppError::Refused(r)) if r.code == UserErrorCode::InvalidRefundReason)
            );
        }
        assert!(reason(&"é".repeat(500)).is_ok(), "characters, not bytes");
    }
}
