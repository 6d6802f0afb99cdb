//! The cross-plugin table (`kms-lab report --table A/report.json B/report.json …`): several
//! plugins' reports side by side, one row per conformance check and per scenario, one column per
//! plugin, then each plugin's findings in words (the failing step or the broken rule). Reads the
//! `report.json` files [`crate::render`] wrote; only ids, outcomes and failure texts are used.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One cell of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Passed.
    Pass,
    /// Broke a rule that is advice (conformance WARN).
    Warn,
    /// Failed.
    Fail,
    /// Not run, with a reason in the report (the plugin lacks what it needs).
    Skip,
}

impl Verdict {
    fn cell(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "WARN",
            Self::Fail => "**FAIL**",
            Self::Skip => "skip",
        }
    }
}

/// What the table needs of one plugin's report.
#[derive(Debug, Clone)]
pub struct ReportSummary {
    /// The plugin's name.
    pub plugin: String,
    /// Conformance check id → verdict, in report order.
    pub checks: Vec<(String, Verdict)>,
    /// Scenario name → verdict, in report order.
    pub scenarios: Vec<(String, Verdict)>,
    /// Each FAIL/WARN check and failed scenario with what the report says of it.
    pub findings: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct ReportView {
    plugin: PluginView,
    conformance: Vec<ConformanceView>,
    scenarios: SuiteView,
}

#[derive(Deserialize)]
struct PluginView {
    name: String,
}

#[derive(Deserialize)]
struct ConformanceView {
    checks: Vec<CheckView>,
}

#[derive(Deserialize)]
struct CheckView {
    id: String,
    outcome: String,
    #[serde(default)]
    problem: Option<String>,
}

#[derive(Deserialize)]
struct SuiteView {
    scenarios: Vec<ScenarioView>,
}

#[derive(Deserialize)]
struct ScenarioView {
    name: String,
    passed: bool,
    #[serde(default)]
    skipped: Option<String>,
    #[serde(default)]
    failure: Option<String>,
}

/// Why a report could not be read for the table.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem} (give the report.json files `kms-lab report --out DIR` wrote)")]
pub struct TableError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: String,
}

/// Reads one `report.json`.
pub fn read(path: &Path) -> Result<ReportSummary, TableError> {
    let error = |problem: String| TableError { path: path.to_owned(), problem };
    let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read it: {e}")))?;
    let view: ReportView =
        serde_json::from_str(&text).map_err(|e| error(format!("line {}: not a kms-lab plugin report: {e}", e.line())))?;
    let mut findings = Vec::new();
    let mut checks = Vec::new();
    for check in view.conformance.iter().flat_map(|c| &c.checks) {
        let verdict = match check.outcome.as_str() {
            "pass" => Verdict::Pass,
            "warn" => Verdict::Warn,
            "fail" => Verdict::Fail,
            "skip" => Verdict::Skip,
            other => return Err(error(format!("check {} has outcome `{other}` (expected pass, warn, fail or skip)", check.id))),
        };
        if matches!(verdict, Verdict::Warn | Verdict::Fail) {
            findings.push((format!("{} {}", verdict.cell(), check.id), check.problem.clone().unwrap_or_default()));
        }
        checks.push((check.id.clone(), verdict));
    }
    let mut scenarios = Vec::new();
    for scenario in &view.scenarios.scenarios {
        let verdict = match (&scenario.skipped, scenario.passed) {
            (Some(_), _) => Verdict::Skip,
            (None, true) => Verdict::Pass,
            (None, false) => Verdict::Fail,
        };
        if verdict == Verdict::Fail {
            findings.push((format!("**FAIL** scenario {}", scenario.name), scenario.failure.clone().unwrap_or_default()));
        }
        scenarios.push((scenario.name.clone(), verdict));
    }
    Ok(ReportSummary { plugin: view.plugin.name, checks, scenarios, findings })
}

/// The markdown table: checks then scenarios (in the order first seen), a column per plugin
/// (an empty cell: that plugin's report has no such row, e.g. an API it does not serve), then
/// the findings per plugin, each cut at `max_finding` characters.
pub fn markdown(reports: &[ReportSummary], max_finding: usize) -> String {
    let mut out = String::new();
    let header: Vec<&str> = reports.iter().map(|r| r.plugin.as_str()).collect();
    let _ = writeln!(out, "| check or scenario | {} |", header.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(reports.len()));
    for rows in [reports.iter().map(|r| &r.checks).collect::<Vec<_>>(), reports.iter().map(|r| &r.scenarios).collect::<Vec<_>>()] {
        let mut order: Vec<&str> = Vec::new();
        for list in &rows {
            for (name, _) in list.iter() {
                if !order.contains(&name.as_str()) {
                    order.push(name);
                }
            }
        }
        let cells: Vec<BTreeMap<&str, Verdict>> = rows.iter().map(|list| list.iter().map(|(n, v)| (n.as_str(), *v)).collect()).collect();
        for name in order {
            let row: Vec<&str> = cells.iter().map(|c| c.get(name).map_or("", |v| v.cell())).collect();
            let _ = writeln!(out, "| `{name}` | {} |", row.join(" | "));
        }
    }
    for report in reports {
        if report.findings.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{}:", report.plugin);
        for (what, said) in &report.findings {
            let flat = said.replace('\n', " ");
            let shown: String = flat.chars().take(max_finding).collect();
            let cut = if flat.chars().count() > max_finding { "…" } else { "" };
            let _ = writeln!(out, "- {what}: {shown}{cut}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(plugin: &str, checks: &[(&str, Verdict)], scenarios: &[(&str, Verdict)]) -> ReportSummary {
        ReportSummary {
            plugin: plugin.into(),
            checks: checks.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            scenarios: scenarios.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            findings: vec![("**FAIL** scenario b".into(), "step 3 `x`: expected y".into())],
        }
    }

    #[test]
    fn rows_are_the_union_and_a_missing_row_is_an_empty_cell() {
        let a = summary("a", &[("v2.x", Verdict::Pass), ("v1beta1.y", Verdict::Warn)], &[("s1", Verdict::Pass)]);
        let b = summary("b", &[("v1beta1.y", Verdict::Fail)], &[("s1", Verdict::Skip), ("s2", Verdict::Fail)]);
        let table = markdown(&[a, b], 200);
        assert!(table.contains("| check or scenario | a | b |"), "{table}");
        assert!(table.contains("| `v2.x` | pass |  |"), "{table}");
        assert!(table.contains("| `v1beta1.y` | WARN | **FAIL** |"), "{table}");
        assert!(table.contains("| `s2` |  | **FAIL** |"), "{table}");
        assert!(table.contains("- **FAIL** scenario b: step 3 `x`: expected y"), "{table}");
    }

    #[test]
    fn a_file_that_is_not_a_report_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        std::fs::write(&path, "{\"plugin\": {}}").unwrap();
        let error = read(&path).unwrap_err().to_string();
        assert!(error.contains("report.json") && error.contains("not a kms-lab plugin report"), "{error}");
    }
}
