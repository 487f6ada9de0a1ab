//! Helpers shared by the integration tests: a storage whose `sync` or
//! `remove_blob` can be held on a latch (or made to fail), and running a
//! call with a deadline so that a blocked call fails the test instead of
//! hanging it.

#![allow(dead_code)]

use std::io;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::{Duration, Instant};

use segment_accountant::{BlobId, LogFile, MemStorage, Storage};

/// A gate threads wait at while it is closed.
#[derive(Default)]
pub struct Latch {
    closed: Mutex<bool>,
    opened: Condvar,
    waiting: AtomicUsize,
}

impl Latch {
    pub fn close(&self) {
        *self.closed.lock().unwrap() = true;
    }

    pub fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.opened.notify_all();
    }

    /// Waits while the latch is closed.
    pub fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        if *closed {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while *closed {
                closed = self.opened.wait(closed).unwrap();
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// How many threads are held at the latch now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Waits (at most 60 s: generous, so a loaded machine never trips it)
    /// until `n` threads are held at the latch.
    pub fn await_waiting(&self, n: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.waiting() < n {
            assert!(Instant::now() < deadline, "{what} never reached the latch");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A guard that opens the latch when dropped, so that a failing test
    /// never leaves a thread (or the accountant's drop) blocked on it.
    pub fn open_on_drop(&self) -> OpenOnDrop<'_> {
        OpenOnDrop(self)
    }
}

pub struct OpenOnDrop<'a>(&'a Latch);

impl Drop for OpenOnDrop<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// [`MemStorage`] whose `sync` and `remove_blob` wait at latches, and whose
/// `set_len` and `sync` can be made to fail a given number of times.
#[derive(Default)]
pub struct LatchedStorage {
    pub inner: MemStorage,
    pub sync_latch: Latch,
    pub blob_latch: Latch,
    pub fail_set_len: AtomicU32,
    pub fail_sync: AtomicU32,
}

fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Storage for LatchedStorage {
    fn set_len(&self, len: u64) -> io::Result<()> {
        if take_one(&self.fail_set_len) {
            return Err(io::Error::other("injected set_len failure"));
        }
        self.inner.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn sync(&self) -> io::Result<()> {
        self.sync_latch.pass();
        if take_one(&self.fail_sync) {
            return Err(io::Error::other("injected sync failure"));
        }
        self.inner.sync()
    }

    fn remove_blob(&self, blob: BlobId) -> io::Result<()> {
        self.blob_latch.pass();
        self.inner.remove_blob(blob)
    }
}

impl LogFile for LatchedStorage {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, buf)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(offset, buf)
    }
}

/// Runs `f` on its own thread and returns its result; fails the test if it
/// has not returned within `limit` (it is blocked), and re-raises its
/// panic if it panicked.
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => {
            handle.join().unwrap();
            value
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(handle.join().unwrap_err())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not complete within {limit:?}: it is blocked")
        }
    }
}

/// Silences the default panic message of the panics these tests inject
/// (their messages start with "injected"), keeping real failures loud.
pub fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !message.starts_with("injected") {
                default(info);
            }
        }));
    });
}
