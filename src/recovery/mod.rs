//! Recovery and the log format: the [`Snapshot`] a log scan produces (a
//! store with its own format builds one with its own scan), the reference
//! [`format`](mod@format) of a segment, and its [`scan`](mod@scan).
//!
//! **Owns** what survives a crash and how it is read back. The accountant
//! is rebuilt from a snapshot by
//! [`Accountant::from_snapshot`](crate::Accountant::from_snapshot) and
//! [`Accountant::recover`](crate::Accountant::recover), which live with the
//! facade (the [recovery rules](crate::properties#recovery-rules)).
//!
//! **May use** the shared vocabulary (ids, errors, [`storage`](crate::storage));
//! never the core, cleaning or the facade.

pub mod format;
pub mod scan;

pub use crate::error::{ResumeRefusal, SnapshotError};

use std::collections::BTreeMap;

use crate::types::{DiskPtr, Lid, Lsn, PageId};

/// One fragment of a page found in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Fragment {
    /// Where in the logical log it was written.
    pub lsn: Lsn,
    /// Where in the file (and which blob) it lives.
    pub ptr: DiskPtr,
    /// Its size in the log, in bytes.
    pub size: u64,
}

/// A page's state at the end of the scanned log.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PageState {
    /// The page's live fragments (the last full image and any later
    /// deltas), in log order.
    Present(Vec<Fragment>),
    /// The page was freed; its free record (a header-sized fragment) is at
    /// this place in the log.
    Freed(Fragment),
}

impl Fragment {
    /// The fragment of `size` bytes written at `lsn` and stored at `ptr`.
    pub fn new(lsn: Lsn, ptr: DiskPtr, size: u64) -> Fragment {
        Fragment { lsn, ptr, size }
    }
}

impl PageState {
    /// The fragments that hold this state (the free record for a freed
    /// page).
    pub fn fragments(&self) -> &[Fragment] {
        match self {
            PageState::Present(f) => f,
            PageState::Freed(f) => std::slice::from_ref(f),
        }
    }
}

/// What a scan of the log found: the input of
/// [`Accountant::from_snapshot`](crate::Accountant::from_snapshot).
///
/// [`scan`](mod@crate::scan) builds it for the reference format; an engine
/// with its own log format and scan starts from [`Snapshot::empty`] and
/// fills the fields in:
///
/// ```
/// use std::sync::Arc;
/// use segment_accountant::{
///     default_collector, Accountant, Config, DiskPtr, Fragment, MemStorage, PageState, Snapshot,
/// };
///
/// // One segment at lid 0 with lsn 0, holding page 7 (64 bytes at lsn 40),
/// // and no header vouching for anything yet.
/// let mut snapshot = Snapshot::empty();
/// snapshot.pages.insert(7, PageState::Present(vec![Fragment::new(40, DiskPtr::Inline(40), 64)]));
/// snapshot.last_lid = Some(0);
/// snapshot.last_lsn = 104;
///
/// let config = Config::builder().segment_size(4096).build()?;
/// let acc = Accountant::from_snapshot(
///     config,
///     Arc::new(MemStorage::new()),
///     default_collector().clone(),
///     &snapshot,
///     4096, // the file's length
/// )?;
/// assert_eq!(acc.segment_info(0).unwrap().live_pages, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Every page's state.
    pub pages: BTreeMap<PageId, PageState>,
    /// The offset of the segment being written when the log ended (the
    /// last segment the scan accepted), if any.
    pub last_lid: Option<Lid>,
    /// The highest lsn in the accepted log (−1 for an empty log).
    pub last_lsn: Lsn,
    /// The highest stable lsn vouched for by a durable segment header.
    pub max_header_stable_lsn: Lsn,
    /// Where writing resumes inside a segment already in the file, if it
    /// does: `(lid, lsn)`, the segment's base lid and the lsn of the next
    /// write into it (see [`resume_at`](Snapshot::resume_at)). `None`: the
    /// store resumes in a new segment, from [`Accountant::next`](crate::Accountant::next).
    pub resume: Option<(Lid, Lsn)>,
}

impl Snapshot {
    /// An empty log.
    pub fn empty() -> Snapshot {
        Snapshot::new(BTreeMap::new(), None, -1, -1)
    }

    /// A snapshot with the given fields (see each field's documentation).
    pub fn new(
        pages: BTreeMap<PageId, PageState>,
        last_lid: Option<Lid>,
        last_lsn: Lsn,
        max_header_stable_lsn: Lsn,
    ) -> Snapshot {
        Snapshot {
            pages,
            last_lid,
            last_lsn,
            max_header_stable_lsn,
            resume: None,
        }
    }

    /// This snapshot, saying that writing resumes at `lsn` in the segment
    /// whose base lid is `lid`: that segment stays Active at segment lsn
    /// `lsn` rounded down to the segment size, even when it holds no live
    /// fragment (an engine whose last segment holds only its header
    /// resumes writing inside it, with [`mark_link`](crate::Accountant::mark_link)
    /// and no `next`).
    ///
    /// The segment must lie below the file's tip, `lid` must be a multiple
    /// of the segment size, and `lsn` must lie beyond the log's last lsn
    /// (so beyond the header-vouched stable lsn); the segment's fragments
    /// (if any) must carry its segment lsn. The
    /// reference [`scan`](mod@crate::scan) does not set it:
    /// [`recover`](crate::Accountant::recover) completes a partly written
    /// last segment with a pad and writing resumes in a new segment.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use segment_accountant::{default_collector, Accountant, Config, DiskPtr, MemStorage, SegmentState, Snapshot};
    ///
    /// // The last segment (lid 4096, lsn 8192) holds only a 20-byte header.
    /// let snapshot = Snapshot::new(Default::default(), Some(4096), 8192 + 19, -1)
    ///     .resume_at(4096, 8192 + 20);
    /// let config = Config::builder().segment_size(4096).build()?;
    /// let acc = Accountant::from_snapshot(
    ///     config, Arc::new(MemStorage::new()), default_collector().clone(), &snapshot, 4096 + 20,
    /// )?;
    /// assert_eq!(acc.segment_info(1).unwrap().state, SegmentState::Active);
    /// acc.mark_link(7, 8192 + 20, DiskPtr::Inline(4096 + 20), 64)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resume_at(mut self, lid: Lid, lsn: Lsn) -> Snapshot {
        self.resume = Some((lid, lsn));
        self
    }
}

/// Why [`Accountant::recover`](crate::Accountant::recover) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    /// The scan failed (I/O, or durable data damaged).
    #[error(transparent)]
    Scan(#[from] crate::recovery::scan::ScanError),
    /// Invalidating the discarded tail (or completing the last segment)
    /// failed; nothing was rebuilt and recovering again is safe.
    #[error("invalidating the discarded tail failed: {0}")]
    Invalidate(#[source] std::io::Error),
    /// The accountant rejected the snapshot.
    #[error(transparent)]
    Accountant(#[from] crate::Error),
}
