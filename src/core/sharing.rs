//! The sharing audit (`--cfg sharing_audit`, a test-only build): the
//! [`sync`](super::sync) shim's atomics and mutexes, and the page maps' shard
//! locks, report every write (a store, a read-modify-write, a lock taken,
//! even a failed compare-and-swap: each takes the line exclusive) to a
//! per-thread log while recording is on. A test then asks, per public
//! operation, which cache lines it wrote and who else writes them (the
//! accountant's tests, `sharing_audit` module; docs/performance.md has the
//! table).
//!
//! Only writes through the crate's own primitives are seen: crossbeam-epoch
//! (its per-thread participant; the global epoch on a collection) and
//! arc-swap (per-thread debt slots) are outside, and the crossbeam queue is
//! reported as one write to the queue itself.

use std::cell::{Cell, RefCell};

pub(crate) use std::sync::atomic::Ordering;

/// The unit of sharing: crossbeam's `CachePadded` alignment on x86_64
/// (the adjacent-line prefetcher pairs 64-byte lines).
// Used by the audit's test only.
#[allow(dead_code)]
pub(crate) const LINE: usize = 128;

thread_local! {
    static RECORDING: Cell<bool> = const { Cell::new(false) };
    static LOG: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Notes a write to the memory at `at` (when this thread records).
#[inline]
pub(crate) fn wrote<T: ?Sized>(at: *const T) {
    if RECORDING.with(Cell::get) {
        LOG.with(|log| log.borrow_mut().push(at as *const u8 as usize));
    }
}

/// Runs `f` with recording on and returns its result and the addresses it
/// wrote, in order (repeats included).
// Used by the audit's test only.
#[allow(dead_code)]
pub(crate) fn record<R>(f: impl FnOnce() -> R) -> (R, Vec<usize>) {
    LOG.with(|log| log.borrow_mut().clear());
    RECORDING.with(|r| r.set(true));
    let result = f();
    RECORDING.with(|r| r.set(false));
    (
        result,
        LOG.with(|log| std::mem::take(&mut *log.borrow_mut())),
    )
}

macro_rules! counted_atomic {
    ($name:ident, $t:ty) => {
        /// The `std` atomic, reporting its writes to the audit.
        #[derive(Debug, Default)]
        #[repr(transparent)]
        pub(crate) struct $name(std::sync::atomic::$name);

        #[allow(dead_code)]
        impl $name {
            pub(crate) const fn new(v: $t) -> Self {
                Self(std::sync::atomic::$name::new(v))
            }
            pub(crate) fn load(&self, o: Ordering) -> $t {
                self.0.load(o)
            }
            pub(crate) fn store(&self, v: $t, o: Ordering) {
                wrote(self);
                self.0.store(v, o)
            }
            pub(crate) fn swap(&self, v: $t, o: Ordering) -> $t {
                wrote(self);
                self.0.swap(v, o)
            }
            pub(crate) fn compare_exchange(
                &self,
                current: $t,
                new: $t,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$t, $t> {
                wrote(self);
                self.0.compare_exchange(current, new, success, failure)
            }
            pub(crate) fn compare_exchange_weak(
                &self,
                current: $t,
                new: $t,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$t, $t> {
                wrote(self);
                self.0.compare_exchange_weak(current, new, success, failure)
            }
            pub(crate) fn get_mut(&mut self) -> &mut $t {
                self.0.get_mut()
            }
            pub(crate) fn into_inner(self) -> $t {
                self.0.into_inner()
            }
        }
    };
}

macro_rules! counted_integer {
    ($name:ident, $t:ty) => {
        counted_atomic!($name, $t);

        #[allow(dead_code)]
        impl $name {
            pub(crate) fn fetch_add(&self, v: $t, o: Ordering) -> $t {
                wrote(self);
                self.0.fetch_add(v, o)
            }
            pub(crate) fn fetch_sub(&self, v: $t, o: Ordering) -> $t {
                wrote(self);
                self.0.fetch_sub(v, o)
            }
            pub(crate) fn fetch_or(&self, v: $t, o: Ordering) -> $t {
                wrote(self);
                self.0.fetch_or(v, o)
            }
            pub(crate) fn fetch_and(&self, v: $t, o: Ordering) -> $t {
                wrote(self);
                self.0.fetch_and(v, o)
            }
            pub(crate) fn fetch_max(&self, v: $t, o: Ordering) -> $t {
                wrote(self);
                self.0.fetch_max(v, o)
            }
        }
    };
}

counted_atomic!(AtomicBool, bool);
counted_integer!(AtomicU8, u8);
counted_integer!(AtomicI64, i64);
counted_integer!(AtomicU64, u64);
counted_integer!(AtomicUsize, usize);

/// The `std` atomic pointer, reporting its writes to the audit.
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct AtomicPtr<T>(std::sync::atomic::AtomicPtr<T>);

#[allow(dead_code)]
impl<T> AtomicPtr<T> {
    pub(crate) const fn new(p: *mut T) -> Self {
        Self(std::sync::atomic::AtomicPtr::new(p))
    }
    pub(crate) fn load(&self, o: Ordering) -> *mut T {
        self.0.load(o)
    }
    pub(crate) fn store(&self, p: *mut T, o: Ordering) {
        wrote(self);
        self.0.store(p, o)
    }
    pub(crate) fn swap(&self, p: *mut T, o: Ordering) -> *mut T {
        wrote(self);
        self.0.swap(p, o)
    }
    pub(crate) fn compare_exchange(
        &self,
        current: *mut T,
        new: *mut T,
        success: Ordering,
        failure: Ordering,
    ) -> Result<*mut T, *mut T> {
        wrote(self);
        self.0.compare_exchange(current, new, success, failure)
    }
    pub(crate) fn get_mut(&mut self) -> &mut *mut T {
        self.0.get_mut()
    }
}

/// The read/write lock of a normal build (dashmap's), reporting each lock
/// taken, read or write (either writes the lock word).
#[derive(Debug, Default)]
pub(crate) struct RwLock<T>(dashmap::RwLock<T>);

pub(crate) use dashmap::{RwLockReadGuard, RwLockWriteGuard};

#[allow(dead_code)]
impl<T> RwLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(dashmap::RwLock::new(value))
    }
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
        wrote(self);
        self.0.read()
    }
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
        wrote(self);
        self.0.write()
    }
}

/// The `std` mutex, reporting each lock taken (the lock word is written).
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

pub(crate) use std::sync::MutexGuard;

#[allow(dead_code)]
impl<T> Mutex<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::sync::Mutex::new(value))
    }
    pub(crate) fn lock(&self) -> std::sync::LockResult<MutexGuard<'_, T>> {
        wrote(self);
        self.0.lock()
    }
    pub(crate) fn try_lock(&self) -> std::sync::TryLockResult<MutexGuard<'_, T>> {
        wrote(self);
        self.0.try_lock()
    }
    pub(crate) fn get_mut(&mut self) -> std::sync::LockResult<&mut T> {
        self.0.get_mut()
    }
    pub(crate) fn into_inner(self) -> std::sync::LockResult<T> {
        self.0.into_inner()
    }
}
