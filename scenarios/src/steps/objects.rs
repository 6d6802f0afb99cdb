//! Objects through the API: create, update, read, delete, a timed LIST, the documented rewrite
//! procedure, and background write load around nested steps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Deserialize;

use super::{Scope, StepFuture, StepItem, StepKind, StepResult};
use crate::error::StepError;
use crate::model::{Dur, FigureName, Kind, Pattern, default_namespace};
use crate::world::{Call, ObjectClient, ObjectRef, World, list_names, value_for};

/// `create`, `update`, `read`, `delete`: a set of objects and what should happen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objects {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The namespace (default `default`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Name prefix: objects are `<prefix>-000`, `<prefix>-001`, … (`create` needs it; elsewhere it
    /// selects the objects written so far whose names start with it; absent: all of them).
    #[serde(default)]
    pub prefix: Option<String>,
    /// How many (`create` needs it; elsewhere the first N selected).
    #[serde(default)]
    pub count: Option<usize>,
    /// The apiserver to call.
    #[serde(default)]
    pub apiserver: usize,
    /// Each call must fail with a message matching this (default: each must succeed).
    #[serde(default)]
    pub expect_error: Option<Pattern>,
    /// Each call must answer within this long.
    #[serde(default)]
    pub within: Option<Dur>,
}

impl Objects {
    fn label(&self, verb: &str) -> String {
        let count = self.count.map(|c| format!("{c} ")).unwrap_or_default();
        let prefix = self.prefix.as_deref().map(|p| format!(" {p}-*")).unwrap_or_default();
        let on = if self.apiserver == 0 { String::new() } else { format!(" on apiserver-{}", self.apiserver) };
        let expect = self.expect_error.as_ref().map(|p| format!(", expecting errors /{}/", p.0.as_str())).unwrap_or_default();
        format!("{verb} {count}{}{prefix}{on}{expect}", self.kind.resource())
    }
}

/// Declares a step over [`Objects`]: `$name` runs `$run`.
macro_rules! objects_step {
    ($(#[$doc:meta])* $name:ident, $verb:literal, $run:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Objects);

        impl StepKind for $name {
            fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
                scope.apiserver(self.0.apiserver)?;
                if $verb == "create" && (self.0.prefix.is_none() || self.0.count.is_none()) {
                    return Err("`create` needs `prefix` and `count`".into());
                }
                Ok(())
            }

            fn label(&self) -> String {
                self.0.label($verb)
            }

            fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
                Box::pin($run(world, &self.0))
            }
        }
    };
}

objects_step!(
    /// `create: {prefix, count, …}`.
    Create, "create", create
);
objects_step!(
    /// `update: {prefix?, count?, …}`: new values.
    Update, "update", update
);
objects_step!(
    /// `read: {prefix?, count?, …}`: each value must be the one last written.
    Read, "read", read
);
objects_step!(
    /// `delete: {prefix?, count?, …}`.
    Delete, "delete", delete
);

/// How many calls of one step are in flight at once.
const PARALLEL_CALLS: usize = 8;
/// How long `kubectl` may take for a rewrite.
const REWRITE_DEADLINE: Duration = Duration::from_secs(300);

