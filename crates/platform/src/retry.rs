//! Waits between retries: exponential, capped, and jittered (backon's `ExponentialBuilder`), so
//! consumers and relays that failed together (a broker or database outage) do not all retry at
//! the same instants when it ends.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The wait before retry number `attempt` (1: the first): `min`, doubling each time up to `max`,
/// plus a random part of up to as much again.
pub fn delay(attempt: u32, min: Duration, max: Duration) -> Duration {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::delay;
    use std::time::Duration;

    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(10);

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_on_top() {
        for attempt in 1..=12u32 {
            let base = (MIN * 2u32.pow(attempt - 1)).min(MAX);
            for _ in 0..20 {
                let d = delay(attempt, MIN, MAX);
                assert!(
                    d >= base && d < base * 2,
                    "attempt {attempt}: {d:?} outside [{base:?}, {:?})",
                    base * 2
                );
            }
        }
        assert!(delay(0, MIN, MAX) >= MIN, "attempt 0 counts as the first");
    }

    #[test]
    fn two_instances_do_not_wait_alike() {
        let waits: std::collections::HashSet<Duration> = (0..50).map(|_| delay(3, MIN, MAX)).collect();
        assert!(waits.len() > 1, "{waits:?}");
    }
}
