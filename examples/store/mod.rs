//! A concurrent log-structured page store on the accountant and the
//! reference segment format, shared by the demo, the crash simulation and
//! the end-to-end benchmark. `src/guide.rs` walks through its write path
//! step by step.
//!
//! - **Writers** (any number of threads) reserve room in their head's open
//!   buffer with one atomic `fetch_add` (`buffer.rs`), encode their record
//!   straight into it, call `mark_link` / `mark_replace`, and release. A
//!   writer whose record does not fit seals the buffer and installs the
//!   head's next segment (`next_in`). A page's own writes are ordered by a
//!   per-page latch (one of 1024 striped latches, which also guard the
//!   page table); nothing else is shared by all writers.
//! - **The flusher** (`flush`, one caller at a time) seals every head's
//!   buffer that holds records, so a flush never waits for a segment to
//!   fill: the head goes on in the rest of the same segment. It writes
//!   every sealed buffer whose writers are done (a segment's later pieces
//!   only once the piece with its header is durable), syncs once for all
//!   of them (group commit), and then calls `stabilize` with the highest
//!   stable lsn that a *durable* header or checkpoint vouches for, never
//!   with the raw end of what it just synced (spec section 2, rule 4; the
//!   crash simulation's `--unsafe-raw-stable` shows why). When the log is
//!   durable further than anything vouches for, it appends a checkpoint
//!   vouching for it, so an idle store's tail becomes stable too.
//! - **Cleaners** (`relocate`) rewrite the pages `clean_placed` suggests in
//!   the stream it advises.
//! - **Readers** (`get`) pin the epoch collector the accountant defers
//!   frees through while they hold a pointer, and read one record by its
//!   pointer (`format::read_message_at`: one read, one checksum).
//!
//! Recovery (`Store::recover`) is `Accountant::recover` (scan, invalidate
//! the discarded tail, pad the open last segment, sync) and a page table
//! built from the scan; the first headers the store writes vouch for
//! the recovered log's end, and once one of them is durable `stabilize`
//! seals the recovered segments.
//!
//! The store is generic over [`Backend`], implemented for this crate's
//! [`Accountant`] and for the single-mutex baseline, so the benchmark runs
//! the same store on both.

#![allow(dead_code)]

mod buffer;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_epoch::{self as epoch, Atomic, Owned};
use crossbeam_queue::SegQueue;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use segment_accountant::baseline::MutexAccountant;
use segment_accountant::format::{self, MessageKind};
use segment_accountant::placement::{Relocation, Skip};
use segment_accountant::scan::Scan;
use segment_accountant::{
    Accountant, Config, DiskPtr, Lid, LogFile, Lsn, PageId, PageState, SegmentState, Storage,
};

pub use buffer::Buffer;
use buffer::Reserve;

/// Errors of the store: the accountant's, the storage's, or its own.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The accountant calls the store makes: implemented by this crate's
/// [`Accountant`] and by the single-mutex [`MutexAccountant`].
pub trait Backend: Send + Sync + 'static {
    /// The design's name.
    fn name(&self) -> &'static str;
    /// `next_in`.
    fn next_in(&self, lsn: Lsn, stream: u8) -> segment_accountant::Result<Lid>;
    /// `mark_link`.
    fn mark_link(
        &self,
        pid: PageId,
        lsn: Lsn,
        ptr: DiskPtr,
        size: u64,
    ) -> segment_accountant::Result<()>;
    /// `mark_replace`.
    fn mark_replace(
        &self,
        pid: PageId,
        lsn: Lsn,
        old: &[DiskPtr],
        new: DiskPtr,
        size: u64,
    ) -> segment_accountant::Result<()>;
    /// `stabilize`.
    fn stabilize(&self, lsn: Lsn) -> segment_accountant::Result<()>;
    /// `clean`.
    fn clean(&self, skip: Skip) -> Option<Relocation>;
    /// `stream_for_write`.
    fn stream_for_write(&self, lsn: Lsn, old: &[DiskPtr]) -> u8;
    /// Whether the segment of `lid` is Active (being written), if known
    /// cheaply.
    fn segment_active(&self, lid: Lid) -> Option<bool>;
    /// Pushes deferred frees through.
    fn flush_deferred(&self);
}

impl Backend for Accountant {
    fn name(&self) -> &'static str {
        "accountant"
    }
    fn next_in(&self, lsn: Lsn, stream: u8) -> segment_accountant::Result<Lid> {
        Accountant::next_in(self, lsn, stream)
    }
    #[inline]
    fn mark_link(
        &self,
        pid: PageId,
        lsn: Lsn,
        ptr: DiskPtr,
        size: u64,
    ) -> segment_accountant::Result<()> {
        Accountant::mark_link(self, pid, lsn, ptr, size)
    }
    fn mark_replace(
        &self,
        pid: PageId,
        lsn: Lsn,
        old: &[DiskPtr],
        new: DiskPtr,
        size: u64,
    ) -> segment_accountant::Result<()> {
        Accountant::mark_replace(self, pid, lsn, old, new, size)
    }
    fn stabilize(&self, lsn: Lsn) -> segment_accountant::Result<()> {
        Accountant::stabilize(self, lsn)
    }
    fn clean(&self, skip: Skip) -> Option<Relocation> {
        Accountant::clean(self, skip)
    }
    fn stream_for_write(&self, lsn: Lsn, old: &[DiskPtr]) -> u8 {
        Accountant::stream_for_write(self, lsn, old)
    }
    fn segment_active(&self, lid: Lid) -> Option<bool> {
        // O(1): one load of the segment's word (no page-map copy).
        self.segment_brief(lid)
            .map(|b| b.state == SegmentState::Active)
    }
    fn flush_deferred(&self) {
        Accountant::flush(self);
    }
}

