//! # segment-accountant
//!
//! Segment allocation and liveness accounting for log-structured storage
//! engines: hands out fixed-size segments of one file, tracks which pages
//! live in which segment, decides which segments to clean, shrinks the
//! file, and never becomes the lock every writer waits on.
//!
//! ## The caller contract
//!
//! A log store drives the accountant from its write path:
//!
//! 1. when its write buffer rolls over to a new segment at base lsn `L` (a
//!    multiple of the segment size), it asks [`Accountant::next`]`(L)` for
//!    the file offset to write that segment at;
//! 2. after placing a fragment of page `pid` in a buffer it calls
//!    [`Accountant::mark_link`], or [`Accountant::mark_replace`] when the
//!    write supersedes every earlier fragment of the page (a full image, or
//!    a free record for a deleted page);
//! 3. once a durable segment header [vouches](properties#terms) that the
//!    log is stable below `X`, it calls [`Accountant::stabilize`]`(X)`;
//! 4. it may ask [`Accountant::clean`] for a page to relocate, and rewrite
//!    that page at the log head;
//! 5. to iterate the log consistently it brackets the iteration with
//!    [`Accountant::pause_rewriting`] and [`Accountant::resume_rewriting`];
//! 6. its readers pin [`Accountant::collector`] while they may hold a
//!    pointer into a segment (see [Readers and the
//!    collector](#readers-and-the-collector)), so a segment is never reused
//!    under them. [`Accountant::flush`] pushes deferred frees through.
//!
//! Every link and replace into a segment must happen before a
//! `stabilize` covers it. Breaking the contract yields a typed [`Error`]
//! wherever it is detectable; it never panics. The [`properties`] module
//! defines the terms, the safety properties the accountant keeps and the
//! recovery rules.
//!
//! ```
//! use std::sync::Arc;
//! use segment_accountant::{Accountant, Config, DiskPtr, MemStorage, SegmentState, Skip};
//!
//! let config = Config::builder().segment_size(4096).build()?;
//! let acc = Accountant::new(config, Arc::new(MemStorage::new()));
//!
//! // Readers pin the accountant's collector, whichever constructor built
//! // it: register once per reader thread, pin around each read.
//! let reader = acc.collector().register();
//!
//! // Segment at lsn 0: two pages.
//! let lid = acc.next(0)?;
//! acc.mark_link(1, 10, DiskPtr::Inline(lid + 10), 100)?;
//! acc.mark_link(2, 200, DiskPtr::Inline(lid + 200), 100)?;
//!
//! // Segment at lsn 4096: page 1 rewritten, replacing its old fragment.
//! let lid2 = acc.next(4096)?;
//! acc.mark_replace(1, 4096, &[DiskPtr::Inline(lid + 10)], DiskPtr::Inline(lid2), 100)?;
//!
//! {
//!     let _guard = reader.pin(); // the segment at `lid` is not reused while pinned
//!     // ... read page 1's old fragment at lid + 10 ...
//! }
//!
//! // A header vouches for everything below 8192: both segments seal, and
//! // the replacement is applied to the first.
//! acc.stabilize(8192)?;
//! let first = acc.segment_info(0).unwrap();
//! assert_eq!(first.live_pages, 1);
//! assert_eq!(first.removed_pages, 1);
//! // Segments holding very few pages are drained: `clean` suggests pages
//! // to relocate from them.
//! assert_eq!(first.state, SegmentState::Draining);
//! let relocation = acc.clean(Skip::Nothing).unwrap();
//! assert!(matches!(relocation.pid, 1 | 2));
//! assert_eq!((relocation.segment_lid, relocation.segment_lsn), (lid, 0));
//! acc.audit()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Readers and the collector
//!
//! The accountant never reuses a freed segment while a reader may still
//! read it ([property B](properties#b-no-reuse-under-readers)): it defers
//! each free through an epoch [`Collector`], and a reader that pins that
//! collector holds reuse back until it unpins. There is one rule for every
//! constructor: **readers pin [`Accountant::collector`]** (register a
//! [`LocalHandle`](crossbeam_epoch::LocalHandle) once per reader thread
//! with `acc.collector().register()`, and call its `pin()` around each
//! read). Which collector that is depends only on how the accountant was
//! built:
//!
//! - [`Accountant::new`] uses crossbeam-epoch's [`default_collector`], the
//!   one `crossbeam_epoch::pin()` pins;
//! - [`Accountant::with_collector`], [`Accountant::recover`] and
//!   [`Accountant::from_snapshot`] use the collector you pass. Pass
//!   [`default_collector`]`().clone()` to behave like `new` (the examples
//!   below do), or a private [`Collector::new`] so that no other code's
//!   pins delay your frees.
//!
//! A store that pins some other collector (for instance
//! `crossbeam_epoch::pin()` after building the accountant with a private
//! collector) is not protected.
//!
//! The accountant pins the collector itself when it frees a segment and
//! when it flushes. With a collector of your own it registers once per
//! thread and accountant and keeps the handle in a small per-thread cache
//! (at most 4 handles a thread; a handle goes when its accountant is
//! dropped on that thread, or at the thread's next registration when it is
//! dropped elsewhere). A handle keeps its collector alive, so a thread that
//! used an accountant and then stops using any may keep that collector
//! (and the garbage deferred on it) until it exits.
//!
//! ## Panics in callbacks
//!
//! The accountant runs code you supply: your [`Storage`], your
//! [`CleaningPolicy`], and closures deferred on the epoch collector it
//! shares with your readers. A panic in any of them is caught where the
//! accountant calls it and returned as [`Error::CallbackPanicked`] (naming
//! the [`Callback`]); the accountant stays consistent and every later call
//! works. Which calls may run what:
//!
//! | call | may run | a panic there |
//! |---|---|---|
//! | [`stabilize`](Accountant::stabilize) | `Storage::remove_blob`, the policy, deferred closures | is returned by it, or (work done for another caller) by a later `stabilize` |
//! | [`next`](Accountant::next), [`next_in`](Accountant::next_in) | deferred closures | fails the call, nothing changed: retry |
//! | the truncation thread `next` starts | `Storage::len`, `set_len`, `sync` | is returned once by the next `next` that grows the file, like an I/O error |
//! | [`flush`](Accountant::flush) | deferred closures | goes to a later `stabilize` |
//! | [`audit`](Accountant::audit) | what `stabilize` may run, finishing work a `stabilize` handed over | goes to a later `stabilize` |
//!
//! Other calls run none. A panic that unwinds out of the accountant's own
//! code would be a broken internal invariant (a bug): the accountant then
//! refuses further work with [`Error::Poisoned`], like a poisoned mutex.
//!
//! ## Recovery
//!
//! A store that writes its segments in the reference [`format`](mod@format) recovers
//! with one call: [`Accountant::recover`] scans the file ([`scan`](mod@scan)),
//! durably invalidates any torn or unvouched tail, and rebuilds the
//! accountant with [`Accountant::from_snapshot`] (the [recovery
//! rules](properties#recovery-rules)). The scan's snapshot holds every
//! page's live fragments, and the lsn to resume writing at.
//!
//! ```
//! use std::sync::Arc;
//! use segment_accountant::format::{MessageKind, SegmentBuilder};
//! use segment_accountant::{
//!     default_collector, Accountant, Config, MemStorage, PageState, LogFile, Storage,
//! };
//!
//! let storage = Arc::new(MemStorage::new());
//! // Before the crash: two segments; the second's header vouches for the first.
//! let mut first = SegmentBuilder::new(4096, 0, 0);
//! first.append(MessageKind::Full, 1, b"one").unwrap();
//! storage.write_at(0, &first.finish())?;
//! let mut second = SegmentBuilder::new(4096, 4096, 4096);
//! second.append(MessageKind::Full, 2, b"two").unwrap();
//! storage.write_at(4096, &second.finish())?;
//! // A torn write of a third segment.
//! let mut third = SegmentBuilder::new(4096, 8192, 8192);
//! third.append(MessageKind::Free, 1, b"").unwrap();
//! storage.write_at(8192, &third.finish()[..20])?; // the header itself torn
//!
//! let config = Config::builder().segment_size(4096).build()?;
//! // The same collector `Accountant::new` uses; readers pin `acc.collector()`.
//! let (acc, scan) = Accountant::recover(config, storage, default_collector().clone())?;
//! assert!(matches!(scan.snapshot.pages[&1], PageState::Present(_)), "torn data never surfaces");
//! assert_eq!(scan.resume_lsn, 8192);
//! acc.audit()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Compared with the single-mutex design
//!
//! | | single-mutex design | this crate |
//! |---|---|---|
//! | per-write calls | take the one mutex | touch only the target segment |
//! | `stabilize` | in-order work under the mutex | one combiner works, others hand over and return |
//! | free list | FIFO | lowest offset first; the file shrinks |
//! | caller mistakes, bad snapshots | panic | typed errors, nothing changed |
//! | live bytes | not tracked | per segment |
//!
//! With the `testing` feature the old design is available as
//! `baseline::MutexAccountant`, for benchmarks against it.
//!
//! ## Design
//!
//! Segment metadata lives in a table of chunks that never move. Each
//! segment's state, base lsn and generation share one atomic word changed
//! by compare-and-swap; its page sets are sharded concurrent maps and its
//! live bytes an atomic counter. Deactivation in lsn order is done by a
//! combiner: whichever `stabilize` finds the work idle does it, the others
//! hand over and return. Freed segments reach a lock-free bitmap through
//! crossbeam-epoch deferral, and `next` claims the lowest set bit. Only
//! growing the file takes a lock (the sequencer's).
//!
//! ## Features
//!
//! - `testing` (off by default): test and benchmark support that is not
//!   part of the stable surface: `model`, a plain single-threaded
//!   implementation of the same specification used as the oracle in
//!   differential tests; `baseline`, the single-mutex design; and
//!   `fault::FaultStorage`, an in-memory [`Storage`] that simulates
//!   crashes (torn writes, unsynced writes lost in any order), useful for
//!   testing a store built on the accountant.
//! - `tracing` (off by default): events and spans through the
//!   [`tracing`](https://docs.rs/tracing) crate, so a store's logs show why
//!   the file grew or shrank: a segment sealed (lsn, lid, bytes), a drain
//!   started (and why: the policy, the space target, the tip-shrinking
//!   rule), a segment freed, reused or appended, the file truncated (bytes
//!   returned), and each recovery phase (scan, invalidate, rebuild) with
//!   its duration. Per-segment events are at `DEBUG`, truncation and
//!   recovery at `INFO`; each event is named in its metadata (`seal`,
//!   `drain`, `free`, `reuse`, `append`, `truncate`, `recovery_phase`).
//!   Nothing is added to `mark_link` or `mark_replace`; without the
//!   feature every event compiles to nothing.

