//! Plays scenarios: each on a fresh real stack, steps in order, progress as it goes, the stack
//! torn down afterwards (its run directory kept when something failed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use kms_lab_catalog::ManifestPlugin;
use kms_lab_provision::Binaries;
use kms_lab_stack::mockkms::MockKmsOptions;
use kms_lab_stack::plugin::{PluginKek, PluginSpec};
use kms_lab_stack::{EncryptionBuilder, Readiness, Stack, StackOptions};
use serde::{Deserialize, Serialize};

use crate::components;
use crate::encryption::build_encryption;
use crate::model::{KekKind, Scenario, StartOrder, Tier};
use crate::plugin_under_test::PluginUnderTest;
use crate::steps;
use crate::steps::sync::SyncController;
use crate::timeline::{KmsEvent, TimelineReport};
use crate::world::{PLAINTEXT_MARKER, World};

/// How to run scenarios.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The provisioned upstream binaries.
    pub binaries: Binaries,
    /// Where each scenario's run directory (component logs) is created.
    pub run_root: PathBuf,
    /// Replaces every scenario's own seed.
    pub seed: Option<u64>,
    /// Keep run directories of passing scenarios too.
    pub keep_logs: bool,
    /// The plugin that stands in for `kms-plugin` in every scenario (`--plugin`), if any.
    pub plugin: Option<PluginUnderTest>,
    /// The secret sync controller every scenario with `secret_sync:` runs (`--secret-sync`),
    /// instead of the one it names.
    pub secret_sync: Option<SyncController>,
}

/// One step as it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based position (nested `load` steps are reported inside their parent's line).
    pub number: usize,
    /// When it began, seconds since the scenario (its stack) started.
    #[serde(default)]
    pub started_s: f64,
    /// What the step does.
    pub label: String,
    /// Whether it passed.
    pub passed: bool,
    /// How long it took.
    pub seconds: f64,
    /// What it saw, or why it failed.
    pub detail: String,
    /// Why the step was not carried out: the stack cannot show what it looks at (a third-party
    /// component that records nothing to look at). Such a step did not fail (`passed` is true),
    /// and the reports count and mark it apart from the steps that passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_observed: Option<String>,
}

/// A scenario's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioOutcome {
    /// The file stem.
    pub name: String,
    /// The title.
    pub title: String,
    /// The tier.
    pub tier: Tier,
    /// The file.
    pub file: PathBuf,
    /// Upstream references.
    pub references: Vec<String>,
    /// The seed used.
    pub seed: u64,
    /// Whether every step passed.
    pub passed: bool,
    /// Wall time, stack start and teardown included.
    pub seconds: f64,
    /// The steps that ran.
    pub steps: Vec<StepRecord>,
    /// Steps never reached because an earlier one failed.
    pub skipped_steps: usize,
    /// Why it failed.
    pub failure: Option<String>,
    /// The run directory with every component's log, when kept.
    pub run_dir: Option<PathBuf>,
    /// Figures measured along the way.
    pub figures: BTreeMap<String, f64>,
    /// Values written to etcd during the run that the revision recorder scanned for plaintext.
    #[serde(default)]
    pub etcd_revisions_checked: u64,
    /// Why the scenario did not run (e.g. the plugin lacks what it requires); reported, never silent.
    #[serde(default)]
    pub skipped: Option<String>,
    /// API and KMS calls over time, for the timeline plot.
    #[serde(default)]
    pub timeline: TimelineReport,
    /// The components it ran beside the stack and which variant of each (`secret_sync` →
    /// `ack-secret-manager`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, String>,
}

impl ScenarioOutcome {
    /// Ends a scenario that failed before its first step (a plugin, the stack or the revision
    /// recorder did not start): every step counts as not reached.
    fn failed_before_steps(mut self, scenario: &Scenario, failure: String, started: Instant, progress: &dyn Fn(&str)) -> Self {
        progress(&format!("  ✗ {failure}"));
        self.failure = Some(failure);
        self.skipped_steps = scenario.steps.len();
        self.seconds = started.elapsed().as_secs_f64();
        self
    }