/// The baseline, with the relocation stream fixed at construction.
pub struct Baseline {
    pub inner: MutexAccountant,
    relocation_stream: u8,
}

impl Baseline {
    pub fn new(config: Config) -> Baseline {
        let (user, relocation) = config.streams();
        Baseline {
            relocation_stream: if relocation > 0 { user } else { 0 },
            inner: MutexAccountant::new(config),
        }
    }
}

impl Backend for Baseline {
    fn name(&self) -> &'static str {
        "mutex"
    }
    fn next_in(&self, lsn: Lsn, _stream: u8) -> segment_accountant::Result<Lid> {
        self.inner.next(lsn)
    }
    fn mark_link(
        &self,
        pid: PageId,
        lsn: Lsn,
        ptr: DiskPtr,
        size: u64,
    ) -> segment_accountant::Result<()> {
        self.inner.mark_link(pid, lsn, ptr, size)
    }
    fn mark_replace(
        &self,
        pid: PageId,
        lsn: Lsn,
        old: &[DiskPtr],
        new: DiskPtr,
        size: u64,
    ) -> segment_accountant::Result<()> {
        self.inner.mark_replace(pid, lsn, old, new, size)
    }
    fn stabilize(&self, lsn: Lsn) -> segment_accountant::Result<()> {
        self.inner.stabilize(lsn)
    }
    fn clean(&self, skip: Skip) -> Option<Relocation> {
        let ignore = match skip {
            Skip::Page(pid) => pid,
            _ => u64::MAX,
        };
        self.inner
            .clean_from(ignore)
            .map(|(pid, lid, lsn)| Relocation::new(pid, self.relocation_stream, lid, lsn))
    }
    fn stream_for_write(&self, _lsn: Lsn, _old: &[DiskPtr]) -> u8 {
        0
    }
    fn segment_active(&self, _lid: Lid) -> Option<bool> {
        None
    }
    fn flush_deferred(&self) {}
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
    let mut out = Vec::with_capacity(len + 8);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&pid.to_le_bytes());
    let mut x = pid ^ version.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
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

/// One fragment of a page: where, at which lsn, how large.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frag {
    pub ptr: DiskPtr,
    pub lsn: Lsn,
    pub size: u64,
}

/// What the store knows of one page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// Its current state's fragments: a full image and later deltas, or
    /// one free record. The page's value is its last fragment's payload.
    pub frags: SmallVec<[Frag; 2]>,
    /// Whether its latest state is a free record.
    pub deleted: bool,
}

impl Page {
    fn ptrs(&self) -> SmallVec<[DiskPtr; 4]> {
        self.frags.iter().map(|f| f.ptr).collect()
    }

    fn newest_lsn(&self) -> Lsn {
        self.frags.iter().map(|f| f.lsn).max().unwrap_or(-1)
    }
}

/// One of the page table's latches, with the pages it guards and the
/// user bytes written through it (counted here, not in a shared counter).
#[repr(align(128))]
struct Stripe {
    inner: Mutex<StripeInner>,
}

#[derive(Default)]
struct StripeInner {
    pages: FxHashMap<PageId, Page>,
    user_bytes: u64,
}

const STRIPES: usize = 1024;

/// A head: the buffer its writers reserve in.
struct Head {
    current: Atomic<Arc<Buffer>>,
}

impl Drop for Head {
    fn drop(&mut self) {
        // Safety: the store is being dropped; no thread can load it.
        unsafe {
            let current = self.current.load(Ordering::Relaxed, epoch::unprotected());
            if !current.is_null() {
                drop(current.into_owned());
            }
        }
    }
}

/// How the store runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Stabilize with the raw end of the synced log instead of the lsn a
    /// durable header or checkpoint vouches for (unsafe: for the crash
    /// simulation's teeth).
    pub unsafe_raw_stable: bool,
    /// Writers wait (or, without a background flusher, flush themselves)
    /// while this many segments are allocated past the durable end.
    pub max_unflushed_segments: u64,
    /// A head whose segment falls this many segments behind the newest is
    /// rolled by the flusher, so it does not hold the stable lsn back.
    pub max_lag: i64,
    /// Whether a background flusher runs (otherwise writers that hit the
    /// backpressure limit flush themselves).
    pub background_flusher: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            unsafe_raw_stable: false,
            max_unflushed_segments: 64,
            max_lag: 8,
            background_flusher: false,
        }
    }
}

