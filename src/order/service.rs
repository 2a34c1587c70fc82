//! Place, cancel and read orders.

use sqlx::{PgExecutor, PgPool, Row};
use uuid::Uuid;

use super::{Order, OrderLine, OrderStatus};
use crate::domain::{IdempotencyKey, Money, PaymentToken};
use crate::error::{AppError, AppResult};
use crate::mongo::{carts, catalog, Mongo};
use crate::saga::machine;
use crate::saga::messages::StockLine;
use crate::saga::orchestrator;
use crate::saga::store::{self, SagaPayload, SagaRow};
use crate::saga::SagaDefinition;

const ORDER_COLUMNS: &str =
    "id, user_id, status, total_minor, currency, idempotency_key, cancel_reason, created_at, updated_at";

fn to_order(r: &sqlx::postgres::PgRow) -> Result<Order, sqlx::Error> {
    let status: String = r.try_get("status")?;
    Ok(Order {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        status: OrderStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("order status {status}").into()))?,
        total_minor: r.try_get("total_minor")?,
        currency: r.try_get("currency")?,
        idempotency_key: r.try_get("idempotency_key")?,
        cancel_reason: r.try_get("cancel_reason")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// The order, if it exists and belongs to `user_id`. Someone else's order is reported as not
/// found, so ids cannot be probed.
pub async fn get<'e>(db: impl PgExecutor<'e>, user_id: Uuid, order_id: Uuid) -> AppResult<Order> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND user_id = $2");
    let row = sqlx::query(&sql).bind(order_id).bind(user_id).fetch_optional(db).await?;
    row.as_ref().map(to_order).transpose()?.ok_or(AppError::NotFound("order"))
}

pub async fn list(pool: &PgPool, user_id: Uuid, limit: i64) -> AppResult<Vec<Order>> {
    let sql =
        format!("SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT $2");
    let rows = sqlx::query(&sql).bind(user_id).bind(limit).fetch_all(pool).await?;
    Ok(rows.iter().map(to_order).collect::<Result<_, _>>()?)
}

pub async fn lines(pool: &PgPool, order_id: Uuid) -> AppResult<Vec<OrderLine>> {
    let rows = sqlx::query(
        "SELECT sku, quantity, unit_price_minor FROM order_lines WHERE order_id = $1 ORDER BY line_no",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| OrderLine {
            sku: r.get("sku"),
            quantity: r.get("quantity"),
            unit_price_minor: r.get("unit_price_minor"),
        })
        .collect())
}

async fn by_key<'e>(
    db: impl PgExecutor<'e>,
    user_id: Uuid,
    key: &IdempotencyKey,
) -> AppResult<Option<Order>> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND idempotency_key = $2");
    let row = sqlx::query(&sql).bind(user_id).bind(key.as_str()).fetch_optional(db).await?;
    Ok(row.as_ref().map(to_order).transpose()?)
}

/// Turns the user's cart into an order and starts its saga, in one transaction. Repeating the same
/// idempotency key returns the order the first call created.
pub async fn place(
    pool: &PgPool,
    mongo: &Mongo,
    def: &SagaDefinition,
    user_id: Uuid,
    key: &str,
    payment_token: &str,
    trace_id: &str,
) -> AppResult<Order> {
    let key = IdempotencyKey::parse(key)?;
    let token = PaymentToken::parse(payment_token)?;
    let cart = carts::load(mongo, user_id).await?;
    if cart.items.is_empty() {
        // Repeating a placement finds the cart emptied by the first one: answer with its order.
        return by_key(pool, user_id, &key).await?.ok_or_else(|| AppError::bad_input("the cart is empty"));
    }
    let skus: Vec<String> = cart.items.iter().map(|i| i.sku.clone()).collect();
    let products = catalog::by_skus(mongo, &skus).await?;
    let mut total: Option<Money> = None;
    let mut lines = Vec::with_capacity(cart.items.len());
    for item in &cart.items {
        let product = products
            .iter()
            .find(|p| p.sku == item.sku)
            .ok_or_else(|| AppError::bad_input(format!("{} is no longer sold", item.sku)))?;
        let line_total =
            product.price.times(item.quantity).ok_or_else(|| AppError::bad_input("order total too large"))?;
        total = Some(match total {
            None => line_total,
            Some(t) => {
                t.checked_add(&line_total).ok_or_else(|| AppError::bad_input("cart mixes currencies"))?
            }
        });
        lines.push((item.sku.clone(), item.quantity, product.price.minor()));
    }
    let total = total.expect("non-empty cart");

    let Some(order) = create(pool, def, user_id, &key, &token, &lines, &total, trace_id).await? else {
        // An order with this key exists already (a repeated request, or a concurrent one that won).
        return by_key(pool, user_id, &key).await?.ok_or(AppError::NotFound("order"));
    };
    let order_id = order.id;
    // The ordered units leave the cart now, so the next order cannot include them again; a
    // cancelled order puts them back (cart worker). Should this fail (or the process die here),
    // the cart worker takes them out when the order is confirmed.
    let ordered: Vec<(String, i32)> = lines.iter().map(|(sku, q, _)| (sku.clone(), *q)).collect();
    if let Err(e) = carts::take_order(mongo, user_id, order_id, &ordered, Some(cart)).await {
        tracing::warn!(%order_id, error = %e, "ordered items not taken out of the cart yet");
    }
    Ok(order)
}

