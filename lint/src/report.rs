//! Findings, their severities, the rendered report and the exit code.

use std::fmt::Write as _;

use serde::Serialize;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; never fails a run.
    Info,
    /// Likely wrong or risky; fails with `--strict`.
    Warning,
    /// The apiserver refuses it, or it defeats encryption: fails the run.
    Error,
}

impl Severity {
    /// `error`, `warning`, `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable id, e.g. `kms-v1-without-gate` (see [`crate::FINDING_IDS`]).
    pub id: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// The file it is in.
    pub file: String,
    /// Where in the file, e.g. `resources[0].providers[1].kms`.
    pub path: String,
    /// What is wrong and why it matters.
    pub reason: String,
    /// What to do about it.
    pub fix: String,
}

/// Everything a lint run found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The files linted (the main file first, then `--against` files).
    pub files: Vec<String>,
    /// The findings, most severe first.
    pub findings: Vec<Finding>,
}

/// The exit code for a clean run (or one with only infos).
pub const EXIT_CLEAN: u8 = 0;
/// The exit code for warnings under `--strict`.
pub const EXIT_WARNINGS: u8 = 1;
/// The exit code when any finding is an error.
pub const EXIT_ERRORS: u8 = 2;
/// The exit code when an input could not be read or parsed.
pub const EXIT_UNREADABLE: u8 = 3;

impl Report {
    /// The worst severity found, if any.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// The process exit code: 2 with errors, 1 with warnings and `strict`, else 0.
    pub fn exit_code(&self, strict: bool) -> u8 {
        match self.worst() {
            Some(Severity::Error) => EXIT_ERRORS,
            Some(Severity::Warning) if strict => EXIT_WARNINGS,
            _ => EXIT_CLEAN,
        }
    }

    /// Whether a finding with this id was reported.
    pub fn has(&self, id: &str) -> bool {
        self.findings.iter().any(|f| f.id == id)
    }

    /// The report for people: one block per finding, then a summary line.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for finding in &self.findings {
            let _ = writeln!(out, "{}[{}]: {}: {}", finding.severity.as_str(), finding.id, finding.file, finding.path);
            let _ = writeln!(out, "  why: {}", finding.reason);
            let _ = writeln!(out, "  fix: {}", finding.fix);
        }
        let count = |severity| self.findings.iter().filter(|f| f.severity == severity).count();
        let _ = writeln!(
            out,
            "{}: {} error(s), {} warning(s), {} info",
            self.files.join(", "),
            count(Severity::Error),
            count(Severity::Warning),
            count(Severity::Info)
        );
        out
    }

    /// The report as one JSON object (`files`, `findings`).
    pub fn render_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"cannot render the report: {e}\"}}"))
    }
}
