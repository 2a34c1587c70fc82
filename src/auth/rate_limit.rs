//! Fixed-window attempt counters in PostgreSQL, so every API instance shares one budget per key.
//!
//! One upsert per attempt: the row's window restarts when it has passed, otherwise its count goes
//! up. An attempt over the limit is refused with the seconds until the window ends.
//!
//! Kept by hand: the rate-limiting crates (governor, tower_governor) count in one process's
//! memory, so each API replica would grant the full budget; this one is shared through the
//! database the replicas already have.

use std::time::Duration;

use sqlx::{PgPool, Row};

use ecommerce_platform::error::AppError;

/// What a counter says about one more attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Refused { retry_after_secs: u64 },
}

/// The rule itself, without the store: `hits` attempts so far in this window (this one included).
pub fn judge(hits: i64, limit: u32, remaining: Duration) -> Verdict {
    if hits <= i64::from(limit) {
        Verdict::Allowed
    } else {
        // Round up: "try again in 0 s" would invite an immediate retry that is refused again.
        Verdict::Refused { retry_after_secs: remaining.as_secs_f64().ceil().max(1.0) as u64 }
    }
}

/// Counts one attempt against `key`; refuses it with `TooManyRequests` when over `limit`.
pub async fn hit(pool: &PgPool, key: &str, limit: u32, window: Duration) -> Result<(), AppError> {
    let row = sqlx::query(
        "INSERT INTO rate_limits AS r (key, window_start, hits) VALUES ($1, now(), 1)
         ON CONFLICT (key) DO UPDATE SET
           window_start = CASE WHEN r.window_start + $2 * interval '1 millisecond' <= now()
                               THEN now() ELSE r.window_start END,
           hits = CASE WHEN r.window_start + $2 * interval '1 millisecond' <= now()
                       THEN 1 ELSE r.hits + 1 END
         RETURNING hits::bigint AS hits,
           GREATEST(0, EXTRACT(EPOCH FROM (window_start + $2 * interval '1 millisecond' - now())))::float8
             AS remaining",
    )
    .bind(key)
    .bind(window.as_millis() as f64)
    .fetch_one(pool)
    .await?;
    let remaining = Duration::from_secs_f64(row.get::<f64, _>("remaining"));
    match judge(row.get("hits"), limit, remaining) {
        Verdict::Allowed => Ok(()),
        Verdict::Refused { retry_after_secs } => {
            tracing::warn!(key, "rate limit reached");
            Err(AppError::TooManyRequests { retry_after_secs })
        }
    }
}

/// Forgets windows that ended long ago (called now and then; the table holds one row per key).
pub async fn prune(pool: &PgPool, window: Duration) -> Result<u64, sqlx::Error> {
    let done =
        sqlx::query("DELETE FROM rate_limits WHERE window_start + $1 * interval '1 millisecond' < now()")
            .bind(window.as_millis() as f64)
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_up_to_the_limit_then_refuses_with_a_positive_wait() {
        let w = Duration::from_millis(2_500);
        assert_eq!(judge(1, 3, w), Verdict::Allowed);
        assert_eq!(judge(3, 3, w), Verdict::Allowed);
        assert_eq!(judge(4, 3, w), Verdict::Refused { retry_after_secs: 3 });
        assert_eq!(judge(4, 3, Duration::ZERO), Verdict::Refused { retry_after_secs: 1 });
        assert_eq!(judge(1, 0, w), Verdict::Refused { retry_after_secs: 3 }, "a zero limit refuses all");
    }
}
