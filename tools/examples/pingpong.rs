//! The cost of moving one cache line between two cores, over time.
//!
//! ```sh
//! cargo run --release -p segment-accountant-tools --example pingpong -- --seconds 20
//! ```
//!
//! Two threads pass a counter back and forth through one atomic on a line
//! of its own: each waits for the other's increment, then increments it
//! (`workload::line_round_trip_ns`, which `throughput --paired --probe`
//! also runs before each pair). Each half second it prints the time one
//! round trip took (two line transfers), then the median, the range, and
//! how many samples were above twice the fastest.
//!
//! Why it is here: on the shared 2-vCPU machine this project is measured
//! on, the round trip this tool prints switches between about 70 and
//! about 430 ns every few seconds to minutes (the host moves the virtual
//! CPUs between nearer and farther cores). A workload that writes lines both threads write,
//! such as the throughput example's shared head, runs at half speed in the
//! slow placement, while one that shares nothing (its parallel loop)
//! does not notice. Run this next to a 2-thread figure to tell the two
//! apart (docs/performance-log.md, "The shared head's two speeds").

use std::io::Write;
use std::time::Duration;

#[path = "../../examples/workload/mod.rs"]
mod workload;

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
    let mut samples = Vec::new();
    // Half a second per sample, at least one.
    for _ in 0..((seconds * 2.0) as usize).max(1) {
        let ns = workload::line_round_trip_ns(Duration::from_millis(500));
        // A closed pipe (`| head`) ends the run quietly.
        if writeln!(std::io::stdout(), "ns_per_round_trip={ns:.0}").is_err() {
            std::process::exit(0);
        }
        samples.push(ns);
    }
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
