//! Rebuilding the accountant from a recovery [`Snapshot`]
//! ([`Accountant::from_snapshot`]) and recovering a file in the reference
//! format ([`Accountant::recover`]).

use std::collections::BTreeMap;

use crate::error::{ResumeRefusal, SnapshotError};
use crate::recovery::{RecoverError, Snapshot};
use crate::types::{Lsn, PageId};

struct Recovered {
    segno: u64,
    pages: Vec<(PageId, u64)>,
    bytes: u64,
}

impl crate::Accountant {
    /// Rebuilds the accountant after a crash from a scan of the log
    /// (`snapshot`) and the file's current length `file_len`, by the
    /// [recovery rules](crate::properties#recovery-rules):
    ///
    /// 1. the tip is the file length rounded up to whole segments (a
    ///    partial last segment counts, however few bytes it holds: the rule
    ///    knows nothing of the store's format);
    /// 2. every segment holding a live fragment gets the fragment's segment
    ///    lsn and the page, with live bytes summed;
    /// 3. segments wholly below the header-vouched stable lsn are sealed
    ///    (the stabilized lsn restarts at the highest of them, since a
    ///    durable header vouches for them); those other than the last one
    ///    written holding at most `threshold × segment_size` live bytes
    ///    start Draining; later segments stay Active until `stabilize`
    ///    passes them, in lsn order;
    ///    The segment writing resumes in ([`Snapshot::resume_at`]) stays
    ///    Active, with or without live fragments;
    /// 4. other segments below the tip with no live fragment are freed, but
    ///    reusable only once `stabilize` passes the snapshot's last lsn
    ///    (and then through the epoch collector).
    ///
    /// Rule 5 (a discarded tail never read as valid again) is the caller's
    /// part: invalidate the discarded headers durably before writing new
    /// segments. [`Accountant::recover`](crate::Accountant::recover) does
    /// all of it for the reference format.
    ///
    /// Frees are deferred through `collector`: readers pin
    /// [`Accountant::collector`](crate::Accountant::collector) (see [Readers
    /// and the collector](crate#readers-and-the-collector)).
    ///
    /// # Errors
    /// [`crate::Error::InvalidSnapshot`] when the snapshot contradicts
    /// itself or the file; nothing is built.
    pub fn from_snapshot(
        config: crate::Config,
        storage: std::sync::Arc<dyn crate::Storage>,
        collector: crate::Collector,
        snapshot: &Snapshot,
        file_len: u64,
    ) -> crate::Result<crate::Accountant> {
        use crate::core::segment::{SegmentState, Word};
        use crate::core::table::{Bits, SegmentTable};

        let phase = crate::trace::Phase::start("rebuild");
        let ss = config.segment_size;
        // Rule 1, at segment granularity: any byte of a segment counts,
        // whatever the store's format.
        let tip = file_len.div_ceil(ss);
        let tip_bytes = tip * ss;
        if let Some(lid) = snapshot.last_lid {
            if lid >= tip_bytes {
                return Err(SnapshotError::LastSegmentBeyondTip {
                    lid,
                    tip: tip_bytes,
                }
                .into());
            }
        }
        if snapshot.max_header_stable_lsn > snapshot.last_lsn.saturating_add(1) {
            return Err(SnapshotError::StableBeyondLog {
                stable: snapshot.max_header_stable_lsn,
                last_lsn: snapshot.last_lsn,
            }
            .into());
        }
        // Validate everything before building anything.
        let mut segments: BTreeMap<u64, Recovered> = BTreeMap::new();
        for (&pid, state) in &snapshot.pages {
            for fragment in state.fragments() {
                let lid = fragment.ptr.lid();
                let index = lid / ss;
                if index >= tip {
                    return Err(SnapshotError::FragmentBeyondTip {
                        pid,
                        lid,
                        tip: tip_bytes,
                    }
                    .into());
                }
                if fragment.lsn < 0
                    || fragment.lsn as u64 / ss > crate::core::segment::MAX_SEGMENT_NUMBER
                {
                    return Err(SnapshotError::InvalidLsn {
                        pid,
                        lsn: fragment.lsn,
                    }
                    .into());
                }
                let max = crate::accountant::MAX_FRAGMENT_BYTES;
                if fragment.size > max {
                    return Err(SnapshotError::FragmentTooLarge {
                        pid,
                        size: fragment.size,
                        max,
                    }
                    .into());
                }
                let segno = fragment.lsn as u64 / ss;
                let entry = segments.entry(index).or_insert(Recovered {
                    segno,
                    pages: Vec::new(),
                    bytes: 0,
                });
                if entry.segno != segno {
                    return Err(SnapshotError::MixedSegmentLsns {
                        lid: index * ss,
                        first: (entry.segno * ss) as Lsn,
                        second: (segno * ss) as Lsn,
                        pid,
                    }
                    .into());
                }
                entry.pages.push((pid, fragment.size));
                entry.bytes += fragment.size;
            }
        }
        if let Some((lid, lsn)) = snapshot.resume {
            let refuse = |reason| SnapshotError::InvalidResume { lid, lsn, reason };
            if lid % ss != 0 {
                return Err(refuse(ResumeRefusal::UnalignedLid).into());
            }
            if lid >= tip_bytes {
                return Err(refuse(ResumeRefusal::BeyondTip { tip: tip_bytes }).into());
            }
            if lsn < 0 || lsn as u64 / ss > crate::core::segment::MAX_SEGMENT_NUMBER {
                return Err(refuse(ResumeRefusal::LsnOutOfRange).into());
            }
            if lsn <= snapshot.last_lsn {
                return Err(refuse(ResumeRefusal::NotBeyondLog {
                    last_lsn: snapshot.last_lsn,
                })
                .into());
            }
            // Beyond the log's last lsn, so beyond the vouched stable lsn
            // (checked above): the segment is never one sealed at recovery.
            let segno = lsn as u64 / ss;
            let entry = segments.entry(lid / ss).or_insert(Recovered {
                segno,
                pages: Vec::new(),
                bytes: 0,
            });
            if entry.segno != segno {
                return Err(SnapshotError::MixedSegmentLsns {
                    lid,
                    first: (entry.segno * ss) as Lsn,
                    second: (segno * ss) as Lsn,
                    pid: entry.pages.first().map_or(0, |&(pid, _)| pid),
                }
                .into());
            }
        }
        let mut by_segno: BTreeMap<u64, u64> = BTreeMap::new();
        for (&index, seg) in &segments {
            if let Some(other) = by_segno.insert(seg.segno, index) {
                return Err(SnapshotError::DuplicateSegmentLsn {
                    lsn: (seg.segno * ss) as Lsn,
                    first: other * ss,
                    second: index * ss,
                }
                .into());
            }
        }

        // Segments wholly below the vouched stable lsn are stable.
        let done = if snapshot.max_header_stable_lsn > 0 {
            (snapshot.max_header_stable_lsn as u64 / ss)
                .min(crate::core::segment::MAX_SEGMENT_NUMBER + 1)
        } else {
            0
        };
        let table = SegmentTable::new();
        table.grow_to(tip as usize);
        let mut active = Vec::new();
        let mut waiting = Vec::new();
        let mut counts = [0usize; 3]; // active, inactive, draining
        let mut cleaning =
            crate::accountant::combiner::Cleaning::new(ss, config.space_target.is_some());
        let drain_limit = ss * config.cleanup_threshold as u64 / 100;
        for index in 0..tip as usize {
            let segment = table.segment(index);
            let Some(seg) = segments.get(&(index as u64)) else {
                // Rule 4: empty, freed once stabilize passes the last lsn.
                segment.must_transition(
                    Word::VACANT,
                    Word {
                        state: SegmentState::Freeing,
                        generation: 0,
                        segno: None,
                    },
                );
                waiting.push((index as u32, snapshot.last_lsn));
                continue;
            };
            for &(pid, bytes) in &seg.pages {
                // Not shared yet: nothing to check.
                segment.link_held(pid, bytes);
            }
            let stable = seg.segno < done;
            let is_last = snapshot.last_lid == Some(index as u64 * ss);
            let state = if !stable {
                active.push((seg.segno, index as u32));
                counts[0] += 1;
                SegmentState::Active
            } else if !is_last && seg.bytes <= drain_limit && config.mode == crate::Mode::Gc {
                table.set_bit(Bits::Drain, index);
                counts[2] += 1;
                SegmentState::Draining
            } else {
                counts[1] += 1;
                SegmentState::Inactive
            };
            if state != SegmentState::Active {
                segment.seal_bytes();
                cleaning.sealed_live += seg.bytes;
            }
            match state {
                SegmentState::Inactive if cleaning.indexed => {
                    cleaning.victims.upsert(index, seg.segno, seg.bytes)
                }
                SegmentState::Draining => cleaning.draining.push(index as u32),
                _ => {}
            }
            segment.must_transition(
                Word::VACANT,
                Word::VACANT.activated(seg.segno).with_state(state),
            );
        }
        let max_stabilized = if done == 0 {
            -1
        } else {
            done as Lsn * ss as Lsn - ss as Lsn
        };
        for index in 0..tip as usize {
            if table.bit(Bits::Drain, index) {
                crate::accountant::combiner::fill_drain_list(&table, index, &[]);
            }
        }
        let combiner = crate::accountant::combiner::Combiner::recovered(
            done,
            active.clone(),
            waiting,
            cleaning,
        );
        let acc = crate::Accountant::assemble(
            config,
            storage,
            collector,
            table,
            tip as usize,
            combiner,
            max_stabilized,
        );
        for &(segno, index) in &active {
            // Registered with the combiner already (`Combiner::recovered`).
            acc.shared
                .active_lsns
                .insert_registered(segno, index as usize);
        }
        acc.shared.counts.set(counts[0], counts[1], counts[2]);
        phase.end(segments.len() as u64);
        Ok(acc)
    }
}

