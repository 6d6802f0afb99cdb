//! The `scenarios` command shared by `kms-lab scenarios` and `cargo xtask scenarios`: select,
//! provision, run each on a fresh stack, print the table, write JUnit/JSON.

use std::path::PathBuf;
use std::time::Instant;

use kms_lab_provision::ProvisionOptions;

use crate::load::{self, LoadError};
use crate::model::Tier;
use crate::report::{JSON_FILE, JUNIT_FILE, SuiteReport};
use crate::runner::{self, RunOptions};

/// Arguments of `scenarios`.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ScenarioArgs {
    /// `merge`: several shards' reports into one.
    #[command(subcommand)]
    pub command: Option<ScenariosCommand>,
    /// Scenarios to run, by file name without `.yaml` (default: every scenario of the selected tiers).
    pub names: Vec<String>,
    /// Tiers to run when no names are given (repeatable).
    #[arg(long, value_enum, default_values_t = [Tier::Core])]
    pub tier: Vec<Tier>,
    /// Write a JUnit XML report here (one testcase per scenario).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a JSON report (every step, figure and failure) here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Directory of scenario files (default: `KMS_LAB_SCENARIOS`, else `./scenarios`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Where run directories (component logs) go (default: `target/kms-lab/scenario-runs`).
    #[arg(long, value_name = "DIR")]
    pub run_root: Option<PathBuf>,
    /// Use this seed instead of each scenario's own.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep the run directories of passing scenarios too.
    #[arg(long)]
    pub keep_logs: bool,
    /// Only parse and check the scenario files, then list them.
    #[arg(long)]
    pub check: bool,
    /// How many scenarios run at once, each on its own stack (default: from the cores and free
    /// memory, printed; `--jobs 1` runs one after another). Scenarios marked `exclusive` run alone.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
    /// Run only shard K of N (`2/4`): a deterministic partition of the selected scenarios, for CI
    /// fan-out; merge the shards' reports with `kms-lab scenarios merge`.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<crate::schedule::Shard>,
    /// Start the longest scenarios first, and balance `--shard`, by the seconds each scenario took
    /// in this earlier JSON report (default: the order by the durations recorded in the run root by
    /// earlier runs; shards by count).
    #[arg(long, value_name = "FILE")]
    pub durations: Option<PathBuf>,
    /// Look for kube-apiserver, etcd and kubectl here first.
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The Kubernetes version to run on: v1.37.2, v1.36.3 or v1.35.4 (or the minor, e.g. v1.36),
    /// each built into the cache on first use. Scenarios that need a newer one are skipped, with why.
    #[arg(long = "kubernetes-version", visible_alias = "k8s-version", value_name = "VERSION", default_value = kms_lab_provision::KUBERNETES_VERSION)]
    pub k8s_version: String,
    /// Run every scenario on this plugin instead of kms-plugin: a catalog name (`kms-lab plugins
    /// list`) or a manifest file. Scenarios the plugin cannot take are reported as skipped, with why.
    #[arg(long, value_name = "NAME|FILE")]
    pub plugin: Option<String>,
    /// The secret sync controller of every scenario that runs one (`secret_sync:` in its stack):
    /// `kms-secret-sync` (kms-lab's) or `ack-secret-manager` (the seed's own, built from
    /// `../shared/thirdparty/ack-secret-manager` on first use). Default: what each scenario names.
    #[arg(long, value_enum, value_name = "CONTROLLER")]
    pub secret_sync: Option<crate::steps::sync::SyncController>,
    /// Where the stack's components run: `process` or `container` (Docker, images built offline
    /// from the same binaries). Default: `KMS_LAB_RUNTIME`, else `process`.
    #[arg(long, value_name = "RUNTIME")]
    pub runtime: Option<kms_lab_stack::Runtime>,
}

/// Subcommands of `scenarios`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ScenariosCommand {
    /// Merge the JSON reports of several shards into one JUnit (and JSON) report.
    Merge(MergeArgs),
}

