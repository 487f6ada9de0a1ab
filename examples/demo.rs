//! A tiny log store on a real file, driven by the accountant.
//!
//! Several writer threads update random pages; each write is a fragment
//! appended to the current segment of the log (a real file in a temporary
//! directory unless `--path` is given). Segments come from `next`, full
//! rewrites are `mark_replace`, deletes write a free record, `clean`
//! relocates pages out of draining segments, and a flusher thread syncs
//! the file and calls `stabilize`. At the end the demo prints the file's
//! size against its live bytes and runs the accountant's audit.
//!
//! ```text
//! cargo run --release --example demo -- [--threads N] [--seconds S] [--keys K]
//!                                        [--value-size B] [--segment-size B] [--path FILE]
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use segment_accountant::{Accountant, Config, DiskPtr, FileStorage, Lid, Lsn, PageId, Storage};

struct Options {
    threads: usize,
    seconds: f64,
    keys: u64,
    value_size: usize,
    segment_size: u64,
    path: Option<std::path::PathBuf>,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        threads: 4,
        seconds: 3.0,
        keys: 20_000,
        value_size: 200,
        segment_size: 64 * 1024,
        path: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let bad = |v: &str| format!("bad value {v:?} for {flag}");
        match flag.as_str() {
            "--threads" => {
                let v = value()?;
                o.threads = v.parse().map_err(|_| bad(&v))?;
            }
            "--seconds" => {
                let v = value()?;
                o.seconds = v.parse().map_err(|_| bad(&v))?;
            }
            "--keys" => {
                let v = value()?;
                o.keys = v.parse().map_err(|_| bad(&v))?;
            }
            "--value-size" => {
                let v = value()?;
                o.value_size = v.parse().map_err(|_| bad(&v))?;
            }
            "--segment-size" => {
                let v = value()?;
                o.segment_size = v.parse().map_err(|_| bad(&v))?;
            }
            "--path" => o.path = Some(value()?.into()),
            "--help" | "-h" => {
                return Err("usage: demo [--threads N] [--seconds S] [--keys K] [--value-size B] [--segment-size B] [--path FILE]".into())
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if o.threads == 0 || o.keys == 0 {
        return Err("--threads and --keys must be positive".into());
    }
    if o.value_size + 16 > o.segment_size as usize / 4 {
        return Err("--value-size must be well below a quarter of --segment-size".into());
    }
    Ok(o)
}

/// The store's head: the segment being filled.
struct Head {
    lsn: Lsn,
    lid: Lid,
    used: u64,
    /// Writers still copying into this segment (the contract: every mark
    /// happens before stabilize covers the segment).
    in_flight: Arc<AtomicU64>,
}

struct Store {
    acc: Accountant,
    storage: Arc<FileStorage>,
    head: Mutex<Head>,
    /// Segments sealed but maybe still being written: (end lsn, in-flight).
    sealed: Mutex<Vec<(Lsn, Arc<AtomicU64>)>>,
    pages: Vec<Mutex<Vec<DiskPtr>>>,
    segment_size: u64,
    writes: AtomicU64,
    relocations: AtomicU64,
}

impl Store {
    /// Reserves `len` bytes at the head, rolling to a new segment if full.
    fn reserve(&self, len: u64) -> (Lsn, Lid, Arc<AtomicU64>) {
        let mut head = self.head.lock().unwrap();
        if head.used + len > self.segment_size {
            let lsn = head.lsn + self.segment_size as Lsn;
            let lid = self.acc.next(lsn).expect("next");
            let old = std::mem::replace(
                &mut *head,
                Head {
                    lsn,
                    lid,
                    used: 0,
                    in_flight: Arc::new(AtomicU64::new(0)),
                },
            );
            self.sealed
                .lock()
                .unwrap()
                .push((old.lsn + self.segment_size as Lsn, old.in_flight));
        }
        let at = head.used;
        head.used += len;
        head.in_flight.fetch_add(1, Ordering::AcqRel);
        (head.lsn + at as Lsn, head.lid + at, head.in_flight.clone())
    }

    /// Writes a full image (or a free record when `value` is empty) of `pid`.
    fn write(&self, pid: PageId, value: &[u8]) {
        let mut ptrs = self.pages[pid as usize].lock().unwrap();
        let len = 16 + value.len() as u64;
        let (lsn, lid, in_flight) = self.reserve(len);
        let mut record = Vec::with_capacity(len as usize);
        record.extend_from_slice(&pid.to_le_bytes());
        record.extend_from_slice(&(value.len() as u64).to_le_bytes());
        record.extend_from_slice(value);
        self.storage.write_at(lid, &record).expect("write");
        let new = DiskPtr::Inline(lid);
        if ptrs.is_empty() {
            self.acc.mark_link(pid, lsn, new, len).expect("link");
        } else {
            self.acc
                .mark_replace(pid, lsn, &ptrs, new, len)
                .expect("replace");
        }
        *ptrs = vec![new];
        in_flight.fetch_sub(1, Ordering::AcqRel);
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Syncs and stabilizes past every sealed segment with no write in
    /// flight (in order), as a store does after a durable header.
    fn flush(&self) {
        self.storage.sync().expect("sync");
        let mut sealed = self.sealed.lock().unwrap();
        let done = sealed
            .iter()
            .take_while(|(_, w)| w.load(Ordering::Acquire) == 0)
            .count();
        if let Some(&(end, _)) = sealed[..done].last() {
            self.acc.stabilize(end).expect("stabilize");
        }
        sealed.drain(..done);
        drop(sealed);
        self.acc.flush();
    }
}

fn main() {
    let options = match parse() {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("demo: {msg}");
            std::process::exit(2);
        }
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = options
        .path
        .clone()
        .unwrap_or_else(|| dir.path().join("demo.log"));
    let storage = Arc::new(FileStorage::open(&path).expect("open log file"));
    storage.set_len(0).expect("truncate");
    let config = match Config::builder().segment_size(options.segment_size).build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::exit(2);
        }
    };
    let acc = Accountant::new(config, storage.clone());
    let lid = acc.next(0).expect("first segment");
    let store = Arc::new(Store {
        acc,
        storage,
        head: Mutex::new(Head {
            lsn: 0,
            lid,
            used: 0,
            in_flight: Arc::new(AtomicU64::new(0)),
        }),
        sealed: Mutex::new(Vec::new()),
        pages: (0..options.keys).map(|_| Mutex::new(Vec::new())).collect(),
        segment_size: options.segment_size,
        writes: AtomicU64::new(0),
        relocations: AtomicU64::new(0),
    });
    println!(
        "demo: {} threads, {} keys of {} bytes, {} KiB segments, file {}",
        options.threads,
        options.keys,
        options.value_size,
        options.segment_size / 1024,
        path.display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..options.threads {
        let store = store.clone();
        let stop = stop.clone();
        let keys = options.keys;
        let value = vec![b'a' + t as u8 % 26; options.value_size];
        handles.push(std::thread::spawn(move || {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let pid = x % keys;
                // One in twenty writes deletes the page (a free record).
                let v: &[u8] = if x % 20 == 0 { &[] } else { &value };
                store.write(pid, v);
                if x % 10 == 1 {
                    if let Some(victim) = store.acc.clean(pid) {
                        let current = store.pages[victim as usize].lock().unwrap().clone();
                        if !current.is_empty() {
                            store.write(victim, &value);
                            store.relocations.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }));
    }
    let flusher = {
        let store = store.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
                store.flush();
            }
        })
    };
    let mut next_report = Duration::from_secs(1);
    while started.elapsed() < Duration::from_secs_f64(options.seconds) {
        std::thread::sleep(Duration::from_millis(50));
        if started.elapsed() >= next_report {
            next_report += Duration::from_secs(1);
            let s = store.acc.stats();
            println!(
                "  {:>4.1}s  writes {:>9}  file {:>7} KiB  live {:>7} KiB  active {} inactive {} draining {} free {}",
                started.elapsed().as_secs_f64(),
                store.writes.load(Ordering::Relaxed),
                s.tip_bytes / 1024,
                s.live_bytes / 1024,
                s.active,
                s.inactive,
                s.draining,
                s.free + s.freeing
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("writer");
    }
    flusher.join().expect("flusher");
    // Seal the head and stabilize everything.
    let end = {
        let head = store.head.lock().unwrap();
        head.lsn + store.segment_size as Lsn
    };
    let lid = store.acc.next(end).expect("next");
    store.storage.sync().expect("sync");
    store
        .acc
        .stabilize(end + store.segment_size as Lsn)
        .expect("stabilize");
    let _ = lid;
    store.acc.flush();
    let elapsed = started.elapsed().as_secs_f64();
    let s = store.acc.stats();
    let live_pages: u64 = store
        .pages
        .iter()
        .map(|p| p.lock().unwrap().len() as u64)
        .sum();
    let mut by_state: HashMap<&str, usize> = HashMap::new();
    by_state.insert("inactive", s.inactive);
    by_state.insert("draining", s.draining);
    let writes = store.writes.load(Ordering::Relaxed);
    println!(
        "writes: {writes} ({:.0}/s), relocations: {}",
        writes as f64 / elapsed,
        store.relocations.load(Ordering::Relaxed)
    );
    println!(
        "file: {} KiB, live: {} KiB, space amplification {:.2}, truncated {} KiB",
        s.tip_bytes / 1024,
        s.live_bytes / 1024,
        s.tip_bytes as f64 / s.live_bytes.max(1) as f64,
        s.bytes_truncated / 1024
    );
    println!(
        "segments: active {} inactive {} draining {} free {} freeing {}",
        s.active, s.inactive, s.draining, s.free, s.freeing
    );
    println!(
        "pages: {live_pages} with a live fragment, accountant counts {}",
        s.pages_present
    );
    match store.acc.audit() {
        Ok(()) => println!("audit: ok"),
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::exit(1);
        }
    }
}
