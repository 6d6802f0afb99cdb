//! `cargo xtask scenarios [NAME…] [--junit FILE] [--json FILE] [--tier T]`: builds kms-lab's
//! binaries, then runs `kms-lab scenarios` with the same arguments (see `kms_lab_scenarios::cli`).

use xshell::Shell;

use crate::build;
use crate::outcome::{Outcome, delegate};

/// Arguments, passed unchanged to `kms-lab scenarios` (`cargo xtask scenarios -- --help` lists them).
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct ScenariosArgs {
    /// Everything `kms-lab scenarios` accepts.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Builds the binaries the stack runs, then the scenarios; a failed scenario's exit code (1) is
/// kms-lab's, passed on with nothing added.
pub fn run(sh: &Shell, args: &ScenariosArgs) -> Outcome {
    build::binaries(sh)?;
    delegate(build::kms_lab(sh, "scenarios", &args.args))
}
