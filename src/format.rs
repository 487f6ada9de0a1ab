//! The reference segment format: what a store built on the accountant can
//! write so that [`scan`](crate::scan) can recover it. All integers are
//! little-endian.
//!
//! A segment of `segment_size` bytes is one [`SegmentHeader`] followed by
//! messages; the unused tail is one Pad message tagged with the segment's
//! lsn, so a segment is either complete (its messages end exactly at the
//! segment's end) or torn.
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

use std::io;

use crate::storage::Storage;
use crate::types::{BlobId, Lid, Lsn, PageId};

/// Bytes of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Bytes of a message header.
pub const MESSAGE_HEADER_LEN: usize = 32;
/// The magic number opening every segment header ("SAG1").
pub const MAGIC: u32 = 0x5341_4731;

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

fn check(stored: u32, data: &[&[u8]]) -> Result<(), FormatError> {
    let mut hasher = crc32fast::Hasher::new();
    for d in data {
        hasher.update(d);
    }
    let computed = hasher.finalize();
    if stored == computed {
        Ok(())
    } else {
        Err(FormatError::BadChecksum { stored, computed })
    }
}

/// The header at the start of every segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's base lsn (a multiple of the segment size).
    pub lsn: Lsn,
    /// The highest lsn below which the writer knew the log was stable and
    /// consecutive when it wrote this header.
    pub stable_lsn: Lsn,
    /// The segment size the file was written with.
    pub segment_size: u32,
    /// Written by recovery over a discarded segment: not a segment of the
    /// log any more (its lsn means nothing and may be reused), but its
    /// vouched stable lsn still counts, so recovery stays idempotent.
    pub invalidated: bool,
}

