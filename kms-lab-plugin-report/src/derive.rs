//! Figures derived from a scenario's timeline: what a person asks first about an outage.

use kms_lab_scenarios::runner::{ScenarioOutcome, StepRecord};
use kms_lab_scenarios::timeline::Verb;

/// What a step does to the stack, as far as the timeline plot and the derived figures care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// It injects a fault: mock KMS faults, a stopped or killed process, a disabled key version.
    Fault,
    /// It lifts a fault: faults cleared, a process started, a key version enabled.
    Heal,
    /// Anything else.
    Other,
}

/// The kind of a step, from its label (the runner's step labels are fixed strings per step type).
pub fn step_kind(step: &StepRecord) -> StepKind {
    let label = step.label.as_str();
    if label.starts_with("clear mock KMS faults") || label.starts_with("start ") || label.starts_with("enable the key") {
        StepKind::Heal
    } else if label.starts_with("mock KMS faults")
        || label.starts_with("stop ")
        || label.starts_with("kill -9")
        || label.starts_with("disable the key")
    {
        StepKind::Fault
    } else {
        StepKind::Other
    }
}

/// Figures derived from the timeline, each present only where the timeline allows it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DerivedFigures {
    /// API writes (create/update/delete) refused between the first fault step and the heal after it.
    pub writes_refused_during_outage: Option<usize>,
    /// Seconds from the heal step's start to the first successful write after it.
    pub time_to_heal_s: Option<f64>,
    /// Mock KMS calls made for requests (health probes excluded) per 100 API writes.
    pub kms_calls_per_100_writes: Option<f64>,
}

impl DerivedFigures {
    /// The derived figures of one scenario.
    pub fn of(scenario: &ScenarioOutcome) -> Self {
        let timeline = &scenario.timeline;
        let is_write = |verb: Verb| matches!(verb, Verb::Create | Verb::Update | Verb::Delete);
        let writes: Vec<_> = timeline.api.iter().filter(|e| is_write(e.verb)).collect();
        let fault = scenario.steps.iter().find(|s| step_kind(s) == StepKind::Fault);
        let heal = fault.and_then(|f| scenario.steps.iter().find(|s| s.number > f.number && step_kind(s) == StepKind::Heal));
        let writes_refused_during_outage = fault.map(|f| {
            let end = heal.map_or(f64::INFINITY, |h| h.started_s);
            writes.iter().filter(|e| !e.ok && e.at_s >= f.started_s && e.at_s < end).count()
        });
        let time_to_heal_s = heal.and_then(|h| {
            writes.iter().find(|e| e.ok && e.at_s >= h.started_s).map(|e| ((e.at_s - h.started_s) * 1000.0).round() / 1000.0)
        });
        let kms_requests = timeline.kms.iter().filter(|k| k.caller.as_deref() != Some("health-probe")).count();
        let kms_calls_per_100_writes =
            (!writes.is_empty() && !timeline.kms.is_empty()).then(|| (kms_requests as f64 * 1000.0 / writes.len() as f64).round() / 10.0);
        Self { writes_refused_during_outage, time_to_heal_s, kms_calls_per_100_writes }
    }

    /// The figures as (name, value) pairs, for tables.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(n) = self.writes_refused_during_outage {
            out.push(("writes refused during the outage", n.to_string()));
        }
        if let Some(s) = self.time_to_heal_s {
            out.push(("time to heal (s)", format!("{s:.3}")));
        }
        if let Some(r) = self.kms_calls_per_100_writes {
            out.push(("KMS calls per 100 writes", format!("{r:.1}")));
        }
        out
    }
}
