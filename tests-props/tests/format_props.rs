//! Malformed input to the format decoders and the scanner: typed errors,
//! never a panic, never an allocation sized by a hostile length; and what
//! the scanner accepts, the accountant rebuilds from with a clean audit.

use std::sync::Arc;

use proptest::prelude::*;
use segment_accountant::format::{
    decode_message, decode_segment, read_message_at, walk_segment, MessageHeader, MessageKind,
    SegmentBuilder, SegmentHeader,
};
use segment_accountant::scan::scan;
use segment_accountant::{Accountant, Collector, Config, LogFile, MemStorage};

const SS: u64 = 256;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A valid log of `n` segments (consecutive lsns, each vouching for the
/// one before), as bytes.
fn log(n: u64, pids: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut b = SegmentBuilder::new(SS, (i * SS) as i64, (i * SS) as i64);
        for (j, &p) in pids.iter().enumerate() {
            let kind = match p % 4 {
                0 => MessageKind::Full,
                1 => MessageKind::Delta,
                2 => MessageKind::Free,
                _ => MessageKind::BlobPointer,
            };
            let payload: Vec<u8> = if kind == MessageKind::BlobPointer {
                (p as u64).to_le_bytes().to_vec()
            } else {
                vec![p; (p % 20) as usize]
            };
            if b.append(kind, (p as u64 + j as u64) % 16, &payload)
                .is_none()
            {
                break;
            }
        }
        out.extend(b.finish());
    }
    out
}

/// A log of `n` segments, each written only up to a random number of its
/// messages (`cuts`; made durable before full), some with a checkpoint
/// vouching for the segment before, over `junk` (what the file held
/// before: earlier incarnations, garbage).
fn partial_log(n: u64, pids: &[u8], cuts: &[u8], junk: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; (n * SS) as usize];
    for (i, b) in out.iter_mut().enumerate() {
        *b = junk.get(i % junk.len().max(1)).copied().unwrap_or(0);
    }
    for i in 0..n {
        let mut b = SegmentBuilder::new(SS, (i * SS) as i64, (i * SS) as i64 - 1);
        let cut = cuts.get(i as usize).copied().unwrap_or(255) as usize;
        for (j, &p) in pids.iter().enumerate().take(cut) {
            let fits = if p % 5 == 4 {
                b.checkpoint((i * SS) as i64).is_some()
            } else {
                let kind =
                    [MessageKind::Full, MessageKind::Delta, MessageKind::Free][p as usize % 3];
                let payload = if kind == MessageKind::Free {
                    vec![]
                } else {
                    vec![p; (p % 20) as usize]
                };
                b.append(kind, (p as u64 + j as u64) % 16, &payload)
                    .is_some()
            };
            if !fits {
                break;
            }
        }
        let bytes = if cut == 255 {
            b.finish()
        } else {
            b.written().to_vec()
        };
        let at = (i * SS) as usize;
        out[at..at + bytes.len()].copy_from_slice(&bytes);
    }
    out
}

