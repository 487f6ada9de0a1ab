//! The sequencer owns only the file tip: while a truncation's sync is
//! blocked, `mark_link`, `mark_replace`, `stabilize`, `clean` and `next`
//! from the free list all complete; growing the tip back over the
//! truncated range waits until the truncation has finished; a failed
//! truncation is reported by the next tip change, and a retry succeeds.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use segment_accountant::{
    Accountant, BlobId, Collector, Config, DiskPtr, Error, Lsn, MemStorage, SegmentState, Storage,
};

const SS: u64 = 4096;
const L: Lsn = SS as Lsn;

/// MemStorage whose `sync` blocks on a latch while armed, and whose
/// `set_len` can be made to fail.
#[derive(Default)]
struct Latched {
    inner: MemStorage,
    armed: Mutex<bool>,
    released: Condvar,
    syncing: AtomicBool,
    fail_set_len: AtomicU32,
}

impl Latched {
    fn arm(&self) {
        *self.armed.lock().unwrap() = true;
    }
    fn release(&self) {
        *self.armed.lock().unwrap() = false;
        self.released.notify_all();
    }
}

impl Storage for Latched {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, buf)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        if self.fail_set_len.load(Ordering::SeqCst) > 0 {
            self.fail_set_len.fetch_sub(1, Ordering::SeqCst);
            return Err(io::Error::other("injected set_len failure"));
        }
        self.inner.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn sync(&self) -> io::Result<()> {
        self.syncing.store(true, Ordering::SeqCst);
        let mut armed = self.armed.lock().unwrap();
        while *armed {
            armed = self.released.wait(armed).unwrap();
        }
        self.syncing.store(false, Ordering::SeqCst);
        self.inner.sync()
    }
    fn remove_blob(&self, blob: BlobId) -> io::Result<()> {
        self.inner.remove_blob(blob)
    }
}

fn ptr(lid: u64, off: u64) -> DiskPtr {
    DiskPtr::Inline(lid + off)
}

fn state(acc: &Accountant, index: usize) -> SegmentState {
    acc.segment_info(index).unwrap().state
}

/// Builds: segment 0 live, segment 1 Active (lsn 6L), segment 2 live
/// (page 3), segments 3 and 4 free at the top of the file.
fn setup(storage: Arc<Latched>) -> (Arc<Accountant>, u64) {
    let config = Config::builder().segment_size(SS).build().unwrap();
    let acc = Arc::new(Accountant::with_collector(
        config,
        storage.clone(),
        Collector::new(),
    ));
    let s: Vec<u64> = (0..4).map(|i| acc.next(i * L).unwrap()).collect();
    for (i, &lid) in s.iter().enumerate() {
        acc.mark_link(i as u64 + 1, i as Lsn * L, ptr(lid, 0), 100)
            .unwrap();
    }
    storage.inner.write_at(5 * SS - 1, &[0]).unwrap(); // the file holds 5 segments
    let s4 = acc.next(4 * L).unwrap();
    acc.mark_replace(1, 4 * L, &[ptr(s[0], 0)], ptr(s4, 0), 100)
        .unwrap();
    acc.mark_replace(2, 4 * L, &[ptr(s[1], 0)], ptr(s4, 100), 100)
        .unwrap();
    acc.stabilize(5 * L).unwrap();
    acc.flush();
    assert_eq!(state(&acc, 0), SegmentState::Free);
    assert_eq!(state(&acc, 1), SegmentState::Free);
    // Reuse segment 0 for lsn 5L: move pages 1, 2 (segment 4) and 4
    // (segment 3) there; segment 1 becomes the Active segment at 6L.
    let a0 = acc.next(5 * L).unwrap();
    assert_eq!(a0, 0);
    acc.mark_replace(1, 5 * L, &[ptr(s4, 0)], ptr(a0, 0), 100)
        .unwrap();
    acc.mark_replace(2, 5 * L, &[ptr(s4, 100)], ptr(a0, 100), 100)
        .unwrap();
    acc.mark_replace(4, 5 * L, &[ptr(s[3], 0)], ptr(a0, 200), 100)
        .unwrap();
    let active = acc.next(6 * L).unwrap();
    assert_eq!(active, SS);
    acc.stabilize(6 * L).unwrap();
    acc.flush();
    assert_eq!(state(&acc, 2), SegmentState::Draining); // page 3, few pages
    assert_eq!(state(&acc, 3), SegmentState::Free);
    assert_eq!(state(&acc, 4), SegmentState::Free);
    assert_eq!(acc.tip(), 5 * SS);
    (acc, active)
}

#[test]
fn hot_path_completes_while_a_truncation_sync_is_blocked() {
    let storage = Arc::new(Latched::default());
    let (acc, active) = setup(storage.clone());
    storage.arm();

    // A tip change: shrinks over segments 3 and 4 (the truncation's sync
    // blocks), finds nothing free, and must grow the tip back over the
    // truncated range: it waits for the truncation.
    let returned = Arc::new(AtomicBool::new(false));
    let bumper = {
        let (acc, returned) = (acc.clone(), returned.clone());
        std::thread::spawn(move || {
            let lid = acc.next(7 * L);
            returned.store(true, Ordering::SeqCst);
            lid
        })
    };
    while !storage.syncing.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(acc.tip(), 3 * SS, "the shrink lowered the tip");

    // Everything else proceeds meanwhile.
    acc.mark_link(10, 6 * L, ptr(active, 0), 50).unwrap();
    acc.mark_replace(3, 6 * L, &[ptr(2 * SS, 0)], ptr(active, 50), 50)
        .unwrap();
    assert!(
        acc.clean(0).is_some(),
        "draining segments have pages to relocate"
    );
    acc.stabilize(7 * L).unwrap(); // seals segment 1; segment 2 empties
    acc.flush();
    assert_eq!(state(&acc, 2), SegmentState::Free);
    // `next` from the free list: the sequencer is busy, so no shrink; the
    // free segment 2 is reused without waiting.
    let reused = acc.next(8 * L).unwrap();
    assert_eq!(reused, 2 * SS);
    acc.mark_link(11, 8 * L, ptr(reused, 0), 10).unwrap();

    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !returned.load(Ordering::SeqCst),
        "the tip grew back before the truncation finished"
    );
    storage.release();
    let lid = bumper.join().unwrap().unwrap();
    assert_eq!(lid, 3 * SS, "the tip grows back over the truncated range");
    assert_eq!(acc.stats().bytes_truncated, 2 * SS);
    acc.stabilize(9 * L).unwrap();
    acc.flush();
    acc.audit().unwrap();
}

#[test]
fn truncation_errors_are_reported_by_the_next_tip_change() {
    let storage = Arc::new(Latched::default());
    let (acc, _active) = setup(storage.clone());
    storage.fail_set_len.store(1, Ordering::SeqCst);
    // Shrinks (the truncation fails in the background), then extends:
    // the extension reports the failure, and nothing changes.
    let err = acc.next(7 * L).unwrap_err();
    assert!(matches!(err, Error::Truncation(_)), "{err}");
    assert_eq!(acc.tip(), 3 * SS);
    // The error was reported once; the retry succeeds with the same lsn.
    let lid = acc.next(7 * L).unwrap();
    assert_eq!(lid, 3 * SS);
    acc.stabilize(8 * L).unwrap();
    acc.flush();
    acc.audit().unwrap();
}
