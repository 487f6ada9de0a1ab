//! The demo: a concurrent key-value log store on a real file.
//!
//! `--threads N` writer threads put random keys through the store of
//! `examples/store/` at once: each reserves room in the open segment
//! buffer with one atomic, writes its record, tells the accountant
//! (`mark_replace`) and releases; no lock is shared by all writers. A
//! background flusher group-commits (one sync for every sealed buffer)
//! and stabilizes with the lsn a durable header or checkpoint vouches
//! for; a background cleaner relocates what `clean_placed` suggests. A
//! live line (rewritten in a terminal, plain lines otherwise) shows ops/s,
//! file size, live bytes, space and write amplification (the accountant's
//! own counters, `Accountant::metrics`) and segments per
//! state. Then the demo crashes itself: it stops without a clean shutdown
//! (unflushed buffers are lost; with `--tear`, half of the open buffer is
//! written over the file, as a torn write), recovers with
//! `Accountant::recover`, and checks that every acknowledged write (below
//! the lsn the store had passed to `stabilize`) reads back intact.
//!
//! With `--fill-mib M` it writes until the file holds M MiB instead of for
//! `--seconds`, and reads the whole file sequentially before and after
//! recovering, so recovery's time can be compared with a plain read of the
//! same file (the faster of the two reads).
//!
//! With `--recover-only --path FILE` it only recovers an existing log:
//! `--runs N` times (11 by default) it reads the whole file sequentially
//! and recovers it (`Store::recover`), alternating which goes first, and
//! prints each run's recovery / read ratio and their median (all from the
//! page cache: an untimed read comes first).
//!
//! ```text
//! cargo run --release --example demo -- [--threads N] [--seconds S] [--keys K] [--value-size B]
//!                                        [--segment-size B] [--path FILE] [--tear | --no-tear]
//!                                        [--fill-mib M]
//! cargo run --release --example demo -- --recover-only --path FILE [--runs N] [--segment-size B]
//! ```

mod store;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use segment_accountant::{Config, FileStorage, LogFile, Lsn, PageId, Storage};
use store::{check_payload, payload, Background, Options, Store};

#[derive(Debug)]
struct Args {
    threads: usize,
    seconds: f64,
    keys: u64,
    value_size: usize,
    segment_size: u64,
    path: Option<PathBuf>,
    tear: bool,
    fill_mib: Option<u64>,
    recover_only: bool,
    /// `--runs`, if given (`--recover-only` runs [`RECOVER_RUNS`] times
    /// otherwise).
    runs: Option<usize>,
}

/// How many times `--recover-only` recovers without `--runs`.
const RECOVER_RUNS: usize = 11;

const USAGE: &str = "usage: demo [--threads N] [--seconds S] [--keys K] [--value-size B] [--segment-size B] [--path FILE] [--tear | --no-tear] [--fill-mib M] [--recover-only [--runs N]]";