/// The flusher's own state (one flusher at a time holds it; writers never
/// touch it).
#[derive(Default)]
struct FlushState {
    /// Sealed buffers not yet written, from the queue.
    pending: Vec<Arc<Buffer>>,
    /// Written vouches not yet known durable: (end lsn of the vouching
    /// header or checkpoint, vouched stable lsn).
    vouches: Vec<(Lsn, Lsn)>,
    /// The highest stable lsn any written header or checkpoint vouches for.
    vouch_written_max: Lsn,
    /// Segments (by lsn) whose first piece, with the header, is durable:
    /// only their later pieces may be written. (A later piece that reached
    /// the disk while the header piece of its incarnation did not would
    /// sit inside the previous incarnation, under its header.)
    headers_durable: rustc_hash::FxHashSet<Lsn>,
    /// The end lsn of the last checkpoint if it was appended right at the
    /// durable end it vouches for: when the durable end reaches it and
    /// nothing else was written, the store is idle and fully vouched for.
    idle_mark: Lsn,
}

/// What one `relocate` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relocated {
    /// Nothing to clean.
    Nothing,
    /// The suggested page was rewritten since; left alone.
    Skipped(PageId),
    /// The page was rewritten at `lsn`; its value (`None`: a free record).
    Moved {
        pid: PageId,
        lsn: Lsn,
        value: Option<Vec<u8>>,
    },
}

/// What one flush did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flushed {
    /// Buffers written.
    pub buffers: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Whether it synced.
    pub synced: bool,
    /// Whether it appended a checkpoint.
    pub checkpoint: bool,
}

/// The store.
pub struct Store<A: Backend = Accountant> {
    pub acc: A,
    storage: Arc<dyn LogFile>,
    ss: u64,
    options: Options,
    heads: Box<[Head]>,
    /// The lsn the next segment gets (one counter for all heads).
    next_lsn: AtomicI64,
    /// Every log byte below it is durable (synced), consecutively.
    durable_end: AtomicI64,
    /// The highest stable lsn passed to `stabilize`.
    vouched: AtomicI64,
    failed: AtomicBool,
    /// Sealed buffers, from their sealers to the flusher.
    sealed: SegQueue<Arc<Buffer>>,
    flusher: Mutex<FlushState>,
    stripes: Box<[Stripe]>,
    bytes_written: AtomicU64,
    segments_rolled: AtomicU64,
    checkpoints: AtomicU64,
}

impl<A: Backend> std::fmt::Debug for Store<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.acc.name())
            .field("durable_end", &self.durable_end())
            .field("vouched", &self.vouched())
            .finish_non_exhaustive()
    }
}

fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(msg.into().into())
}

impl<A: Backend> Store<A> {
    /// A store over an empty file.
    pub fn create(
        acc: A,
        config: &Config,
        storage: Arc<dyn LogFile>,
        options: Options,
    ) -> Result<Store<A>> {
        Self::start(acc, config, storage, options, 0, -1, Vec::new())
    }

    fn start(
        acc: A,
        config: &Config,
        storage: Arc<dyn LogFile>,
        options: Options,
        resume_lsn: Lsn,
        vouched: Lsn,
        tables: Vec<FxHashMap<PageId, Page>>,
    ) -> Result<Store<A>> {
        let ss = config.segment_size();
        // The stripes' page tables, given (by recovery) or empty.
        let mut tables = tables.into_iter();
        let stripes: Vec<Stripe> = (0..STRIPES)
            .map(|_| Stripe {
                inner: Mutex::new(StripeInner {
                    pages: tables.next().unwrap_or_default(),
                    user_bytes: 0,
                }),
            })
            .collect();
        let mut heads = Vec::new();
        let mut lsn = resume_lsn;
        for stream in 0..config.stream_count() {
            let lid = acc.next_in(lsn, stream)?;
            let buffer = Buffer::fresh(lid, lsn, stream, ss, resume_lsn);
            heads.push(Head {
                current: Atomic::new(Arc::new(buffer)),
            });
            lsn += ss as Lsn;
        }
        Ok(Store {
            acc,
            storage,
            ss,
            options,
            heads: heads.into_boxed_slice(),
            next_lsn: AtomicI64::new(lsn),
            durable_end: AtomicI64::new(resume_lsn),
            vouched: AtomicI64::new(vouched),
            failed: AtomicBool::new(false),
            sealed: SegQueue::new(),
            flusher: Mutex::new(FlushState {
                vouch_written_max: vouched,
                idle_mark: -1,
                ..FlushState::default()
            }),
            stripes: stripes.into_boxed_slice(),
            bytes_written: AtomicU64::new(0),
            segments_rolled: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
        })
    }

    /// The segment size.
    pub fn segment_size(&self) -> u64 {
        self.ss
    }

    /// Every log byte below this is durable.
    pub fn durable_end(&self) -> Lsn {
        self.durable_end.load(Ordering::Acquire)
    }

    /// The highest stable lsn passed to `stabilize`: a write below it is
    /// acknowledged (it survives any crash).
    pub fn vouched(&self) -> Lsn {
        self.vouched.load(Ordering::Acquire)
    }

