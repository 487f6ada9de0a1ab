//! An existing engine adopting the crate (issue 17): its own segment format
//! (a 20-byte header), its own scan producing a `Snapshot` through
//! `Snapshot::new` and `Fragment::new`, its own I/O, and the accountant
//! called from its write path. One test per API gap the port met.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use segment_accountant::recovery::{ResumeRefusal, SnapshotError};
use segment_accountant::{
    Accountant, BlobId, Collector, Config, DiskPtr, Error, Fragment, Lid, Lsn, PageId, PageState,
    SegmentState, Skip, Snapshot, Storage,
};

const SS: u64 = 4096;
/// The engine's segment header: magic (4), segment lsn (8), vouched stable
/// lsn (8).
const HEADER: u64 = 20;
/// The engine's message header: page id (8), payload length (4).
const MSG: u64 = 12;
const MAGIC: u32 = 0x5EA1_0017;

/// The engine's file, shared by the engine (which does its own I/O) and the
/// accountant (which only truncates, syncs and removes blobs).
#[derive(Default)]
struct Disk {
    bytes: Mutex<Vec<u8>>,
}

impl Disk {
    fn write(&self, offset: u64, buf: &[u8]) {
        let mut bytes = self.bytes.lock().unwrap();
        let end = offset as usize + buf.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[offset as usize..end].copy_from_slice(buf);
    }

    fn contents(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }
}

/// What the accountant needs of the engine's file (gap 5): the
/// accountant's `Storage` trait only, no positioned reads or writes (the
/// engine does its own I/O). Every test here runs on it.
struct AccountantView(Arc<Disk>);

impl Storage for AccountantView {
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.bytes.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.bytes.lock().unwrap().len() as u64)
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
    fn remove_blob(&self, _blob: BlobId) -> io::Result<()> {
        Ok(())
    }
}

fn config() -> Config {
    Config::builder()
        .segment_size(SS)
        .allow_small_segments(true)
        .build()
        .unwrap()
}

/// The engine: one write head, full page images only.
struct Engine {
    disk: Arc<Disk>,
    acc: Accountant,
    /// The current segment's base lid and lsn, and the next write's lsn.
    seg: Option<(Lid, Lsn)>,
    next_lsn: Lsn,
    /// Where each page's image lives: (lsn, lid, size).
    pages: BTreeMap<PageId, (Lsn, Lid, u64)>,
}

impl Engine {
    fn new() -> Engine {
        let disk = Arc::new(Disk::default());
        let acc = Accountant::with_collector(
            config(),
            Arc::new(AccountantView(disk.clone())),
            Collector::new(),
        );
        Engine {
            disk,
            acc,
            seg: None,
            next_lsn: 0,
            pages: BTreeMap::new(),
        }
    }

    /// Starts the segment at the next segment boundary: its header vouches
    /// for everything before it (this engine's writes are synchronous).
    fn roll(&mut self) {
        let lsn = (self.next_lsn as u64).div_ceil(SS) as Lsn * SS as Lsn;
        let lid = self.acc.next(lsn).unwrap();
        let mut header = Vec::with_capacity(HEADER as usize);
        header.extend_from_slice(&MAGIC.to_le_bytes());
        header.extend_from_slice(&lsn.to_le_bytes());
        header.extend_from_slice(&lsn.to_le_bytes());
        self.disk.write(lid, &header);
        self.seg = Some((lid, lsn));
        self.next_lsn = lsn + HEADER as Lsn;
        if lsn > 0 {
            self.acc.stabilize(lsn).unwrap();
        }
    }

    /// Writes a full image of `pid` with `len` payload bytes.
    fn put(&mut self, pid: PageId, len: u64) {
        let size = MSG + len;
        match self.seg {
            Some((_, lsn)) if (self.next_lsn - lsn) as u64 + size <= SS => {}
            _ => self.roll(),
        }
        let (lid, seg_lsn) = self.seg.unwrap();
        let at = lid + (self.next_lsn - seg_lsn) as u64;
        let mut msg = Vec::with_capacity(size as usize);
        msg.extend_from_slice(&pid.to_le_bytes());
        msg.extend_from_slice(&(len as u32).to_le_bytes());
        msg.resize(size as usize, 0xAB);
        self.disk.write(at, &msg);
        let lsn = self.next_lsn;
        match self.pages.insert(pid, (lsn, at, size)) {
            Some((_, old, _)) => self
                .acc
                .mark_replace(pid, lsn, &[DiskPtr::Inline(old)], DiskPtr::Inline(at), size)
                .unwrap(),
            None => self
                .acc
                .mark_link(pid, lsn, DiskPtr::Inline(at), size)
                .unwrap(),
        }
        self.next_lsn += size as Lsn;
    }
}