impl SegmentHeader {
    /// Bytes 0..4 magic, 4..8 crc32 of bytes 8..32, 8..16 lsn, 16..24
    /// stable lsn, 24..28 segment size, 28..32 flags (1: invalidated).
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[8..16].copy_from_slice(&self.lsn.to_le_bytes());
        b[16..24].copy_from_slice(&self.stable_lsn.to_le_bytes());
        b[24..28].copy_from_slice(&self.segment_size.to_le_bytes());
        b[28..32].copy_from_slice(&(self.invalidated as u32).to_le_bytes());
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
        check(u32_at(b, 4), &[&b[8..]])?;
        let flags = u32_at(b, 28);
        if flags > 1 {
            return Err(FormatError::InvalidField("segment header flags"));
        }
        let header = SegmentHeader {
            lsn: u64_at(b, 8) as Lsn,
            stable_lsn: u64_at(b, 16) as Lsn,
            segment_size: u32_at(b, 24),
            invalidated: flags == 1,
        };
        if header.lsn < 0 || header.stable_lsn < -1 || !header.segment_size.is_power_of_two() {
            return Err(FormatError::InvalidField("segment header lsn or size"));
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
}

impl MessageKind {
    fn from_u8(k: u8) -> Result<MessageKind, FormatError> {
        Ok(match k {
            1 => MessageKind::Full,
            2 => MessageKind::Delta,
            3 => MessageKind::Free,
            4 => MessageKind::BlobPointer,
            5 => MessageKind::Pad,
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
}

impl MessageHeader {
    /// Bytes 0..4 crc32 of bytes 4..32 and the payload, 4 kind, 5..8 zero,
    /// 8..16 pid, 16..24 lsn, 24..28 payload length, 28..32 zero.
    pub fn encode(&self, payload: &[u8]) -> [u8; MESSAGE_HEADER_LEN] {
        let mut b = [0u8; MESSAGE_HEADER_LEN];
        b[4] = self.kind as u8;
        b[8..16].copy_from_slice(&self.pid.to_le_bytes());
        b[16..24].copy_from_slice(&self.lsn.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&b[4..]);
        hasher.update(payload);
        b[0..4].copy_from_slice(&hasher.finalize().to_le_bytes());
        b
    }

    /// Decodes a header and checks its checksum against `payload` (the
    /// `len` bytes that follow it).
    pub fn decode(b: &[u8]) -> Result<MessageHeader, FormatError> {
        need(b, MESSAGE_HEADER_LEN)?;
        let kind = MessageKind::from_u8(b[4])?;
        if b[5..8] != [0, 0, 0] || u32_at(b, 28) != 0 {
            return Err(FormatError::InvalidField("message header reserved"));
        }
        Ok(MessageHeader {
            kind,
            pid: u64_at(b, 8),
            lsn: u64_at(b, 16) as Lsn,
            len: u32_at(b, 24),
        })
    }
}

/// Bytes a message with `payload_len` bytes of payload takes in the log:
/// the size a store passes to `mark_link` / `mark_replace`.
pub fn message_size(payload_len: u64) -> u64 {
    MESSAGE_HEADER_LEN as u64 + payload_len
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
    /// vouches for `stable_lsn`.
    pub fn new(segment_size: u64, lsn: Lsn, stable_lsn: Lsn) -> SegmentBuilder {
        let header = SegmentHeader {
            lsn,
            stable_lsn,
            segment_size: segment_size as u32,
            invalidated: false,
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
        let header = MessageHeader {
            kind,
            pid,
            lsn,
            len: payload.len() as u32,
        };
        self.bytes.extend_from_slice(&header.encode(payload));
        self.bytes.extend_from_slice(payload);
        Some((lsn, offset))
    }

    /// Pads the tail and returns exactly `segment_size` bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let left = self.remaining();
        if left > 0 {
            let payload = vec![0u8; left - MESSAGE_HEADER_LEN];
            let pad = MessageHeader {
                kind: MessageKind::Pad,
                pid: 0,
                lsn: self.header.lsn,
                len: payload.len() as u32,
            };
            self.bytes.extend_from_slice(&pad.encode(&payload));
            self.bytes.extend_from_slice(&payload);
        }
        self.bytes
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
    /// The payload (empty for a Pad).
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

/// Decodes and verifies a whole segment: header, every message's checksum
/// and lsn, the pad's lsn tag, and that the messages end exactly at the
/// segment's end. Any failure means the segment is torn or not one.
pub fn decode_segment(bytes: &[u8], segment_size: u64) -> Result<DecodedSegment, FormatError> {
    let size =
        usize::try_from(segment_size).map_err(|_| FormatError::LengthOutOfRange(segment_size))?;
    need(bytes, size)?;
    let bytes = &bytes[..size];
    let header = SegmentHeader::decode(bytes)?;
    if header.invalidated {
        return Err(FormatError::InvalidField("invalidated segment"));
    }
    if header.segment_size as u64 != segment_size {
        return Err(FormatError::InvalidField("segment size differs"));
    }
    if header.lsn as u64 % segment_size != 0 {
        return Err(FormatError::InvalidField("segment lsn not aligned"));
    }
    let mut messages = Vec::new();
    let mut at = SEGMENT_HEADER_LEN;
    while at < size {
        let m = MessageHeader::decode(&bytes[at..])?;
        let end = at + MESSAGE_HEADER_LEN + m.len as usize;
        if end > size {
            return Err(FormatError::LengthOutOfRange(m.len as u64));
        }
        let payload = &bytes[at + MESSAGE_HEADER_LEN..end];
        check(
            u32_at(bytes, at),
            &[&bytes[at + 4..at + MESSAGE_HEADER_LEN], payload],
        )?;
        let expected = if m.kind == MessageKind::Pad {
            header.lsn
        } else {
            header.lsn + at as Lsn
        };
        if m.lsn != expected {
            return Err(FormatError::LsnMismatch {
                offset: at as u64,
                expected,
                found: m.lsn,
            });
        }
        if m.kind == MessageKind::Pad {
            if end != size {
                return Err(FormatError::InvalidField("pad does not end the segment"));
            }
            break;
        }
        let blob = if m.kind == MessageKind::BlobPointer {
            if payload.len() != 8 {
                return Err(FormatError::LengthOutOfRange(payload.len() as u64));
            }
            Some(u64_at(payload, 0))
        } else {
            None
        };
        messages.push(Message {
            kind: m.kind,
            pid: m.pid,
            lsn: m.lsn,
            offset: at as u64,
            size: message_size(m.len as u64),
            payload: payload.to_vec(),
            blob,
        });
        at = end;
    }
    Ok(DecodedSegment { header, messages })
}

/// Overwrites the header of the discarded segment at `lid` with an
/// invalidated header, so the segment is never read as valid again
/// ([recovery rule 5](crate::properties#recovery-rules)) while the scan's
/// vouched stable lsn
/// `stable_lsn` survives (so a second recovery trusts what the first did).
/// Does not sync: the caller syncs once after invalidating everything.
pub fn invalidate_header(
    storage: &dyn Storage,
    lid: Lid,
    segment_size: u64,
    stable_lsn: Lsn,
) -> io::Result<()> {
    let header = SegmentHeader {
        lsn: 0,
        stable_lsn,
        segment_size: segment_size as u32,
        invalidated: true,
    };
    storage.write_at(lid, &header.encode())
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
        // A torn write: only a prefix persisted over an older segment.
        let mut torn = vec![0xAB; 256];
        torn[..100].copy_from_slice(&bytes[..100]);
        assert!(decode_segment(&torn, 256).is_err());
        // A stale pad (from another lsn) is detected.
        let mut other = SegmentBuilder::new(256, 2048, 512);
        other.append(MessageKind::Full, 1, &[7; 40]).unwrap();
        let other = other.finish();
        let mut mixed = bytes.clone();
        mixed[180..].copy_from_slice(&other[180..]);
        assert!(decode_segment(&mixed, 256).is_err());
    }
}
