//! The demo: a small multi-threaded key-value log store on a real file.
//!
//! Writer threads put random keys through the store of
//! `examples/store/mod.rs` (the reference segment format; segments from the
//! accountant's `next`; full rewrites as `mark_replace`; relocation of the
//! pages `clean` suggests; `stabilize` with the header-vouched lsn after
//! each sync). A live line shows ops/s, file size, live bytes, space and
//! write amplification and segments per state. Then the demo crashes
//! itself: it drops the store without a clean shutdown (the segment being
//! filled is lost; with `--tear`, half of it is written over the file, as
//! a torn write), recovers with `Accountant::recover`, and checks that
//! every acknowledged write (one the accountant had been told was stable)
//! reads back intact.
//!
//! ```text
//! cargo run --release --example demo -- [--threads N] [--seconds S] [--keys K] [--value-size B]
//!                                        [--segment-size B] [--path FILE] [--tear | --no-tear]
//! ```

mod store;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use segment_accountant::{Config, FileStorage, Lsn, PageId, Storage};
use store::{read_version, Store};

#[derive(Debug)]
struct Options {
    threads: usize,
    seconds: f64,
    keys: u64,
    value_size: usize,
    segment_size: u64,
    path: Option<PathBuf>,
    tear: bool,
}

const USAGE: &str = "usage: demo [--threads N] [--seconds S] [--keys K] [--value-size B] [--segment-size B] [--path FILE] [--tear | --no-tear]";

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        threads: 4,
        seconds: 5.0,
        keys: 10_000,
        value_size: 100,
        segment_size: 64 * 1024,
        path: None,
        tear: true,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--threads" => {
                o.threads = value(flag)?
                    .parse()
                    .map_err(|_| "--threads: not a number")?
            }
            "--seconds" => {
                o.seconds = value(flag)?
                    .parse()
                    .map_err(|_| "--seconds: not a number")?
            }
            "--keys" => o.keys = value(flag)?.parse().map_err(|_| "--keys: not a number")?,
            "--value-size" => {
                o.value_size = value(flag)?
                    .parse()
                    .map_err(|_| "--value-size: not a number")?
            }
            "--segment-size" => {
                o.segment_size = value(flag)?
                    .parse()
                    .map_err(|_| "--segment-size: not a number")?
            }
            "--path" => o.path = Some(PathBuf::from(value(flag)?)),
            "--tear" => o.tear = true,
            "--no-tear" => o.tear = false,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    if o.threads == 0 || o.threads > 64 {
        return Err("--threads must be 1 to 64".into());
    }
    if o.keys == 0 {
        return Err("--keys must be positive".into());
    }
    if !(o.seconds > 0.0 && o.seconds <= 3600.0) {
        return Err("--seconds must be in (0, 3600]".into());
    }
    if let Err(e) = Config::builder().segment_size(o.segment_size).build() {
        return Err(format!("--segment-size: {e}"));
    }
    if o.value_size < 16 || o.value_size as u64 * 4 > o.segment_size {
        return Err(format!(
            "--value-size must be 16 to {} (a quarter of the segment)",
            o.segment_size / 4
        ));
    }
    Ok(o)
}

/// Per key: versions written, and the last one acknowledged (stable).
#[derive(Default)]
struct Acks {
    written: HashMap<PageId, Vec<(Lsn, u64)>>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("demo: {msg}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(o) {
        eprintln!("demo: {e}");
        std::process::exit(1);
    }
}

