//! Looking at the stack: narration, marks, waits and expectations on one [`Condition`],
//! measurements over time (health sampling, DEK sources in etcd, KMS call rates), `kms-lab lint`
//! on the configuration in force, and `show` for the demo.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kms_lab_lint::{ApiserverFlags, LintContext};
use kms_wire::envelope::Envelope;
use serde::Deserialize;

use super::process::seconds;
use super::{Bounds, Scope, StepFuture, StepKind};
use crate::conditions::{Condition, audit_window, plugin_status_now};
use crate::error::StepError;
use crate::model::{Dur, FigureName, Kind, default_namespace};
use crate::world::{Mark as MarkState, ObjectRef, World};

/// `say: TEXT`: a line of narration.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Say(pub String);

impl StepKind for Say {
    fn check(&self, _: &mut Scope<'_>) -> Result<(), String> {
        if self.0.trim().is_empty() {
            return Err("`say` needs some text".into());
        }
        Ok(())
    }

    fn label(&self) -> String {
        "say".into()
    }

    fn run<'a>(&'a self, _: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move { Ok(self.0.trim().to_owned()) })
    }
}

/// `mark: NAME`: remembers this moment, the audit log position and each plugin's Status key id.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Mark(pub String);

impl StepKind for Mark {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.set_mark(&self.0);
        Ok(())
    }

    fn label(&self) -> String {
        format!("mark `{}`", self.0)
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let at = Instant::now();
            let audit_seq = match world.stack.mock_kms() {
                Some(kms) => {
                    let since = world.marks.values().map(|m| m.audit_seq).max().unwrap_or(0);
                    kms.audit_records(since).await?.iter().map(|r| r.seq).max().unwrap_or(since)
                }
                None => 0,
            };
            let etcd_revision = world.stack.etcd_revision().await?;
            let mut key_ids = BTreeMap::new();
            for plugin in world.stack.plugin_names() {
                if let Ok(status) = plugin_status_now(world, &plugin).await {
                    key_ids.insert(plugin, status.key_id);
                }
            }
            let text = format!(
                "etcd revision {etcd_revision}, audit position {audit_seq}; key ids: {}",
                key_ids.iter().map(|(p, k)| format!("{p} `{k}`")).collect::<Vec<_>>().join(", ")
            );
            world.marks.insert(self.0.clone(), MarkState { at, etcd_revision, audit_seq, key_ids });
            Ok(text)
        })
    }
}

/// `wait_until: {within, condition, figure, since, must_happen}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitUntil {
    /// The deadline.
    pub within: Dur,
    /// What must hold.
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    pub condition: Condition,
    /// Record how long it took (seconds) as this figure.
    #[serde(default)]
    pub figure: Option<FigureName>,
    /// Measure the figure from this mark instead of from the start of the step.
    #[serde(default)]
    pub since: Option<String>,
    /// Whether the condition must hold within `within` (default true). With `false` the step is a
    /// measurement: if it never held, it passes, says so, and records `<figure>.held = 0`.
    #[serde(default = "yes")]
    pub must_happen: bool,
}

fn yes() -> bool {
    true
}

impl StepKind for WaitUntil {
    fn needs(&self) -> super::Needs {
        self.condition.needs()
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        self.condition.check(scope)?;
        if let Some(mark) = &self.since {
            scope.mark(mark)?;
            if self.figure.is_none() {
                return Err("`since` says where the figure is measured from: add `figure: NAME`".into());
            }
        }
        if !self.must_happen && self.figure.is_none() {
            return Err("`must_happen: false` makes the wait a measurement: add `figure: NAME`".into());
        }
        Ok(())
    }

    fn label(&self) -> String {
        let figure = self.figure.as_ref().map(|f| format!(" → `{f}`")).unwrap_or_default();
        format!("wait ≤ {} until {}{figure}", humantime::format_duration(self.within.0), self.condition.label())
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let started = Instant::now();
            let origin = match &self.since {
                Some(mark) => world.marks.get(mark).map_or(started, |m| m.at),
                None => started,
            };
            let baseline = self.condition.baseline(world);
            loop {
                let seen = self.condition.observe(world, baseline).await;
                let elapsed = started.elapsed();
                if seen.ok {
                    let took = seconds(origin.elapsed());
                    if let Some(figure) = &self.figure {
                        world.figure(figure.to_string(), took);
                        if !self.must_happen {
                            world.figure(format!("{figure}.held"), 1.0);
                        }
                    }
                    let figure = self.figure.as_ref().map(|f| format!("`{f}` = {took} s; ")).unwrap_or_default();
                    return Ok(format!("{figure}after {:.1} s: {}", elapsed.as_secs_f64(), seen.text));
                }
                if elapsed > self.within.0 {
                    if let (false, Some(figure)) = (self.must_happen, &self.figure) {
                        world.figure(format!("{figure}.held"), 0.0);
                        world.figure(figure.to_string(), seconds(origin.elapsed()));
                        return Ok(format!(
                            "did NOT happen within {}; `{figure}` records the window; last: {}",
                            humantime::format_duration(self.within.0),
                            seen.text
                        ));
                    }
                    return Err(StepError::Timeout { seconds: self.within.0.as_secs_f64(), what: self.condition.label(), last: seen.text });
                }
                tokio::time::sleep(self.condition.poll_interval()).await;
            }
        })
    }
}

