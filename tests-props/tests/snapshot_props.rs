//! Malformed and random snapshots fed to `Accountant::from_snapshot`: a
//! typed error or an accountant that passes its audit, never a panic and
//! never an allocation sized by a hostile number.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use segment_accountant::{
    Accountant, Collector, Config, DiskPtr, Error, Fragment, MemStorage, PageState, Snapshot,
};

const SS: u64 = 256;

fn fragment() -> impl Strategy<Value = Fragment> {
    (
        prop_oneof![-3i64..(12 * SS as i64), any::<i64>()],
        prop_oneof![0u64..(12 * SS), any::<u64>()],
        any::<bool>(),
        0u64..1000,
    )
        .prop_map(|(lsn, lid, blob, size)| {
            let ptr = if blob {
                DiskPtr::Blob { lid, blob: lid ^ 7 }
            } else {
                DiskPtr::Inline(lid)
            };
            Fragment::new(lsn, ptr, size)
        })
}

fn page() -> impl Strategy<Value = PageState> {
    prop_oneof![
        prop::collection::vec(fragment(), 1..4).prop_map(PageState::Present),
        fragment().prop_map(PageState::Freed),
    ]
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        prop::collection::btree_map(0u64..64, page(), 0..24),
        prop::option::of(prop_oneof![0u64..(12 * SS), any::<u64>()]),
        -1i64..(12 * SS as i64),
        prop_oneof![-1i64..(12 * SS as i64), any::<i64>()],
    )
        .prop_map(|(pages, last_lid, last_lsn, stable)| {
            Snapshot::new(
                pages.into_iter().collect::<BTreeMap<_, _>>(),
                last_lid,
                last_lsn,
                stable,
            )
        })
}

/// Makes a random snapshot self-consistent: each fragment's lsn is moved
/// into the segment its lid names, with one lsn per segment.
fn consistent(mut s: Snapshot) -> Snapshot {
    let mut segno_of: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next_segno = 0;
    for state in s.pages.values_mut() {
        let frags: Vec<&mut Fragment> = match state {
            PageState::Present(f) => f.iter_mut().collect(),
            PageState::Freed(f) => vec![f],
        };
        for f in frags {
            let lid = f.ptr.lid() % (12 * SS);
            f.ptr = match f.ptr {
                DiskPtr::Inline(_) => DiskPtr::Inline(lid),
                DiskPtr::Blob { blob, .. } => DiskPtr::Blob { lid, blob },
            };
            let segno = *segno_of.entry(lid / SS).or_insert_with(|| {
                next_segno += 3;
                next_segno
            });
            f.lsn = (segno * SS + lid % SS) as i64;
        }
    }
    s.last_lid = s.last_lid.map(|l| l % (12 * SS));
    let highest = s
        .pages
        .values()
        .flat_map(|p| p.fragments())
        .map(|f| f.lsn)
        .max()
        .unwrap_or(-1);
    s.last_lsn = s.last_lsn.max(highest);
    s.max_header_stable_lsn = s.max_header_stable_lsn.clamp(-1, s.last_lsn + 1);
    s
}

fn config() -> Config {
    Config::builder()
        .segment_size(SS)
        .allow_small_segments(true)
        .build()
        .unwrap()
}

fn build(s: &Snapshot, file_len: u64) -> Result<Accountant, Error> {
    Accountant::from_snapshot(
        config(),
        Arc::new(MemStorage::new()),
        Collector::new(),
        s,
        file_len,
    )
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Any snapshot: a typed snapshot error, or an accountant whose audit
    /// passes and which accepts new segments above the snapshot.
    #[test]
    fn arbitrary_snapshots_never_panic(s in snapshot(), file_len in 0u64..(64 * SS)) {
        match build(&s, file_len) {
            Ok(acc) => {
                prop_assert!(acc.audit().is_ok(), "{:?}", acc.audit());
            }
            Err(Error::InvalidSnapshot(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    /// Self-consistent snapshots over a long enough file are accepted,
    /// audit clean, and keep working: stabilize everything, free, reuse.
    #[test]
    fn consistent_snapshots_recover(s in snapshot()) {
        let s = consistent(s);
        let acc = build(&s, 12 * SS).expect("consistent snapshot rejected");
        prop_assert!(acc.audit().is_ok(), "{:?}", acc.audit());
        let live: u64 = s.pages.values().flat_map(|p| p.fragments()).map(|f| f.size).sum();
        prop_assert_eq!(acc.stats().live_bytes, live);
        let resume = (s.last_lsn.max(0) as u64 / SS + 1) as i64 * SS as i64;
        acc.next(resume).unwrap();
        acc.stabilize(resume + SS as i64).unwrap();
        acc.flush();
        prop_assert!(acc.audit().is_ok(), "{:?}", acc.audit());
    }
}
