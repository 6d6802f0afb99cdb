//! `kms-lab lab` (and `cargo xtask lab`): the narrated demo of envelope encryption, which is the
//! scenario `scenarios/lab-demo.yaml` played by the scenario runner on the real stack; then the
//! stack stays up, with a `lab.env` for kubectl and etcdctl, until Ctrl-C (`--demo-only` exits).

use std::path::{Path, PathBuf};

use kms_lab_cli_common::stop_signal;
use kms_lab_provision::{Binaries, KUBERNETES_VERSION};
use kms_lab_scenarios::cli::{ScenariosError, provision_binaries};
use kms_lab_scenarios::runner::{self, RunOptions};
use kms_lab_scenarios::world::World;
use kms_lab_scenarios::{Tier, load};

/// The demo scenario's file name in the scenario directory.
pub const DEMO_FILE: &str = "lab-demo.yaml";

/// Options of `kms-lab lab`.
#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// Run the narrated demo, then stop everything and exit (for CI).
    #[arg(long)]
    pub demo_only: bool,
    /// A directory that already holds kube-apiserver, kubectl, etcd and etcdctl.
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The Kubernetes version to provision.
    #[arg(long = "k8s-version", value_name = "VERSION", default_value = KUBERNETES_VERSION)]
    pub kubernetes_version: String,
    /// Where `lab.env` and the run directory go (default: `target/kms-lab`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Directory of scenario files holding `lab-demo.yaml` (default: `KMS_LAB_SCENARIOS`, else `./scenarios`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Where the stack's components run: `process` or `container` (Docker, images built offline
    /// from the same binaries). Default: `KMS_LAB_RUNTIME`, else `process`.
    #[arg(long, value_name = "RUNTIME")]
    pub runtime: Option<kms_lab_stack::Runtime>,
}

/// Why the lab failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The demo file is missing or invalid, or the binaries could not be provisioned.
    #[error(transparent)]
    Setup(#[from] ScenariosError),
    /// A demo step failed; the run directory with every component's log is kept.
    #[error("the demo failed: {failure}; every component's log is kept in {}", run_dir.as_deref().map_or("(no run directory)".into(), |p| p.display().to_string()))]
    Demo {
        /// The failing step and why.
        failure: String,
        /// The kept run directory.
        run_dir: Option<PathBuf>,
    },
    /// `lab.env` could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Ctrl-C or SIGTERM during the demo; every process was stopped.
    #[error("interrupted; every process of the lab was stopped")]
    Interrupted,
}

/// Runs the lab.
pub async fn run(args: &LabArgs) -> Result<(), LabError> {
    if let Some(runtime) = args.runtime {
        kms_lab_stack::Runtime::choose_for_process(runtime);
    }
    let dir = args.dir.clone().unwrap_or_else(runner::default_scenario_dir);
    let demo = load::select(&dir, &[DEMO_FILE.trim_end_matches(".yaml").to_owned()], &[Tier::Demo]).map_err(ScenariosError::from)?;
    let demo = &demo[0];
    let state_dir = args.state_dir.clone().unwrap_or_else(|| runner_target().join("kms-lab"));
    println!("==> provisioning kube-apiserver, kubectl and etcd (pinned upstream releases; built from the Go module proxy on first run)");
    let binaries = provision_binaries(args.bin_dir.clone(), &args.kubernetes_version).await?;
    for binary in binaries.all() {
        let place =
            if binary.source == kms_lab_provision::Source::Image { binary.source.to_string() } else { binary.path.display().to_string() };
        println!("    {:<15} {:<10} {place}", binary.component.name(), binary.version);
    }
    let options = RunOptions {
        binaries: binaries.clone(),
        run_root: state_dir.join("runs"),
        seed: None,
        keep_logs: false,
        plugin: None,
        secret_sync: None,
    };
    let env_file = state_dir.join("lab.env");
    let hold: runner::Hold<'_> = Box::new(|world: &World| {
        let env_file = env_file.clone();
        let binaries = binaries.clone();
        let demo_only = args.demo_only;
        Box::pin(async move { stay_up(world, &binaries, &env_file, demo_only).await })
    });
    let outcome = tokio::select! {
        outcome = runner::run_scenario_then(demo, &options, &|line| println!("{line}"), Some(hold)) => outcome,
        () = stop_signal() => return Err(LabError::Interrupted),
    };
    let _ = std::fs::remove_file(&env_file);
    if !outcome.passed {
        return Err(LabError::Demo { failure: outcome.failure.unwrap_or_default(), run_dir: outcome.run_dir });
    }
    Ok(())
}

/// After the demo: with `--demo-only`, return at once; otherwise write `lab.env`, say how to use
/// the running lab, and wait for Ctrl-C or SIGTERM.
async fn stay_up(world: &World, binaries: &Binaries, env_file: &Path, demo_only: bool) {
    if demo_only {
        println!("\n==> demo finished; stopping the lab (--demo-only)");
        return;
    }
    if let Err(error) = write_env_file(env_file, world, binaries) {
        eprintln!("warning: {error}");
    }
    println!(
        "\n==> the lab is up. In another shell:\n    set -a; source {}; set +a\n    \"$KUBECTL\" get secrets\n    \"$ETCDCTL\" get /registry/secrets/default/demo-000 --print-value-only | hexdump -C | head\n    kms-lab decode --plugin unix://$KMS_PLUGIN_SOCKET --etcd-key /registry/secrets/default/demo-000 <(\"$ETCDCTL\" get /registry/secrets/default/demo-000 --print-value-only)\nPress Ctrl-C to stop everything.",
        env_file.display()
    );
    stop_signal().await;
    println!("\n==> stopping the lab");
}

/// `lab.env`: variables that point kubectl and etcdctl at the running lab (0600: it names the
/// admin kubeconfig).
fn write_env_file(path: &Path, world: &World, binaries: &Binaries) -> Result<(), LabError> {
    let stack = &world.stack;
    let contents = format!(
        "# kms-lab: `set -a; source {}` points kubectl and etcdctl at the running lab.\nKUBECONFIG={}\nKUBECTL={}\nETCDCTL={}\nETCDCTL_API=3\nETCDCTL_ENDPOINTS={}\nKMS_PLUGIN_SOCKET={}\n",
        path.display(),
        stack.kubeconfig_path(0).display(),
        binaries.kubectl.path.display(),
        binaries.etcdctl.path.display(),
        stack.etcd_url(),
        stack.plugin_socket("plugin-0").map(|p| p.display().to_string()).unwrap_or_default(),
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| LabError::Io { path: parent.to_owned(), source })?;
    }
    kms_lab_stack::fsutil::write_private(path, contents.as_bytes()).map_err(|source| LabError::Io { path: path.to_owned(), source })
}

/// `$CARGO_TARGET_DIR`, or `target` under the current directory.
fn runner_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"))
}