/// The outcome of one step's calls, judged against its expectation.
fn judge(verb: &str, objects: &Objects, calls: &[(ObjectRef, Call)]) -> StepResult {
    if calls.is_empty() {
        return Err(StepError::Failed(format!("{verb}: no objects selected (nothing was written under that prefix?)")));
    }
    let mut elapsed: Vec<Duration> = calls.iter().map(|(_, c)| c.elapsed).collect();
    elapsed.sort();
    let p50 = elapsed[elapsed.len() / 2];
    let max = elapsed[elapsed.len() - 1];
    if let Some(within) = objects.within
        && max > within.0
    {
        let slow = calls.iter().filter(|(_, c)| c.elapsed > within.0).count();
        return Err(StepError::Failed(format!(
            "{verb}: {slow} of {} calls took longer than {} (slowest {:.2} s)",
            calls.len(),
            humantime::format_duration(within.0),
            max.as_secs_f64()
        )));
    }
    let timing = format!("p50 {:.0} ms, max {:.0} ms", p50.as_secs_f64() * 1e3, max.as_secs_f64() * 1e3);
    let failures: Vec<(&ObjectRef, &String)> = calls.iter().filter_map(|(o, c)| c.result.as_ref().err().map(|e| (o, e))).collect();
    match &objects.expect_error {
        None if failures.is_empty() => {
            let done = match verb {
                "read" => "read back with the exact value",
                "create" => "created",
                "update" => "updated",
                _ => "deleted",
            };
            Ok(format!("{} {done} ({timing})", calls.len()))
        }
        None => Err(StepError::Failed(format!(
            "{verb}: {} of {} calls failed; first: {}: {}",
            failures.len(),
            calls.len(),
            failures[0].0.name,
            failures[0].1
        ))),
        Some(pattern) => {
            if failures.len() < calls.len() {
                let succeeded = calls.iter().find(|(_, c)| c.result.is_ok()).map(|(o, _)| o.name.clone()).unwrap_or_default();
                return Err(StepError::Failed(format!(
                    "{verb}: expected every call to fail with /{}/, but {} of {} succeeded (e.g. {succeeded})",
                    pattern.0.as_str(),
                    calls.len() - failures.len(),
                    calls.len()
                )));
            }
            if let Some((object, message)) = failures.iter().find(|(_, m)| !pattern.0.is_match(m)) {
                return Err(StepError::Failed(format!(
                    "{verb} {}: the error does not match /{}/: {message}",
                    object.name,
                    pattern.0.as_str()
                )));
            }
            Ok(format!("{} refused as expected ({timing}): {}", calls.len(), shorten(failures[0].1)))
        }
    }
}

/// The first 240 characters of a message.
fn shorten(message: &str) -> String {
    if message.chars().count() <= 240 { message.to_owned() } else { format!("{}…", message.chars().take(240).collect::<String>()) }
}

/// Runs `call` on every object, a few at a time, keeping the input order.
async fn each<F, Fut>(targets: Vec<(ObjectRef, u32)>, call: F) -> Vec<(ObjectRef, u32, Call)>
where
    F: Fn(ObjectRef, u32) -> Fut,
    Fut: std::future::Future<Output = Call>,
{
    futures::stream::iter(targets.into_iter().map(|(object, generation)| {
        let future = call(object.clone(), generation);
        async move { (object, generation, future.await) }
    }))
    .buffered(PARALLEL_CALLS)
    .collect()
    .await
}

fn record_timing(world: &mut World, verb: &str, objects: &Objects, calls: &[(ObjectRef, u32, Call)]) {
    if let Some(max) = calls.iter().map(|(_, _, c)| c.elapsed).max() {
        let prefix = objects.prefix.as_deref().unwrap_or("all");
        world.figure(format!("{verb}.{prefix}.max_ms"), (max.as_secs_f64() * 1e3).round());
    }
}

fn strip(calls: Vec<(ObjectRef, u32, Call)>) -> Vec<(ObjectRef, Call)> {
    calls.into_iter().map(|(o, _, c)| (o, c)).collect()
}

async fn create(world: &mut World, objects: &Objects) -> StepResult {
    let client = world.client(objects.apiserver).await?;
    let prefix = objects.prefix.clone().unwrap_or_default();
    let targets: Vec<(ObjectRef, u32)> = (0..objects.count.unwrap_or(0))
        .map(|i| (ObjectRef { kind: objects.kind, namespace: objects.namespace.clone(), name: format!("{prefix}-{i:03}") }, 0))
        .collect();
    let seed = world.seed();
    let calls = each(targets, |object, generation| {
        let client = client.clone();
        async move { client.create(&object, &value_for(seed, &object, generation)).await }
    })
    .await;
    for (object, generation, call) in &calls {
        if call.result.is_ok() {
            world.objects.insert(object.clone(), *generation);
        }
    }
    record_timing(world, "create", objects, &calls);
    judge("create", objects, &strip(calls))
}