    /// The outcome of a scenario that was not run, with the reason every report shows.
    pub fn skipped(scenario: &Scenario, seed: u64, reason: String) -> Self {
        Self {
            name: scenario.name.clone(),
            title: scenario.title.clone(),
            tier: scenario.tier,
            file: scenario.path.clone(),
            references: scenario.references.clone(),
            seed,
            passed: true,
            seconds: 0.0,
            steps: Vec::new(),
            skipped_steps: scenario.steps.len(),
            failure: None,
            run_dir: None,
            figures: BTreeMap::new(),
            etcd_revisions_checked: 0,
            skipped: Some(reason),
            timeline: TimelineReport::default(),
            components: BTreeMap::new(),
        }
    }
}

/// The stack a scenario asks for; `manifests` holds the prepared plugin of each plugin that runs
/// from a manifest (the plugin under test, or the scenario's own `use:`).
fn stack_options(scenario: &Scenario, options: &RunOptions, seed: u64, manifests: &BTreeMap<String, Arc<ManifestPlugin>>) -> StackOptions {
    let spec = &scenario.stack;
    let mut stack = StackOptions::new(&scenario.name, options.binaries.clone(), &options.run_root);
    stack.plugins = spec
        .plugins
        .iter()
        .map(|decl| {
            if let Some(plugin) = manifests.get(&decl.name) {
                return plugin.spec(&decl.name);
            }
            let on_kms = match decl.kek {
                Some(kind) => kind == KekKind::MockKms,
                None => spec.mock_kms.is_some(),
            };
            PluginSpec {
                name: decl.name.clone(),
                kek: if on_kms { PluginKek::MockKms } else { PluginKek::Local },
                extra_args: decl.args.clone(),
                defects: decl.defects.iter().map(|d| d.name()).collect(),
            }
        })
        .collect();
    let seeded = || MockKmsOptions { extra_args: vec!["--seed".into(), seed.to_string()], ..MockKmsOptions::default() };
    stack.mock_kms = spec.mock_kms.as_ref().map(|kms| {
        let mut options = MockKmsOptions { nodes: kms.nodes, sealed: kms.sealed, ..seeded() };
        if let Some(vault) = &kms.vault {
            options.entry_node = vault.plugin_node;
            if let Some(ttl) = &vault.token_ttl {
                options.extra_args.extend(["--vault-token-ttl".to_owned(), format!("{}s", ttl.0.as_secs().max(1))]);
            }
        }
        options
    });
    // A plugin from a manifest always has its KEK in the mock KMS, spoken in its own dialect.
    for plugin in manifests.values() {
        plugin.serve_dialect_on(stack.mock_kms.get_or_insert_with(seeded));
    }
    // So does every component beside the stack.
    if let Some(kms) = stack.mock_kms.as_mut() {
        components::serve_dialects(spec, options, kms);
    }
    stack.start_plugins_first = spec.start == StartOrder::PluginsFirst;
    stack.start_plugins = stack.start_plugins_first;
    let sealed = spec.mock_kms.as_ref().is_some_and(|k| k.sealed);
    stack.readiness = if stack.start_plugins_first && !sealed { Readiness::Ready } else { Readiness::Live };
    stack.kms_v1_gate = spec.kms_v1_gate;
    stack.apiserver_args = spec.apiserver_args.clone();
    stack.controller_manager = spec.controller_manager;
    let encryption = spec.encryption.clone();
    stack.encryption_builder = Some(EncryptionBuilder(Arc::new(move |sockets| {
        // Plugin names were validated when the file was loaded, so every socket resolves.
        build_encryption(&encryption, seed, sockets).unwrap_or_else(|_| kms_lab_stack::EncryptionConfiguration::new(&[], Vec::new()))
    })));
    stack
}

/// The plugins of `scenario` that run from a manifest, by stack name, binaries located (built on
/// first use: minutes for a Go plugin); `Err` says which plugin could not be prepared.
async fn manifest_plugins(scenario: &Scenario, options: &RunOptions) -> Result<BTreeMap<String, Arc<ManifestPlugin>>, String> {
    let mut out = BTreeMap::new();
    for decl in &scenario.stack.plugins {
        if let Some(under_test) = options.plugin.as_ref().filter(|_| PluginUnderTest::replaces(decl)) {
            out.insert(decl.name.clone(), under_test.0.clone());
        } else if let Some(manifest) = decl.manifest.clone() {
            let name = decl.name.clone();
            let prepared = tokio::task::spawn_blocking(move || ManifestPlugin::prepare(manifest, true))
                .await
                .map_err(|e| format!("preparing plugin `{name}` stopped unexpectedly: {e}"))?
                .map_err(|e| format!("plugin `{name}` cannot run: {e}"))?;
            out.insert(decl.name.clone(), Arc::new(prepared));
        }
    }
    Ok(out)
}

