//! Deliberate bugs for the loom models to catch (`--cfg seeded_bugs`,
//! test-only). Each is switched on at run time by setting the environment
//! variable `SEGMENT_ACCOUNTANT_SEEDED_BUG` to its name; without the cfg
//! none of this code exists.

/// A seeded bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bug {
    /// The combiner token is taken and released with Relaxed orderings
    /// instead of AcqRel: two combiners' accesses to the combiner state are
    /// no longer ordered.
    RelaxedCombinerToken,
    /// A freed segment lands in the free list at once, skipping the epoch
    /// deferral (breaks property B).
    SkipEpochDeferral,
    /// `next` claims a free segment with a load and a store of its word
    /// instead of a compare-and-swap (two threads can both win one
    /// segment).
    ClaimWithStore,
    /// `pause_rewriting` returns without waiting for in-flight reusers.
    PauseWithoutWaiting,
    /// A landing makes the segment's word Free before it sets its free
    /// bit: a claimer can see a claimable word whose bit is clear.
    FreeWordBeforeBit,
    /// The shrink vacates top segments after only *reading* their words
    /// Free, storing Vacant without claiming them by compare-and-swap
    /// (a racing `next` activates a segment above the tip: property E).
    ShrinkWithoutClaim,
    /// `mark_replace` checks the segment word before taking its page's
    /// shard lock instead of under it: a seal that takes the shard's
    /// records and counts its pages in between misses the link and the
    /// records, which then wait in a sealed segment.
    ReplaceCheckOutsideLock,
    /// `mark_link` checks the segment word before taking the shard lock
    /// instead of under it: the lock no longer orders the check against
    /// the seal's count of the shard.
    CheckOutsideLock,
    /// The combiner lets sealed lsns leave the in-use map before it
    /// publishes the stabilized lsn: `next` can hand a sealed lsn out again.
    PublishAfterRemove,
    /// `next` checks the stabilized lsn before reserving its lsn in the
    /// in-use map: a seal between the two hands a sealed lsn out again.
    CheckBeforeReserve,
    /// `next` does not announce its registration to the combiner: a
    /// segment registered after a covering pass collected stays Active
    /// below the stabilized lsn.
    SkipAnnounce,
    /// The loom stand-in for crossbeam's queue orders every push before
    /// every later pop (a locked deque), more than crossbeam promises.
    QueueOrdersTooMuch,
    /// A claim that finds a word of the free tree empty clears the summary
    /// bit above it without reading the word again: a segment freed in
    /// between is left under a clear summary bit, invisible to claims.
    RetireWithoutRecheck,
    /// `mark_replace` looks at its old segments' states (clearing the flag
    /// of a Draining one) before it records the replacement, not after and
    /// under the new segment's lock: a drain that starts in between neither
    /// finds the record nor is seen, and `clean` suggests the page.
    FlagBeforeRecord,
    /// `stabilize`, with a goal above the combiner's handed-out bound,
    /// loads the bound before it reads the in-use set instead of after: a
    /// pass that collects, seals and removes a segment in between leaves
    /// neither showing it, and a bound the caller may give is refused.
    BoundBeforeSet,
    /// A drain start completes from the pending index as it stands, without
    /// first reading the records the in-use segments gained since its last
    /// refresh: a replacement recorded in between keeps its page flagged in
    /// the newly Draining segment, and `clean` suggests a replaced page.
    SettleWithoutRefresh,
    /// A drain start completes without a refresh at the end of its pass,
    /// without waiting for the seals of the segments in use at its move: a
    /// replacement recorded in one of them before the move keeps its page
    /// flagged in the newly Draining segment, and `clean` suggests a
    /// replaced page.
    DrainBeforeSealBound,
}

impl Bug {
    const ALL: [(Bug, &'static str); 17] = [
        (Bug::RelaxedCombinerToken, "relaxed-combiner-token"),
        (Bug::SkipEpochDeferral, "skip-epoch-deferral"),
        (Bug::ClaimWithStore, "claim-with-store"),
        (Bug::PauseWithoutWaiting, "pause-without-waiting"),
        (Bug::ShrinkWithoutClaim, "shrink-without-claim"),
        (Bug::FreeWordBeforeBit, "free-word-before-bit"),
        (Bug::ReplaceCheckOutsideLock, "replace-check-outside-lock"),
        (Bug::CheckOutsideLock, "check-outside-lock"),
        (Bug::PublishAfterRemove, "publish-after-remove"),
        (Bug::CheckBeforeReserve, "check-before-reserve"),
        (Bug::SkipAnnounce, "skip-announce"),
        (Bug::QueueOrdersTooMuch, "queue-orders-too-much"),
        (Bug::RetireWithoutRecheck, "retire-without-recheck"),
        (Bug::FlagBeforeRecord, "flag-before-record"),
        (Bug::SettleWithoutRefresh, "settle-without-refresh"),
        (Bug::DrainBeforeSealBound, "drain-before-seal-bound"),
        (Bug::BoundBeforeSet, "bound-before-set"),
    ];
}

/// Whether `bug` is switched on for this process.
pub(crate) fn active(bug: Bug) -> bool {
    static CHOSEN: std::sync::OnceLock<Option<Bug>> = std::sync::OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| {
        let name = std::env::var("SEGMENT_ACCOUNTANT_SEEDED_BUG").ok()?;
        let found = Bug::ALL.iter().find(|(_, n)| *n == name).map(|(b, _)| *b);
        assert!(found.is_some(), "unknown seeded bug {name:?}");
        found
    });
    *chosen == Some(bug)
}
