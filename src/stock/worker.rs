//! The stock worker: reserves and releases stock for orders.
//!
//! Idempotent twice over: the inbox drops a redelivered message, and the reservation row keyed by
//! order id makes a retried command (new message id, same order) return the first outcome.

use sqlx::{PgPool, Postgres, Row, Transaction};
use tracing::info;

use crate::error::AppError;
use crate::postgres::{inbox, outbox};
use crate::saga::messages::{Body, Command, Envelope, Reply, ReplyKind, StockLine};

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
        let Body::Command(command) = &envelope.body else {
            return Ok(true);
        };
        let mut tx = self.pool.begin().await?;
        if !inbox::claim(&mut tx, CONSUMER, envelope.message_id).await? {
            tx.commit().await?;
            return Ok(false);
        }
        let reply = match command {
            Command::ReserveStock { lines } => reserve(&mut tx, &envelope, lines).await?,
            Command::ReleaseStock => release(&mut tx, &envelope).await?,
            other => return Err(AppError::Internal(format!("stock worker got {:?}", other.kind()))),
        };
        outbox::enqueue(&mut tx, &envelope.reply(reply)).await?;
        tx.commit().await?;
        Ok(true)
    }
}

fn reply(kind: ReplyKind, reason: Option<String>) -> Reply {
    Reply { kind, reason }
}

async fn existing(
    tx: &mut Transaction<'_, Postgres>,
    order_id: uuid::Uuid,
) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
    let row = sqlx::query("SELECT status, reason FROM stock_reservations WHERE order_id = $1 FOR UPDATE")
        .bind(order_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(|r| (r.get("status"), r.get("reason"))))
}

async fn reserve(
    tx: &mut Transaction<'_, Postgres>,
    env: &Envelope,
    lines: &[StockLine],
) -> Result<Reply, AppError> {
    let inserted = sqlx::query(
        "INSERT INTO stock_reservations (order_id, status) VALUES ($1, 'RESERVED') ON CONFLICT DO NOTHING",
    )
    .bind(env.order_id)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        // A retry, or a release that came first: answer with what was decided then.
        return Ok(match existing(tx, env.order_id).await? {
            Some((s, _)) if s == "RESERVED" => reply(ReplyKind::StockReserved, None),
            Some((s, reason)) if s == "REJECTED" => reply(ReplyKind::StockRejected, reason),
            _ => reply(ReplyKind::StockRejected, Some("order was cancelled".into())),
        });
    }

    // Lock stock rows in sku order so concurrent reservations cannot deadlock.
    let mut lines = lines.to_vec();
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    let mut short = None;
    {
        let mut sp = sqlx::Acquire::begin(&mut **tx).await?;
        for line in &lines {
            let updated =
                sqlx::query("UPDATE stock SET available = available - $2 WHERE sku = $1 AND available >= $2")
                    .bind(&line.sku)
                    .bind(line.quantity)
                    .execute(&mut *sp)
                    .await?
                    .rows_affected();
            if updated == 0 {
                short = Some(line.sku.clone());
                break;
            }
            sqlx::query("INSERT INTO stock_reservation_lines (order_id, sku, quantity) VALUES ($1, $2, $3)")
                .bind(env.order_id)
                .bind(&line.sku)
                .bind(line.quantity)
                .execute(&mut *sp)
                .await?;
        }
        if short.is_some() {
            sp.rollback().await?;
        } else {
            sp.commit().await?;
        }
    }
    Ok(match short {
        None => {
            info!("stock reserved");
            reply(ReplyKind::StockReserved, None)
        }
        Some(sku) => {
            let reason = format!("insufficient stock for {sku}");
            sqlx::query("UPDATE stock_reservations SET status = 'REJECTED', reason = $2, updated_at = now() WHERE order_id = $1")
                .bind(env.order_id)
                .bind(&reason)
                .execute(&mut **tx)
                .await?;
            info!(%reason, "stock rejected");
            reply(ReplyKind::StockRejected, Some(reason))
        }
    })
}

async fn release(tx: &mut Transaction<'_, Postgres>, env: &Envelope) -> Result<Reply, AppError> {
    let tombstone = sqlx::query(
        "INSERT INTO stock_reservations (order_id, status, reason) VALUES ($1, 'RELEASED', 'released before reserved') ON CONFLICT DO NOTHING",
    )
    .bind(env.order_id)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if !tombstone {
        if let Some((status, _)) = existing(tx, env.order_id).await? {
            if status == "RESERVED" {
                sqlx::query(
                    "UPDATE stock s SET available = s.available + l.quantity
                     FROM stock_reservation_lines l WHERE l.order_id = $1 AND l.sku = s.sku",
                )
                .bind(env.order_id)
                .execute(&mut **tx)
                .await?;
                sqlx::query("UPDATE stock_reservations SET status = 'RELEASED', updated_at = now() WHERE order_id = $1")
                    .bind(env.order_id)
                    .execute(&mut **tx)
                    .await?;
                info!("stock released");
            }
        }
    }
    Ok(reply(ReplyKind::StockReleased, None))
}
