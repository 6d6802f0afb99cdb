//! Reports of a suite run: the summary table people read, JUnit XML for CI (one testcase per
//! scenario, named after its file), and JSON with every step and figure.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::runner::ScenarioOutcome;

/// `--junit FILE`: replaced only if it is an earlier run's JUnit report (or absent).
pub const JUNIT_FILE: kms_lab_cli_common::files::FileKind = kms_lab_cli_common::files::FileKind::public(
    "JUnit report",
    kms_lab_cli_common::files::Recognise::XmlRoot(&["testsuite", "testsuites"]),
);

/// `--json FILE`: replaced only if it is an earlier `kms-lab scenarios` JSON report (or absent).
pub const JSON_FILE: kms_lab_cli_common::files::FileKind = kms_lab_cli_common::files::FileKind::public(
    "`kms-lab scenarios` JSON report",
    kms_lab_cli_common::files::Recognise::JsonObjectWith(&["scenarios", "kubernetes_version"]),
);

/// A whole run (or one shard of it, or several shards merged).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteReport {
    /// Every scenario's result, in run order.
    pub scenarios: Vec<ScenarioOutcome>,
    /// Wall time of the whole run, provisioning excluded.
    pub seconds: f64,
    /// `kube-apiserver` version used.
    pub kubernetes_version: String,
    /// How many scenarios ran at once.
    #[serde(default = "one")]
    pub jobs: usize,
    /// The shard this report covers (`2/4`), if the run was sharded.
    #[serde(default)]
    pub shard: Option<String>,
}

fn one() -> usize {
    1
}

impl SuiteReport {
    /// Whether every scenario passed.
    pub fn passed(&self) -> bool {
        self.scenarios.iter().all(|s| s.passed)
    }

    /// The summary table, with figures and failures below it.
    pub fn table(&self) -> String {
        let width = self.scenarios.iter().map(|s| s.name.len()).max().unwrap_or(8).max(8);
        let mut out = String::new();
        let _ = writeln!(out, "{:<width$}  {:<8}  {:<6}  {:>8}  {:>5}  {:>9}", "scenario", "tier", "result", "time", "steps", "etcd revs");
        let _ = writeln!(out, "{}", "-".repeat(width + 48));
        for s in &self.scenarios {
            let passed_steps = s.steps.iter().filter(|st| st.passed && st.not_observed.is_none()).count();
            let total = s.steps.len() + s.skipped_steps;
            let result = match (s.passed, &s.skipped) {
                (_, Some(_)) => "skip",
                (true, None) => "pass",
                (false, None) => "FAIL",
            };
            let _ = writeln!(
                out,
                "{:<width$}  {:<8}  {:<6}  {:>7.1}s  {:>2}/{:<2}  {:>9}",
                s.name,
                s.tier.to_string(),
                result,
                s.seconds,
                passed_steps,
                total,
                s.etcd_revisions_checked
            );
        }
        let _ = writeln!(out, "{}", "-".repeat(width + 48));
        let _ = writeln!(out, "etcd revs: values written to etcd during the run, each scanned for plaintext (not only the last).");
        let failed = self.scenarios.iter().filter(|s| !s.passed).count();
        let _ = writeln!(
            out,
            "{} scenario(s), {} passed, {failed} failed, {:.1} s in all (kube-apiserver {}, {} CPU(s), {} at once{})",
            self.scenarios.len(),
            self.scenarios.len() - failed,
            self.seconds,
            self.kubernetes_version,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            self.jobs,
            self.shard.as_ref().map(|s| format!(", shard {s}")).unwrap_or_default()
        );
        for s in self.scenarios.iter().filter(|s| !s.figures.is_empty()) {
            let figures: Vec<String> = s.figures.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(out, "figures {}: {}", s.name, figures.join(", "));
        }
        for s in self.scenarios.iter().filter(|s| s.skipped.is_some()) {
            let _ = writeln!(out, "SKIPPED {}: {}", s.name, s.skipped.as_deref().unwrap_or_default());
        }
        for s in &self.scenarios {
            let unseen: Vec<String> = s.steps.iter().filter(|st| st.not_observed.is_some()).map(|st| st.number.to_string()).collect();
            if let Some(why) = s.steps.iter().find_map(|st| st.not_observed.as_deref()) {
                let on: Vec<&str> = s.components.values().map(String::as_str).collect();
                let controller = if on.is_empty() { String::new() } else { format!(" on {}", on.join(", ")) };
                let _ = writeln!(out, "NOT OBSERVED {}{controller}: step(s) {}: {why}", s.name, unseen.join(", "));
            }
        }
        for s in self.scenarios.iter().filter(|s| !s.passed) {
            let _ = writeln!(out, "\nFAILED {}: {}", s.name, s.failure.as_deref().unwrap_or("unknown"));
            if let Some(dir) = &s.run_dir {
                let _ = writeln!(out, "  logs: {}", dir.display());
            }
        }
        out
    }

