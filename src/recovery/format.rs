//! The reference segment format: what a store built on the accountant can
//! write so that [`scan`](crate::scan) can recover it. All integers are
//! little-endian.
//!
//! A segment of `segment_size` bytes is one [`SegmentHeader`] followed by
//! messages, each checksummed on its own and carrying its lsn and its
//! segment's *salt* (a random number drawn for each incarnation of a
//! segment). A segment is filled front to back and may be made durable in
//! pieces: a store can write the header and the first messages, sync, and
//! append more later (*durable before full*). Its unused tail is finally
//! one Pad message tagged with the segment's lsn. Reading a segment is a
//! walk: messages are accepted from the front while each one checks (its
//! checksum, its lsn, its salt); the first that does not ends the
//! segment's valid prefix. A segment whose walk reaches a pad at its end
//! (or ends exactly at its end) is *complete*.
//!
//! A message can also be read alone by its pointer
//! ([`read_message_at`], [`decode_message`]): one read of the message's
//! bytes, one checksum, no decoding of the rest of the segment.
//!
//! Besides page fragments there is one more message kind: a
//! [`Checkpoint`](MessageKind::Checkpoint) vouches, like a segment header,
//! for a stable lsn, so a store can vouch for its tail without starting a
//! new segment (an idle store's tail becomes stable).
//!
//! ```
//! use segment_accountant::format::{decode_segment, MessageKind, SegmentBuilder};
//! let mut b = SegmentBuilder::new(256, 512, 256);
//! let (lsn, offset) = b.append(MessageKind::Full, 7, b"hello").unwrap();
//! assert_eq!((lsn, offset), (512 + 32, 32));
//! let bytes = b.finish();
//! let segment = decode_segment(&bytes, 256)?;
//! assert_eq!(segment.header.stable_lsn, 256);
//! assert_eq!(segment.messages[0].payload, b"hello");
//! # Ok::<(), segment_accountant::format::FormatError>(())
//! ```

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::storage::LogFile;
use crate::types::{BlobId, Lid, Lsn, PageId};

/// Bytes of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Bytes of a message header.
pub const MESSAGE_HEADER_LEN: usize = 32;
/// The magic number opening every segment header ("SAG2": the second
/// version, with salts, checkpoints and partly written segments).
pub const MAGIC: u32 = 0x5341_4732;

/// What went wrong decoding bytes of the format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes than the structure needs.
    #[error("short data: {needed} bytes needed, {available} available")]
    ShortData {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The segment header does not start with the magic number.
    #[error("bad magic {0:#x}")]
    BadMagic(u32),
    /// A checksum does not match.
    #[error("bad checksum: stored {stored:#x}, computed {computed:#x}")]
    BadChecksum {
        /// The checksum in the data.
        stored: u32,
        /// The checksum of the data.
        computed: u32,
    },
    /// An unknown message kind.
    #[error("bad message kind {0}")]
    BadKind(u8),
    /// A length or size field out of range.
    #[error("length {0} out of range")]
    LengthOutOfRange(u64),
    /// A field that must be zero is not, or a header field is invalid.
    #[error("invalid header field: {0}")]
    InvalidField(&'static str),
    /// A message's lsn is not its position in the log.
    #[error("message at offset {offset} has lsn {found}, expected {expected}")]
    LsnMismatch {
        /// Offset of the message in its segment.
        offset: u64,
        /// The lsn it should have.
        expected: Lsn,
        /// The lsn it carries.
        found: Lsn,
    },
    /// A message carries another incarnation's salt: it is a leftover of an
    /// earlier use of the segment.
    #[error("message at offset {offset} has salt {found:#x}, its segment {expected:#x}")]
    SaltMismatch {
        /// Offset of the message in its segment.
        offset: u64,
        /// The segment header's salt.
        expected: u32,
        /// The message's salt.
        found: u32,
    },
    /// The segment header is all zeros (never written or invalidated).
    #[error("no segment header")]
    NoHeader,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn need(b: &[u8], n: usize) -> Result<(), FormatError> {
    if b.len() < n {
        Err(FormatError::ShortData {
            needed: n,
            available: b.len(),
        })
    } else {
        Ok(())
    }
}

fn check(stored: u32, data: &[u8]) -> Result<(), FormatError> {
    let computed = crc32fast::hash(data);
    if stored == computed {
        Ok(())
    } else {
        Err(FormatError::BadChecksum { stored, computed })
    }
}

/// A fresh random salt for a new incarnation of a segment: two
/// incarnations of one segment must not share one, or a message of the
/// earlier could pass for one of the later (recovery can reuse the lsn of a
/// discarded segment). Random per process (the standard library's hasher
/// keys) and per call (a counter).
pub fn fresh_salt() -> u32 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static KEYS: std::collections::hash_map::RandomState =
            std::collections::hash_map::RandomState::new();
    }
    // Relaxed: only uniqueness of the counter value matters.
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    KEYS.with(|keys| {
        let mut h = keys.build_hasher();
        h.write_u64(n);
        let x = h.finish();
        (x ^ (x >> 32)) as u32
    })
}

