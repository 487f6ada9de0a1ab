//! A fault-injecting in-memory [`Storage`] for crash tests: a durable image
//! plus a volatile cache of unsynced writes and length changes (feature
//! `testing`). A store built on the accountant can use it to test its own
//! recovery, as the crate's crash simulation does.
//!
//! - a crash can be scheduled at the n-th following write or sync; after
//!   it every call fails;
//! - the crashing write may be torn: a random prefix of it persists;
//! - at a crash, each unsynced operation is independently lost or kept, so
//!   a later unsynced write may persist while an earlier one is lost;
//! - I/O errors can be returned on demand;
//! - `remove_blob`, `set_len` and `sync` can be made to panic on demand (a
//!   store's I/O layer that turns ENOSPC into a panic, a buggy blob
//!   deleter), to show the accountant contains such panics.
//!
//! All randomness comes from a seed, so a failing run can be replayed.
//!
//! ```
//! use segment_accountant::{fault::FaultStorage, LogFile, Storage};
//! let s = FaultStorage::restart(Vec::new(), 7);
//! s.write_at(0, b"durable").unwrap();
//! s.sync().unwrap();
//! s.write_at(0, b"maybe").unwrap();
//! let image = s.crash_image();
//! assert!(image.starts_with(b"durable") || image.starts_with(b"maybele"));
//! ```

use std::collections::HashSet;
use std::io;
use std::sync::Mutex;

use crate::storage::{LogFile, Storage};
use crate::types::BlobId;

#[derive(Clone, Debug)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug)]
struct State {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<Pending>,
    rng: u64,
    /// Writes and syncs left before the scheduled crash.
    crash_in: Option<u64>,
    crashed: bool,
    /// The image fixed at the crash.
    image: Option<Vec<u8>>,
    fail_write: u32,
    fail_sync: u32,
    fail_set_len: u32,
    panic_remove_blob: u32,
    panic_set_len: u32,
    panic_sync: u32,
    /// The next read covering this byte fails.
    fail_read_at: Option<u64>,
    /// The next read covering this byte panics.
    panic_read_at: Option<u64>,
    writes: u64,
    syncs: u64,
    blobs: HashSet<BlobId>,
}

/// The fault-injecting storage.
#[derive(Debug)]
pub struct FaultStorage {
    state: Mutex<State>,
}

fn crashed() -> io::Error {
    io::Error::other("storage crashed")
}

/// Counts one injected event down; true if one was due.
fn take(counter: &mut u32) -> bool {
    let due = *counter > 0;
    *counter = counter.saturating_sub(1);
    due
}

fn apply(image: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::Write { offset, data } => {
            let end = *offset as usize + data.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[*offset as usize..end].copy_from_slice(data);
        }
        Pending::SetLen(len) => image.resize(*len as usize, 0),
    }
}

impl State {
    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// The image a crash now leaves: durable state plus a random subset of
    /// the unsynced operations, in order.
    fn crash(&mut self, torn: Option<Pending>) {
        let mut image = self.durable.clone();
        let pending = std::mem::take(&mut self.pending);
        for op in &pending {
            if self.rand() % 2 == 0 {
                apply(&mut image, op);
            }
        }
        if let Some(Pending::Write { offset, data }) = torn {
            let keep = (self.rand() % (data.len() as u64 + 1)) as usize;
            apply(
                &mut image,
                &Pending::Write {
                    offset,
                    data: data[..keep].to_vec(),
                },
            );
        }
        self.crashed = true;
        self.image = Some(image);
    }

    /// Counts an I/O; true if it is the one that crashes.
    fn tick(&mut self) -> bool {
        match self.crash_in {
            Some(0) | Some(1) => {
                self.crash_in = None;
                true
            }
            Some(n) => {
                self.crash_in = Some(n - 1);
                false
            }
            None => false,
        }
    }
}

