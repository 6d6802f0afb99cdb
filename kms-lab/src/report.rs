//! `kms-lab report --plugin NAME|FILE --out DIR`: one plugin's report. Conformance on every KMS
//! API the plugin serves (the plugin started from its manifest against the mock KMS's dialect),
//! then every applicable core and incident scenario with the plugin in place of kms-plugin, then
//! `report.md`, `report.html`, `junit.xml` and `report.json` in DIR.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use kms_lab_catalog::{Api, Rotation};
use kms_lab_conformance::{Options as ConformanceOptions, Report as ConformanceReport};
use kms_lab_plugin_report::{PluginInfo, PluginReport};
use kms_lab_provision::{Binaries, KUBERNETES_VERSION};
use kms_lab_scenarios::cli::{ScenariosError, jobs_for, prepare_plugin, provision_binaries, run_suite};
use kms_lab_scenarios::plugin_under_test::PluginUnderTest;
use kms_lab_scenarios::runner::{self, RunOptions};
use kms_lab_scenarios::{Tier, load};
use kms_lab_stack::encryption::{Empty, EncryptionConfiguration, Provider};
use kms_lab_stack::{Stack, StackOptions};

/// Options of `kms-lab report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The plugin: a catalog name (`kms-lab plugins list`) or the path of your manifest file.
    #[arg(long, value_name = "NAME|FILE", required_unless_present = "table", requires = "out")]
    pub plugin: Option<String>,
    /// Where `report.md`, `report.html`, `junit.xml` and `report.json` go (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Instead of a run: print the cross-plugin table (markdown) of these earlier reports'
    /// `report.json` files, a column per plugin, then each plugin's findings.
    #[arg(long, value_name = "REPORT_JSON", num_args = 1.., conflicts_with_all = ["plugin", "out"])]
    pub table: Vec<PathBuf>,
    /// Scenario tiers to run (repeatable; default: core and incident).
    #[arg(long, value_enum, default_values_t = [Tier::Core, Tier::Incident])]
    pub tier: Vec<Tier>,
    /// How many scenarios run at once (default: from the cores and free memory, printed).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
    /// Where scenario run directories (component logs) go (default: `target/kms-lab/scenario-runs`);
    /// a failed or interrupted scenario's directory is kept there and named.
    #[arg(long, value_name = "DIR")]
    pub run_root: Option<PathBuf>,
    /// Directory of scenario files (default: `KMS_LAB_SCENARIOS`, else `./scenarios`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Look for kube-apiserver, etcd and kubectl here first.
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The Kubernetes version to run on: v1.37.2, v1.36.3 or v1.35.4 (or the minor, e.g. v1.36);
    /// scenarios that need a newer one are skipped, with why.
    #[arg(long = "kubernetes-version", visible_alias = "k8s-version", value_name = "VERSION", default_value = KUBERNETES_VERSION)]
    pub kubernetes_version: String,
    /// Where the stack's components run: `process` or `container` (Docker, images built offline
    /// from the same binaries). Default: `KMS_LAB_RUNTIME`, else `process`.
    #[arg(long, value_name = "RUNTIME")]
    pub runtime: Option<kms_lab_stack::Runtime>,
}

