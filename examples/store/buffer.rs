//! Segment buffers and the one-atomic reservation.
//!
//! A buffer holds a contiguous piece of one segment, from offset `start`
//! (0 for the segment's first buffer, which begins with the segment
//! header) to wherever it is sealed. Its `state` word packs three things:
//!
//! ```text
//! bit 63      sealed: no reservation succeeds any more
//! bits 48..63 writers holding a reservation (or failing one)
//! bits 0..48  the end offset (in the segment) of what was reserved
//! ```
//!
//! A writer reserves `len` bytes with one `fetch_add(WRITER + len)`: the
//! offset it got back is its place if the record ends at or below `cap`.
//! Otherwise (or if the buffer was sealed) it takes both back with one
//! `fetch_sub`. While such a failed reservation is in flight the offset is
//! above `cap`, so no reservation can succeed over it: successful ranges
//! never overlap, and once the writers count is zero the offset is
//! exactly the end of the successful ones. A writer releases with
//! `fetch_sub(WRITER)` after it wrote its record and told the accountant
//! (`mark_link` / `mark_replace`): so a sealed buffer with no writers is
//! complete and accounted for, and only then is it written to the file.
//!
//! Sealing is one `fetch_or(SEALED)`; the thread whose `fetch_or` found
//! the bit clear is the sealer and installs the head's next buffer: the
//! rest of the same segment (a flush sealed it early: durable before
//! full) or a new segment (it was full).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use segment_accountant::format::{self, SegmentHeader, MESSAGE_HEADER_LEN, SEGMENT_HEADER_LEN};
use segment_accountant::{Lid, Lsn};

pub const SEALED: u64 = 1 << 63;
pub const WRITER: u64 = 1 << 48;
pub const OFFSET_MASK: u64 = WRITER - 1;
const WRITERS_MASK: u64 = (SEALED - 1) & !OFFSET_MASK;

/// What a reservation attempt found.
pub enum Reserve {
    /// Reserved at this offset in the segment.
    At(u64),
    /// The record does not fit: seal the buffer and roll to a new segment.
    Full,
    /// Sealed by someone else: wait for the head's next buffer.
    Sealed,
}

/// One piece of one segment, in memory until the flusher writes it.
pub struct Buffer {
    /// The segment's offset in the file.
    pub lid: Lid,
    /// The segment's lsn.
    pub seg_lsn: Lsn,
    /// The segment's write head.
    pub stream: u8,
    /// The segment incarnation's salt.
    pub salt: u32,
    /// The segment size.
    pub ss: u64,
    /// Offset in the segment of this buffer's first byte.
    pub start: u64,
    /// Records must end at or below this offset (room is kept for the
    /// pad that closes the segment).
    pub cap: u64,
    /// The stable lsn the segment header vouches for, for the segment's
    /// first buffer.
    pub header_vouch: Option<Lsn>,
    state: AtomicU64,
    /// Sealed as the segment's last buffer: the flusher pads it to the
    /// segment's end.
    rolled: AtomicBool,
    /// `ss - start` bytes; `data[i]` is the segment's byte `start + i`.
    data: *mut u8,
}

// Safety: the bytes behind `data` are written only through disjoint
// reserved ranges (the reservation protocol above), and read as a whole
// only once the buffer is sealed with no writers (acquire on the state
// word, which every writer's release decrements after writing).
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

impl Drop for Buffer {
    fn drop(&mut self) {
        let len = (self.ss - self.start) as usize;
        // Safety: allocated in `alloc` as a boxed slice of this length.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.data, len)) });
    }
}

impl Buffer {
    fn alloc(len: u64) -> *mut u8 {
        Box::into_raw(vec![0u8; len as usize].into_boxed_slice()) as *mut u8
    }

    /// The first buffer of a fresh segment; its header vouches for
    /// `stable_lsn`.
    pub fn fresh(lid: Lid, seg_lsn: Lsn, stream: u8, ss: u64, stable_lsn: Lsn) -> Buffer {
        let salt = format::fresh_salt();
        let buffer = Buffer {
            lid,
            seg_lsn,
            stream,
            salt,
            ss,
            start: 0,
            cap: ss - MESSAGE_HEADER_LEN as u64,
            header_vouch: Some(stable_lsn),
            state: AtomicU64::new(SEGMENT_HEADER_LEN as u64),
            rolled: AtomicBool::new(false),
            data: Self::alloc(ss),
        };
        let header = SegmentHeader {
            lsn: seg_lsn,
            stable_lsn,
            segment_size: ss as u32,
            invalidated: false,
            salt,
        };
        // Safety: nobody else can see the buffer yet.
        unsafe { buffer.bytes_mut(0, SEGMENT_HEADER_LEN as u64) }.copy_from_slice(&header.encode());
        buffer
    }

