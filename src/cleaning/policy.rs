//! Cleaning policies: which sealed segments to drain, and in what order.
//!
//! A [`CleaningPolicy`] sees only facts the accountant keeps cheaply for
//! every sealed segment ([`SegmentFacts`]: live and removed pages, live
//! bytes, the segment lsn as its age, its index). It answers two
//! questions, both asked by the single combiner thread, never by writers:
//!
//! - [`drain_unprompted`](CleaningPolicy::drain_unprompted): drain this
//!   segment now, whatever the file's size? Asked whenever a sealed
//!   segment's counts change. The specification's rule ([`Spec`]) says yes
//!   below a skewed live threshold; the ranked policies never do.
//! - [`benefit`](CleaningPolicy::benefit): how much is draining this
//!   segment worth? Asked only under a space target
//!   ([`ConfigBuilder::space_target`](crate::ConfigBuilder::space_target)),
//!   when the file would exceed it: the accountant drains the best victims
//!   until the projected file fits.
//!
//! Victims are picked from an index of Inactive segments bucketed by live
//! bytes (256 buckets per segment size), each bucket ordered by lsn. A
//! benefit must therefore not grow with live bytes and not shrink with age
//! (older is never worse): then the best victim is always the oldest
//! segment of some bucket, and a pick looks at one candidate per non-empty
//! bucket, never at every segment. Segments in one bucket differ by less
//! than 1/256 of a segment in live bytes; the pick treats them as equal
//! and takes the oldest.
//!
//! | policy | drains unprompted | benefit |
//! |---|---|---|
//! | [`Spec`] (default) | live share ≤ skewed threshold | `1 − u` |
//! | [`Greedy`] | never | `1 − u` |
//! | [`Fifo`] | never | age |
//! | [`CostBenefit`] | never | `(1 − u) × age / (1 + u)` (LFS) |
//!
//! (`u` is the live share `live_bytes / segment_size`, `age` the distance
//! from the segment's lsn to the stable lsn.)

use std::fmt;
use std::sync::Arc;

use crate::cleaning::config::{Config, Mode};
use crate::types::Lsn;

/// What the accountant knows about one sealed segment.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct SegmentFacts {
    /// The segment's index (its offset over the segment size).
    pub index: u64,
    /// The segment's base lsn: lower is older.
    pub lsn: Lsn,
    /// Pages with a live fragment here.
    pub live_pages: u64,
    /// Pages whose fragments here were replaced since it was written.
    pub removed_pages: u64,
    /// Bytes of the live fragments.
    pub live_bytes: u64,
    /// The segment size in bytes.
    pub segment_size: u64,
}

impl SegmentFacts {
    /// Facts about a segment (for custom policies' tests and simulators).
    pub fn new(
        index: u64,
        lsn: Lsn,
        live_pages: u64,
        removed_pages: u64,
        live_bytes: u64,
        segment_size: u64,
    ) -> SegmentFacts {
        SegmentFacts {
            index,
            lsn,
            live_pages,
            removed_pages,
            live_bytes,
            segment_size,
        }
    }

    /// The live share `u` in `[0, 1]`.
    pub fn utilization(&self) -> f64 {
        (self.live_bytes as f64 / self.segment_size as f64).min(1.0)
    }

    /// The age at stable lsn `now`, in bytes of log (0 if not older).
    pub fn age(&self, now: Lsn) -> f64 {
        now.saturating_sub(self.lsn).max(0) as f64
    }
}

/// Decides which sealed segments to drain. See the [module docs](self) for
/// when each method is asked and the contract on `benefit`.
pub trait CleaningPolicy: Send + Sync + fmt::Debug {
    /// A short name (`spec`, `greedy`, ...).
    fn name(&self) -> &str;

    /// Whether to drain this Inactive segment at once, with the file tip at
    /// `tip` segments, whatever the space target. Default: never.
    fn drain_unprompted(&self, config: &Config, facts: &SegmentFacts, tip: u64) -> bool {
        let _ = (config, facts, tip);
        false
    }

    /// Whether the policy cleans on its own without a space target; if
    /// not, [`ConfigBuilder::build`](crate::ConfigBuilder::build) requires
    /// one. Default: no.
    fn cleans_without_target(&self) -> bool {
        false
    }

    /// The value of draining this segment at stable lsn `now`: higher is
    /// better. Must not increase with `live_bytes` nor decrease with age.
    fn benefit(&self, facts: &SegmentFacts, now: Lsn) -> f64;
}

