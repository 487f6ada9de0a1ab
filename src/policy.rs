//! The cleaning rule (spec section 6) and the tip-shrinking heuristic.
//!
//! Pure functions of a segment's counts, shared by the concurrent
//! accountant and the reference model.

use crate::config::{Config, Mode};

/// A segment with fewer live pages than `MIN_ITEMS_PER_SEGMENT × 100 / t`
/// is drained whatever its live share.
pub const MIN_ITEMS_PER_SEGMENT: u64 = 4;

/// The skewed threshold `t_i` (percent) of segment `index` out of `n`:
/// `clamp(threshold + skew × (100 − 100·i/n) / 100, 1, 99)`, with `n = 0`
/// counting as `i/n = 50%`. Lower offsets get higher thresholds, so data
/// moves toward the start of the file.
///
/// ```
/// use segment_accountant::{policy::threshold_at, Config};
/// let c = Config::default(); // threshold 40, skew 10
/// assert_eq!(threshold_at(&c, 0, 10), 50);
/// assert_eq!(threshold_at(&c, 5, 10), 45);
/// assert_eq!(threshold_at(&c, 9, 10), 41);
/// assert_eq!(threshold_at(&c, 0, 0), 45);
/// ```
pub fn threshold_at(config: &Config, index: u64, n: u64) -> u64 {
    let position = (index * 100).checked_div(n).unwrap_or(50).min(100);
    let t = config.cleanup_threshold as u64 + config.skew as u64 * (100 - position) / 100;
    t.clamp(1, 99)
}

/// Whether a sealed segment with `present` live pages and `removed`
/// replaced pages should be drained (spec section 6). Never in
/// [`Mode::Linear`].
///
/// ```
/// use segment_accountant::{policy::drainable, Config};
/// let c = Config::default();
/// // Live share 30% at the top of the file (threshold 40): drained.
/// assert!(drainable(&c, 9, 10, 30, 70));
/// // Live share 60% with many pages: kept.
/// assert!(!drainable(&c, 9, 10, 60, 40));
/// // Fewer than 4 × 100 / 41 = 9 live pages: drained.
/// assert!(drainable(&c, 9, 10, 8, 0));
/// ```
pub fn drainable(config: &Config, index: u64, n: u64, present: u64, removed: u64) -> bool {
    if config.mode == Mode::Linear {
        return false;
    }
    let t = threshold_at(config, index, n);
    let total = present + removed;
    let low_share = total > 0 && present * 100 <= t * total;
    low_share || present < MIN_ITEMS_PER_SEGMENT * 100 / t
}

/// The tip-shrinking heuristic: when free segments make up at least the
/// cleanup threshold of `free + inactive` and more than 5 segments are
/// inactive, the highest-offset inactive segment is drained so the file can
/// shrink. `free` counts Free and Freeing segments below the tip.
pub fn should_drain_top(config: &Config, free: u64, inactive: u64) -> bool {
    config.mode == Mode::Gc
        && inactive > 5
        && free * 100 >= config.cleanup_threshold as u64 * (free + inactive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_clamped() {
        let c = Config::builder()
            .cleanup_threshold(99)
            .skew(100)
            .build()
            .unwrap();
        assert_eq!(threshold_at(&c, 0, 4), 99);
        let c = Config::builder()
            .cleanup_threshold(1)
            .skew(0)
            .build()
            .unwrap();
        assert_eq!(threshold_at(&c, 3, 4), 1);
        // i ≥ n (a segment at the tip while the tip moves) must not underflow.
        assert_eq!(threshold_at(&Config::default(), 12, 10), 40);
    }

    #[test]
    fn empty_segment_is_drainable() {
        assert!(drainable(&Config::default(), 0, 1, 0, 0));
    }

    #[test]
    fn linear_never_drains() {
        let c = Config::builder().mode(Mode::Linear).build().unwrap();
        assert!(!drainable(&c, 0, 1, 0, 10));
        assert!(!should_drain_top(&c, 10, 10));
    }

    #[test]
    fn top_heuristic() {
        let c = Config::default();
        assert!(!should_drain_top(&c, 100, 5));
        assert!(should_drain_top(&c, 4, 6));
        assert!(!should_drain_top(&c, 3, 6));
    }
}
