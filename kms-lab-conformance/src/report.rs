//! The typed result of a run: one [`CheckReport`] per check.

use std::time::Duration;

use serde::Serialize;

use crate::checks::CheckInfo;

/// What went wrong in a failed check, for the plugin's author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What the suite sent (plaintexts by size and hash, never their bytes).
    pub sent: String,
    /// What came back.
    pub received: String,
    /// Why that breaks the rule.
    pub problem: String,
}

/// The longest part of a finding, in bytes: what a plugin sends (key ids, annotation keys,
/// error messages) may be megabytes, and the report stays readable.
pub const FINDING_PART_MAX: usize = 8 * 1024;

impl Finding {
    /// A finding from its three parts, each cut to [`FINDING_PART_MAX`] bytes (the cut says how much).
    pub fn new(sent: impl Into<String>, received: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { sent: bounded(sent.into()), received: bounded(received.into()), problem: bounded(problem.into()) }
    }
}

/// `text`, cut at a character boundary to [`FINDING_PART_MAX`] bytes with a note of what was cut.
fn bounded(mut text: String) -> String {
    if text.len() > FINDING_PART_MAX {
        let total = text.len();
        let cut = (0..=FINDING_PART_MAX).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
        text.push_str(&format!("… ({} of {total} B cut)", total - cut));
    }
    text
}

/// Latency percentiles of one method, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest call.
    pub max_ms: f64,
}

impl Percentiles {
    /// Percentiles of `samples` (nearest rank); `None` when there are none.
    pub fn of(samples: &mut [Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1].as_secs_f64() * 1000.0
        };
        Some(Self { p50_ms: at(0.50), p90_ms: at(0.90), p99_ms: at(0.99), max_ms: at(1.0) })
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms", self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms)
    }
}

/// Latency under load: reported, never judged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Concurrent callers.
    pub concurrency: usize,
    /// Round trips attempted.
    pub round_trips: usize,
    /// Encrypt latency.
    pub encrypt: Option<Percentiles>,
    /// Decrypt latency.
    pub decrypt: Option<Percentiles>,
}

/// How much a broken rule matters: the exit code follows `Fail` only (`--strict`: both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The real kube-apiserver misbehaves with this plugin, or the data key is exposed.
    Fail,
    /// Advice: the apiserver works with it, but the plugin departs from good practice.
    Warn,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fail => "FAIL",
            Self::Warn => "WARN",
        })
    }
}

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum CheckOutcome {
    /// The plugin follows the rule.
    Pass,
    /// The plugin breaks a rule whose breaking is a failure ([`Level::Fail`]).
    Fail(Finding),
    /// The plugin breaks a rule that is advice ([`Level::Warn`]): reported, exit code unchanged
    /// unless `--strict`.
    Warn(Finding),
    /// The check did not run.
    Skip {
        /// Why.
        reason: String,
    },
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    /// The stable check id.
    pub id: &'static str,
    /// The rule, in one line.
    pub rule: &'static str,
    /// Where upstream the rule comes from.
    pub reference: &'static str,
    /// The level of the check when its rule is broken.
    pub level: Level,
    /// Why it has that level: the apiserver code path or the attack (FAIL), or why it is advice (WARN).
    pub level_reason: &'static str,
    /// Pass, fail (with the finding) or skip (with the reason).
    #[serde(flatten)]
    pub outcome: CheckOutcome,
    /// Extra facts (what was exercised, measurements).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Latency under load, for the load check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySummary>,
    /// How long the check took.
    pub duration_ms: u128,
}

impl CheckReport {
    pub(crate) fn new(info: &CheckInfo, result: crate::checks::CheckResult, elapsed: Duration) -> Self {
        // A broken advisory rule is a warning, whatever the check module said.
        let outcome = match (info.level, result.outcome) {
            (Level::Warn, CheckOutcome::Fail(finding)) => CheckOutcome::Warn(finding),
            (_, outcome) => outcome,
        };
        Self {
            id: info.id,
            rule: info.rule,
            reference: info.reference,
            level: info.level,
            level_reason: info.why,
            outcome,
            notes: result.notes,
            latency: result.latency,
            duration_ms: elapsed.as_millis(),
        }
    }

    /// Whether the check failed (a FAIL, not a warning).
    pub fn failed(&self) -> bool {
        matches!(self.outcome, CheckOutcome::Fail(_))
    }

    /// Whether the check ended in a warning.
    pub fn warned(&self) -> bool {
        matches!(self.outcome, CheckOutcome::Warn(_))
    }

    /// The finding of a failure or warning.
    pub fn finding(&self) -> Option<&Finding> {
        match &self.outcome {
            CheckOutcome::Fail(finding) | CheckOutcome::Warn(finding) => Some(finding),
            _ => None,
        }
    }
}

/// The result of a whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The socket checked.
    pub endpoint: String,
    /// The API checked.
    pub api: crate::Api,
    /// Wall time of the run.
    pub duration_ms: u128,
    /// `--strict`: warnings fail the run too.
    pub strict: bool,
    /// The run was interrupted (Ctrl-C): [`Self::checks`] holds only the checks that finished.
    pub interrupted: bool,
    /// Every selected check, in run order.
    pub checks: Vec<CheckReport>,
}

impl Report {
    /// Whether the run passes: no FAIL (and, when [`Self::strict`], no WARN); skipped checks do
    /// not count against it. The exit code follows this.
    pub fn passed(&self) -> bool {
        !self.checks.iter().any(|c| c.failed() || (self.strict && c.warned()))
    }

    /// The ids of the failed checks (FAIL level).
    pub fn failed_ids(&self) -> Vec<&'static str> {
        self.checks.iter().filter(|c| c.failed()).map(|c| c.id).collect()
    }

    /// The ids of the checks that ended in a warning.
    pub fn warned_ids(&self) -> Vec<&'static str> {
        self.checks.iter().filter(|c| c.warned()).map(|c| c.id).collect()
    }

    /// The report of one check, by id.
    pub fn check(&self, id: &str) -> Option<&CheckReport> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// (passed, failed, skipped) counts; warnings are in [`Self::warned_ids`], not in passed.
    pub fn counts(&self) -> (usize, usize, usize) {
        let failed = self.checks.iter().filter(|c| c.failed()).count();
        let warned = self.checks.iter().filter(|c| c.warned()).count();
        let skipped = self.checks.iter().filter(|c| matches!(c.outcome, CheckOutcome::Skip { .. })).count();
        (self.checks.len() - failed - warned - skipped, failed, skipped)
    }
}
