//! Restarting after a crash: the [`Snapshot`] a log scan produces, and the
//! accountant rebuilt from it (the [recovery
//! rules](crate::properties#recovery-rules)).

use std::collections::BTreeMap;

use crate::types::{DiskPtr, Lid, Lsn, PageId};

/// One fragment of a page found in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Fragment {
    /// Where in the logical log it was written.
    pub lsn: Lsn,
    /// Where in the file (and which blob) it lives.
    pub ptr: DiskPtr,
    /// Its size in the log, in bytes.
    pub size: u64,
}

/// A page's state at the end of the scanned log.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PageState {
    /// The page's live fragments (the last full image and any later
    /// deltas), in log order.
    Present(Vec<Fragment>),
    /// The page was freed; its free record (a header-sized fragment) is at
    /// this place in the log.
    Freed(Fragment),
}

impl Fragment {
    /// The fragment of `size` bytes written at `lsn` and stored at `ptr`.
    pub fn new(lsn: Lsn, ptr: DiskPtr, size: u64) -> Fragment {
        Fragment { lsn, ptr, size }
    }
}

impl PageState {
    /// The fragments that hold this state (the free record for a freed
    /// page).
    pub fn fragments(&self) -> &[Fragment] {
        match self {
            PageState::Present(f) => f,
            PageState::Freed(f) => std::slice::from_ref(f),
        }
    }
}

/// What a scan of the log found: the input of
/// [`Accountant::from_snapshot`](crate::Accountant::from_snapshot).
///
/// [`scan`](mod@crate::scan) builds it for the reference format; an engine
/// with its own log format and scan starts from [`Snapshot::empty`] and
/// fills the fields in:
///
/// ```
/// use std::sync::Arc;
/// use segment_accountant::{
///     default_collector, Accountant, Config, DiskPtr, Fragment, MemStorage, PageState, Snapshot,
/// };
///
/// // One segment at lid 0 with lsn 0, holding page 7 (64 bytes at lsn 40),
/// // and no header vouching for anything yet.
/// let mut snapshot = Snapshot::empty();
/// snapshot.pages.insert(7, PageState::Present(vec![Fragment::new(40, DiskPtr::Inline(40), 64)]));
/// snapshot.last_lid = Some(0);
/// snapshot.last_lsn = 104;
///
/// let config = Config::builder().segment_size(4096).build()?;
/// let acc = Accountant::from_snapshot(
///     config,
///     Arc::new(MemStorage::new()),
///     default_collector().clone(),
///     &snapshot,
///     4096, // the file's length
/// )?;
/// assert_eq!(acc.segment_info(0).unwrap().live_pages, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Every page's state.
    pub pages: BTreeMap<PageId, PageState>,
    /// The offset of the segment being written when the log ended (the
    /// last segment the scan accepted), if any.
    pub last_lid: Option<Lid>,
    /// The highest lsn in the accepted log (−1 for an empty log).
    pub last_lsn: Lsn,
    /// The highest stable lsn vouched for by a durable segment header.
    pub max_header_stable_lsn: Lsn,
    /// Where writing resumes inside a segment already in the file, if it
    /// does: `(lid, lsn)`, the segment's base lid and the lsn of the next
    /// write into it (see [`resume_at`](Snapshot::resume_at)). `None`: the
    /// store resumes in a new segment, from [`Accountant::next`](crate::Accountant::next).
    pub resume: Option<(Lid, Lsn)>,
}

impl Snapshot {
    /// An empty log.
    pub fn empty() -> Snapshot {
        Snapshot::new(BTreeMap::new(), None, -1, -1)
    }

    /// A snapshot with the given fields (see each field's documentation).
    pub fn new(
        pages: BTreeMap<PageId, PageState>,
        last_lid: Option<Lid>,
        last_lsn: Lsn,
        max_header_stable_lsn: Lsn,
    ) -> Snapshot {
        Snapshot {
            pages,
            last_lid,
            last_lsn,
            max_header_stable_lsn,
            resume: None,
        }
    }