/// The engine's own scan: every segment with a valid header, its messages
/// up to the first zero page id; the last segment (highest lsn) is where
/// writing resumes when it has room.
fn engine_scan(bytes: &[u8]) -> Snapshot {
    let mut pages: BTreeMap<PageId, PageState> = BTreeMap::new();
    let mut last: Option<(Lid, Lsn, Lsn)> = None; // lid, segment lsn, end lsn
    let mut stable = -1;
    let mut segs = Vec::new();
    let mut base = 0u64;
    while base + HEADER <= bytes.len() as u64 {
        let h = &bytes[base as usize..];
        if u32::from_le_bytes(h[0..4].try_into().unwrap()) == MAGIC {
            let lsn = i64::from_le_bytes(h[4..12].try_into().unwrap());
            stable = stable.max(i64::from_le_bytes(h[12..20].try_into().unwrap()));
            segs.push((lsn, base));
        }
        base += SS;
    }
    segs.sort_unstable();
    for (seg_lsn, lid) in segs {
        let end = (lid + SS).min(bytes.len() as u64);
        let mut at = lid + HEADER;
        while at + MSG <= end {
            let pid = u64::from_le_bytes(bytes[at as usize..at as usize + 8].try_into().unwrap());
            if pid == 0 {
                break;
            }
            let len =
                u32::from_le_bytes(bytes[at as usize + 8..at as usize + 12].try_into().unwrap())
                    as u64;
            let lsn = seg_lsn + (at - lid) as Lsn;
            pages.insert(
                pid,
                PageState::Present(vec![Fragment::new(lsn, DiskPtr::Inline(at), MSG + len)]),
            );
            at += MSG + len;
        }
        last = Some((lid, seg_lsn, seg_lsn + (at - lid) as Lsn));
    }
    let Some((lid, seg_lsn, end)) = last else {
        return Snapshot::empty();
    };
    let snapshot = Snapshot::new(pages, Some(lid), end - 1, stable);
    if ((end - seg_lsn) as u64) < SS {
        snapshot.resume_at(lid, end)
    } else {
        snapshot
    }
}

/// The engine restarting: its scan, then the accountant from the snapshot.
fn restart(disk: Arc<Disk>) -> (Engine, Snapshot) {
    let bytes = disk.contents();
    let snapshot = engine_scan(&bytes);
    let acc = Accountant::from_snapshot(
        config(),
        Arc::new(AccountantView(disk.clone())),
        Collector::new(),
        &snapshot,
        bytes.len() as u64,
    )
    .unwrap();
    let mut pages = BTreeMap::new();
    for (&pid, state) in &snapshot.pages {
        let f = state.fragments()[0];
        pages.insert(pid, (f.lsn, f.ptr.lid(), f.size));
    }
    let engine = Engine {
        disk,
        acc,
        seg: snapshot
            .resume
            .map(|(lid, lsn)| (lid, lsn - lsn % SS as Lsn)),
        next_lsn: snapshot
            .resume
            .map_or(snapshot.last_lsn + 1, |(_, lsn)| lsn),
        pages,
    };
    (engine, snapshot)
}

