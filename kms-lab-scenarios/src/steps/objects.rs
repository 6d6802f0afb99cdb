//! Objects through the API: create, update, read, delete, a timed LIST; conditions on a fresh
//! write and on a LIST returning everything written.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Deserialize;

use super::{Scope, StepFuture, StepKind, StepResult};
use crate::conditions::{ConditionKind, ObserveFuture, Seen};
use crate::error::StepError;
use crate::model::{Dur, FigureName, Kind, Pattern, default_namespace};
use crate::object_client::{Call, list_names};
use crate::world::{ObjectRef, World, value_for};

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
pub(super) fn shorten(message: &str) -> String {
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
    if objects.namespace != default_namespace() {
        ensure_namespace(world, objects.apiserver, &objects.namespace).await?;
    }
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

/// Creates `namespace` unless it exists (the NamespaceLifecycle admission refuses objects in a
/// namespace that does not).
async fn ensure_namespace(world: &World, apiserver: usize, namespace: &str) -> Result<(), StepError> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, PostParams};
    let client = world.stack.kube_client(apiserver).await?;
    let object =
        Namespace { metadata: kube::api::ObjectMeta { name: Some(namespace.to_owned()), ..Default::default() }, ..Default::default() };
    match Api::<Namespace>::all(client).create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(StepError::Failed(format!("cannot create namespace `{namespace}`: {e}"))),
    }
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

/// How often a write probe looks again: once a second, since each probe writes an object.
const WRITE_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// A write probe: each observation creates one new object `<prefix>-NNN`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteProbe {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The apiserver to call.
    #[serde(default)]
    pub apiserver: usize,
    /// Name prefix of the probe objects.
    pub prefix: String,
    /// The condition holds when a write fails with a message matching this (default: when one succeeds).
    #[serde(default)]
    pub expect_error: Option<Pattern>,
}

/// `listed`: a LIST returns every object of the kind the scenario wrote.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listed {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The apiserver to call.
    #[serde(default)]
    pub apiserver: usize,
}

impl ConditionKind for WriteProbe {
    fn check(&self, scope: &Scope<'_>) -> Result<(), String> {
        scope.apiserver(self.apiserver)
    }

    fn label(&self) -> String {
        format!(
            "a new {} write on apiserver-{} {}",
            self.kind.resource(),
            self.apiserver,
            self.expect_error.as_ref().map_or("succeeds".to_owned(), |p| format!("fails with /{}/", p.0.as_str()))
        )
    }

    fn observe<'a>(&'a self, world: &'a mut World, _baseline: u64) -> ObserveFuture<'a> {
        Box::pin(observe_write(world, self))
    }

    fn poll_interval(&self) -> Duration {
        WRITE_PROBE_INTERVAL
    }

    fn wait_only(&self) -> bool {
        true
    }
}

impl ConditionKind for Listed {
    fn check(&self, scope: &Scope<'_>) -> Result<(), String> {
        scope.apiserver(self.apiserver)
    }

    fn label(&self) -> String {
        format!("a LIST of {} on apiserver-{} returns every object written", self.kind.resource(), self.apiserver)
    }

    fn observe<'a>(&'a self, world: &'a mut World, _baseline: u64) -> ObserveFuture<'a> {
        Box::pin(observe_listed(world, self))
    }
}

async fn observe_write(world: &mut World, write: &WriteProbe) -> Seen {
    let client = match world.client(write.apiserver).await {
        Ok(client) => client,
        Err(error) => return Seen::new(false, error.to_string()),
    };
    let object = ObjectRef { kind: write.kind, namespace: default_namespace(), name: world.next_probe_name(write.kind, &write.prefix) };
    let call = client.create(&object, &value_for(world.seed(), &object, 0)).await;
    if call.result.is_ok() {
        world.objects.insert(object.clone(), 0);
    }
    let holds = match (&call.result, &write.expect_error) {
        (Ok(()), None) => true,
        (Err(message), Some(pattern)) => pattern.0.is_match(message),
        _ => false,
    };
    let text = match &call.result {
        Ok(()) => format!("{} written ({:.0} ms)", object.name, call.elapsed.as_secs_f64() * 1e3),
        Err(message) => format!("{} refused: {message}", object.name),
    };
    Seen::new(holds, text)
}

async fn observe_listed(world: &World, listed: &Listed) -> Seen {
    match crate::object_client::list_names(world, listed.apiserver, listed.kind, &listed.namespace).await {
        Ok(names) => {
            let missing = world.missing_from(listed.kind, &listed.namespace, &names);
            let expected = world.select(listed.kind, &listed.namespace, None, None).len();
            match missing.first() {
                None => Seen::new(true, format!("a LIST returned all {expected} {}", listed.kind.resource())),
                Some(first) => Seen::new(false, format!("a LIST returned {} of {expected}; missing e.g. {}", names.len(), first.name)),
            }
        }
        Err(message) => Seen::new(false, format!("the LIST failed: {message}")),
    }
}
