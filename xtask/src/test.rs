//! `cargo xtask test`: sets up what the suite needs (see [`crate::setup`]), builds every binary
//! once, provisions the control plane, then runs every test of the workspace and the scenario
//! tiers on the real stack. Every phase is one line when it starts and one when it ends, with its
//! time; the run ends with the table of phases.

use std::path::PathBuf;
use std::time::Instant;

use xshell::{Shell, cmd};

use crate::build;
use crate::outcome::{Failure, Outcome, Phase, delegate, delegate_watching, elapsed};
use crate::setup::{self, Install};
use crate::test_failures::TestFailures;
use crate::{registry, tidy};

/// Options of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Install nothing: name what is missing (Python packages, Chromium, Docker) and the commands, then stop.
    #[arg(long)]
    pub no_install: bool,
    /// Extra arguments passed to `cargo test` after `--` (e.g. a test name filter); the scenario tiers are then skipped.
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

/// Runs the suite.
pub fn run(sh: &Shell, args: &TestArgs) -> Outcome {
    let started = Instant::now();
    check_go()?;
    let install = if args.no_install { Install::Never } else { Install::Missing };
    let run_dir = crate::target_dir().join("kms-lab");
    let environment = setup::prepare(install, &cache_dir()?, &run_dir)?;
    let _path = sh.push_env("PATH", &environment.path);

    let mut phases = Phases::default();
    if args.cargo_test_args.is_empty() {
        phases.run("cargo xtask tidy (rustfmt, clippy, the README's crate table, one feature set)", || {
            tidy::run(sh, &tidy::TidyArgs { fix: false })
        });
    }
    let upstream = crate::upstream::Beside::start(&run_dir)?;
    build::binaries(sh)?;
    upstream.finish()?;

    let extra = &args.cargo_test_args;
    // Tests comparing with third-party source (ack-secret-manager's CRDs and objects) fail here,
    // rather than skip, when `../shared/thirdparty` is missing.
    let _require = sh.push_env("KMS_LAB_REQUIRE_THIRDPARTY", "1");
    let mut failures = TestFailures::default();
    phases.run("the workspace tests (cargo test --workspace)", || {
        delegate_watching(cmd!(sh, "cargo test --workspace --no-fail-fast -- {extra...}"), |line| failures.observe(line))
    });
    phases.explain_last(failures.lines());
    if args.cargo_test_args.is_empty() {
        let tiers: [(&str, &[&str]); 5] = [
            (
                "the scenario suite on the real stack (core and incident tiers)",
                &[
                    "scenarios",
                    "--tier",
                    "core",
                    "--tier",
                    "incident",
                    "--junit",
                    "target/kms-lab/scenarios-junit.xml",
                    "--json",
                    "target/kms-lab/scenarios.json",
                ],
            ),
            (
                "a third-party plugin through the core tier: aws-encryption-provider (built from ../shared/thirdparty on first use)",
                &[
                    "scenarios",
                    "--tier",
                    "core",
                    "--plugin",
                    "aws-encryption-provider",
                    "--junit",
                    "target/kms-lab/scenarios-aws-encryption-provider-junit.xml",
                    "--json",
                    "target/kms-lab/scenarios-aws-encryption-provider.json",
                ],
            ),
            (
                "seed 003's Vault end to end: proton-kms on vault-kubernetes-kms (kms-lab's own plugin skips it: it does not call Vault)",
                &[
                    "scenarios",
                    "proton-kms",
                    "--plugin",
                    "vault-kubernetes-kms",
                    "--junit",
                    "target/kms-lab/scenarios-proton-kms-junit.xml",
                    "--json",
                    "target/kms-lab/scenarios-proton-kms.json",
                ],
            ),
            ("the lab demo on the real stack (kms-lab lab --demo-only)", &["lab", "--demo-only"]),
            (
                "the container tier: core scenarios with --runtime container",
                &[
                    "scenarios",
                    "--tier",
                    "core",
                    "--runtime",
                    "container",
                    "--junit",
                    "target/kms-lab/scenarios-container-junit.xml",
                    "--json",
                    "target/kms-lab/scenarios-container.json",
                ],
            ),
        ];
        for (what, arguments) in tiers {
            let (subcommand, arguments) = arguments.split_first().expect("every tier names a kms-lab subcommand");
            phases.run(what, || delegate(build::kms_lab(sh, subcommand, arguments)));
        }
        phases.run(
            "the registry tier: the lab demo with --runtime container, kube-apiserver and etcd pulled from a local mirror of registry.k8s.io",
            || registry::tier(sh, &run_dir, &["lab", "--demo-only", "--runtime", "container"]),
        );
    }
    drop(environment);
    phases.summary(started)
}

/// The phases that run to the end even when one fails, and how each ended.
#[derive(Default)]
struct Phases {
    ended: Vec<Ended>,
}

/// One phase that ran.
struct Ended {
    what: String,
    passed: bool,
    took: String,
    /// What failed in it, a line each (the end of a CI log may be all its reader sees).
    failures: Vec<String>,
}

impl Phases {
    fn run(&mut self, what: &str, phase: impl FnOnce() -> Outcome) {
        let started = Instant::now();
        let outcome = Phase::start(what).end(phase());
        self.ended.push(Ended { what: what.to_owned(), passed: outcome.is_ok(), took: elapsed(started), failures: Vec::new() });
    }

    /// Adds what failed in the phase that ran last.
    fn explain_last(&mut self, failures: Vec<String>) {
        if let Some(last) = self.ended.last_mut() {
            last.failures = failures;
        }
    }

    fn summary(self, started: Instant) -> Outcome {
        eprintln!("==> cargo xtask test: {} in all", elapsed(started));
        for Ended { what, passed, took, failures } in &self.ended {
            eprintln!("    {:<6} {took:>8}  {what}", if *passed { "ok" } else { "FAILED" });
            for failure in failures {
                eprintln!("                      {failure}");
            }
        }
        let failed: Vec<&str> = self.ended.iter().filter(|ended| !ended.passed).map(|ended| ended.what.as_str()).collect();
        if failed.is_empty() { Ok(()) } else { Err(Failure::failed(format!("failed: {} (see the output above)", failed.join("; ")))) }
    }
}

/// The cache `kms-lab provision` uses: `$KMS_LAB_CACHE`, else `~/.cache/kms-lab`.
fn cache_dir() -> Result<PathBuf, Failure> {
    if let Some(dir) = std::env::var_os("KMS_LAB_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache").join("kms-lab"))
        .ok_or_else(|| Failure::message("neither KMS_LAB_CACHE nor HOME is set: set KMS_LAB_CACHE to a directory for kms-lab's cache"))
}

/// Fails early, with the fix, when Go is missing and no binaries are given.
fn check_go() -> Outcome {
    let have_binaries = std::env::var_os("KUBEBUILDER_ASSETS").is_some() || std::env::var_os("KMS_LAB_ASSETS").is_some();
    if !setup::runs("go", &["version"]) && !have_binaries {
        return Err(Failure::message(
            "`go` is not on PATH: kms-lab builds kube-apiserver and etcd from the Go module proxy. Install it (`apt-get install golang-go`; an older Go fetches Go 1.26 by itself with GOTOOLCHAIN=go1.26.8), or point KUBEBUILDER_ASSETS at a directory with kube-apiserver, kubectl, etcd and etcdctl",
        ));
    }
    Ok(())
}