/// Gap 1: after a crash, the engine resumes writing inside its last
/// segment, which holds only its header; the snapshot says so and the
/// segment stays Active (no sentinel page needed).
#[test]
fn resume_in_a_header_only_segment() {
    let mut engine = Engine::new();
    for pid in 1..=40 {
        engine.put(pid, 200); // several segments
    }
    // Roll to a new segment and crash right after writing its header.
    engine.next_lsn = (engine.next_lsn as u64).div_ceil(SS) as Lsn * SS as Lsn;
    engine.roll();
    let (tail_lid, tail_lsn) = engine.seg.unwrap();
    let disk = engine.disk.clone();
    drop(engine);
    assert_eq!(disk.contents().len() as u64, tail_lid + HEADER);

    let (mut engine, snapshot) = restart(disk.clone());
    assert_eq!(snapshot.resume, Some((tail_lid, tail_lsn + HEADER as Lsn)));
    let index = (tail_lid / SS) as usize;
    let info = engine.acc.segment_info(index).unwrap();
    assert_eq!(info.state, SegmentState::Active);
    assert_eq!(info.lsn, Some(tail_lsn));
    assert_eq!(info.live_pages, 0);
    // Writing resumes in it, and it seals like any other.
    engine.put(41, 100);
    engine.put(1, 100);
    assert_eq!(engine.pages[&41].1, tail_lid + HEADER);
    engine.next_lsn = tail_lsn + SS as Lsn;
    engine.roll();
    let info = engine.acc.segment_info(index).unwrap();
    assert!(info.state != SegmentState::Active, "{info:?}");
    assert_eq!(info.live_pages, 2);
    engine.acc.audit().unwrap();

    // Without the resume point the segment is empty, so freed: the port's
    // old failure.
    let mut plain = snapshot.clone();
    plain.resume = None;
    let acc = Accountant::from_snapshot(
        config(),
        Arc::new(AccountantView(disk.clone())),
        Collector::new(),
        &plain,
        tail_lid + HEADER,
    )
    .unwrap();
    assert!(matches!(
        acc.mark_link(
            41,
            tail_lsn + HEADER as Lsn,
            DiskPtr::Inline(tail_lid + HEADER),
            112
        ),
        Err(Error::SegmentNotActive {
            state: SegmentState::Freeing,
            ..
        })
    ));

    // A resume point that contradicts the snapshot is refused, typed.
    for (resume, why) in [
        ((tail_lid + 1, tail_lsn + 20), "unaligned"),
        ((tail_lid + SS, tail_lsn + 20), "beyond tip"),
        ((tail_lid, snapshot.last_lsn), "not beyond the log"),
    ] {
        let bad = snapshot.clone().resume_at(resume.0, resume.1);
        let err = Accountant::from_snapshot(
            config(),
            Arc::new(AccountantView(disk.clone())),
            Collector::new(),
            &bad,
            tail_lid + HEADER,
        )
        .unwrap_err();
        let Error::InvalidSnapshot(SnapshotError::InvalidResume { reason, .. }) = err else {
            panic!("{why}: {err:?}");
        };
        let expected = match why {
            "unaligned" => matches!(reason, ResumeRefusal::UnalignedLid),
            "beyond tip" => matches!(reason, ResumeRefusal::BeyondTip { .. }),
            _ => matches!(reason, ResumeRefusal::NotBeyondLog { .. }),
        };
        assert!(expected, "{why}: {reason:?}");
    }
}

/// Gap 2: a file ending 20 bytes (one engine header) into its last segment
/// is accepted: the tip rule is at segment granularity, whatever the
/// format's header length.
#[test]
fn a_file_ending_mid_segment() {
    let mut engine = Engine::new();
    for pid in 1..=30 {
        engine.put(pid, 300);
    }
    engine.next_lsn = (engine.next_lsn as u64).div_ceil(SS) as Lsn * SS as Lsn;
    engine.roll();
    let (tail_lid, _) = engine.seg.unwrap();
    let disk = engine.disk.clone();
    drop(engine);
    let len = disk.contents().len() as u64;
    assert_eq!(len % SS, HEADER);
    // Without a resume point: the last segment is still below the tip.
    let mut snapshot = engine_scan(&disk.contents());
    snapshot.resume = None;
    assert_eq!(snapshot.last_lid, Some(tail_lid));
    let acc = Accountant::from_snapshot(
        config(),
        Arc::new(AccountantView(disk.clone())),
        Collector::new(),
        &snapshot,
        len,
    )
    .unwrap();
    assert_eq!(acc.tip(), len.div_ceil(SS) * SS);
    acc.audit().unwrap();
    // Any partial segment counts, even a single byte.
    let acc = Accountant::from_snapshot(
        config(),
        Arc::new(AccountantView(disk)),
        Collector::new(),
        &snapshot,
        tail_lid + 1,
    )
    .unwrap();
    assert_eq!(acc.tip(), tail_lid + SS);
}

