//! No code: this crate's `Cargo.toml` turns on, for every `--workspace` build, the features that
//! the workspace's dev-dependencies would otherwise turn on only for tests, so the lab and the
//! suite share one build. `cargo xtask tidy` checks that nothing is missing from it.
