//! The domain's vocabulary: lsns, lids, page ids and disk pointers.

/// A byte offset in the logical, ever-growing log (signed; `-1` means none).
pub type Lsn = i64;

/// A byte offset in the storage file ("log id").
pub type Lid = u64;

/// The caller's identifier of a logical page.
pub type PageId = u64;

/// The identifier of an external blob file holding a large payload.
pub type BlobId = u64;

/// Where one fragment of a page lives.
///
/// ```
/// use segment_accountant::DiskPtr;
/// let inline = DiskPtr::Inline(4096);
/// let blob = DiskPtr::Blob { lid: 8192, blob: 7 };
/// assert_eq!(inline.lid(), 4096);
/// assert_eq!(blob.blob(), Some(7));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiskPtr {
    /// The fragment is stored in the log at this offset.
    Inline(Lid),
    /// The fragment's header is in the log at `lid`; its payload is in the
    /// external blob file `blob`.
    Blob {
        /// Offset of the fragment's header in the log.
        lid: Lid,
        /// The blob file holding the payload.
        blob: BlobId,
    },
}

impl DiskPtr {
    /// The offset in the log file.
    pub fn lid(&self) -> Lid {
        match *self {
            DiskPtr::Inline(lid) | DiskPtr::Blob { lid, .. } => lid,
        }
    }

    /// The blob file this pointer refers to, if it is a blob pointer.
    pub fn blob(&self) -> Option<BlobId> {
        match *self {
            DiskPtr::Inline(_) => None,
            DiskPtr::Blob { blob, .. } => Some(blob),
        }
    }
}

/// The life-cycle state of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SegmentState {
    /// Beyond the file tip: never used, or truncated away.
    Vacant,
    /// Below the tip and reusable by `next`.
    Free,
    /// Emptied and waiting for readers to leave (epoch) and for the stable
    /// lsn to pass it before it becomes Free.
    Freeing,
    /// Being written: accepts `mark_link`.
    Active,
    /// A `stabilize` covering it is sealing it: writes into it are refused
    /// from now on (it becomes Inactive when the seal finishes).
    Sealing,
    /// Sealed and stable; its pages are live.
    Inactive,
    /// In the to-clean set: `clean` asks the store to relocate its pages.
    Draining,
}
