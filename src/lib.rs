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
//! 3. once a durable segment header vouches that the log is stable below
//!    `X`, it calls [`Accountant::stabilize`]`(X)`;
//! 4. it may ask [`Accountant::clean`] for a page to relocate, and rewrite
//!    that page at the log head;
//! 5. to iterate the log consistently it brackets the iteration with
//!    [`Accountant::pause_rewriting`] and [`Accountant::resume_rewriting`];
//! 6. its readers pin the epoch collector the accountant defers frees
//!    through (crossbeam-epoch's default one unless you pass your own to
//!    [`Accountant::with_collector`]), so a segment is never reused under
//!    them. [`Accountant::flush`] pushes deferred frees through.
//!
//! Every link and replace into a segment must happen before a
//! `stabilize` covers it. Breaking the contract yields a typed [`Error`]
//! wherever it is detectable; it never panics.
//!
//! ```
//! use std::sync::Arc;
//! use segment_accountant::{Accountant, Config, DiskPtr, MemStorage, SegmentState};
//!
//! let config = Config::builder().segment_size(4096).build()?;
//! let acc = Accountant::new(config, Arc::new(MemStorage::new()));
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
//! // A header vouches for everything below 8192: both segments seal, and
//! // the replacement is applied to the first.
//! acc.stabilize(8192)?;
//! let first = acc.segment_info(0).unwrap();
//! assert_eq!(first.live_pages, 1);
//! assert_eq!(first.removed_pages, 1);
//! // Segments holding very few pages are drained: `clean` suggests pages
//! // to relocate from them.
//! assert_eq!(first.state, SegmentState::Draining);
//! assert!(matches!(acc.clean(u64::MAX), Some(1 | 2)));
//! acc.audit()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Recovery
//!
//! A store that writes its segments in the reference [`format`](mod@format) recovers
//! with one call: [`Accountant::recover`] scans the file ([`scan`](mod@scan)),
//! durably invalidates any torn or unvouched tail, and rebuilds the
//! accountant with [`Accountant::from_snapshot`]. The scan's snapshot holds
//! every page's live fragments, and the lsn to resume writing at.
//!
//! ```
//! use std::sync::Arc;
//! use segment_accountant::format::{MessageKind, SegmentBuilder};
//! use segment_accountant::{Accountant, Collector, Config, MemStorage, PageState, Storage};
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
//! let (acc, scan) = Accountant::recover(config, storage, Collector::new())?;
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
//! The old design is kept as [`baseline::MutexAccountant`] for benchmarks;
//! `docs/performance.md` has the same-run comparison.
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
//! growing the file takes a lock (the sequencer's). See `docs/design.md`.
//!
//! [`model`] is a plain single-threaded implementation of the same
//! specification, used as the oracle in differential tests.

#![warn(missing_docs)]

mod accountant;
mod audit;
pub mod baseline;
mod combiner;
pub mod config;
mod error;
pub mod fault;
pub mod format;
mod freelist;
pub mod guide;
pub mod introspect;
pub mod model;
mod pidset;
pub mod placement;
pub mod policy;
pub mod recovery;
pub mod scan;
#[cfg(feature = "seeded-bugs")]
mod seeded;
mod segment;
mod sequencer;
pub mod storage;
mod sync;
mod table;
mod types;
mod victims;

pub use accountant::Accountant;
pub use audit::{AuditError, SegmentInfo, Stats};
pub use config::{Config, ConfigBuilder, ConfigError, Mode};
pub use crossbeam_epoch::Collector;
pub use error::{Error, Result};
pub use policy::CleaningPolicy;
pub use recovery::{Fragment, PageState, RecoverError, Snapshot};
pub use segment::SegmentState;
pub use storage::{FileStorage, MemStorage, Storage};
pub use types::{BlobId, DiskPtr, Lid, Lsn, PageId};