impl crate::Accountant {
    /// Recovers a file written in the reference [`format`](mod@crate::format):
    /// scans it, makes every discarded segment durably invalid ([recovery
    /// rule 5](crate::properties#recovery-rules): the sync is skipped only
    /// for a temporary store), durably completes a partly written last
    /// segment with a pad, and rebuilds the accountant from the scan
    /// ([`from_snapshot`](crate::Accountant::from_snapshot)). Returns the accountant
    /// and the scan (the pages, and the lsn to resume writing at).
    /// Idempotent, and safe to repeat after a crash during its own writes.
    ///
    /// Frees are deferred through `collector`: readers pin
    /// [`Accountant::collector`](crate::Accountant::collector) (see [Readers
    /// and the collector](crate#readers-and-the-collector)); pass
    /// [`default_collector`](crate::default_collector)`().clone()` for the
    /// collector [`Accountant::new`](crate::Accountant::new) uses.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use segment_accountant::format::{MessageKind, SegmentBuilder};
    /// use segment_accountant::{
    ///     default_collector, Accountant, Config, MemStorage, PageState, LogFile, Storage,
    /// };
    ///
    /// let storage = Arc::new(MemStorage::new());
    /// let mut segment = SegmentBuilder::new(4096, 0, 0);
    /// segment.append(MessageKind::Full, 7, b"page seven").unwrap();
    /// storage.write_at(0, &segment.finish())?;
    ///
    /// let config = Config::builder().segment_size(4096).build()?;
    /// let (acc, scan) = Accountant::recover(config, storage, default_collector().clone())?;
    /// assert!(matches!(scan.snapshot.pages.get(&7), Some(PageState::Present(_))));
    /// assert_eq!(scan.resume_lsn, 4096);
    /// let lid = acc.next(scan.resume_lsn)?; // keep writing
    /// assert_eq!(lid, 4096);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recover(
        config: crate::Config,
        storage: std::sync::Arc<dyn crate::LogFile>,
        collector: crate::Collector,
    ) -> Result<(crate::Accountant, crate::recovery::scan::Scan), RecoverError> {
        let ss = config.segment_size;
        let phase = crate::trace::Phase::start("scan");
        let found = crate::recovery::scan::scan(&*storage, ss)?;
        phase.end(found.snapshot.pages.len() as u64);
        let phase = crate::trace::Phase::start("invalidate");
        if !found.discarded.is_empty() || found.open_tail.is_some() {
            for &lid in &found.discarded {
                crate::recovery::format::invalidate_header(
                    &*storage,
                    lid,
                    ss,
                    found.snapshot.max_header_stable_lsn,
                )
                .map_err(RecoverError::Invalidate)?;
            }
            // The last segment kept may be partly written: complete it, so
            // that once new writes vouch past it, it is a complete stable
            // segment and nothing beyond its valid prefix can surface.
            if let Some(tail) = found.open_tail {
                crate::recovery::format::seal_segment(
                    &*storage, tail.lid, ss, tail.lsn, tail.salt, tail.end,
                )
                .map_err(RecoverError::Invalidate)?;
            }
            if !config.temporary {
                storage.sync().map_err(RecoverError::Invalidate)?;
            }
        }
        phase.end(found.discarded.len() as u64 + found.open_tail.is_some() as u64);
        // An `Arc` of a log file is the accountant's storage (no trait
        // upcasting needed).
        let storage: std::sync::Arc<dyn crate::Storage> = std::sync::Arc::new(storage);
        let acc = Self::from_snapshot(config, storage, collector, &found.snapshot, found.file_len)?;
        Ok((acc, found))
    }
}
