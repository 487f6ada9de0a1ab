//! The `tracing` feature (issue 17): a run that seals, drains, frees,
//! reuses, extends and truncates, and a recovery, under a small
//! hand-written subscriber that records every event (with its fields and
//! the span it happened in) and every span. The events appear, named as
//! `src/trace.rs` documents, with the fields that say what happened.
//!
//! Run with `cargo test --release --features tracing --test tracing`.

#![cfg(feature = "tracing")]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use segment_accountant::format::{MessageKind, SegmentBuilder};
use segment_accountant::{
    Accountant, Collector, Config, DiskPtr, LogFile, Lsn, MemStorage, SegmentState,
};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

const SS: u64 = 4096;
const L: Lsn = SS as Lsn;

/// One recorded event.
#[derive(Clone, Debug)]
struct Seen {
    name: &'static str,
    level: Level,
    target: String,
    fields: BTreeMap<String, String>,
    /// The name and fields of the innermost span entered at the time.
    span: Option<(&'static str, BTreeMap<String, String>)>,
}

impl Seen {
    fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("event {} has no field {name}: {self:?}", self.name))
    }

    fn number(&self, name: &str) -> i64 {
        self.field(name)
            .parse()
            .unwrap_or_else(|e| panic!("field {name} of {self:?}: {e}"))
    }
}

/// Field values as text (strings without quotes).
#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

#[derive(Default)]
struct Recorded {
    events: Vec<Seen>,
    spans: BTreeMap<u64, (&'static str, BTreeMap<String, String>)>,
    /// Spans entered, innermost last (the test runs on one thread).
    entered: Vec<u64>,
}

/// A subscriber that records everything, at every level.
#[derive(Clone, Default)]
struct Recorder {
    recorded: Arc<Mutex<Recorded>>,
    next_id: Arc<AtomicU64>,
}

impl Recorder {
    fn events(&self, name: &str) -> Vec<Seen> {
        let recorded = self.recorded.lock().unwrap();
        recorded
            .events
            .iter()
            .filter(|e| e.name == name)
            .cloned()
            .collect()
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        // Relaxed: a unique id is all it is for.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        self.recorded
            .lock()
            .unwrap()
            .spans
            .insert(id, (attrs.metadata().name(), fields.0));
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut recorded = self.recorded.lock().unwrap();
        let span = recorded.entered.last().map(|id| recorded.spans[id].clone());
        let metadata = event.metadata();
        recorded.events.push(Seen {
            name: metadata.name(),
            level: *metadata.level(),
            target: metadata.target().to_owned(),
            fields: fields.0,
            span,
        });
    }

    fn enter(&self, id: &Id) {
        self.recorded.lock().unwrap().entered.push(id.into_u64());
    }

