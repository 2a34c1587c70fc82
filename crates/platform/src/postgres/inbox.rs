//! Consumer-side deduplication: a handler claims a message id inside its own transaction, so the
//! effect and the record that it happened commit (or roll back) together.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{InboxRetention, RetentionConfig};
use crate::metrics::Metrics;

/// What `auto` retention adds to the broker's maximum message age: a copy published late (an
/// outbox row republished after a crash) and clocks that differ.
pub const MARGIN: Duration = Duration::from_secs(24 * 3600);

/// How long consumers keep inbox rows, from the setting and the broker's maximum message age;
/// `None`: for good.
pub fn keep_for(setting: InboxRetention, broker_max_age: Option<Duration>) -> Option<Duration> {
    match setting {
        InboxRetention::Off => None,
        InboxRetention::For(d) => Some(d),
        InboxRetention::Auto => broker_max_age.map(|age| age + MARGIN),
    }
}

/// Deletes `consumer`'s inbox rows of messages handled more than `older_than` ago, `batch` rows
/// per statement; returns how many. Message ids are UUIDv7 (their first 48 bits are the time
/// they were made, never after they were handled), so the rows are found by a range of the
/// primary key, without an index on `processed_at`.
pub async fn prune(
    pool: &PgPool,
    consumer: &str,
    older_than: Duration,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let cutoff = SystemTime::now().checked_sub(older_than).unwrap_or(UNIX_EPOCH);
    let ms = cutoff.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() & 0xFFFF_FFFF_FFFF;
    let below = Uuid::from_u128(ms << 80);
    super::delete_in_batches(batch, || async {
        let deleted = sqlx::query(
            "DELETE FROM inbox WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM inbox
                  WHERE consumer = $1 AND message_id < $2
                    AND processed_at < now() - make_interval(secs => $3)
                  LIMIT $4))",
        )
        .bind(consumer)
        .bind(below)
        .bind(older_than.as_secs_f64())
        .bind(batch)
        .execute(pool)
        .await?;
        Ok(deleted.rows_affected())
    })
    .await
}

/// Keeps `consumers`' inbox rows pruned every `config.interval`, for as long as `broker_max_age`
/// and the setting say, until `shutdown`.
pub async fn keep_pruned(
    pool: PgPool,
    consumers: Vec<String>,
    broker_max_age: Option<Duration>,
    config: RetentionConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let Some(keep) = keep_for(config.inbox, broker_max_age) else {
        tracing::info!(
            ?consumers,
            "inbox rows are kept for good (INBOX_RETENTION_HOURS, or a broker without a maximum message age)"
        );
        return;
    };
    metrics.inbox_retention(keep);
    tracing::info!(?consumers, keep_hours = keep.as_secs() / 3600, "inbox rows are pruned");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.interval) => {}
        }
        for consumer in &consumers {
            match prune(&pool, consumer, keep, config.batch).await {
                Ok(n) => metrics.retention_deleted("inbox", n),
                Err(e) => tracing::warn!(%consumer, error = %e, "pruning the inbox failed"),
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_rows_are_kept_while_the_broker_can_deliver_a_copy_and_a_day_more() {
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(keep_for(InboxRetention::Auto, Some(week)), Some(week + MARGIN));
        assert_eq!(keep_for(InboxRetention::Auto, None), None, "no bound at the broker: kept for good");
        assert_eq!(keep_for(InboxRetention::Off, Some(week)), None);
        let hour = Duration::from_secs(3600);
        assert_eq!(keep_for(InboxRetention::For(hour), None), Some(hour));
    }
}
