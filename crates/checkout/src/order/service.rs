//! Write, cancel and read orders.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool, Row};
use uuid::Uuid;

use super::{Order, OrderLine, OrderStatus};
use crate::page::Cursor;
use crate::saga::machine;
use crate::saga::messages::StockLine;
use crate::saga::orchestrator;
use crate::saga::store::{self, SagaPayload, SagaRow};
use crate::saga::SagaDefinition;
use ecommerce_core::address::ShippingAddress;
use ecommerce_core::domain::{Email, IdempotencyKey, Money, PaymentToken};
use ecommerce_core::refusal::UserErrorCode;
use ecommerce_platform::error::{AppError, AppResult};

pub(super) const ORDER_COLUMNS: &str =
    "id, user_id, status, total_minor, currency, idempotency_key, cancel_reason, created_at, updated_at, \
     email, shipping_address";

pub(super) fn to_order(r: &sqlx::postgres::PgRow) -> Result<Order, sqlx::Error> {
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
        email: r.try_get("email")?,
        shipping_address: r
            .try_get::<Option<sqlx::types::Json<ShippingAddress>>, _>("shipping_address")?
            .map(|a| a.0),
    })
}

/// The order, if it exists and belongs to `user_id`. Someone else's order is reported as not
/// found, so ids cannot be probed.
pub async fn get<'e>(db: impl PgExecutor<'e>, user_id: Uuid, order_id: Uuid) -> AppResult<Order> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND user_id = $2");
    let row = sqlx::query(&sql).bind(order_id).bind(user_id).fetch_optional(db).await?;
    row.as_ref().map(to_order).transpose()?.ok_or(AppError::NotFound("order"))
}

/// The user's orders among `order_ids`, in one query (others' and unknown ids are left out).
pub async fn get_many(pool: &PgPool, user_id: Uuid, order_ids: &[Uuid]) -> AppResult<Vec<Order>> {
    if order_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ANY($1) AND user_id = $2");
    let rows = sqlx::query(&sql).bind(order_ids).bind(user_id).fetch_all(pool).await?;
    Ok(rows.iter().map(to_order).collect::<Result<_, _>>()?)
}

pub async fn list(pool: &PgPool, user_id: Uuid, limit: i64) -> AppResult<Vec<Order>> {
    let sql =
        format!("SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT $2");
    let rows = sqlx::query(&sql).bind(user_id).bind(limit).fetch_all(pool).await?;
    Ok(rows.iter().map(to_order).collect::<Result<_, _>>()?)
}

/// A page of the user's orders, newest first, between the cursors (both excluded): the first
/// `limit` after `after`, or with `from_end` the last `limit` before `before`. One row more than
/// `limit` is read to tell whether the page has a neighbour; the bool says so.
pub async fn page(
    pool: &PgPool,
    user_id: Uuid,
    after: Option<Cursor>,
    before: Option<Cursor>,
    limit: i64,
    from_end: bool,
) -> AppResult<(Vec<Order>, bool)> {
    // Newest first: "after" a cursor is older than it.
    let order = if from_end { "created_at ASC, id ASC" } else { "created_at DESC, id DESC" };
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1
           AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
           AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5))
         ORDER BY {order} LIMIT $6"
    );
    let rows = sqlx::query(&sql)
        .bind(user_id)
        .bind(after.map(|c| c.created_at))
        .bind(after.map(|c| c.id))
        .bind(before.map(|c| c.created_at))
        .bind(before.map(|c| c.id))
        .bind(limit + 1)
        .fetch_all(pool)
        .await?;
    let mut orders: Vec<Order> = rows.iter().map(to_order).collect::<Result<_, _>>()?;
    let more = orders.len() as i64 > limit;
    orders.truncate(limit as usize);
    if from_end {
        orders.reverse();
    }
    Ok((orders, more))
}

/// The user's orders changed since `since`, oldest change first.
pub async fn changed_since(pool: &PgPool, user_id: Uuid, since: DateTime<Utc>) -> AppResult<Vec<Order>> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND updated_at > $2 ORDER BY updated_at, id"
    );
    let rows = sqlx::query(&sql).bind(user_id).bind(since).fetch_all(pool).await?;
    Ok(rows.iter().map(to_order).collect::<Result<_, _>>()?)
}

/// The state of every order of `buyers` changed within `window` of now (by the database's
/// clock), in one query: `(order, buyer, status, updated_at)`.
pub async fn versions_of_buyers(
    pool: &PgPool,
    buyers: &[Uuid],
    window: chrono::TimeDelta,
) -> Result<Vec<(Uuid, Uuid, OrderStatus, DateTime<Utc>)>, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, user_id, status, updated_at FROM orders
          WHERE user_id = ANY($1) AND updated_at > now() - make_interval(secs => $2)",
    )
    .bind(buyers)
    .bind(window.num_milliseconds() as f64 / 1000.0)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(id, user_id, status, at)| {
            let status = OrderStatus::parse(&status)
                .ok_or_else(|| sqlx::Error::Decode(format!("order status {status}").into()))?;
            Ok((id, user_id, status, at))
        })
        .collect()
}

/// How many orders the user has.
pub async fn count(pool: &PgPool, user_id: Uuid) -> AppResult<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM orders WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(pool)
        .await?)
}

/// The lines of `order_ids`, each order's in line order, in one query (a page of orders with
/// their lines).
pub async fn lines_of(pool: &PgPool, order_ids: &[Uuid]) -> Result<Vec<(Uuid, OrderLine)>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT order_id, sku, quantity, unit_price_minor FROM order_lines WHERE order_id = ANY($1)
         ORDER BY order_id, line_no",
        order_ids
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (r.order_id, OrderLine { sku: r.sku, quantity: r.quantity, unit_price_minor: r.unit_price_minor })
        })
        .collect())
}

