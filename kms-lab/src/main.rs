//! `kms-lab`: the user-facing command line. Parses and dispatches; the work lives in the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kms_lab::decode::{self, DecodeArgs, OutputFormat};
use kms_lab::exit::{self, Exit};
use kms_lab_cli_common::fail;

/// kms-lab: a test harness and simulation lab for Kubernetes KMS plugins.
#[derive(Debug, Parser)]
#[command(name = "kms-lab", version, after_help = exit::HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Explain a raw etcd value (provider, key id, annotations) and, with keys, print the object.
    Decode(DecodeArgs),
    /// Run scenario files on a fresh real stack each (etcd, kube-apiserver, plugin, mock KMS); JUnit/JSON reports.
    ///
    /// Exit codes: 0 every scenario passed, 1 a scenario failed (its logs are kept and named),
    /// 2 a scenario file is invalid or the stack could not be provisioned, 130 interrupted.
    Scenarios(kms_lab_scenarios::ScenarioArgs),
    /// Lint an EncryptionConfiguration (KMSv1 gate, identity first, cachesize, timeout, reload, names, HA drift).
    Lint(kms_lab_lint::cli::LintArgs),
    /// Sweep KMS v1 cachesize and timeout against mock KMS profiles (real stack or --model) and recommend values.
    Tune(kms_lab_tune::cli::TuneArgs),
    /// Check a KMS plugin's socket against what kube-apiserver expects (v2 or v1beta1); exit 0 iff every check passes.
    Conformance(kms_lab_conformance::ConformanceArgs),
    /// The narrated demo of envelope encryption on the real stack (`scenarios/lab-demo.yaml`),
    /// then the lab stays up until Ctrl-C (`--demo-only` exits after the demo).
    Lab(kms_lab::lab::LabArgs),
    /// Count etcd's objects per encryption provider, KMS key id and DEK source (read-only, paged;
    /// never a value); with --config, what a rewrite changes and which providers are safe to drop.
    ///
    /// Exit codes: 0 passed, 1 the --expect-all gate failed or objects are malformed or
    /// unreadable under --config, 2 bad flags or etcd unreachable.
    Inspect(kms_lab::ops::InspectArgs),
    /// Rewrite every object of the selected resources through the API so the first provider
    /// re-encrypts it (paged, bounded, retried, resumable with --checkpoint).
    Migrate(kms_lab::ops::MigrateArgs),
    /// After a KEK (version) is lost: find the objects that cannot be decrypted (opened through
    /// the plugin, never printed) and delete exactly those with upstream's unsafe delete
    /// (`--unsafe-delete`; a dry run unless `--yes`).
    ///
    /// Exit codes: 0 nothing to delete, or every delete went (or would go) through; 1 a delete
    /// was refused or failed, or the check could not be trusted; 2 bad flags or etcd unreachable.
    Recover(kms_lab::ops::RecoverArgs),
    /// Write the files that enable a KMS plugin on a kubeadm-style control plane (applies nothing).
    Enable(kms_lab::ops::EnableArgs),
    /// Plugin manifests: `list` the catalog (built or not), `build NAME|FILE` into the cache.
    Plugins(kms_lab::plugins::PluginsArgs),
    /// One plugin's report: conformance on each API it serves, then every applicable core and
    /// incident scenario with it in place of kms-plugin → report.md, report.html, junit.xml,
    /// report.json in --out.
    ///
    /// Exit codes: 0 no conformance FAIL and no failed scenario, 1 otherwise, 2 unusable input
    /// (unknown plugin, bad manifest or scenario file, --out not writable), 130 interrupted.
    Report(kms_lab::report::ReportArgs),
    /// Find or build kube-apiserver, kubectl, etcd and etcdctl into the cache, and say where they are.
    Provision(ProvisionArgs),
    /// Remove the containers a killed `--runtime container` run left behind (label
    /// `org.kms-lab.managed`; containers whose owning process still runs are kept).
    Clean(CleanArgs),
}

