//! The clock saga deadlines run on (the `saga_clock` table's store).
//!
//! A step's timeout says how long its worker may take to answer. While PostgreSQL is down no
//! worker can answer and no orchestrator can look, and while every orchestrator is stopped no
//! one looks: that time must not use up the step's attempts (it did, and a 90 s outage ended the
//! sagas in flight with STOCK_TIMEOUT once their workers had not caught up within the one
//! attempt left). So every timeout scan ticks this clock first, in the scan's transaction, and a
//! scan that finds the previous tick older than [`ScanClock::stops_after`] postpones every
//! deadline by the gap before it looks for expired ones.

use std::time::Duration;

use sqlx::{Postgres, Transaction};

/// When a gap between timeout scans counts as the clock having stopped.
#[derive(Debug, Clone, Copy)]
pub struct ScanClock {
    /// How often a scanner ticks when all is well.
    pub interval: Duration,
    /// A longer gap than this stops the clock for all of it but one interval.
    pub stops_after: Duration,
}

impl ScanClock {
    /// For scanners that tick every `interval`: gaps of up to eight intervals (at least 2 s, a
    /// slow scan on a busy machine) count in full.
    pub fn for_interval(interval: Duration) -> Self {
        Self { interval, stops_after: (interval * 8).max(Duration::from_secs(2)) }
    }

    /// How far to postpone deadlines when the previous tick was `gap` ago; `None` for a gap
    /// that counts.
    pub fn stopped_for(&self, gap: Duration) -> Option<Duration> {
        (gap > self.stops_after).then(|| gap - self.interval)
    }
}

/// Ticks the clock (locking its row until `tx` ends, so scanners tick one at a time) and
/// returns how long ago the previous tick was.
pub async fn tick(tx: &mut Transaction<'_, Postgres>) -> Result<Duration, sqlx::Error> {
    // In SET, `ticked_at` is the old value; RETURNING sees the new ones.
    let gap_ms: i64 = sqlx::query_scalar(
        "UPDATE saga_clock SET previous = ticked_at, ticked_at = now()
         RETURNING (EXTRACT(EPOCH FROM ticked_at - previous) * 1000)::bigint",
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(Duration::from_millis(gap_ms.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_gap_past_the_limit_stops_the_clock() {
        let clock = ScanClock::for_interval(Duration::from_millis(250));
        assert_eq!(clock.stops_after, Duration::from_secs(2));
        assert_eq!(clock.stopped_for(Duration::from_millis(250)), None);
        assert_eq!(clock.stopped_for(Duration::from_secs(2)), None);
        assert_eq!(clock.stopped_for(Duration::from_secs(90)), Some(Duration::from_millis(89_750)));
        // A slow interval stretches the limit with it.
        let slow = ScanClock::for_interval(Duration::from_secs(1));
        assert_eq!(slow.stops_after, Duration::from_secs(8));
        assert_eq!(slow.stopped_for(Duration::from_secs(5)), None);
    }
}