    /// The rest of `prev`'s segment, from offset `start` on.
    pub fn continuation(prev: &Buffer, start: u64) -> Buffer {
        Buffer {
            lid: prev.lid,
            seg_lsn: prev.seg_lsn,
            stream: prev.stream,
            salt: prev.salt,
            ss: prev.ss,
            start,
            cap: prev.cap,
            header_vouch: None,
            state: AtomicU64::new(start),
            rolled: AtomicBool::new(false),
            data: Self::alloc(prev.ss - start),
        }
    }

    /// The offset where this buffer's records begin.
    pub fn first_offset(&self) -> u64 {
        self.start.max(SEGMENT_HEADER_LEN as u64)
    }

    /// The lsn of this buffer's first byte.
    pub fn start_lsn(&self) -> Lsn {
        self.seg_lsn + self.start as Lsn
    }

    /// Tries to reserve `len` bytes (see the module docs).
    #[inline]
    pub fn try_reserve(&self, len: u64) -> Reserve {
        // AcqRel: the acquire half orders our later writes after the
        // sealer's view; the release half is irrelevant but harmless.
        let old = self.state.fetch_add(WRITER + len, Ordering::AcqRel);
        if old & SEALED != 0 {
            self.state.fetch_sub(WRITER + len, Ordering::AcqRel);
            return Reserve::Sealed;
        }
        let offset = old & OFFSET_MASK;
        if offset + len <= self.cap {
            return Reserve::At(offset);
        }
        self.state.fetch_sub(WRITER + len, Ordering::AcqRel);
        Reserve::Full
    }

    /// The reserved bytes `[offset, offset + len)` of the segment.
    ///
    /// # Safety
    /// The caller holds the reservation of exactly that range (or owns the
    /// buffer alone), and no other reference to those bytes is live.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self, offset: u64, len: u64) -> &mut [u8] {
        debug_assert!(offset >= self.start && offset + len <= self.ss);
        // Safety: in bounds (asserted); exclusive by the caller's contract.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.data.add((offset - self.start) as usize),
                len as usize,
            )
        }
    }

    /// Ends a reservation: the record is written and accounted for.
    #[inline]
    pub fn release(&self) {
        // Release: the flusher's acquire load of a zero writer count sees
        // the record's bytes.
        self.state.fetch_sub(WRITER, Ordering::Release);
    }

    /// Seals the buffer; returns the previous state word if this call
    /// sealed it (the caller then installs the next buffer), `None` if it
    /// was sealed already.
    pub fn seal(&self) -> Option<u64> {
        let old = self.state.fetch_or(SEALED, Ordering::AcqRel);
        (old & SEALED == 0).then_some(old)
    }

    /// Marks the buffer as its segment's last (padded when written).
    pub fn set_rolled(&self) {
        self.rolled.store(true, Ordering::Release);
    }

    /// Whether records were reserved in it.
    pub fn has_data(&self) -> bool {
        self.state.load(Ordering::Acquire) & OFFSET_MASK > self.first_offset()
    }

    /// If sealed with no writer left: the end of its records, and whether
    /// it is its segment's last buffer. Its bytes are then final.
    pub fn ready(&self) -> Option<(u64, bool)> {
        // Acquire: pairs with every writer's release in `release`.
        let s = self.state.load(Ordering::Acquire);
        (s & SEALED != 0 && s & WRITERS_MASK == 0)
            .then(|| (s & OFFSET_MASK, self.rolled.load(Ordering::Acquire)))
    }

    /// The bytes to write for a ready buffer: its records, and the pad to
    /// the segment's end if it is the last one. Returns the slice, which
    /// starts at segment offset `start`.
    ///
    /// # Safety
    /// `ready()` returned `(end, rolled)` and nobody else writes into or
    /// prepares the buffer.
    pub unsafe fn prepare(&self, end: u64, rolled: bool) -> &[u8] {
        let stop = if rolled {
            // Safety: the pad's range is past every reservation.
            format::encode_pad(
                unsafe { self.bytes_mut(end, self.ss - end) },
                self.seg_lsn,
                self.salt,
            );
            self.ss
        } else {
            end
        };
        // Safety: no writer is left; nobody writes any more.
        unsafe { std::slice::from_raw_parts(self.data, (stop - self.start) as usize) }
    }

    /// A copy of the bytes reserved so far (for a simulated torn write;
    /// call only while no writer runs).
    pub fn snapshot(&self) -> Vec<u8> {
        let end = (self.state.load(Ordering::Acquire) & OFFSET_MASK).min(self.ss);
        // Safety: no writer runs (the caller's contract).
        unsafe { std::slice::from_raw_parts(self.data, (end - self.start) as usize) }.to_vec()
    }
}
