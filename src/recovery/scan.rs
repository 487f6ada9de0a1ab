//! The recovery scanner: reads a file written in the reference
//! [`format`](mod@crate::format) and produces the [`Snapshot`] that
//! [`Accountant::from_snapshot`](crate::Accountant::from_snapshot) rebuilds
//! from, plus where to resume writing, which segments to invalidate and
//! which to complete.
//!
//! The file is read once, front to back, in large reads.
//!
//! 1. Every segment is walked ([`walk_segment`]): its header, then its
//!    messages while each one checks. Valid segments (magic, checksum,
//!    segment size) are ordered by lsn. Two valid headers with one lsn are
//!    an error: recovery never lets that happen.
//! 2. `trusted` is the highest stable lsn any valid header (including
//!    invalidated ones) or any checkpoint in a segment's valid prefix
//!    vouches for: a writer only vouches for what it has synced, so each
//!    vouch is true wherever it lies. Segments wholly below `trusted` are
//!    durable and must be complete; one that is not is corruption,
//!    reported.
//! 3. The unstable tail is walked from the segment containing `trusted`
//!    (from the lowest segment when nothing is vouched for) while lsns are
//!    consecutive and segments complete. The first segment that is not
//!    complete is the log's last: its valid prefix is kept (it may have
//!    been made durable before it was full), the rest of it is not
//!    (`open_tail`: the caller completes it with a pad before writing).
//!    Valid segments past the stop are `discarded`: the caller must
//!    invalidate their headers durably before writing
//!    ([recovery rule 5](crate::properties#recovery-rules)), since new
//!    segments reuse their lsns. An invalidated header
//!    keeps the scan's vouched stable lsn, so scanning again after
//!    invalidation trusts the same log (idempotence).
//! 4. Accepted segments are replayed in lsn order: a full image or blob
//!    pointer makes the page's state that one fragment, a delta adds a
//!    fragment (a delta with no base is a leftover of a stale segment and
//!    is ignored), a free record frees the page. Checkpoints and pads are
//!    not fragments. Nothing past a segment's valid prefix is replayed.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::recovery::format::{walk_segment, FormatError, MessageKind, Record, SEGMENT_HEADER_LEN};
use crate::recovery::{Fragment, PageState, Snapshot};
use crate::storage::LogFile;
use crate::types::{DiskPtr, Lid, Lsn};

/// The partly written last segment of the accepted log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenTail {
    /// Its offset in the file.
    pub lid: Lid,
    /// Its lsn.
    pub lsn: Lsn,
    /// Its salt.
    pub salt: u32,
    /// Where its valid messages end (offset in the segment).
    pub end: u64,
}

/// The result of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Scan {
    /// The log's pages and the facts recovery needs.
    pub snapshot: Snapshot,
    /// The segment lsn to write next.
    pub resume_lsn: Lsn,
    /// Segments with valid headers that were not accepted: invalidate them
    /// durably before writing new segments.
    pub discarded: Vec<Lid>,
    /// The last accepted segment, if its walk did not reach its end:
    /// complete it ([`seal_segment`](crate::format::seal_segment)) durably
    /// before writing new segments.
    pub open_tail: Option<OpenTail>,
    /// The file's length.
    pub file_len: u64,
}

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// Reading the file failed.
    #[error("reading the log failed: {0}")]
    Io(#[from] std::io::Error),
    /// Two valid headers carry one lsn.
    #[error("segments at lids {first} and {second} both carry lsn {lsn}")]
    DuplicateLsn {
        /// The lsn.
        lsn: Lsn,
        /// One lid.
        first: Lid,
        /// The other.
        second: Lid,
    },
    /// A segment below the vouched stable lsn is not complete: durable
    /// data is damaged.
    #[error("stable segment at lid {lid} is corrupt: {source}")]
    CorruptStableSegment {
        /// Its lid.
        lid: Lid,
        /// What is wrong.
        source: FormatError,
    },
    /// A header or checkpoint vouches that the log is stable up to
    /// `vouched`, but it ends before it: stable data is missing (durable
    /// data damaged).
    #[error("the log is vouched for up to {vouched}, but it ends at {end}")]
    StableSegmentMissing {
        /// The vouched stable lsn.
        vouched: Lsn,
        /// Where the accepted log ends.
        end: Lsn,
    },
    /// The segment size is not usable.
    #[error("invalid segment size {0}")]
    SegmentSize(u64),
}

/// One walked segment.
struct Walked {
    lid: Lid,
    salt: u32,
    records: Vec<Record>,
    end: u64,
    complete: bool,
    stop: Option<FormatError>,
    available: u64,
}

/// Bytes read at once (whole segments, at least one).
const READ_CHUNK: u64 = 4 << 20;