/// The header at the start of every segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's base lsn (a multiple of the segment size).
    pub lsn: Lsn,
    /// The highest lsn below which the writer knew the log was stable and
    /// consecutive when it wrote this header.
    pub stable_lsn: Lsn,
    /// The segment size the file was written with (a power of two).
    pub segment_size: u32,
    /// Written by recovery over a discarded segment: not a segment of the
    /// log any more (its lsn means nothing and may be reused), but its
    /// vouched stable lsn still counts, so recovery stays idempotent.
    pub invalidated: bool,
    /// This incarnation's salt: every message of the segment carries it.
    pub salt: u32,
}

impl SegmentHeader {
    /// Bytes 0..4 magic, 4..8 crc32 of bytes 8..32, 8..16 lsn, 16..24
    /// stable lsn, 24 log2 of the segment size, 25 flags (1: invalidated),
    /// 26..28 zero, 28..32 salt.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[8..16].copy_from_slice(&self.lsn.to_le_bytes());
        b[16..24].copy_from_slice(&self.stable_lsn.to_le_bytes());
        b[24] = self.segment_size.trailing_zeros() as u8;
        b[25] = self.invalidated as u8;
        b[28..32].copy_from_slice(&self.salt.to_le_bytes());
        let crc = crc32fast::hash(&b[8..]);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a header; `Err(NoHeader)` for all zeros.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, FormatError> {
        need(b, SEGMENT_HEADER_LEN)?;
        let b = &b[..SEGMENT_HEADER_LEN];
        if b.iter().all(|&x| x == 0) {
            return Err(FormatError::NoHeader);
        }
        let magic = u32_at(b, 0);
        if magic != MAGIC {
            return Err(FormatError::BadMagic(magic));
        }
        check(u32_at(b, 4), &b[8..])?;
        if b[25] > 1 || b[26] != 0 || b[27] != 0 {
            return Err(FormatError::InvalidField("segment header flags"));
        }
        if b[24] > 31 {
            return Err(FormatError::InvalidField("segment header size"));
        }
        let header = SegmentHeader {
            lsn: u64_at(b, 8) as Lsn,
            stable_lsn: u64_at(b, 16) as Lsn,
            segment_size: 1u32 << b[24],
            invalidated: b[25] == 1,
            salt: u32_at(b, 28),
        };
        if header.lsn < 0 || header.stable_lsn < -1 {
            return Err(FormatError::InvalidField("segment header lsn"));
        }
        Ok(header)
    }
}

/// What a message holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A full page image (replaces every earlier fragment of the page).
    Full = 1,
    /// A delta on the page's last full image.
    Delta = 2,
    /// The page was freed.
    Free = 3,
    /// A full image whose payload is in an external blob file (payload:
    /// the blob id, 8 bytes).
    BlobPointer = 4,
    /// Fills a segment's unused tail; its lsn field is the segment's lsn.
    Pad = 5,
    /// Vouches for a stable lsn like a segment header does (payload: the
    /// lsn, 8 bytes; pid 0). Not a page fragment.
    Checkpoint = 6,
}

