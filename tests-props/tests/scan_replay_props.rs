//! The scanner's replay against a plain one: random logs of full images,
//! deltas, frees, blob pointers and checkpoints, their segments laid out in
//! the file in a random order (cleaning reuses segments, so file order is
//! not log order), the last one sometimes only partly written. The pages
//! the scan finds must be those of replaying every message in lsn order
//! with a map: a full image or blob pointer makes the page that one
//! fragment, a delta adds one to a present page (a delta with no base is
//! ignored), a free record frees the page.

use std::collections::BTreeMap;

use proptest::prelude::*;
use segment_accountant::format::{message_size, MessageKind, SegmentBuilder};
use segment_accountant::scan::scan;
use segment_accountant::{DiskPtr, Fragment, LogFile, Lsn, MemStorage, PageState, Storage};

const SS: u64 = 512;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One message to append: kind (0 full, 1 delta, 2 free, 3 blob pointer,
/// 4 checkpoint), page, payload length.
type Op = (u8, u64, u8);

/// The plain replay of one message at `at` in the file.
fn apply(pages: &mut BTreeMap<u64, PageState>, kind: MessageKind, pid: u64, fragment: Fragment) {
    match kind {
        MessageKind::Full | MessageKind::BlobPointer => {
            pages.insert(pid, PageState::Present(vec![fragment]));
        }
        MessageKind::Delta => {
            if let Some(PageState::Present(frags)) = pages.get_mut(&pid) {
                frags.push(fragment);
            }
        }
        MessageKind::Free => {
            pages.insert(pid, PageState::Freed(fragment));
        }
        MessageKind::Pad | MessageKind::Checkpoint => {}
    }
}

/// Writes `segments` (each a list of messages) with consecutive lsns at
/// the file positions `slots` (a permutation), every header vouching for
/// the segments before it; the last segment is finished only if
/// `finish_last`. Returns the file and the replay of every message.
fn build(
    segments: &[Vec<Op>],
    slots: &[usize],
    finish_last: bool,
) -> (MemStorage, BTreeMap<u64, PageState>) {
    let storage = MemStorage::new();
    storage.set_len(segments.len() as u64 * SS).unwrap();
    let mut expected = BTreeMap::new();
    for (i, ops) in segments.iter().enumerate() {
        let lsn = (i as u64 * SS) as Lsn;
        let lid = slots[i] as u64 * SS;
        let mut b = SegmentBuilder::new(SS, lsn, lsn);
        for &(k, pid, len) in ops {
            let kind = match k % 5 {
                0 => MessageKind::Full,
                1 => MessageKind::Delta,
                2 => MessageKind::Free,
                3 => MessageKind::BlobPointer,
                _ => MessageKind::Checkpoint,
            };
            let payload = match kind {
                MessageKind::BlobPointer => (pid.wrapping_mul(7).wrapping_add(len as u64))
                    .to_le_bytes()
                    .to_vec(),
                MessageKind::Checkpoint => (lsn - 1).max(-1).to_le_bytes().to_vec(),
                MessageKind::Free => Vec::new(),
                _ => vec![len; len as usize],
            };
            let pid = if kind == MessageKind::Checkpoint {
                0
            } else {
                pid
            };
            let Some((m_lsn, offset)) = b.append(kind, pid, &payload) else {
                break;
            };
            let ptr = if kind == MessageKind::BlobPointer {
                DiskPtr::Blob {
                    lid: lid + offset,
                    blob: pid.wrapping_mul(7).wrapping_add(len as u64),
                }
            } else {
                DiskPtr::Inline(lid + offset)
            };
            let fragment = Fragment::new(m_lsn, ptr, message_size(payload.len() as u64));
            apply(&mut expected, kind, pid, fragment);
        }
        let last = i + 1 == segments.len();
        if last && !finish_last {
            storage.write_at(lid, b.written()).unwrap();
        } else {
            storage.write_at(lid, &b.finish()).unwrap();
        }
    }
    (storage, expected)
}

fn segments() -> impl Strategy<Value = (Vec<Vec<Op>>, Vec<usize>, bool)> {
    // Twelve pages, told apart only by two bytes of their ids together.
    let pid = (0u64..12).prop_map(|p| ((p % 3) << 40) | (p / 3));
    let op = (0u8..5, pid, 0u8..60);
    prop::collection::vec(prop::collection::vec(op, 0..14), 1..10).prop_flat_map(|segs| {
        let n = segs.len();
        (
            Just(segs),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            any::<bool>(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(512)))]

    #[test]
    fn the_scan_replays_like_a_map_in_lsn_order((segs, slots, finish_last) in segments()) {
        let (storage, expected) = build(&segs, &slots, finish_last);
        let found = scan(&storage, SS).expect("a well-formed log scans");
        prop_assert_eq!(found.snapshot.pages, expected);
        prop_assert_eq!(found.resume_lsn, (segs.len() as u64 * SS) as Lsn);
        prop_assert!(found.discarded.is_empty());
    }
}

/// Pages with large ids, no one byte of which tells them apart (pages
/// share their low byte, and each of the two bytes that differ is shared
/// by several pages), and many records each: the replay's ordering by page
/// brings each page's records together, in log order.
#[test]
fn large_and_many_page_ids_replay_in_log_order() {
    let pids: Vec<u64> = (0..40u64)
        .map(|i| ((i % 4) << 60) | ((i / 4) << 8) | 0xab)
        .collect();
    // Each page gets every kind of record, deltas mostly, in an order
    // that varies (a small generator).
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut segments = Vec::new();
    for s in 0..30u64 {
        segments.push(
            (0..12u64)
                .map(|j| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let kind = [0u8, 1, 1, 1, 2, 3][(x % 6) as usize];
                    let n = s * 12 + j;
                    (kind, n % 40, (n % 30) as u8)
                })
                .collect::<Vec<Op>>(),
        );
    }
    // Map the small ids onto the large ones.
    let segments: Vec<Vec<Op>> = segments
        .into_iter()
        .map(|ops| {
            ops.into_iter()
                .map(|(k, p, l)| (k, pids[p as usize], l))
                .collect()
        })
        .collect();
    let slots: Vec<usize> = (0..segments.len()).rev().collect();
    let (storage, expected) = build(&segments, &slots, true);
    assert!(expected.len() > 10);
    let found = scan(&storage, SS).unwrap();
    assert_eq!(found.snapshot.pages, expected);
}
