//! The accountant's poison flag: internal invariants found broken where no
//! panic may surface.

use crate::core::sync::{lock, AtomicBool, CachePadded, Mutex, Ordering};
use crate::error::{Error, Result};

/// Internal invariants found broken where no panic may surface: inside an
/// epoch-deferred closure (which runs on whatever thread pins next, often a
/// store's reader), or left behind by a panic that unwound out of the
/// combiner. The first one poisons the accountant: every later call that
/// returns a `Result` fails with [`Error::Poisoned`], and `audit` fails.
#[derive(Debug)]
pub(crate) struct Poison {
    /// Read by every call; padded so that the small allocation it lives in
    /// never shares a line with a neighbour on the heap that is written.
    poisoned: CachePadded<AtomicBool>,
    /// The first broken invariant, described.
    first: Mutex<Option<String>>,
}

impl Poison {
    pub(crate) fn new() -> Poison {
        Poison {
            poisoned: CachePadded::new(AtomicBool::new(false)),
            first: Mutex::new(None),
        }
    }

    /// Records a broken invariant (never panics, so it may run anywhere).
    #[cold]
    pub(crate) fn record(&self, what: String) {
        lock(&self.first).get_or_insert(what);
        // Release: a caller that sees the flag (acquire in `check`) finds
        // the description.
        self.poisoned.store(true, Ordering::Release);
    }

    /// `Err(Poisoned)` once an invariant was recorded broken.
    #[inline]
    pub(crate) fn check(&self) -> Result<()> {
        // Acquire: pairs with the release store in `record`.
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.error());
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn error(&self) -> Error {
        Error::Poisoned(lock(&self.first).clone().unwrap_or_default())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::core::layout::{check, field, COLD};

    /// The flag every call reads has its allocation's line to itself.
    #[test]
    fn the_flag_has_a_line_of_its_own() {
        check::<Poison>(&[field!(Poison, poisoned, hot), field!(Poison, first, COLD)]).unwrap();
    }
}