impl MessageKind {
    fn from_u8(k: u8) -> Result<MessageKind, FormatError> {
        Ok(match k {
            1 => MessageKind::Full,
            2 => MessageKind::Delta,
            3 => MessageKind::Free,
            4 => MessageKind::BlobPointer,
            5 => MessageKind::Pad,
            6 => MessageKind::Checkpoint,
            other => return Err(FormatError::BadKind(other)),
        })
    }
}

/// A message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageHeader {
    /// What the message holds.
    pub kind: MessageKind,
    /// The page.
    pub pid: PageId,
    /// The message's lsn (the segment's lsn for a Pad).
    pub lsn: Lsn,
    /// Payload bytes.
    pub len: u32,
    /// The salt of the segment incarnation it was written in.
    pub salt: u32,
}

impl MessageHeader {
    /// Bytes 0..4 crc32 of bytes 4..32 and the payload, 4 kind, 5..8 zero,
    /// 8..16 pid, 16..24 lsn, 24..28 payload length, 28..32 salt.
    pub fn encode(&self, payload: &[u8]) -> [u8; MESSAGE_HEADER_LEN] {
        let mut b = [0u8; MESSAGE_HEADER_LEN];
        self.fill(&mut b);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&b[4..]);
        hasher.update(payload);
        b[0..4].copy_from_slice(&hasher.finalize().to_le_bytes());
        b
    }

    fn fill(&self, b: &mut [u8]) {
        b[0..4].fill(0);
        b[4] = self.kind as u8;
        b[5..8].fill(0);
        b[8..16].copy_from_slice(&self.pid.to_le_bytes());
        b[16..24].copy_from_slice(&self.lsn.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..32].copy_from_slice(&self.salt.to_le_bytes());
    }

    /// Decodes a header's fields (the checksum covers the payload too:
    /// [`decode_message`] checks it).
    pub fn decode(b: &[u8]) -> Result<MessageHeader, FormatError> {
        need(b, MESSAGE_HEADER_LEN)?;
        let kind = MessageKind::from_u8(b[4])?;
        if b[5..8] != [0, 0, 0] {
            return Err(FormatError::InvalidField("message header reserved"));
        }
        Ok(MessageHeader {
            kind,
            pid: u64_at(b, 8),
            lsn: u64_at(b, 16) as Lsn,
            len: u32_at(b, 24),
            salt: u32_at(b, 28),
        })
    }
}

/// Bytes a message with `payload_len` bytes of payload takes in the log:
/// the size a store passes to `mark_link` / `mark_replace`.
pub fn message_size(payload_len: u64) -> u64 {
    MESSAGE_HEADER_LEN as u64 + payload_len
}