async fn update(world: &mut World, objects: &Objects) -> StepResult {
    let client = world.client(objects.apiserver).await?;
    let targets = world.select(objects.kind, &objects.namespace, objects.prefix.as_deref(), objects.count);
    let seed = world.seed();
    let calls = each(targets, |object, generation| {
        let client = client.clone();
        async move { client.update(&object, &value_for(seed, &object, generation + 1)).await }
    })
    .await;
    for (object, generation, call) in &calls {
        if call.result.is_ok() {
            world.objects.insert(object.clone(), generation + 1);
        }
    }
    record_timing(world, "update", objects, &calls);
    judge("update", objects, &strip(calls))
}

async fn read(world: &mut World, objects: &Objects) -> StepResult {
    let client = world.client(objects.apiserver).await?;
    let targets = world.select(objects.kind, &objects.namespace, objects.prefix.as_deref(), objects.count);
    let seed = world.seed();
    let calls = each(targets, |object, generation| {
        let client = client.clone();
        async move { client.read(&object, &value_for(seed, &object, generation)).await }
    })
    .await;
    // A wrong value is never an "expected error": it is data loss.
    if let Some((object, _, call)) = calls.iter().find(|(_, _, c)| c.result.as_ref().is_err_and(|e| e.starts_with("WRONG VALUE"))) {
        return Err(StepError::Failed(format!("read {}: {}", object.name, call.result.as_ref().err().cloned().unwrap_or_default())));
    }
    record_timing(world, "read", objects, &calls);
    judge("read", objects, &strip(calls))
}

async fn delete(world: &mut World, objects: &Objects) -> StepResult {
    let client = world.client(objects.apiserver).await?;
    let targets = world.select(objects.kind, &objects.namespace, objects.prefix.as_deref(), objects.count);
    let calls = each(targets, |object, _| {
        let client = client.clone();
        async move { client.delete(&object).await }
    })
    .await;
    for (object, _, call) in &calls {
        if call.result.is_ok() {
            world.objects.remove(object);
        }
    }
    judge("delete", objects, &strip(calls))
}

/// `rewrite: {kind, apiserver, expect_error}`: the documented procedure after an encryption
/// change, `kubectl get <resource> -A -o json | kubectl replace -f -`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The apiserver to call.
    #[serde(default)]
    pub apiserver: usize,
    /// The rewrite must fail with output matching this (default: it must succeed).
    #[serde(default)]
    pub expect_error: Option<Pattern>,
}

impl StepKind for Rewrite {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.apiserver(self.apiserver)
    }

    fn label(&self) -> String {
        format!("rewrite all {} (kubectl get -A -o json | kubectl replace -f -)", self.kind.resource())
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(rewrite(world, self))
    }
}

/// `migrate: {kind, apiserver}`: the rewrite `kms-lab migrate` does on a real cluster (crate
/// `ops`): every object re-written through the API in pages, a bounded number in flight, retried
/// on conflicts and throttling; an object it cannot rewrite fails the step, named.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Migrate {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The apiserver to call.
    #[serde(default)]
    pub apiserver: usize,
    /// A checkpoint (a file in the run directory by this name): a later `migrate` with the same
    /// checkpoint resumes after the last page finished.
    #[serde(default)]
    pub checkpoint: Option<String>,
    /// Stop once at least this many objects were rewritten (the checkpoint written), as an
    /// operator interrupting the migration would; a later `migrate` with the checkpoint finishes.
    #[serde(default)]
    pub stop_after: Option<u64>,
}

