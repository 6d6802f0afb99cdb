//! Steps that write and read objects through the API: create, update, read, delete, the
//! documented rewrite procedure, and background write load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::StepResult;
use crate::error::StepError;
use crate::model::{Kind, Load, Objects, Rewrite};
use crate::world::{Call, ObjectClient, ObjectRef, World, value_for};

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

pub(super) async fn create(world: &mut World, objects: &Objects) -> StepResult {
    let client = ObjectClient::new(&world.stack, objects.apiserver).await?;
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

pub(super) async fn update(world: &mut World, objects: &Objects) -> StepResult {
    let client = ObjectClient::new(&world.stack, objects.apiserver).await?;
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

pub(super) async fn read(world: &mut World, objects: &Objects) -> StepResult {
    let client = ObjectClient::new(&world.stack, objects.apiserver).await?;
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

pub(super) async fn delete(world: &mut World, objects: &Objects) -> StepResult {
    let client = ObjectClient::new(&world.stack, objects.apiserver).await?;
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

/// The documented procedure after an encryption change:
/// `kubectl get <resource> -A -o json | kubectl replace -f -`.
pub(super) async fn rewrite(world: &mut World, rewrite: &Rewrite) -> StepResult {
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
}

async fn writer(w: Writer) -> LoadTally {
    let Writer { client, seed, kind, namespace, prefix, retries, pace, stop } = w;
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
                    break;
                }
                // A retry of a write that did land: it counts if the stored value is ours.
                Err(e) if attempt > 0 && e.starts_with("409") && client.read(&object, &value).await.result.is_ok() => {
                    tally.written.push(object.clone());
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

pub(super) async fn load(world: &mut World, load: &Load) -> StepResult {
    let client = ObjectClient::new(&world.stack, load.apiserver).await?;
    let stop = Arc::new(AtomicBool::new(false));
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
            }))
        })
        .collect();
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
        "{} writes stored, {} attempts failed and were retried, {} lost [{}]",
        tally.written.len(),
        tally.failed_attempts,
        tally.lost.len(),
        inner.join("; ")
    );
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
