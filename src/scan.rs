//! The recovery scanner: reads a file written in the reference
//! [`format`](mod@crate::format) and produces the [`Snapshot`] that
//! [`Accountant::from_snapshot`](crate::Accountant::from_snapshot) rebuilds
//! from, plus where to resume writing and which segments to invalidate.
//!
//! 1. Every segment header of the file is read; valid ones (magic,
//!    checksum, segment size) are ordered by lsn. Two valid headers with
//!    one lsn are an error: recovery never lets that happen.
//! 2. `trusted` is the highest stable lsn any valid header vouches for.
//!    Segments wholly below it are trusted: durable by the vouching
//!    writer's sync. One that does not decode is corruption, reported.
//! 3. The unstable tail is walked from the segment containing `trusted`
//!    (from the lowest segment when nothing is vouched for) only while lsns
//!    are consecutive; the walk stops at a gap or at the first torn segment
//!    (bad checksum, wrong lsn or pad tag, short data). A torn segment is
//!    discarded whole. Valid segments past the stop are `discarded`: the
//!    caller must invalidate their headers durably before writing
//!    ([recovery rule 5](crate::properties#recovery-rules)), since new
//!    segments reuse their lsns. An
//!    invalidated header keeps the scan's vouched stable lsn, so scanning
//!    again after invalidation trusts the same log (idempotence).
//! 4. Accepted segments are replayed in lsn order: a full image or blob
//!    pointer makes the page's state that one fragment, a delta adds a
//!    fragment (a delta with no base is a leftover of a stale segment and
//!    is ignored), a free record frees the page. Torn data is never
//!    replayed.

use std::collections::BTreeMap;

use crate::format::{decode_segment, FormatError, MessageKind, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::recovery::{Fragment, PageState, Snapshot};
use crate::storage::Storage;
use crate::types::{DiskPtr, Lid, Lsn};

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
    /// A segment below the vouched stable lsn does not decode: durable data
    /// is damaged.
    #[error("stable segment at lid {lid} is corrupt: {source}")]
    CorruptStableSegment {
        /// Its lid.
        lid: Lid,
        /// What is wrong.
        source: FormatError,
    },
    /// A header vouches that the log is stable up to `vouched`, but the
    /// log ends before it: stable segments are missing (durable data
    /// damaged).
    #[error("a header vouches for the log up to {vouched}, but it ends at {end}")]
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

/// Scans the log in `storage`, written with segments of `segment_size`.
pub fn scan(storage: &dyn Storage, segment_size: u64) -> Result<Scan, ScanError> {
    if !segment_size.is_power_of_two()
        || segment_size < SEGMENT_HEADER_LEN as u64 * 2
        || segment_size > u32::MAX as u64
    {
        return Err(ScanError::SegmentSize(segment_size));
    }
    let file_len = storage.len()?;
    let ss = segment_size;
    // 1. Headers.
    let mut by_lsn: BTreeMap<Lsn, (Lid, SegmentHeader)> = BTreeMap::new();
    // Stable lsns vouched for by invalidated headers.
    let mut vouched: Lsn = -1;
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    let mut lid = 0;
    while lid + SEGMENT_HEADER_LEN as u64 <= file_len {
        storage.read_at(lid, &mut header)?;
        if let Ok(h) = SegmentHeader::decode(&header) {
            if h.invalidated && h.segment_size as u64 == ss {
                vouched = vouched.max(h.stable_lsn);
            } else if h.segment_size as u64 == ss && h.lsn as u64 % ss == 0 {
                if let Some(&(first, _)) = by_lsn.get(&h.lsn) {
                    return Err(ScanError::DuplicateLsn {
                        lsn: h.lsn,
                        first,
                        second: lid,
                    });
                }
                by_lsn.insert(h.lsn, (lid, h));
            }
        }
        lid += ss;
    }
    // 2. Trusted segments.
    let trusted = by_lsn
        .values()
        .map(|(_, h)| h.stable_lsn)
        .max()
        .unwrap_or(-1)
        .max(vouched);
    let mut accepted: Vec<(Lsn, Lid, Vec<crate::format::Message>)> = Vec::new();
    let mut buf = vec![0u8; ss as usize];
    let read_segment =
        |lid: Lid, buf: &mut Vec<u8>| -> Result<Option<crate::format::DecodedSegment>, ScanError> {
            if lid + ss > file_len {
                return Ok(None);
            }
            storage.read_at(lid, buf)?;
            Ok(decode_segment(buf, ss).ok())
        };
    let mut tail = Vec::new();
    for (&lsn, &(lid, _)) in &by_lsn {
        if trusted >= 0 && lsn + ss as Lsn <= trusted {
            match read_segment(lid, &mut buf)? {
                Some(d) => accepted.push((lsn, lid, d.messages)),
                None => {
                    let source = if lid + ss > file_len {
                        FormatError::ShortData {
                            needed: ss as usize,
                            available: (file_len - lid) as usize,
                        }
                    } else {
                        decode_segment(&buf, ss)
                            .err()
                            .unwrap_or(FormatError::NoHeader)
                    };
                    return Err(ScanError::CorruptStableSegment { lid, source });
                }
            }
        } else {
            tail.push((lsn, lid));
        }
    }
    // 3. The unstable tail: consecutive and intact only.
    let mut expected = if trusted >= 0 {
        Some(trusted - trusted % ss as Lsn)
    } else {
        tail.first().map(|&(lsn, _)| lsn)
    };
    let mut discarded = Vec::new();
    for &(lsn, lid) in &tail {
        let next_ok = expected == Some(lsn);
        let decoded = if next_ok {
            read_segment(lid, &mut buf)?
        } else {
            None
        };
        match decoded {
            Some(d) => {
                accepted.push((lsn, lid, d.messages));
                expected = Some(lsn + ss as Lsn);
            }
            None => {
                expected = None;
                discarded.push(lid);
            }
        }
    }
    // 4. Replay in lsn order.
    accepted.sort_by_key(|&(lsn, _, _)| lsn);
    let mut pages: BTreeMap<u64, PageState> = BTreeMap::new();
    for (_, lid, messages) in &accepted {
        for m in messages {
            let fragment = Fragment {
                lsn: m.lsn,
                ptr: match m.blob {
                    Some(blob) => DiskPtr::Blob {
                        lid: lid + m.offset,
                        blob,
                    },
                    None => DiskPtr::Inline(lid + m.offset),
                },
                size: m.size,
            };
            match m.kind {
                MessageKind::Full | MessageKind::BlobPointer => {
                    pages.insert(m.pid, PageState::Present(vec![fragment]));
                }
                MessageKind::Delta => {
                    if let Some(PageState::Present(frags)) = pages.get_mut(&m.pid) {
                        frags.push(fragment);
                    }
                }
                MessageKind::Free => {
                    pages.insert(m.pid, PageState::Freed(fragment));
                }
                MessageKind::Pad => {}
            }
        }
    }
    let last = accepted.last().map(|&(lsn, lid, _)| (lsn, lid));
    let end = last.map_or(0, |(lsn, _)| lsn + ss as Lsn);
    if trusted > end {
        return Err(ScanError::StableSegmentMissing {
            vouched: trusted,
            end,
        });
    }
    Ok(Scan {
        snapshot: Snapshot {
            pages,
            last_lid: last.map(|(_, lid)| lid),
            last_lsn: last.map_or(-1, |(lsn, _)| lsn + ss as Lsn - 1),
            max_header_stable_lsn: trusted,
        },
        resume_lsn: last.map_or(0, |(lsn, _)| lsn + ss as Lsn),
        discarded,
        file_len,
    })
}