/// Encodes a message into `out`, which must be exactly
/// [`message_size`]`(payload.len())` bytes: one checksum over the header
/// and payload as they lie in `out`. This is how a store writes straight
/// into its segment buffer.
///
/// # Panics
/// If `out` has the wrong length or the payload exceeds `u32::MAX` bytes.
pub fn encode_message(
    out: &mut [u8],
    kind: MessageKind,
    pid: PageId,
    lsn: Lsn,
    salt: u32,
    payload: &[u8],
) {
    assert_eq!(
        out.len(),
        MESSAGE_HEADER_LEN + payload.len(),
        "message size"
    );
    let header = MessageHeader {
        kind,
        pid,
        lsn,
        len: u32::try_from(payload.len()).expect("payload fits u32"),
        salt,
    };
    header.fill(&mut out[..MESSAGE_HEADER_LEN]);
    out[MESSAGE_HEADER_LEN..].copy_from_slice(payload);
    let crc = crc32fast::hash(&out[4..]);
    out[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// Encodes the pad that closes a segment of lsn `segment_lsn` into `out`
/// (at least a message header long, ending at the segment's end): zeros
/// tagged with the segment's lsn and salt.
///
/// # Panics
/// If `out` is shorter than a message header.
pub fn encode_pad(out: &mut [u8], segment_lsn: Lsn, salt: u32) {
    assert!(out.len() >= MESSAGE_HEADER_LEN, "a pad needs a header");
    out[MESSAGE_HEADER_LEN..].fill(0);
    let header = MessageHeader {
        kind: MessageKind::Pad,
        pid: 0,
        lsn: segment_lsn,
        len: (out.len() - MESSAGE_HEADER_LEN) as u32,
        salt,
    };
    header.fill(&mut out[..MESSAGE_HEADER_LEN]);
    let crc = crc32fast::hash(&out[4..]);
    out[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes one message from the start of `bytes` and checks its checksum:
/// the header and a borrowed payload. `bytes` may be longer than the
/// message. Checks nothing about its segment (lsn, salt): the caller
/// compares what it expects.
pub fn decode_message(bytes: &[u8]) -> Result<(MessageHeader, &[u8]), FormatError> {
    let m = MessageHeader::decode(bytes)?;
    let end = MESSAGE_HEADER_LEN
        .checked_add(m.len as usize)
        .ok_or(FormatError::LengthOutOfRange(m.len as u64))?;
    if end > bytes.len() {
        return Err(FormatError::LengthOutOfRange(m.len as u64));
    }
    check(u32_at(bytes, 0), &bytes[4..end])?;
    Ok((m, &bytes[MESSAGE_HEADER_LEN..end]))
}

/// Why [`read_message_at`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The read failed.
    #[error("reading the message failed: {0}")]
    Io(#[from] io::Error),
    /// The bytes there are not one intact message of that size.
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// Reads the message of `size` bytes (header included, as given to
/// `mark_link`) at `lid` with one read, and checks only that message's
/// checksum and length. The caller checks that its pid and lsn are the
/// ones it expects.
pub fn read_message_at(
    storage: &dyn LogFile,
    lid: Lid,
    size: u64,
) -> Result<(MessageHeader, Vec<u8>), ReadError> {
    if !(MESSAGE_HEADER_LEN as u64..=u32::MAX as u64).contains(&size) {
        return Err(FormatError::LengthOutOfRange(size).into());
    }
    let mut bytes = vec![0u8; size as usize];
    storage.read_at(lid, &mut bytes)?;
    let (header, payload) = decode_message(&bytes)?;
    if MESSAGE_HEADER_LEN + payload.len() != bytes.len() {
        return Err(FormatError::LengthOutOfRange(header.len as u64).into());
    }
    bytes.drain(..MESSAGE_HEADER_LEN);
    Ok((header, bytes))
}

/// Builds one segment in memory.
#[derive(Clone, Debug)]
pub struct SegmentBuilder {
    header: SegmentHeader,
    bytes: Vec<u8>,
    size: usize,
}

impl SegmentBuilder {
    /// A segment of `segment_size` bytes at base lsn `lsn`, whose header
    /// vouches for `stable_lsn`, with a fresh salt.
    pub fn new(segment_size: u64, lsn: Lsn, stable_lsn: Lsn) -> SegmentBuilder {
        Self::with_salt(segment_size, lsn, stable_lsn, fresh_salt())
    }

    /// [`new`](Self::new) with a given salt.
    pub fn with_salt(segment_size: u64, lsn: Lsn, stable_lsn: Lsn, salt: u32) -> SegmentBuilder {
        let header = SegmentHeader {
            lsn,
            stable_lsn,
            segment_size: segment_size as u32,
            invalidated: false,
            salt,
        };
        let mut bytes = Vec::with_capacity(segment_size as usize);
        bytes.extend_from_slice(&header.encode());
        SegmentBuilder {
            header,
            bytes,
            size: segment_size as usize,
        }
    }

    /// The header this segment will carry.
    pub fn header(&self) -> SegmentHeader {
        self.header
    }

    /// Bytes left for messages.
    pub fn remaining(&self) -> usize {
        self.size - self.bytes.len()
    }

    /// The bytes so far (header and messages, no pad): a store may write
    /// them, sync, and write what it appends later after them (durable
    /// before full).
    pub fn written(&self) -> &[u8] {
        &self.bytes
    }

    /// Appends a message; returns its lsn and offset, or `None` if it does
    /// not fit (leaving either no room or room for at least a pad header).
    pub fn append(&mut self, kind: MessageKind, pid: PageId, payload: &[u8]) -> Option<(Lsn, u64)> {
        let total = MESSAGE_HEADER_LEN + payload.len();
        let left = self.remaining();
        if kind == MessageKind::Pad
            || total > left
            || (left - total != 0 && left - total < MESSAGE_HEADER_LEN)
        {
            return None;
        }
        let offset = self.bytes.len() as u64;
        let lsn = self.header.lsn + offset as Lsn;
        let start = self.bytes.len();
        self.bytes.resize(start + total, 0);
        encode_message(
            &mut self.bytes[start..],
            kind,
            pid,
            lsn,
            self.header.salt,
            payload,
        );
        Some((lsn, offset))
    }

    /// Appends a checkpoint vouching for `stable_lsn`; `None` if it does
    /// not fit.
    pub fn checkpoint(&mut self, stable_lsn: Lsn) -> Option<(Lsn, u64)> {
        self.append(MessageKind::Checkpoint, 0, &stable_lsn.to_le_bytes())
    }

    /// Pads the tail and returns exactly `segment_size` bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let start = self.bytes.len();
        if start < self.size {
            self.bytes.resize(self.size, 0);
            encode_pad(&mut self.bytes[start..], self.header.lsn, self.header.salt);
        }
        self.bytes
    }
}

/// One message found by a walk, without its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// What it holds (never a pad).
    pub kind: MessageKind,
    /// The page (0 for a checkpoint).
    pub pid: PageId,
    /// Its lsn.
    pub lsn: Lsn,
    /// Offset in the segment.
    pub offset: u64,
    /// Its size in the log (header and payload).
    pub size: u64,
    /// The blob id, for a blob pointer; the vouched lsn, for a checkpoint
    /// (as `u64`).
    pub value: Option<u64>,
}

impl Record {
    /// The blob id of a blob pointer.
    pub fn blob(&self) -> Option<BlobId> {
        (self.kind == MessageKind::BlobPointer)
            .then_some(self.value)
            .flatten()
    }

    /// The stable lsn a checkpoint vouches for.
    pub fn vouch(&self) -> Option<Lsn> {
        (self.kind == MessageKind::Checkpoint)
            .then_some(self.value.map(|v| v as Lsn))
            .flatten()
    }
}

/// What a walk of one segment found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentWalk {
    /// The segment's header.
    pub header: SegmentHeader,
    /// The valid prefix's messages in order, without the pad.
    pub records: Vec<Record>,
    /// Offset where the valid messages end (where the pad starts, or the
    /// segment's end).
    pub end: u64,
    /// Whether the segment is complete: its messages end at a pad that
    /// ends the segment, or exactly at the segment's end.
    pub complete: bool,
    /// Why the walk stopped, for an incomplete segment.
    pub stop: Option<FormatError>,
    /// The highest stable lsn vouched for by the header or a checkpoint of
    /// the valid prefix.
    pub max_vouch: Lsn,
}

/// Walks a segment whose first bytes are `bytes` (up to `segment_size`;
/// fewer if the file ends early): the header must decode and match
/// `segment_size`, then messages are accepted from the front while each
/// one's checksum, lsn (the segment's lsn plus its offset; a pad's is the
/// segment's lsn) and salt check, its length stays in the segment, and it
/// leaves either no room or room for a pad. The first message that fails
/// ends the valid prefix; nothing after it is read.
pub fn walk_segment(bytes: &[u8], segment_size: u64) -> Result<SegmentWalk, FormatError> {
    let size =
        usize::try_from(segment_size).map_err(|_| FormatError::LengthOutOfRange(segment_size))?;
    if size < SEGMENT_HEADER_LEN + MESSAGE_HEADER_LEN {
        return Err(FormatError::LengthOutOfRange(segment_size));
    }
    let bytes = &bytes[..bytes.len().min(size)];
    let header = SegmentHeader::decode(bytes)?;
    check_walkable(&header, segment_size)?;
    let mut records = Vec::new();
    let end = walk_messages(bytes, size, &header, |r| records.push(r));
    Ok(SegmentWalk {
        header,
        records,
        end: end.end,
        complete: end.complete,
        stop: end.stop,
        max_vouch: end.max_vouch,
    })
}

/// Whether a decoded header opens a segment [`walk_segment`] walks: not
/// invalidated, written with `segment_size`, at an aligned lsn.
pub(crate) fn check_walkable(header: &SegmentHeader, segment_size: u64) -> Result<(), FormatError> {
    if header.invalidated {
        return Err(FormatError::InvalidField("invalidated segment"));
    }
    if header.segment_size as u64 != segment_size {
        return Err(FormatError::InvalidField("segment size differs"));
    }
    if header.lsn as u64 % segment_size != 0 {
        return Err(FormatError::InvalidField("segment lsn not aligned"));
    }
    Ok(())
}

/// How a walk of a segment's messages ended ([`SegmentWalk`] without its
/// header and records).
pub(crate) struct WalkEnd {
    pub(crate) end: u64,
    pub(crate) complete: bool,
    pub(crate) stop: Option<FormatError>,
    pub(crate) max_vouch: Lsn,
}

/// The message walk of [`walk_segment`], for a segment whose header
/// decoded and passed [`check_walkable`]: `bytes` is at most `size` bytes
/// (the segment size, at least a segment and a message header); hands
/// the valid prefix's records to `record` in order (the scanner keeps
/// what it needs of every segment's records in one vector).
pub(crate) fn walk_messages(
    bytes: &[u8],
    size: usize,
    header: &SegmentHeader,
    mut record: impl FnMut(Record),
) -> WalkEnd {
    let mut max_vouch = header.stable_lsn;
    let mut at = SEGMENT_HEADER_LEN;
    let mut complete = false;
    let stop = loop {
        if at == size {
            complete = true;
            break None;
        }
        let m = match decode_message(&bytes[at..]) {
            Ok((m, _)) => m,
            Err(e) => break Some(e),
        };
        let end = at + MESSAGE_HEADER_LEN + m.len as usize;
        if end > size {
            break Some(FormatError::LengthOutOfRange(m.len as u64));
        }
        if m.salt != header.salt {
            break Some(FormatError::SaltMismatch {
                offset: at as u64,
                expected: header.salt,
                found: m.salt,
            });
        }
        let expected = if m.kind == MessageKind::Pad {
            header.lsn
        } else {
            header.lsn + at as Lsn
        };
        if m.lsn != expected {
            break Some(FormatError::LsnMismatch {
                offset: at as u64,
                expected,
                found: m.lsn,
            });
        }
        if m.kind == MessageKind::Pad {
            if end != size {
                break Some(FormatError::InvalidField("pad does not end the segment"));
            }
            complete = true;
            break None;
        }
        if end != size && size - end < MESSAGE_HEADER_LEN {
            break Some(FormatError::InvalidField(
                "message leaves no room for a pad",
            ));
        }
        let payload = &bytes[at + MESSAGE_HEADER_LEN..end];
        let value = match m.kind {
            MessageKind::BlobPointer | MessageKind::Checkpoint => {
                if payload.len() != 8 {
                    break Some(FormatError::LengthOutOfRange(payload.len() as u64));
                }
                let v = u64_at(payload, 0);
                if m.kind == MessageKind::Checkpoint {
                    if (v as Lsn) < -1 {
                        break Some(FormatError::InvalidField("checkpoint lsn"));
                    }
                    max_vouch = max_vouch.max(v as Lsn);
                }
                Some(v)
            }
            _ => None,
        };
        record(Record {
            kind: m.kind,
            pid: m.pid,
            lsn: m.lsn,
            offset: at as u64,
            size: message_size(m.len as u64),
            value,
        });
        at = end;
    };
    WalkEnd {
        end: at as u64,
        complete,
        stop,
        max_vouch,
    }
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// What it holds.
    pub kind: MessageKind,
    /// The page.
    pub pid: PageId,
    /// Its lsn.
    pub lsn: Lsn,
    /// Offset in the segment.
    pub offset: u64,
    /// Its size in the log (header and payload).
    pub size: u64,
    /// The payload.
    pub payload: Vec<u8>,
    /// The blob id, for a blob pointer.
    pub blob: Option<BlobId>,
}

/// A fully decoded segment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodedSegment {
    /// Its header.
    pub header: SegmentHeader,
    /// Its messages in order, without the pad.
    pub messages: Vec<Message>,
}

/// Decodes and verifies a whole, complete segment ([`walk_segment`] must
/// reach its end), copying every payload. Any failure means the segment is
/// torn, not yet complete, or not one.
pub fn decode_segment(bytes: &[u8], segment_size: u64) -> Result<DecodedSegment, FormatError> {
    let size =
        usize::try_from(segment_size).map_err(|_| FormatError::LengthOutOfRange(segment_size))?;
    need(bytes, size)?;
    let walk = walk_segment(bytes, segment_size)?;
    if !walk.complete {
        return Err(walk.stop.unwrap_or(FormatError::InvalidField("incomplete")));
    }
    let messages = walk
        .records
        .iter()
        .map(|r| {
            let start = r.offset as usize + MESSAGE_HEADER_LEN;
            Message {
                kind: r.kind,
                pid: r.pid,
                lsn: r.lsn,
                offset: r.offset,
                size: r.size,
                payload: bytes[start..r.offset as usize + r.size as usize].to_vec(),
                blob: r.blob(),
            }
        })
        .collect();
    Ok(DecodedSegment {
        header: walk.header,
        messages,
    })
}

/// Overwrites the header of the discarded segment at `lid` with an
/// invalidated header, so the segment is never read as valid again
/// ([recovery rule 5](crate::properties#recovery-rules)) while the scan's
/// vouched stable lsn
/// `stable_lsn` survives (so a second recovery trusts what the first did).
/// Does not sync: the caller syncs once after invalidating everything.
pub fn invalidate_header(
    storage: &dyn LogFile,
    lid: Lid,
    segment_size: u64,
    stable_lsn: Lsn,
) -> io::Result<()> {
    let header = SegmentHeader {
        lsn: 0,
        stable_lsn,
        segment_size: segment_size as u32,
        invalidated: true,
        salt: 0,
    };
    storage.write_at(lid, &header.encode())
}

/// Completes the partly written segment at `lid` (lsn `lsn`, salt `salt`)
/// whose valid messages end at offset `end`: writes the pad from `end` to
/// the segment's end, over whatever follows (messages that reached the
/// disk after a lost one, stale bytes). Recovery does this to the last
/// segment of the log it keeps, so every segment below the next vouched
/// lsn is complete. Does not sync.
pub fn seal_segment(
    storage: &dyn LogFile,
    lid: Lid,
    segment_size: u64,
    lsn: Lsn,
    salt: u32,
    end: u64,
) -> io::Result<()> {
    if end > segment_size || segment_size - end < MESSAGE_HEADER_LEN as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no room for a pad",
        ));
    }
    let mut pad = vec![0u8; (segment_size - end) as usize];
    encode_pad(&mut pad, lsn, salt);
    storage.write_at(lid + end, &pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_rejections() {
        let h = SegmentHeader {
            lsn: 4096,
            stable_lsn: 2048,
            segment_size: 1024,
            invalidated: false,
            salt: 0xdead_beef,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        assert_eq!(SegmentHeader::decode(&[0; 32]), Err(FormatError::NoHeader));
        let mut bad = b;
        bad[10] ^= 1;
        assert!(matches!(
            SegmentHeader::decode(&bad),
            Err(FormatError::BadChecksum { .. })
        ));
        assert!(matches!(
            SegmentHeader::decode(&b[..10]),
            Err(FormatError::ShortData { .. })
        ));
    }

    #[test]
    fn segments_round_trip_and_tears_are_detected() {
        let mut b = SegmentBuilder::new(256, 1024, 512);
        let (lsn, off) = b.append(MessageKind::Full, 1, &[7; 40]).unwrap();
        assert_eq!((lsn, off), (1024 + 32, 32));
        b.append(MessageKind::BlobPointer, 2, &9u64.to_le_bytes())
            .unwrap();
        b.append(MessageKind::Free, 3, &[]).unwrap();
        assert!(b.append(MessageKind::Full, 4, &[0; 200]).is_none());
        let bytes = b.finish();
        assert_eq!(bytes.len(), 256);
        let d = decode_segment(&bytes, 256).unwrap();
        assert_eq!(d.messages.len(), 3);
        assert_eq!(d.messages[1].blob, Some(9));
        assert_eq!(d.messages[0].size, 72);
        // A torn write: only a prefix persisted over an older segment. The
        // messages that persisted whole are a valid prefix; the segment is
        // not complete.
        let mut torn = vec![0xAB; 256];
        torn[..110].copy_from_slice(&bytes[..110]);
        assert!(decode_segment(&torn, 256).is_err());
        let walk = walk_segment(&torn, 256).unwrap();
        assert_eq!(
            (walk.records.len(), walk.end, walk.complete),
            (1, 104, false)
        );
        // A stale pad (from another lsn) is detected.
        let mut other = SegmentBuilder::new(256, 2048, 512);
        other.append(MessageKind::Full, 1, &[7; 40]).unwrap();
        let other = other.finish();
        let mut mixed = bytes.clone();
        mixed[180..].copy_from_slice(&other[180..]);
        assert!(decode_segment(&mixed, 256).is_err());
    }

    /// A leftover of an earlier incarnation with the same lsn (recovery
    /// reuses discarded lsns) is told apart by its salt.
    #[test]
    fn same_lsn_leftovers_fail_the_salt() {
        let mut old = SegmentBuilder::with_salt(256, 0, -1, 1);
        old.append(MessageKind::Full, 1, &[1; 20]).unwrap();
        old.append(MessageKind::Full, 2, &[2; 20]).unwrap();
        let old = old.finish();
        let mut new = SegmentBuilder::with_salt(256, 0, -1, 2);
        new.append(MessageKind::Full, 1, &[3; 20]).unwrap();
        let mut disk = old.clone();
        disk[..new.written().len()].copy_from_slice(new.written());
        let walk = walk_segment(&disk, 256).unwrap();
        assert_eq!(walk.records.len(), 1);
        assert!(matches!(walk.stop, Some(FormatError::SaltMismatch { .. })));
    }

    #[test]
    fn one_message_reads_by_its_pointer() {
        let mut b = SegmentBuilder::new(256, 0, -1);
        b.append(MessageKind::Full, 1, &[1; 20]).unwrap();
        let (lsn, off) = b.append(MessageKind::Delta, 2, b"two").unwrap();
        let storage = crate::MemStorage::new();
        storage.write_at(4096, &b.finish()).unwrap();
        let (h, payload) = read_message_at(&storage, 4096 + off, message_size(3)).unwrap();
        assert_eq!((h.kind, h.pid, h.lsn), (MessageKind::Delta, 2, lsn));
        assert_eq!(payload, b"two");
        assert!(read_message_at(&storage, 4096 + off, message_size(4)).is_err());
        assert!(read_message_at(&storage, 4096 + off + 1, message_size(3)).is_err());
    }
}
