//! Cheap questions: a segment's state and base lsn by its lid, in O(1).
//!
//! Which introspection calls cost what, for a store deciding what it may
//! call on a hot path:
//!
//! | call | cost | hot path? |
//! |---|---|---|
//! | [`Accountant::segment_brief`], [`Accountant::segment_brief_at`] | O(1): one atomic load of the segment's word | yes |
//! | [`Accountant::tip`], [`Accountant::stable_lsn`] | O(1) | yes |
//! | [`Accountant::segment_info`] | O(pages of that segment): counts its page sets, copies its not-yet-replaced set | no |
//! | [`Accountant::segment_pages`], [`Accountant::segment_not_yet_replaced`] | O(pages of that segment), allocates | no |
//! | [`Accountant::stats`] | O(pages in the file): `segment_info` of every segment | no (a status line a few times a second is fine) |
//! | [`Accountant::audit`] | O(pages in the file), locks every segment | tests only |
//!
//! The brief is read from the segment's one packed word (state, generation
//! and base lsn change together by compare-and-swap), so its fields always
//! belong to one incarnation of the segment; it may be stale by the time
//! the caller looks at it, like any read of shared state.

use crate::accountant::Accountant;
use crate::cleaning::placement::StreamId;
use crate::core::segment::SegmentState;
use crate::core::sync::Ordering;
use crate::types::{Lid, Lsn};

/// A segment's state and base lsn, from one atomic load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentBrief {
    /// Index in the file (`lid / segment_size`).
    pub index: usize,
    /// Life-cycle state.
    pub state: SegmentState,
    /// Base lsn of the last activation (none if never used or truncated).
    pub lsn: Option<Lsn>,
    /// Reuse counter of the incarnation the state and lsn belong to.
    pub generation: u32,
    /// The write head of the current incarnation (read just after the
    /// word; meaningful while the segment is not Free).
    pub stream: StreamId,
}

impl Accountant {
    /// The state and base lsn of the segment holding `lid`, or `None` for a
    /// lid beyond the segment table. O(1), no allocation, no lock: one
    /// atomic load of the segment's word. Use it where
    /// [`segment_info`](Self::segment_info), which counts and copies the
    /// segment's page sets, would be too slow.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use segment_accountant::{Accountant, Config, MemStorage, SegmentState};
    /// let acc = Accountant::new(Config::builder().segment_size(4096).build()?, Arc::new(MemStorage::new()));
    /// let lid = acc.next(8192)?;
    /// let brief = acc.segment_brief(lid + 100).unwrap();
    /// assert_eq!((brief.state, brief.lsn), (SegmentState::Active, Some(8192)));
    /// assert!(acc.segment_brief(1 << 30).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn segment_brief(&self, lid: Lid) -> Option<SegmentBrief> {
        let shift = self.shared.config.segment_size.trailing_zeros();
        let index = usize::try_from(lid >> shift).ok()?;
        self.segment_brief_at(index)
    }

    /// [`segment_brief`](Self::segment_brief) by segment index.
    #[inline]
    pub fn segment_brief_at(&self, index: usize) -> Option<SegmentBrief> {
        let segment = self.shared.table.get(index)?;
        let word = segment.load();
        Some(SegmentBrief {
            index,
            state: word.state,
            lsn: word.lsn(self.shared.config.segment_size),
            generation: word.generation,
            // Relaxed: published with the activation the word load saw.
            stream: segment.stream.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::{Accountant, Config, DiskPtr, MemStorage, SegmentState};

    #[test]
    fn brief_follows_the_life_cycle() {
        let config = Config::builder().segment_size(4096).build().unwrap();
        let acc = Accountant::new(config, Arc::new(MemStorage::new()));
        let lid = acc.next(0).unwrap();
        acc.mark_link(1, 10, DiskPtr::Inline(lid + 10), 100)
            .unwrap();
        let b = acc.segment_brief(lid).unwrap();
        assert_eq!(
            (b.index, b.state, b.lsn),
            (0, SegmentState::Active, Some(0))
        );
        let lid2 = acc.next(4096).unwrap();
        acc.stabilize(4096).unwrap();
        let b = acc.segment_brief(lid + 4095).unwrap();
        assert_ne!(b.state, SegmentState::Active);
        assert_eq!(b.lsn, Some(0));
        let b2 = acc.segment_brief_at((lid2 / 4096) as usize).unwrap();
        assert_eq!((b2.state, b2.lsn), (SegmentState::Active, Some(4096)));
        let info = acc.segment_info(b2.index).unwrap();
        assert_eq!(
            (info.state, info.lsn, info.generation),
            (b2.state, b2.lsn, b2.generation)
        );
    }
}
