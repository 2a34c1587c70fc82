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
    let r = sqlx::query("INSERT INTO inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(consumer)
        .bind(message_id)
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
    sqlx::query_scalar(
        "INSERT INTO inbox (consumer, message_id) SELECT $1, unnest($2::uuid[])
         ON CONFLICT DO NOTHING RETURNING message_id",
    )
    .bind(consumer)
    .bind(message_ids)
    .fetch_all(&mut **tx)
    .await
    .map(|ids| ids.into_iter().collect())
}
