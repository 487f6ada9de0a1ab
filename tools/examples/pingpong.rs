//! The cost of moving one cache line between two cores, over time.
//!
//! ```sh
//! cargo run --release -p segment-accountant-tools --example pingpong -- --seconds 20
//! ```
//!
//! Two threads pass a counter back and forth through one atomic on a line
//! of its own: each waits for the other's increment, then increments it.
//! Each half second it prints the time one round trip took (two line
//! transfers), then the median, the range, and how many samples were above
//! twice the fastest.
//!
//! Why it is here: on the shared 2-vCPU machine this project is measured
//! on, the round trip this tool prints switches between about 70 and
//! about 430 ns every few seconds to minutes (the host moves the virtual
//! CPUs between nearer and farther cores). A workload that writes lines both threads write,
//! such as the throughput example's shared head, runs at half speed in the
//! slow placement, while one that shares nothing (its parallel loop)
//! does not notice. Run this next to a 2-thread figure to tell the two
//! apart (docs/performance.md, "The shared head's two speeds").

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

fn main() {
    let mut seconds = 10.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--seconds", Some(v)) => match v.parse() {
                Ok(s) if s > 0.0 => seconds = s,
                _ => usage(),
            },
            _ => usage(),
        }
    }
    let line = CachePadded::new(AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    let mut samples = Vec::new();
    /// Stops the other side however this side leaves the scope (a failed
    /// print unwinds; the scope would otherwise wait for it forever).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            // The other side: turns every odd value even.
            while !stop.load(Ordering::Relaxed) {
                // Acquire/Release: the hand-over is the point, not data.
                let v = line.load(Ordering::Acquire);
                if v % 2 == 1 {
                    line.store(v + 1, Ordering::Release);
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let _stop = Stop(&stop);
        let end = Instant::now() + Duration::from_secs_f64(seconds);
        while Instant::now() < end {
            let start = Instant::now();
            let mut trips = 0u64;
            while start.elapsed() < Duration::from_millis(500) {
                for _ in 0..1000 {
                    let v = line.load(Ordering::Acquire);
                    line.store(v + 1, Ordering::Release);
                    while line.load(Ordering::Acquire) == v + 1 {
                        std::hint::spin_loop();
                    }
                }
                trips += 1000;
            }
            let ns = start.elapsed().as_nanos() as f64 / trips as f64;
            // A closed pipe (`| head`) ends the run quietly.
            if writeln!(std::io::stdout(), "ns_per_round_trip={ns:.0}").is_err() {
                std::process::exit(0);
            }
            samples.push(ns);
        }
    });
    samples.sort_by(f64::total_cmp);
    let (min, max) = (samples[0], samples[samples.len() - 1]);
    let slow = samples.iter().filter(|&&ns| ns > 2.0 * min).count();
    println!(
        "samples={} median_ns={:.0} min_ns={min:.0} max_ns={max:.0} above_twice_min={slow}",
        samples.len(),
        samples[samples.len() / 2]
    );
}

fn usage() -> ! {
    eprintln!("usage: pingpong [--seconds S]");
    std::process::exit(2);
}
