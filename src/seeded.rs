//! Deliberate bugs for the loom models to catch (`--cfg seeded_bugs`,
//! test-only). Each is switched on at run time by setting the environment
//! variable `SEGMENT_ACCOUNTANT_SEEDED_BUG` to its name; with the cfg
//! unset none of this code exists.

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
    /// `next` claims a free segment with a load and a store instead of an
    /// atomic read-modify-write (two threads can both win one segment).
    ClaimWithStore,
    /// `pause_rewriting` returns without waiting for in-flight reusers.
    PauseWithoutWaiting,
    /// The shrink lowers the tip over top segments after only *reading*
    /// their free bits, without claiming them (breaks property E).
    ShrinkWithoutClaim,
}

impl Bug {
    const ALL: [(Bug, &'static str); 5] = [
        (Bug::RelaxedCombinerToken, "relaxed-combiner-token"),
        (Bug::SkipEpochDeferral, "skip-epoch-deferral"),
        (Bug::ClaimWithStore, "claim-with-store"),
        (Bug::PauseWithoutWaiting, "pause-without-waiting"),
        (Bug::ShrinkWithoutClaim, "shrink-without-claim"),
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
