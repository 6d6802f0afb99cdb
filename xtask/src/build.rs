//! The one build every task runs, so the lab, the test command and CI compile each crate once,
//! for one feature set: every binary of the workspace (`cargo build --workspace --bins`), then
//! the binaries are run from the target directory, never through `cargo run -p` (a `-p`
//! selection unifies features over fewer packages and compiles much of the tree a second time).

use std::path::PathBuf;

use xshell::{Cmd, Shell, cmd};

use crate::outcome::{Outcome, Phase, delegate};

/// Builds every binary of the workspace, with cargo's own progress.
pub fn binaries(sh: &Shell) -> Outcome {
    let phase = Phase::start("building kms-lab's binaries (cargo build --workspace --bins; a fresh clone takes minutes)");
    phase.end(delegate(cmd!(sh, "cargo build --workspace --bins")))
}

/// A binary of the workspace, as [`binaries`] built it.
pub fn binary(name: &str) -> PathBuf {
    crate::target_dir().join("debug").join(name)
}

/// `kms-lab SUBCOMMAND ARGS…` as [`binaries`] built it, in the shell's folder and environment.
pub fn kms_lab<'a, A: AsRef<std::ffi::OsStr>>(sh: &'a Shell, subcommand: &str, args: &[A]) -> Cmd<'a> {
    let kms_lab = binary("kms-lab");
    cmd!(sh, "{kms_lab} {subcommand} {args...}")
}
