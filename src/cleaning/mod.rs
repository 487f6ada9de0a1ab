//! Cleaning: which segments to drain and in what order, which pages to
//! suggest, and where relocated pages go; with the configuration that
//! tunes it.
//!
//! **Owns** the policies ([`policy`]), the victim index ordering drain
//! candidates, stream placement ([`placement`]) and [`config`]. Pure
//! decisions over plain numbers: nothing here touches an atomic.
//!
//! **May use** [`crate::types`] and [`crate::error`]; never the core,
//! recovery or the facade (the combiner feeds it facts and acts on its
//! answers).

pub mod config;
pub mod placement;
pub mod policy;
pub(crate) mod victims;
