//! Background write load around nested steps, and the `writes` condition that counts it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::objects::shorten;
use super::{Scope, StepFuture, StepItem, StepKind, StepResult};
use crate::conditions::{ConditionKind, ObserveFuture, Seen};
use crate::error::StepError;
use crate::model::{Dur, Kind, default_namespace};
use crate::object_client::ObjectClient;
use crate::world::{ObjectRef, World, value_for};

/// `load`: writers create objects continuously, each write retried, while `during` runs and for
/// at least `for` (or until `min_writes` are stored); fewer stored writes than `min_writes` fail
/// the step's precondition (the disturbance was not exercised).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Name prefix of the written objects.
    pub prefix: String,
    /// Concurrent writers (default 2).
    #[serde(default = "two")]
    pub writers: usize,
    /// Retries of a failed write before it counts as lost (default 20: 250 ms, then 1 s apart).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The apiserver to call.
    #[serde(default)]
    pub apiserver: usize,
    /// Pause of each writer between two writes (default 100ms), so the load is steady, not a flood.
    #[serde(default)]
    pub pace: Option<Dur>,
    /// The load runs at least this long (and until `during` ends).
    #[serde(default, rename = "for")]
    pub duration: Option<Dur>,
    /// The load runs until at least this many writes are stored (and until `during` ends); fewer
    /// fail the step. Bounded by `within`.
    #[serde(default)]
    pub min_writes: Option<u64>,
    /// How long the load may run to reach `min_writes` after `during` ended (default 120s).
    #[serde(default)]
    pub within: Option<Dur>,
    /// The steps that run under load.
    pub during: Vec<StepItem>,
    /// Writes that may fail even after every retry (default 0).
    #[serde(default)]
    pub max_lost: usize,
    /// At least this many attempts must fail (to show the disturbance was felt).
    #[serde(default)]
    pub min_failed_attempts: Option<usize>,
    /// At most this many attempts may fail.
    #[serde(default)]
    pub max_failed_attempts: Option<usize>,
}

fn two() -> usize {
    2
}

fn default_retries() -> u32 {
    20
}

impl StepKind for Load {
    fn needs(&self) -> super::Needs {
        let mut needs = super::Needs::default();
        for step in &self.during {
            needs.absorb(step.kind().needs());
        }
        needs
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.apiserver(self.apiserver)?;
        if self.writers == 0 {
            return Err("`load` needs at least one writer".into());
        }
        if self.duration.is_none() && self.min_writes.is_none() {
            return Err(
                "`load` needs `for: DURATION` or `min_writes: N`: a load that may end after a handful of writes shows nothing".into()
            );
        }
        if scope.in_load() {
            return Err("a `load` cannot run inside another `load`".into());
        }
        scope.check_nested(&self.during)
    }

    fn label(&self) -> String {
        let bound = match (self.duration, self.min_writes) {
            (Some(d), Some(n)) => format!(" (≥ {}, ≥ {n} writes)", humantime::format_duration(d.0)),
            (Some(d), None) => format!(" (≥ {})", humantime::format_duration(d.0)),
            (None, Some(n)) => format!(" (≥ {n} writes)"),
            (None, None) => String::new(),
        };
        format!("load: {} writers on {}-*{bound} while {} steps run", self.writers, self.prefix, self.during.len())
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(load(world, self))
    }
}

/// What the writers of a `load` step saw.
#[derive(Default)]
struct LoadTally {
    written: Vec<ObjectRef>,
    failed_attempts: usize,
    lost: Vec<(String, String)>,
}

/// One writer of a `load` step.
struct Writer {
    client: ObjectClient,
    seed: u64,
    kind: Kind,
    namespace: String,
    prefix: String,
    retries: u32,
    pace: Duration,
    stop: Arc<AtomicBool>,
    stored: Arc<AtomicU64>,
}

async fn writer(w: Writer) -> LoadTally {
    let Writer { client, seed, kind, namespace, prefix, retries, pace, stop, stored } = w;
    let mut tally = LoadTally::default();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let object = ObjectRef { kind, namespace: namespace.clone(), name: format!("{prefix}-{n:04}") };
        n += 1;
        let value = value_for(seed, &object, 0);
        let mut attempt = 0u32;
        loop {
            let call = client.create(&object, &value).await;
            let error = match call.result {
                Ok(()) => {
                    tally.written.push(object.clone());
                    stored.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                // A retry of a write that did land: it counts if the stored value is ours.
                Err(e) if attempt > 0 && e.starts_with("409") && client.read(&object, &value).await.result.is_ok() => {
                    tally.written.push(object.clone());
                    stored.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => e,
            };
            tally.failed_attempts += 1;
            if attempt >= retries {
                tally.lost.push((object.name.clone(), error));
                break;
            }
            attempt += 1;
            // Backoff between retries of one write (not synchronisation): 250 ms, then 1 s.
            tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt.min(3)).pow(2).min(4))).await;
        }
        // Pacing, so a long disturbance does not pile up thousands of objects.
        tokio::time::sleep(pace).await;
    }
    tally
}

