//! Reading scenario files: parse into the typed model, then check every reference (plugins,
//! apiservers, marks, fault profiles) so a mistake is reported with its file and line before
//! any process starts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::model::{Component, EncryptionSpec, KekKind, KmsApi, ProviderSpec, Scenario, Step, Tier};

/// Why a scenario file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not fit the scenario model.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What was wrong and what was expected.
        message: String,
    },
    /// The YAML parses but a step refers to something the scenario does not have.
    #[error("{path}:{line}: step {step}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the (top-level) step.
        line: usize,
        /// 1-based step number.
        step: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The directory holds no scenario file at all (a wrong `--dir`?).
    #[error("no scenario files (`*.yaml`) in {dir}: check `--dir` (or `KMS_LAB_SCENARIOS`); the suite's files are in the repository's `scenarios/`")]
    NoFiles {
        /// The directory searched.
        dir: PathBuf,
    },
    /// Names given on the command line match no scenario file.
    #[error("no scenario named {wanted} in {dir} (known: {known})")]
    UnknownName {
        /// The names asked for.
        wanted: String,
        /// The directory searched.
        dir: PathBuf,
        /// The scenarios there are.
        known: String,
    },
}

/// Parses one scenario file and validates its references.
pub fn load_file(path: &Path) -> Result<Scenario, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io { path: path.to_owned(), source })?;
    parse(path, &text)
}

/// Parses scenario text (`path` names it in errors) and validates its references.
pub fn parse(path: &Path, text: &str) -> Result<Scenario, LoadError> {
    let mut scenario: Scenario = serde_yaml::from_str(text).map_err(|error| {
        let (line, column) = error.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
        // The location is in front already; drop serde_yaml's trailing copy of it.
        let message = error.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
        LoadError::Parse { path: path.to_owned(), line, column, message }
    })?;
    scenario.name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    scenario.path = path.to_owned();
    Validator::new(&scenario, text).check()?;
    Ok(scenario)
}

/// Every `*.yaml` scenario under `dir` (and its subdirectories), sorted by path. Directories
/// named `tests` are skipped: they hold deliberately invalid files (`tests/invalid/`).
pub fn discover(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current).map_err(|source| LoadError::Io { path: current.clone(), source })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "tests" && n != "src" && n != "target") {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Loads the scenarios to run: the named ones (by file stem, in any tier), or every one whose
/// tier is in `tiers`. Every file is parsed, so one broken file is reported even when not selected.
pub fn select(dir: &Path, names: &[String], tiers: &[Tier]) -> Result<Vec<Scenario>, LoadError> {
    let files = discover(dir)?;
    if files.is_empty() {
        return Err(LoadError::NoFiles { dir: dir.to_owned() });
    }
    let all = files.iter().map(|p| load_file(p)).collect::<Result<Vec<_>, _>>()?;
    if names.is_empty() {
        return Ok(all.into_iter().filter(|s| tiers.contains(&s.tier)).collect());
    }
    let missing: Vec<&String> = names.iter().filter(|n| !all.iter().any(|s| &s.name == *n)).collect();
    if !missing.is_empty() {
        return Err(LoadError::UnknownName {
            wanted: missing.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
            dir: dir.to_owned(),
            known: all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
        });
    }
    Ok(names.iter().filter_map(|n| all.iter().find(|s| &s.name == n).cloned()).collect())
}

/// Checks references step by step, tracking what exists at each point (apiservers added, marks set).
struct Validator<'a> {
    scenario: &'a Scenario,
    step_lines: Vec<usize>,
    plugins: BTreeSet<String>,
    apiservers: usize,
    marks: BTreeSet<String>,
    step: usize,
}

impl<'a> Validator<'a> {
    fn new(scenario: &'a Scenario, text: &str) -> Self {
        Self {
            scenario,
            step_lines: top_level_step_lines(text),
            plugins: scenario.stack.plugins.iter().map(|p| p.name.clone()).collect(),
            apiservers: 1,
            marks: BTreeSet::new(),
            step: 0,
        }
    }

    fn invalid(&self, message: String) -> LoadError {
        let line = self.step_lines.get(self.step.saturating_sub(1)).copied().unwrap_or(1);
        LoadError::Invalid { path: self.scenario.path.clone(), line, step: self.step, message }
    }

