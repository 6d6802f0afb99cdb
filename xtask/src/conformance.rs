//! `cargo xtask conformance --endpoint unix:///… [--api v2|v1beta1] …`: runs `kms-lab conformance`
//! with the same arguments (see `kms_lab_conformance::ConformanceArgs`).

use xshell::Shell;

use crate::build;
use crate::outcome::{Outcome, delegate};

/// Arguments, passed unchanged to `kms-lab conformance` (`cargo xtask conformance -- --help` lists them).
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct ConformanceArgs {
    /// Everything `kms-lab conformance` accepts.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs the conformance suite through the kms-lab binary; its exit code (1 = a check failed) is passed on.
pub fn run(sh: &Shell, args: &ConformanceArgs) -> Outcome {
    build::binaries(sh)?;
    delegate(build::kms_lab(sh, "conformance", &args.args))
}
