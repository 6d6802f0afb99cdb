//! `cargo xtask test`: builds every binary, then runs every test of the workspace.

use xshell::{cmd, Shell};

/// Options of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Extra arguments passed to `cargo test` after `--` (e.g. a test name filter).
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

/// Runs the suite.
pub fn run(sh: &Shell, args: &TestArgs) -> anyhow::Result<()> {
    check_tools(sh)?;
    eprintln!("==> building every binary (tests start the real kms-plugin and mock-kms processes)");
    cmd!(sh, "cargo build --workspace --bins").run()?;
    eprintln!("==> running the workspace tests");
    let extra = &args.cargo_test_args;
    cmd!(sh, "cargo test --workspace --no-fail-fast -- {extra...}").run()?;
    Ok(())
}

/// Fails early, with the fix, when a tool the suite needs is missing.
fn check_tools(sh: &Shell) -> anyhow::Result<()> {
    if cmd!(sh, "go version").quiet().ignore_stdout().ignore_stderr().run().is_err() {
        eprintln!("note: `go` is not on PATH; the real control plane needs it to build kube-apiserver and etcd. Install it with `apt-get install golang-go` (Go fetches a newer toolchain from the module proxy by itself).");
    }
    Ok(())
}
