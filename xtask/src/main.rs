//! `cargo xtask <task>`: the project's automation, one module per task; `main` only dispatches.

mod bench;
mod conformance;
mod lab;
mod scenarios;
mod test;

use clap::{Parser, Subcommand};

/// kms-lab project tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Build everything and run the whole test suite (what CI runs).
    Test(test::TestArgs),
    /// Bring up etcd, kube-apiserver and the plugin, narrate a demo, stay up until Ctrl-C.
    Lab(lab::LabArgs),
    /// Run the scenario suite on the real stack (`cargo xtask scenarios -- --help` for options).
    Scenarios(scenarios::ScenariosArgs),
    /// Check a plugin socket with `kms-lab conformance` (`cargo xtask conformance -- --help` for options).
    Conformance(conformance::ConformanceArgs),
    /// Benchmarks side by side: plugin vs bare tonic echo vs Go peer, and kube-apiserver per provider.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let sh = xshell::Shell::new()?;
    sh.change_dir(project_root());
    match cli.task {
        Task::Test(args) => test::run(&sh, &args),
        Task::Lab(args) => lab::run(&sh, &args),
        Task::Scenarios(args) => scenarios::run(&sh, &args),
        Task::Conformance(args) => conformance::run(&sh, &args),
        Task::Bench(args) => bench::run(&sh, &args, target_dir()),
    }
}

/// The workspace root (this crate lives in `xtask/`).
fn project_root() -> std::path::PathBuf {
    let manifest_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The cargo target directory (`CARGO_TARGET_DIR`, or `target/` in the workspace).
fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| project_root().join("target"))
}
