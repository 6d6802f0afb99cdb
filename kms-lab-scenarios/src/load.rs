//! Reading scenario files: parse into the typed model, then check every reference (plugins,
//! apiservers, marks, fault profiles) so a mistake is reported with its file and line before
//! any process starts.

use std::path::{Path, PathBuf};

use crate::model::{Scenario, Tier};
use crate::steps::{Scope, process};

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
    /// The stack section names something that does not exist (a plugin manifest).
    #[error("{path}:{line}: {message}")]
    Stack {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key.
        line: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The directory holds no scenario file at all (a wrong `--dir`?).
    #[error(
        "no scenario files (`*.yaml`) in {dir}: check `--dir` (or `KMS_LAB_SCENARIOS`); the suite's files are in the repository's `scenarios/`"
    )]
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
    resolve_manifests(&mut scenario, text)?;
    validate(&scenario, text)?;
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

/// Resolves each plugin's `use:` (a catalog name, or a manifest file relative to the scenario
/// file) into its manifest, so a typo is reported at load time with the catalog's names.
fn resolve_manifests(scenario: &mut Scenario, text: &str) -> Result<(), LoadError> {
    let dir = scenario.path.parent().map(Path::to_owned).unwrap_or_default();
    for decl in &mut scenario.stack.plugins {
        let Some(wanted) = &decl.uses else { continue };
        let beside = dir.join(wanted);
        let wanted_here = if Path::new(wanted).is_relative() && beside.is_file() { beside.display().to_string() } else { wanted.clone() };
        let manifest = kms_lab_catalog::resolve(&wanted_here).map_err(|error| LoadError::Stack {
            path: scenario.path.clone(),
            line: line_of(text, &format!("use: {wanted}")).unwrap_or(1),
            message: format!("plugin `{}`: {error}", decl.name),
        })?;
        if !decl.defects.is_empty() {
            return Err(LoadError::Stack {
                path: scenario.path.clone(),
                line: line_of(text, "defects:").unwrap_or(1),
                message: format!(
                    "plugin `{}` has both `use:` and `defects:`: defects switch on kms-faulty-plugin's bugs; drop one of them",
                    decl.name
                ),
            });
        }
        decl.manifest = Some(manifest);
    }
    Ok(())
}

/// The 1-based line of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|line| line.contains(needle)).map(|index| index + 1)
}