impl StepKind for Migrate {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        if self.stop_after.is_some() && self.checkpoint.is_none() {
            return Err("`stop_after` interrupts the migration: add `checkpoint: NAME` so a later `migrate` can resume it".into());
        }
        if let Some(name) = &self.checkpoint
            && !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!("checkpoint `{name}`: use letters, digits, `-` and `_` (it names a file in the run directory)"));
        }
        scope.apiserver(self.apiserver)
    }

    fn label(&self) -> String {
        let mut label = format!("migrate all {} (kms-lab migrate: paged, retried, through the API)", self.kind.resource());
        if let Some(name) = &self.checkpoint {
            label.push_str(&format!(", checkpoint `{name}`"));
        }
        if let Some(n) = self.stop_after {
            label.push_str(&format!(", stopping after {n}"));
        }
        label
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            use kms_lab_ops::migrate::{MigrateOptions, migrate};
            let resource = self.kind.ops_resource();
            let client = world.stack.kube_client(self.apiserver).await?;
            let checkpoint = self.checkpoint.as_ref().map(|name| world.stack.run_dir().join(format!("migrate-{name}.checkpoint.json")));
            let options =
                MigrateOptions { resources: vec![resource], checkpoint, stop_after: self.stop_after, ..MigrateOptions::default() };
            let report =
                migrate(&client, &options, &mut |_, _, _| {}).await.map_err(|e| StepError::Failed(format!("kms-lab migrate: {e}")))?;
            let failed: Vec<_> = report.failed().collect();
            if let Some(first) = failed.first() {
                return Err(StepError::Failed(format!(
                    "{} object(s) could not be rewritten, e.g. {}: {}",
                    failed.len(),
                    first.object,
                    first.error
                )));
            }
            let name = self.kind.resource();
            let tracked = world.objects.keys().filter(|o| o.kind == self.kind).count() as u64;
            let rewritten = report.rewritten();
            let already_done: u64 = report.resources.iter().map(|r| r.already_done).sum();
            if report.stopped_early {
                if self.stop_after.is_none_or(|n| rewritten < n) {
                    return Err(StepError::Failed(format!("migrate stopped early after {rewritten} {name} without being asked to")));
                }
            } else if rewritten + already_done < tracked {
                return Err(StepError::Failed(format!(
                    "migrate rewrote {rewritten} {name} (and an earlier run {already_done}), but the scenario wrote {tracked}"
                )));
            }
            world.figure(format!("migrate.{name}.objects_per_second"), (report.objects_per_second * 10.0).round() / 10.0);
            let retried: u64 = report.resources.iter().map(|r| r.conflicts + r.throttled).sum();
            let resumed = if already_done > 0 { format!(", {already_done} done by an earlier run") } else { String::new() };
            let stopped = if report.stopped_early { ", stopped as asked (checkpoint written)" } else { "" };
            Ok(format!(
                "{rewritten} {name} rewritten in {:.1} s ({:.0}/s, {retried} retried, 0 failed{resumed}){stopped}",
                report.seconds, report.objects_per_second
            ))
        })
    }
}

async fn rewrite(world: &mut World, rewrite: &Rewrite) -> StepResult {
    let kubectl = world.stack.binaries().kubectl.path.clone();
    let kubeconfig = world.stack.kubeconfig_path(rewrite.apiserver);
    let resource = rewrite.kind.resource();
    let started = Instant::now();
    let outcome = async {
        let listed = run_kubectl(&kubectl, &kubeconfig, &["get", resource, "-A", "-o", "json"], None).await?;
        let replaced = run_kubectl(&kubectl, &kubeconfig, &["replace", "-f", "-"], Some(listed)).await?;
        Ok::<_, String>(String::from_utf8_lossy(&replaced).lines().filter(|l| l.ends_with(" replaced")).count())
    }
    .await;
    let took = started.elapsed().as_secs_f64();
    match (outcome, &rewrite.expect_error) {
        (Ok(count), None) => {
            let tracked = world.objects.keys().filter(|o| o.kind == rewrite.kind).count();
            if count < tracked {
                return Err(StepError::Failed(format!("kubectl replaced {count} {resource}, but the scenario wrote {tracked}")));
            }
            world.figure(format!("rewrite.{resource}.seconds"), (took * 10.0).round() / 10.0);
            Ok(format!("{count} {resource} replaced in {took:.1} s"))
        }
        (Ok(count), Some(pattern)) => Err(StepError::Failed(format!(
            "expected the rewrite to fail with /{}/, but {count} {resource} were replaced",
            pattern.0.as_str()
        ))),
        (Err(message), None) => Err(StepError::Failed(format!("rewrite of {resource} failed: {}", shorten(&message)))),
        (Err(message), Some(pattern)) if pattern.0.is_match(&message) => Ok(format!("refused as expected: {}", shorten(&message))),
        (Err(message), Some(pattern)) => {
            Err(StepError::Failed(format!("the rewrite failed, but not with /{}/: {}", pattern.0.as_str(), shorten(&message))))
        }
    }
}