fn parse(args: &[String]) -> Result<Args, String> {
    let mut o = Args {
        threads: 4,
        seconds: 5.0,
        keys: 10_000,
        value_size: 100,
        segment_size: 64 * 1024,
        path: None,
        tear: true,
        fill_mib: None,
        recover_only: false,
        runs: None,
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
            "--fill-mib" => {
                o.fill_mib = Some(
                    value(flag)?
                        .parse()
                        .map_err(|_| "--fill-mib: not a number")?,
                )
            }
            "--path" => o.path = Some(PathBuf::from(value(flag)?)),
            "--tear" => o.tear = true,
            "--no-tear" => o.tear = false,
            "--recover-only" => o.recover_only = true,
            "--runs" => o.runs = Some(value(flag)?.parse().map_err(|_| "--runs: not a number")?),
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
    if o.recover_only && o.path.is_none() {
        return Err("--recover-only needs --path".into());
    }
    if let Some(runs) = o.runs {
        if !o.recover_only {
            return Err("--runs needs --recover-only".into());
        }
        if runs == 0 || runs > 1000 {
            return Err("--runs must be 1 to 1000".into());
        }
    }
    if o.fill_mib == Some(0) {
        return Err("--fill-mib must be positive".into());
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

/// A writer's count of puts, on its own cache line.
#[repr(align(128))]
#[derive(Default)]
struct Counter(AtomicU64);

/// One acknowledged-or-not write: key, lsn, version.
type Write3 = (PageId, Lsn, u64);

/// Recovers the log at `--path` `--runs` times, each time next to a
/// sequential read of the whole file (the same read size as the scan, into
/// one buffer allocated for the read, as the scan allocates its own) and a
/// scan alone, alternating whether the read goes first or last, after one
/// untimed read that brings the file into the page cache; prints every
/// run's times and recovery / read ratio, and the medians. Recovery is the whole of
/// `Store::recover` (sync, scan, rebuild the accountant, build the page
/// table); the recovered store is dropped outside the timing. A first
/// recovery of a crashed log completes its open segment and invalidates
/// its discarded tail; the runs after it find a clean log.
fn recover_only(o: &Args) -> store::Result<()> {
    let path = o.path.clone().expect("checked by parse");
    let config = Config::builder().segment_size(o.segment_size).build()?;
    let storage = Arc::new(FileStorage::open(&path)?);
    let len = storage.len()?;
    let read_size = segment_accountant::scan::read_size(o.segment_size) as usize;
    let n = o.runs.unwrap_or(RECOVER_RUNS);
    println!(
        "recover-only: {} ({} MiB), {} runs, reads of {} KiB",
        path.display(),
        len >> 20,
        n,
        read_size >> 10
    );
    // Untimed: bring the file into the page cache, so that every run
    // compares reads of cached pages (a first read from the disk is many
    // times slower than the ones after it).
    sequential_read(&*storage, len, read_size)?;
    let mut runs = Vec::with_capacity(n);
    let mut pages = 0;
    for i in 0..n {
        let recover = || -> store::Result<(f64, usize)> {
            let t = Instant::now();
            let (recovered, found) = Store::recover(&config, storage.clone(), Options::default())?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let pages = found.snapshot.pages.len();
            drop((recovered, found));
            Ok((ms, pages))
        };
        let scan = || -> store::Result<f64> {
            let t = Instant::now();
            let found = segment_accountant::scan::scan(&*storage, o.segment_size)?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            drop(found);
            Ok(ms)
        };
        let read = || sequential_read(&*storage, len, read_size).map(|s| s * 1e3);
        let (read_ms, scan_ms, (recovery_ms, found_pages)) = if i % 2 == 0 {
            let read_ms = read()?;
            let scan_ms = scan()?;
            (read_ms, scan_ms, recover()?)
        } else {
            let recovery = recover()?;
            let scan_ms = scan()?;
            (read()?, scan_ms, recovery)
        };
        pages = found_pages;
        let ratio = recovery_ms / read_ms;
        println!(
            "run={} read_ms={:.1} scan_ms={:.1} recovery_ms={:.1} ratio={:.2}",
            i + 1,
            read_ms,
            scan_ms,
            recovery_ms,
            ratio
        );
        runs.push([read_ms, scan_ms, recovery_ms, ratio]);
    }
    let median_of = |k: usize| median(runs.iter().map(|r| r[k]).collect());
    println!("  {:<28} {:>14}", "log file (MiB)", len >> 20);
    println!("  {:<28} {:>14}", "pages", pages);
    println!("  {:<28} {:>14}", "runs", runs.len());
    println!(
        "  {:<28} {:>14.1}",
        "sequential read (ms, median)",
        median_of(0)
    );
    println!("  {:<28} {:>14.1}", "scan alone (ms, median)", median_of(1));
    println!("  {:<28} {:>14.1}", "recovery (ms, median)", median_of(2));
    println!(
        "  {:<28} {:>14.2}",
        "recovery / read (median)",
        median_of(3)
    );
    Ok(())
}

/// The median of `v` (the mean of the two middle values for an even
/// count); `v` is not empty.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn run(o: Args) -> store::Result<()> {
    if o.recover_only {
        return recover_only(&o);
    }
    let dir = tempfile::tempdir()?;
    let path = o
        .path
        .clone()
        .unwrap_or_else(|| dir.path().join("demo.log"));
    let config = Config::builder().segment_size(o.segment_size).build()?;
    let storage = Arc::new(FileStorage::open(&path)?);
    storage.set_len(0)?;
    println!(
        "demo: {} writer threads, {} keys of {} bytes, {} KiB segments, file {}",
        o.threads,
        o.keys,
        o.value_size,
        o.segment_size / 1024,
        path.display()
    );
    let options = Options {
        background_flusher: true,
        ..Options::default()
    };
    let store = Arc::new(Store::new(&config, storage.clone(), options.clone())?);
    let background = Background::start(&store, Duration::ZERO, 1);
    let counters: Arc<Vec<Counter>> =
        Arc::new((0..o.threads).map(|_| Counter::default()).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writers: Vec<_> = (0..o.threads)
        .map(|t| {
            let (store, counters, stop) = (store.clone(), counters.clone(), stop.clone());
            let (keys, value_size) = (o.keys, o.value_size);
            std::thread::spawn(move || -> store::Result<Vec<Write3>> {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
                let mut writes = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = x % keys;
                    // Unique per writer without a shared counter.
                    let version = ((t as u64 + 1) << 40) | n;
                    let lsn = store.put(key, &payload(key, version, value_size))?;
                    writes.push((key, lsn, version));
                    n += 1;
                    if n % 64 == 0 {
                        counters[t].0.store(n, Ordering::Relaxed);
                    }
                }
                counters[t].0.store(n, Ordering::Relaxed);
                Ok(writes)
            })
        })
        .collect();

    // The live line.
    let tty = std::io::stdout().is_terminal();
    let total = |c: &[Counter]| c.iter().map(|c| c.0.load(Ordering::Relaxed)).sum::<u64>();
    let deadline = Duration::from_secs_f64(o.seconds);
    let mut last = (Instant::now(), 0u64);
    let mut last_line = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let done = match o.fill_mib {
            Some(mib) => store.acc.tip() >= mib << 20,
            None => started.elapsed() >= deadline,
        };
        if done || store.failed() {
            break;
        }
        if !tty && last_line.elapsed() < Duration::from_secs(1) {
            continue;
        }
        last_line = Instant::now();
        let st = store.acc.stats();
        // Amplification from the accountant's own counters (O(1)).
        let m = store.acc.metrics();
        let n = total(&counters);
        let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), n);
        let line = format!(
            "{:>9.0} puts/s  file {:>7} KiB  live {:>7} KiB  space amp {:>4.2}  write amp {:>4.2}  segments: active {} inactive {} draining {} free {}",
            rate,
            st.tip_bytes / 1024,
            st.live_bytes / 1024,
            m.space_amplification(),
            m.write_amplification(),
            st.active,
            st.inactive,
            st.draining,
            st.free + st.freeing
        );
        if tty {
            print!("\r{line}   ");
            std::io::stdout().flush().ok();
        } else {
            println!("{line}");
        }
    }
    if tty {
        println!();
    }
    stop.store(true, Ordering::Relaxed);
    let mut writes = Vec::new();
    for w in writers {
        writes.extend(w.join().map_err(|_| "a writer panicked")??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    background.stop()?;
    let puts = writes.len() as u64;

    // Crash: no clean shutdown. Buffers not yet written are lost; with
    // --tear, a torn prefix of the open one lands in the file.
    let acknowledged = store.vouched();
    let before = store.acc.stats();
    let metrics = store.acc.metrics();
    if o.tear {
        store.tear_head()?;
    }
    drop(store);
    println!(
        "crash: stopped without a clean shutdown{}",
        if o.tear {
            ", tearing the last write"
        } else {
            ""
        }
    );

    // A plain sequential read of the whole file, for comparison.
    let file_len = storage.len()?;
    let read_size = segment_accountant::scan::read_size(o.segment_size) as usize;
    let read_ms = if o.fill_mib.is_some() {
        Some(sequential_read(&*storage, file_len, read_size)? * 1e3)
    } else {
        None
    };
    drop(storage);

    // Recover from the file.
    let t = Instant::now();
    let storage = Arc::new(FileStorage::open(&path)?);
    let (recovered, scan) = Store::recover(&config, storage.clone(), options)?;
    let recovery_ms = t.elapsed().as_secs_f64() * 1e3;
    recovered.acc.audit()?;
    // Read the file again (recovery left it in the page cache): the
    // comparison uses the faster of the two reads.
    let read_ms = match read_ms {
        Some(before) => Some(before.min(sequential_read(&*storage, file_len, read_size)? * 1e3)),
        None => None,
    };

    // Verify every key with an acknowledged write.
    writes.sort_unstable();
    let (mut verified, mut lost) = (0u64, 0u64);
    for group in writes.chunk_by(|a, b| a.0 == b.0) {
        let key = group[0].0;
        let Some(k) = group.iter().rposition(|&(_, lsn, _)| lsn < acknowledged) else {
            continue;
        };
        verified += 1;
        let value = recovered.get(key).ok().flatten();
        let version = value.and_then(|v| check_payload(key, &v));
        if !version.is_some_and(|v| group[k..].iter().any(|&(_, _, w)| w == v)) {
            lost += 1;
        }
    }
    println!();
    println!("  {:<28} {:>14}", "writer threads", o.threads);
    println!("  {:<28} {:>14}", "puts", puts);
    println!(
        "  {:<28} {:>14.0}",
        "puts per second",
        puts as f64 / elapsed
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
        metrics.space_amplification()
    );
    println!(
        "  {:<28} {:>14.2}",
        "write amplification",
        metrics.write_amplification()
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
    if let Some(read_ms) = read_ms {
        println!("  {:<28} {:>14}", "log file (MiB)", file_len >> 20);
        println!("  {:<28} {:>14.1}", "sequential read (ms)", read_ms);
    }
    println!("  {:<28} {:>14.1}", "recovery (ms)", recovery_ms);
    if let Some(read_ms) = read_ms {
        println!(
            "  {:<28} {:>14.2}",
            "recovery / read",
            recovery_ms / read_ms
        );
    }
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

/// Reads the whole file front to back in reads of `read_size` bytes into
/// one buffer, as the scanner does; returns the seconds it took.
fn sequential_read(storage: &dyn LogFile, len: u64, read_size: usize) -> store::Result<f64> {
    let t = Instant::now();
    let mut buf = vec![0u8; read_size];
    let mut at = 0;
    let mut sum = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        storage.read_at(at, &mut buf[..n])?;
        sum = sum.wrapping_add(buf[n - 1] as u64);
        at += n as u64;
    }
    std::hint::black_box(sum);
    Ok(t.elapsed().as_secs_f64())
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
            "--threads 2 --seconds 0.5 --keys 100 --value-size 64 --segment-size 8192 --fill-mib 3",
        ))
        .unwrap();
        assert_eq!(
            (o.threads, o.keys, o.value_size, o.segment_size, o.fill_mib),
            (2, 100, 64, 8192, Some(3))
        );
        assert!(parse(&[]).is_ok());
        let o = parse(&args("--recover-only --path /tmp/x.log --runs 9")).unwrap();
        assert_eq!((o.recover_only, o.runs), (true, Some(9)));
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
            "--fill-mib 0",
            "--recover-only",
            "--runs 3",
            "--recover-only --path x --runs 0",
            "--recover-only --path x --runs many",
            "--frobnicate",
            "--path",
        ] {
            let err = parse(&args(bad)).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
    }
}
