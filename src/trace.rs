//! The events of the `tracing` feature, in one place: call sites report
//! with [`event!`] and time a recovery phase with [`Phase`], and need no
//! `cfg` of their own. Without the feature [`event!`] expands to an empty
//! block (its arguments are not even evaluated), [`Phase`] is a zero-sized
//! type whose methods do nothing, and [`ENABLED`] is `false`, so code that
//! gathers an event's inputs under `if ENABLED` is removed too: the default
//! build pays nothing, and has no `tracing` dependency.
//!
//! **May use** nothing: a bottom room, like `types` and `error`, so that
//! every room above may report.
//!
//! The events, each named in its metadata (`Metadata::name`), with the
//! target of the module that reports it (`segment_accountant::...`):
//!
//! | name | level | fields | when |
//! |---|---|---|---|
//! | `seal` | DEBUG | `lid`, `lsn`, `live_bytes`, `written_bytes`, `pages` | a `stabilize` made a segment Inactive |
//! | `drain` | DEBUG | `lid`, `lsn`, `reason` (`Policy`, `SpaceTarget`, `TipShrink`, `Idle`), `live_bytes` | a segment started Draining |
//! | `free` | DEBUG | `lid`, `lsn`, `waits_for_stable` | an emptied segment was freed (it reaches the free list after the epoch, and the stable lsn) |
//! | `reuse` | DEBUG | `lid`, `lsn`, `stream` | `next` reused a free segment |
//! | `append` | DEBUG | `lid`, `lsn`, `stream`, `file_bytes` | `next` extended the file |
//! | `truncate` | INFO | `truncations`, `bytes`, `file_bytes` | the combiner pass after `next` shortened the file (bytes returned since the last pass) |
//! | `recovery_phase` | INFO | `phase` (`scan`, `invalidate`, `rebuild`), `elapsed_us`, `items` | a recovery phase ended, inside a `recovery` span of the same `phase` |
//!
//! `items` counts what the phase went through: pages the scan found,
//! headers invalidated and tails completed, segments rebuilt with live
//! pages. An engine with its own scan that calls `from_snapshot` gets the
//! `rebuild` phase.

/// Whether the `tracing` feature is on: inputs gathered only for an event
/// go under `if ENABLED`.
pub(crate) const ENABLED: bool = cfg!(feature = "tracing");

/// `event!(LEVEL, "name", fields..., "message")`: a `tracing` event named
/// `name` at `tracing::Level::LEVEL`, with `tracing`'s field syntax; nothing
/// without the feature.
#[cfg(feature = "tracing")]
macro_rules! event {
    ($level:ident, $name:literal, $($rest:tt)+) => {
        ::tracing::event!(name: $name, ::tracing::Level::$level, $($rest)+)
    };
}

/// `event!(LEVEL, "name", fields..., "message")`: nothing without the
/// `tracing` feature (the arguments are not evaluated).
#[cfg(not(feature = "tracing"))]
macro_rules! event {
    ($($rest:tt)*) => {{}};
}

pub(crate) use event;

/// A recovery phase: a `recovery` span with the phase's name, entered
/// from [`Phase::start`] until [`Phase::end`] reports its duration (or the
/// phase is dropped on an error, which reports nothing).
#[must_use = "a phase reports its duration when ended"]
pub(crate) struct Phase {
    #[cfg(feature = "tracing")]
    span: tracing::span::EnteredSpan,
    #[cfg(feature = "tracing")]
    name: &'static str,
    #[cfg(feature = "tracing")]
    start: std::time::Instant,
}

impl Phase {
    /// Starts phase `name` (`scan`, `invalidate`, `rebuild`).
    #[inline(always)]
    pub(crate) fn start(name: &'static str) -> Phase {
        #[cfg(feature = "tracing")]
        {
            Phase {
                span: tracing::info_span!("recovery", phase = name).entered(),
                name,
                start: std::time::Instant::now(),
            }
        }
        #[cfg(not(feature = "tracing"))]
        {
            let _ = name;
            Phase {}
        }
    }

    /// Ends the phase, which went through `items` things: an event with
    /// its duration, inside its span.
    #[inline(always)]
    pub(crate) fn end(self, items: u64) {
        #[cfg(feature = "tracing")]
        {
            let elapsed_us = self.start.elapsed().as_micros() as u64;
            event!(
                INFO,
                "recovery_phase",
                phase = self.name,
                elapsed_us,
                items,
                "recovery phase done"
            );
            drop(self.span);
        }
        #[cfg(not(feature = "tracing"))]
        {
            let _ = (self, items);
        }
    }
}
