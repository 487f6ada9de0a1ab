//! Configuration, built and validated once.

use std::sync::Arc;

use crate::cleaning::policy::{CleaningPolicy, Spec};
pub use crate::error::ConfigError;

/// The smallest segment size accepted in production.
pub const MIN_SEGMENT_SIZE: u64 = 4096;

/// The smallest segment size accepted with
/// [`ConfigBuilder::allow_small_segments`] (for tests and simulations).
pub const MIN_TEST_SEGMENT_SIZE: u64 = 64;

/// How segments are reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Segments are cleaned and reused; the file can shrink.
    #[default]
    Gc,
    /// Segments are never reused: every `next` extends the file, as if
    /// rewriting were paused for good.
    Linear,
}

/// A validated configuration. Build one with [`Config::builder`].
///
/// ```
/// use segment_accountant::{Config, Mode};
/// let config = Config::builder().segment_size(1 << 20).cleanup_threshold(40).build()?;
/// assert_eq!(config.segment_size(), 1 << 20);
/// assert_eq!(config.mode(), Mode::Gc);
/// # Ok::<(), segment_accountant::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) segment_size: u64,
    pub(crate) cleanup_threshold: u8,
    pub(crate) skew: u8,
    pub(crate) mode: Mode,
    pub(crate) temporary: bool,
    pub(crate) policy: Arc<dyn CleaningPolicy>,
    pub(crate) space_target: Option<f64>,
    pub(crate) user_streams: u8,
    pub(crate) relocation_streams: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            segment_size: 1 << 20,
            cleanup_threshold: 40,
            skew: 10,
            mode: Mode::Gc,
            temporary: false,
            policy: Arc::new(Spec),
            space_target: None,
            user_streams: 1,
            relocation_streams: 0,
        }
    }
}

impl Config {
    /// A builder starting from the defaults: 1 MiB segments, threshold
    /// 40%, skew 10 points, [`Mode::Gc`], durable, the [`Spec`] cleaning
    /// policy, no space target.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config::default(),
            allow_small: false,
        }
    }

    /// The size of one segment in bytes (a power of two).
    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// The live share (percent) at or below which a segment is drained.
    pub fn cleanup_threshold(&self) -> u8 {
        self.cleanup_threshold
    }

    /// Percentage points added to the threshold of low-offset segments.
    pub fn skew(&self) -> u8 {
        self.skew
    }

    /// Whether segments are reused.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether syncs are skipped (for temporary stores).
    pub fn temporary(&self) -> bool {
        self.temporary
    }

    /// The cleaning policy.
    pub fn policy(&self) -> &dyn CleaningPolicy {
        &*self.policy
    }

    /// The bound on file bytes over live bytes, if any.
    pub fn space_target(&self) -> Option<f64> {
        self.space_target
    }

    /// `(user streams, relocation streams)`; see [`crate::placement`].
    pub fn streams(&self) -> (u8, u8) {
        (self.user_streams, self.relocation_streams)
    }

    /// How many write heads the store may use: streams `0..stream_count()`.
    pub fn stream_count(&self) -> u8 {
        self.user_streams + self.relocation_streams
    }
}

/// Builds a [`Config`], validating every value in [`ConfigBuilder::build`].
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    config: Config,
    allow_small: bool,
}

