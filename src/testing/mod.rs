//! Test and benchmark support, outside the stable surface (the `testing`
//! feature): the sequential reference [`model`], the single-mutex
//! [`baseline`] and the crash-simulating [`fault`] storage.
//!
//! **May use** anything in the crate; nothing shipped uses it.

pub mod baseline;
pub mod fault;
pub mod model;
