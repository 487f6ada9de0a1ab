//! Typed errors for every caller mistake, bad input and I/O failure.
//!
//! A call that returns an error has changed nothing in the accountant
//! (except where a variant says otherwise: an I/O error reported from an
//! earlier asynchronous truncation is consumed by being reported).

use crate::types::{Lid, Lsn, PageId};
use crate::SegmentState;

/// Everything that can go wrong in a call to the accountant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An lsn was negative.
    #[error("lsn {lsn} is negative")]
    NegativeLsn {
        /// The offending lsn.
        lsn: Lsn,
    },
    /// `next` was given an lsn that is not a multiple of the segment size.
    #[error("segment lsn {lsn} is not a multiple of the segment size {segment_size}")]
    UnalignedLsn {
        /// The offending lsn.
        lsn: Lsn,
        /// The configured segment size.
        segment_size: u64,
    },
    /// An lsn too large for the accountant's packed segment word.
    #[error("lsn {lsn} is beyond the largest supported lsn {max}")]
    LsnOutOfRange {
        /// The offending lsn.
        lsn: Lsn,
        /// The largest supported segment lsn for this segment size.
        max: Lsn,
    },
    /// `next` was given a segment lsn that an Active segment already has.
    #[error("segment lsn {lsn} was already given to next and its segment is still active")]
    LsnInUse {
        /// The offending lsn.
        lsn: Lsn,
    },
    /// `next` was given an lsn that `stabilize` has already passed.
    #[error("segment lsn {lsn} is at or below the stabilized segment lsn {stable}")]
    LsnAlreadyStable {
        /// The offending lsn.
        lsn: Lsn,
        /// The highest stabilized segment lsn.
        stable: Lsn,
    },
    /// A pointer at or beyond the file tip.
    #[error("lid {lid} is at or beyond the file tip ({tip} bytes)")]
    LidBeyondTip {
        /// The offending lid.
        lid: Lid,
        /// The file tip in bytes.
        tip: u64,
    },
    /// A link into a segment that is not Active.
    #[error("segment at lid {lid} is {state:?}, not Active")]
    SegmentNotActive {
        /// The segment's base lid.
        lid: Lid,
        /// Its state at the time of the call.
        state: SegmentState,
    },
    /// The segment is Active but with another base lsn than the write's.
    #[error("segment at lid {lid} has base lsn {segment_lsn}, but the write's lsn {lsn} belongs to another segment")]
    LsnMismatch {
        /// The segment's base lid.
        lid: Lid,
        /// The lsn of the write.
        lsn: Lsn,
        /// The segment's base lsn.
        segment_lsn: Lsn,
    },
    /// The operation names an earlier generation of a segment that has
    /// since been reused (its base lsn is above the operation's lsn).
    #[error(
        "segment at lid {lid} was reused at lsn {segment_lsn}, after the operation's lsn {lsn}"
    )]
    StaleSegment {
        /// The segment's base lid.
        lid: Lid,
        /// The lsn of the operation.
        lsn: Lsn,
        /// The base lsn of the segment's current generation.
        segment_lsn: Lsn,
    },
    /// `mark_replace` named an old fragment in a segment that is free.
    #[error("replaced fragment of page {pid} is in segment at lid {lid}, which is {state:?}")]
    ReplacedFromFreeSegment {
        /// The page being replaced.
        pid: PageId,
        /// The base lid of the free segment.
        lid: Lid,
        /// Its state.
        state: SegmentState,
    },
    /// The segment changed state while a link into it was in progress:
    /// `stabilize` covered a segment before every write into it was
    /// marked, which breaks the caller contract. The link was undone.
    #[error("segment at lid {lid} was stabilized while page {pid} was being linked into it")]
    LinkRacedStabilize {
        /// The page.
        pid: PageId,
        /// The segment's base lid.
        lid: Lid,
    },
    /// A stream number at or beyond the configured stream count.
    #[error("stream {stream} does not exist: the configuration has {streams} streams")]
    UnknownStream {
        /// The stream asked for.
        stream: u8,
        /// How many streams there are.
        streams: u8,
    },
    /// Resuming rewriting without a matching pause, or iterating segments
    /// while rewriting is not paused.
    #[error("rewriting is not paused")]
    NotPaused,
    /// A recovery snapshot contradicts itself or the file.
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(#[from] crate::recovery::SnapshotError),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// An asynchronous truncation of the file failed; reported by the next
    /// change of the file tip.
    #[error("truncating the file failed: {0}")]
    Truncation(#[source] std::io::Error),
    /// Removing the garbage blob file `blob` failed while a segment was
    /// deactivated. The bookkeeping is complete; only the blob file leaked.
    #[error("removing blob {blob} failed: {source}")]
    BlobRemoval {
        /// The blob that could not be removed.
        blob: crate::types::BlobId,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Any other I/O failure of the storage.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
