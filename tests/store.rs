//! The concurrent reference store (`examples/store/`): writers are never
//! serialized by a store-wide lock, reads round-trip, a flush makes a
//! partly filled segment durable and later appends go on in it, an idle
//! store's tail becomes stable, and recovery finds what was acknowledged.

#[path = "../examples/store/mod.rs"]
#[allow(unused_imports)]
mod store;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use segment_accountant::{Config, LogFile, MemStorage, SegmentState};
use store::{check_payload, payload, Background, Options, Relocated, Store};

fn config(ss: u64) -> Config {
    Config::builder()
        .segment_size(ss)
        .allow_small_segments(true)
        .build()
        .unwrap()
}

/// Two writers are inside their write at once: each holds its reservation
/// (record written, accountant told, not released) at a barrier both must
/// reach. Any lock shared by all writers would deadlock this test, which
/// the watchdog turns into a failure.
#[test]
fn two_writers_are_inside_their_write_at_once() {
    let store = Arc::new(
        Store::new(
            &config(4096),
            Arc::new(MemStorage::new()),
            Options::default(),
        )
        .unwrap(),
    );
    let barrier = Arc::new(Barrier::new(2));
    let inside = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for (t, pid) in [(0u64, 1u64), (1, 2)] {
        let (store, barrier, inside, done_tx) = (
            store.clone(),
            barrier.clone(),
            inside.clone(),
            done_tx.clone(),
        );
        std::thread::spawn(move || {
            let lsn = store
                .put_with(pid, &payload(pid, t, 40), None, || {
                    inside.fetch_add(1, Ordering::SeqCst);
                    barrier.wait();
                    // Both are inside now: neither has released.
                    assert_eq!(inside.load(Ordering::SeqCst), 2);
                })
                .unwrap();
            done_tx.send(lsn).unwrap();
        });
    }
    let a = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("writers serialized: deadlock");
    let b = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("writers serialized: deadlock");
    assert_ne!(a, b, "two records, two places");
    store.flush_all().unwrap();
    assert_eq!(check_payload(1, &store.get(1).unwrap().unwrap()), Some(0));
    assert_eq!(check_payload(2, &store.get(2).unwrap().unwrap()), Some(1));
}

/// Puts, deltas and deletes read back; a record not yet written to the
/// file is waited for (the flush runs) and then read by its pointer.
#[test]
fn reads_round_trip() {
    let store = Store::new(
        &config(1024),
        Arc::new(MemStorage::new()),
        Options::default(),
    )
    .unwrap();
    store.put(7, &payload(7, 1, 50)).unwrap();
    assert_eq!(check_payload(7, &store.get(7).unwrap().unwrap()), Some(1));
    store.delta(7, &payload(7, 2, 24)).unwrap().unwrap();
    assert_eq!(check_payload(7, &store.get(7).unwrap().unwrap()), Some(2));
    assert_eq!(store.page(7).unwrap().frags.len(), 2);
    store.delete(7).unwrap().unwrap();
    assert_eq!(store.get(7).unwrap(), None);
    assert_eq!(store.get(8).unwrap(), None);
    assert_eq!(store.delta(8, b"0123456789abcdef").unwrap(), None);
}

/// Durable before full: a flush writes the open segment's records without
/// filling it; the head goes on in the same segment, and after a crash
/// both parts recover from that one segment.
#[test]
fn a_flushed_half_full_segment_is_appended_to_and_recovers_whole() {
    let ss = 4096;
    let storage = Arc::new(MemStorage::new());
    let store = Store::new(&config(ss), storage.clone(), Options::default()).unwrap();
    let first = store.put(1, &payload(1, 1, 100)).unwrap();
    store.flush().unwrap();
    let second = store.put(2, &payload(2, 1, 100)).unwrap();
    store.flush_all().unwrap();
    assert_eq!(
        first / ss as i64,
        second / ss as i64,
        "one segment, two flushes"
    );
    assert_eq!(
        store.segments_rolled(),
        0,
        "the flush did not waste the segment"
    );
    assert!(store.vouched() > second, "both parts vouched for");
    drop(store);
    let (recovered, scan) = Store::recover(&config(ss), storage, Options::default()).unwrap();
    assert!(
        scan.open_tail.is_some(),
        "recovered from a partly written segment"
    );
    for pid in [1, 2] {
        assert_eq!(
            check_payload(pid, &recovered.get(pid).unwrap().unwrap()),
            Some(1)
        );
    }
    recovered.acc.audit().unwrap();
}