    /// Whether an error stopped the store (after a crash of its storage).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Stops the store: every later call fails.
    pub fn set_failed(&self) {
        self.failed.store(true, Ordering::Release);
    }

    fn check(&self) -> Result<()> {
        if self.failed() {
            fail("the store has failed")
        } else {
            Ok(())
        }
    }

    /// Bytes written to the file (records, headers, pads).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    /// Payload and header bytes of user writes (puts, deltas, deletes).
    pub fn user_bytes(&self) -> u64 {
        self.stripes.iter().map(|s| s.inner.lock().user_bytes).sum()
    }

    /// Segments the heads rolled to.
    pub fn segments_rolled(&self) -> u64 {
        self.segments_rolled.load(Ordering::Relaxed)
    }

    /// Checkpoints appended.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }

    /// How many streams (heads) the store writes.
    pub fn heads(&self) -> usize {
        self.heads.len()
    }

    /// A copy of the page table (not atomic under concurrent writes).
    pub fn pages(&self) -> Vec<(PageId, Page)> {
        let mut out = Vec::new();
        for s in self.stripes.iter() {
            out.extend(s.inner.lock().pages.iter().map(|(&p, v)| (p, v.clone())));
        }
        out.sort_unstable_by_key(|&(p, _)| p);
        out
    }

    /// The page's entry.
    pub fn page(&self, pid: PageId) -> Option<Page> {
        self.stripes[stripe_of(pid)]
            .inner
            .lock()
            .pages
            .get(&pid)
            .cloned()
    }

    // ---- the write path -------------------------------------------------