/// What to do with the stack of a scenario that passed, before it is torn down (the lab keeps it
/// up until Ctrl-C).
pub type Hold<'h> = Box<dyn for<'w> FnOnce(&'w World) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'w>> + 'h>;

/// Runs one scenario on a fresh stack; `progress` receives one line per event.
pub async fn run_scenario(scenario: &Scenario, options: &RunOptions, progress: &dyn Fn(&str)) -> ScenarioOutcome {
    run_scenario_then(scenario, options, progress, None).await
}

/// [`run_scenario`], and when every step passed, `hold` runs with the live stack before teardown.
pub async fn run_scenario_then(
    scenario: &Scenario,
    options: &RunOptions,
    progress: &dyn Fn(&str),
    hold: Option<Hold<'_>>,
) -> ScenarioOutcome {
    let started = Instant::now();
    let seed = options.seed.unwrap_or(scenario.seed);
    let mut outcome = ScenarioOutcome {
        name: scenario.name.clone(),
        title: scenario.title.clone(),
        tier: scenario.tier,
        file: scenario.path.clone(),
        references: scenario.references.clone(),
        seed,
        passed: false,
        seconds: 0.0,
        steps: Vec::new(),
        skipped_steps: 0,
        failure: None,
        run_dir: None,
        figures: BTreeMap::new(),
        etcd_revisions_checked: 0,
        skipped: None,
        timeline: TimelineReport::default(),
        components: components::describe(&scenario.stack, options),
    };
    if let Some(reason) = scenario.min_kubernetes.as_ref().and_then(|m| m.why_not(&options.binaries.kube_apiserver.version)) {
        progress(&format!("○ {} skipped: {reason}", scenario.name));
        return ScenarioOutcome::skipped(scenario, seed, reason);
    }
    let why_not = match &options.plugin {
        Some(plugin) => plugin.why_not(scenario),
        None if scenario.stack.plugins.iter().any(PluginUnderTest::replaces) => crate::plugin_under_test::why_not_own_plugin(scenario),
        None => None,
    };
    if let Some(reason) = why_not {
        progress(&format!("○ {} skipped: {reason}", scenario.name));
        return ScenarioOutcome::skipped(scenario, seed, reason);
    }
    progress(&format!("▶ {} — {} (seed {seed})", scenario.name, scenario.title));
    for reference in &scenario.references {
        progress(&format!("  reference: {reference}"));
    }
    let manifests = match manifest_plugins(scenario, options).await {
        Ok(manifests) => manifests,
        Err(failure) => return outcome.failed_before_steps(scenario, failure, started, progress),
    };
    for (name, plugin) in &manifests {
        progress(&format!("  {name}: {} ({})", plugin.manifest().name, plugin.binary().display()));
    }
    let prepared = match components::prepare(&scenario.stack, options, progress).await {
        Ok(prepared) => prepared,
        Err(failure) => return outcome.failed_before_steps(scenario, failure, started, progress),
    };
    let stack = match Stack::launch(stack_options(scenario, options, seed, &manifests)).await {
        Ok(stack) => stack,
        Err(error) => {
            let failure = format!("the stack did not start: {error} (component logs kept under {})", options.run_root.display());
            return outcome.failed_before_steps(scenario, failure, started, progress);
        }
    };
    progress(&format!("  stack up in {:.1} s; logs in {}", started.elapsed().as_secs_f64(), stack.run_dir().display()));
    // Every revision written from now on is scanned for plaintext, not only the last one.
    let history = match stack.record_etcd_history("/registry/", PLAINTEXT_MARKER.as_bytes()).await {
        Ok(recorder) => recorder,
        Err(error) => {
            outcome.run_dir = stack.shutdown(true).await;
            let failure = format!("the etcd revision recorder did not start: {error}");
            return outcome.failed_before_steps(scenario, failure, started, progress);
        }
    };
    let mut world = World::new(stack, seed, Some(history));
    match components::start(&scenario.stack, &world.stack, seed, prepared, progress).await {
        Ok(running) => world.components = running,
        Err(failure) => {
            progress(&format!("  ✗ {failure}"));
            outcome.failure = Some(failure);
            outcome.skipped_steps = scenario.steps.len();
        }
    }
    let total = if outcome.failure.is_some() { 0 } else { scenario.steps.len() };
    for (index, step) in scenario.steps.iter().take(total).enumerate() {
        let label = steps::label(step);
        let step_started = Instant::now();
        let started_s = (world.timeline().origin().elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        if let Some(why) = step.kind().unobservable(&world) {
            progress(&format!("  ○ [{:>2}/{total}] {label}: not observed: {why}", index + 1));
            let detail = format!("not observed: {why}");
            outcome.steps.push(StepRecord {
                number: index + 1,
                started_s,
                label,
                passed: true,
                seconds: 0.0,
                detail,
                not_observed: Some(why),
            });
            continue;
        }
        let result = steps::run(&mut world, step).await;
        let seconds = step_started.elapsed().as_secs_f64();
        let (passed, detail) = match result {
            Ok(detail) => (true, detail),
            Err(error) => (false, error.to_string()),
        };
        let mark = if passed { "✓" } else { "✗" };
        if passed && step.kind().narrates() {
            progress(&format!("\n==> [{:>2}/{total}] {detail}", index + 1));
        } else {
            // Multi-line details (a `show` hexdump) are indented under their step.
            let detail = detail.replace('\n', "\n        ");
            progress(&format!("  {mark} [{:>2}/{total}] {label} ({seconds:.1} s): {detail}", index + 1));
        }
        outcome.steps.push(StepRecord {
            number: index + 1,
            started_s,
            label: label.clone(),
            passed,
            seconds,
            detail: detail.clone(),
            not_observed: None,
        });
        if !passed {
            outcome.failure = Some(format!("step {} `{label}`: {detail}", index + 1));
            outcome.skipped_steps = total - index - 1;
            break;
        }
    }
    outcome.passed = outcome.failure.is_none();
    if let (true, Some(hold)) = (outcome.passed, hold) {
        hold(&world).await;
    }
    world.components.stop().await;
    outcome.figures = std::mem::take(&mut world.figures);
    if let Some(history) = world.history() {
        let summary = history.summary();
        outcome.etcd_revisions_checked = summary.revisions;
    }
    world.stop_history();
    // What the stack cost, for choosing how many scenarios run at once (`schedule::default_jobs`).
    let used = world.stack.resource_use();
    outcome.figures.insert("stack.cpu_s".into(), (used.cpu_seconds * 10.0).round() / 10.0);
    outcome.figures.insert("stack.peak_rss_mib".into(), (used.peak_rss_bytes as f64 / (1u64 << 20) as f64).round());
    outcome.timeline = timeline_report(&world).await;
    let keep = !outcome.passed || options.keep_logs;
    outcome.run_dir = world.stack.shutdown(keep).await;
    outcome.seconds = started.elapsed().as_secs_f64();
    match (&outcome.run_dir, outcome.passed) {
        (Some(dir), false) => {
            progress(&format!("  ✗ FAILED after {:.1} s; every component's log is kept in {}", outcome.seconds, dir.display()))
        }
        (_, false) => progress(&format!("  ✗ FAILED after {:.1} s", outcome.seconds)),
        (_, true) => progress(&format!("  ✓ passed in {:.1} s", outcome.seconds)),
    }
    outcome
}

/// The scenario's API calls and the mock KMS's audit log, on one time axis.
async fn timeline_report(world: &World) -> TimelineReport {
    let timeline = world.timeline();
    let kms = match world.stack.mock_kms() {
        Some(kms) => kms.audit_records(0).await.unwrap_or_default(),
        None => Vec::new(),
    };
    TimelineReport {
        api: timeline.api_events(),
        kms: kms
            .iter()
            .map(|r| KmsEvent {
                at_s: (timeline.seconds_at(r.time_unix_ms) * 1000.0).round() / 1000.0,
                action: r.action.name().to_owned(),
                ok: r.outcome == mock_kms::api::Outcome::Ok,
                caller: r.caller.map(|c| c.name().to_owned()),
            })
            .collect(),
    }
}

/// The directory scenario files are read from by default: `KMS_LAB_SCENARIOS`, `./scenarios`
/// when run from a checkout, else [`repository_scenario_dir`].
pub fn default_scenario_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KMS_LAB_SCENARIOS") {
        return PathBuf::from(dir);
    }
    let local = Path::new("scenarios");
    if local.join("startup-ordering.yaml").is_file() {
        return local.to_owned();
    }
    repository_scenario_dir()
}

/// The repository's `scenarios/` folder this crate was built beside (the workspace root's).
pub fn repository_scenario_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).join("scenarios")
}
