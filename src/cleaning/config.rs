//! Configuration, built and validated once; its cleaning tunables (the
//! space target, the policy, the cleanup threshold and skew) may be changed
//! later on a live accountant with a [`Tuning`], validated by the same
//! rules.

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
    ///
    /// # Errors
    /// The [`ConfigError`] of the first value out of range: the segment
    /// size, then the stream counts, then the tunables (as
    /// [`Config::tuned`] checks them).
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
        let max = crate::cleaning::placement::MAX_STREAMS;
        if !(1..=max).contains(&c.user_streams) || c.relocation_streams > max {
            return Err(ConfigError::Streams {
                user: c.user_streams,
                relocation: c.relocation_streams,
            });
        }
        c.check_tunables()?;
        Ok(c)
    }
}

impl Config {
    /// This configuration with `tuning`'s changes applied, validated by the
    /// rules [`ConfigBuilder::build`] applies to the same values: the
    /// cleanup threshold in 1..=99, the skew in 0..=100, a space target a
    /// finite ratio above 1, and a space target for a policy that does not
    /// clean without one (in [`Mode::Gc`]). The rest (segment size, mode,
    /// streams, durability) is fixed for an accountant's life.
    /// [`Accountant::tune`](crate::Accountant::tune) applies the result to
    /// a live accountant.
    ///
    /// ```
    /// use segment_accountant::{policy::Greedy, Config, ConfigError, Tuning};
    /// let config = Config::default();
    /// let tight = config.tuned(&Tuning::new().space_target(Some(1.2)).policy(Greedy))?;
    /// assert_eq!(tight.space_target(), Some(1.2));
    /// assert_eq!(tight.policy().name(), "greedy");
    /// // Greedy drains only under a space target: removing it is refused.
    /// assert_eq!(
    ///     tight.tuned(&Tuning::new().space_target(None)).unwrap_err(),
    ///     ConfigError::PolicyNeedsSpaceTarget("greedy".into())
    /// );
    /// # Ok::<(), ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// The [`ConfigError`] of the first tunable out of range, in the order
    /// above; `self` is unchanged.
    pub fn tuned(&self, tuning: &Tuning) -> Result<Config, ConfigError> {
        let mut c = self.clone();
        if let Some(target) = tuning.space_target {
            c.space_target = target;
        }
        if let Some(policy) = &tuning.policy {
            c.policy = policy.clone();
        }
        if let Some(threshold) = tuning.cleanup_threshold {
            c.cleanup_threshold = threshold;
        }
        if let Some(skew) = tuning.skew {
            c.skew = skew;
        }
        c.check_tunables()?;
        Ok(c)
    }

    /// The rules on the values a [`Tuning`] may change.
    fn check_tunables(&self) -> Result<(), ConfigError> {
        if !(1..=99).contains(&self.cleanup_threshold) {
            return Err(ConfigError::CleanupThreshold(self.cleanup_threshold));
        }
        if self.skew > 100 {
            return Err(ConfigError::Skew(self.skew));
        }
        match self.space_target {
            Some(t) if !(t.is_finite() && t > 1.0) => Err(ConfigError::SpaceTarget(t)),
            None if !self.policy.cleans_without_target() && self.mode == Mode::Gc => Err(
                ConfigError::PolicyNeedsSpaceTarget(self.policy.name().to_owned()),
            ),
            _ => Ok(()),
        }
    }
}

/// Changes to the cleaning tunables of a [`Config`]: the space target, the
/// cleaning policy, the cleanup threshold and the skew. Each setter
/// changes one value; values not set keep their current setting. Applied
/// to a live accountant, all at once, by
/// [`Accountant::tune`](crate::Accountant::tune) (or to a configuration
/// by [`Config::tuned`]), with the rules [`ConfigBuilder::build`] applies.
///
/// ```
/// use segment_accountant::{policy, Tuning};
/// // Switch to cost-benefit under a 1.3 space target, in one change (the
/// // policy alone would be refused: it needs a target).
/// let tuning = Tuning::new()
///     .policy_arc(policy::by_name("cost-benefit").unwrap())
///     .space_target(Some(1.3));
/// # let _ = tuning;
/// ```
#[derive(Clone, Debug, Default)]
#[must_use = "a Tuning does nothing until it is applied"]
pub struct Tuning {
    space_target: Option<Option<f64>>,
    policy: Option<Arc<dyn CleaningPolicy>>,
    cleanup_threshold: Option<u8>,
    skew: Option<u8>,
}