    /// Waits while too much is unflushed (flushing itself without a
    /// background flusher).
    fn backpressure(&self) -> Result<()> {
        let limit = self.options.max_unflushed_segments as i64 * self.ss as i64;
        let mut spins = 0u32;
        while self.next_lsn.load(Ordering::Relaxed) - self.durable_end() > limit {
            self.check()?;
            if !self.options.background_flusher {
                self.flush()?;
                continue;
            }
            spins += 1;
            if spins < 16 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        Ok(())
    }

    /// Reserves room for one record in head `stream`'s buffer (in a
    /// segment whose lsn is at least `min_seg_lsn`), encodes it there,
    /// runs `mark` with its lsn, pointer and size, and releases: the
    /// write path of every user write, relocation and checkpoint.
    fn append<T>(
        &self,
        stream: u8,
        min_seg_lsn: Lsn,
        kind: MessageKind,
        pid: PageId,
        data: &[u8],
        mark: impl FnOnce(Lsn, DiskPtr, u64) -> Result<T>,
    ) -> Result<T> {
        let size = format::message_size(data.len() as u64);
        if size > self.ss / 2 {
            return fail("a record larger than half a segment");
        }
        let head = &self.heads[stream as usize];
        let guard = epoch::pin();
        let mut spins = 0u32;
        loop {
            self.check()?;
            let shared = head.current.load(Ordering::Acquire, &guard);
            // Safety: heads always hold a buffer; a replaced one is
            // destroyed only after every thread pinned now has unpinned.
            let buf: &Arc<Buffer> = unsafe { shared.deref() };
            if buf.seg_lsn < min_seg_lsn {
                // The page's newest fragment is in a later segment than
                // this head's: roll the head so the page's lsns increase.
                if let Some(old) = buf.seal() {
                    self.install_next(head, buf, old, true, &guard)?;
                } else {
                    self.wait_for_next(head, shared, &guard, &mut spins)?;
                }
                continue;
            }
            match buf.try_reserve(size) {
                Reserve::At(offset) => {
                    let lsn = buf.seg_lsn + offset as Lsn;
                    // Safety: we hold the reservation of these bytes.
                    let out = unsafe { buf.bytes_mut(offset, size) };
                    format::encode_message(out, kind, pid, lsn, buf.salt, data);
                    let result = mark(lsn, DiskPtr::Inline(buf.lid + offset), size);
                    buf.release();
                    if result.is_err() {
                        // A record the accountant was not told about is in
                        // the log: stop rather than let recovery find it.
                        self.set_failed();
                    }
                    return result;
                }
                Reserve::Full => {
                    if let Some(old) = buf.seal() {
                        self.install_next(head, buf, old, true, &guard)?;
                    } else {
                        self.wait_for_next(head, shared, &guard, &mut spins)?;
                    }
                }
                Reserve::Sealed => self.wait_for_next(head, shared, &guard, &mut spins)?,
            }
        }
    }

    fn wait_for_next(
        &self,
        head: &Head,
        seen: epoch::Shared<'_, Arc<Buffer>>,
        guard: &epoch::Guard,
        spins: &mut u32,
    ) -> Result<()> {
        while head.current.load(Ordering::Acquire, guard) == seen {
            self.check()?;
            *spins += 1;
            if *spins % 64 == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        Ok(())
    }

    /// The sealer's part: queue the sealed buffer for the flusher, then
    /// install the head's next buffer (the rest of the segment, unless
    /// `roll` or too little is left; else a new segment from `next_in`).
    /// `old` is the state word the seal found.
    fn install_next(
        &self,
        head: &Head,
        buf: &Arc<Buffer>,
        old: u64,
        roll: bool,
        guard: &epoch::Guard,
    ) -> Result<()> {
        let end = old & buffer::OFFSET_MASK;
        let next = if !roll && end <= buf.cap && buf.cap - end >= 64 {
            Buffer::continuation(buf, end)
        } else {
            buf.set_rolled();
            let lsn = self.next_lsn.fetch_add(self.ss as Lsn, Ordering::AcqRel);
            let lid = match self.acc.next_in(lsn, buf.stream) {
                Ok(lid) => lid,
                Err(e) => {
                    self.set_failed();
                    return Err(e.into());
                }
            };
            self.segments_rolled.fetch_add(1, Ordering::Relaxed);
            Buffer::fresh(lid, lsn, buf.stream, self.ss, self.durable_end())
        };
        // Queue before installing: a flusher that sees the new buffer then
        // finds the old one in the queue (it reads heads before draining).
        self.sealed.push(buf.clone());
        let prev = head
            .current
            .swap(Owned::new(Arc::new(next)), Ordering::AcqRel, guard);
        // Safety: unlinked; readers that loaded it are pinned.
        unsafe { guard.defer_destroy(prev) };
        Ok(())
    }

    /// Writes page `pid` whole (a full image replacing every earlier
    /// fragment). `stream`: the head, or `None` for the accountant's
    /// advice. `during` runs while the record is reserved and accounted
    /// for but not released (a test hook). Returns the record's lsn.
    pub fn put_with(
        &self,
        pid: PageId,
        data: &[u8],
        stream: Option<u8>,
        during: impl FnOnce(),
    ) -> Result<Lsn> {
        self.backpressure()?;
        let mut stripe = self.stripes[stripe_of(pid)].inner.lock();
        let old = stripe.pages.get(&pid);
        let old_ptrs = old.map(Page::ptrs).unwrap_or_default();
        let min = old.map_or(-1, |p| p.newest_lsn() - p.newest_lsn() % self.ss as Lsn);
        let stream = stream.unwrap_or_else(|| {
            self.acc
                .stream_for_write(self.next_lsn.load(Ordering::Relaxed), &old_ptrs)
        });
        let had_old = old.is_some();
        let frag = self.append(
            stream,
            min,
            MessageKind::Full,
            pid,
            data,
            |lsn, ptr, size| {
                if had_old {
                    self.acc.mark_replace(pid, lsn, &old_ptrs, ptr, size)?;
                } else {
                    self.acc.mark_link(pid, lsn, ptr, size)?;
                }
                during();
                Ok(Frag { ptr, lsn, size })
            },
        )?;
        stripe.user_bytes += frag.size;
        let mut frags = SmallVec::new();
        frags.push(frag);
        stripe.pages.insert(
            pid,
            Page {
                frags,
                deleted: false,
            },
        );
        Ok(frag.lsn)
    }

    /// [`put_with`](Self::put_with) with the accountant's stream advice.
    #[inline]
    pub fn put(&self, pid: PageId, data: &[u8]) -> Result<Lsn> {
        self.put_with(pid, data, None, || {})
    }

    /// Appends a delta to page `pid` (`mark_link`: its earlier fragments
    /// stay live); the page's value becomes `data`. No-op for an unknown
    /// or deleted page.
    pub fn delta(&self, pid: PageId, data: &[u8]) -> Result<Option<Lsn>> {
        self.backpressure()?;
        let mut stripe = self.stripes[stripe_of(pid)].inner.lock();
        let Some(page) = stripe.pages.get(&pid).filter(|p| !p.deleted) else {
            return Ok(None);
        };
        let min = page.newest_lsn() - page.newest_lsn() % self.ss as Lsn;
        // Deltas go to the first user head.
        let frag = self.append(0, min, MessageKind::Delta, pid, data, |lsn, ptr, size| {
            self.acc.mark_link(pid, lsn, ptr, size)?;
            Ok(Frag { ptr, lsn, size })
        })?;
        stripe.user_bytes += frag.size;
        stripe
            .pages
            .get_mut(&pid)
            .expect("the page")
            .frags
            .push(frag);
        Ok(Some(frag.lsn))
    }

    /// Deletes page `pid` with a free record (no-op for an unknown page).
    pub fn delete(&self, pid: PageId) -> Result<Option<Lsn>> {
        self.backpressure()?;
        let mut stripe = self.stripes[stripe_of(pid)].inner.lock();
        let Some(page) = stripe.pages.get(&pid) else {
            return Ok(None);
        };
        let old_ptrs = page.ptrs();
        let min = page.newest_lsn() - page.newest_lsn() % self.ss as Lsn;
        let stream = self
            .acc
            .stream_for_write(self.next_lsn.load(Ordering::Relaxed), &old_ptrs);
        let frag = self.append(
            stream,
            min,
            MessageKind::Free,
            pid,
            &[],
            |lsn, ptr, size| {
                self.acc.mark_replace(pid, lsn, &old_ptrs, ptr, size)?;
                Ok(Frag { ptr, lsn, size })
            },
        )?;
        stripe.user_bytes += frag.size;
        let mut frags = SmallVec::new();
        frags.push(frag);
        stripe.pages.insert(
            pid,
            Page {
                frags,
                deleted: true,
            },
        );
        Ok(Some(frag.lsn))
    }

    /// Asks `clean` for a page and rewrites it (its value, or its free
    /// record) in the stream it advises. A page with no fragment left in
    /// the segment `clean` drains it from, or whose newest fragment is not
    /// in the file yet (rewritten since it was picked), is left alone.
    pub fn relocate(&self, ignore: PageId) -> Result<Relocated> {
        self.check()?;
        self.backpressure()?;
        let Some(placed) = self.acc.clean(Skip::Page(ignore)) else {
            return Ok(Relocated::Nothing);
        };
        let pid = placed.pid;
        let mut stripe = self.stripes[stripe_of(pid)].inner.lock();
        let Some(page) = stripe.pages.get(&pid) else {
            self.set_failed();
            return fail(format!("clean suggested unknown page {pid}"));
        };
        // Moved out of the drained segment already (rewritten since).
        if !page
            .frags
            .iter()
            .any(|f| placed.drains(f.ptr.lid(), f.lsn, self.ss))
        {
            return Ok(Relocated::Skipped(pid));
        }
        // Only fragments in sealed segments are surely in the file.
        let in_file = |f: &Frag| self.acc.segment_active(f.ptr.lid()) == Some(false);
        let known = page.frags.iter().all(in_file);
        let (kind, data) = if page.deleted {
            (MessageKind::Free, Vec::new())
        } else {
            let last = *page.frags.last().expect("a fragment");
            match self.read_frag(pid, last) {
                Ok(data) => (MessageKind::Full, data),
                Err(e) if known => {
                    self.set_failed();
                    return fail(format!("page {pid} does not read back: {e}"));
                }
                // Not written yet: rewritten since the pick; nothing to do.
                Err(_) => return Ok(Relocated::Skipped(pid)),
            }
        };
        let old_ptrs = page.ptrs();
        let min = page.newest_lsn() - page.newest_lsn() % self.ss as Lsn;
        let deleted = page.deleted;
        let frag = self.append(placed.stream, min, kind, pid, &data, |lsn, ptr, size| {
            self.acc.mark_replace(pid, lsn, &old_ptrs, ptr, size)?;
            Ok(Frag { ptr, lsn, size })
        })?;
        let mut frags = SmallVec::new();
        frags.push(frag);
        stripe.pages.insert(pid, Page { frags, deleted });
        Ok(Relocated::Moved {
            pid,
            lsn: frag.lsn,
            value: (!deleted).then_some(data),
        })
    }

    /// Reads one fragment from the file: one read, one checksum, and the
    /// page and lsn it must carry.
    pub fn read_frag(&self, pid: PageId, frag: Frag) -> Result<Vec<u8>> {
        let (header, data) = format::read_message_at(&*self.storage, frag.ptr.lid(), frag.size)?;
        if header.pid != pid || header.lsn != frag.lsn {
            return fail(format!(
                "page {pid}: found page {} at lsn {} where lsn {} should be",
                header.pid, header.lsn, frag.lsn
            ));
        }
        Ok(data)
    }

    /// Reads page `pid`'s value (its last fragment), or `None` if it is
    /// absent or deleted. Pinned (so its segment is not reused under it);
    /// a record not yet in the file is waited for (a flusher writes it).
    pub fn get(&self, pid: PageId) -> Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let guard = epoch::pin();
            let Some(page) = self.page(pid) else {
                return Ok(None);
            };
            if page.deleted {
                return Ok(None);
            }
            let last = *page.frags.last().expect("a fragment");
            match self.read_frag(pid, last) {
                Ok(data) => return Ok(Some(data)),
                Err(e) => {
                    drop(guard);
                    self.check()?;
                    if self.acc.segment_active(last.ptr.lid()) == Some(false) {
                        return Err(e);
                    }
                    if Instant::now() > deadline {
                        return Err(e);
                    }
                    if self.options.background_flusher {
                        std::thread::sleep(Duration::from_micros(100));
                    } else {
                        self.flush()?;
                    }
                }
            }
        }
    }

