//! Measurements over time: an apiserver health endpoint sampled for a window, DEK sources in
//! etcd, mock KMS call rates since a mark (figures and bounds, not waits).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use kms_wire::envelope::Envelope;
use serde::Deserialize;

use super::kms::audit_window;
use super::{Bounds, Scope, StepFuture, StepKind};
use crate::error::StepError;
use crate::model::{Dur, FigureName, Kind, default_namespace};
use crate::world::World;

/// `observe_health`: a measurement over a stated duration, not a wait.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserveHealth {
    /// The apiserver.
    #[serde(default)]
    pub apiserver: usize,
    /// The endpoint, e.g. `/healthz/kms-providers`.
    pub path: String,
    /// How long to sample.
    #[serde(rename = "for")]
    pub duration: Dur,
    /// How often (default 1s).
    #[serde(default)]
    pub interval: Option<Dur>,
    /// At least this many healthy↔failing transitions.
    #[serde(default)]
    pub flaps_at_least: Option<f64>,
    /// At most this many healthy↔failing transitions.
    #[serde(default)]
    pub flaps_at_most: Option<f64>,
    /// Figures are recorded as `<figure>.flaps` and `<figure>.failing_share`.
    pub figure: FigureName,
}

impl StepKind for ObserveHealth {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.apiserver(self.apiserver)?;
        let interval = self.interval.map_or(Duration::from_secs(1), |d| d.0);
        if interval.is_zero() || interval > self.duration.0 {
            return Err("`observe_health`: `interval` must be above zero and at most `for`".into());
        }
        Bounds { at_least: self.flaps_at_least, at_most: self.flaps_at_most }.check("observe_health", false)
    }

    fn label(&self) -> String {
        format!("observe apiserver-{} {} for {}", self.apiserver, self.path, humantime::format_duration(self.duration.0))
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let interval = self.interval.map_or(Duration::from_secs(1), |d| d.0);
            let started = Instant::now();
            let (mut samples, mut failing, mut flaps) = (0usize, 0usize, 0usize);
            let mut previous: Option<bool> = None;
            let mut timeline = String::new();
            // A measurement over the stated duration: one sample per interval, transitions counted.
            while started.elapsed() < self.duration.0 {
                let healthy = matches!(world.stack.apiserver_get(self.apiserver, &self.path).await, Ok((200, _)));
                samples += 1;
                if !healthy {
                    failing += 1;
                }
                if previous.is_some_and(|p| p != healthy) {
                    flaps += 1;
                }
                if previous != Some(healthy) {
                    let _ = write!(timeline, " {:.0}s:{}", started.elapsed().as_secs_f64(), if healthy { "ok" } else { "FAIL" });
                }
                previous = Some(healthy);
                tokio::time::sleep(interval).await;
            }
            let share = if samples == 0 { 0.0 } else { (failing as f64 / samples as f64 * 100.0).round() / 100.0 };
            world.figure(format!("{}.flaps", self.figure), flaps as f64);
            world.figure(format!("{}.failing_share", self.figure), share);
            let text = format!("{flaps} transition(s) in {samples} samples, {failing} failing; timeline:{timeline}");
            let bounds = Bounds { at_least: self.flaps_at_least, at_most: self.flaps_at_most };
            if bounds.holds(flaps as f64) { Ok(text) } else { Err(StepError::Failed(format!("{text}; flaps {}", bounds.describe()))) }
        })
    }
}

/// `count_dek_sources`: distinct wrapped DEKs (v1) / DEK sources (v2) among the stored values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountDekSources {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Objects whose names start with this (default: all of the kind in the namespace).
    #[serde(default)]
    pub prefix: Option<String>,
    /// The figure the count is recorded under.
    pub figure: FigureName,
    /// At least this many distinct sources.
    #[serde(default)]
    pub at_least: Option<f64>,
    /// At most this many distinct sources.
    #[serde(default)]
    pub at_most: Option<f64>,
}

impl StepKind for CountDekSources {
    fn check(&self, _: &mut Scope<'_>) -> Result<(), String> {
        Bounds { at_least: self.at_least, at_most: self.at_most }.check("count_dek_sources", false)
    }

