//! A small log-structured page store on the accountant and the reference
//! segment format, shared by the crash simulation (and the demo's write
//! path).
//!
//! One write head per stream of the configuration (one by default): each
//! head's segment is built in memory with `format::SegmentBuilder` and
//! written whole when it is full; segment lsns come from one counter, so
//! heads interleave in the log. Full page images replace every earlier
//! fragment of the page (`mark_replace`); deletes write a free record.
//! User writes go to the stream `stream_for_write` advises, relocations to
//! the one `clean_placed` advises; a page's writes keep increasing lsns
//! (a head whose segment is older than the page's newest fragment is
//! rolled first). `flush` syncs the file: every segment below the lowest
//! open head is then durable, a segment header written after the sync
//! vouches for that, and once such a header is itself durable the store
//! calls `stabilize` with it (the slowest head holds the stable lsn back).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use segment_accountant::format::{self, MessageKind, SegmentBuilder};
use segment_accountant::scan::Scan;
use segment_accountant::{
    Accountant, Collector, Config, DiskPtr, Lid, Lsn, PageId, PageState, Storage,
};

/// What the store knows of one page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The fragments of its current state (one: a full image or a free
    /// record).
    pub ptrs: Vec<DiskPtr>,
    /// The version of its value (0 when deleted).
    pub version: u64,
    /// Whether its latest state is a free record.
    pub deleted: bool,
}

/// The payload of version `version` of page `pid`, `len` bytes (at least
/// 16; 0 picks a length from 16 to 112 by the version): deterministic, so
/// a read can be checked byte for byte.
pub fn payload(pid: PageId, version: u64, len: usize) -> Vec<u8> {
    let len = if len == 0 {
        16 + ((pid * 31 + version * 17) % 97) as usize
    } else {
        len.max(16)
    };
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&pid.to_le_bytes());
    let mut x = pid ^ version.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(x as u8);
    }
    out
}

/// Decodes a payload written by [`payload`]; `None` if it is not one.
pub fn check_payload(pid: PageId, bytes: &[u8]) -> Option<u64> {
    if bytes.len() < 16 {
        return None;
    }
    let version = u64::from_le_bytes(bytes[..8].try_into().ok()?);
    (payload(pid, version, bytes.len()) == bytes).then_some(version)
}

/// A head whose segment falls this many segments behind the log's newest
/// is written as it is and rolled.
const MAX_LAG: i64 = 8;

/// One write head: the segment being filled.
#[derive(Clone)]
struct Head {
    builder: SegmentBuilder,
    lsn: Lsn,
    lid: Lid,
}

pub struct Store {
    pub acc: Accountant,
    storage: Arc<dyn Storage>,
    ss: u64,
    heads: Vec<Head>,
    /// The lsn the next rolled segment gets (one counter for all heads).
    next_lsn: Lsn,
    /// End of the consecutive log known durable (the next header vouches
    /// for it).
    durable_end: Lsn,
    /// Segments written since the last sync: the stable lsn their header
    /// vouches for.
    unsynced_headers: Vec<Lsn>,
    /// The highest stable lsn vouched for by a durable header: what the
    /// store has passed to `stabilize`.
    pub vouched: Lsn,
    pub pages: HashMap<PageId, Page>,
    /// Bytes the store wrote (for write amplification).
    pub bytes_written: u64,
    /// Segments `next` handed out below the tip (reuses).
    pub reuses: u64,
    /// Value size of `put` (0: varying, 16 to 112 bytes).
    pub value_size: usize,
    /// Payload bytes of user writes (puts and deletes), for write
    /// amplification.
    pub user_bytes: u64,
}

/// Errors of the store: the accountant's or the storage's.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

impl Store {
    /// A store over an empty file.
    pub fn create(config: Config, storage: Arc<dyn Storage>) -> Result<Store> {
        let acc = Accountant::with_collector(config.clone(), storage.clone(), Collector::new());
        Self::start(config, storage, acc, 0, -1, HashMap::new())
    }

    fn start(
        config: Config,
        storage: Arc<dyn Storage>,
        acc: Accountant,
        resume_lsn: Lsn,
        vouched: Lsn,
        pages: HashMap<PageId, Page>,
    ) -> Result<Store> {
        let ss = config.segment_size();
        let mut heads = Vec::new();
        let mut lsn = resume_lsn;
        for stream in 0..config.stream_count() {
            let lid = acc.next_in(lsn, stream)?;
            heads.push(Head {
                builder: SegmentBuilder::new(ss, lsn, resume_lsn),
                lsn,
                lid,
            });
            lsn += ss as Lsn;
        }
        Ok(Store {
            acc,
            storage,
            ss,
            heads,
            next_lsn: lsn,
            durable_end: resume_lsn,
            unsynced_headers: Vec::new(),
            vouched,
            pages,
            bytes_written: 0,
            reuses: 0,
            value_size: 0,
            user_bytes: 0,
        })
    }

