//! Loom models of segment-accountant's concurrent protocols live in
//! `tests/`; they compile only under `--cfg loom --cfg crossbeam_loom`
//! (see `run.sh`). This library holds the helpers they share.