/// `expect: CONDITION`: the condition must hold now.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Expect(#[serde(with = "serde_yaml::with::singleton_map_recursive")] pub Condition);

impl StepKind for Expect {
    fn needs(&self) -> super::Needs {
        self.0.needs()
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        if matches!(self.0, Condition::Write(_) | Condition::Writes(_)) {
            return Err("`write` and `writes` are conditions to wait for: use `wait_until`".into());
        }
        self.0.check(scope)
    }

    fn label(&self) -> String {
        format!("expect {}", self.0.label())
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let seen = self.0.observe(world, 0).await;
            if seen.ok { Ok(seen.text) } else { Err(StepError::Failed(seen.text)) }
        })
    }
}

/// `expect_throughout: {for, condition}`: the condition holds at every observation over a stated
/// window (a measurement, not a wait: it fails at the first observation that does not hold).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectThroughout {
    /// How long it must keep holding.
    #[serde(rename = "for")]
    pub duration: Dur,
    /// What must hold.
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    pub condition: Condition,
}

impl StepKind for ExpectThroughout {
    fn needs(&self) -> super::Needs {
        self.condition.needs()
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        if matches!(self.condition, Condition::Write(_) | Condition::Writes(_)) {
            return Err("`write` and `writes` are conditions to wait for: use `wait_until`".into());
        }
        if self.duration.0.is_zero() {
            return Err("`for: 0s` observes nothing: give the window, e.g. `for: 6s`, or use `expect`".into());
        }
        self.condition.check(scope)
    }

    fn label(&self) -> String {
        format!("expect for {}: {}", humantime::format_duration(self.duration.0), self.condition.label())
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let started = Instant::now();
            let mut observations = 0;
            loop {
                let seen = self.condition.observe(world, 0).await;
                observations += 1;
                if !seen.ok {
                    return Err(StepError::Failed(format!("after {:.1} s: {}", started.elapsed().as_secs_f64(), seen.text)));
                }
                if started.elapsed() >= self.duration.0 {
                    return Ok(format!(
                        "held at all {observations} observations over {:.1} s: {}",
                        started.elapsed().as_secs_f64(),
                        seen.text
                    ));
                }
                tokio::time::sleep(self.condition.poll_interval()).await;
            }
        })
    }
}

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
        super::Needs { capabilities: vec![kms_lab_plugins::Capability::RemoteKms], own_plugin_only: None }
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
            let ok = records.iter().filter(|r| r.outcome == mock_kms::api::admin::Outcome::Ok).count();
            let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
            let mut per_second: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
            for record in &records {
                let slot = per_second.entry(record.time_unix_ms / 1000).or_default();
                slot.0 += 1;
                if record.outcome == mock_kms::api::admin::Outcome::Ok {
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

/// A finding id of `kms-lab lint`; a misspelt one is a load error listing every id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingId(pub &'static str);

impl<'de> Deserialize<'de> for FindingId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        kms_lab_lint::FINDING_IDS.iter().find(|id| **id == text).map(|id| FindingId(id)).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown finding id `{text}` (known: {})", kms_lab_lint::FINDING_IDS.join(", ")))
        })
    }
}

/// `lint`: runs `kms-lab lint` on an apiserver's EncryptionConfiguration as written now.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lint {
    /// The apiserver whose file is linted.
    #[serde(default)]
    pub apiserver: usize,
    /// The apiserver flags the linter is told about (`--feature-gates=KMSv1=true`, …; default: none known).
    #[serde(default)]
    pub flags: Option<Vec<String>>,
    /// The cluster's Secret count (`--secrets`).
    #[serde(default)]
    pub secrets: Option<u64>,
    /// The measured KMS p99 latency (`--kms-p99`).
    #[serde(default)]
    pub kms_p99: Option<Dur>,
    /// Other apiservers whose files are compared with this one (HA drift, `--against`).
    #[serde(default)]
    pub against: Vec<usize>,
    /// Finding ids that must be reported.
    #[serde(default)]
    pub expect: Vec<FindingId>,
    /// Finding ids that must not be reported.
    #[serde(default)]
    pub absent: Vec<FindingId>,
}