/// Scans the log in `storage`, written with segments of `segment_size`.
pub fn scan(storage: &dyn LogFile, segment_size: u64) -> Result<Scan, ScanError> {
    if !segment_size.is_power_of_two()
        || segment_size < SEGMENT_HEADER_LEN as u64 * 2
        || segment_size > 1 << 31
    {
        return Err(ScanError::SegmentSize(segment_size));
    }
    let file_len = storage.len()?;
    let ss = segment_size;
    // 1. Walk every segment, reading the file front to back.
    let mut by_lsn: BTreeMap<Lsn, Walked> = BTreeMap::new();
    let mut trusted: Lsn = -1;
    let chunk = (READ_CHUNK / ss).max(1) * ss;
    let mut buf = Vec::new();
    let mut base = 0;
    while base + SEGMENT_HEADER_LEN as u64 <= file_len {
        let len = chunk.min(file_len - base);
        buf.resize(len as usize, 0);
        storage.read_at(base, &mut buf)?;
        for (i, bytes) in buf.chunks(ss as usize).enumerate() {
            let lid = base + i as u64 * ss;
            if bytes.len() < SEGMENT_HEADER_LEN {
                continue;
            }
            let header = match crate::recovery::format::SegmentHeader::decode(bytes) {
                Ok(h) if h.segment_size as u64 == ss => h,
                _ => continue,
            };
            if header.invalidated {
                trusted = trusted.max(header.stable_lsn);
                continue;
            }
            let Ok(walk) = walk_segment(bytes, ss) else {
                continue;
            };
            trusted = trusted.max(walk.max_vouch);
            let walked = Walked {
                lid,
                salt: header.salt,
                records: walk.records,
                end: walk.end,
                complete: walk.complete,
                stop: walk.stop,
                available: bytes.len() as u64,
            };
            if let Some(first) = by_lsn.get(&header.lsn) {
                return Err(ScanError::DuplicateLsn {
                    lsn: header.lsn,
                    first: first.lid,
                    second: lid,
                });
            }
            by_lsn.insert(header.lsn, walked);
        }
        base += len;
    }
    // 2. Trusted segments must be complete.
    let mut accepted: Vec<(Lsn, &Walked)> = Vec::new();
    let mut tail = Vec::new();
    for (&lsn, w) in &by_lsn {
        if trusted >= 0 && lsn + ss as Lsn <= trusted {
            if !w.complete {
                let source = w.stop.clone().unwrap_or(FormatError::ShortData {
                    needed: ss as usize,
                    available: w.available as usize,
                });
                return Err(ScanError::CorruptStableSegment { lid: w.lid, source });
            }
            accepted.push((lsn, w));
        } else {
            tail.push((lsn, w));
        }
    }
    // 3. The unstable tail: consecutive, and complete but for the last.
    let mut expected = if trusted >= 0 {
        Some(trusted - trusted % ss as Lsn)
    } else {
        tail.first().map(|&(lsn, _)| lsn)
    };
    let mut discarded = Vec::new();
    let mut open_tail = None;
    for &(lsn, w) in &tail {
        if expected == Some(lsn) {
            accepted.push((lsn, w));
            if w.complete {
                expected = Some(lsn + ss as Lsn);
            } else {
                open_tail = Some(OpenTail {
                    lid: w.lid,
                    lsn,
                    salt: w.salt,
                    end: w.end,
                });
                expected = None;
            }
        } else {
            expected = None;
            discarded.push(w.lid);
        }
    }
    // 4. Replay in lsn order.
    accepted.sort_by_key(|&(lsn, _)| lsn);
    let mut pages: FxHashMap<u64, PageState> = FxHashMap::default();
    for &(_, w) in &accepted {
        for r in &w.records {
            let fragment = Fragment {
                lsn: r.lsn,
                ptr: match r.blob() {
                    Some(blob) => DiskPtr::Blob {
                        lid: w.lid + r.offset,
                        blob,
                    },
                    None => DiskPtr::Inline(w.lid + r.offset),
                },
                size: r.size,
            };
            match r.kind {
                MessageKind::Full | MessageKind::BlobPointer => match pages.get_mut(&r.pid) {
                    Some(PageState::Present(frags)) => {
                        frags.clear();
                        frags.push(fragment);
                    }
                    Some(state) => *state = PageState::Present(vec![fragment]),
                    None => {
                        pages.insert(r.pid, PageState::Present(vec![fragment]));
                    }
                },
                MessageKind::Delta => {
                    if let Some(PageState::Present(frags)) = pages.get_mut(&r.pid) {
                        frags.push(fragment);
                    }
                }
                MessageKind::Free => {
                    pages.insert(r.pid, PageState::Freed(fragment));
                }
                MessageKind::Pad | MessageKind::Checkpoint => {}
            }
        }
    }
    let last = accepted.last().map(|&(lsn, w)| (lsn, w.lid));
    let end = match (open_tail, last) {
        (Some(t), _) => t.lsn + t.end as Lsn,
        (None, Some((lsn, _))) => lsn + ss as Lsn,
        (None, None) => 0,
    };
    if trusted > end {
        return Err(ScanError::StableSegmentMissing {
            vouched: trusted,
            end,
        });
    }
    Ok(Scan {
        snapshot: Snapshot {
            pages: pages.into_iter().collect(),
            last_lid: last.map(|(_, lid)| lid),
            last_lsn: last.map_or(-1, |(lsn, _)| lsn + ss as Lsn - 1),
            max_header_stable_lsn: trusted,
            resume: None,
        },
        resume_lsn: last.map_or(0, |(lsn, _)| lsn + ss as Lsn),
        discarded,
        open_tail,
        file_len,
    })
}