/// Arguments of `scenarios merge`.
#[derive(Debug, Clone, clap::Args)]
pub struct MergeArgs {
    /// The shards' JSON reports (`--json` of each `--shard` run).
    #[arg(long = "json", value_name = "FILE", required = true, num_args = 1..)]
    pub reports: Vec<PathBuf>,
    /// Write the merged JUnit XML here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the merged JSON report here.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

/// Why the command could not run its scenarios (a failing scenario is not an error: see the report).
#[derive(Debug, thiserror::Error)]
pub enum ScenariosError {
    /// A scenario file is broken or a name is unknown.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Binaries could not be provisioned.
    #[error(transparent)]
    Provision(#[from] kms_lab_provision::ProvisionError),
    /// A report could not be written (or would replace a file that is not a report).
    #[error(transparent)]
    Write(#[from] kms_lab_cli_common::files::FileError),
    /// A report to merge, or `--durations`, is unreadable.
    #[error("{0}")]
    Report(String),
    /// Provisioning stopped unexpectedly.
    #[error("provisioning stopped unexpectedly: {0}")]
    ProvisionPanicked(String),
    /// The plugin under test (`--plugin`) cannot be resolved, built or located.
    #[error("--plugin: {0}")]
    Plugin(#[from] kms_lab_catalog::PluginError),
    /// The run was interrupted (Ctrl-C / SIGTERM); the stack of the running scenario was stopped.
    #[error("interrupted; every process of the running scenario was stopped")]
    Interrupted,
}

/// Runs the command; `Ok(true)` when every selected scenario passed.
pub async fn run(args: &ScenarioArgs) -> Result<bool, ScenariosError> {
    if let Some(ScenariosCommand::Merge(merge)) = &args.command {
        return run_merge(merge);
    }
    if let Some(runtime) = args.runtime {
        kms_lab_stack::Runtime::choose_for_process(runtime);
    }
    let dir = args.dir.clone().unwrap_or_else(runner::default_scenario_dir);
    let mut scenarios = load::select(&dir, &args.names, &args.tier)?;
    let run_root = args.run_root.clone().unwrap_or_else(default_run_root);
    let given_durations = match &args.durations {
        Some(path) => crate::schedule::durations_from(path).map_err(ScenariosError::Report)?,
        None => Default::default(),
    };
    if let Some(shard) = args.shard {
        // Only given durations: every runner must compute the same partition.
        let durations = &given_durations;
        let total = scenarios.len();
        scenarios = crate::schedule::partition(scenarios, shard, durations);
        println!(
            "shard {shard}: {} of {total} selected scenario(s), balanced by {}",
            scenarios.len(),
            if durations.is_empty() { "count" } else { "recorded durations" }
        );
    }
    let k8s_version = kms_lab_provision::resolve_supported_kubernetes(&args.k8s_version)?;
    if args.check {
        let under_test = args.plugin.as_deref().map(kms_lab_catalog::resolve).transpose()?;
        let width = scenarios.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for s in &scenarios {
            println!("{:<width$}  {:<9} {:>3} steps  {}", s.name, s.tier.to_string(), s.steps.len(), s.title);
            if let Some(reason) = s.min_kubernetes.as_ref().and_then(|m| m.why_not(k8s_version)) {
                println!("{:<width$}  would be skipped on {k8s_version}: {reason}", "");
            }
            if let Some(reason) = under_test.as_ref().and_then(|m| crate::plugin_under_test::why_not(s, m)) {
                println!(
                    "{:<width$}  would be skipped on {}: {reason}",
                    "",
                    under_test.as_ref().map(|m| m.name.as_str()).unwrap_or_default()
                );
            }
            if under_test.is_none()
                && s.stack.plugins.iter().any(crate::plugin_under_test::PluginUnderTest::replaces)
                && let Some(reason) = crate::plugin_under_test::why_not_own_plugin(s)
            {
                println!("{:<width$}  would be skipped on kms-plugin: {reason}", "");
            }
        }
        println!("{} scenario file(s) in {} are valid", scenarios.len(), dir.display());
        return Ok(true);
    }
    // Report paths are checked before minutes of work, not after.
    for (path, kind) in [(&args.junit, &JUNIT_FILE), (&args.json, &JSON_FILE)] {
        if let Some(path) = path {
            kms_lab_cli_common::files::check_replaceable(path, kind)?;
        }
    }
    let plugin = match &args.plugin {
        Some(wanted) => Some(prepare_plugin(wanted).await?),
        None => None,
    };
    let binaries = provision_binaries(args.bin_dir.clone(), k8s_version).await?;
    let plugin_name = plugin.as_ref().map(|plugin| plugin.manifest().name.clone());
    let durations =
        if args.durations.is_some() { given_durations } else { crate::schedule::recorded_durations(&run_root, plugin_name.as_deref()) };
    let order = if durations.is_empty() { "in file order" } else { "longest first (by earlier runs' durations)" };
    let scenarios = crate::schedule::longest_first(scenarios, &durations);
    let options = RunOptions {
        binaries,
        run_root: run_root.clone(),
        seed: args.seed,
        keep_logs: args.keep_logs,
        plugin,
        secret_sync: args.secret_sync,
    };
    let jobs = jobs_for(args.jobs);
    println!("running {} scenario(s) from {}, {jobs} at once, {order}", scenarios.len(), dir.display());
    let (mut report, interrupted) = run_suite(&scenarios, &options, jobs, k8s_version).await;
    if !interrupted {
        crate::schedule::record_durations(&run_root, plugin_name.as_deref(), &report);
    }
    report.shard = args.shard.map(|s| s.to_string());
    if interrupted {
        println!("\ninterrupted: {} scenario(s) finished; partial reports follow", report.scenarios.len());
    }
    println!("\n{}", report.table());
    if let Some(path) = &args.junit {
        kms_lab_cli_common::files::replace(path, &JUNIT_FILE, report.junit().as_bytes())?;
        println!("JUnit report: {}", path.display());
    }
    if let Some(path) = &args.json {
        kms_lab_cli_common::files::replace(path, &JSON_FILE, report.json().as_bytes())?;
        println!("JSON report: {}", path.display());
    }
    if interrupted {
        return Err(ScenariosError::Interrupted);
    }
    Ok(report.passed())
}

/// `--jobs`, or the default for this machine (printed with its reason).
pub fn jobs_for(asked: Option<u16>) -> usize {
    match asked {
        Some(n) => usize::from(n),
        None => {
            let (jobs, why) = crate::schedule::default_jobs();
            println!("--jobs {jobs} (from {why})");
            jobs
        }
    }
}

/// Resolves the plugin under test and locates its binaries, building them on first use (a
/// first Go build takes minutes; said before it starts).
pub async fn prepare_plugin(wanted: &str) -> Result<crate::plugin_under_test::PluginUnderTest, ScenariosError> {
    let manifest = kms_lab_catalog::resolve(wanted)?;
    println!("plugin under test: {} — {} ({})", manifest.name, manifest.description, manifest.path.display());
    let wanted = wanted.to_owned();
    let prepared = tokio::task::spawn_blocking(move || crate::plugin_under_test::PluginUnderTest::prepare(&wanted, true))
        .await
        .map_err(|e| ScenariosError::ProvisionPanicked(e.to_string()))??;
    println!("plugin binary: {}", prepared.0.binary().display());
    Ok(prepared)
}

/// Runs `scenarios`, `jobs` at once, until done or Ctrl-C/SIGTERM (then the running scenarios'
/// stacks are stopped and the report holds what finished); `true` when interrupted.
pub async fn run_suite(scenarios: &[crate::model::Scenario], options: &RunOptions, jobs: usize, k8s_version: &str) -> (SuiteReport, bool) {
    let started = Instant::now();
    let mut outcomes = Vec::new();
    let suite = crate::parallel::run_all(scenarios, options, jobs, &mut outcomes);
    // On Ctrl-C or SIGTERM the running scenarios' futures are dropped: their stacks kill every process.
    let interrupted = tokio::select! {
        () = suite => false,
        () = kms_lab_cli_common::stop_signal() => true,
    };
    let report = SuiteReport {
        scenarios: outcomes,
        seconds: started.elapsed().as_secs_f64(),
        kubernetes_version: k8s_version.to_owned(),
        jobs,
        shard: None,
    };
    (report, interrupted)
}

/// `scenarios merge`: the shards' reports as one.
fn run_merge(merge: &MergeArgs) -> Result<bool, ScenariosError> {
    let mut reports = Vec::new();
    for path in &merge.reports {
        let text = std::fs::read_to_string(path).map_err(|e| ScenariosError::Report(format!("cannot read {}: {e}", path.display())))?;
        let report: SuiteReport = serde_json::from_str(&text).map_err(|e| {
            ScenariosError::Report(format!("{}:{}: not a `kms-lab scenarios --json` report: {e}", path.display(), e.line()))
        })?;
        reports.push(report);
    }
    let merged = SuiteReport::merge(reports);
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = merged.scenarios.iter().find(|s| !seen.insert(s.name.clone())) {
        return Err(ScenariosError::Report(format!(
            "scenario `{}` is in more than one report: merge the reports of one sharded run (`--shard K/N` with the same N and selection)",
            twice.name
        )));
    }
    println!("{}", merged.table());
    if let Some(path) = &merge.junit {
        kms_lab_cli_common::files::replace(path, &JUNIT_FILE, merged.junit().as_bytes())?;
        println!("JUnit report: {}", path.display());
    }
    if let Some(path) = &merge.json_out {
        kms_lab_cli_common::files::replace(path, &JSON_FILE, merged.json().as_bytes())?;
        println!("JSON report: {}", path.display());
    }
    Ok(merged.passed())
}

/// Finds or builds kube-apiserver, kubectl, etcd and etcdctl (blocking work, off the runtime).
/// With containers whose images come from a registry (`KMS_LAB_IMAGES=registry`), kube-apiserver
/// and etcd are not provisioned on the host at all (no Go build).
pub async fn provision_binaries(bin_dir: Option<PathBuf>, k8s_version: &str) -> Result<kms_lab_provision::Binaries, ScenariosError> {
    let pulled_images = kms_lab_stack::Runtime::configured().is_ok_and(|r| r == kms_lab_stack::Runtime::Container)
        && kms_lab_stack::images::ImageSource::from_env().is_ok_and(|s| s == kms_lab_stack::images::ImageSource::Registry);
    let options = ProvisionOptions { bin_dir, kubernetes_version: k8s_version.to_owned(), pulled_images, ..ProvisionOptions::default() };
    tokio::task::spawn_blocking(move || kms_lab_provision::provision(&options))
        .await
        .map_err(|e| ScenariosError::ProvisionPanicked(e.to_string()))?
        .map_err(ScenariosError::from)
}

/// `$CARGO_TARGET_DIR/kms-lab/scenario-runs`, or `target/…` under the current directory.
pub fn default_run_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    target.join("kms-lab").join("scenario-runs")
}
