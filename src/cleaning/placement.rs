//! Write heads (streams) and where pages should go.
//!
//! A store may write through several heads at once, each rolling its own
//! segments with [`Accountant::next_in`](crate::Accountant::next_in); the
//! segment lsns still come from one counter. The accountant remembers each
//! segment's stream and advises where pages belong, so that data of
//! similar lifetime shares segments and cleaning finds them either nearly
//! empty or full of cold data:
//!
//! - user writes ([`Accountant::stream_for_write`](crate::Accountant::stream_for_write)):
//!   with several user streams, a page goes by the lifetime of the version
//!   it replaces (the lsn distance from the old fragment's segment), against
//!   the average lifetime of the user segments cleaned lately: shorter than
//!   that → stream 0, up to 4× → stream 1, and so on (after SepBIT, Wang et
//!   al., FAST '22). New pages go to the last user stream.
//! - relocations ([`Accountant::clean`](crate::Accountant::clean)):
//!   with relocation streams, a page relocated from a user segment goes to
//!   the first relocation stream, and from relocation stream `r` to `r + 1`
//!   (capped): its stream counts how many cleanings it survived.
//!
//! Streams are numbered `0..user_streams` for user writes, then
//! `user_streams..user_streams + relocation_streams`. The defaults (one
//! user stream, no relocation stream) are the single-head log.

use crate::types::{Lid, Lsn, PageId};

/// A write head's number.
pub type StreamId = u8;

/// The most streams of either kind.
pub const MAX_STREAMS: u8 = 16;

/// A page [`clean`](crate::Accountant::clean) suggests relocating: the
/// segment it is drained from, and the stream to write it to.
///
/// A store that may have moved the page already (a user write since, or an
/// earlier relocation still in its buffers) compares the page's current
/// location with `segment_lid` and `segment_lsn`, and skips the page when
/// its current fragment is no longer in that segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Relocation {
    /// The page.
    pub pid: PageId,
    /// The stream to rewrite it in.
    pub stream: StreamId,
    /// The base lid of the Draining segment the page is drained from.
    pub segment_lid: Lid,
    /// That segment's base lsn (it tells a reuse of the lid apart).
    pub segment_lsn: Lsn,
}

impl Relocation {
    /// A relocation of `pid` to `stream` from the segment at `segment_lid`
    /// with base lsn `segment_lsn` (for adapters over other accountants).
    pub fn new(pid: PageId, stream: StreamId, segment_lid: Lid, segment_lsn: Lsn) -> Relocation {
        Relocation {
            pid,
            stream,
            segment_lid,
            segment_lsn,
        }
    }

    /// Whether a fragment of the page at `lid`, written at `lsn`, is in the
    /// segment this relocation drains (so the page has not moved since);
    /// `segment_size` is the accountant's.
    pub fn drains(&self, lid: Lid, lsn: Lsn, segment_size: u64) -> bool {
        lid / segment_size == self.segment_lid / segment_size
            && lsn.div_euclid(segment_size as Lsn)
                == self.segment_lsn.div_euclid(segment_size as Lsn)
    }
}

/// Which page [`clean`](crate::Accountant::clean) must not suggest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Any page may be suggested.
    Nothing,
    /// The page the caller is busy with (writing it, or holding it in a
    /// buffer): when the round-robin pick is this page, `clean` returns
    /// `None` and the page goes to the back of its segment's turn, so the
    /// next call moves on.
    Page(PageId),
}

/// The stream for pages relocated from a segment of stream `from`.
///
/// ```
/// use segment_accountant::placement::relocation_stream;
/// assert_eq!(relocation_stream(1, 0, 0), 0); // one head for everything
/// assert_eq!(relocation_stream(2, 2, 1), 2); // from a user stream: first class
/// assert_eq!(relocation_stream(2, 2, 2), 3); // survived twice
/// assert_eq!(relocation_stream(2, 2, 3), 3); // capped
/// ```
pub fn relocation_stream(user_streams: u8, relocation_streams: u8, from: StreamId) -> StreamId {
    if relocation_streams == 0 {
        return from.min(user_streams - 1);
    }
    let last = user_streams + relocation_streams - 1;
    if from < user_streams {
        user_streams
    } else {
        (from + 1).min(last)
    }
}

/// The user stream for a page whose replaced version lived `lifetime`
/// bytes of log (`None`: a new page), with `threshold` the average
/// lifetime of user segments cleaned lately.
///
/// ```
/// use segment_accountant::placement::user_stream;
/// assert_eq!(user_stream(1, Some(5), 100), 0);
/// assert_eq!(user_stream(2, Some(99), 100), 0);
/// assert_eq!(user_stream(2, Some(100), 100), 1);
/// assert_eq!(user_stream(3, Some(399), 100), 1);
/// assert_eq!(user_stream(3, Some(400), 100), 2);
/// assert_eq!(user_stream(3, None, 100), 2);
/// ```
pub fn user_stream(user_streams: u8, lifetime: Option<u64>, threshold: u64) -> StreamId {
    let last = user_streams - 1;
    let Some(lifetime) = lifetime else {
        return last;
    };
    let mut stream = 0;
    let mut bound = threshold;
    while stream < last && lifetime >= bound {
        stream += 1;
        bound = bound.saturating_mul(4);
    }
    stream
}

/// The lifetime of a segment freed at stable lsn `now`, written at `lsn`.
pub(crate) fn lifetime(now: Lsn, lsn: Lsn) -> u64 {
    now.saturating_sub(lsn).max(0) as u64
}
