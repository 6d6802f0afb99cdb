//! `cargo xtask lab [--demo-only] [--runtime container] …`: builds kms-lab's binaries, then
//! runs `kms-lab lab` with the same arguments (the demo is `scenarios/lab-demo.yaml`).

use xshell::Shell;

use crate::build;
use crate::outcome::{Outcome, delegate};

/// Arguments, passed unchanged to `kms-lab lab` (`cargo xtask lab -- --help` lists them).
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct LabArgs {
    /// Everything `kms-lab lab` accepts (`--demo-only`, `--runtime`, `--bin-dir`, …).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Builds the binaries the stack runs, then the lab; Ctrl-C reaches `kms-lab`, which stops
/// everything; its exit code is this task's.
pub fn run(sh: &Shell, args: &LabArgs) -> Outcome {
    // The README's `cargo xtask lab [--demo-only]` runs on this host's default binaries: their
    // Go build starts beside the Rust build. Other choices (a runtime, a version, a folder of
    // binaries) are the lab's to provision.
    let upstream = if args.args.iter().all(|arg| arg == "--demo-only") {
        Some(crate::upstream::Beside::start(&crate::target_dir().join("kms-lab"))?)
    } else {
        None
    };
    build::binaries(sh)?;
    if let Some(upstream) = upstream {
        upstream.finish()?;
    }
    delegate(build::kms_lab(sh, "lab", &args.args))
}