/// Gap 3: `clean` names the segment the page is drained from, so the
/// engine skips a page that already moved out of it (rewritten by a user
/// since the pick) instead of rewriting every suggested page.
#[test]
fn skip_pages_that_already_moved() {
    let mut engine = Engine::new();
    for pid in 1..=60 {
        engine.put(pid, 200);
    }
    // Rewrite most pages: the early segments become sparse and drain.
    for pid in 1..=60 {
        if pid % 6 != 0 {
            engine.put(pid, 200);
        }
    }
    engine.next_lsn = (engine.next_lsn as u64).div_ceil(SS) as Lsn * SS as Lsn;
    engine.roll();
    let mut relocated = 0;
    let mut skipped = 0;
    let mut seen = std::collections::BTreeSet::new();
    while let Some(r) = engine.acc.clean(Skip::Nothing) {
        assert!(seen.insert(r.pid), "page {} suggested twice", r.pid);
        let info = engine
            .acc
            .segment_info((r.segment_lid / SS) as usize)
            .unwrap();
        assert_eq!(info.state, SegmentState::Draining);
        assert_eq!(info.lsn, Some(r.segment_lsn));
        // A user rewrite lands between the pick and the relocation for
        // every other page: the engine sees it moved and skips it.
        if r.pid % 12 == 0 {
            engine.put(r.pid, 200);
        }
        let (lsn, lid, _) = engine.pages[&r.pid];
        if r.drains(lid, lsn, SS) {
            engine.put(r.pid, 200); // the relocation
            relocated += 1;
        } else {
            skipped += 1;
        }
    }
    assert_eq!(relocated + skipped, seen.len());
    assert!(
        relocated > 0 && skipped > 0,
        "{relocated} relocated, {skipped} skipped"
    );
    engine.next_lsn = (engine.next_lsn as u64).div_ceil(SS) as Lsn * SS as Lsn;
    engine.roll();
    // Every drained segment emptied, without rewriting the moved pages.
    engine.acc.flush();
    for index in 0..(engine.acc.tip() / SS) as usize {
        let info = engine.acc.segment_info(index).unwrap();
        assert_ne!(info.state, SegmentState::Draining, "{info:?}");
    }
    engine.acc.audit().unwrap();
}

/// Gap 4: iterating the log. `segments_in_use_from` lists only segments in
/// use; `segment_snapshot_iter_from` also lists freed segments with their
/// stale lsns (documented).
#[test]
fn iteration_sees_only_segments_in_use() {
    let mut engine = Engine::new();
    for pid in 1..=40 {
        engine.put(pid, 300);
    }
    // Rewrite everything twice: the first segments empty and are freed.
    for _ in 0..2 {
        for pid in 1..=40 {
            engine.put(pid, 300);
        }
    }
    engine.next_lsn = (engine.next_lsn as u64).div_ceil(SS) as Lsn * SS as Lsn;
    engine.roll();
    engine.acc.pause_rewriting();
    let all: Vec<_> = engine.acc.segment_snapshot_iter_from(0).unwrap().collect();
    let in_use: Vec<_> = engine.acc.segments_in_use_from(0).unwrap().collect();
    engine.acc.resume_rewriting().unwrap();
    let freed: Vec<_> = all.iter().filter(|p| !in_use.contains(p)).collect();
    assert!(!freed.is_empty(), "some segments were freed: {all:?}");
    for &(lsn, lid) in &in_use {
        let info = engine.acc.segment_info((lid / SS) as usize).unwrap();
        assert_eq!(info.lsn, Some(lsn));
        assert!(
            matches!(
                info.state,
                SegmentState::Active | SegmentState::Inactive | SegmentState::Draining
            ),
            "{info:?}"
        );
    }
    for &&(_, lid) in &freed {
        let info = engine.acc.segment_info((lid / SS) as usize).unwrap();
        assert!(
            matches!(info.state, SegmentState::Freeing | SegmentState::Free),
            "{info:?}"
        );
    }
    // Every page the engine knows lives in a listed segment, at its lsn.
    for &(lsn, lid, _) in engine.pages.values() {
        let seg = (lsn - lsn % SS as Lsn, lid - lid % SS);
        assert!(in_use.contains(&seg), "{seg:?} not in {in_use:?}");
    }
    // In lsn order.
    assert!(in_use.windows(2).all(|w| w[0].0 < w[1].0));
}