/// Checks the stack and then each step in order, with what exists at that point (apiservers
/// added, marks set): each step type checks itself ([`crate::steps::StepKind::check`]).
fn validate(scenario: &Scenario, text: &str) -> Result<(), LoadError> {
    let lines = top_level_step_lines(text);
    let invalid = |step: usize, message: String| LoadError::Invalid {
        path: scenario.path.clone(),
        line: lines.get(step.saturating_sub(1)).copied().unwrap_or(1),
        step,
        message,
    };
    let mut scope = Scope::new(scenario);
    process::check_stack(&scope).map_err(|message| LoadError::Stack {
        path: scenario.path.clone(),
        line: line_of(text, "stack:").unwrap_or(1),
        message: format!("stack: {message}"),
    })?;
    for (index, step) in scenario.steps.iter().enumerate() {
        step.kind().check(&mut scope).map_err(|message| invalid(index + 1, message))?;
    }
    Ok(())
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
            "{HEADER}  - create: {{prefix: s, count: 3}}\n  - mark: m\n  - rotate_kek: {{}}\n  - read: {{prefix: s, expect_error: 'deadline'}}\n"
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
        let error =
            parse_text(&format!("{HEADER}  - wait_until: {{within: soon, condition: {{health: {{path: /readyz, healthy: true}}}}}}\n"))
                .unwrap_err()
                .to_string();
        assert!(error.contains("`soon` is not a duration"), "{error}");
        let error = parse_text(&format!("{HEADER}  - read: {{expect_error: '(unclosed'}}\n")).unwrap_err().to_string();
        assert!(error.contains("is not a regular expression"), "{error}");
    }

    #[test]
    fn a_migration_via_svm_needs_the_controller_manager() {
        let error = parse_text(&format!("{HEADER}  - migrate: {{kind: secret, via: svm}}\n")).unwrap_err().to_string();
        assert!(error.contains("needs kube-controller-manager") && error.contains("`controller_manager: true` under `stack:`"), "{error}");
        let with = HEADER.replace("stack:\n", "stack:\n  controller_manager: true\n");
        let scenario = parse_text(&format!("{with}  - migrate: {{kind: secret, via: svm}}\n  - migrate: {{kind: secret}}\n")).unwrap();
        assert!(scenario.stack.controller_manager);
        let error = parse_text(&format!("{with}  - migrate: {{via: svm, checkpoint: c}}\n")).unwrap_err().to_string();
        assert!(error.contains("`via: svm` has no checkpoint"), "{error}");
        let error = parse_text(&format!("{with}  - migrate: {{via: kubectl}}\n")).unwrap_err().to_string();
        assert!(error.contains("unknown variant `kubectl`") && error.contains("svm"), "{error}");
    }

    #[test]
    fn references_are_checked_before_anything_runs() {
        let error = parse_text(&format!("{HEADER}  - kill: plugin-9\n")).unwrap_err().to_string();
        assert!(error.contains("no plugin named `plugin-9`") && error.contains("known: plugin-0"), "{error}");
        let error = parse_text(&format!("{HEADER}  - read: {{apiserver: 1}}\n")).unwrap_err().to_string();
        assert!(error.contains("apiserver-1 does not exist") && error.contains("add_apiserver"), "{error}");
        let error = parse_text(&format!("{HEADER}  - expect: {{plugin_status: {{plugin: plugin-0, key_id: {{same_as: before}}}}}}\n"))
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
    fn measurement_steps_are_validated_before_anything_runs() {
        let error = parse_text(&format!("{HEADER}  - lint: {{expect: [identity-frist]}}\n")).unwrap_err().to_string();
        assert!(error.starts_with("test.yaml:8:") && error.contains("unknown finding id `identity-frist`"), "{error}");
        assert!(error.contains("identity-first"), "{error}");
        let error = parse_text(&format!("{HEADER}  - wait_until: {{within: 5s, figure: f}}\n")).unwrap_err().to_string();
        assert!(error.contains("missing field `condition`"), "{error}");
        let error = parse_text(&format!("{HEADER}  - observe_health: {{path: /livez, for: 1s, interval: 2s, figure: h}}\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("`interval` must be above zero and at most `for`"), "{error}");
        let error = parse_text(&format!("{HEADER}  - restart: {{component: apiserver-0, wait: forever}}\n")).unwrap_err().to_string();
        assert!(error.starts_with("test.yaml:8:") && error.contains("live") && error.contains("serving"), "{error}");
        let error = parse_text(&format!("{HEADER}  - restart: {{component: plugin-0, wait: serving}}\n")).unwrap_err().to_string();
        assert!(error.contains("applies to apiservers only"), "{error}");
        let error = parse_text(&format!("{HEADER}  - expect: {{socket: {{plugin: plugin-9, exists: true}}}}\n")).unwrap_err().to_string();
        assert!(error.contains("no plugin named `plugin-9`"), "{error}");
    }

    #[test]
    fn nested_steps_of_a_load_are_checked_with_the_load() {
        let text = format!(
            "{HEADER}  - load:\n      prefix: l\n      for: 5s\n      during:\n        - wait_until: {{within: 5s, condition: {{writes: {{at_least: 3}}}}}}\n        - kill: plugin-7\n"
        );
        let error = parse_text(&text).unwrap_err().to_string();
        assert!(error.starts_with("test.yaml:8: step 1:") && error.contains("in `during`, `kill -9 plugin-7`: no plugin named"), "{error}");
    }

    #[test]
    fn a_directory_without_scenario_files_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = select(dir.path(), &[], &[Tier::Core]).unwrap_err().to_string();
        assert!(error.starts_with("no scenario files") && error.contains("--dir"), "{error}");
    }

    #[test]
    fn every_scenario_in_the_repository_parses() {
        let dir = crate::runner::repository_scenario_dir();
        let files = discover(&dir).unwrap();
        assert!(files.len() >= 7, "found {files:?}");
        for file in files {
            load_file(&file).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
