//! Malformed input to the format decoders and the scanner: typed errors,
//! never a panic, never an allocation sized by a hostile length; and what
//! the scanner accepts, the accountant rebuilds from with a clean audit.

use std::sync::Arc;

use proptest::prelude::*;
use segment_accountant::format::{
    decode_segment, MessageHeader, MessageKind, SegmentBuilder, SegmentHeader,
};
use segment_accountant::scan::scan;
use segment_accountant::{Accountant, Collector, Config, MemStorage, Storage};

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
    }
}