    /// This snapshot, saying that writing resumes at `lsn` in the segment
    /// whose base lid is `lid`: that segment stays Active at segment lsn
    /// `lsn` rounded down to the segment size, even when it holds no live
    /// fragment (an engine whose last segment holds only its header
    /// resumes writing inside it, with [`mark_link`](crate::Accountant::mark_link)
    /// and no `next`).
    ///
    /// The segment must lie below the file's tip, `lid` must be a multiple
    /// of the segment size, and `lsn` must lie beyond the log's last lsn
    /// (so beyond the header-vouched stable lsn); the segment's fragments
    /// (if any) must carry its segment lsn. The
    /// reference [`scan`](mod@crate::scan) does not set it:
    /// [`recover`](crate::Accountant::recover) completes a partly written
    /// last segment with a pad and writing resumes in a new segment.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use segment_accountant::{default_collector, Accountant, Config, DiskPtr, MemStorage, SegmentState, Snapshot};
    ///
    /// // The last segment (lid 4096, lsn 8192) holds only a 20-byte header.
    /// let snapshot = Snapshot::new(Default::default(), Some(4096), 8192 + 19, -1)
    ///     .resume_at(4096, 8192 + 20);
    /// let config = Config::builder().segment_size(4096).build()?;
    /// let acc = Accountant::from_snapshot(
    ///     config, Arc::new(MemStorage::new()), default_collector().clone(), &snapshot, 4096 + 20,
    /// )?;
    /// assert_eq!(acc.segment_info(1).unwrap().state, SegmentState::Active);
    /// acc.mark_link(7, 8192 + 20, DiskPtr::Inline(4096 + 20), 64)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resume_at(mut self, lid: Lid, lsn: Lsn) -> Snapshot {
        self.resume = Some((lid, lsn));
        self
    }
}

/// Why a snapshot was rejected: it contradicts itself or the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A fragment lies at or beyond the file's tip.
    #[error("page {pid} has a fragment at lid {lid}, at or beyond the file tip ({tip} bytes)")]
    FragmentBeyondTip {
        /// The page.
        pid: PageId,
        /// The fragment's lid.
        lid: Lid,
        /// The tip in bytes.
        tip: u64,
    },
    /// A fragment has a negative lsn or one too large for the accountant.
    #[error("page {pid} has a fragment at invalid lsn {lsn}")]
    InvalidLsn {
        /// The page.
        pid: PageId,
        /// The lsn.
        lsn: Lsn,
    },
    /// A fragment's size is beyond anything a fragment can be (2^32
    /// bytes): the live-byte sums would overflow.
    #[error("page {pid} has a fragment of {size} bytes, beyond the largest fragment size {max}")]
    FragmentTooLarge {
        /// The page.
        pid: PageId,
        /// The fragment's size.
        size: u64,
        /// The largest accepted size.
        max: u64,
    },
    /// Two fragments in one segment belong to different segment lsns.
    #[error(
        "segment at lid {lid} holds fragments of segment lsns {first} and {second} (page {pid})"
    )]
    MixedSegmentLsns {
        /// The segment's base lid.
        lid: Lid,
        /// The segment lsn seen first.
        first: Lsn,
        /// The conflicting segment lsn.
        second: Lsn,
        /// The page of the conflicting fragment.
        pid: PageId,
    },
    /// Two segments carry one lsn.
    #[error("segments at lids {first} and {second} both have segment lsn {lsn}")]
    DuplicateSegmentLsn {
        /// The shared segment lsn.
        lsn: Lsn,
        /// One segment's lid.
        first: Lid,
        /// The other's.
        second: Lid,
    },
    /// A header vouches for a stable lsn beyond the end of the log (a
    /// header only vouches for the log before its own segment).
    #[error("the header-vouched stable lsn {stable} lies beyond the log's last lsn {last_lsn}")]
    StableBeyondLog {
        /// The vouched stable lsn.
        stable: Lsn,
        /// The last lsn of the log.
        last_lsn: Lsn,
    },
    /// The segment said to be written last lies beyond the file.
    #[error("the last segment written, at lid {lid}, is at or beyond the file tip ({tip} bytes)")]
    LastSegmentBeyondTip {
        /// Its lid.
        lid: Lid,
        /// The tip in bytes.
        tip: u64,
    },
    /// The segment writing resumes in ([`Snapshot::resume`]) is not one
    /// writing can resume in.
    #[error("writing cannot resume at lsn {lsn} in the segment at lid {lid}: {reason}")]
    InvalidResume {
        /// The segment's lid, as given.
        lid: Lid,
        /// The resume lsn, as given.
        lsn: Lsn,
        /// Why.
        reason: ResumeRefusal,
    },
}