    fn check(mut self) -> Result<(), LoadError> {
        let stack = &self.scenario.stack;
        let mut names = BTreeSet::new();
        for plugin in &stack.plugins {
            if !names.insert(&plugin.name) {
                return Err(self.invalid(format!("plugin `{}` is declared twice", plugin.name)));
            }
            if plugin.kek == Some(KekKind::MockKms) && stack.mock_kms.is_none() {
                return Err(self.invalid(format!("plugin `{}` has `kek: mock-kms` but the stack has no `mock_kms:`", plugin.name)));
            }
        }
        self.encryption(&stack.encryption)?;
        for step in &self.scenario.steps {
            self.step += 1;
            self.check_step(step)?;
        }
        Ok(())
    }

    fn encryption(&self, spec: &EncryptionSpec) -> Result<(), LoadError> {
        for (resource, providers) in spec {
            if !matches!(resource.as_str(), "secrets" | "configmaps") {
                return Err(self.invalid(format!("resource `{resource}`: scenarios encrypt `secrets` or `configmaps`")));
            }
            if providers.is_empty() {
                return Err(self.invalid(format!("resource `{resource}` has no providers; add at least `identity: {{}}`")));
            }
            for provider in providers {
                if let ProviderSpec::Kms(kms) = provider {
                    self.plugin(&kms.plugin)?;
                    if kms.api == KmsApi::V2 && kms.cachesize.is_some() {
                        return Err(self.invalid(format!("kms provider `{}`: `cachesize` applies to `api: v1` only", kms.name)));
                    }
                }
            }
        }
        Ok(())
    }

    fn plugin(&self, name: &str) -> Result<(), LoadError> {
        if self.plugins.contains(name) {
            return Ok(());
        }
        let known = self.plugins.iter().cloned().collect::<Vec<_>>().join(", ");
        Err(self.invalid(format!("no plugin named `{name}` in `stack.plugins` (known: {known})")))
    }

    fn apiserver(&self, index: usize) -> Result<(), LoadError> {
        if index < self.apiservers {
            return Ok(());
        }
        Err(self
            .invalid(format!("apiserver-{index} does not exist here (apiservers 0..{}; add one with `add_apiserver`)", self.apiservers)))
    }

    fn mark(&self, name: &str) -> Result<(), LoadError> {
        if self.marks.contains(name) {
            return Ok(());
        }
        Err(self.invalid(format!("mark `{name}` is not set by an earlier `mark:` step")))
    }

    fn mock_kms(&self, what: &str) -> Result<(), LoadError> {
        match &self.scenario.stack.mock_kms {
            Some(_) => Ok(()),
            None => Err(self.invalid(format!("`{what}` needs the mock KMS: add `mock_kms: {{}}` under `stack:`"))),
        }
    }

    fn component(&self, component: &Component) -> Result<(), LoadError> {
        match component {
            Component::Etcd => Ok(()),
            Component::Apiserver(index) => self.apiserver(*index),
            Component::MockKms => self.mock_kms("mock-kms"),
            Component::MockKmsNode(index) => {
                self.mock_kms("mock-kms-N")?;
                let nodes = self.scenario.stack.mock_kms.as_ref().map_or(0, |k| k.nodes);
                if *index >= nodes {
                    return Err(self.invalid(format!("mock-kms-{index} does not exist (the mock KMS has {nodes} node(s))")));
                }
                Ok(())
            }
            Component::Plugin(name) => self.plugin(name),
        }
    }

    fn key_id(&self, expect: &crate::model::KeyIdExpect) -> Result<(), LoadError> {
        self.plugin(&expect.plugin)?;
        match (&expect.same_as, &expect.differs_from) {
            (Some(mark), None) | (None, Some(mark)) => self.mark(mark),
            _ => Err(self.invalid("`key_id` needs exactly one of `same_as: MARK` or `differs_from: MARK`".into())),
        }
    }