impl StepKind for Lint {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.apiserver(self.apiserver)?;
        for other in &self.against {
            scope.apiserver(*other)?;
        }
        if self.expect.is_empty() && self.absent.is_empty() {
            return Err("`lint` needs `expect: [finding ids]` or `absent: [finding ids]`".into());
        }
        Ok(())
    }

    fn label(&self) -> String {
        format!(
            "kms-lab lint apiserver-{}'s EncryptionConfiguration{}",
            self.apiserver,
            if self.against.is_empty() { String::new() } else { format!(" against apiserver-{:?}", self.against) }
        )
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            // The files go to the run directory, beside the apiserver's own copy (findings never print key bytes).
            let write = |index: usize| -> Result<PathBuf, StepError> {
                let text = world.stack.encryption_config_text(index)?;
                let path = world.stack.run_dir().join(format!("lint-apiserver-{index}.yaml"));
                kms_lab_stack::fsutil::write_private(&path, text.as_bytes())
                    .map_err(|e| StepError::Failed(format!("cannot write {}: {e}", path.display())))?;
                Ok(path)
            };
            let main = write(self.apiserver)?;
            let against = self.against.iter().map(|i| write(*i)).collect::<Result<Vec<_>, _>>()?;
            let flags = match &self.flags {
                Some(flags) => Some(ApiserverFlags::parse(&flags.join("\n")).map_err(|e| StepError::Failed(format!("lint flags: {e}")))?),
                None => None,
            };
            let context = LintContext { flags, secrets: self.secrets, kms_p99: self.kms_p99.map(|d| d.0) };
            let report =
                kms_lab_lint::lint_files(&main, &against, &context).map_err(|e| StepError::Failed(format!("kms-lab lint: {e}")))?;
            let found: BTreeSet<&str> = report.findings.iter().map(|f| f.id).collect();
            let listed =
                report.findings.iter().map(|f| format!("{} {} at {}", f.severity.as_str(), f.id, f.path)).collect::<Vec<_>>().join("; ");
            let missing: Vec<&str> = self.expect.iter().map(|id| id.0).filter(|id| !found.contains(id)).collect();
            let unwanted: Vec<&str> = self.absent.iter().map(|id| id.0).filter(|id| found.contains(id)).collect();
            let text = if listed.is_empty() { "no findings".to_owned() } else { format!("findings: {listed}") };
            if !missing.is_empty() || !unwanted.is_empty() {
                return Err(StepError::Failed(format!("{text}; expected {missing:?} to be reported and {unwanted:?} not to be")));
            }
            // The first finding's reason and fix, so the report shows what lint tells an operator.
            let advice = report
                .findings
                .iter()
                .find(|f| self.expect.iter().any(|id| id.0 == f.id))
                .map(|f| format!(" — {} Fix: {}", f.reason, f.fix));
            Ok(format!("{text}{}", advice.unwrap_or_default()))
        })
    }
}

/// `show: {WHAT: …}`: shows a person what the stack holds (the demo's chapters); asserts nothing.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Show(#[serde(with = "serde_yaml::with::singleton_map_recursive")] pub ShowWhat);

/// What `show` shows.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShowWhat {
    /// An object's raw value in etcd: hexdump and envelope header.
    Etcd(ObjectName),
    /// An object's value as read back through the API.
    Object(ObjectName),
    /// An apiserver health endpoint's answer.
    Health(ShowHealth),
    /// Apiserver metrics whose names start with one of these.
    Metrics(ShowMetrics),
    /// The mock KMS audit log: counts per action and the last records.
    Audit(ShowAudit),
}

/// An object by kind and name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectName {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The name.
    pub name: String,
}

/// `show: {health: …}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowHealth {
    /// The apiserver.
    #[serde(default)]
    pub apiserver: usize,
    /// The path.
    pub path: String,
}

/// `show: {metrics: …}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowMetrics {
    /// The apiserver.
    #[serde(default)]
    pub apiserver: usize,
    /// Metric name prefixes.
    pub names: Vec<String>,
}

/// `show: {audit: …}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowAudit {
    /// How many of the last records to print.
    #[serde(default = "four")]
    pub last: usize,
}

fn four() -> usize {
    4
}