    /// Recovers from whatever the file holds: scan, invalidate the
    /// discarded tail durably, rebuild the accountant and the page table.
    /// Returns the store and the scan it was built from.
    pub fn recover(config: Config, storage: Arc<dyn Storage>) -> Result<(Store, Scan)> {
        let ss = config.segment_size();
        let (acc, found) = Accountant::recover(config.clone(), storage.clone(), Collector::new())?;
        let mut pages = HashMap::new();
        for (&pid, state) in &found.snapshot.pages {
            let page = match state {
                PageState::Freed(f) => Page {
                    ptrs: vec![f.ptr],
                    version: 0,
                    deleted: true,
                },
                PageState::Present(frags) => {
                    let last = frags.last().ok_or("present page without fragments")?;
                    let version = read_version(&*storage, ss, pid, last.ptr)?
                        .ok_or("a recovered page's fragment does not read back")?;
                    Page {
                        ptrs: frags.iter().map(|f| f.ptr).collect(),
                        version,
                        deleted: false,
                    }
                }
            };
            pages.insert(pid, page);
        }
        let vouched = found.snapshot.max_header_stable_lsn;
        let store = Self::start(config, storage, acc, found.resume_lsn, vouched, pages)?;
        Ok((store, found))
    }

    /// Appends a message at head `stream`, rolling it to a new segment
    /// when full or when its segment is older than `after` (the lsn of the
    /// page's newest fragment); returns its lsn, pointer and size.
    fn append(
        &mut self,
        stream: u8,
        after: Lsn,
        kind: MessageKind,
        pid: PageId,
        data: &[u8],
    ) -> Result<(Lsn, DiskPtr, u64)> {
        let s = stream as usize;
        if self.heads[s].lsn < after {
            self.roll(stream)?;
        }
        let (lsn, offset) = match self.heads[s].builder.append(kind, pid, data) {
            Some(at) => at,
            None => {
                self.roll(stream)?;
                self.heads[s]
                    .builder
                    .append(kind, pid, data)
                    .ok_or("a message larger than a segment")?
            }
        };
        let size = format::message_size(data.len() as u64);
        Ok((lsn, DiskPtr::Inline(self.heads[s].lid + offset), size))
    }

    /// Writes head `stream`'s segment whole and starts its next one at the
    /// log's next segment lsn; then rolls every head left more than
    /// [`MAX_LAG`] segments behind, so no head holds the stable lsn (and
    /// with it every free) back for long.
    pub fn roll(&mut self, stream: u8) -> Result<()> {
        self.roll_one(stream)?;
        loop {
            let oldest_allowed = self.next_lsn - (MAX_LAG + 1) * self.ss as Lsn;
            let lagging = self.heads.iter().position(|h| h.lsn < oldest_allowed);
            match lagging {
                Some(s) => self.roll_one(s as u8)?,
                None => return Ok(()),
            }
        }
    }

    fn roll_one(&mut self, stream: u8) -> Result<()> {
        let next_lsn = self.next_lsn;
        let tip = self.acc.tip();
        let next_lid = self.acc.next_in(next_lsn, stream)?;
        self.next_lsn += self.ss as Lsn;
        if next_lid + self.ss <= tip {
            self.reuses += 1;
        }
        let head = &mut self.heads[stream as usize];
        let full = std::mem::replace(
            &mut head.builder,
            SegmentBuilder::new(self.ss, next_lsn, self.durable_end),
        );
        let lid = std::mem::replace(&mut head.lid, next_lid);
        head.lsn = next_lsn;
        let header_vouches = full_header_stable(&full);
        let bytes = full.finish();
        self.storage.write_at(lid, &bytes)?;
        self.bytes_written += bytes.len() as u64;
        self.unsynced_headers.push(header_vouches);
        Ok(())
    }

    /// The lowest lsn of an open head: every segment below it is written.
    fn lowest_open(&self) -> Lsn {
        self.heads.iter().map(|h| h.lsn).min().expect("a head")
    }

    /// The lsn of the newest fragment of `pid` (−1 for a new page).
    fn newest_fragment(&self, pid: PageId) -> Lsn {
        let ss = self.ss;
        self.pages.get(&pid).map_or(-1, |page| {
            page.ptrs
                .iter()
                .filter_map(|p| self.acc.segment_info((p.lid() / ss) as usize)?.lsn)
                .max()
                .unwrap_or(-1)
        })
    }

    /// The stream for a full rewrite of `pid`, as the accountant advises.
    fn user_stream(&self, pid: PageId) -> u8 {
        let old = self.pages.get(&pid).map_or(&[][..], |p| &p.ptrs[..]);
        self.acc.stream_for_write(self.next_lsn, old)
    }

    /// Syncs the file; stabilizes with what durable headers now vouch for.
    pub fn flush(&mut self) -> Result<()> {
        self.storage.sync()?;
        // Every segment below the lowest open head is written and now
        // durable.
        self.durable_end = self.lowest_open();
        if let Some(&max) = self.unsynced_headers.iter().max() {
            self.vouched = self.vouched.max(max);
        }
        self.unsynced_headers.clear();
        if self.vouched > 0 {
            self.acc.stabilize(self.vouched)?;
        }
        self.acc.flush();
        Ok(())
    }

