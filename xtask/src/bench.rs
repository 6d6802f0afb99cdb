//! `cargo xtask bench [--quick] [--json FILE]`: builds the reference plugin and the bench harness
//! with optimisations, then runs the comparison set (`kms-lab-bench`, from `kms-lab-benches/`): the plugin
//! against a bare tonic echo and the Go peer, and kube-apiserver with identity, KMS v1 and KMS v2.
//! The harness runs as its own release binary because a debug-built client would blur every ratio.

use std::path::PathBuf;

use xshell::{Shell, cmd};

use crate::outcome::{Outcome, delegate};

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Short segments and one apiserver round: a few minutes on 2 cores.
    #[arg(long)]
    pub quick: bool,
    /// Write the JSON summary here (relative paths are from the workspace root).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// More `kms-lab-bench` arguments after `--` (e.g. `-- --no-apiserver`; `-- --help` lists them).
    #[arg(last = true)]
    pub extra: Vec<String>,
}

/// Builds and runs the benches.
pub fn run(sh: &Shell, args: &BenchArgs) -> Outcome {
    let target_dir = crate::target_dir();
    eprintln!("==> building kms-plugin and the bench harness (release)");
    delegate(cmd!(sh, "cargo build --release -p kms-plugin -p kms-lab-benches --bins"))?;
    let runner = target_dir.join("release").join("kms-lab-bench");
    let mut flags = Vec::new();
    if args.quick {
        flags.push("--quick".to_owned());
    }
    if let Some(json) = &args.json {
        flags.push("--json".to_owned());
        flags.push(json.display().to_string());
    }
    let run_root = target_dir.join("kms-lab").join("bench-runs");
    let extra = &args.extra;
    // The runner finds kms-plugin beside itself in target/release.
    delegate(cmd!(sh, "{runner} {flags...} --run-root {run_root} {extra...}"))
}