impl StepKind for Show {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        match &self.0 {
            ShowWhat::Etcd(_) | ShowWhat::Object(_) => Ok(()),
            ShowWhat::Health(h) => scope.apiserver(h.apiserver),
            ShowWhat::Metrics(m) => scope.apiserver(m.apiserver),
            ShowWhat::Audit(_) => scope.mock_kms("show: audit"),
        }
    }

    fn label(&self) -> String {
        match &self.0 {
            ShowWhat::Etcd(o) => {
                format!("$ etcdctl get /registry/{}/{}/{} --print-value-only | hexdump -C", o.kind.resource(), o.namespace, o.name)
            }
            ShowWhat::Object(o) => {
                format!("$ kubectl get {} {} -n {} (the value as the API returns it)", o.kind.resource(), o.name, o.namespace)
            }
            ShowWhat::Health(h) => format!("$ kubectl get --raw {} (apiserver-{})", h.path, h.apiserver),
            ShowWhat::Metrics(m) => format!("$ kubectl get --raw /metrics | grep {}", m.names.join(" -e ")),
            ShowWhat::Audit(_) => "the mock KMS audit log".into(),
        }
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            match &self.0 {
                ShowWhat::Etcd(o) => {
                    let key = format!("/registry/{}/{}/{}", o.kind.resource(), o.namespace, o.name);
                    let raw = world.stack.etcd_get(&key).await?.ok_or_else(|| StepError::Failed(format!("{key} is not in etcd")))?;
                    let header = match Envelope::parse(&raw) {
                        Ok(Envelope::KmsV2 { provider: name, object }) => {
                            format!("k8s:enc:kms:v2:{name}: then a protobuf EncryptedObject; key id `{}`", object.key_id)
                        }
                        Ok(envelope) => format!("stored by {}", envelope.kind()),
                        Err(e) => format!("does not parse as a stored object: {e}"),
                    };
                    Ok(format!("{} bytes, {header}\n{}", raw.len(), hexdump(&raw, 160)))
                }
                ShowWhat::Object(o) => {
                    let object = ObjectRef { kind: o.kind, namespace: o.namespace.clone(), name: o.name.clone() };
                    let generation = world.objects.get(&object).copied().ok_or_else(|| {
                        StepError::Failed(format!("{} was not written by this scenario: `show: object` shows generated values", o.name))
                    })?;
                    let expected = crate::world::value_for(world.seed(), &object, generation);
                    let client = world.client(0).await?;
                    let call = client.read(&object, &expected).await;
                    call.result.map_err(StepError::Failed)?;
                    // A generated demo value, not a secret: it shows the round trip.
                    Ok(format!("`{}` reads back as `{expected}`", o.name))
                }
                ShowWhat::Health(h) => {
                    let (status, body) = world.stack.apiserver_get(h.apiserver, &h.path).await?;
                    Ok(format!("{status} {}", body.trim()))
                }
                ShowWhat::Metrics(m) => {
                    let metrics = world.stack.metrics(m.apiserver).await?;
                    let lines: Vec<String> = metrics
                        .samples_matching(|name| m.names.iter().any(|n| name.starts_with(n.as_str())))
                        .map(|sample| sample.to_string())
                        .collect();
                    Ok(lines.join("\n"))
                }
                ShowWhat::Audit(a) => {
                    let kms = world.stack.mock_kms().ok_or_else(|| StepError::Failed("the stack runs no mock KMS".into()))?;
                    let records = kms.audit_records(0).await?;
                    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
                    for record in &records {
                        *counts.entry(record.action.name()).or_default() += 1;
                    }
                    let mut text = format!(
                        "{} calls ({}); the last {}:",
                        records.len(),
                        counts.iter().map(|(a, n)| format!("{n} {a}")).collect::<Vec<_>>().join(", "),
                        a.last.min(records.len())
                    );
                    for r in records.iter().rev().take(a.last).rev() {
                        let _ = write!(
                            text,
                            "\n#{} {} key {} version {} → {:?} in {:.1} ms from {}",
                            r.seq,
                            r.action.name(),
                            r.key_id.as_deref().unwrap_or("-"),
                            r.key_version_id.as_deref().unwrap_or("-"),
                            r.outcome,
                            r.latency_ms,
                            r.caller.map_or("an unnamed caller", |c| c.name())
                        );
                    }
                    Ok(text)
                }
            }
        })
    }
}

/// `hexdump -C` of the first `limit` bytes.
pub fn hexdump(bytes: &[u8], limit: usize) -> String {
    let mut out = String::new();
    for (row, chunk) in bytes[..bytes.len().min(limit)].chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk.iter().map(|b| if b.is_ascii_graphic() || *b == b' ' { *b as char } else { '.' }).collect();
        let _ = writeln!(out, "{:08x}  {:<48}  |{ascii}|", row * 16, hex.join(" "));
    }
    if bytes.len() > limit {
        let _ = writeln!(out, "… {} more bytes", bytes.len() - limit);
    }
    out.trim_end().to_owned()
}