/// Why no report could be written (a plugin that fails checks or scenarios still gets its report).
#[derive(Debug, thiserror::Error)]
pub enum ReportCommandError {
    /// The plugin, the scenario files or the binaries could not be prepared.
    #[error(transparent)]
    Setup(#[from] ScenariosError),
    /// The plugin did not start in the stack for the conformance run.
    #[error("the plugin did not start for conformance: {0} (its log is kept in the run directory named above)")]
    Stack(#[from] kms_lab_stack::StackError),
    /// Conformance could not run at all against the started plugin.
    #[error("conformance ({api}) could not run: {source}")]
    Conformance {
        /// The API.
        api: Api,
        /// Why.
        #[source]
        source: kms_lab_conformance::ConformanceError,
    },
    /// `--out` is not a writable directory, or a file could not be written.
    #[error(transparent)]
    Render(#[from] kms_lab_plugin_report::ReportError),
    /// `--out` could not be created.
    #[error("cannot create --out {path}: {source} (name a writable directory)")]
    Out {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A `--table` input is not a report.
    #[error(transparent)]
    Table(#[from] kms_lab_plugin_report::table::TableError),
    /// Ctrl-C or SIGTERM: every process was stopped; once conformance had finished, a partial
    /// report (conformance and the scenarios that finished) was written.
    #[error("interrupted; every process was stopped; {}", partial.as_ref().map_or("no report was written (conformance had not finished)".to_owned(), |p| format!("a partial report (the scenarios that finished) is in {}", p.display())))]
    Interrupted {
        /// The partial report's markdown file, if one was written.
        partial: Option<PathBuf>,
    },
}

/// Runs the report (or prints the cross-plugin table of earlier ones); `Ok(true)` when the
/// plugin has no conformance FAIL and no failed scenario.
pub async fn run(args: &ReportArgs) -> Result<bool, ReportCommandError> {
    let (Some(wanted), Some(out)) = (&args.plugin, &args.out) else {
        let reports = args.table.iter().map(|path| kms_lab_plugin_report::table::read(path)).collect::<Result<Vec<_>, _>>()?;
        print!("{}", kms_lab_plugin_report::table::markdown(&reports, 240));
        return Ok(true);
    };
    let kubernetes_version = kms_lab_provision::resolve_supported_kubernetes(&args.kubernetes_version).map_err(ScenariosError::from)?;
    let begun = SystemTime::now();
    let started = Instant::now();
    if let Some(runtime) = args.runtime {
        kms_lab_stack::Runtime::choose_for_process(runtime);
    }
    std::fs::create_dir_all(out).map_err(|source| ReportCommandError::Out { path: out.clone(), source })?;
    kms_lab_plugin_report::check_out_dir(out)?;
    // Every file is parsed before minutes of work; a broken one is reported now.
    let dir = args.dir.clone().unwrap_or_else(runner::default_scenario_dir);
    let scenarios = load::select(&dir, &[], &args.tier).map_err(ScenariosError::from)?;
    let plugin = prepare_plugin(wanted).await?;
    let binaries = provision_binaries(args.bin_dir.clone(), kubernetes_version).await?;
    let run_root = args.run_root.clone().unwrap_or_else(kms_lab_scenarios::cli::default_run_root);

    println!("==> conformance on {} ({})", plugin.manifest().name, api_list(&plugin));
    let conformance = tokio::select! {
        result = conformance(&plugin, &binaries, &run_root) => result?,
        () = kms_lab_cli_common::stop_signal() => return Err(ReportCommandError::Interrupted { partial: None }),
    };

    let jobs = jobs_for(args.jobs);
    println!("==> {} scenario(s) of tier(s) {} on {}, {jobs} at once", scenarios.len(), tiers(&args.tier), plugin.manifest().name);
    let options =
        RunOptions { binaries, run_root: run_root.clone(), seed: None, keep_logs: false, plugin: Some(plugin.clone()), secret_sync: None };
    let (suite, interrupted) = run_suite(&scenarios, &options, jobs, kubernetes_version).await;
    if interrupted {
        println!("\ninterrupted: {} of {} scenario(s) finished; writing the partial report", suite.scenarios.len(), scenarios.len());
    }
    println!("\n{}", suite.table());
    let manifest = plugin.manifest();
    let report = PluginReport {
        plugin: PluginInfo { name: manifest.name.clone(), description: manifest.description.clone() },
        conformance,
        scenarios: suite,
        started: humantime::format_rfc3339_seconds(begun).to_string(),
        finished: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        kubernetes_version: kubernetes_version.to_owned(),
        interrupted,
    };
    let files = kms_lab_plugin_report::render(&report, out)?;
    if interrupted {
        return Err(ReportCommandError::Interrupted { partial: Some(files.markdown) });
    }
    println!(
        "report of {} in {:.0} s: {}\n  {}\n  {}\n  {}\n  {}",
        manifest.name,
        started.elapsed().as_secs_f64(),
        if report.passed() { "no conformance FAIL, no failed scenario" } else { "FAILED (see the report)" },
        files.markdown.display(),
        files.html.display(),
        files.junit.display(),
        files.json.display()
    );
    Ok(report.passed())
}

/// Conformance on each API the plugin serves, on one stack: the mock KMS speaking the plugin's
/// dialect and the plugin from its manifest; the apiserver stores Secrets as identity, so only
/// the suite calls the plugin.
async fn conformance(plugin: &PluginUnderTest, binaries: &Binaries, run_root: &Path) -> Result<Vec<ConformanceReport>, ReportCommandError> {
    let mut options = StackOptions::new("report-conformance", binaries.clone(), run_root);
    options.mock_kms = Some(plugin.0.mock_kms_options());
    options.plugins = vec![plugin.0.spec("plugin-0")];
    options.encryption = Some(EncryptionConfiguration::new(&["secrets"], vec![Provider::Identity(Empty {})]));
    let stack = Stack::launch(options).await?;
    let endpoint = stack.plugin_endpoint("plugin-0").unwrap_or_default();
    let mut reports = Vec::new();
    for &api in &plugin.manifest().apis {
        let mut checks = ConformanceOptions::new(endpoint.clone(), api);
        checks.rotate_command = rotate_command(plugin, &stack);
        let width = kms_lab_conformance::catalogue().iter().map(|c| c.id.len()).max().unwrap_or(0);
        print!(
            "{}",
            kms_lab_conformance::render_header(&endpoint, api, kms_lab_conformance::catalogue().iter().filter(|c| c.api == api).count())
        );
        let result =
            kms_lab_conformance::run_streamed(&checks, |check| print!("{}", kms_lab_conformance::render_check(check, width))).await;
        match result {
            Ok(report) => {
                print!("{}", kms_lab_conformance::render_summary(&report));
                reports.push(report);
            }
            Err(source) => {
                stack.shutdown(true).await;
                return Err(ReportCommandError::Conformance { api, source });
            }
        }
    }
    stack.shutdown(false).await;
    Ok(reports)
}

/// The shell command that rotates the plugin's KEK, when its manifest says how: a rotation in the
/// mock KMS (its admin API, `POST /admin/keys/KEY/rotate`) for a plugin whose key_id follows it,
/// or the manifest's own `rotation: {command}` as rendered for the running plugin (`{pid}` and
/// all), quoted for the shell. `None` (rotation checks skipped, with the reason) for a plugin
/// whose key_id stays the same or that cannot rotate.
fn rotate_command(plugin: &PluginUnderTest, stack: &Stack) -> Option<String> {
    match &plugin.manifest().rotation {
        Rotation::RemoteKeyIdFollows => {
            let kms = stack.mock_kms()?;
            let url = format!("http://127.0.0.1:{}{}", kms.nodes.first()?.port, mock_kms::api::admin::path::rotate(&kms.options.key_id));
            Some(format!("python3 -c \"import urllib.request as u; u.urlopen(u.Request('{url}', method='POST'), timeout=10)\""))
        }
        Rotation::Command(_) => {
            stack.plugin_rotate_command("plugin-0").and_then(|argv| shlex::try_join(argv.iter().map(String::as_str)).ok())
        }
        Rotation::RemoteKeyIdStays | Rotation::None => None,
    }
}

fn api_list(plugin: &PluginUnderTest) -> String {
    plugin.manifest().apis.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
}

fn tiers(tiers: &[Tier]) -> String {
    tiers.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
}