/// The specification's threshold rule: drain a segment whose live share
/// is at most the skewed threshold, or that holds very few pages. Under a
/// space target its victims are ranked as [`Greedy`]'s.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spec;

impl CleaningPolicy for Spec {
    fn name(&self) -> &str {
        "spec"
    }

    fn drain_unprompted(&self, config: &Config, facts: &SegmentFacts, tip: u64) -> bool {
        drainable(
            config,
            facts.index,
            tip,
            facts.live_pages,
            facts.removed_pages,
        )
    }

    fn cleans_without_target(&self) -> bool {
        true
    }

    fn benefit(&self, facts: &SegmentFacts, _now: Lsn) -> f64 {
        1.0 - facts.utilization()
    }
}

/// Greedy: the segment with the fewest live bytes first.
#[derive(Clone, Copy, Debug, Default)]
pub struct Greedy;

impl CleaningPolicy for Greedy {
    fn name(&self) -> &str {
        "greedy"
    }

    fn benefit(&self, facts: &SegmentFacts, _now: Lsn) -> f64 {
        1.0 - facts.utilization()
    }
}

/// FIFO: the oldest sealed segment first, whatever it holds (the circular
/// log).
#[derive(Clone, Copy, Debug, Default)]
pub struct Fifo;

impl CleaningPolicy for Fifo {
    fn name(&self) -> &str {
        "fifo"
    }

    fn benefit(&self, facts: &SegmentFacts, now: Lsn) -> f64 {
        facts.age(now)
    }
}

/// Cost-benefit (Rosenblum and Ousterhout's LFS): maximise
/// `(1 − u) × age / (1 + u)`, so cold segments are cleaned at a higher
/// live share than hot ones.
#[derive(Clone, Copy, Debug, Default)]
pub struct CostBenefit;

impl CleaningPolicy for CostBenefit {
    fn name(&self) -> &str {
        "cost-benefit"
    }

    fn benefit(&self, facts: &SegmentFacts, now: Lsn) -> f64 {
        let u = facts.utilization();
        (1.0 - u) * facts.age(now) / (1.0 + u)
    }
}

/// The built-in policies' names, for command lines.
pub const NAMES: [&str; 4] = ["spec", "greedy", "fifo", "cost-benefit"];

/// The built-in policy called `name` (one of [`NAMES`]).
///
/// ```
/// let p = segment_accountant::policy::by_name("greedy").unwrap();
/// assert_eq!(p.name(), "greedy");
/// assert!(segment_accountant::policy::by_name("lru").is_none());
/// ```
pub fn by_name(name: &str) -> Option<Arc<dyn CleaningPolicy>> {
    Some(match name {
        "spec" => Arc::new(Spec),
        "greedy" => Arc::new(Greedy),
        "fifo" => Arc::new(Fifo),
        "cost-benefit" => Arc::new(CostBenefit),
        _ => return None,
    })
}

/// Number of live-byte buckets in the victim index.
pub const BUCKETS: usize = 256;

/// The victim-index bucket of a segment with `live_bytes` live.
pub fn bucket(live_bytes: u64, segment_size: u64) -> usize {
    ((live_bytes as u128 * BUCKETS as u128 / segment_size as u128) as usize).min(BUCKETS - 1)
}

/// Chooses among the candidates (the oldest segment of each non-empty
/// bucket, in ascending bucket order): the highest benefit, the lowest
/// bucket on ties. The accountant's index and the reference model share
/// this rule, so they pick the same victim.
pub fn choose(
    policy: &dyn CleaningPolicy,
    now: Lsn,
    candidates: impl IntoIterator<Item = SegmentFacts>,
) -> Option<SegmentFacts> {
    let mut best: Option<(f64, SegmentFacts)> = None;
    for facts in candidates {
        let value = policy.benefit(&facts, now);
        if best.is_none_or(|(b, _)| value > b) {
            best = Some((value, facts));
        }
    }
    best.map(|(_, facts)| facts)
}

/// Whether draining a victim with `live_bytes` live frees enough to be
/// worth its relocations: at least 1/64 of a segment. (Early on every
/// sealed segment is nearly full, and draining one would only move it.)
/// When the policy's pick is not worth it, the accountant falls back to
/// the emptiest Inactive segment (the oldest of the lowest bucket), and
/// stops if that is not worth it either.
pub fn worth_draining(live_bytes: u64, segment_size: u64) -> bool {
    live_bytes < segment_size - segment_size / 64
}

