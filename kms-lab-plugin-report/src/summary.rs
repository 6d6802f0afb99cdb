//! What a plugin author reads first: the verdict, then one line per failure and per warning
//! (what failed and why), then the skips grouped by reason. Markdown and HTML open with it.

use kms_lab_conformance::CheckOutcome;

use crate::PluginReport;

/// One line of the summary: what (a check or a scenario) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// `conformance v2 v2.key-id-stable` or `scenario kms-outage`.
    pub subject: String,
    /// The finding, or the failing step and its detail.
    pub why: String,
}

/// The top of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Nothing failed (warnings and skips do not count).
    pub passed: bool,
    /// Conformance FAILs, then failed scenarios, in report order.
    pub failures: Vec<Line>,
    /// Conformance WARNs.
    pub warnings: Vec<Line>,
    /// Every skip reason, with what it skipped (checks and scenarios), reasons in order of first use.
    pub skips: Vec<(String, Vec<String>)>,
    /// Checks and scenarios that ran and passed.
    pub passed_count: usize,
}

impl Summary {
    /// The summary of `report`.
    pub fn of(report: &PluginReport) -> Self {
        let mut failures = Vec::new();
        let mut warnings = Vec::new();
        let mut skips: Vec<(String, Vec<String>)> = Vec::new();
        let mut skip = |reason: &str, what: String| match skips.iter_mut().find(|(r, _)| r == reason) {
            Some((_, names)) => names.push(what),
            None => skips.push((reason.to_owned(), vec![what])),
        };
        let mut passed_count = 0;
        for conformance in &report.conformance {
            let api = conformance.api.name();
            for check in &conformance.checks {
                let subject = format!("conformance {api} {}", check.id);
                match &check.outcome {
                    CheckOutcome::Pass => passed_count += 1,
                    CheckOutcome::Fail(finding) => failures.push(Line { subject, why: finding.problem.clone() }),
                    CheckOutcome::Warn(finding) => warnings.push(Line { subject, why: finding.problem.clone() }),
                    CheckOutcome::Skip { reason } => skip(reason, format!("{api} {}", check.id)),
                }
            }
        }
        for scenario in &report.scenarios.scenarios {
            if let Some(reason) = &scenario.skipped {
                skip(reason, scenario.name.clone());
            } else if scenario.passed {
                passed_count += 1;
            } else {
                let why = match scenario.steps.iter().find(|step| !step.passed) {
                    Some(step) => format!("step {} ({}): {}", step.number, step.label, step.detail),
                    None => scenario.failure.clone().unwrap_or_else(|| "a step failed".to_owned()),
                };
                failures.push(Line { subject: format!("scenario {}", scenario.name), why });
            }
        }
        Self { passed: report.passed(), failures, warnings, skips, passed_count }
    }

    /// `pass` or `FAIL`.
    pub fn verdict(&self) -> &'static str {
        if self.passed { "pass" } else { "FAIL" }
    }

    /// `1 conformance check and 1 scenario failed; 12 passed, 1 warning, 19 skipped`.
    pub fn headline(&self) -> String {
        let skipped: usize = self.skips.iter().map(|(_, names)| names.len()).sum();
        let counts = format!(
            "{} passed, {} warning{}, {skipped} skipped",
            self.passed_count,
            self.warnings.len(),
            if self.warnings.len() == 1 { "" } else { "s" }
        );
        if self.passed {
            return format!("nothing failed; {counts}");
        }
        let checks = self.failures.iter().filter(|l| l.subject.starts_with("conformance ")).count();
        let scenarios = self.failures.len() - checks;
        let mut parts = Vec::new();
        if checks > 0 {
            parts.push(format!("{checks} conformance check{}", if checks == 1 { "" } else { "s" }));
        }
        if scenarios > 0 {
            parts.push(format!("{scenarios} scenario{}", if scenarios == 1 { "" } else { "s" }));
        }
        format!("{} failed; {counts}", parts.join(" and "))
    }
}
