//! The stock worker: reserves and releases stock for orders.
//!
//! Idempotent twice over: the inbox drops a redelivered message, and the reservation row keyed by
//! order id makes a retried command (new message id, same order) return the first outcome.

use sqlx::{PgPool, Postgres, Transaction};
use tracing::{info, Instrument};

use crate::saga::messages::{Body, Command, Envelope, Reply, ReplyKind, StockLine};
use ecommerce_platform::error::AppError;
use ecommerce_platform::postgres::{inbox, outbox};

pub const CONSUMER: &str = "stock-worker";

#[derive(Clone)]
pub struct StockWorker {
    pool: PgPool,
}

impl StockWorker {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Returns `false` when the message was a duplicate and nothing was done.
    pub async fn handle(&self, envelope: Envelope) -> Result<bool, AppError> {
        let span = tracing::Span::current();
        Ok(self.handle_batch(vec![(envelope, span)]).await?[0])
    }

    /// Handles `batch` in one transaction (all or nothing); returns, in order, whether each
    /// message was new. The stock rows every message touches are locked first, in SKU order, so
    /// batches of several workers wait for each other instead of deadlocking, and a popular SKU's
    /// row is locked once per batch rather than once per order.
    pub async fn handle_batch(&self, batch: Vec<(Envelope, tracing::Span)>) -> Result<Vec<bool>, AppError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<uuid::Uuid> = batch.iter().map(|(e, _)| e.message_id).collect();
        let new = inbox::claim_each(&mut tx, CONSUMER, &ids).await?;
        let todo: Vec<&(Envelope, tracing::Span)> =
            batch.iter().zip(&new).filter(|(_, n)| **n).map(|(b, _)| b).collect();
        lock_stock(&mut tx, todo.iter().map(|(e, _)| e)).await?;
        let mut replies = Vec::new();
        for (envelope, span) in todo {
            let Body::Command(command) = &envelope.body else { continue };
            let tx = &mut tx;
            let row = async move {
                let reply = match command {
                    Command::ReserveStock { lines } => reserve(tx, envelope, lines).await?,
                    Command::ReleaseStock => release(tx, envelope).await?,
                    other => return Err(AppError::Internal(format!("stock worker got {:?}", other.kind()))),
                };
                // In the message's span: the reply's trace context names it as the parent.
                Ok::<_, AppError>(outbox::enqueue(tx, &envelope.reply(reply)).await?)
            }
            .instrument(span.clone())
            .await?;
            replies.push(row);
        }
        tx.commit().await?;
        outbox::committed(&self.pool, replies);
        Ok(new)
    }
}

/// Locks the stock rows the commands in `envelopes` will change, in SKU order.
async fn lock_stock(
    tx: &mut Transaction<'_, Postgres>,
    envelopes: impl Iterator<Item = &Envelope>,
) -> Result<(), sqlx::Error> {
    let mut reserve = Vec::new();
    let mut release = Vec::new();
    for e in envelopes {
        match &e.body {
            Body::Command(Command::ReserveStock { lines }) => {
                reserve.extend(lines.iter().map(|l| l.sku.clone()))
            }
            Body::Command(Command::ReleaseStock) => release.push(e.order_id),
            _ => {}
        }
    }
    if reserve.is_empty() && release.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "SELECT 1 AS locked FROM stock WHERE sku = ANY($1)
            OR sku IN (SELECT sku FROM stock_reservation_lines WHERE order_id = ANY($2))
         ORDER BY sku FOR UPDATE",
        &reserve,
        &release,
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(())
}

fn reply(kind: ReplyKind, reason: Option<String>) -> Reply {
    Reply { kind, reason, command: None }
}

async fn existing(
    tx: &mut Transaction<'_, Postgres>,
    order_id: uuid::Uuid,
) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT status, reason FROM stock_reservations WHERE order_id = $1 FOR UPDATE",
        order_id
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|r| (r.status, r.reason)))
}