/// Why [`Snapshot::resume`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeRefusal {
    /// The lid is not a multiple of the segment size.
    #[error("the lid is not a segment's base")]
    UnalignedLid,
    /// The segment is at or beyond the file's tip.
    #[error("the segment is at or beyond the file tip ({tip} bytes)")]
    BeyondTip {
        /// The tip in bytes.
        tip: u64,
    },
    /// The lsn is negative or beyond the accountant's range.
    #[error("the lsn is out of range")]
    LsnOutOfRange,
    /// The lsn is not beyond the log's last lsn.
    #[error("the lsn is not beyond the log's last lsn {last_lsn}")]
    NotBeyondLog {
        /// The snapshot's last lsn.
        last_lsn: Lsn,
    },
}

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
        use crate::segment::{SegmentState, Word};
        use crate::table::{Bits, SegmentTable};

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
                if fragment.lsn < 0 || fragment.lsn as u64 / ss > crate::segment::MAX_SEGMENT_NUMBER
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
            if lsn < 0 || lsn as u64 / ss > crate::segment::MAX_SEGMENT_NUMBER {
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
            (snapshot.max_header_stable_lsn as u64 / ss).min(crate::segment::MAX_SEGMENT_NUMBER + 1)
        } else {
            0
        };
        let table = SegmentTable::new();
        table.grow_to(tip as usize);
        let mut active = Vec::new();
        let mut waiting = Vec::new();
        let mut counts = [0usize; 3]; // active, inactive, draining
        let mut cleaning = crate::combiner::Cleaning::new(ss);
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
                SegmentState::Inactive => cleaning.victims.upsert(index, seg.segno, seg.bytes),
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
                crate::combiner::fill_drain_list(&table, index);
            }
        }
        let combiner =
            crate::combiner::Combiner::recovered(done, active.clone(), waiting, cleaning);
        let acc = crate::Accountant::assemble(
            config,
            storage,
            collector,
            table,
            tip as usize,
            combiner,
            max_stabilized,
        );
        for &(segno, _) in &active {
            acc.shared.active_lsns.insert_new(segno);
        }
        acc.shared.counts.set(counts[0], counts[1], counts[2]);
        Ok(acc)
    }
}

/// Why [`Accountant::recover`](crate::Accountant::recover) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    /// The scan failed (I/O, or durable data damaged).
    #[error(transparent)]
    Scan(#[from] crate::scan::ScanError),
    /// Invalidating the discarded tail (or completing the last segment)
    /// failed; nothing was rebuilt and recovering again is safe.
    #[error("invalidating the discarded tail failed: {0}")]
    Invalidate(#[source] std::io::Error),
    /// The accountant rejected the snapshot.
    #[error(transparent)]
    Accountant(#[from] crate::Error),
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
    ) -> Result<(crate::Accountant, crate::scan::Scan), RecoverError> {
        let ss = config.segment_size;
        let found = crate::scan::scan(&*storage, ss)?;
        if !found.discarded.is_empty() || found.open_tail.is_some() {
            for &lid in &found.discarded {
                crate::format::invalidate_header(
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
                crate::format::seal_segment(&*storage, tail.lid, ss, tail.lsn, tail.salt, tail.end)
                    .map_err(RecoverError::Invalidate)?;
            }
            if !config.temporary {
                storage.sync().map_err(RecoverError::Invalidate)?;
            }
        }
        // An `Arc` of a log file is the accountant's storage (no trait
        // upcasting needed).
        let storage: std::sync::Arc<dyn crate::Storage> = std::sync::Arc::new(storage);
        let acc = Self::from_snapshot(config, storage, collector, &found.snapshot, found.file_len)?;
        Ok((acc, found))
    }
}