    // ---- the flusher ----------------------------------------------------

    /// One group commit: vouch for unvouched durable data with a
    /// checkpoint, seal every head's buffer that holds records (rolling a
    /// head that lags), write every sealed buffer whose writers are done,
    /// sync once, then stabilize with what durable vouches cover.
    pub fn flush(&self) -> Result<Flushed> {
        let mut f = self.flusher.lock();
        self.check()?;
        let mut done = Flushed::default();
        // 1. The durable log's end is vouched for by nothing written yet
        // (new data, not just our last checkpoint): append a checkpoint.
        let d = self.durable_end();
        if d > f.vouch_written_max && d != f.idle_mark {
            let (start, end) = self.append(
                0,
                -1,
                MessageKind::Checkpoint,
                0,
                &d.to_le_bytes(),
                |lsn, _, size| Ok((lsn, lsn + size as Lsn)),
            )?;
            f.vouches.push((end, d));
            f.vouch_written_max = f.vouch_written_max.max(d);
            f.idle_mark = if start == d { end } else { -1 };
            self.checkpoints.fetch_add(1, Ordering::Relaxed);
            done.checkpoint = true;
        }
        // 2. Seal what the heads hold; roll heads that lag. (Pinned only
        // while a head's buffer is in hand: a long pin would hold back the
        // epoch, and with it the frees `flush_deferred` pushes through.)
        let newest = self.next_lsn.load(Ordering::Acquire);
        let guard = epoch::pin();
        for head in self.heads.iter() {
            let shared = head.current.load(Ordering::Acquire, &guard);
            // Safety: see `append`.
            let buf = unsafe { shared.deref() };
            let lagging = buf.seg_lsn < newest - (self.options.max_lag + 1) * self.ss as Lsn;
            if buf.has_data() || lagging {
                if let Some(old) = buf.seal() {
                    self.install_next(head, buf, old, lagging, &guard)?;
                }
            }
        }
        drop(guard);
        // 3. Write every ready buffer.
        while let Some(b) = self.sealed.pop() {
            f.pending.push(b);
        }
        let mut still = Vec::with_capacity(f.pending.len());
        let pending = std::mem::take(&mut f.pending);
        let mut new_headers = Vec::new();
        for b in pending {
            let header_durable = b.start == 0 || f.headers_durable.contains(&b.seg_lsn);
            match b.ready().filter(|_| header_durable) {
                Some((end, rolled)) => {
                    if b.start == 0 && !rolled {
                        new_headers.push(b.seg_lsn);
                    }

                    // Safety: ready, and only the flusher prepares buffers.
                    let bytes = unsafe { b.prepare(end, rolled) };
                    if let Err(e) = self.storage.write_at(b.lid + b.start, bytes) {
                        self.set_failed();
                        return Err(e.into());
                    }
                    done.buffers += 1;
                    done.bytes += bytes.len() as u64;
                    if let Some(v) = b.header_vouch {
                        f.vouches
                            .push((b.seg_lsn + format::SEGMENT_HEADER_LEN as Lsn, v));
                        f.vouch_written_max = f.vouch_written_max.max(v);
                    }
                }
                None => still.push(b),
            }
        }
        f.pending = still;
        self.bytes_written.fetch_add(done.bytes, Ordering::Relaxed);
        if done.buffers == 0 {
            return Ok(done);
        }
        // 4. One sync for all of them.
        if let Err(e) = self.storage.sync() {
            self.set_failed();
            return Err(e.into());
        }
        done.synced = true;
        f.headers_durable.extend(new_headers);
        // 5. The durable end: below every head's open buffer and every
        // sealed buffer not yet written. Heads first, then the queue: a
        // buffer sealed meanwhile is queued before its head moves on.
        let mut end = Lsn::MAX;
        let guard = epoch::pin();
        for head in self.heads.iter() {
            // Safety: see `append`.
            let buf = unsafe { head.current.load(Ordering::Acquire, &guard).deref() };
            end = end.min(buf.start_lsn());
        }
        drop(guard);
        while let Some(b) = self.sealed.pop() {
            f.pending.push(b);
        }
        for b in &f.pending {
            end = end.min(b.start_lsn());
        }
        let end = end.max(d);
        self.durable_end.store(end, Ordering::Release);
        // A segment wholly below the durable end has no piece left to write.
        let ss = self.ss as Lsn;
        f.headers_durable.retain(|&lsn| lsn + ss > end);
        // 6. Stabilize with what a durable vouch covers (rule 4), or, in
        // the unsafe variant, with the raw durable end.
        let vouched = if self.options.unsafe_raw_stable {
            end
        } else {
            let mut best = self.vouched();
            f.vouches.retain(|&(at, v)| {
                if at <= end {
                    best = best.max(v);
                    false
                } else {
                    true
                }
            });
            best
        };
        if vouched > self.vouched() {
            if let Err(e) = self.acc.stabilize(vouched) {
                self.set_failed();
                return Err(e.into());
            }
            self.vouched.store(vouched, Ordering::Release);
        }
        self.acc.flush_deferred();
        Ok(done)
    }

