//! A small log-structured page store on the accountant and the reference
//! segment format, shared by the crash simulation (and the demo's write
//! path).
//!
//! One write head: each segment is built in memory with
//! `format::SegmentBuilder` and written whole when it is full. Full page
//! images replace every earlier fragment of the page (`mark_replace`);
//! deletes write a free record. `flush` syncs the file; a segment header
//! written after a sync vouches that everything before it is durable, and
//! once that header is itself durable the store calls `stabilize` with it.
//! `relocate` asks `clean` for a page and rewrites it at the head.

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

pub struct Store {
    pub acc: Accountant,
    storage: Arc<dyn Storage>,
    ss: u64,
    head: SegmentBuilder,
    head_lsn: Lsn,
    head_lid: Lid,
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
        let head_lid = acc.next(resume_lsn)?;
        Ok(Store {
            acc,
            storage,
            ss,
            head: SegmentBuilder::new(ss, resume_lsn, resume_lsn),
            head_lsn: resume_lsn,
            head_lid,
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

    /// Appends a message at the head, rolling to a new segment when full;
    /// returns its lsn, pointer and size.
    fn append(
        &mut self,
        kind: MessageKind,
        pid: PageId,
        data: &[u8],
    ) -> Result<(Lsn, DiskPtr, u64)> {
        let (lsn, offset) = match self.head.append(kind, pid, data) {
            Some(at) => at,
            None => {
                self.roll()?;
                self.head
                    .append(kind, pid, data)
                    .ok_or("a message larger than a segment")?
            }
        };
        let size = format::message_size(data.len() as u64);
        Ok((lsn, DiskPtr::Inline(self.head_lid + offset), size))
    }

    /// Writes the head segment whole and starts the next one.
    pub fn roll(&mut self) -> Result<()> {
        let next_lsn = self.head_lsn + self.ss as Lsn;
        let tip = self.acc.tip();
        let next_lid = self.acc.next(next_lsn)?;
        if next_lid + self.ss <= tip {
            self.reuses += 1;
        }
        let full = std::mem::replace(
            &mut self.head,
            SegmentBuilder::new(self.ss, next_lsn, self.durable_end),
        );
        let header_vouches = full_header_stable(&full);
        let bytes = full.finish();
        self.storage.write_at(self.head_lid, &bytes)?;
        self.bytes_written += bytes.len() as u64;
        self.unsynced_headers.push(header_vouches);
        self.head_lsn = next_lsn;
        self.head_lid = next_lid;
        Ok(())
    }

    /// Syncs the file; stabilizes with what durable headers now vouch for.
    pub fn flush(&mut self) -> Result<()> {
        self.storage.sync()?;
        // Every segment before the head is written and now durable.
        self.durable_end = self.head_lsn;
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
        let (lsn, ptr, size) = self.append(MessageKind::Full, pid, &data)?;
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
        let (lsn, ptr, size) = self.append(MessageKind::Delta, pid, &data)?;
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
        let (lsn, ptr, size) = self.append(MessageKind::Free, pid, &[])?;
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

    /// Asks `clean` for a page and rewrites it at the head; returns it.
    pub fn relocate(&mut self, ignore: PageId) -> Result<Option<PageId>> {
        let Some(pid) = self.acc.clean(ignore) else {
            return Ok(None);
        };
        let Some(page) = self.pages.get(&pid).cloned() else {
            return Err(format!("clean suggested unknown page {pid}").into());
        };
        if page.deleted {
            let (lsn, ptr, size) = self.append(MessageKind::Free, pid, &[])?;
            self.record(pid, lsn, ptr, size)?;
            self.pages.get_mut(&pid).expect("known").ptrs = vec![ptr];
        } else {
            let data = payload(pid, page.version, self.value_size);
            let (lsn, ptr, size) = self.append(MessageKind::Full, pid, &data)?;
            self.record(pid, lsn, ptr, size)?;
            self.pages.get_mut(&pid).expect("known").ptrs = vec![ptr];
        }
        Ok(Some(pid))
    }

    /// Simulates a torn write of the segment being filled: writes the first
    /// half of it over the file (a crash during its write).
    pub fn tear_head(&self) -> Result<()> {
        let bytes = self.head.clone().finish();
        self.storage
            .write_at(self.head_lid, &bytes[..bytes.len() / 2])?;
        Ok(())
    }

    /// The lsn the next message will get (for the caller's history).
    pub fn head_lsn(&self) -> Lsn {
        self.head_lsn
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