    /// Writes version `version` of page `pid` (a full image).
    pub fn put(&mut self, pid: PageId, version: u64) -> Result<Lsn> {
        let data = payload(pid, version, self.value_size);
        let (stream, after) = (self.user_stream(pid), self.newest_fragment(pid));
        let (lsn, ptr, size) = self.append(stream, after, MessageKind::Full, pid, &data)?;
        self.user_bytes += size;
        self.record(pid, lsn, ptr, size)?;
        self.pages.insert(
            pid,
            Page {
                ptrs: vec![ptr],
                version,
                deleted: false,
            },
        );
        Ok(lsn)
    }

    /// Writes version `version` of page `pid` as a delta on its current
    /// image (`mark_link`: the earlier fragments stay live). No-op for an
    /// unknown or deleted page.
    pub fn delta(&mut self, pid: PageId, version: u64) -> Result<Option<Lsn>> {
        match self.pages.get(&pid) {
            Some(page) if !page.deleted => {}
            _ => return Ok(None),
        }
        let data = payload(pid, version, 24);
        let after = self.newest_fragment(pid);
        let (lsn, ptr, size) = self.append(0, after, MessageKind::Delta, pid, &data)?;
        self.user_bytes += size;
        self.acc.mark_link(pid, lsn, ptr, size)?;
        let page = self.pages.get_mut(&pid).expect("known page");
        page.ptrs.push(ptr);
        page.version = version;
        Ok(Some(lsn))
    }

    /// Deletes page `pid` with a free record (no-op for an unknown page).
    pub fn delete(&mut self, pid: PageId) -> Result<Option<Lsn>> {
        if !self.pages.contains_key(&pid) {
            return Ok(None);
        }
        let (stream, after) = (self.user_stream(pid), self.newest_fragment(pid));
        let (lsn, ptr, size) = self.append(stream, after, MessageKind::Free, pid, &[])?;
        self.record(pid, lsn, ptr, size)?;
        self.pages.insert(
            pid,
            Page {
                ptrs: vec![ptr],
                version: 0,
                deleted: true,
            },
        );
        Ok(Some(lsn))
    }

    fn record(&mut self, pid: PageId, lsn: Lsn, ptr: DiskPtr, size: u64) -> Result<()> {
        match self.pages.get(&pid) {
            Some(old) => self.acc.mark_replace(pid, lsn, &old.ptrs, ptr, size)?,
            None => self.acc.mark_link(pid, lsn, ptr, size)?,
        }
        Ok(())
    }

    /// Asks `clean_placed` for a page and rewrites it in the stream it
    /// advises; returns the page and the lsn of its new copy.
    pub fn relocate(&mut self, ignore: PageId) -> Result<Option<(PageId, Lsn)>> {
        let Some(placed) = self.acc.clean_placed(ignore) else {
            return Ok(None);
        };
        let pid = placed.pid;
        let Some(page) = self.pages.get(&pid).cloned() else {
            return Err(format!("clean suggested unknown page {pid}").into());
        };
        let after = self.newest_fragment(pid);
        let (kind, data) = if page.deleted {
            (MessageKind::Free, Vec::new())
        } else {
            (
                MessageKind::Full,
                payload(pid, page.version, self.value_size),
            )
        };
        let (lsn, ptr, size) = self.append(placed.stream, after, kind, pid, &data)?;
        self.record(pid, lsn, ptr, size)?;
        self.pages.get_mut(&pid).expect("known").ptrs = vec![ptr];
        Ok(Some((pid, lsn)))
    }

    /// Simulates a torn write of the segment being filled (the lowest
    /// open head's): writes the first half of it over the file (a crash
    /// during its write).
    pub fn tear_head(&self) -> Result<()> {
        let head = self.heads.iter().min_by_key(|h| h.lsn).expect("a head");
        let bytes = head.builder.clone().finish();
        self.storage.write_at(head.lid, &bytes[..bytes.len() / 2])?;
        Ok(())
    }

    /// The lowest lsn a message may get next (for the caller's history).
    pub fn head_lsn(&self) -> Lsn {
        self.lowest_open()
    }
}

fn full_header_stable(builder: &SegmentBuilder) -> Lsn {
    builder.header().stable_lsn
}

/// Reads the message at `ptr` and returns the version it holds for `pid`,
/// or `None` if it does not read back as a full image or delta of `pid`.
pub fn read_version(
    storage: &dyn Storage,
    ss: u64,
    pid: PageId,
    ptr: DiskPtr,
) -> Result<Option<u64>> {
    let lid = ptr.lid();
    let base = lid - lid % ss;
    let mut segment = vec![0u8; ss as usize];
    if storage.read_at(base, &mut segment).is_err() {
        return Ok(None);
    }
    let Ok(decoded) = format::decode_segment(&segment, ss) else {
        return Ok(None);
    };
    let offset = lid - base;
    Ok(decoded
        .messages
        .iter()
        .find(|m| {
            m.offset == offset
                && m.pid == pid
                && matches!(m.kind, MessageKind::Full | MessageKind::Delta)
        })
        .and_then(|m| check_payload(pid, &m.payload)))
}