    fn check_step(&mut self, step: &Step) -> Result<(), LoadError> {
        match step {
            Step::Note(_) | Step::ExpectNoPlaintextInEtcd => Ok(()),
            Step::Start(c) | Step::Stop(c) | Step::Kill(c) | Step::Restart(c) => self.component(c),
            Step::AddApiserver(add) => {
                self.encryption(&add.encryption)?;
                self.apiservers += 1;
                Ok(())
            }
            Step::Encryption(e) => {
                if let Some(index) = e.apiserver {
                    self.apiserver(index)?;
                }
                self.encryption(&e.resources)
            }
            Step::Create(objects) | Step::Update(objects) | Step::Read(objects) | Step::Delete(objects) => {
                self.apiserver(objects.apiserver)?;
                if matches!(step, Step::Create(_)) && (objects.prefix.is_none() || objects.count.is_none()) {
                    return Err(self.invalid("`create` needs `prefix` and `count`".into()));
                }
                Ok(())
            }
            Step::Rewrite(rewrite) => self.apiserver(rewrite.apiserver),
            Step::Load(load) => {
                self.apiserver(load.apiserver)?;
                if load.writers == 0 {
                    return Err(self.invalid("`load` needs at least one writer".into()));
                }
                for inner in &load.during {
                    self.check_step(inner)?;
                }
                Ok(())
            }
            Step::Faults(faults) => {
                self.mock_kms("faults")?;
                if let Some(node) = faults.node {
                    self.component(&Component::MockKmsNode(node))?;
                }
                let yaml = serde_yaml::to_string(&faults.profile).unwrap_or_default();
                mock_kms::FaultProfile::from_yaml(&yaml).map(drop).map_err(|e| self.invalid(format!("fault profile: {e}")))
            }
            Step::ClearFaults => self.mock_kms("clear_faults"),
            Step::RotateKek => self.mock_kms("rotate_kek"),
            Step::SetCredentials(_) => self.mock_kms("set_credentials"),
            Step::Unseal(shares) => {
                if !self.scenario.stack.mock_kms.as_ref().is_some_and(|k| k.sealed) {
                    return Err(self.invalid("`unseal` needs a sealed mock KMS: `mock_kms: {sealed: true}`".into()));
                }
                if !(1..=5).contains(shares) {
                    return Err(self.invalid(format!("`unseal: {shares}`: the mock KMS has 5 shares; give 1 to 5")));
                }
                Ok(())
            }
            Step::DisableKeyVersion(disable) => {
                self.mock_kms("disable_key_version")?;
                self.plugin(&disable.plugin)?;
                self.mark(&disable.mark)
            }
            Step::Mark(name) => {
                self.marks.insert(name.clone());
                Ok(())
            }
            Step::WaitUntil(wait) => {
                let set = [wait.health.is_some(), wait.plugin_status.is_some(), wait.apiserver_key_id.is_some(), wait.metric.is_some()];
                if set.iter().filter(|s| **s).count() != 1 {
                    return Err(self.invalid(
                        "`wait_until` needs exactly one condition: `health`, `plugin_status`, `apiserver_key_id` or `metric`".into(),
                    ));
                }
                if let Some(health) = &wait.health {
                    self.apiserver(health.apiserver)?;
                }
                if let Some(status) = &wait.plugin_status {
                    self.plugin(&status.plugin)?;
                    if let Some(key_id) = &status.key_id {
                        self.key_id(key_id)?;
                    }
                }
                if let Some(seen) = &wait.apiserver_key_id {
                    self.apiserver(seen.apiserver)?;
                    self.plugin(&seen.plugin)?;
                }
                if let Some(metric) = &wait.metric {
                    self.apiserver(metric.apiserver)?;
                }
                Ok(())
            }
            Step::ExpectHealth(health) => self.apiserver(health.apiserver),
            Step::ExpectEtcd(expect) => {
                if let Some(key_id) = &expect.key_id {
                    self.key_id(key_id)?;
                }
                Ok(())
            }
            Step::ExpectAudit(audit) => {
                self.mock_kms("expect_audit")?;
                self.mark(&audit.since)
            }
            Step::ExpectMetric(metric) => self.apiserver(metric.apiserver),
            Step::ExpectPluginStatus(status) => {
                self.plugin(&status.plugin)?;
                match &status.key_id {
                    Some(key_id) => self.key_id(key_id),
                    None => Ok(()),
                }
            }
            Step::Lint(lint) => {
                self.apiserver(lint.apiserver)?;
                for other in &lint.against {
                    self.apiserver(*other)?;
                }
                if lint.expect.is_empty() && lint.absent.is_empty() {
                    return Err(self.invalid("`lint` needs `expect: [finding ids]` or `absent: [finding ids]`".into()));
                }
                for id in lint.expect.iter().chain(&lint.absent) {
                    if !kms_lab_lint::FINDING_IDS.contains(&id.as_str()) {
                        return Err(
                            self.invalid(format!("`lint`: unknown finding id `{id}` (known: {})", kms_lab_lint::FINDING_IDS.join(", ")))
                        );
                    }
                }
                Ok(())
            }
            Step::ExpectSocket(socket) => self.plugin(&socket.plugin),
            Step::List(list) => self.apiserver(list.apiserver),
            Step::CountDekSources(count) => {
                if let (Some(min), Some(max)) = (count.at_least, count.at_most)
                    && min > max
                {
                    return Err(self.invalid(format!("`count_dek_sources`: `at_least: {min}` is above `at_most: {max}`")));
                }
                Ok(())
            }
            Step::TimeUntil(time) => {
                let set = [time.health.is_some(), time.plugin_status.is_some(), time.metric.is_some(), time.write.is_some()];
                if set.iter().filter(|s| **s).count() != 1 {
                    return Err(
                        self.invalid("`time_until` needs exactly one condition: `health`, `plugin_status`, `metric` or `write`".into())
                    );
                }
                if let Some(health) = &time.health {
                    self.apiserver(health.apiserver)?;
                }
                if let Some(status) = &time.plugin_status {
                    self.plugin(&status.plugin)?;
                    if let Some(key_id) = &status.key_id {
                        self.key_id(key_id)?;
                    }
                }
                if let Some(metric) = &time.metric {
                    self.apiserver(metric.apiserver)?;
                }
                if let Some(write) = &time.write {
                    self.apiserver(write.apiserver)?;
                }
                if !time.must_happen && time.write.is_none() {
                    return Err(self.invalid("`time_until`: `must_happen: false` is for `write` probes only".into()));
                }
                Ok(())
            }
            Step::ObserveHealth(observe) => {
                self.apiserver(observe.apiserver)?;
                let interval = observe.interval.map_or(std::time::Duration::from_secs(1), |d| d.0);
                if interval.is_zero() || interval > observe.duration.0 {
                    return Err(self.invalid("`observe_health`: `interval` must be above zero and at most `for`".into()));
                }
                Ok(())
            }
            Step::RestartApiserver(restart) => self.apiserver(restart.apiserver),
            Step::ColdStart(cold) => self.apiserver(cold.apiserver),
            Step::SetCurrentKeyVersion(version) => {
                self.mock_kms("set_current_key_version")?;
                self.plugin(&version.plugin)?;
                self.mark(&version.mark)
            }
            Step::KmsCalls(calls) => {
                self.mock_kms("kms_calls")?;
                if calls.per_object_at_most.is_some() && calls.objects.is_none() {
                    return Err(self.invalid("`kms_calls`: `per_object_at_most` needs `objects: N`".into()));
                }
                self.mark(&calls.since)
            }
        }
    }
}

