//! Steps the field-incident scenarios (`scenarios/incidents/`) need: linting the configuration
//! in force, socket files, timed LISTs and cold starts, DEK sources in etcd, timed waits and
//! write probes, health sampled over a stated duration, restarts that wait for `/livez` only, a
//! key-version rollback in the mock KMS, and KMS call rates from its audit log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kms_lab_lint::{ApiserverFlags, LintContext};
use kms_wire::envelope::Envelope;
use kube::api::{Api, ListParams};

use super::StepResult;
use super::expect;
use crate::error::StepError;
use crate::model::{
    ColdStart, DekSources, DisableKeyVersion, Kind, KmsCalls, LintStep, ListStep, ObserveHealth, RestartApiserver, SocketExpect, TimeUntil,
    WaitFor, WaitUntil,
};
use crate::world::{CALL_DEADLINE, ObjectClient, ObjectRef, World, describe_kube_error, value_for};

/// How long a write probe of `time_until` waits before the next probe.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How often `cold_start` lists again.
const LIST_INTERVAL: Duration = Duration::from_millis(250);

fn seconds(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 10.0).round() / 10.0
}

pub(super) async fn lint(world: &mut World, step: &LintStep) -> StepResult {
    // The files go to the run directory, beside the apiserver's own copy (findings never print key bytes).
    let write = |index: usize| -> Result<PathBuf, StepError> {
        let text = world.stack.encryption_config_text(index)?;
        let path = world.stack.run_dir().join(format!("lint-apiserver-{index}.yaml"));
        std::fs::write(&path, text).map_err(|e| StepError::Failed(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    };
    let main = write(step.apiserver)?;
    let against = step.against.iter().map(|i| write(*i)).collect::<Result<Vec<_>, _>>()?;
    let flags = match &step.flags {
        Some(flags) => Some(ApiserverFlags::parse(&flags.join("\n")).map_err(|e| StepError::Failed(format!("lint flags: {e}")))?),
        None => None,
    };
    let context = LintContext { flags, secrets: step.secrets, kms_p99: step.kms_p99.map(|d| d.0) };
    let report = kms_lab_lint::lint_files(&main, &against, &context).map_err(|e| StepError::Failed(format!("kms-lab lint: {e}")))?;
    let found: BTreeSet<&str> = report.findings.iter().map(|f| f.id).collect();
    let listed = report.findings.iter().map(|f| format!("{} {} at {}", f.severity.as_str(), f.id, f.path)).collect::<Vec<_>>().join("; ");
    let missing: Vec<&String> = step.expect.iter().filter(|id| !found.contains(id.as_str())).collect();
    let unwanted: Vec<&String> = step.absent.iter().filter(|id| found.contains(id.as_str())).collect();
    let text = if listed.is_empty() { "no findings".to_owned() } else { format!("findings: {listed}") };
    if !missing.is_empty() || !unwanted.is_empty() {
        return Err(StepError::Failed(format!("{text}; expected {missing:?} to be reported and {unwanted:?} not to be")));
    }
    // The first finding's reason and fix, so the report shows what lint tells an operator.
    let advice =
        report.findings.iter().find(|f| step.expect.iter().any(|id| id == f.id)).map(|f| format!(" — {} Fix: {}", f.reason, f.fix));
    Ok(format!("{text}{}", advice.unwrap_or_default()))
}

pub(super) async fn socket(world: &mut World, expect: &SocketExpect) -> StepResult {
    let path =
        world.stack.plugin_socket(&expect.plugin).ok_or_else(|| StepError::Failed(format!("no plugin named `{}`", expect.plugin)))?;
    let exists = path.exists();
    let text = format!("{} {}", path.display(), if exists { "exists" } else { "does not exist" });
    if exists == expect.exists { Ok(text) } else { Err(StepError::Failed(text)) }
}

/// One LIST: the names it returned, or the API's error.
async fn list_names(world: &World, apiserver: usize, kind: Kind, namespace: &str) -> Result<BTreeSet<String>, String> {
    let client = world.stack.kube_client(apiserver).await.map_err(|e| e.to_string())?;
    let params = ListParams::default();
    let call = async {
        let names: Vec<Option<String>> = match kind {
            Kind::Secret => Api::<Secret>::namespaced(client, namespace)
                .list(&params)
                .await
                .map(|l| l.items.into_iter().map(|s| s.metadata.name).collect()),
            Kind::Configmap => Api::<ConfigMap>::namespaced(client, namespace)
                .list(&params)
                .await
                .map(|l| l.items.into_iter().map(|c| c.metadata.name).collect()),
        }
        .map_err(|e| describe_kube_error(&e))?;
        Ok(names.into_iter().flatten().collect())
    };
    tokio::time::timeout(CALL_DEADLINE, call).await.unwrap_or_else(|_| Err(format!("no answer within {} s", CALL_DEADLINE.as_secs())))
}

/// The tracked objects of `kind` in `namespace` a LIST did not return.
fn missing_from(world: &World, kind: Kind, namespace: &str, names: &BTreeSet<String>) -> Vec<ObjectRef> {
    world.select(kind, namespace, None, None).into_iter().map(|(o, _)| o).filter(|o| !names.contains(&o.name)).collect()
}

pub(super) async fn list(world: &mut World, step: &ListStep) -> StepResult {
    let started = Instant::now();
    let result = list_names(world, step.apiserver, step.kind, &step.namespace).await;
    let elapsed = started.elapsed();
    let figure = step.figure.clone().unwrap_or_else(|| format!("list.{}", step.kind.resource()));
    world.figure(format!("{figure}.ms"), (elapsed.as_secs_f64() * 1e3).round());
    let took = format!("{:.0} ms", elapsed.as_secs_f64() * 1e3);
    if let Some(within) = step.within
        && elapsed > within.0
    {
        return Err(StepError::Failed(format!("the LIST took {took}, more than {}", humantime::format_duration(within.0))));
    }
    match (result, &step.expect_error) {
        (Ok(names), None) => {
            let missing = missing_from(world, step.kind, &step.namespace, &names);
            match missing.first() {
                None => Ok(format!("{} {} listed in {took}", names.len(), step.kind.resource())),
                Some(first) => {
                    Err(StepError::Failed(format!("the LIST lacks {} object(s) the scenario wrote, e.g. {}", missing.len(), first.name)))
                }
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
}

pub(super) async fn dek_sources(world: &mut World, step: &DekSources) -> StepResult {
    let key_prefix = format!("/registry/{}/{}/{}", step.kind.resource(), step.namespace, step.prefix.as_deref().unwrap_or(""));
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
    world.figure(step.figure.clone(), count as f64);
    let text = format!(
        "{count} distinct DEK source(s) among {} values under {key_prefix}{}",
        values.len(),
        if other > 0 { format!(" ({other} not written by a KMS provider)") } else { String::new() }
    );
    let ok = step.at_least.is_none_or(|min| count >= min) && step.at_most.is_none_or(|max| count <= max);
    if ok { Ok(text) } else { Err(StepError::Failed(format!("{text}; expected {:?}..={:?}", step.at_least, step.at_most))) }
}

/// A short label for a `time_until` condition.
pub fn time_until_label(time: &TimeUntil) -> String {
    match &time.write {
        Some(write) => format!(
            "a new {} write on apiserver-{} {}",
            write.kind.resource(),
            write.apiserver,
            write.expect_error.as_ref().map_or("succeeds".to_owned(), |p| format!("fails with /{}/", p.0.as_str()))
        ),
        None => expect::condition_label(&as_wait(time)),
    }
}

fn as_wait(time: &TimeUntil) -> WaitUntil {
    WaitUntil {
        within: time.within,
        health: time.health.clone(),
        plugin_status: time.plugin_status.clone(),
        apiserver_key_id: None,
        metric: time.metric.clone(),
    }
}

pub(super) async fn time_until(world: &mut World, time: &TimeUntil) -> StepResult {
    let started = Instant::now();
    let text = match &time.write {
        None => {
            let wait = as_wait(time);
            let before: BTreeSet<String> = world.figures.keys().cloned().collect();
            let text = expect::wait_until(world, &wait).await?;
            // The wait records its own figure under a generated name; this step's name replaces it.
            world.figures.retain(|k, _| before.contains(k) || !k.starts_with("wait."));
            text
        }
        Some(write) => {
            let client = ObjectClient::new(&world.stack, write.apiserver).await?;
            let taken = world.objects.keys().filter(|o| o.kind == write.kind && o.name.starts_with(&format!("{}-", write.prefix))).count();
            let mut number = taken;
            loop {
                let object = ObjectRef {
                    kind: write.kind,
                    namespace: crate::model::default_namespace(),
                    name: format!("{}-{number:03}", write.prefix),
                };
                number += 1;
                let call = client.create(&object, &value_for(world.seed(), &object, 0)).await;
                if call.result.is_ok() {
                    world.objects.insert(object.clone(), 0);
                }
                let holds = match (&call.result, &write.expect_error) {
                    (Ok(()), None) => true,
                    (Err(message), Some(pattern)) => pattern.0.is_match(message),
                    _ => false,
                };
                let last = match &call.result {
                    Ok(()) => format!("{} written ({:.0} ms)", object.name, call.elapsed.as_secs_f64() * 1e3),
                    Err(message) => format!("{} refused: {message}", object.name),
                };
                if holds {
                    break format!("after {:.1} s and {} probe write(s): {last}", started.elapsed().as_secs_f64(), number - taken);
                }
                if started.elapsed() > time.within.0 {
                    if !time.must_happen {
                        world.figure(format!("{}.held", time.figure), 0.0);
                        world.figure(time.figure.clone(), seconds(started.elapsed()));
                        return Ok(format!(
                            "did NOT happen within {} ({} probe write(s)); `{}` records the window; last: {last}",
                            humantime::format_duration(time.within.0),
                            number - taken,
                            time.figure
                        ));
                    }
                    return Err(StepError::Timeout { seconds: time.within.0.as_secs_f64(), what: time_until_label(time), last });
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        }
    };
    let elapsed = seconds(started.elapsed());
    world.figure(time.figure.clone(), elapsed);
    if !time.must_happen {
        world.figure(format!("{}.held", time.figure), 1.0);
    }
    Ok(format!("`{}` = {elapsed} s; {text}", time.figure))
}

pub(super) async fn observe_health(world: &mut World, observe: &ObserveHealth) -> StepResult {
    let interval = observe.interval.map_or(Duration::from_secs(1), |d| d.0);
    let started = Instant::now();
    let (mut samples, mut failing, mut flaps) = (0usize, 0usize, 0usize);
    let mut previous: Option<bool> = None;
    let mut timeline = String::new();
    // A measurement over the stated duration: one sample per interval, transitions counted.
    while started.elapsed() < observe.duration.0 {
        let healthy = matches!(world.stack.apiserver_get(observe.apiserver, &observe.path).await, Ok((200, _)));
        samples += 1;
        if !healthy {
            failing += 1;
        }
        if previous.is_some_and(|p| p != healthy) {
            flaps += 1;
        }
        if previous != Some(healthy) {
            timeline.push_str(&format!(" {:.0}s:{}", started.elapsed().as_secs_f64(), if healthy { "ok" } else { "FAIL" }));
        }
        previous = Some(healthy);
        tokio::time::sleep(interval).await;
    }
    let figure = observe.figure.clone().unwrap_or_else(|| "health".into());
    let share = if samples == 0 { 0.0 } else { (failing as f64 / samples as f64 * 100.0).round() / 100.0 };
    world.figure(format!("{figure}.flaps"), flaps as f64);
    world.figure(format!("{figure}.failing_share"), share);
    let text = format!("{flaps} transition(s) in {samples} samples, {failing} failing; timeline:{timeline}");
    let ok = observe.flaps.at_least.is_none_or(|min| flaps >= min) && observe.flaps.at_most.is_none_or(|max| flaps <= max);
    if ok {
        Ok(text)
    } else {
        Err(StepError::Failed(format!("{text}; expected flaps {:?}..={:?}", observe.flaps.at_least, observe.flaps.at_most)))
    }
}

pub(super) async fn restart_apiserver(world: &mut World, restart: &RestartApiserver) -> StepResult {
    let started = Instant::now();
    let readiness = match restart.wait {
        WaitFor::Live => kms_lab_stack::WaitFor::Live,
        WaitFor::Ready => kms_lab_stack::WaitFor::Ready,
        WaitFor::Serving => kms_lab_stack::WaitFor::Serving,
    };
    world.stack.restart(&kms_lab_stack::Component::Apiserver(restart.apiserver), readiness).await?;
    Ok(format!("apiserver-{} answers {} after {:.1} s", restart.apiserver, readiness, started.elapsed().as_secs_f64()))
}

pub(super) async fn cold_start(world: &mut World, cold: &ColdStart) -> StepResult {
    let started = Instant::now();
    world.stack.restart(&kms_lab_stack::Component::Apiserver(cold.apiserver), kms_lab_stack::WaitFor::Live).await?;
    let live = started.elapsed();
    let expected = world.select(cold.kind, &cold.namespace, None, None).len();
    let mut attempts = 0;
    let last = loop {
        attempts += 1;
        let last = match list_names(world, cold.apiserver, cold.kind, &cold.namespace).await {
            Ok(names) if missing_from(world, cold.kind, &cold.namespace, &names).is_empty() => break None,
            Ok(names) => format!("a LIST returned {} of {expected}", names.len()),
            Err(message) => format!("the LIST failed: {message}"),
        };
        if started.elapsed() > cold.within.0 {
            break Some(last);
        }
        tokio::time::sleep(LIST_INTERVAL).await;
    };
    if let Some(last) = last {
        return Err(StepError::Timeout {
            seconds: cold.within.0.as_secs_f64(),
            what: format!("a full LIST of {expected} {}", cold.kind.resource()),
            last,
        });
    }
    let total = seconds(started.elapsed());
    world.figure(cold.figure.clone(), total);
    world.figure(format!("{}.livez", cold.figure), seconds(live));
    Ok(format!(
        "`{}` = {total} s from restart to a full LIST of {expected} {} (live after {:.1} s, {attempts} LIST attempt(s))",
        cold.figure,
        cold.kind.resource(),
        live.as_secs_f64()
    ))
}

pub(super) async fn set_current_key_version(world: &mut World, version: &DisableKeyVersion) -> StepResult {
    let key_id = world
        .marks
        .get(&version.mark)
        .and_then(|m| m.key_ids.get(&version.plugin))
        .cloned()
        .ok_or_else(|| StepError::Failed(format!("{} reported no key id at mark `{}`", version.plugin, version.mark)))?;
    // The reference plugin's key id is `<key>/<version>`.
    let (_, version_id) = key_id.rsplit_once('/').ok_or_else(|| {
        StepError::Failed(format!("{}'s key id `{key_id}` at `{}` names no key version (`<key>/<version>`)", version.plugin, version.mark))
    })?;
    let kms = world.stack.mock_kms().ok_or_else(|| StepError::Failed("the stack runs no mock KMS".into()))?;
    kms.set_current_version(version_id).await?;
    Ok(format!("key version `{version_id}` is current again"))
}

pub(super) async fn kms_calls(world: &mut World, calls: &KmsCalls) -> StepResult {
    let since = world.marks.get(&calls.since).map(|m| m.audit_seq).unwrap_or(0);
    let kms = world.stack.mock_kms().ok_or_else(|| StepError::Failed("the stack runs no mock KMS".into()))?;
    let records = kms.audit(since).await?;
    let mine: Vec<&serde_json::Value> = records.iter().filter(|r| r["action"] == calls.action.name()).collect();
    let ok = mine.iter().filter(|r| r["outcome"] == "Ok").count();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_second: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for record in &mine {
        let outcome = record["outcome"].as_str().unwrap_or("?").to_owned();
        // `time` is RFC 3339 with milliseconds: its first 19 characters name the second.
        let second: String = record["time"].as_str().unwrap_or("").chars().take(19).collect();
        let slot = per_second.entry(second).or_default();
        slot.0 += 1;
        if outcome == "Ok" {
            slot.1 += 1;
        }
        *outcomes.entry(outcome).or_default() += 1;
    }
    let peak = per_second.values().map(|s| s.0).max().unwrap_or(0);
    let ok_peak = per_second.values().map(|s| s.1).max().unwrap_or(0);
    let figure = &calls.figure;
    world.figure(format!("{figure}.calls"), mine.len() as f64);
    world.figure(format!("{figure}.ok"), ok as f64);
    world.figure(format!("{figure}.peak_per_second"), peak as f64);
    world.figure(format!("{figure}.ok_peak_per_second"), ok_peak as f64);
    let per_object = calls.objects.filter(|n| *n > 0).map(|n| mine.len() as f64 / n as f64);
    if let Some(per_object) = per_object {
        world.figure(format!("{figure}.per_object"), (per_object * 100.0).round() / 100.0);
    }
    let text = format!(
        "{} {} calls since `{}` ({}), {}peak {peak}/s, successful peak {ok_peak}/s over {} s",
        mine.len(),
        calls.action.name(),
        calls.since,
        outcomes.iter().map(|(o, n)| format!("{n} {o}")).collect::<Vec<_>>().join(", "),
        per_object.map(|p| format!("{p:.2} per object, ")).unwrap_or_default(),
        per_second.len()
    );
    let mut broken = Vec::new();
    if let (Some(max), Some(per_object)) = (calls.per_object_at_most, per_object)
        && per_object > max
    {
        broken.push(format!("more than {max} calls per object"));
    }
    if let Some(max) = calls.ok_per_second_at_most
        && ok_peak > max
    {
        broken.push(format!("more than {max} successful calls in one second"));
    }
    if let Some(max) = calls.peak_per_second_at_most
        && peak > max
    {
        broken.push(format!("more than {max} calls in one second"));
    }
    if broken.is_empty() { Ok(text) } else { Err(StepError::Failed(format!("{text}; expected no {}", broken.join(", no ")))) }
}
