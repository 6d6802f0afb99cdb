//! Findings, their severities, the rendered report and the exit code.

use std::fmt::Write as _;

use serde::Serialize;

use crate::input::{clip, clip_quoted};

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
    /// The findings, most severe first; at most [`MAX_FINDINGS_PER_ID`] of each id.
    pub findings: Vec<Finding>,
    /// Findings left out of `findings` because their id was reported that often already.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub omitted: Vec<Omitted>,
}

/// How many findings of one id a report lists; the rest are counted in [`Report::omitted`].
pub const MAX_FINDINGS_PER_ID: usize = 10;

/// Findings of one id left out of a report (a repeated mistake is told once, not 10 000 times).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Omitted {
    /// The finding id.
    pub id: &'static str,
    /// Its severity.
    pub severity: Severity,
    /// How many were left out.
    pub count: usize,
}

impl Report {
    /// Puts the report in its final shape: most severe first, every quoted value clipped (see
    /// [`crate::input::clip_quoted`]), and at most [`MAX_FINDINGS_PER_ID`] findings of each id.
    pub fn finish(mut self) -> Self {
        self.findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        let mut seen: std::collections::BTreeMap<&'static str, usize> = std::collections::BTreeMap::new();
        let mut kept = Vec::new();
        for mut finding in std::mem::take(&mut self.findings) {
            let count = seen.entry(finding.id).or_default();
            *count += 1;
            if *count > MAX_FINDINGS_PER_ID {
                match self.omitted.iter_mut().find(|o| o.id == finding.id) {
                    Some(omitted) => omitted.count += 1,
                    None => self.omitted.push(Omitted { id: finding.id, severity: finding.severity, count: 1 }),
                }
                continue;
            }
            finding.path = clip(&finding.path);
            finding.reason = clip_quoted(&finding.reason);
            finding.fix = clip_quoted(&finding.fix);
            kept.push(finding);
        }
        self.findings = kept;
        self
    }

    /// The worst severity found, if any.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).chain(self.omitted.iter().map(|o| o.severity)).max()
    }

    /// The exit code (the one table, `kms_lab_cli_common::Exit`): 1 with errors, or with warnings and
    /// `strict` (the check failed); else 0. An input that cannot be used is 2 ([`crate::cli::run`]).
    pub fn exit_code(&self, strict: bool) -> kms_lab_cli_common::Exit {
        let failed = match self.worst() {
            Some(Severity::Error) => true,
            Some(Severity::Warning) => strict,
            _ => false,
        };
        kms_lab_cli_common::Exit::passed(!failed)
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
        for omitted in &self.omitted {
            let _ = writeln!(
                out,
                "… and {} more {}[{}] finding(s) like the ones above (each id is listed at most {MAX_FINDINGS_PER_ID} times)",
                omitted.count,
                omitted.severity.as_str(),
                omitted.id
            );
        }
        let count = |severity| {
            self.findings.iter().filter(|f| f.severity == severity).count()
                + self.omitted.iter().filter(|o| o.severity == severity).map(|o| o.count).sum::<usize>()
        };
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