impl ConfigBuilder {
    /// Segment size in bytes: a power of two, at least 4 KiB unless
    /// [`allow_small_segments`](Self::allow_small_segments) is set.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.config.segment_size = bytes;
        self
    }

    /// Accept segments down to 64 bytes, for tests and simulations.
    pub fn allow_small_segments(mut self, allow: bool) -> Self {
        self.allow_small = allow;
        self
    }

    /// Cleanup threshold in percent (1..=99, default 40).
    pub fn cleanup_threshold(mut self, percent: u8) -> Self {
        self.config.cleanup_threshold = percent;
        self
    }

    /// Skew in percentage points (0..=100, default 10).
    pub fn skew(mut self, points: u8) -> Self {
        self.config.skew = points;
        self
    }

    /// Reuse mode (default [`Mode::Gc`]).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.config.mode = mode;
        self
    }

    /// The cleaning policy (default [`Spec`]); see [`crate::policy`].
    pub fn policy(mut self, policy: impl CleaningPolicy + 'static) -> Self {
        self.config.policy = Arc::new(policy);
        self
    }

    /// The cleaning policy, shared (as [`crate::policy::by_name`] returns it).
    pub fn policy_arc(mut self, policy: Arc<dyn CleaningPolicy>) -> Self {
        self.config.policy = policy;
        self
    }

    /// Bound the file to `ratio` × the live bytes of sealed segments (for
    /// instance 1.25; above 1), plus the segments in flight (Active,
    /// Draining, Freeing, and one in reserve). When the file would exceed
    /// it, the accountant drains the policy's best victims until it fits;
    /// free holes left below the tip are reused by `next` (lowest first),
    /// so the tip comes down as writes go on. Default: none (the policy's
    /// own rule alone decides).
    pub fn space_target(mut self, ratio: Option<f64>) -> Self {
        self.config.space_target = ratio;
        self
    }

    /// Write heads (default 1 user stream, 0 relocation streams): user
    /// writes are spread over `user` streams by the lifetime of the
    /// version they replace, relocated pages over `relocation` streams by
    /// how many cleanings they survived (0: with the user writes). See
    /// [`crate::placement`].
    pub fn streams(mut self, user: u8, relocation: u8) -> Self {
        self.config.user_streams = user;
        self.config.relocation_streams = relocation;
        self
    }

    /// Skip syncs (default false).
    pub fn temporary(mut self, temporary: bool) -> Self {
        self.config.temporary = temporary;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        let c = self.config;
        if !c.segment_size.is_power_of_two() {
            return Err(ConfigError::SegmentSizeNotPowerOfTwo(c.segment_size));
        }
        let min = if self.allow_small {
            MIN_TEST_SEGMENT_SIZE
        } else {
            MIN_SEGMENT_SIZE
        };
        if c.segment_size < min {
            return Err(ConfigError::SegmentSizeTooSmall {
                size: c.segment_size,
                min,
            });
        }
        if !(1..=99).contains(&c.cleanup_threshold) {
            return Err(ConfigError::CleanupThreshold(c.cleanup_threshold));
        }
        if c.skew > 100 {
            return Err(ConfigError::Skew(c.skew));
        }
        let max = crate::cleaning::placement::MAX_STREAMS;
        if !(1..=max).contains(&c.user_streams) || c.relocation_streams > max {
            return Err(ConfigError::Streams {
                user: c.user_streams,
                relocation: c.relocation_streams,
            });
        }
        match c.space_target {
            Some(t) if !(t.is_finite() && t > 1.0) => return Err(ConfigError::SpaceTarget(t)),
            None if !c.policy.cleans_without_target() && c.mode == Mode::Gc => {
                return Err(ConfigError::PolicyNeedsSpaceTarget(
                    c.policy.name().to_owned(),
                ))
            }
            _ => {}
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_each_bad_value() {
        let b = Config::builder;
        assert_eq!(
            b().segment_size(3000).build().unwrap_err(),
            ConfigError::SegmentSizeNotPowerOfTwo(3000)
        );
        assert_eq!(
            b().segment_size(1024).build().unwrap_err(),
            ConfigError::SegmentSizeTooSmall {
                size: 1024,
                min: 4096
            }
        );
        assert!(b()
            .segment_size(1024)
            .allow_small_segments(true)
            .build()
            .is_ok());
        assert_eq!(
            b().segment_size(32)
                .allow_small_segments(true)
                .build()
                .unwrap_err(),
            ConfigError::SegmentSizeTooSmall { size: 32, min: 64 }
        );
        assert_eq!(
            b().cleanup_threshold(0).build().unwrap_err(),
            ConfigError::CleanupThreshold(0)
        );
        assert_eq!(
            b().cleanup_threshold(100).build().unwrap_err(),
            ConfigError::CleanupThreshold(100)
        );
        assert_eq!(b().skew(101).build().unwrap_err(), ConfigError::Skew(101));
        assert_eq!(
            b().streams(0, 1).build().unwrap_err(),
            ConfigError::Streams {
                user: 0,
                relocation: 1
            }
        );
        assert!(b().streams(2, 3).build().is_ok());
        assert_eq!(
            b().space_target(Some(1.0)).build().unwrap_err(),
            ConfigError::SpaceTarget(1.0)
        );
        assert!(matches!(
            b().space_target(Some(f64::NAN)).build().unwrap_err(),
            ConfigError::SpaceTarget(_)
        ));
        assert_eq!(
            b().policy(crate::cleaning::policy::Greedy)
                .build()
                .unwrap_err(),
            ConfigError::PolicyNeedsSpaceTarget("greedy".into())
        );
        assert!(b()
            .policy(crate::cleaning::policy::Greedy)
            .space_target(Some(1.25))
            .build()
            .is_ok());
        assert!(b().build().is_ok());
    }
}
