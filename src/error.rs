//! Typed errors for every caller mistake, bad input and I/O failure.
//!
//! A call that returns an error has changed nothing in the accountant
//! (except where a variant says otherwise: an I/O error reported from an
//! earlier asynchronous truncation is consumed by being reported).

use std::fmt;

use crate::types::SegmentState;
use crate::types::{BlobId, Lid, Lsn, PageId};

/// The caller-supplied code a contained panic came from (see
/// [`Error::CallbackPanicked`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Callback {
    /// [`Storage::remove_blob`](crate::Storage::remove_blob) of this blob,
    /// run by the combiner when the segment that made it garbage sealed.
    RemoveBlob(BlobId),
    /// [`Storage::len`](crate::Storage::len),
    /// [`set_len`](crate::Storage::set_len) or
    /// [`sync`](crate::Storage::sync) on the truncation thread.
    Truncation,
    /// A [`CleaningPolicy`](crate::CleaningPolicy) method, asked by the
    /// combiner.
    CleaningPolicy,
    /// A closure deferred on the epoch collector (the store's own garbage,
    /// or anyone's sharing the collector), run when the accountant pinned
    /// or flushed it.
    EpochCollector,
}

impl fmt::Display for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Callback::RemoveBlob(blob) => write!(f, "Storage::remove_blob({blob})"),
            Callback::Truncation => f.write_str("the storage's truncation (len, set_len, sync)"),
            Callback::CleaningPolicy => f.write_str("the cleaning policy"),
            Callback::EpochCollector => f.write_str("a closure deferred on the epoch collector"),
        }
    }
}

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
    /// A write (`mark_link`, or `mark_replace`'s new pointer) into a
    /// segment that a `stabilize` had already covered before the write: the
    /// caller contract says every write into a segment comes before the
    /// `stabilize` that covers it. Returned when the write's segment lsn is
    /// at or below the stabilized segment lsn, or when the segment at `lid`
    /// is the write's own segment and a `stabilize` sealed it (Sealing,
    /// Inactive or Draining). Nothing changed.
    ///
    /// A segment that was reused since is [`Error::StaleSegment`] instead;
    /// a write that met the seal while it ran is
    /// [`Error::LinkRacedStabilize`].
    #[error(
        "a stabilize covered segment lsn {segment_lsn} before this write at lsn {lsn} \
         into the segment at lid {lid} (stabilized up to segment lsn {stable_lsn})"
    )]
    SegmentSealed {
        /// The base lid of the segment the write named.
        lid: Lid,
        /// The lsn of the write.
        lsn: Lsn,
        /// The write's segment lsn (`lsn` rounded down to a segment).
        segment_lsn: Lsn,
        /// The stabilized segment lsn that covered it (at least
        /// `segment_lsn`): the one published when the write was refused, or
        /// the one a stabilize still running was sealing up to.
        stable_lsn: Lsn,
    },
    /// A link into a segment that is not Active, and that no `stabilize`
    /// covered for the write's lsn (a free segment, or one that holds
    /// another lsn).
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
    InvalidSnapshot(#[from] crate::error::SnapshotError),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
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
    /// A fragment size larger than any fragment can be: more than the
    /// segment size (a fragment lies within its segment), or more than
    /// 2^32 bytes. Nothing changed.
    #[error("fragment size {size} exceeds the largest fragment size {max}")]
    SizeOutOfRange {
        /// The offending size.
        size: u64,
        /// The largest accepted size for this configuration.
        max: u64,
    },
    /// `stabilize` was given a bound that would seal a segment `next` never
    /// handed out: no durable segment header can vouch for it. Nothing
    /// changed.
    #[error(
        "stable lsn {stable_lsn} lies beyond every segment handed out (they end at lsn {end})"
    )]
    StableBeyondLog {
        /// The offending stable lsn.
        stable_lsn: Lsn,
        /// The end of the highest segment `next` has handed out (0 if
        /// none): the largest bound `stabilize` accepts now is below
        /// `end + segment_size`.
        end: Lsn,
    },
    /// Caller-supplied code the accountant ran panicked. The panic was
    /// caught where the accountant called it and the accountant stays
    /// consistent; what was being done is described by the call that
    /// returns this (see the crate docs, "Panics in callbacks").
    #[error("{callback} panicked (contained): {message}")]
    CallbackPanicked {
        /// Which callback.
        callback: Callback,
        /// The panic's message, if it was a string.
        message: String,
    },
    /// An internal invariant was found broken (a bug in this crate). The
    /// bookkeeping can no longer be trusted, so from then on every call
    /// that returns a `Result` fails with this, like a poisoned mutex, and
    /// [`audit`](crate::Accountant::audit) fails too: reusing a segment on
    /// broken bookkeeping could lose data.
    #[error("the accountant is poisoned: an internal invariant broke: {0}")]
    Poisoned(String),
    /// Any other I/O failure of the storage.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The message of a caught panic, if it was a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_owned()
    }
}

/// Runs caller-supplied code, containing a panic in it as
/// [`Error::CallbackPanicked`].
///
/// `AssertUnwindSafe`: every call site runs the callback at a point where
/// the accountant's own state is consistent whether or not the callback
/// returns (its inputs are copies or read-only borrows, and the call site
/// decides what an `Err` means: a leaked blob, a skipped drain, a retried
/// deferral), so nothing the callback could have left half-changed is ours.
pub(crate) fn contain<R>(callback: Callback, f: impl FnOnce() -> R) -> Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        Error::CallbackPanicked {
            callback,
            message: panic_message(&*payload),
        }
    })
}