impl FaultStorage {
    /// A storage whose durable content is `image`, with randomness from
    /// `seed`.
    pub fn restart(image: Vec<u8>, seed: u64) -> FaultStorage {
        FaultStorage {
            state: Mutex::new(State {
                current: image.clone(),
                durable: image,
                pending: Vec::new(),
                rng: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
                crash_in: None,
                crashed: false,
                image: None,
                fail_write: 0,
                fail_sync: 0,
                fail_set_len: 0,
                panic_remove_blob: 0,
                panic_set_len: 0,
                panic_sync: 0,
                fail_read_at: None,
                panic_read_at: None,
                writes: 0,
                syncs: 0,
                blobs: HashSet::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Crashes at the `n`-th write or sync from now (`n = 0` or 1: the
    /// next one). A crashing write may be torn.
    pub fn crash_after(&self, n: u64) {
        self.lock().crash_in = Some(n);
    }

    /// Whether the storage has crashed.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// What survives: the image fixed at the crash, or, if there was none
    /// yet, the image a crash right now would leave.
    pub fn crash_image(&self) -> Vec<u8> {
        let mut s = self.lock();
        if s.image.is_none() {
            s.crash(None);
        }
        s.image.clone().expect("crash image")
    }

    /// The next write fails with an I/O error (nothing written).
    pub fn fail_next_write(&self) {
        self.lock().fail_write += 1;
    }

    /// The next sync fails with an I/O error (nothing made durable).
    pub fn fail_next_sync(&self) {
        self.lock().fail_sync += 1;
    }

    /// The next set_len fails with an I/O error.
    pub fn fail_next_set_len(&self) {
        self.lock().fail_set_len += 1;
    }

    /// The next `remove_blob` panics (after releasing the storage's lock;
    /// the blob stays).
    pub fn panic_next_remove_blob(&self) {
        self.lock().panic_remove_blob += 1;
    }

    /// The next `set_len` panics (nothing changed).
    pub fn panic_next_set_len(&self) {
        self.lock().panic_set_len += 1;
    }

    /// The next `sync` panics (nothing made durable).
    pub fn panic_next_sync(&self) {
        self.lock().panic_sync += 1;
    }

    /// The next read that covers byte `offset` fails with an I/O error
    /// (nothing read).
    pub fn fail_read_at(&self, offset: u64) {
        self.lock().fail_read_at = Some(offset);
    }

    /// The next read that covers byte `offset` panics (nothing read).
    pub fn panic_read_at(&self, offset: u64) {
        self.lock().panic_read_at = Some(offset);
    }

    /// Writes and syncs done so far.
    pub fn io_count(&self) -> (u64, u64) {
        let s = self.lock();
        (s.writes, s.syncs)
    }

    /// Records that a blob exists.
    pub fn add_blob(&self, blob: BlobId) {
        self.lock().blobs.insert(blob);
    }

    /// Whether a blob exists.
    pub fn has_blob(&self, blob: BlobId) -> bool {
        self.lock().blobs.contains(&blob)
    }
}

impl Storage for FaultStorage {
    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.lock();
        if s.crashed {
            return Err(crashed());
        }
        if take(&mut s.panic_set_len) {
            drop(s);
            panic!("injected panic in set_len");
        }
        if s.fail_set_len > 0 {
            s.fail_set_len -= 1;
            return Err(io::Error::other("injected set_len error"));
        }
        if len >= 1 << 40 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "length out of range",
            ));
        }
        let op = Pending::SetLen(len);
        apply(&mut s.current, &op);
        s.pending.push(op);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let s = self.lock();
        if s.crashed {
            return Err(crashed());
        }
        Ok(s.current.len() as u64)
    }

    fn sync(&self) -> io::Result<()> {
        let mut s = self.lock();
        if s.crashed {
            return Err(crashed());
        }
        if take(&mut s.panic_sync) {
            drop(s);
            panic!("injected panic in sync");
        }
        if s.fail_sync > 0 {
            s.fail_sync -= 1;
            return Err(io::Error::other("injected sync error"));
        }
        s.syncs += 1;
        if s.tick() {
            s.crash(None);
            return Err(crashed());
        }
        s.durable = s.current.clone();
        s.pending.clear();
        Ok(())
    }

    fn remove_blob(&self, blob: BlobId) -> io::Result<()> {
        let mut s = self.lock();
        if s.crashed {
            return Err(crashed());
        }
        if take(&mut s.panic_remove_blob) {
            drop(s);
            panic!("injected panic in remove_blob({blob})");
        }
        s.blobs.remove(&blob);
        Ok(())
    }
}

impl LogFile for FaultStorage {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut s = self.lock();
        if s.crashed {
            return Err(crashed());
        }
        if s.fail_write > 0 {
            s.fail_write -= 1;
            return Err(io::Error::other("injected write error"));
        }
        offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end < (1 << 40))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset out of range"))?;
        s.writes += 1;
        let op = Pending::Write {
            offset,
            data: buf.to_vec(),
        };
        if s.tick() {
            s.crash(Some(op));
            return Err(crashed());
        }
        apply(&mut s.current, &op);
        s.pending.push(op);
        Ok(())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut s = self.lock();
        if s.crashed {
            return Err(crashed());
        }
        let covers = |at: Option<u64>| {
            at.is_some_and(|at| (offset..offset + buf.len() as u64).contains(&at))
        };
        if covers(s.panic_read_at) {
            s.panic_read_at = None;
            drop(s);
            panic!("injected panic in read_at");
        }
        if covers(s.fail_read_at) {
            s.fail_read_at = None;
            return Err(io::Error::other("injected read error"));
        }
        let end = offset as usize + buf.len();
        if end > s.current.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end",
            ));
        }
        buf.copy_from_slice(&s.current[offset as usize..end]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_data_survives_and_unsynced_may_not() {
        let mut lost = 0;
        let mut kept = 0;
        for seed in 0..64 {
            let s = FaultStorage::restart(Vec::new(), seed);
            s.write_at(0, &[1; 8]).unwrap();
            s.sync().unwrap();
            s.write_at(8, &[2; 8]).unwrap();
            s.write_at(16, &[3; 8]).unwrap();
            let image = s.crash_image();
            assert_eq!(&image[..8], &[1; 8]);
            if image.len() >= 24 && image[16..24] == [3; 8] {
                kept += 1;
                if image[8..16] != [2; 8] {
                    lost += 1; // a later write kept, an earlier one lost
                }
            }
            assert!(s.write_at(0, &[0]).is_err(), "calls fail after a crash");
        }
        assert!(kept > 0 && lost > 0);
    }

    #[test]
    fn torn_writes_keep_a_prefix() {
        let mut lens = HashSet::new();
        for seed in 0..64 {
            let s = FaultStorage::restart(vec![9; 16], seed);
            s.crash_after(1);
            assert!(s.write_at(0, &[5; 16]).is_err());
            let image = s.crash_image();
            let prefix = image.iter().take_while(|&&b| b == 5).count();
            assert!(image[prefix..].iter().all(|&b| b == 9));
            lens.insert(prefix);
        }
        assert!(lens.len() > 4, "tears at many lengths");
    }

    #[test]
    fn errors_on_demand() {
        let s = FaultStorage::restart(Vec::new(), 1);
        s.fail_next_write();
        assert!(s.write_at(0, b"x").is_err());
        s.write_at(0, b"x").unwrap();
        s.fail_next_sync();
        assert!(s.sync().is_err());
        s.fail_next_set_len();
        assert!(s.set_len(0).is_err());
        assert!(!s.crashed());
    }
}