/// Writes an order with `lines` (sku, quantity, unit price), its saga and the saga's first command,
/// in one transaction, and returns the order. `None` when the user already has an order with this
/// key.
#[allow(clippy::too_many_arguments)]
pub async fn create(
    pool: &PgPool,
    def: &SagaDefinition,
    user_id: Uuid,
    key: &IdempotencyKey,
    token: &PaymentToken,
    lines: &[(String, i32, i64)],
    total: &Money,
    trace_id: &str,
) -> AppResult<Option<Order>> {
    let order_id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    let sql = format!(
        "INSERT INTO orders (id, user_id, status, total_minor, currency, idempotency_key)
         VALUES ($1, $2, 'PENDING', $3, $4, $5) ON CONFLICT ON CONSTRAINT orders_user_idempotency_key DO NOTHING
         RETURNING {ORDER_COLUMNS}"
    );
    let inserted = sqlx::query(&sql)
        .bind(order_id)
        .bind(user_id)
        .bind(total.minor())
        .bind(total.currency())
        .bind(key.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = inserted else {
        tx.rollback().await?;
        return Ok(None);
    };
    let order = to_order(&row)?;
    let skus: Vec<&str> = lines.iter().map(|(sku, ..)| sku.as_str()).collect();
    let quantities: Vec<i32> = lines.iter().map(|(_, q, _)| *q).collect();
    let prices: Vec<i64> = lines.iter().map(|(.., p)| *p).collect();
    sqlx::query(
        "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor)
         SELECT $1, n - 1, sku, q, p FROM unnest($2::text[], $3::int[], $4::bigint[]) WITH ORDINALITY AS l(sku, q, p, n)",
    )
    .bind(order_id)
    .bind(&skus)
    .bind(&quantities)
    .bind(&prices)
    .execute(&mut *tx)
    .await?;
    let start = machine::start(def);
    let saga = SagaRow {
        id: Uuid::now_v7(),
        order_id,
        user_id,
        state: start.state.clone(),
        payload: SagaPayload {
            lines: lines.iter().map(|(sku, q, _)| StockLine { sku: sku.clone(), quantity: *q }).collect(),
            amount_minor: total.minor(),
            currency: total.currency().to_string(),
            payment_token: token.as_str().to_string(),
        },
        trace_id: trace_id.to_string(),
        event_count: 0,
        updated_at: chrono::Utc::now(),
    };
    store::insert(&mut tx, &saga, def.name).await?;
    let rows = store::apply(&mut tx, &saga, &start).await?;
    tx.commit().await?;
    crate::postgres::outbox::committed(pool, rows);
    tracing::info!(%order_id, saga_id = %saga.id, "order placed");
    Ok(Some(order))
}

/// Cancels an order whose saga has not finished; compensation runs in the background.
pub async fn cancel(pool: &PgPool, def: &SagaDefinition, user_id: Uuid, order_id: Uuid) -> AppResult<Order> {
    let mut tx = pool.begin().await?;
    let order = get(&mut *tx, user_id, order_id).await?;
    let saga = store::lock_by_order(&mut tx, order.id).await?.ok_or(AppError::NotFound("order"))?;
    let mut rows = Vec::new();
    match saga.state.status {
        crate::saga::SagaStatus::Completed => {
            return Err(AppError::Conflict("the order is already confirmed".into()))
        }
        crate::saga::SagaStatus::Compensated => {
            return Err(AppError::Conflict("the order is already cancelled".into()))
        }
        crate::saga::SagaStatus::Compensating => {} // already cancelling: idempotent
        // A paused saga that was running compensates; one paused while compensating already is.
        crate::saga::SagaStatus::Running | crate::saga::SagaStatus::NeedsAttention => {
            rows = orchestrator::cancel(&mut tx, def, &saga).await?.unwrap_or_default();
        }
    }
    tx.commit().await?;
    crate::postgres::outbox::committed(pool, rows);
    get(pool, user_id, order_id).await
}