async fn load(world: &mut World, load: &Load) -> StepResult {
    let client = world.client(load.apiserver).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let stored = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let writers: Vec<_> = (0..load.writers)
        .map(|w| {
            tokio::spawn(writer(Writer {
                client: client.clone(),
                seed: world.seed(),
                kind: load.kind,
                namespace: load.namespace.clone(),
                prefix: format!("{}-w{w}", load.prefix),
                retries: load.retries,
                pace: load.pace.map_or(Duration::from_millis(100), |p| p.0),
                stop: stop.clone(),
                stored: stored.clone(),
            }))
        })
        .collect();
    world.set_load_writes(Some(stored.clone()));
    let mut inner = Vec::new();
    let mut failure = None;
    for step in &load.during {
        match super::run(world, step).await {
            Ok(line) => inner.push(format!("{} → {line}", super::label(step))),
            Err(error) => {
                failure = Some(StepError::Failed(format!("under load, `{}` failed: {error}", super::label(step))));
                break;
            }
        }
    }
    world.set_load_writes(None);
    // The stated size of the load: its duration, and the writes it must store.
    let deadline = started.elapsed() + load.within.map_or(Duration::from_secs(120), |d| d.0);
    while failure.is_none() {
        let long_enough = load.duration.is_none_or(|d| started.elapsed() >= d.0);
        let enough_writes = load.min_writes.is_none_or(|n| stored.load(Ordering::Relaxed) >= n);
        if (long_enough && enough_writes) || started.elapsed() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut tally = LoadTally::default();
    for handle in writers {
        let one = handle.await.map_err(|e| StepError::Failed(format!("a load writer panicked: {e}")))?;
        tally.written.extend(one.written);
        tally.failed_attempts += one.failed_attempts;
        tally.lost.extend(one.lost);
    }
    for object in &tally.written {
        world.objects.insert(object.clone(), 0);
    }
    if let Some(error) = failure {
        return Err(error);
    }
    let prefix = &load.prefix;
    world.figure(format!("load.{prefix}.writes"), tally.written.len() as f64);
    world.figure(format!("load.{prefix}.failed_attempts"), tally.failed_attempts as f64);
    world.figure(format!("load.{prefix}.lost"), tally.lost.len() as f64);
    let summary = format!(
        "{} writes stored in {:.1} s, {} attempts failed and were retried, {} lost [{}]",
        tally.written.len(),
        started.elapsed().as_secs_f64(),
        tally.failed_attempts,
        tally.lost.len(),
        inner.join("; ")
    );
    if let Some(min) = load.min_writes
        && (tally.written.len() as u64) < min
    {
        return Err(StepError::Failed(format!(
            "{summary}; the load's precondition is {min} stored writes, so the disturbance was not exercised (raise `within` or lower `min_writes`)"
        )));
    }
    if tally.written.is_empty() {
        return Err(StepError::Failed(format!("no write succeeded under load: {summary}")));
    }
    if tally.lost.len() > load.max_lost {
        let (name, error) = &tally.lost[0];
        return Err(StepError::Failed(format!("{summary}; more than {} lost; first: {name}: {}", load.max_lost, shorten(error))));
    }
    if let Some(min) = load.min_failed_attempts
        && tally.failed_attempts < min
    {
        return Err(StepError::Failed(format!("{summary}; expected at least {min} failed attempts (was the disturbance felt?)")));
    }
    if let Some(max) = load.max_failed_attempts
        && tally.failed_attempts > max
    {
        return Err(StepError::Failed(format!("{summary}; expected at most {max} failed attempts")));
    }
    Ok(summary)
}

/// `writes`: the surrounding load stored this many more writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WritesCount {
    /// At least this many since the step began.
    pub at_least: u64,
}

impl ConditionKind for WritesCount {
    fn check(&self, scope: &Scope<'_>) -> Result<(), String> {
        if !scope.in_load() {
            return Err("`writes` counts the writes of a running `load`: use it inside a `load`'s `during`".into());
        }
        Ok(())
    }

    fn label(&self) -> String {
        format!("the load stored {} more writes", self.at_least)
    }

    fn observe<'a>(&'a self, world: &'a mut World, baseline: u64) -> ObserveFuture<'a> {
        Box::pin(async move {
            let now = world.load_writes();
            let more = now.saturating_sub(baseline);
            Seen::new(more >= self.at_least, format!("the load stored {more} writes since this step began"))
        })
    }

    fn baseline(&self, world: &World) -> u64 {
        world.load_writes()
    }

    fn wait_only(&self) -> bool {
        true
    }
}
