//! `cargo xtask lab [--demo-only] [--runtime container] …`: builds kms-lab's own binaries, then
//! runs `kms-lab lab` with the same arguments (the demo is `scenarios/lab-demo.yaml`).

use xshell::{Shell, cmd};

/// Arguments, passed unchanged to `kms-lab lab` (`cargo xtask lab -- --help` lists them).
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct LabArgs {
    /// Everything `kms-lab lab` accepts (`--demo-only`, `--runtime`, `--bin-dir`, …).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Builds the binaries the stack runs, then the lab; Ctrl-C reaches `kms-lab`, which stops everything.
pub fn run(sh: &Shell, args: &LabArgs) -> anyhow::Result<()> {
    eprintln!("==> building kms-plugin, mock-kms and kms-lab (the first build of a fresh clone takes minutes)");
    cmd!(sh, "cargo build --quiet -p kms-plugin -p mock-kms -p kms-lab --bins").run()?;
    let passthrough = &args.args;
    cmd!(sh, "cargo run --quiet -p kms-lab -- lab {passthrough...}").run()?;
    Ok(())
}