async fn run_kubectl(
    kubectl: &std::path::Path,
    kubeconfig: &std::path::Path,
    args: &[&str],
    stdin: Option<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new(kubectl);
    command
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(if stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| format!("cannot run {}: {e}", kubectl.display()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(&input).await.map_err(|e| format!("cannot feed kubectl: {e}"))?;
    }
    let output = tokio::time::timeout(REWRITE_DEADLINE, child.wait_with_output())
        .await
        .map_err(|_| format!("`kubectl {}` did not finish within {} s", args.join(" "), REWRITE_DEADLINE.as_secs()))?
        .map_err(|e| format!("kubectl failed to run: {e}"))?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(format!("`kubectl {}` exited with {}: {}", args.join(" "), output.status, String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// `list: {kind, namespace, apiserver, expect_error, within, figure}`: one LIST, timed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The apiserver to call.
    #[serde(default)]
    pub apiserver: usize,
    /// The LIST must fail with a message matching this (default: it must succeed with every tracked object).
    #[serde(default)]
    pub expect_error: Option<Pattern>,
    /// It must answer within this long (a behavioural bound, not a performance judgement).
    #[serde(default)]
    pub within: Option<Dur>,
    /// Record its time in milliseconds as this figure.
    #[serde(default)]
    pub figure: Option<FigureName>,
}

impl StepKind for List {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.apiserver(self.apiserver)
    }

    fn label(&self) -> String {
        format!(
            "list all {} on apiserver-{}{}",
            self.kind.resource(),
            self.apiserver,
            self.expect_error.as_ref().map(|p| format!(", expecting an error /{}/", p.0.as_str())).unwrap_or_default()
        )
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let started = Instant::now();
            let result = list_names(world, self.apiserver, self.kind, &self.namespace).await;
            let elapsed = started.elapsed();
            if let Some(figure) = &self.figure {
                world.figure(figure.to_string(), (elapsed.as_secs_f64() * 1e3).round());
            }
            let took = format!("{:.0} ms", elapsed.as_secs_f64() * 1e3);
            if let Some(within) = self.within
                && elapsed > within.0
            {
                return Err(StepError::Failed(format!("the LIST took {took}, more than {}", humantime::format_duration(within.0))));
            }
            match (result, &self.expect_error) {
                (Ok(names), None) => {
                    let missing = world.missing_from(self.kind, &self.namespace, &names);
                    match missing.first() {
                        None => Ok(format!("{} {} listed in {took}", names.len(), self.kind.resource())),
                        Some(first) => Err(StepError::Failed(format!(
                            "the LIST lacks {} object(s) the scenario wrote, e.g. {}",
                            missing.len(),
                            first.name
                        ))),
                    }
                }
                (Ok(names), Some(pattern)) => Err(StepError::Failed(format!(
                    "expected the LIST to fail with /{}/, but it returned {} objects",
                    pattern.0.as_str(),
                    names.len()
                ))),
                (Err(message), Some(pattern)) if pattern.0.is_match(&message) => Ok(format!("refused as expected after {took}: {message}")),
                (Err(message), _) => Err(StepError::Failed(format!("the LIST failed after {took}: {message}"))),
            }
        })
    }
}

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
