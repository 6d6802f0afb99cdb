//! `cargo xtask scenarios [NAME…] [--junit FILE] [--json FILE] [--tier T]`: builds kms-lab's own
//! binaries, then runs `kms-lab scenarios` with the same arguments (see `kms_lab_scenarios::cli`).

use xshell::{Shell, cmd};

/// Arguments, passed unchanged to `kms-lab scenarios` (`cargo xtask scenarios -- --help` lists them).
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct ScenariosArgs {
    /// Everything `kms-lab scenarios` accepts.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Builds the binaries the stack runs, then the scenarios.
pub fn run(sh: &Shell, args: &ScenariosArgs) -> anyhow::Result<()> {
    eprintln!("==> building kms-plugin, kms-faulty-plugin, mock-kms and kms-lab");
    cmd!(sh, "cargo build --quiet -p kms-plugin -p kms-faulty-plugin -p mock-kms -p kms-lab --bins").run()?;
    let passthrough = &args.args;
    // A non-zero exit (a failed scenario) is reported by kms-lab itself; pass it on.
    cmd!(sh, "cargo run --quiet -p kms-lab -- scenarios {passthrough...}").run()?;
    Ok(())
}