/// The 1-based line of each top-level item of the `steps:` list.
fn top_level_step_lines(text: &str) -> Vec<usize> {
    let mut lines = text.lines().enumerate();
    let Some(_) = lines.by_ref().find(|(_, line)| line.trim_end() == "steps:") else {
        return Vec::new();
    };
    let mut indent = None;
    let mut found = Vec::new();
    for (number, line) in lines {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let depth = line.len() - trimmed.len();
        if depth == 0 && !trimmed.starts_with('-') {
            break;
        }
        if trimmed.starts_with("- ") || trimmed == "-" {
            let expected = *indent.get_or_insert(depth);
            if depth == expected {
                found.push(number + 1);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Scenario, LoadError> {
        parse(Path::new("test.yaml"), text)
    }

    const HEADER: &str =
        "title: t\nstack:\n  encryption:\n    secrets:\n      - kms: {name: k, api: v2, plugin: plugin-0}\n      - identity: {}\nsteps:\n";

    #[test]
    fn a_valid_file_parses_into_typed_steps() {
        let scenario = parse_text(&format!(
            "{HEADER}  - create: {{prefix: s, count: 3}}\n  - mark: m\n  - rotate_kek\n  - read: {{prefix: s, expect_error: 'deadline'}}\n"
        ));
        // rotate_kek needs the mock KMS: the error names the step's line and the fix.
        let error = scenario.unwrap_err().to_string();
        assert!(error.starts_with("test.yaml:10: step 3:"), "{error}");
        assert!(error.contains("add `mock_kms: {}`"), "{error}");
    }

    #[test]
    fn an_unknown_step_names_the_line_and_the_known_steps() {
        let error =
            parse_text(&format!("{HEADER}  - create: {{prefix: s, count: 3}}\n  - crate: {{prefix: s}}\n")).unwrap_err().to_string();
        assert!(error.starts_with("test.yaml:9:"), "{error}");
        assert!(error.contains("unknown variant `crate`") && error.contains("create"), "{error}");
    }

    #[test]
    fn a_typo_in_a_field_names_the_field_and_the_known_ones() {
        let error = parse_text(&format!("{HEADER}  - create: {{prefix: s, cout: 3}}\n")).unwrap_err().to_string();
        assert!(error.starts_with("test.yaml:8:"), "{error}");
        assert!(error.contains("unknown field `cout`") && error.contains("count"), "{error}");
    }

    #[test]
    fn a_bad_value_says_what_was_expected() {
        let error = parse_text(&format!("{HEADER}  - wait_until: {{within: soon, health: {{path: /readyz, healthy: true}}}}\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("`soon` is not a duration"), "{error}");
        let error = parse_text(&format!("{HEADER}  - read: {{expect_error: '(unclosed'}}\n")).unwrap_err().to_string();
        assert!(error.contains("is not a regular expression"), "{error}");
    }

    #[test]
    fn references_are_checked_before_anything_runs() {
        let error = parse_text(&format!("{HEADER}  - kill: plugin-9\n")).unwrap_err().to_string();
        assert!(error.contains("no plugin named `plugin-9`") && error.contains("known: plugin-0"), "{error}");
        let error = parse_text(&format!("{HEADER}  - read: {{apiserver: 1}}\n")).unwrap_err().to_string();
        assert!(error.contains("apiserver-1 does not exist") && error.contains("add_apiserver"), "{error}");
        let error = parse_text(&format!("{HEADER}  - expect_plugin_status: {{plugin: plugin-0, key_id: {{same_as: before}}}}\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("mark `before` is not set"), "{error}");
    }

    #[test]
    fn fault_profiles_are_validated_by_the_mock_kms_itself() {
        let text =
            format!("{HEADER}  - faults: {{profile: {{latancy: {{fixed_ms: 5}}}}}}\n").replace("stack:\n", "stack:\n  mock_kms: {}\n");
        let error = parse_text(&text).unwrap_err().to_string();
        assert!(error.contains("latancy"), "{error}");
    }

    #[test]
    fn incident_steps_are_validated_before_anything_runs() {
        let error = parse_text(&format!("{HEADER}  - lint: {{expect: [identity-frist]}}\n")).unwrap_err().to_string();
        assert!(error.starts_with("test.yaml:8: step 1:") && error.contains("unknown finding id `identity-frist`"), "{error}");
        assert!(error.contains("identity-first"), "{error}");
        let error = parse_text(&format!("{HEADER}  - time_until: {{figure: f, within: 5s}}\n")).unwrap_err().to_string();
        assert!(error.contains("`time_until` needs exactly one condition"), "{error}");
        let error = parse_text(&format!("{HEADER}  - observe_health: {{path: /livez, for: 1s, interval: 2s}}\n")).unwrap_err().to_string();
        assert!(error.contains("`interval` must be above zero and at most `for`"), "{error}");
        let error = parse_text(&format!("{HEADER}  - restart_apiserver: {{wait: forever}}\n")).unwrap_err().to_string();
        assert!(error.starts_with("test.yaml:8:") && error.contains("live") && error.contains("serving"), "{error}");
        let error = parse_text(&format!("{HEADER}  - expect_socket: {{plugin: plugin-9, exists: true}}\n")).unwrap_err().to_string();
        assert!(error.contains("no plugin named `plugin-9`"), "{error}");
    }

    #[test]
    fn a_directory_without_scenario_files_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = select(dir.path(), &[], &[Tier::Core]).unwrap_err().to_string();
        assert!(error.starts_with("no scenario files") && error.contains("--dir"), "{error}");
    }

    #[test]
    fn every_scenario_in_the_repository_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let files = discover(dir).unwrap();
        assert!(files.len() >= 7, "found {files:?}");
        for file in files {
            load_file(&file).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