impl Tuning {
    /// No changes.
    pub fn new() -> Tuning {
        Tuning::default()
    }

    /// Sets the space target (`None` removes it); see
    /// [`ConfigBuilder::space_target`].
    pub fn space_target(mut self, ratio: Option<f64>) -> Self {
        self.space_target = Some(ratio);
        self
    }

    /// Sets the cleaning policy; see [`ConfigBuilder::policy`].
    pub fn policy(self, policy: impl CleaningPolicy + 'static) -> Self {
        self.policy_arc(Arc::new(policy))
    }

    /// Sets the cleaning policy, shared (as [`crate::policy::by_name`]
    /// returns it).
    pub fn policy_arc(mut self, policy: Arc<dyn CleaningPolicy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Sets the cleanup threshold in percent (1..=99); see
    /// [`ConfigBuilder::cleanup_threshold`].
    pub fn cleanup_threshold(mut self, percent: u8) -> Self {
        self.cleanup_threshold = Some(percent);
        self
    }

    /// Sets the skew in percentage points (0..=100); see
    /// [`ConfigBuilder::skew`].
    pub fn skew(mut self, points: u8) -> Self {
        self.skew = Some(points);
        self
    }

    /// Whether this changes nothing.
    pub fn is_empty(&self) -> bool {
        self.space_target.is_none()
            && self.policy.is_none()
            && self.cleanup_threshold.is_none()
            && self.skew.is_none()
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

    #[test]
    fn tuning_applies_the_build_rules_and_keeps_the_rest() {
        let small = Config::builder()
            .segment_size(64)
            .allow_small_segments(true)
            .streams(2, 1)
            .build()
            .unwrap();
        let t = Tuning::new;
        // The fixed part survives (a small segment size is not re-checked
        // against the production minimum).
        let tuned = small
            .tuned(&t().cleanup_threshold(60).skew(0).space_target(Some(1.5)))
            .unwrap();
        assert_eq!(
            (tuned.segment_size(), tuned.streams(), tuned.mode()),
            (64, (2, 1), Mode::Gc)
        );
        assert_eq!(
            (
                tuned.cleanup_threshold(),
                tuned.skew(),
                tuned.space_target()
            ),
            (60, 0, Some(1.5))
        );
        assert_eq!(small.cleanup_threshold(), 40, "the original is unchanged");
        assert!(t().is_empty() && !t().skew(3).is_empty());
        assert_eq!(
            small.tuned(&t()).unwrap().cleanup_threshold(),
            40,
            "an empty tuning"
        );
        for (tuning, err) in [
            (t().cleanup_threshold(0), ConfigError::CleanupThreshold(0)),
            (
                t().cleanup_threshold(100),
                ConfigError::CleanupThreshold(100),
            ),
            (t().skew(101), ConfigError::Skew(101)),
            (t().space_target(Some(0.5)), ConfigError::SpaceTarget(0.5)),
            (
                t().space_target(Some(f64::INFINITY)),
                ConfigError::SpaceTarget(f64::INFINITY),
            ),
            (
                t().policy(crate::cleaning::policy::Fifo),
                ConfigError::PolicyNeedsSpaceTarget("fifo".into()),
            ),
        ] {
            assert_eq!(small.tuned(&tuning).unwrap_err(), err, "{tuning:?}");
        }
        // In Linear mode nothing drains: a ranked policy needs no target.
        let linear = Config::builder().mode(Mode::Linear).build().unwrap();
        assert!(linear
            .tuned(&t().policy(crate::cleaning::policy::Greedy))
            .is_ok());
    }
}