/// Why a snapshot was rejected: it contradicts itself or the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A fragment lies at or beyond the file's tip.
    #[error("page {pid} has a fragment at lid {lid}, at or beyond the file tip ({tip} bytes)")]
    FragmentBeyondTip {
        /// The page.
        pid: PageId,
        /// The fragment's lid.
        lid: Lid,
        /// The tip in bytes.
        tip: u64,
    },
    /// A fragment has a negative lsn or one too large for the accountant.
    #[error("page {pid} has a fragment at invalid lsn {lsn}")]
    InvalidLsn {
        /// The page.
        pid: PageId,
        /// The lsn.
        lsn: Lsn,
    },
    /// A fragment's size is beyond anything a fragment can be (2^32
    /// bytes): the live-byte sums would overflow.
    #[error("page {pid} has a fragment of {size} bytes, beyond the largest fragment size {max}")]
    FragmentTooLarge {
        /// The page.
        pid: PageId,
        /// The fragment's size.
        size: u64,
        /// The largest accepted size.
        max: u64,
    },
    /// Two fragments in one segment belong to different segment lsns.
    #[error(
        "segment at lid {lid} holds fragments of segment lsns {first} and {second} (page {pid})"
    )]
    MixedSegmentLsns {
        /// The segment's base lid.
        lid: Lid,
        /// The segment lsn seen first.
        first: Lsn,
        /// The conflicting segment lsn.
        second: Lsn,
        /// The page of the conflicting fragment.
        pid: PageId,
    },
    /// Two segments carry one lsn.
    #[error("segments at lids {first} and {second} both have segment lsn {lsn}")]
    DuplicateSegmentLsn {
        /// The shared segment lsn.
        lsn: Lsn,
        /// One segment's lid.
        first: Lid,
        /// The other's.
        second: Lid,
    },
    /// A header vouches for a stable lsn beyond the end of the log (a
    /// header only vouches for the log before its own segment).
    #[error("the header-vouched stable lsn {stable} lies beyond the log's last lsn {last_lsn}")]
    StableBeyondLog {
        /// The vouched stable lsn.
        stable: Lsn,
        /// The last lsn of the log.
        last_lsn: Lsn,
    },
    /// The segment said to be written last lies beyond the file.
    #[error("the last segment written, at lid {lid}, is at or beyond the file tip ({tip} bytes)")]
    LastSegmentBeyondTip {
        /// Its lid.
        lid: Lid,
        /// The tip in bytes.
        tip: u64,
    },
    /// The segment writing resumes in ([`Snapshot::resume`](crate::Snapshot::resume)) is not one
    /// writing can resume in.
    #[error("writing cannot resume at lsn {lsn} in the segment at lid {lid}: {reason}")]
    InvalidResume {
        /// The segment's lid, as given.
        lid: Lid,
        /// The resume lsn, as given.
        lsn: Lsn,
        /// Why.
        reason: ResumeRefusal,
    },
}

/// Why [`Snapshot::resume`](crate::Snapshot::resume) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeRefusal {
    /// The lid is not a multiple of the segment size.
    #[error("the lid is not a segment's base")]
    UnalignedLid,
    /// The segment is at or beyond the file's tip.
    #[error("the segment is at or beyond the file tip ({tip} bytes)")]
    BeyondTip {
        /// The tip in bytes.
        tip: u64,
    },
    /// The lsn is negative or beyond the accountant's range.
    #[error("the lsn is out of range")]
    LsnOutOfRange,
    /// The lsn is not beyond the log's last lsn.
    #[error("the lsn is not beyond the log's last lsn {last_lsn}")]
    NotBeyondLog {
        /// The snapshot's last lsn.
        last_lsn: Lsn,
    },
}

/// A configuration value that was rejected.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The segment size is not a power of two.
    #[error("segment size {0} is not a power of two")]
    SegmentSizeNotPowerOfTwo(u64),
    /// The segment size is below the minimum.
    #[error("segment size {size} is below the minimum {min} (small segments must be allowed explicitly, for tests)")]
    SegmentSizeTooSmall {
        /// The requested size.
        size: u64,
        /// The minimum that applies.
        min: u64,
    },
    /// The cleanup threshold is not a percentage in 1..=99.
    #[error("cleanup threshold {0}% is outside 1..=99")]
    CleanupThreshold(u8),
    /// The skew is not in 0..=100 percentage points.
    #[error("cleanup skew {0} is outside 0..=100 percentage points")]
    Skew(u8),
    /// The space target is not a finite ratio above 1.
    #[error("space target {0} is not a finite ratio of file bytes to live bytes above 1")]
    SpaceTarget(f64),
    /// Stream counts out of range: 1 to 16 user streams, 0 to 16
    /// relocation streams.
    #[error("{user} user streams and {relocation} relocation streams: need 1..=16 and 0..=16")]
    Streams {
        /// User streams requested.
        user: u8,
        /// Relocation streams requested.
        relocation: u8,
    },
    /// The policy only ranks victims and needs a space target to act.
    #[error("cleaning policy `{0}` drains only under a space target; set one")]
    PolicyNeedsSpaceTarget(String),
}