fn mutate(mut bytes: Vec<u8>, flips: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(at, x) in flips {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] ^= x;
        }
    }
    if let Some(c) = cut {
        let len = bytes.len();
        bytes.truncate(c % (len + 1));
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(3_000), ..ProptestConfig::default() })]

    #[test]
    fn header_decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        let _ = SegmentHeader::decode(&bytes);
        let _ = MessageHeader::decode(&bytes);
        if let Ok(h) = SegmentHeader::decode(&bytes) {
            prop_assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
        }
    }

    #[test]
    fn segment_decoder_rejects_damage(
        pids in prop::collection::vec(any::<u8>(), 0..12),
        flips in prop::collection::vec((any::<usize>(), 1u8..), 0..4),
        cut in prop::option::of(any::<usize>()),
        garbage in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let good = log(1, &pids);
        let decoded = decode_segment(&good, SS).expect("a built segment decodes");
        prop_assert!(decoded.messages.iter().all(|m| m.lsn == m.offset as i64));
        let bad = mutate(good.clone(), &flips, cut);
        if bad != good {
            prop_assert!(decode_segment(&bad, SS).is_err(), "damage went unnoticed");
        }
        let _ = decode_segment(&garbage, SS);
        let _ = decode_segment(&garbage, u64::MAX);
    }

    #[test]
    fn scanner_never_panics_and_what_it_accepts_rebuilds(
        n in 0u64..6,
        pids in prop::collection::vec(any::<u8>(), 0..10),
        flips in prop::collection::vec((any::<usize>(), 1u8..), 0..6),
        cut in prop::option::of(any::<usize>()),
    ) {
        let bytes = mutate(log(n, &pids), &flips, cut);
        let storage = MemStorage::new();
        storage.write_at(0, &bytes).unwrap();
        if let Ok(found) = scan(&storage, SS) {
            let config = Config::builder().segment_size(SS).allow_small_segments(true).build().unwrap();
            let acc = Accountant::from_snapshot(config, Arc::new(MemStorage::new()), Collector::new(), &found.snapshot, found.file_len)
                .expect("the scanner produced a snapshot the accountant rejects");
            prop_assert!(acc.audit().is_ok(), "{:?}", acc.audit());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2_000), ..ProptestConfig::default() })]

    /// Damage to a segment only ever shortens its valid prefix: every
    /// message a walk accepts is one the writer wrote, at its place.
    #[test]
    fn walks_of_damaged_segments_keep_a_prefix(
        pids in prop::collection::vec(any::<u8>(), 0..12),
        flips in prop::collection::vec((any::<usize>(), 1u8..), 0..4),
        cut in prop::option::of(any::<usize>()),
        garbage in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let good = log(1, &pids);
        let reference = walk_segment(&good, SS).expect("a built segment walks");
        prop_assert!(reference.complete);
        let bad = mutate(good.clone(), &flips, cut);
        if let Ok(walk) = walk_segment(&bad, SS) {
            prop_assert!(walk.records.len() <= reference.records.len());
            prop_assert_eq!(&walk.records[..], &reference.records[..walk.records.len()]);
            prop_assert!(walk.end <= SS);
        }
        let _ = walk_segment(&garbage, SS);
        let _ = walk_segment(&garbage, 3);
        let _ = decode_message(&garbage);
    }

    /// Logs of partly written segments (durable before full) with
    /// checkpoints, over junk, then damaged: the scanner never panics,
    /// what it accepts rebuilds with a clean audit, and every fragment it
    /// reports reads back alone by its pointer as the page's message.
    #[test]
    fn partial_segments_scan_and_read_back(
        n in 1u64..6,
        pids in prop::collection::vec(any::<u8>(), 0..10),
        cuts in prop::collection::vec(any::<u8>(), 0..6),
        junk in prop::collection::vec(any::<u8>(), 0..64),
        flips in prop::collection::vec((any::<usize>(), 1u8..), 0..3),
        cut in prop::option::of(any::<usize>()),
    ) {
        let cuts: Vec<u8> = cuts.iter().map(|&c| if c > 200 { 255 } else { c % 12 }).collect();
        let bytes = mutate(partial_log(n, &pids, &cuts, &junk), &flips, cut);
        let storage = MemStorage::new();
        storage.write_at(0, &bytes).unwrap();
        if let Ok(found) = scan(&storage, SS) {
            let config = Config::builder().segment_size(SS).allow_small_segments(true).build().unwrap();
            let acc = Accountant::from_snapshot(config, Arc::new(MemStorage::new()), Collector::new(), &found.snapshot, found.file_len)
                .expect("the scanner produced a snapshot the accountant rejects");
            prop_assert!(acc.audit().is_ok(), "{:?}", acc.audit());
            for (&pid, state) in &found.snapshot.pages {
                for f in state.fragments() {
                    let read = read_message_at(&storage, f.ptr.lid(), f.size);
                    prop_assert!(read.is_ok(), "page {} fragment {:?}: {:?}", pid, f, read.err());
                    let (h, _) = read.unwrap();
                    prop_assert_eq!((h.pid, h.lsn), (pid, f.lsn));
                }
            }
            if let Some(t) = found.open_tail {
                prop_assert!(t.end <= SS - 32, "room for the pad");
            }
        }
    }
}

#[test]
fn scanning_random_files_never_panics() {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..cases(1_000) {
        let len = (x % 2048) as usize;
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(x as u8);
        }
        let storage = MemStorage::new();
        storage.write_at(0, &bytes).unwrap();
        let _ = scan(&storage, SS);
        let _ = scan(&storage, 3);
        let _ = read_message_at(&storage, x % 512, x % 300);
    }
}
