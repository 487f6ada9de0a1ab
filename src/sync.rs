//! The one place the crate reaches atomics, locks, cells, threads and the
//! epoch collector.
//!
//! In a normal build these are the `std` types. Under `--cfg loom` they are
//! loom's, so the loom models in `loom-tests/` check the very code that
//! ships. Types that loom cannot see through (dashmap's shards, crossbeam's
//! lock-free queue) are wrapped by small internal types elsewhere
//! ([`crate::pidset`], [`Queue`] here) whose loom versions are built from
//! the primitives below.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread::JoinHandle;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicI64, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize,
};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread::{spawn, JoinHandle};

pub(crate) use std::sync::atomic::Ordering;

/// Starts a thread, reporting the operating system's refusal as an error
/// instead of panicking (as `spawn` does).
pub(crate) fn try_spawn<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<JoinHandle<T>> {
    #[cfg(not(loom))]
    {
        std::thread::Builder::new()
            .name("segment-accountant-truncation".into())
            .spawn(f)
    }
    #[cfg(loom)]
    {
        Ok(spawn(f))
    }
}

/// Yields inside spin loops: a CPU hint normally, a scheduling point under
/// loom (a loom model with a spin loop and no yield never terminates).
pub(crate) fn spin_wait() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Locks a mutex, treating poisoning as recoverable: every critical section
/// in this crate leaves its data consistent before anything that can panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    #[cfg(not(loom))]
    {
        m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
    #[cfg(loom)]
    {
        m.lock().unwrap()
    }
}

/// Tries to lock a mutex without blocking.
pub(crate) fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        #[cfg(not(loom))]
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(_) => None,
    }
}

/// An `UnsafeCell` with loom's closure-based access API, so that loom can
/// check that accesses we claim are exclusive really are.
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(
    #[cfg(not(loom))] std::cell::UnsafeCell<T>,
    #[cfg(loom)] loom::cell::UnsafeCell<T>,
);

impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(loom))]
        {
            Self(std::cell::UnsafeCell::new(value))
        }
        #[cfg(loom)]
        {
            Self(loom::cell::UnsafeCell::new(value))
        }
    }

    /// Runs `f` with a mutable pointer to the contents.
    ///
    /// The caller must hold whatever token grants exclusive access.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(not(loom))]
        {
            f(self.0.get())
        }
        #[cfg(loom)]
        {
            self.0.with_mut(f)
        }
    }
}

/// A multi-producer queue: crossbeam's lock-free `SegQueue` normally, a
/// loom-visible locked deque under loom (same contract: push never blocks
/// on another push for long, pop returns items in FIFO order).
pub(crate) struct Queue<T> {
    #[cfg(not(loom))]
    inner: crossbeam_queue::SegQueue<T>,
    #[cfg(loom)]
    inner: Mutex<std::collections::VecDeque<T>>,
}

impl<T> Queue<T> {
    pub(crate) fn new() -> Self {
        Self {
            #[cfg(not(loom))]
            inner: crossbeam_queue::SegQueue::new(),
            #[cfg(loom)]
            inner: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    pub(crate) fn push(&self, value: T) {
        #[cfg(not(loom))]
        self.inner.push(value);
        #[cfg(loom)]
        lock(&self.inner).push_back(value);
    }

    pub(crate) fn pop(&self) -> Option<T> {
        #[cfg(not(loom))]
        {
            self.inner.pop()
        }
        #[cfg(loom)]
        {
            lock(&self.inner).pop_front()
        }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queue")
    }
}

/// Epoch-based reclamation: crossbeam-epoch, which switches to loom itself
/// when built with `--cfg crossbeam_loom` and its `loom` feature.
pub(crate) mod epoch {
    pub(crate) use crossbeam_epoch::{default_collector, pin, Collector, Guard};
}