    /// Flushes until nothing is left to write (every buffer with records
    /// is durable and vouched for, as far as the heads allow).
    pub fn flush_all(&self) -> Result<()> {
        for _ in 0..16 {
            let done = self.flush()?;
            if done.buffers == 0 && !done.checkpoint {
                break;
            }
        }
        Ok(())
    }

    /// Simulates a torn write of the lowest head's open buffer: writes the
    /// first half of what it holds over the file (a crash during its
    /// write). Call only when no writer runs.
    pub fn tear_head(&self) -> Result<()> {
        let guard = epoch::pin();
        let mut lowest: Option<&Arc<Buffer>> = None;
        for head in self.heads.iter() {
            // Safety: see `append`.
            let buf = unsafe { head.current.load(Ordering::Acquire, &guard).deref() };
            if lowest.is_none_or(|l| buf.start_lsn() < l.start_lsn()) {
                lowest = Some(buf);
            }
        }
        let buf = lowest.expect("a head");
        let bytes = buf.snapshot();
        self.storage
            .write_at(buf.lid + buf.start, &bytes[..bytes.len() / 2])?;
        Ok(())
    }
}

fn stripe_of(pid: PageId) -> usize {
    (pid.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize % STRIPES
}

impl Store<Accountant> {
    /// A store on this crate's accountant over an empty file, deferring
    /// frees through the collector its readers pin (crossbeam-epoch's
    /// default one).
    pub fn new(config: &Config, storage: Arc<dyn LogFile>, options: Options) -> Result<Store> {
        let acc = Accountant::new(config.clone(), Arc::new(storage.clone()));
        Self::create(acc, config, storage, options)
    }

    /// Recovers from whatever the file holds: sync what the file holds
    /// (it may hold writes a crashed process never synced), then
    /// `Accountant::recover` (scan, invalidate the discarded tail, pad the
    /// open last segment, sync) and the page table from the scan. The new
    /// heads' headers vouch for the recovered log's end; the first flush
    /// makes one durable and stabilizes with it. Reads no page.
    pub fn recover(
        config: &Config,
        storage: Arc<dyn LogFile>,
        options: Options,
    ) -> Result<(Store, Scan)> {
        storage.sync()?;
        let (acc, found) = Accountant::recover(
            config.clone(),
            storage.clone(),
            epoch::default_collector().clone(),
        )?;
        // The page table from the snapshot's pages (no page is read):
        // each stripe's table is made for exactly its pages, so none grows
        // while they are inserted.
        let mut counts = vec![0usize; STRIPES];
        for &pid in found.snapshot.pages.keys() {
            counts[stripe_of(pid)] += 1;
        }
        let mut tables: Vec<FxHashMap<PageId, Page>> = counts
            .into_iter()
            .map(|n| FxHashMap::with_capacity_and_hasher(n, Default::default()))
            .collect();
        for (&pid, state) in &found.snapshot.pages {
            let frags = state
                .fragments()
                .iter()
                .map(|f| Frag {
                    ptr: f.ptr,
                    lsn: f.lsn,
                    size: f.size,
                })
                .collect();
            let deleted = matches!(state, PageState::Freed(_));
            tables[stripe_of(pid)].insert(pid, Page { frags, deleted });
        }
        let vouched = found.snapshot.max_header_stable_lsn;
        let store = Self::start(
            acc,
            config,
            storage,
            options,
            found.resume_lsn,
            vouched,
            tables,
        )?;
        Ok((store, found))
    }
}

/// Background threads of a store: a flusher and cleaners.
pub struct Background {
    stop_cleaners: Arc<AtomicBool>,
    stop_flusher: Arc<AtomicBool>,
    flusher: std::thread::JoinHandle<Result<()>>,
    cleaners: Vec<std::thread::JoinHandle<Result<()>>>,
}

impl Background {
    /// Starts a flusher (one group commit, then `flush_pause` if it found
    /// nothing to write) and `cleaners` cleaning threads.
    pub fn start<A: Backend>(
        store: &Arc<Store<A>>,
        flush_pause: Duration,
        cleaners: usize,
    ) -> Background {
        let stop_flusher = Arc::new(AtomicBool::new(false));
        let stop_cleaners = Arc::new(AtomicBool::new(false));
        let flusher = {
            let (store, stop) = (store.clone(), stop_flusher.clone());
            std::thread::spawn(move || -> Result<()> {
                while !stop.load(Ordering::Relaxed) {
                    let done = store.flush()?;
                    if done.buffers == 0 || !flush_pause.is_zero() {
                        std::thread::sleep(flush_pause.max(Duration::from_micros(100)));
                    }
                }
                Ok(())
            })
        };
        let cleaners = (0..cleaners)
            .map(|_| {
                let (store, stop) = (store.clone(), stop_cleaners.clone());
                std::thread::spawn(move || -> Result<()> {
                    while !stop.load(Ordering::Relaxed) {
                        if store.relocate(u64::MAX)? == Relocated::Nothing {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        Background {
            stop_cleaners,
            stop_flusher,
            flusher,
            cleaners,
        }
    }

    /// Stops the threads and returns the first error any of them hit: the
    /// cleaners first, while the flusher still runs (a cleaner may be
    /// waiting for it to make room), then the flusher.
    pub fn stop(self) -> Result<()> {
        self.stop_cleaners.store(true, Ordering::Relaxed);
        let mut first = Ok(());
        for t in self.cleaners {
            let r = t.join().map_err(|_| "a cleaner panicked")?;
            if first.is_ok() {
                first = r;
            }
        }
        self.stop_flusher.store(true, Ordering::Relaxed);
        let r = self.flusher.join().map_err(|_| "the flusher panicked")?;
        first.and(r)
    }
}
