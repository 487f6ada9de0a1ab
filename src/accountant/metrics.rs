//! Cumulative counters, published by the combiner.
//!
//! [`Accountant::metrics`](crate::Accountant::metrics) returns the
//! snapshot the last combiner pass published: one atomic pointer load
//! (arc-swap), no lock, no scan, so a store's metrics thread can poll it as
//! often as it likes without touching the write path.
//!
//! Where each counter comes from, and when it moves:
//! - **written bytes and pages** are counted when a segment is sealed
//!   (the combiner sums its page map, which it reads anyway to seal the
//!   live bytes): no fragment leaves a segment's map before its seal, so
//!   the sum is every byte linked into it. A page linked into one segment
//!   several times (rewritten within the segment) counts its bytes every
//!   time but as **one page**. `mark_link` and `mark_replace` pay nothing
//!   for it.
//! - **relocated** bytes and pages: with relocation streams
//!   ([`ConfigBuilder::streams`](crate::ConfigBuilder::streams) with a
//!   non-zero second argument) everything written into a segment of a
//!   relocation stream; with none, every `mark_replace` that replaced a
//!   page `clean` could still suggest (not yet replaced, in a Draining
//!   segment), counted with the new write's size. Without relocation
//!   streams the accountant cannot tell a user rewrite from a relocation,
//!   so a user rewrite that reaches a draining page before the cleaner
//!   counts as its relocation (it does the relocation's work: the cleaner
//!   then skips the page). **User** bytes and pages are the written ones
//!   less the relocated ones.
//! - segments **reused** and **appended**, **truncations** and the bytes
//!   they returned are counted where they happen (Relaxed counters on
//!   rare paths) and appear in the snapshot of the next pass.
//! - **drains** by reason, **frees** and **passes** are the combiner's own.
//!
//! Counting starts when the accountant is made: a recovered accountant
//! starts from zero (segments recovered Active count when they seal).

/// Why the combiner started draining a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DrainReason {
    /// The cleaning policy asked for it unprompted (the spec's threshold).
    Policy,
    /// The file exceeded the space target.
    SpaceTarget,
    /// The tip-shrinking heuristic drained the highest Inactive segment.
    TipShrink,
    /// An idle store over its space target drained its highest segment
    /// (`policy::compact_when_idle`).
    Idle,
}

/// Cumulative counters and a few gauges, as of the last combiner pass.
///
/// More counters may be added: the struct is `#[non_exhaustive]`.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// Bytes of user writes sealed so far (written less relocated).
    pub user_bytes: u64,
    /// Pages of user writes sealed so far (per segment, a page linked
    /// several times into it counts once).
    pub user_pages: u64,
    /// Bytes of relocations sealed so far (see the [module](self) docs for
    /// what counts as one).
    pub relocated_bytes: u64,
    /// Pages of relocations sealed so far.
    pub relocated_pages: u64,
    /// Segments sealed (made Inactive by a stabilize).
    pub segments_sealed: u64,
    /// Segments `next` reused (a free segment below the tip).
    pub segments_reused: u64,
    /// Segments `next` appended (extending the file).
    pub segments_appended: u64,
    /// Segments freed (emptied and handed to the epoch deferral).
    pub segments_freed: u64,
    /// Times the file was shortened.
    pub truncations: u64,
    /// Bytes those truncations returned.
    pub bytes_truncated: u64,
    /// Drains the cleaning policy started unprompted (its threshold).
    pub drains_policy: u64,
    /// Drains started to bring the file under the space target.
    pub drains_space_target: u64,
    /// Drains of the highest segment, to shrink the tip.
    pub drains_tip: u64,
    /// Drains of the highest segment by an idle store over its space
    /// target ([`policy::compact_when_idle`](crate::policy::compact_when_idle)).
    pub drains_idle: u64,
    /// Combiner passes run.
    pub passes: u64,
    /// The file tip in bytes, at the end of the last pass (a gauge).
    pub file_bytes: u64,
    /// Live bytes in sealed (Inactive and Draining) segments, at the end
    /// of the last pass (a gauge).
    pub live_bytes: u64,
    /// Active (and Sealing) segments at the end of the last pass (a gauge).
    pub active_segments: u64,
    /// The segment size (to turn segment counts into bytes).
    pub segment_size: u64,
}

impl Metrics {
    /// Write amplification: every byte written to segments (user and
    /// relocated) per user byte, `(user + relocated) / user`; 1.0 before
    /// any user byte is sealed. Page-level: headers and padding of the
    /// store's format are not counted.
    pub fn write_amplification(&self) -> f64 {
        if self.user_bytes == 0 {
            return 1.0;
        }
        (self.user_bytes + self.relocated_bytes) as f64 / self.user_bytes as f64
    }

    /// Space amplification: the file's sealed part (the tip less the
    /// Active segments, which are still being filled) per live byte in
    /// sealed segments; 1.0 while nothing is live. Free segments below the
    /// tip count as file, as they take disk space.
    pub fn space_amplification(&self) -> f64 {
        let sealed_file = self
            .file_bytes
            .saturating_sub(self.active_segments * self.segment_size);
        if self.live_bytes == 0 {
            return 1.0;
        }
        sealed_file as f64 / self.live_bytes as f64
    }

    /// Every byte written to segments: user and relocated.
    pub fn bytes_written(&self) -> u64 {
        self.user_bytes + self.relocated_bytes
    }

    /// Drains started, for every reason.
    pub fn drains(&self) -> u64 {
        self.drains_policy + self.drains_space_target + self.drains_tip + self.drains_idle
    }
}

/// The combiner's own running totals (plain integers: only the token
/// holder touches them).
#[derive(Clone, Debug, Default)]
pub(crate) struct Totals {
    pub(crate) user_bytes: u64,
    pub(crate) user_pages: u64,
    pub(crate) relocated_bytes: u64,
    pub(crate) relocated_pages: u64,
    pub(crate) sealed: u64,
    pub(crate) freed: u64,
    pub(crate) drains_policy: u64,
    pub(crate) drains_space_target: u64,
    pub(crate) drains_tip: u64,
    pub(crate) drains_idle: u64,
    pub(crate) passes: u64,
    /// Activations the combiner collected: reused and appended segments.
    pub(crate) reused: u64,
    pub(crate) appended: u64,
}

impl Totals {
    /// Counts an activation `next` registered (`reused`: not appended).
    pub(crate) fn activated(&mut self, reused: bool) {
        if reused {
            self.reused += 1;
        } else {
            self.appended += 1;
        }
    }

    pub(crate) fn drained(&mut self, reason: DrainReason) {
        match reason {
            DrainReason::Policy => self.drains_policy += 1,
            DrainReason::SpaceTarget => self.drains_space_target += 1,
            DrainReason::TipShrink => self.drains_tip += 1,
            DrainReason::Idle => self.drains_idle += 1,
        }
    }

    /// Folds a sealed segment's writes in: `bytes` and `pages` linked into
    /// it, of which `relocated_*` were relocations.
    pub(crate) fn sealed(
        &mut self,
        bytes: u64,
        pages: u64,
        relocated_bytes: u64,
        relocated_pages: u64,
    ) {
        self.sealed += 1;
        let rb = relocated_bytes.min(bytes);
        let rp = relocated_pages.min(pages);
        self.relocated_bytes = self.relocated_bytes.saturating_add(rb);
        self.relocated_pages = self.relocated_pages.saturating_add(rp);
        self.user_bytes = self.user_bytes.saturating_add(bytes - rb);
        self.user_pages = self.user_pages.saturating_add(pages - rp);
    }
}
