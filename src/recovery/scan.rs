//! The recovery scanner: reads a file written in the reference
//! [`format`](mod@crate::format) and produces the [`Snapshot`] that
//! [`Accountant::from_snapshot`](crate::Accountant::from_snapshot) rebuilds
//! from, plus where to resume writing, which segments to invalidate and
//! which to complete.
//!
//! The file is read once, front to back, in reads of [`read_size`] bytes
//! into one buffer. Nothing of a message but its header is kept: the
//! records of every segment go into one vector, and the replay sorts the
//! accepted ones by page (a radix sort) instead of building a map of pages
//! message by message.
//!
//! 1. Every segment is walked ([`walk_segment`](crate::format::walk_segment)): its header, then its
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
use std::ops::Range;

use crate::recovery::format::{
    check_walkable, walk_messages, FormatError, MessageKind, Record, SegmentHeader,
    SEGMENT_HEADER_LEN,
};
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
    /// Its valid prefix's page records, in the scan's one vector of them.
    records: Range<usize>,
    end: u64,
    complete: bool,
    stop: Option<FormatError>,
    available: u64,
}

/// Bytes the scan reads at once, before rounding to whole segments (reads
/// of 64 KiB to 4 MiB scan a 283 MiB log equally fast, within the noise:
/// docs/performance.md).
const READ_SIZE: u64 = 4 << 20;

/// Bytes [`scan`] reads at once for segments of `segment_size`: whole
/// segments, at least one (about 4 MiB for small segments). A comparison
/// with a plain read of the file should read this much at once.
pub fn read_size(segment_size: u64) -> u64 {
    (READ_SIZE / segment_size.max(1)).max(1) * segment_size.max(1)
}

/// What the replay needs of one page record (a walk's [`Record`] that is
/// not a checkpoint), in less room: the scan keeps one for every message
/// of the file.
#[derive(Clone, Copy)]
struct PageRecord {
    pid: u64,
    lsn: Lsn,
    /// Where it is in the file.
    at: u64,
    /// The blob id, for a blob pointer.
    blob: u64,
    size: u32,
    kind: MessageKind,
}

impl PageRecord {
    fn fragment(&self) -> Fragment {
        Fragment {
            lsn: self.lsn,
            ptr: if self.kind == MessageKind::BlobPointer {
                DiskPtr::Blob {
                    lid: self.at,
                    blob: self.blob,
                }
            } else {
                DiskPtr::Inline(self.at)
            },
            size: self.size as u64,
        }
    }
}

/// Sorts `records` by page, stably (so each page's records stay in the
/// order they came in): a least-significant-digit radix sort on the page
/// id's bytes, skipping the bytes every record shares (most of them, for
/// pids below a few million), so a few linear passes instead of a
/// comparison sort's n log n. `scratch` is as long as `records`; what it
/// holds is overwritten.
fn sort_by_pid(records: &mut Vec<PageRecord>, scratch: &mut Vec<PageRecord>) {
    debug_assert_eq!(records.len(), scratch.len());
    let mut counts = [[0usize; 256]; 8];
    for r in records.iter() {
        for (byte, count) in counts.iter_mut().enumerate() {
            count[(r.pid >> (8 * byte)) as u8 as usize] += 1;
        }
    }
    for (byte, count) in counts.iter().enumerate() {
        if count.contains(&records.len()) {
            continue;
        }
        let mut next = [0usize; 256];
        let mut sum = 0;
        for (next, &n) in next.iter_mut().zip(count) {
            *next = sum;
            sum += n;
        }
        for r in records.iter() {
            let digit = (r.pid >> (8 * byte)) as u8 as usize;
            scratch[next[digit]] = *r;
            next[digit] += 1;
        }
        std::mem::swap(records, scratch);
    }
}

/// Reads the file front to back in reads of `chunk` bytes (the last
/// shorter) into one buffer, handing each to `visit` with its offset; stops
/// where less than a segment header is left.
fn read_sequential(
    storage: &dyn LogFile,
    file_len: u64,
    chunk: u64,
    mut visit: impl FnMut(u64, &[u8]) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    let mut buf = Vec::new();
    let mut base = 0;
    while base + SEGMENT_HEADER_LEN as u64 <= file_len {
        let len = chunk.min(file_len - base) as usize;
        // Zero-filled once, when the buffer grows; reads overwrite it.
        if buf.len() < len {
            buf.resize(len, 0);
        }
        storage.read_at(base, &mut buf[..len])?;
        visit(base, &buf[..len])?;
        base += len as u64;
    }
    Ok(())
}

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
    let mut records: Vec<PageRecord> = Vec::new();
    let mut trusted: Lsn = -1;
    let chunk = read_size(ss);
    let visit = |base: u64, buf: &[u8]| -> Result<(), ScanError> {
        for (i, bytes) in buf.chunks(ss as usize).enumerate() {
            let lid = base + i as u64 * ss;
            if bytes.len() < SEGMENT_HEADER_LEN {
                continue;
            }
            let header = match SegmentHeader::decode(bytes) {
                Ok(h) if h.segment_size as u64 == ss => h,
                _ => continue,
            };
            if header.invalidated {
                trusted = trusted.max(header.stable_lsn);
                continue;
            }
            if check_walkable(&header, ss).is_err() {
                continue;
            }
            let first = records.len();
            let walk = walk_messages(bytes, ss as usize, &header, |r: Record| {
                if r.kind != MessageKind::Checkpoint {
                    records.push(PageRecord {
                        pid: r.pid,
                        lsn: r.lsn,
                        at: lid + r.offset,
                        blob: r.blob().unwrap_or(0),
                        // At most the segment size (at most 2^31).
                        size: r.size as u32,
                        kind: r.kind,
                    });
                }
            });
            trusted = trusted.max(walk.max_vouch);
            let walked = Walked {
                lid,
                salt: header.salt,
                records: first..records.len(),
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
        Ok(())
    };
    read_sequential(storage, file_len, chunk, visit)?;
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
    accepted.sort_by_key(|&(lsn, _)| lsn);
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
    // 4. Replay in lsn order: a page's state is its last full image, blob
    //    pointer or free record, with the deltas after a full image or
    //    blob pointer. The records of accepted segments, copied out in log
    //    order, are sorted stably by page, so each page's records are one
    //    run, in log order.
    let mut replay: Vec<PageRecord> =
        Vec::with_capacity(accepted.iter().map(|(_, w)| w.records.len()).sum());
    for &(_, w) in &accepted {
        replay.extend_from_slice(&records[w.records.clone()]);
    }
    // The file's records, no longer needed, are the sort's scratch (they
    // are at least as many).
    records.truncate(replay.len());
    sort_by_pid(&mut replay, &mut records);
    drop(records);
    let mut pages: Vec<(u64, PageState)> = Vec::new();
    for run in replay.chunk_by(|a, b| a.pid == b.pid) {
        // The last record that sets the page's state; deltas before it
        // (or with none: deltas with no base) are not part of it.
        let Some(base) = run.iter().rposition(|r| r.kind != MessageKind::Delta) else {
            continue;
        };
        let state = if run[base].kind == MessageKind::Free {
            PageState::Freed(run[base].fragment())
        } else {
            PageState::Present(run[base..].iter().map(PageRecord::fragment).collect())
        };
        pages.push((run[0].pid, state));
    }
    Ok(Scan {
        snapshot: Snapshot {
            // Sorted by page already: the map is built in one pass.
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