/// Whether the file, as it will be once the draining segments are
/// relocated, exceeds the space target: with `active` Active and
/// `inactive` Inactive segments, `unrelocated` bytes the Draining segments
/// still have to relocate (pages not yet replaced) and `sealed_live` live
/// bytes in sealed segments, whether
/// `(active + inactive + RESERVE) × segment_size + unrelocated`
/// exceeds `target × sealed_live`. One segment is kept in reserve so the
/// next `next` finds a free one.
pub fn over_target(
    target: f64,
    segment_size: u64,
    sealed_live: u64,
    active: u64,
    inactive: u64,
    unrelocated: u64,
) -> bool {
    let projected =
        (active + inactive + RESERVE_SEGMENTS) as f64 * segment_size as f64 + unrelocated as f64;
    projected > target * sealed_live as f64
}

/// Whether a target-driven drain of a victim with `victim_live` bytes to
/// relocate may start while `unrelocated` bytes still wait to be: the
/// relocations in flight are paced to the segments the pass just sealed
/// (`sealed`, at least one), so a burst of drains cannot outrun the writes
/// that relocate them (their pages would then be counted twice, in the
/// Draining segments and at the head, and drive still more drains). A
/// store with `heads` write heads may hold up to a segment of rewritten
/// pages at each head before telling the accountant (an open segment or a
/// buffer), so each head beyond the first adds a segment to the pace.
///
/// ```
/// use segment_accountant::policy::room_to_drain;
/// let ss = 1 << 20;
/// // Nothing in flight: any victim may start.
/// assert!(room_to_drain(0, ss, ss, 0, 1));
/// // One head, one segment sealed: at most a segment in flight.
/// assert!(!room_to_drain(ss / 2, ss * 3 / 4, ss, 1, 1));
/// // Two heads: one more segment's worth.
/// assert!(room_to_drain(ss / 2, ss * 3 / 4, ss, 1, 2));
/// ```
pub fn room_to_drain(
    unrelocated: u64,
    victim_live: u64,
    segment_size: u64,
    sealed: u64,
    heads: u8,
) -> bool {
    let budget = sealed.max(1) + u64::from(heads.max(1)) - 1;
    unrelocated == 0 || unrelocated + victim_live <= budget * segment_size
}

/// Free segments kept in reserve under a space target.
pub const RESERVE_SEGMENTS: u64 = 1;

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
/// replaced pages should be drained (the [`Spec`] rule). Never in
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

/// Under a space target, whether an idle store's file should come down by
/// draining its highest live segment: the pass sealed segments that
/// nothing was written into (`idle`: the store rolls its heads, or vouches
/// for its tail, without writing), the file up to that segment (`extent`
/// segments) exceeds `target × sealed_live`, and more than one free
/// segment per write head (`heads`) lies below it (`free`) for its pages
/// to move down into.
///
/// The projection that drives the space target ([`over_target`]) counts
/// live segments only: free holes below the tip are transient while the
/// store writes, since `next` reuses the lowest first. Once writes stop
/// they are not, and nothing else would ever fill them. Asking only in
/// idle passes is what keeps this rule from feeding on itself: under load
/// it never fires, so it cannot move full segments to fill holes the next
/// rolls would fill anyway (docs/cleaning.md, "The top drain under a
/// target").
///
/// ```
/// use segment_accountant::policy::compact_when_idle;
/// let ss = 1 << 20;
/// // 10 segments up to the top one, 4 of live data, a target of 1.5,
/// // 1 head, 5 free below the top.
/// assert!(compact_when_idle(true, 1.5, ss, 4 * ss, 10, 5, 1));
/// // Not while the store writes.
/// assert!(!compact_when_idle(false, 1.5, ss, 4 * ss, 10, 5, 1));
/// // Not within the target, and not without a hole to move into.
/// assert!(!compact_when_idle(true, 1.5, ss, 7 * ss, 10, 2, 1));
/// assert!(!compact_when_idle(true, 1.5, ss, 4 * ss, 10, 1, 1));
/// ```
pub fn compact_when_idle(
    idle: bool,
    target: f64,
    segment_size: u64,
    sealed_live: u64,
    extent: u64,
    free: u64,
    heads: u8,
) -> bool {
    idle && free > u64::from(heads.max(1))
        && extent as f64 * segment_size as f64 > target * sealed_live as f64
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