    fn exit(&self, id: &Id) {
        let mut recorded = self.recorded.lock().unwrap();
        let at = recorded
            .entered
            .iter()
            .rposition(|&e| e == id.into_u64())
            .expect("exit of a span entered");
        recorded.entered.remove(at);
    }
}

/// The run of the module docs: every segment life-cycle event, and a
/// truncation of the two top segments.
fn segment_life(acc: &Accountant) {
    let inline = DiskPtr::Inline;
    // Segments 0 and 1: four pages each (few pages: drained once sealed).
    let s0 = acc.next(0).unwrap();
    let s1 = acc.next(L).unwrap();
    for pid in 0..4u64 {
        acc.mark_link(pid, pid as Lsn * 100, inline(s0 + pid * 100), 100)
            .unwrap();
        acc.mark_link(4 + pid, L + pid as Lsn * 100, inline(s1 + pid * 100), 100)
            .unwrap();
    }
    // Segment 2: all eight rewritten; segment 3 is the head whose header
    // vouches for the first three.
    let s2 = acc.next(2 * L).unwrap();
    for pid in 0..8u64 {
        let old = if pid < 4 {
            s0 + pid * 100
        } else {
            s1 + (pid - 4) * 100
        };
        acc.mark_replace(
            pid,
            2 * L + pid as Lsn * 100,
            &[inline(old)],
            inline(s2 + pid * 100),
            100,
        )
        .unwrap();
    }
    acc.next(3 * L).unwrap();
    // Seals 0, 1, 2 in lsn order: 0 and 1 start draining (four pages is
    // few), then 2's seal empties them (freed); 2 stays Inactive.
    acc.stabilize(3 * L).unwrap();
    acc.flush();
    assert_eq!(acc.segment_info(0).unwrap().state, SegmentState::Free);
    // Reuses segments 0 and 1; everything moves on into segment 0.
    let r0 = acc.next(4 * L).unwrap();
    assert_eq!(r0, 0, "the lowest free segment is reused");
    for pid in 0..8u64 {
        acc.mark_replace(
            pid,
            4 * L + pid as Lsn * 100,
            &[inline(s2 + pid * 100)],
            inline(r0 + pid * 100),
            100,
        )
        .unwrap();
    }
    assert_eq!(acc.next(5 * L).unwrap(), SS, "segment 1 is reused");
    // Seals 3 (empty) and 0: 2 empties. Segments 2 and 3, the top of the
    // file, are free.
    acc.stabilize(5 * L).unwrap();
    acc.flush();
    assert_eq!(acc.segment_info(3).unwrap().state, SegmentState::Free);
    assert_eq!(acc.segment_info(2).unwrap().state, SegmentState::Free);
    // Shrinks the file over them, then appends (nothing free below).
    assert_eq!(acc.next(6 * L).unwrap(), 2 * SS);
    // The pass after the truncation reports it.
    acc.stabilize(6 * L).unwrap();
    assert_eq!(acc.metrics().bytes_truncated, 2 * SS);
}

#[test]
fn events_tell_why_the_file_grew_or_shrank() {
    let recorder = Recorder::default();
    tracing::subscriber::with_default(recorder.clone(), || {
        let config = Config::builder().segment_size(SS).build().unwrap();
        let acc = Accountant::with_collector(config, Arc::new(MemStorage::new()), Collector::new());
        segment_life(&acc);
        acc.audit().unwrap();
    });

    // Every segment sealed: 0, 1, 2 (first stabilize), 3 and 0 again
    // (second), 1 (third), each with its lsn and lid.
    let seals = recorder.events("seal");
    let sealed: Vec<(i64, i64)> = seals
        .iter()
        .map(|e| (e.number("lsn"), e.number("lid")))
        .collect();
    for (lsn, lid) in [(0, 0), (L, SS as i64), (2 * L, 2 * SS as i64), (4 * L, 0)] {
        assert!(sealed.contains(&(lsn, lid)), "no seal of {lsn}: {sealed:?}");
    }
    let s2 = seals.iter().find(|e| e.number("lsn") == 2 * L).unwrap();
    assert_eq!(
        (s2.number("live_bytes"), s2.number("pages")),
        (800, 8),
        "{s2:?}"
    );
    assert_eq!(s2.level, Level::DEBUG);
    assert!(s2.target.starts_with("segment_accountant"), "{s2:?}");

    // Drains name their reason: segments 0 and 1 (few pages) by the
    // policy, with what they held then.
    let drains = recorder.events("drain");
    let drained: Vec<(i64, &str, i64)> = drains
        .iter()
        .map(|e| (e.number("lsn"), e.field("reason"), e.number("live_bytes")))
        .collect();
    assert!(drained.contains(&(0, "Policy", 400)), "{drains:?}");
    assert!(drained.contains(&(L, "Policy", 400)), "{drains:?}");

    // Frees: 0 and 1, then 3 and 2, then 1 again (at 5L, sealed empty).
    let mut freed: Vec<i64> = recorder
        .events("free")
        .iter()
        .map(|e| e.number("lsn"))
        .collect();
    freed.sort_unstable();
    assert_eq!(freed, vec![0, L, 2 * L, 3 * L, 5 * L]);

    // Reuse of 0 and 1; appends of the four first segments and of the one
    // after the truncation.
    let reused: Vec<(i64, i64)> = recorder
        .events("reuse")
        .iter()
        .map(|e| (e.number("lsn"), e.number("lid")))
        .collect();
    assert_eq!(reused, vec![(4 * L, 0), (5 * L, SS as i64)]);
    let appended: Vec<i64> = recorder
        .events("append")
        .iter()
        .map(|e| e.number("lsn"))
        .collect();
    assert_eq!(appended, vec![0, L, 2 * L, 3 * L, 6 * L]);

    // One truncation of the two top segments, at INFO.
    let truncations = recorder.events("truncate");
    assert_eq!(truncations.len(), 1, "{truncations:?}");
    let t = &truncations[0];
    assert_eq!(
        (t.number("truncations"), t.number("bytes"), t.level),
        (1, 2 * SS as i64, Level::INFO)
    );
    // Nothing about recovery in this run.
    assert!(recorder.events("recovery_phase").is_empty());
}

#[test]
fn recovery_reports_each_phase_with_its_duration() {
    let storage = Arc::new(MemStorage::new());
    // Two segments, the second's header vouching for the first, and the
    // segment of lsn 3L whose predecessor (2L) never reached the file:
    // the scan stops at the gap, and recovery invalidates its header.
    let mut first = SegmentBuilder::new(SS, 0, 0);
    first.append(MessageKind::Full, 1, b"one").unwrap();
    storage.write_at(0, &first.finish()).unwrap();
    let mut second = SegmentBuilder::new(SS, L, L);
    second.append(MessageKind::Full, 2, b"two").unwrap();
    storage.write_at(SS, &second.finish()).unwrap();
    let mut after_gap = SegmentBuilder::new(SS, 3 * L, L);
    after_gap.append(MessageKind::Full, 3, b"three").unwrap();
    storage.write_at(2 * SS, &after_gap.finish()).unwrap();

    let recorder = Recorder::default();
    let (acc, scan) = tracing::subscriber::with_default(recorder.clone(), || {
        let config = Config::builder().segment_size(SS).build().unwrap();
        Accountant::recover(config, storage.clone(), Collector::new()).unwrap()
    });
    acc.audit().unwrap();

    let phases = recorder.events("recovery_phase");
    let names: Vec<&str> = phases.iter().map(|e| e.field("phase")).collect();
    assert_eq!(names, vec!["scan", "invalidate", "rebuild"]);
    for e in &phases {
        assert_eq!(e.level, Level::INFO);
        assert!(e.number("elapsed_us") >= 0, "{e:?}");
        // Inside the phase's own span.
        let (span, fields) = e.span.as_ref().expect("inside a span");
        assert_eq!(*span, "recovery");
        assert_eq!(fields["phase"], e.field("phase"), "{e:?}");
    }
    // What each went through: the two pages found, the one header made
    // invalid, the two segments rebuilt.
    assert_eq!(scan.discarded, vec![2 * SS], "{scan:?}");
    assert_eq!(scan.snapshot.pages.len(), 2);
    let items: Vec<i64> = phases.iter().map(|e| e.number("items")).collect();
    assert_eq!(items, vec![2, 1, 2]);
}
