//! The proptest-based tests of segment-accountant live in `tests/`: the
//! differential test against the reference model (`tests/differential.rs`)
//! and the format and snapshot property tests. This library is empty.