    /// JUnit XML: one `testsuite`, one `testcase` per scenario.
    pub fn junit(&self) -> String {
        let failures = self.scenarios.iter().filter(|s| !s.passed).count();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuite name=\"kms-lab scenarios\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">",
            self.scenarios.len(),
            self.scenarios.iter().filter(|s| s.skipped.is_some()).count(),
            self.seconds
        );
        for s in &self.scenarios {
            let _ = write!(
                out,
                "  <testcase name=\"{}\" classname=\"kms-lab.scenarios.{}\" time=\"{:.3}\"",
                escape(&s.name),
                s.tier,
                s.seconds
            );
            let _ = writeln!(out, " file=\"{}\">", escape(&s.file.display().to_string()));
            if let Some(reason) = &s.skipped {
                let _ = writeln!(out, "    <skipped message=\"{}\"/>", escape(reason));
            }
            if let Some(failure) = &s.failure {
                let _ = writeln!(out, "    <failure message=\"{}\">{}</failure>", escape(failure), escape(&steps_text(s)));
            }
            let _ = writeln!(out, "    <system-out>{}</system-out>", escape(&steps_text(s)));
            let _ = writeln!(out, "  </testcase>");
        }
        out.push_str("</testsuite>\n");
        out
    }

    /// Several shards' reports as one: every scenario once, in file order; the wall time is the
    /// longest shard's (they ran side by side).
    pub fn merge(reports: Vec<SuiteReport>) -> SuiteReport {
        let seconds = reports.iter().map(|r| r.seconds).fold(0.0, f64::max);
        let kubernetes_version = reports.first().map(|r| r.kubernetes_version.clone()).unwrap_or_default();
        let jobs = reports.iter().map(|r| r.jobs).max().unwrap_or(1);
        let mut scenarios: Vec<ScenarioOutcome> = reports.into_iter().flat_map(|r| r.scenarios).collect();
        scenarios.sort_by(|a, b| a.file.cmp(&b.file));
        SuiteReport { scenarios, seconds, kubernetes_version, jobs, shard: None }
    }

    /// The JSON report.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"cannot serialise the report: {e}\"}}"))
    }
}

fn steps_text(s: &ScenarioOutcome) -> String {
    let mut out = String::new();
    for reference in &s.references {
        let _ = writeln!(out, "reference: {reference}");
    }
    for step in &s.steps {
        let _ = writeln!(
            out,
            "{} [{}] {} ({:.1} s): {}",
            match (step.passed, &step.not_observed) {
                (_, Some(_)) => "n/o ",
                (true, None) => "ok  ",
                (false, None) => "FAIL",
            },
            step.number,
            step.label,
            step.seconds,
            step.detail
        );
    }
    if s.skipped_steps > 0 {
        let _ = writeln!(out, "{} step(s) not run", s.skipped_steps);
    }
    if let Some(dir) = &s.run_dir {
        let _ = writeln!(out, "logs: {}", dir.display());
    }
    out
}

/// Escapes text for XML attributes and content.
fn escape(text: &str) -> String {
    text.chars()
        .filter(|c| *c == '\n' || *c == '\t' || !c.is_control())
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&apos;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Tier;
    use crate::runner::StepRecord;

    fn outcome(name: &str, passed: bool) -> ScenarioOutcome {
        ScenarioOutcome {
            name: name.into(),
            title: "t".into(),
            tier: Tier::Core,
            file: format!("scenarios/{name}.yaml").into(),
            references: vec![],
            seed: 1,
            passed,
            seconds: 1.5,
            steps: vec![StepRecord {
                number: 1,
                started_s: 0.0,
                label: "create <x>".into(),
                passed,
                seconds: 0.5,
                detail: "a & b".into(),
                not_observed: None,
            }],
            skipped_steps: usize::from(!passed),
            failure: (!passed).then(|| "step 1 `create`: 500 \"boom\"".into()),
            run_dir: None,
            figures: Default::default(),
            etcd_revisions_checked: 0,
            skipped: None,
            timeline: Default::default(),
            components: Default::default(),
        }
    }

    #[test]
    fn junit_has_one_escaped_testcase_per_scenario() {
        let report = SuiteReport {
            scenarios: vec![outcome("a", true), outcome("b", false)],
            seconds: 3.0,
            kubernetes_version: "v1".into(),
            jobs: 1,
            shard: None,
        };
        let xml = report.junit();
        assert_eq!(xml.matches("<testcase ").count(), 2);
        assert!(xml.contains("tests=\"2\" failures=\"1\""));
        assert!(xml.contains("<failure message=\"step 1 `create`: 500 &quot;boom&quot;\">"), "{xml}");
        assert!(xml.contains("create &lt;x&gt;") && xml.contains("a &amp; b"));
        assert!(!report.passed());
        assert!(report.table().contains("FAILED b"));
    }
}