/// Reserves every line or none, in one statement: the reservation row (RESERVED, or REJECTED
/// naming the first SKU short of stock), the stock taken and the reservation's lines. The stock
/// rows are locked already ([`lock_stock`]), so what the statement reads of them stays true until
/// the commit. A reservation row that exists already (a retried command, or a release that came
/// first) is left as it is, and its outcome answered.
async fn reserve(
    tx: &mut Transaction<'_, Postgres>,
    env: &Envelope,
    lines: &[StockLine],
) -> Result<Reply, AppError> {
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    let quantities: Vec<i32> = lines.iter().map(|l| l.quantity).collect();
    let (inserted, short): (Option<String>, Option<String>) = sqlx::query_as(
        "WITH wanted AS (
              SELECT sku, sum(quantity)::int AS quantity
                FROM unnest($2::text[], $3::int[]) AS w(sku, quantity) GROUP BY sku),
          short AS (
              SELECT w.sku FROM wanted w LEFT JOIN stock s ON s.sku = w.sku
               WHERE s.available IS NULL OR s.available < w.quantity
               ORDER BY w.sku LIMIT 1),
          new AS (
              INSERT INTO stock_reservations (order_id, status, reason)
              SELECT $1, CASE WHEN s.sku IS NULL THEN 'RESERVED' ELSE 'REJECTED' END,
                     'insufficient stock for ' || s.sku
                FROM (SELECT (SELECT sku FROM short) AS sku) s
              ON CONFLICT DO NOTHING
              RETURNING status),
          taken AS (
              UPDATE stock s SET available = s.available - w.quantity FROM wanted w
               WHERE s.sku = w.sku AND EXISTS (SELECT 1 FROM new WHERE status = 'RESERVED')),
          lines AS (
              INSERT INTO stock_reservation_lines (order_id, sku, quantity)
              SELECT $1, w.sku, w.quantity FROM wanted w
               WHERE EXISTS (SELECT 1 FROM new WHERE status = 'RESERVED'))
         SELECT (SELECT status FROM new), (SELECT sku FROM short)",
    )
    .bind(env.order_id)
    .bind(&skus)
    .bind(&quantities)
    .fetch_one(&mut **tx)
    .await?;
    Ok(match (inserted.as_deref(), short) {
        (Some("RESERVED"), _) => {
            info!("stock reserved");
            reply(ReplyKind::StockReserved, None)
        }
        (Some(_), sku) => {
            let reason = format!("insufficient stock for {}", sku.unwrap_or_default());
            info!(%reason, "stock rejected");
            reply(ReplyKind::StockRejected, Some(reason))
        }
        // A retry, or a release that came first: answer with what was decided then.
        (None, _) => match existing(tx, env.order_id).await? {
            Some((s, _)) if s == "RESERVED" => reply(ReplyKind::StockReserved, None),
            Some((s, reason)) if s == "REJECTED" => reply(ReplyKind::StockRejected, reason),
            _ => reply(ReplyKind::StockRejected, Some("order was cancelled".into())),
        },
    })
}

async fn release(tx: &mut Transaction<'_, Postgres>, env: &Envelope) -> Result<Reply, AppError> {
    let tombstone = sqlx::query!(
        "INSERT INTO stock_reservations (order_id, status, reason) VALUES ($1, 'RELEASED', 'released before reserved') ON CONFLICT DO NOTHING",
        env.order_id,
    )
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if !tombstone {
        if let Some((status, _)) = existing(tx, env.order_id).await? {
            if status == "RESERVED" {
                sqlx::query!(
                    "UPDATE stock s SET available = s.available + l.quantity
                     FROM stock_reservation_lines l WHERE l.order_id = $1 AND l.sku = s.sku",
                    env.order_id,
                )
                .execute(&mut **tx)
                .await?;
                sqlx::query!(
                    "UPDATE stock_reservations SET status = 'RELEASED', updated_at = now() WHERE order_id = $1",
                    env.order_id,
                )
                .execute(&mut **tx)
                    .await?;
                info!("stock released");
            }
        }
    }
    Ok(reply(ReplyKind::StockReleased, None))
}