    fn label(&self) -> String {
        format!("count distinct DEK sources of {}/{}* in etcd", self.kind.resource(), self.prefix.as_deref().unwrap_or(""))
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let key_prefix = format!("/registry/{}/{}/{}", self.kind.resource(), self.namespace, self.prefix.as_deref().unwrap_or(""));
            let values = world.stack.etcd_list(&key_prefix).await?;
            let mut sources: BTreeSet<Vec<u8>> = BTreeSet::new();
            let mut other = 0;
            for (key, raw) in &values {
                match Envelope::parse(raw).map_err(|e| StepError::Failed(format!("{key}: the stored value does not parse: {e}")))? {
                    Envelope::KmsV1 { encrypted_dek, .. } => sources.insert(encrypted_dek.to_vec()),
                    Envelope::KmsV2 { object, .. } => sources.insert(object.encrypted_dek_source.to_vec()),
                    _ => {
                        other += 1;
                        false
                    }
                };
            }
            let count = sources.len();
            world.figure(self.figure.to_string(), count as f64);
            let text = format!(
                "{count} distinct DEK source(s) among {} values under {key_prefix}{}",
                values.len(),
                if other > 0 { format!(" ({other} not written by a KMS provider)") } else { String::new() }
            );
            let bounds = Bounds { at_least: self.at_least, at_most: self.at_most };
            if bounds.holds(count as f64) { Ok(text) } else { Err(StepError::Failed(format!("{text}; {}", bounds.describe()))) }
        })
    }
}

/// `kms_calls`: mock KMS calls of one action since a mark, as rates (figures and bounds).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsCalls {
    /// The mark the window starts at.
    pub since: String,
    /// The KMS action (`Decrypt`, …).
    pub action: mock_kms::api::Action,
    /// Only calls made for this reason (`request` or `health-probe`; default any).
    #[serde(default)]
    pub caller: Option<mock_kms::api::Caller>,
    /// Figures are recorded under `<figure>.*`.
    pub figure: FigureName,
    /// The number of objects the calls are for (gives calls per object).
    #[serde(default)]
    pub objects: Option<usize>,
    /// At most this many calls (any outcome) per object.
    #[serde(default)]
    pub per_object_at_most: Option<f64>,
    /// At most this many successful calls in any one-second window.
    #[serde(default)]
    pub ok_per_second_at_most: Option<usize>,
    /// At most this many calls (any outcome) in any one-second window.
    #[serde(default)]
    pub peak_per_second_at_most: Option<usize>,
}

impl StepKind for KmsCalls {
    fn needs(&self) -> super::Needs {
        super::Needs { capabilities: vec![kms_lab_catalog::Capability::RemoteKms], own_plugin_only: None }
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.mock_kms("kms_calls")?;
        if self.per_object_at_most.is_some() && self.objects.is_none() {
            return Err("`kms_calls`: `per_object_at_most` needs `objects: N`".into());
        }
        scope.mark(&self.since)
    }

    fn label(&self) -> String {
        format!("count mock KMS {} calls since `{}`", self.action.name(), self.since)
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let records = audit_window(world, &self.since, self.action, None, self.caller).await.map_err(StepError::Failed)?;
            let ok = records.iter().filter(|r| r.outcome == mock_kms::api::Outcome::Ok).count();
            let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
            let mut per_second: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
            for record in &records {
                let slot = per_second.entry(record.time_unix_ms / 1000).or_default();
                slot.0 += 1;
                if record.outcome == mock_kms::api::Outcome::Ok {
                    slot.1 += 1;
                }
                *outcomes.entry(record.outcome.name().to_owned()).or_default() += 1;
            }
            let peak = per_second.values().map(|s| s.0).max().unwrap_or(0);
            let ok_peak = per_second.values().map(|s| s.1).max().unwrap_or(0);
            let figure = &self.figure;
            world.figure(format!("{figure}.calls"), records.len() as f64);
            world.figure(format!("{figure}.ok"), ok as f64);
            world.figure(format!("{figure}.peak_per_second"), peak as f64);
            world.figure(format!("{figure}.ok_peak_per_second"), ok_peak as f64);
            let per_object = self.objects.filter(|n| *n > 0).map(|n| records.len() as f64 / n as f64);
            if let Some(per_object) = per_object {
                world.figure(format!("{figure}.per_object"), (per_object * 100.0).round() / 100.0);
            }
            let text = format!(
                "{} {} calls since `{}` ({}), {}peak {peak}/s, successful peak {ok_peak}/s over {} s",
                records.len(),
                self.action.name(),
                self.since,
                outcomes.iter().map(|(o, n)| format!("{n} {o}")).collect::<Vec<_>>().join(", "),
                per_object.map(|p| format!("{p:.2} per object, ")).unwrap_or_default(),
                per_second.len()
            );
            let mut broken = Vec::new();
            if let (Some(max), Some(per_object)) = (self.per_object_at_most, per_object)
                && per_object > max
            {
                broken.push(format!("more than {max} calls per object"));
            }
            if let Some(max) = self.ok_per_second_at_most
                && ok_peak > max
            {
                broken.push(format!("more than {max} successful calls in one second"));
            }
            if let Some(max) = self.peak_per_second_at_most
                && peak > max
            {
                broken.push(format!("more than {max} calls in one second"));
            }
            if broken.is_empty() { Ok(text) } else { Err(StepError::Failed(format!("{text}; expected no {}", broken.join(", no ")))) }
        })
    }
}