fn run(o: Options) -> store::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = o
        .path
        .clone()
        .unwrap_or_else(|| dir.path().join("demo.log"));
    let config = Config::builder().segment_size(o.segment_size).build()?;
    let storage = Arc::new(FileStorage::open(&path)?);
    storage.set_len(0)?;
    println!(
        "demo: {} threads, {} keys of {} bytes, {} KiB segments, file {}",
        o.threads,
        o.keys,
        o.value_size,
        o.segment_size / 1024,
        path.display()
    );
    let mut s = Store::create(config.clone(), storage.clone())?;
    s.value_size = o.value_size;
    let store = Arc::new(Mutex::new(s));
    let acks = Arc::new(Mutex::new(Acks::default()));
    let ops = Arc::new(AtomicU64::new(0));
    let next_version = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writers: Vec<_> = (0..o.threads)
        .map(|t| {
            let (store, acks, ops, next_version, stop) = (
                store.clone(),
                acks.clone(),
                ops.clone(),
                next_version.clone(),
                stop.clone(),
            );
            let keys = o.keys;
            std::thread::spawn(move || -> store::Result<()> {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = x % keys;
                    let version = next_version.fetch_add(1, Ordering::Relaxed);
                    let mut s = store.lock().unwrap();
                    let lsn = s.put(key, version)?;
                    acks.lock()
                        .unwrap()
                        .written
                        .entry(key)
                        .or_default()
                        .push((lsn, version));
                    // Relocate what the cleaner asks for, a little per write.
                    for _ in 0..2 {
                        if s.relocate(key)?.is_none() {
                            break;
                        }
                    }
                    if x % 256 == 0 {
                        s.flush()?;
                    }
                    drop(s);
                    ops.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    let deadline = Duration::from_secs_f64(o.seconds);
    let mut last = (Instant::now(), 0u64);
    while started.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let s = store.lock().unwrap();
        let st = s.acc.stats();
        let n = ops.load(Ordering::Relaxed);
        let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), n);
        let done = (started.elapsed().as_secs_f64() / o.seconds).min(1.0);
        let bar: String = (0..20)
            .map(|i| if (i as f64) < done * 20.0 { '#' } else { '.' })
            .collect();
        print!(
            "\r[{bar}] {:>8.0} ops/s  file {:>6} KiB  live {:>6} KiB  space amp {:>4.2}  write amp {:>4.2}  active {} inactive {} draining {} free {}   ",
            rate,
            st.tip_bytes / 1024,
            st.live_bytes / 1024,
            st.tip_bytes as f64 / st.live_bytes.max(1) as f64,
            s.bytes_written as f64 / s.user_bytes.max(1) as f64,
            st.active,
            st.inactive,
            st.draining,
            st.free + st.freeing
        );
        std::io::stdout().flush().ok();
    }
    println!();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().map_err(|_| "a writer panicked")??;
    }
    let elapsed = started.elapsed().as_secs_f64();

    // Crash: no clean shutdown. The segment being filled is lost (it only
    // lives in memory); with --tear, a torn prefix of it lands in the file.
    let store = Arc::try_unwrap(store)
        .map_err(|_| "store still shared")?
        .into_inner()
        .unwrap();
    let stable_end = match store.acc.stable_lsn() {
        -1 => -1,
        lsn => lsn + o.segment_size as Lsn,
    };
    let before = store.acc.stats();
    let (user_bytes, bytes_written) = (store.user_bytes, store.bytes_written);
    if o.tear {
        store.tear_head()?;
    }
    drop(store);
    println!(
        "crash: dropped the store without a clean shutdown{}",
        if o.tear {
            ", tearing the last write"
        } else {
            ""
        }
    );

    // Recover from the file.
    let t = Instant::now();
    let storage = Arc::new(FileStorage::open(&path)?);
    let (recovered, scan) = Store::recover(config, storage.clone())?;
    let recovery_ms = t.elapsed().as_secs_f64() * 1e3;
    recovered.acc.audit()?;

    // Verify every acknowledged key.
    let acks = acks.lock().unwrap();
    let (mut verified, mut lost) = (0u64, 0u64);
    for (&key, writes) in &acks.written {
        let Some(k) = writes.iter().rposition(|&(lsn, _)| lsn < stable_end) else {
            continue;
        };
        verified += 1;
        let ok = recovered.pages.get(&key).is_some_and(|page| {
            !page.deleted
                && writes[k..].iter().any(|&(_, v)| v == page.version)
                && read_version(
                    &*storage,
                    o.segment_size,
                    key,
                    *page.ptrs.last().expect("ptr"),
                )
                .ok()
                .flatten()
                    == Some(page.version)
        });
        if !ok {
            lost += 1;
        }
    }
    let total = ops.load(Ordering::Relaxed);
    println!();
    println!("  {:<28} {:>14}", "writes", total);
    println!(
        "  {:<28} {:>14.0}",
        "writes per second",
        total as f64 / elapsed
    );
    println!(
        "  {:<28} {:>14}",
        "file at crash (KiB)",
        before.tip_bytes / 1024
    );
    println!(
        "  {:<28} {:>14}",
        "live at crash (KiB)",
        before.live_bytes / 1024
    );
    println!(
        "  {:<28} {:>14.2}",
        "space amplification",
        before.tip_bytes as f64 / before.live_bytes.max(1) as f64
    );
    println!(
        "  {:<28} {:>14.2}",
        "write amplification",
        bytes_written as f64 / user_bytes.max(1) as f64
    );
    println!(
        "  {:<28} {:>14}",
        "truncated (KiB)",
        before.bytes_truncated / 1024
    );
    println!(
        "  {:<28} {:>14}",
        "segments discarded",
        scan.discarded.len()
    );
    println!("  {:<28} {:>14.1}", "recovery (ms)", recovery_ms);
    println!(
        "  {:<28} {:>14}",
        "pages recovered",
        scan.snapshot.pages.len()
    );
    println!("verified: {verified} keys, {lost} lost");
    if lost > 0 {
        return Err(format!("{lost} acknowledged keys lost").into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn good_options_parse() {
        let o = parse(&args(
            "--threads 2 --seconds 0.5 --keys 100 --value-size 64 --segment-size 8192",
        ))
        .unwrap();
        assert_eq!(
            (o.threads, o.keys, o.value_size, o.segment_size),
            (2, 100, 64, 8192)
        );
        assert!(parse(&[]).is_ok());
    }

    #[test]
    fn bad_options_are_refused_with_a_message() {
        for bad in [
            "--threads 0",
            "--threads many",
            "--keys 0",
            "--seconds -1",
            "--segment-size 3000",
            "--segment-size 1024",
            "--value-size 8",
            "--value-size 100000",
            "--frobnicate",
            "--path",
        ] {
            let err = parse(&args(bad)).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
    }
}