/// An idle store stabilizes: after the writers stop, the flusher's
/// checkpoints vouch for every record, the segments before the open one
/// become stable, and further flushes write nothing.
#[test]
fn an_idle_store_stabilizes_its_tail() {
    let ss = 1024;
    let store = Store::new(&config(ss), Arc::new(MemStorage::new()), Options::default()).unwrap();
    let mut last = 0;
    for i in 0..100u64 {
        last = store.put(i % 10, &payload(i % 10, i, 40)).unwrap();
    }
    store.flush_all().unwrap();
    assert!(
        store.vouched() > last,
        "the last write is acknowledged: vouched {} durable {} last {last}",
        store.vouched(),
        store.durable_end()
    );
    assert!(store.checkpoints() > 0);
    let quiet = store.flush().unwrap();
    assert_eq!(
        (quiet.buffers, quiet.checkpoint),
        (0, false),
        "idle: nothing to write"
    );
    // Every segment wholly below the vouched lsn is sealed (the accountant's
    // last stable segment is the one just below the vouched lsn's), and the
    // last write's segment too if it lies wholly below.
    let ss = ss as i64;
    assert_eq!(store.acc.stable_lsn(), (store.vouched() / ss - 1) * ss);
    let brief = store
        .acc
        .segment_brief(store.page(9).unwrap().frags[0].ptr.lid())
        .unwrap();
    if last / ss < store.vouched() / ss {
        assert_ne!(brief.state, SegmentState::Active);
    }
}

/// Many writers, a background flusher and a cleaner on a small hot set:
/// afterwards every page reads back as its last acknowledged version or a
/// later one, and after a crash and recovery too.
#[test]
fn concurrent_writers_flusher_and_cleaner() {
    let ss = 1024;
    let storage = Arc::new(MemStorage::new());
    let options = Options {
        background_flusher: true,
        ..Options::default()
    };
    let store = Arc::new(Store::new(&config(ss), storage.clone(), options.clone()).unwrap());
    let background = Background::start(&store, Duration::from_micros(200), 1);
    let writers: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut last = std::collections::HashMap::new();
                for n in 0..2000u64 {
                    let pid = (n * 7 + t) % 32;
                    let version = (t << 32) | n;
                    let lsn = store.put(pid, &payload(pid, version, 0)).unwrap();
                    last.insert(pid, (lsn, version));
                }
                last
            })
        })
        .collect();
    let mut newest = std::collections::HashMap::new();
    for w in writers {
        for (pid, (lsn, v)) in w.join().unwrap() {
            let e = newest.entry(pid).or_insert((lsn, v));
            if lsn > e.0 {
                *e = (lsn, v);
            }
        }
    }
    while let Relocated::Moved { .. } = store.relocate(u64::MAX).unwrap() {}
    background.stop().unwrap();
    store.flush_all().unwrap();
    for (&pid, &(_, v)) in &newest {
        assert_eq!(
            check_payload(pid, &store.get(pid).unwrap().unwrap()),
            Some(v)
        );
    }
    store.acc.audit().unwrap();
    let vouched = store.vouched();
    assert!(newest.values().all(|&(lsn, _)| lsn < vouched));
    drop(store);
    let (recovered, _) =
        Store::recover(&config(ss), storage.clone() as Arc<dyn LogFile>, options).unwrap();
    for (&pid, &(_, v)) in &newest {
        assert_eq!(
            check_payload(pid, &recovered.get(pid).unwrap().unwrap()),
            Some(v)
        );
    }
    recovered.acc.audit().unwrap();
}
