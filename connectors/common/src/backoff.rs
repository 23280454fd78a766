//! Exponential backoff, one rule for everything that waits before trying again: the external sinks'
//! retries and the deploy supervisor's restarts.

use std::time::Duration;

/// The wait before attempt `attempt + 1` after `attempt` failures (from 1): `initial`, doubling each time,
/// never more than `max`.
pub fn delay(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_its_ceiling() {
        let ms = |a| delay(Duration::from_millis(100), Duration::from_secs(5), a).as_millis() as u64;
        assert_eq!((0..=8).map(ms).collect::<Vec<_>>(), [100, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(delay(Duration::from_secs(1), Duration::from_secs(30), u32::MAX), Duration::from_secs(30));
    }
}
