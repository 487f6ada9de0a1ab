//! # The caller contract as a worked example
//!
//! This page walks through the write path of a concurrent log store built
//! on the accountant and the reference [`format`](crate::format), step by
//! step, with the invariant each step keeps. It is the write path of the
//! store in `examples/store/` (used by the demo, the crash simulation and
//! the end-to-end benchmark), which crashes under four writer threads a
//! thousand times per CI run without losing an acknowledged write
//! (`cargo run --release --example crashsim -- --threads 4 --seed 1
//! --cycles 1000`).
//!
//! ## The pieces
//!
//! - **Heads.** One open *buffer* per write head (stream). A buffer is a
//!   piece of one segment, from some offset to wherever it is sealed; a
//!   segment's first buffer begins with the segment header.
//! - **The reservation word.** Each buffer has one `AtomicU64`: a sealed
//!   bit, a count of writers inside it, and the end offset of what was
//!   reserved.
//! - **The page table**, each page behind one of many striped latches:
//!   a page's own writes are ordered; no lock is shared by all writers.
//! - **One flusher** (group commit), **cleaners**, and **readers**.
//!
//! ## The write path
//!
//! | step | who | what | invariant it keeps |
//! |---|---|---|---|
//! | 1. reserve | writer | `fetch_add(WRITER + len)` on the buffer's word; fits below the cap: the record's place; else take it back (`fetch_sub`) and seal | successful reservations never overlap: while a failed one is in flight the offset is above the cap, so none succeeds over it |
//! | 2. write | writer | encode the record into its place ([`format::encode_message`](crate::format::encode_message)): its own checksum, its lsn (segment lsn + offset), the segment's salt | a record is valid alone, and only in this incarnation of this segment |
//! | 3. mark | writer | [`mark_link`](crate::Accountant::mark_link), or [`mark_replace`](crate::Accountant::mark_replace) with every earlier pointer of the page (a free record for a delete) | the accountant knows every record of a buffer before the buffer can reach the file |
//! | 4. release | writer | `fetch_sub(WRITER)` (release ordering) | a sealed buffer with no writers is complete and accounted for |
//! | 5. seal | a writer whose record does not fit, or the flusher | `fetch_or(SEALED)`; the sealer queues the buffer, then installs the head's next buffer: a new segment from [`next_in`](crate::Accountant::next_in) (full), or the rest of the same segment (flush) | a flush never wastes the rest of a segment (durable before full); every sealed buffer is in the queue before its head moves on |
//! | 6. flush | flusher | write every sealed buffer whose writer count is zero (the last one of a segment padded to its end; a segment's later pieces only once the piece with its header is durable), then **one** `sync` for all | every byte below the *durable end* (below every head's open buffer and every unwritten sealed one) is on disk; no piece of a new incarnation lands under an old incarnation's header |
//! | 7. stabilize | flusher | [`stabilize`](crate::Accountant::stabilize) with the highest stable lsn that a **durable** header or checkpoint vouches for, never with the raw durable end (spec rule 4) | a segment is reused only when a durable vouch covers it, so recovery never finds a gap in its unstable tail |
//! | 7b. checkpoint | flusher | when the durable end is past every vouch written, append a [`Checkpoint`](crate::format::MessageKind::Checkpoint) vouching for it; it counts once a later sync made it durable | an idle store's tail becomes stable; it stops once the only unvouched bytes are the last checkpoint itself |
//! | 8. clean | cleaner | [`clean`](crate::Accountant::clean) names a page, its segment and a stream; under the page's latch read its value by pointer, write it at that head, `mark_replace` | draining segments empty; a page rewritten since the pick is left alone |
//! | 9. read | reader | pin the collector the accountant defers frees through, copy the pointer, read one record ([`format::read_message_at`](crate::format::read_message_at)), check its pid and lsn | a segment is not reused under a pinned reader (property B) |
//!
//! Why stabilize only with a vouched lsn: after a sync, everything below
//! the durable end `D` is on disk, but no header on disk says so yet. If
//! the store called `stabilize(D)`, the accountant could free and hand out
//! a segment below `D` at once; the store overwrites it; a crash before a
//! header or checkpoint vouching for `D` is durable leaves recovery
//! trusting only an older vouch `V < D`. Recovery walks the tail from `V`
//! while segments are consecutive, meets the overwritten segment's old
//! lsn missing, and cuts the log there: every later segment, with the
//! replacements of the reused segment's pages, is discarded. The crash
//! simulation's `--unsafe-raw-stable` does exactly this and loses pages.
//!
//! ## Recovery, and what to vouch for first
//!
//! 1. Sync the file (a crashed process may have left unsynced writes in
//!    the page cache that recovery is about to trust).
//! 2. [`Accountant::recover`](crate::Accountant::recover): scan, durably
//!    invalidate the discarded tail, pad the partly written last segment
//!    (so nothing past its valid prefix can surface later), sync, rebuild.
//! 3. Resume at [`Scan::resume_lsn`](crate::scan::Scan::resume_lsn) with
//!    durable end = resume lsn: the new segments' headers vouch for the
//!    whole recovered log. Recovered segments stay Active until the first
//!    `stabilize`, which comes once one of those headers is durable; empty
//!    recovered segments are reused only after it ([recovery rule 4](crate::properties#recovery-rules)).
//!
//! ## The whole path, single-threaded
//!
//! Every step above with the crate's API, on one buffer, ending in a crash
//! and a recovery:
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use segment_accountant::format::{self, MessageKind, SegmentHeader, MESSAGE_HEADER_LEN};
//! use segment_accountant::{Accountant, Collector, Config, DiskPtr, Lsn, MemStorage, PageState, LogFile, Storage};
//!
//! const SS: u64 = 4096;
//! const WRITER: u64 = 1 << 48;
//! const SEALED: u64 = 1 << 63;
//! const CAP: u64 = SS - MESSAGE_HEADER_LEN as u64; // room for the pad
//! let storage = Arc::new(MemStorage::new());
//! let acc = Accountant::new(Config::builder().segment_size(SS).build()?, storage.clone());
//!
//! // The head's first segment: `next`, then the header, vouching for what
//! // is durable so far (nothing).
//! let lid = acc.next(0)?;
//! let salt = format::fresh_salt();
//! let header = SegmentHeader { lsn: 0, stable_lsn: -1, segment_size: SS as u32, invalidated: false, salt };
//! let mut segment = vec![0u8; SS as usize];
//! segment[..32].copy_from_slice(&header.encode());
//! let word = AtomicU64::new(32);
//!
//! // 1. reserve, 2. write, 3. mark, 4. release.
//! let mut put = |segment: &mut [u8], pid, data: &[u8], old: Option<DiskPtr>| -> Result<DiskPtr, Box<dyn std::error::Error>> {
//!     let size = format::message_size(data.len() as u64);
//!     let prev = word.fetch_add(WRITER + size, Ordering::AcqRel);
//!     let at = prev & (WRITER - 1);
//!     assert!(prev & SEALED == 0 && at + size <= CAP, "fits (else: take back, seal, roll)");
//!     let lsn = at as Lsn; // segment lsn 0 + offset
//!     format::encode_message(&mut segment[at as usize..(at + size) as usize], MessageKind::Full, pid, lsn, salt, data);
//!     let ptr = DiskPtr::Inline(lid + at);
//!     match old {
//!         None => acc.mark_link(pid, lsn, ptr, size)?,
//!         Some(old) => acc.mark_replace(pid, lsn, &[old], ptr, size)?,
//!     }
//!     word.fetch_sub(WRITER, Ordering::Release);
//!     Ok(ptr)
//! };
//! let p7 = put(&mut segment, 7, b"seven, one", None)?;
//! let p8 = put(&mut segment, 8, b"eight, one", None)?;
//!
//! // 5. seal for a flush: no writer inside, so the word's offset is the end.
//! let end = word.fetch_or(SEALED, Ordering::AcqRel) & (WRITER - 1);
//! // 6. write the buffer, one sync: the durable end is `end`.
//! storage.write_at(lid, &segment[..end as usize])?;
//! storage.sync()?;
//! let durable: Lsn = end as Lsn;
//! // 7. Nothing durable vouches for `durable` yet: no stabilize (rule 4).
//!
//! // The head goes on in the rest of the same segment (durable before full).
//! let word = AtomicU64::new(end);
//! let mut put2 = |segment: &mut [u8], kind, pid, data: &[u8]| {
//!     let size = format::message_size(data.len() as u64);
//!     let at = word.fetch_add(WRITER + size, Ordering::AcqRel) & (WRITER - 1);
//!     format::encode_message(&mut segment[at as usize..(at + size) as usize], kind, pid, at as Lsn, salt, data);
//!     word.fetch_sub(WRITER, Ordering::Release);
//!     (at, size)
//! };
//! // 7b. A checkpoint vouching for the durable end, and page 7 rewritten.
//! put2(&mut segment, MessageKind::Checkpoint, 0, &durable.to_le_bytes());
//! let (at, size) = put2(&mut segment, MessageKind::Full, 7, b"seven, two");
//! acc.mark_replace(7, at as Lsn, &[p7], DiskPtr::Inline(lid + at), size)?;
//! let end2 = word.fetch_or(SEALED, Ordering::AcqRel) & (WRITER - 1);
//! storage.write_at(lid + end, &segment[end as usize..end2 as usize])?;
//! storage.sync()?;
//! // The checkpoint is durable now: stabilize with what it vouches for.
//! // (Inside the open segment: nothing is sealed yet, as it must be.)
//! acc.stabilize(durable)?;
//! assert_eq!(acc.stable_lsn(), -1);
//!
//! // A crash here. Recovery keeps the partly written segment's valid
//! // prefix, pads the rest, and finds both parts.
//! drop(acc);
//! let config = Config::builder().segment_size(SS).build()?;
//! let (acc, scan) = Accountant::recover(config, storage.clone(), Collector::new())?;
//! assert_eq!(scan.snapshot.max_header_stable_lsn, durable, "the checkpoint counts");
//! let PageState::Present(frags) = &scan.snapshot.pages[&7] else { panic!() };
//! assert_eq!(frags[0].ptr, DiskPtr::Inline(lid + at), "the rewrite, from the second part");
//! assert!(matches!(scan.snapshot.pages[&8], PageState::Present(_)));
//! let (h, payload) = format::read_message_at(&*storage, p8.lid(), format::message_size(10))?;
//! assert_eq!((h.pid, &payload[..]), (8, &b"eight, one"[..]));
//! // Resume at the next segment; its header vouches for the recovered log.
//! assert_eq!(scan.resume_lsn, SS as Lsn);
//! assert_eq!(acc.next(scan.resume_lsn)?, SS);
//! acc.audit()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## The reservation word under concurrency
//!
//! Writers that race on one word get disjoint places; the ones that do not
//! fit take their reservation back, and once the writer count is zero the
//! offset is exactly the end of the records that fit:
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! const WRITER: u64 = 1 << 48;
//! const CAP: u64 = 1000;
//! let word = AtomicU64::new(32);
//! let places: Vec<Vec<(u64, u64)>> = std::thread::scope(|s| {
//!     let handles: Vec<_> = (0..4u64)
//!         .map(|t| {
//!             let word = &word;
//!             s.spawn(move || {
//!                 let mut got = Vec::new();
//!                 for i in 0..50 {
//!                     let len = 8 + (t * 7 + i) % 40;
//!                     let at = word.fetch_add(WRITER + len, Ordering::AcqRel) & (WRITER - 1);
//!                     if at + len <= CAP {
//!                         got.push((at, len));
//!                         word.fetch_sub(WRITER, Ordering::Release);
//!                     } else {
//!                         word.fetch_sub(WRITER + len, Ordering::AcqRel);
//!                     }
//!                 }
//!                 got
//!             })
//!         })
//!         .collect();
//!     handles.into_iter().map(|h| h.join().unwrap()).collect()
//! });
//! let mut all: Vec<(u64, u64)> = places.into_iter().flatten().collect();
//! all.sort();
//! for pair in all.windows(2) {
//!     assert!(pair[0].0 + pair[0].1 <= pair[1].0, "no overlap");
//! }
//! let end = all.last().map_or(32, |&(at, len)| at + len);
//! let s = word.load(Ordering::Acquire);
//! assert_eq!(s >> 48, 0, "every writer left");
//! assert_eq!(s & (WRITER - 1), end, "the offset is the end of what fit");
//! assert!(all.first().map_or(true, |&(at, _)| at == 32));
//! ```
//!
//! ## What the introspection calls cost
//!
//! A store may ask a segment's state and lsn on its hot path with
//! [`Accountant::segment_brief`](crate::Accountant::segment_brief) (one
//! atomic load); [`segment_info`](crate::Accountant::segment_info) and
//! [`stats`](crate::Accountant::stats) count and copy page sets and belong
//! in status lines and tests. The table is in
//! [`introspect`](crate::introspect).
