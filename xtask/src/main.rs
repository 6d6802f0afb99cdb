//! `cargo xtask <task>`: the project's automation, one module per task; `main` only dispatches.
//!
//! Errors are messages, never backtraces (whatever `RUST_BACKTRACE` says): a task that delegates
//! to `kms-lab` exits with the child's own code and adds nothing to what the child printed.

mod bench;
mod build;
mod conformance;
mod interrupt;
mod lab;
mod outcome;
mod registry;
mod scenarios;
mod setup;
mod test;
mod test_failures;
mod tidy;
mod upstream;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::outcome::Failure;

/// kms-lab project tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what is missing, build everything once and run the whole test suite (what CI runs).
    Test(test::TestArgs),
    /// Bring up etcd, kube-apiserver and the plugin, narrate a demo, stay up until Ctrl-C.
    Lab(lab::LabArgs),
    /// Run the scenario suite on the real stack (`cargo xtask scenarios -- --help` for options).
    Scenarios(scenarios::ScenariosArgs),
    /// Check a plugin socket with `kms-lab conformance` (`cargo xtask conformance -- --help` for options).
    Conformance(conformance::ConformanceArgs),
    /// Benchmarks side by side: plugin vs bare tonic echo vs Go peer, and kube-apiserver per provider.
    Bench(bench::BenchArgs),
    /// Repository hygiene: rustfmt, clippy with warnings denied, docs on public items, the README's crate table.
    Tidy(tidy::TidyArgs),
    /// Find or build (Go, into ~/.cache/kms-lab) the pinned kube-apiserver, kubectl, etcd and
    /// etcdctl: what `lab` and `test` start beside the Rust build.
    Provision,
}

/// A panic (a bug) ends as a message and exit 1, after unwinding stopped dockerd, the registry
/// and the running child (their guards' `Drop`).
fn main() -> ExitCode {
    kms_lab_cli_common::guard_panics("xtask", main_body)
}

fn main_body() -> ExitCode {
    forget_cargo_run_package_vars();
    let cli = Cli::parse();
    interrupt::install();
    let sh = match xshell::Shell::new() {
        Ok(sh) => sh,
        Err(error) => return Failure::message(format!("cannot start a shell: {error}")).exit(),
    };
    sh.change_dir(project_root());
    let result = match cli.task {
        Task::Test(args) => test::run(&sh, &args),
        Task::Lab(args) => lab::run(&sh, &args),
        Task::Scenarios(args) => scenarios::run(&sh, &args),
        Task::Conformance(args) => conformance::run(&sh, &args),
        Task::Bench(args) => bench::run(&sh, &args),
        Task::Tidy(args) => tidy::run(&sh, &args),
        Task::Provision => upstream::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.exit(),
    }
}

/// `cargo run` gave this process the xtask package's own `CARGO_MANIFEST_DIR`, `CARGO_PKG_*` and
/// friends, which every cargo started from here would inherit. Build scripts track some of them
/// (ring: `CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, …) and cargo compares their values in its own
/// environment, so such a cargo rebuilt ring, and everything above it, that a cargo started from
/// a shell had built: the lab's and the suite's builds were not one.
fn forget_cargo_run_package_vars() {
    let keys: Vec<std::ffi::OsString> =
        std::env::vars_os().map(|(key, _)| key).filter(|key| kms_lab_provision::workspace::set_by_cargo_for_a_running_crate(key)).collect();
    for key in keys {
        // SAFETY: the first thing main does, before any other thread (ctrlc's handler, a child's
        // wait) exists, so nothing reads the environment concurrently.
        unsafe { std::env::remove_var(key) };
    }
}

/// The workspace root.
fn project_root() -> std::path::PathBuf {
    kms_lab_provision::workspace::workspace_root()
}

/// The cargo target directory (`CARGO_TARGET_DIR`, or `target/` in the workspace).
fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| project_root().join("target"))
}
