//! Consumer-side deduplication: a handler claims a message id inside its own transaction, so the
//! effect and the record that it happened commit (or roll back) together.

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// Returns `false` when `consumer` already handled `message_id`: the caller must skip the effect.
pub async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    consumer: &str,
    message_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query!(
        "INSERT INTO inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        consumer,
        message_id,
    )
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Claims `message_ids` for `consumer` at once; returns the ids that were new (the caller does
/// their effect in the same transaction and skips the rest).
pub async fn claim_many(
    tx: &mut Transaction<'_, Postgres>,
    consumer: &str,
    message_ids: &[Uuid],
) -> Result<std::collections::HashSet<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO inbox (consumer, message_id) SELECT $1, unnest($2::uuid[])
         ON CONFLICT DO NOTHING RETURNING message_id",
        consumer,
        message_ids,
    )
    .fetch_all(&mut **tx)
    .await
    .map(|ids| ids.into_iter().collect())
}

/// Claims a batch's message ids in delivery order; returns, for each, whether it is new. An id
/// that appears twice in one batch (a redelivery racing its original) is new once.
pub async fn claim_each(
    tx: &mut Transaction<'_, Postgres>,
    consumer: &str,
    message_ids: &[Uuid],
) -> Result<Vec<bool>, sqlx::Error> {
    let fresh = claim_many(tx, consumer, message_ids).await?;
    let mut seen = std::collections::HashSet::new();
    Ok(message_ids.iter().map(|id| fresh.contains(id) && seen.insert(*id)).collect())
}
