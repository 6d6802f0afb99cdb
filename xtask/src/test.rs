//! `cargo xtask test`: builds every binary, then runs every test of the workspace.

use xshell::{Shell, cmd};

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
    eprintln!("==> provisioning kube-apiserver, kubectl and etcd (built from the Go module proxy on first run, then cached)");
    cmd!(sh, "cargo run --quiet -p kms-lab -- provision").run()?;
    eprintln!("==> running the workspace tests");
    let extra = &args.cargo_test_args;
    let mut failed = Vec::new();
    if cmd!(sh, "cargo test --workspace --no-fail-fast -- {extra...}").run().is_err() {
        failed.push("cargo test --workspace");
    }
    if args.cargo_test_args.is_empty() {
        eprintln!("==> running the scenario suite on the real stack (core and incident tiers, --jobs chosen for this machine)");
        let junit = "target/kms-lab/scenarios-junit.xml";
        let json = "target/kms-lab/scenarios.json";
        if cmd!(sh, "cargo xtask scenarios --tier core --tier incident --junit {junit} --json {json}").run().is_err() {
            failed.push("cargo xtask scenarios");
        }
        eprintln!(
            "==> a third-party plugin through the core tier: aws-encryption-provider (built from ../shared/thirdparty on first use) in place of kms-plugin"
        );
        let (pjunit, pjson) =
            ("target/kms-lab/scenarios-aws-encryption-provider-junit.xml", "target/kms-lab/scenarios-aws-encryption-provider.json");
        if cmd!(sh, "cargo xtask scenarios --tier core --plugin aws-encryption-provider --junit {pjunit} --json {pjson}").run().is_err() {
            failed.push("cargo xtask scenarios --tier core --plugin aws-encryption-provider");
        }
        eprintln!("==> running the lab demo on the real stack (cargo xtask lab --demo-only)");
        if cmd!(sh, "cargo xtask lab --demo-only").run().is_err() {
            failed.push("cargo xtask lab --demo-only");
        }
        eprintln!("==> the container tier: core scenarios and the lab demo with --runtime container (dockerd; .ci/run starts it)");
        let (cjunit, cjson) = ("target/kms-lab/scenarios-container-junit.xml", "target/kms-lab/scenarios-container.json");
        if cmd!(sh, "cargo xtask scenarios --tier core --runtime container --junit {cjunit} --json {cjson}").run().is_err() {
            failed.push("cargo xtask scenarios --tier core --runtime container");
        }
        if cmd!(sh, "cargo xtask lab --demo-only --runtime container").run().is_err() {
            failed.push("cargo xtask lab --demo-only --runtime container");
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("failed: {} (see the output above)", failed.join(", "));
    }
    Ok(())
}

/// Fails early, with the fix, when a tool the suite needs is missing.
fn check_tools(sh: &Shell) -> anyhow::Result<()> {
    let have_go = cmd!(sh, "go version").quiet().ignore_stdout().ignore_stderr().run().is_ok();
    let have_binaries = std::env::var_os("KUBEBUILDER_ASSETS").is_some() || std::env::var_os("KMS_LAB_ASSETS").is_some();
    if !have_go && !have_binaries {
        anyhow::bail!(
            "`go` is not on PATH: kms-lab builds kube-apiserver and etcd from the Go module proxy. Install it (`apt-get install golang-go`; an older Go fetches Go 1.26 by itself with GOTOOLCHAIN=go1.26.8), or point KUBEBUILDER_ASSETS at a directory with kube-apiserver, kubectl, etcd and etcdctl"
        );
    }
    // What the suite's real-component tests need beside Rust and Go: say all of it before minutes
    // of building, with the one command that installs it.
    let ok = |program: &str, args: &[&str]| cmd!(sh, "{program} {args...}").quiet().ignore_stdout().ignore_stderr().run().is_ok();
    let mut missing = Vec::new();
    if !ok("python3", &["-c", "import boto3, hvac, moto"]) {
        missing.push("Python's boto3, hvac and moto[server] (`pip install 'moto[server]==5.2.5' boto3 'hvac==2.4.0'`)");
    }
    if !ok("sh", &["-c", "command -v chromium || command -v chromium-browser || command -v google-chrome"]) {
        missing.push("headless Chromium (`apt-get install chromium`), for the plugin report's browser test");
    }
    if !ok("docker", &["info"]) {
        missing.push("a running Docker daemon (`apt-get install docker.io`, then `dockerd --iptables=false --bridge=none &`), for the container tier");
    }
    if !missing.is_empty() {
        anyhow::bail!("missing: {}; `bash .ci/run` installs and starts all of it on Debian, then runs this suite", missing.join("; "));
    }
    Ok(())
}
