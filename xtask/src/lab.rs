//! `cargo xtask lab`: builds kms-lab's own binaries, then runs the lab (see `kms_lab::lab`).

use std::path::PathBuf;

use xshell::{Shell, cmd};

/// Options of `cargo xtask lab`.
#[derive(Debug, clap::Args)]
pub struct LabArgs {
    /// Run the narrated demo, then stop everything and exit (for CI).
    #[arg(long)]
    pub demo_only: bool,
    /// A directory that already holds kube-apiserver, kubectl, etcd and etcdctl.
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The Kubernetes version to provision.
    #[arg(long, value_name = "VERSION", default_value = kms_lab_stack::provision::KUBERNETES_VERSION)]
    pub k8s_version: String,
    /// Where the stack's components run: `process` or `container` (Docker, images built offline
    /// from the same binaries). Default: `KMS_LAB_RUNTIME`, else `process`.
    #[arg(long, value_name = "RUNTIME")]
    pub runtime: Option<kms_lab_stack::Runtime>,
}

/// Runs the lab.
pub fn run(sh: &Shell, args: &LabArgs, target_dir: PathBuf) -> anyhow::Result<()> {
    if let Some(runtime) = args.runtime {
        kms_lab_stack::Runtime::choose_for_process(runtime);
    }
    eprintln!("==> building kms-plugin and mock-kms");
    cmd!(sh, "cargo build --quiet -p kms-plugin -p mock-kms --bins").run()?;
    let options = kms_lab::lab::LabOptions {
        bin_dir: args.bin_dir.clone(),
        kubernetes_version: args.k8s_version.clone(),
        demo_only: args.demo_only,
        state_dir: target_dir.join("kms-lab"),
    };
    std::fs::create_dir_all(&options.state_dir)?;
    let runtime = tokio::runtime::Runtime::new()?;
    // The lab handles Ctrl-C and SIGTERM itself: it stops every process and removes its files.
    runtime.block_on(kms_lab::lab::run_lab(&options)).map_err(anyhow::Error::from)
}