/// Arguments of `kms-lab provision`.
#[derive(Debug, clap::Args)]
struct ProvisionArgs {
    /// A directory that already holds kube-apiserver, kubectl, etcd and etcdctl.
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<std::path::PathBuf>,
    /// The Kubernetes version to provision.
    #[arg(long, value_name = "VERSION", default_value = kms_lab_provision::KUBERNETES_VERSION)]
    k8s_version: String,
}

/// Arguments of `kms-lab clean`.
#[derive(Debug, clap::Args)]
struct CleanArgs {
    /// Also remove containers whose owning process still runs.
    #[arg(long)]
    all: bool,
    /// Also remove the cached `localhost/kms-lab/…` images (rebuilt offline on the next container run).
    #[arg(long)]
    images: bool,
}

/// A panic (a bug) ends as a message and exit 1, after its guards stopped every child.
fn main() -> ExitCode {
    kms_lab_cli_common::guard_panics("kms-lab", main_body)
}

fn main_body() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            return fail(&format!("cannot start the async runtime: {error}"), Exit::Failed);
        }
    };
    match cli.command {
        Command::Lab(args) => match runtime.block_on(kms_lab::lab::run(&args)) {
            Ok(()) => Exit::Success.into(),
            Err(error) => fail(&error, exit::lab(&error)),
        },
        Command::Provision(args) => match runtime.block_on(kms_lab_scenarios::cli::provision_binaries(args.bin_dir, &args.k8s_version)) {
            Ok(binaries) => {
                for binary in binaries.all() {
                    println!("{:<15} {:<10} {}", binary.component.name(), binary.version, binary.path.display());
                }
                Exit::Success.into()
            }
            Err(error) => fail(&error, exit::provision()),
        },
        Command::Conformance(args) => match runtime.block_on(kms_lab_conformance::run_cli(&args)) {
            Ok(Some(report)) => Exit::passed(report.passed()).into(),
            Ok(None) => Exit::Success.into(),
            Err(error) => fail(&error, exit::conformance(&error)),
        },
        Command::Scenarios(args) => match runtime.block_on(kms_lab_scenarios::cli::run(&args)) {
            Ok(passed) => Exit::passed(passed).into(),
            Err(error) => fail(&error, exit::scenarios(&error)),
        },
        Command::Clean(args) => match runtime.block_on(kms_lab_stack::container::clean(args.all, args.images)) {
            Ok(report) => {
                for name in &report.containers {
                    println!("removed container {name}");
                }
                for name in &report.images {
                    println!("removed image {name}");
                }
                for name in &report.kept {
                    println!("kept {name}");
                }
                println!(
                    "{} container(s) and {} image(s) removed, {} kept",
                    report.containers.len(),
                    report.images.len(),
                    report.kept.len()
                );
                Exit::Success.into()
            }
            Err(error) => fail(&error, Exit::Failed),
        },
        Command::Plugins(args) => kms_lab::plugins::run(&args).into(),
        Command::Report(args) => match runtime.block_on(kms_lab::report::run(&args)) {
            Ok(passed) => Exit::passed(passed).into(),
            Err(error) => fail(&error, exit::report(&error)),
        },
        Command::Inspect(args) => runtime.block_on(kms_lab::ops::inspect(&args)).into(),
        Command::Migrate(args) => runtime.block_on(kms_lab::ops::migrate(&args)).into(),
        Command::Recover(args) => runtime.block_on(kms_lab::ops::recover(&args)).into(),
        Command::Enable(args) => kms_lab::ops::enable(&args).into(),
        Command::Lint(args) => kms_lab_lint::cli::run(&args).into(),
        Command::Tune(args) => match runtime.block_on(kms_lab_tune::cli::run(&args)) {
            Ok(_) => Exit::Success.into(),
            Err(error) => fail(&error, exit::tune(&error)),
        },
        Command::Decode(args) => match runtime.block_on(decode::run(&args)) {
            Ok(report) => {
                match args.format {
                    OutputFormat::Text => print!("{}", decode::render_text(&report)),
                    OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default()),
                }
                Exit::Success.into()
            }
            Err(error) => fail(&error, exit::decode(&error)),
        },
    }
}
