//! The terms, safety properties and recovery rules the rest of the
//! documentation cites (documentation only: this module has no items).
//!
//! Together with the [caller contract](crate#the-caller-contract) they are
//! the *specification* the accountant implements: the reference model
//! (`model`, feature `testing`) implements the same text sequentially and
//! the differential tests compare the two after every step.
//!
//! # Terms
//!
//! - **lsn**: a position in the logical log (an `i64`, [`Lsn`](crate::Lsn)).
//!   A segment covers `segment_size` lsns from its *segment lsn*, a
//!   multiple of the segment size. **lid**: a byte offset in the file
//!   ([`Lid`](crate::Lid)); a segment sits at a lid that is a multiple of
//!   the segment size.
//! - **Stable**: the log is *stable below* `X` when every segment with an
//!   lsn below `X` is durably written (synced) and nothing below `X` is
//!   missing.
//! - **Vouched**: a segment header *vouches for* `X` when it records
//!   ([`SegmentHeader::stable_lsn`](crate::format::SegmentHeader::stable_lsn)
//!   in the reference format) that its writer knew the log was stable below
//!   `X` when it wrote the header. Once that header is itself durable, `X`
//!   is *vouched for*: after any crash, recovery finds the header and
//!   trusts the log below `X`. A store calls
//!   [`Accountant::stabilize`](crate::Accountant::stabilize)`(X)` only
//!   once `X` is vouched for, never with the raw position of its last
//!   sync: a sync makes a segment durable, but only a durable vouching
//!   header tells recovery that no earlier segment is missing.
//! - **Segment states** ([`SegmentState`](crate::SegmentState)): Active
//!   (being written), Inactive (sealed: a `stabilize` passed it), Draining
//!   (sealed and chosen for cleaning), Freeing (emptied, waiting for the
//!   stable lsn and for readers), Free (reusable), Vacant (above the file's
//!   tip).
//! - **Replacement**: a [`mark_replace`](crate::Accountant::mark_replace)
//!   in segment T removes the page's earlier fragments from their segments,
//!   but only when T is sealed: until then the old fragments are still the
//!   page's latest stable copy.
//!
//! # Safety properties
//!
//! ## A. The latest stable state survives
//!
//! A segment is never reused while it holds the most recent stable copy of
//! a page's state: a page leaves a segment only when a replacement of it is
//! applied, and replacements are applied when their own segment is sealed,
//! in lsn order. A free record (a deleted page) counts as a live fragment.
//!
//! ## B. No reuse under readers
//!
//! A freed segment becomes reusable only after every thread that was
//! pinned, when it was freed, on the epoch collector the accountant defers
//! frees through (see [Readers and the
//! collector](crate#readers-and-the-collector)) has unpinned.
//! [`Accountant::flush`](crate::Accountant::flush) pushes deferred frees
//! through so reuse never waits for unrelated threads to pin.
//!
//! ## C. Linearizable recovery
//!
//! A segment is not reused until the stabilized lsn has moved past it, so
//! recovery finds any segment overwritten by a reuse below a vouched lsn,
//! where gaps are expected; the unstable tail above it only ever holds
//! segments written after the last vouch, and recovery never keeps a
//! segment whose predecessor in the tail was lost.
//!
//! ## D. Nothing leaks, nothing doubles
//!
//! Every segment below the tip is in exactly one of: the free list, Active,
//! Inactive, Draining, or Freeing; no lid is handed out twice without a
//! free in between; nothing at or above the tip is referenced.
//! [`Accountant::audit`](crate::Accountant::audit) checks this at a
//! quiescent point.
//!
//! ## E. Truncation is safe
//!
//! The file is only shortened over segments that are Free (so past B and
//! C), and a truncated segment is never handed out again until the tip
//! grows back over it. Nothing is truncated while rewriting is paused.
//!
//! # Recovery rules
//!
//! After a crash a store scans its log into a [`Snapshot`](crate::Snapshot)
//! ([`scan`](mod@crate::scan) does it for the reference
//! [`format`](mod@crate::format)) and rebuilds the accountant from it
//! ([`Accountant::from_snapshot`](crate::Accountant::from_snapshot));
//! [`Accountant::recover`](crate::Accountant::recover) does both and rule
//! 5 too. The rebuilt accountant follows these rules:
//!
//! 1. the tip is the file length rounded up to whole segments (a partial
//!    last segment counts, whatever it holds: the rule is format-agnostic);
//! 2. every segment holding a live fragment gets the fragment's segment lsn
//!    and the page, with its live bytes;
//! 3. segments wholly below the vouched stable lsn are sealed; those other
//!    than the last one written whose live bytes are at most the cleaning
//!    threshold start Draining;
//!    the segment the snapshot says writing resumes in stays Active;
//! 4. other segments below the tip with no live fragment are freed, but reusable
//!    only once `stabilize` passes the snapshot's last lsn (property C);
//! 5. a discarded tail (segments past a tear or a gap) is never read as
//!    valid again: its headers are made durably invalid before the store
//!    writes anything new, since new segments reuse their lsns;
//! 6. the stabilized lsn restarts at the highest segment wholly below the
//!    vouched stable lsn (those segments are durable and vouched for);
//!    later segments stay Active until `stabilize` passes them, in lsn
//!    order, as in a running accountant.
