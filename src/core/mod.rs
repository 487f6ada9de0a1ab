//! The lock-free core: the per-segment state word and page maps, the
//! segment table, the free bitmap with its epoch-deferred frees, the
//! sequencer that grows and truncates the file, and the poison flag.
//!
//! **Owns** every atomic a writer touches. Everything here reaches atomics
//! and locks through [`sync`], the one shim loom replaces.
//!
//! **May use** the shared vocabulary below it ([`crate::types`],
//! [`crate::error`], [`crate::storage`]); never cleaning, recovery or the
//! facade. Each part says which protocol it takes part in
//! (`docs/protocols/`).

pub(crate) mod blocks;
pub(crate) mod freelist;
#[cfg(all(test, not(loom)))]
pub(crate) mod layout;
pub(crate) mod pidset;
pub(crate) mod poison;
pub(crate) mod segment;
pub(crate) mod sequencer;
#[cfg(sharing_audit)]
pub(crate) mod sharing;
pub(crate) mod sync;
pub(crate) mod table;