#![warn(missing_docs)]

// Rooms, bottom to top (docs/design.md has the map): the shared
// vocabulary (`types`, `error`, `trace`, `storage`), then the lock-free `core`,
// `cleaning` and `recovery` side by side, the `accountant` facade on top;
// `testing` outside the shipped surface. Imports point down only.
mod error;
#[cfg(seeded_bugs)]
mod seeded;
pub mod storage;
mod trace;
mod types;

mod accountant;
mod cleaning;
mod core;
pub mod recovery;
#[cfg(feature = "testing")]
mod testing;

pub mod guide;
pub mod properties;

pub use accountant::audit::{AuditError, SegmentInfo, Stats};
pub use accountant::{introspect, metrics, Accountant};
pub use cleaning::{config, placement, policy};
pub use config::{Config, ConfigBuilder, Mode, Tuning};
pub use crossbeam_epoch::{default_collector, Collector};
pub use error::{Callback, ConfigError, Error, Result};
pub use metrics::Metrics;
pub use placement::{Relocation, Skip};
pub use policy::CleaningPolicy;
pub use recovery::{format, scan};
pub use recovery::{Fragment, PageState, RecoverError, Snapshot};
pub use storage::{FileStorage, LogFile, MemStorage, Storage};
#[cfg(feature = "testing")]
pub use testing::{baseline, fault, model};
pub use types::{BlobId, DiskPtr, Lid, Lsn, PageId, SegmentState};

/// The loom stand-in of crossbeam's queue, for its litmus model in
/// `loom-tests` (exists only under `--cfg loom`).
#[cfg(loom)]
#[doc(hidden)]
pub use crate::core::sync::loom_queue;

/// The free tree alone, for its loom models in `loom-tests` (exists only
/// under `--cfg loom`).
#[cfg(loom)]
#[doc(hidden)]
pub use crate::core::table::loom_free_tree;

/// The README's code (its API tour) runs as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