/// The user's order placed with this idempotency key, if any.
pub async fn by_key<'e>(
    db: impl PgExecutor<'e>,
    user_id: Uuid,
    key: &IdempotencyKey,
) -> AppResult<Option<Order>> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND idempotency_key = $2");
    let row = sqlx::query(&sql).bind(user_id).bind(key.as_str()).fetch_optional(db).await?;
    Ok(row.as_ref().map(to_order).transpose()?)
}

/// What placing an order writes: the buyer, the request's idempotency key, how to pay, the lines
/// and their total, and the trace the saga carries.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub user_id: Uuid,
    pub key: IdempotencyKey,
    pub token: PaymentToken,
    pub lines: Vec<OrderLine>,
    pub total: Money,
    pub trace_id: String,
    /// Who to reach about the order, and where it ships (absent through the deprecated flat
    /// `placeOrder` arguments).
    pub email: Option<Email>,
    pub shipping_address: Option<ShippingAddress>,
    /// The user's orders waiting for their checkout (PENDING, placed within a day: found through
    /// the `(user_id, created_at)` index; older ones are an operator's) must be fewer than this
    /// for the order to be written; `None`: no bound.
    pub open_orders_below: Option<u32>,
}

/// Writes the order, its lines, its saga and the saga's first command in one transaction, and
/// returns the order. `None` when the user already has an order with this key, or as many
/// PENDING orders as `open_orders_below` allows (the caller tells which by looking the key up).
/// Placements racing each other may pass the bound by the number in flight at once, which the
/// per-user rate limit bounds in turn.
pub async fn create(pool: &PgPool, def: &SagaDefinition, new: &NewOrder) -> AppResult<Option<Order>> {
    let NewOrder { user_id, key, token, lines, total, trace_id, email, shipping_address, open_orders_below } =
        new;
    let user_id = *user_id;
    let order_id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    let sql = format!(
        "INSERT INTO orders (id, user_id, status, total_minor, currency, idempotency_key, email, shipping_address)
         SELECT $1, $2, 'PENDING', $3, $4, $5, $7, $8
          WHERE $6::int IS NULL
             OR (SELECT count(*) FROM orders
                  WHERE user_id = $2 AND status = 'PENDING' AND created_at > now() - interval '1 day') < $6::int
         ON CONFLICT ON CONSTRAINT orders_user_idempotency_key DO NOTHING
         RETURNING {ORDER_COLUMNS}"
    );
    let inserted = sqlx::query(&sql)
        .bind(order_id)
        .bind(user_id)
        .bind(total.minor())
        .bind(total.currency())
        .bind(key.as_str())
        .bind(open_orders_below.map(|n| n as i32))
        .bind(email.as_ref().map(Email::as_str))
        .bind(shipping_address.as_ref().map(sqlx::types::Json))
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = inserted else {
        tx.rollback().await?;
        return Ok(None);
    };
    let order = to_order(&row)?;
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    let quantities: Vec<i32> = lines.iter().map(|l| l.quantity).collect();
    let prices: Vec<i64> = lines.iter().map(|l| l.unit_price_minor).collect();
    sqlx::query!(
        "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor)
         SELECT $1, n - 1, sku, q, p FROM unnest($2::text[], $3::int[], $4::bigint[]) WITH ORDINALITY AS l(sku, q, p, n)",
        order_id,
        &skus as &[&str],
        &quantities,
        &prices,
    )
    .execute(&mut *tx)
    .await?;
    let start = machine::start(def);
    let saga = SagaRow {
        id: Uuid::now_v7(),
        definition: def.name.to_string(),
        order_id,
        user_id,
        state: start.state.clone(),
        payload: SagaPayload {
            lines: lines.iter().map(|l| StockLine { sku: l.sku.clone(), quantity: l.quantity }).collect(),
            amount_minor: total.minor(),
            currency: total.currency().to_string(),
            payment_token: token.as_str().to_string(),
        },
        trace_id: trace_id.to_string(),
        event_count: 0,
        updated_at: chrono::Utc::now(),
    };
    store::insert(&mut tx, &saga).await?;
    let rows = store::apply(&mut tx, &saga, &start).await?;
    tx.commit().await?;
    ecommerce_platform::postgres::outbox::committed(pool, rows);
    tracing::info!(%order_id, saga_id = %saga.id, "order placed");
    Ok(Some(order))
}

/// Cancels an order whose saga has not finished; compensation runs in the background.
pub async fn cancel(pool: &PgPool, def: &SagaDefinition, user_id: Uuid, order_id: Uuid) -> AppResult<Order> {
    let mut tx = pool.begin().await?;
    let order = get(&mut *tx, user_id, order_id).await?;
    let saga = store::lock_by_order(&mut tx, order.id, def.name).await?.ok_or(AppError::NotFound("order"))?;
    let mut rows = Vec::new();
    match saga.state.status {
        crate::saga::SagaStatus::Completed => {
            return Err(AppError::refused(
                UserErrorCode::OrderAlreadyConfirmed,
                "the order is already confirmed",
            ))
        }
        crate::saga::SagaStatus::Compensated => {
            return Err(AppError::refused(
                UserErrorCode::OrderAlreadyCancelled,
                "the order is already cancelled",
            ))
        }
        crate::saga::SagaStatus::Compensating => {} // already cancelling: idempotent
        // A paused saga that was running compensates; one paused while compensating already is.
        crate::saga::SagaStatus::Running | crate::saga::SagaStatus::NeedsAttention => {
            rows = orchestrator::cancel(&mut tx, def, &saga).await?.unwrap_or_default();
        }
    }
    tx.commit().await?;
    ecommerce_platform::postgres::outbox::committed(pool, rows);
    get(pool, user_id, order_id).await
}
