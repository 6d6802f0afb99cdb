//! The real engines: a short calibration run (the plugin and the mock KMS as processes, calls
//! over the plugin's socket, as the apiserver makes them) and the sweep on the real stack
//! (etcd, the mock KMS with each profile, the plugin, and one kube-apiserver started with
//! `--watch-cache=false` so that every read reaches the KMS transformer).
//!
//! Each point of the sweep rewrites the apiserver's EncryptionConfiguration, restarts it (empty
//! DEK caches, a new v2 seed), deletes the previous point's Secrets and runs the workload. What the
//! apiserver did is read from its own `/metrics` (plugin calls by method and gRPC status, storage
//! reads through the KMS transformer), the remote KMS calls from the mock KMS's counters.
//!
//! Every process is stopped and every file removed when the run ends, fails or is interrupted
//! (Ctrl-C, SIGTERM); after a failure the component logs are kept and their directory named.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::ProgressBar;
use k8s_openapi::api::core::v1::Secret;
use kms_lab_provision::ProvisionOptions;
use kms_lab_stack::apiserver::Readiness;
use kms_lab_stack::encryption::{EncryptionConfiguration, KmsProvider, Provider};
use kms_lab_stack::metrics::Metrics as PromMetrics;
use kms_lab_stack::mockkms::{MockKmsCluster, MockKmsOptions};
use kms_lab_stack::own::OwnBinary;
use kms_lab_stack::plugin::{PluginKek, PluginSlot, PluginSpec};
use kms_lab_stack::{EncryptionBuilder, Stack, StackOptions};
use kms_wire::PluginClient;
use kms_wire::proto::v1beta1;
use kube::api::{Api as KubeApi, ListParams, Patch, PatchParams};

use crate::calibration::{Calibration, LOCAL, PluginPolicy, ProfileCalibration};
use crate::error::TuneError;
use crate::model::{Api, Metrics, Op, Setting, operations};
use crate::profile::Profile;
use crate::recommend::{Point, show_ms};
use crate::{TuneOptions, TuneResult, finish};

/// Grace between SIGTERM and SIGKILL for the calibration's processes.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Deadline of one plugin call during calibration (above the plugin's own 2 s).
const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// How long a point waits for `/readyz` after the apiserver serves (`/livez`). A timeout below the
/// KMS latency keeps the KMS health check failing: the point then runs anyway and measures that.
const READY_WAIT: Duration = Duration::from_secs(20);
/// How often `/readyz` is asked while waiting.
const READY_POLL: Duration = Duration::from_millis(200);
/// The plugin the sweep's providers point at.
const PLUGIN: &str = "plugin-0";
/// The swept provider's name for each API (the other one only reads what it wrote, if anything).
const V1_PROVIDER: &str = "tune-v1";
const V2_PROVIDER: &str = "tune-v2";
/// Where etcd keeps the sweep's Secrets (`tune-0`, `tune-1`, … in `default`).
const SECRETS_KEY: &str = "/registry/secrets/default/";

/// Runs `work` until it ends or a stop signal arrives (then [`TuneError::Interrupted`]).
async fn unless_interrupted<T>(work: impl Future<Output = Result<T, TuneError>>) -> Result<T, TuneError> {
    tokio::select! {
        result = work => result,
        _ = kms_lab_cli_common::stop_signal() => Err(TuneError::Interrupted),
    }
}

fn work_dir() -> Result<tempfile::TempDir, TuneError> {
    tempfile::Builder::new()
        .prefix("kms-lab-tune-")
        .tempdir()
        .map_err(|source| TuneError::Io { what: "create a work directory".into(), source })
}

/// Measures `calls` v1beta1 Encrypt + Decrypt pairs per profile (throttle removed: the model
/// applies the quota itself) and with no faults ([`LOCAL`]), on a plugin backed by the mock KMS.
pub async fn calibrate(profiles: &[Profile], calls: usize, progress: &ProgressBar) -> Result<Calibration, TuneError> {
    let work = work_dir()?;
    let spec = PluginSpec { kek: PluginKek::MockKms, ..PluginSpec::local("tune-plugin") };
    let mut slot = PluginSlot::new(spec, work.path());
    let mut kms: Option<MockKmsCluster> = None;
    let run = async {
        progress.set_message("starting the mock KMS and the plugin");
        let launcher = kms_lab_stack::Launcher::new(kms_lab_stack::Runtime::configured()?, "tune").with_mount(work.path());
        let started = kms.insert(
            MockKmsCluster::start(
                &launcher,
                &OwnBinary::MockKms.locate()?,
                &work.path().join("kms-data"),
                work.path(),
                MockKmsOptions::default(),
            )
            .await?,
        );
        slot.start(&launcher, &OwnBinary::KmsPlugin.locate()?, &work.path().join("plugin.log"), Some(started.plugin_config())).await?;
        let endpoint = format!("unix://{}", slot.socket.display());
        measure(started, &endpoint, profiles, calls, progress).await
    };
    // An interruption drops `run` mid-start at worst: what it started is killed with it.
    let result = unless_interrupted(run).await;
    if let Some(process) = slot.process.take() {
        process.stop(STOP_GRACE).await;
    }
    if let Some(kms) = kms.as_mut() {
        kms.stop_all(STOP_GRACE).await;
    }
    drop(work);
    Ok(Calibration {
        source: format!("a real run of kms-plugin on mock-kms ({calls} Encrypt+Decrypt pairs per profile, over the plugin's Unix socket)"),
        plugin: PluginPolicy::default(),
        profiles: result?,
    })
}

async fn measure(
    kms: &MockKmsCluster,
    endpoint: &str,
    profiles: &[Profile],
    calls: usize,
    progress: &ProgressBar,
) -> Result<BTreeMap<String, ProfileCalibration>, TuneError> {
    let client = PluginClient::connect(endpoint, CALL_DEADLINE)
        .await
        .map_err(|e| TuneError::Real(format!("connect to the plugin at {endpoint}: {e}")))?;
    progress.set_position(0);
    progress.set_length(((profiles.len() + 1) * calls) as u64);
    let mut out = BTreeMap::new();
    let mut targets: Vec<(String, Option<String>)> = vec![(LOCAL.to_owned(), None)];
    for profile in profiles {
        let yaml =
            serde_yaml::to_string(&profile.without_throttle()).map_err(|e| TuneError::Real(format!("profile {}: {e}", profile.name)))?;
        targets.push((profile.name.clone(), Some(yaml)));
    }
    for (name, yaml) in targets {
        progress.set_message(format!("calibrating: {calls} Encrypt+Decrypt pairs over the plugin socket, {name}"));
        match &yaml {
            Some(yaml) => kms.set_faults(None, &fault_profile(yaml)?).await?,
            None => kms.clear_faults(None).await?,
        }
        let (mut samples, mut failures) = (Vec::with_capacity(calls * 2), 0u64);
        for i in 0..calls {
            let plain = Bytes::from((0..32u8).map(|b| b.wrapping_add(i as u8)).collect::<Vec<u8>>());
            let started = Instant::now();
            let sealed = client.v1beta1().encrypt(v1beta1::EncryptRequest { version: "v1beta1".into(), plain }).await;
            match sealed {
                Ok(response) => {
                    samples.push(started.elapsed().as_secs_f64() * 1000.0);
                    let started = Instant::now();
                    let request = v1beta1::DecryptRequest { version: "v1beta1".into(), cipher: response.into_inner().cipher };
                    match client.v1beta1().decrypt(request).await {
                        Ok(_) => samples.push(started.elapsed().as_secs_f64() * 1000.0),
                        Err(_) => failures += 1,
                    }
                }
                Err(_) => failures += 1,
            }
            progress.inc(1);
        }
        out.insert(name, ProfileCalibration::from_samples(samples, failures));
    }
    kms.clear_faults(None).await?;
    Ok(out)
}

/// The EncryptionConfiguration of a point: the swept provider writes; the other API's provider
/// (same plugin) and identity can still read anything an interrupted earlier point left behind.
fn encryption(setting: &Setting, socket: &Path) -> EncryptionConfiguration {
    let timeout = Duration::from_millis(setting.timeout_ms as u64);
    let (writer, reader) = match setting.api {
        Api::V1 => (
            KmsProvider::v1(V1_PROVIDER, socket, setting.cachesize.unwrap_or(crate::DEFAULT_CACHESIZE).max(1) as u32, timeout),
            KmsProvider::v2(V2_PROVIDER, socket, Duration::from_secs(3)),
        ),
        Api::V2 => (KmsProvider::v2(V2_PROVIDER, socket, timeout), KmsProvider::v1(V1_PROVIDER, socket, 1000, Duration::from_secs(3))),
    };
    EncryptionConfiguration::new(&["secrets"], vec![Provider::Kms(writer), Provider::Kms(reader), Provider::Identity(Default::default())])
}

/// The apiserver's own counters of its KMS use, from `/metrics` (they restart at zero with it).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KmsCounters {
    /// Encrypt calls to the plugin (v1: one per write; v2: one per DEK seed).
    pub encrypts: f64,
    /// Decrypt calls to the plugin (v1: DEK cache misses; v2: unknown seeds).
    pub decrypts: f64,
    /// Failed Encrypt/Decrypt calls (v2) or failed transformations (v1).
    pub failed: f64,
    /// Of those, the ones that ended `DeadlineExceeded` (the provider's `timeout` or the plugin's deadline).
    pub deadline_exceeded: f64,
    /// Reads of Secrets from etcd through the swept KMS transformer (each one DEK or seed lookup).
    pub lookups: f64,
    /// Lookups not served from the cache: v1 DEK cache misses; v2 Decrypt calls plus reads that
    /// failed without one (no DEK seed yet: "got unexpected nil transformer").
    pub misses: f64,
}

impl KmsCounters {
    /// Reads kube-apiserver's parsed `/metrics` for `provider` of `api`.
    ///
    /// kube-apiserver counts its KMS v2 gRPC calls (`…_kms_operations_latency_seconds`) but not
    /// its v1 ones: for v1, an Encrypt is a write through the provider's transformer and a Decrypt
    /// a DEK cache miss (`apiserver_storage_envelope_transformation_cache_misses_total`).
    pub fn parse(metrics: &PromMetrics, api: Api, provider: &str) -> Self {
        let prefix = format!("k8s:enc:kms:{}:{provider}:", api.as_str());
        let mut counters = Self::default();
        let (mut failed_lookups, mut failed_decrypts) = (0.0, 0.0);
        const NAMES: [&str; 3] = [
            "apiserver_envelope_encryption_kms_operations_latency_seconds_count",
            "apiserver_storage_envelope_transformation_cache_misses_total",
            "apiserver_storage_transformation_operations_total",
        ];
        for sample in NAMES.iter().flat_map(|name| metrics.samples(name)) {
            let value = sample.value;
            let label = |key: &str| sample.labels.get(key).map(String::as_str);
            let failed = |status: Option<&str>, counters: &mut Self| match status {
                Some("OK") => {}
                Some("DeadlineExceeded") => {
                    counters.failed += value;
                    counters.deadline_exceeded += value;
                }
                _ => counters.failed += value,
            };
            match sample.name.as_str() {
                "apiserver_envelope_encryption_kms_operations_latency_seconds_count"
                    if api == Api::V2 && label("provider_name") == Some(provider) =>
                {
                    let method = label("method_name").unwrap_or_default();
                    if method.ends_with("/Encrypt") {
                        counters.encrypts += value;
                    } else if method.ends_with("/Decrypt") {
                        counters.decrypts += value;
                        if label("grpc_status_code") != Some("OK") {
                            failed_decrypts += value;
                        }
                    } else {
                        continue;
                    }
                    failed(label("grpc_status_code"), &mut counters);
                }
                "apiserver_storage_envelope_transformation_cache_misses_total" if api == Api::V1 => counters.decrypts += value,
                "apiserver_storage_transformation_operations_total"
                    if label("transformer_prefix") == Some(prefix.as_str()) && label("resource").is_none_or(|r| r == "secrets") =>
                {
                    match label("transformation_type") {
                        Some("from_storage") => {
                            counters.lookups += value;
                            if label("status") != Some("OK") {
                                failed_lookups += value;
                            }
                        }
                        Some("to_storage") if api == Api::V1 => counters.encrypts += value,
                        _ => continue,
                    }
                    if api == Api::V1 {
                        failed(label("status"), &mut counters);
                    }
                }
                _ => {}
            }
        }
        counters.misses = match api {
            Api::V1 => counters.decrypts,
            Api::V2 => counters.decrypts + f64::max(failed_lookups - failed_decrypts, 0.0),
        };
        counters
    }

    fn plus(self, other: Self) -> Self {
        Self {
            encrypts: self.encrypts + other.encrypts,
            decrypts: self.decrypts + other.decrypts,
            failed: self.failed + other.failed,
            deadline_exceeded: self.deadline_exceeded + other.deadline_exceeded,
            lookups: self.lookups + other.lookups,
            misses: self.misses + other.misses,
        }
    }
}

/// What apiserver-0 has done with `provider` since it started.
async fn scrape(stack: &Stack, api: Api, provider: &str) -> Result<KmsCounters, TuneError> {
    Ok(KmsCounters::parse(&stack.metrics(0).await?, api, provider))
}

/// Encrypt/Decrypt calls that reached the mock KMS (with the plugin's retries), all outcomes.
async fn remote_calls(stack: &Stack) -> Result<u64, TuneError> {
    let kms = stack.mock_kms().ok_or_else(|| TuneError::Real("the stack runs no mock KMS".into()))?;
    let counters = kms.counters().await?;
    Ok(counters.total(mock_kms::api::Action::Encrypt) + counters.total(mock_kms::api::Action::Decrypt))
}

/// A profile's YAML as the mock KMS's typed admin request.
fn fault_profile(yaml: &str) -> Result<mock_kms::api::faults::FaultProfile, TuneError> {
    serde_yaml::from_str(yaml).map_err(|e| TuneError::Real(format!("a fault profile does not fit the mock KMS's format: {e}")))
}

/// How a real run ended: every point, or the points that finished before Ctrl-C.
#[derive(Debug)]
pub enum RealOutcome {
    /// The sweep ran to the end.
    Complete(TuneResult),
    /// Ctrl-C or SIGTERM stopped it; the result holds the points that finished (its engine says
    /// "interrupted: partial") and every process was stopped.
    Interrupted(TuneResult),
}

/// Runs the sweep on the real stack (provisioning the upstream binaries if needed).
pub async fn run_real(options: &TuneOptions, calibration_calls: usize, progress: &ProgressBar) -> Result<RealOutcome, TuneError> {
    let settings = options.settings();
    let Some(first) = settings.first().copied() else {
        return Err(TuneError::Argument { flag: "--cachesizes/--timeouts", message: "the sweep has no point".into() });
    };
    let total = settings.len() * options.profiles.len();
    // Everything of the run (run directory with logs; the stack's own work directory is separate
    // and always removed) lives here, removed at the end unless a failure keeps the logs.
    let root = work_dir()?;
    let mut stack: Option<Stack> = None;
    let mut versions = String::new();
    let mut done = Finished::default();
    let run = async {
        progress.set_message("provisioning kube-apiserver and etcd");
        let binaries = tokio::task::spawn_blocking(|| kms_lab_provision::provision(&ProvisionOptions::default()))
            .await
            .map_err(|e| TuneError::Real(format!("provisioning panicked: {e}")))?
            .map_err(kms_lab_stack::StackError::from)?;
        versions = format!("kube-apiserver {}, etcd {}", binaries.kube_apiserver.version, binaries.etcd.version);
        progress.set_message("starting etcd, mock KMS, plugin, kube-apiserver (--watch-cache=false)");
        let mut stack_options = StackOptions::new("tune", binaries, root.path()).with_mock_kms();
        // Reads must reach the transformer: no watch cache.
        stack_options.apiserver_args = vec!["--watch-cache=false".into()];
        stack_options.encryption_builder = Some(EncryptionBuilder(Arc::new(move |socket: &dyn Fn(&str) -> Option<PathBuf>| {
            encryption(&first, &socket(PLUGIN).unwrap_or_default())
        })));
        stack_options.readiness = Readiness::Live;
        let started = stack.insert(Stack::launch(stack_options).await?);
        sweep(started, options, &settings, calibration_calls, progress, &mut done).await
    };
    let result = unless_interrupted(run).await;
    let failed = matches!(result, Err(ref e) if !matches!(e, TuneError::Interrupted));
    if stack.is_some() || matches!(result, Err(TuneError::Interrupted)) {
        progress.set_message(if failed { "failed: stopping every process" } else { "stopping every process" });
    }
    let kept = match stack {
        Some(stack) => stack.shutdown(failed).await,
        None => None,
    };
    let engine = |mut result: TuneResult| {
        result.engine = format!("real stack: {versions}, kms-plugin on mock-kms, `--watch-cache=false`; {}", result.engine);
        result
    };
    match result {
        Ok(()) => Ok(RealOutcome::Complete(engine(result_of(done, options, calibration_calls, total)))),
        Err(TuneError::Interrupted) => Ok(RealOutcome::Interrupted(engine(result_of(done, options, calibration_calls, total)))),
        Err(error) => match kept {
            // Keep the logs (the work directory with sockets and etcd data is gone already).
            Some(logs) => {
                let _ = root.keep();
                Err(TuneError::Real(format!("{error} (logs of every component: {})", logs.display())))
            }
            None => Err(error),
        },
    }
}

/// Prints a line above the progress bar, or on stderr when the bar is hidden (not a terminal).
fn say(progress: &ProgressBar, line: String) {
    if progress.is_hidden() {
        eprintln!("{line}");
    } else {
        progress.println(line);
    }
}

fn describe(profile: &str, setting: &Setting) -> String {
    match setting.cachesize {
        Some(c) => format!("{profile} v1 cachesize {c} timeout {}", show_ms(setting.timeout_ms)),
        None => format!("{profile} {} timeout {}", setting.api.as_str(), show_ms(setting.timeout_ms)),
    }
}

async fn sweep(
    stack: &mut Stack,
    options: &TuneOptions,
    settings: &[Setting],
    calibration_calls: usize,
    progress: &ProgressBar,
    done: &mut Finished,
) -> Result<(), TuneError> {
    let endpoint = stack.plugin_endpoint(PLUGIN).ok_or_else(|| TuneError::Real(format!("the stack has no {PLUGIN}")))?;
    let socket = stack.plugin_socket(PLUGIN).map(Path::to_owned).unwrap_or_default();
    let measured = {
        let kms = stack.mock_kms().ok_or_else(|| TuneError::Real("the stack runs no mock KMS".into()))?;
        measure(kms, &endpoint, &options.profiles, calibration_calls, progress).await?
    };
    done.measured = Some(measured);
    let total = settings.len() * options.profiles.len();
    progress.set_position(0);
    progress.set_length(total as u64);
    let mut fresh = true;
    for profile in &options.profiles {
        for setting in settings {
            let started = Instant::now();
            let what = describe(&profile.name, setting);
            if !fresh {
                progress.set_message(format!("{what}: restarting the apiserver"));
                stack.write_encryption_config(0, &encryption(setting, &socket))?;
                stack.restart(&kms_lab_stack::Component::Apiserver(0), kms_lab_stack::WaitFor::Live).await?;
            }
            fresh = false;
            progress.set_message(format!("{what}: waiting for /readyz"));
            let mut not_ready: Vec<String> = wait_ready(stack).await?.into_iter().collect();
            let metrics = point(stack, options, profile, setting, progress, &what, &mut not_ready).await?;
            say(
                progress,
                format!(
                    "{what}: hit rate {:.1} %, {:.0} KMS calls/min, write p99 {:.0} ms, list p50 {:.0} ms, {:.1} % failed{} ({:.0} s)",
                    metrics.hit_rate * 100.0,
                    metrics.kms_calls_per_min,
                    metrics.write_p99_ms,
                    metrics.list_p50_ms,
                    metrics.failure_rate * 100.0,
                    if not_ready.is_empty() {
                        String::new()
                    } else {
                        format!("; not ready within {} s: {}", READY_WAIT.as_secs(), not_ready.join("; "))
                    },
                    started.elapsed().as_secs_f64()
                ),
            );
            done.points.push(Point { profile: profile.name.clone(), setting: *setting, metrics });
            progress.inc(1);
        }
    }
    Ok(())
}

/// What a sweep finished, kept outside it so that Ctrl-C still has it to report.
#[derive(Default)]
struct Finished {
    /// The measurement of one KMS call per profile, once taken.
    measured: Option<BTreeMap<String, ProfileCalibration>>,
    /// The points that finished.
    points: Vec<Point>,
}

/// The result of what `done` holds (all points, or the part an interrupt left).
fn result_of(done: Finished, options: &TuneOptions, calibration_calls: usize, total: usize) -> TuneResult {
    let measured = done.measured.unwrap_or_default();
    let partial =
        if done.points.len() < total { format!("; interrupted: partial, {} of {total} points", done.points.len()) } else { String::new() };
    let calibration = Calibration {
        source: format!(
            "the real run's own measurement ({calibration_calls} Encrypt+Decrypt pairs per profile over the plugin's Unix socket)"
        ),
        plugin: PluginPolicy::default(),
        profiles: measured,
    };
    let result = TuneResult {
        command: options.command.clone(),
        engine: format!("one KMS call measured over the plugin socket: {calibration_calls} Encrypt+Decrypt pairs per profile{partial}"),
        seed: options.seed,
        workload: options.workload.clone(),
        profiles: options.profiles.iter().map(|p| p.name.clone()).collect(),
        points: done.points,
        recommendations: Vec::new(),
        calibration: Some(calibration.clone()),
    };
    finish(result, |profile| calibration.profiles.get(profile).map(|c| c.at(0.99)).unwrap_or_default())
}

/// Runs one point on a freshly (re)started apiserver: applies the profile, runs the workload,
/// clears the faults and deletes the point's Secrets (so the next point starts on an empty
/// namespace, as the model does, and its apiserver's counters hold only its own work).
async fn point(
    stack: &mut Stack,
    options: &TuneOptions,
    profile: &Profile,
    setting: &Setting,
    progress: &ProgressBar,
    what: &str,
    not_ready: &mut Vec<String>,
) -> Result<Metrics, TuneError> {
    let kms = stack.mock_kms().ok_or_else(|| TuneError::Real("the stack runs no mock KMS".into()))?;
    kms.set_faults(None, &fault_profile(&profile.yaml)?).await?;
    progress.set_message(format!("{what}: workload"));
    let metrics = workload(stack, options, setting.api, progress, what, not_ready).await;
    if let Some(kms) = stack.mock_kms() {
        kms.clear_faults(None).await?;
    }
    let metrics = metrics?;
    progress.set_message(format!("{what}: deleting its Secrets"));
    delete_secrets(stack).await.map_err(|e| TuneError::Real(format!("{what}: {e}")))?;
    Ok(metrics)
}

/// Deletes every Secret the sweep wrote straight from etcd: through the apiserver it would need
/// the point's KMS provider, which may be the thing that is failing (a v2 timeout below the KMS
/// latency can leave a restarted apiserver without a DEK seed, unable to read them).
async fn delete_secrets(stack: &Stack) -> Result<(), TuneError> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let url = stack.etcd_url();
    let port: u16 = url.rsplit(':').next().and_then(|p| p.parse().ok()).ok_or_else(|| TuneError::Real(format!("etcd URL `{url}`")))?;
    // Every key from `…/tune-` up to, not including, `…/tune.` ('-' + 1).
    let request = serde_json::json!({
        "key": b64.encode(format!("{SECRETS_KEY}tune-")),
        "range_end": b64.encode(format!("{SECRETS_KEY}tune.")),
    });
    match kms_lab_stack::http::post_json(port, "/v3/kv/deleterange", &request.to_string(), Duration::from_secs(10)).await {
        Some((200, _)) => Ok(()),
        Some((status, body)) => Err(TuneError::Real(format!("delete the point's Secrets in etcd: {status} {body}"))),
        None => Err(TuneError::Real(format!("delete the point's Secrets in etcd: no answer on 127.0.0.1:{port}"))),
    }
}

/// Waits (bounded by [`READY_WAIT`]) until `/readyz` answers 200; `Some(failing checks)` if it
/// did not (the apiserver serves, but a KMS provider's health check fails).
async fn wait_ready(stack: &Stack) -> Result<Option<String>, TuneError> {
    let deadline = tokio::time::Instant::now() + READY_WAIT;
    let mut poll = tokio::time::interval(READY_POLL);
    loop {
        poll.tick().await;
        let (status, body) = stack.apiserver_get(0, "/readyz?verbose").await?;
        if status == 200 {
            return Ok(None);
        }
        if tokio::time::Instant::now() >= deadline {
            let failing: Vec<&str> = body.lines().filter(|l| l.contains("failed")).map(str::trim).collect();
            return Ok(Some(failing.join("; ")));
        }
    }
}

fn secret(i: usize, generation: u64) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.name = Some(format!("tune-{i}"));
    secret.string_data = Some([("value".to_owned(), format!("generation {generation} of secret {i}"))].into());
    secret
}

/// Runs the workload against apiserver-0 and measures it.
async fn workload(
    stack: &mut Stack,
    options: &TuneOptions,
    api: Api,
    progress: &ProgressBar,
    what: &str,
    not_ready: &mut Vec<String>,
) -> Result<Metrics, TuneError> {
    let w = &options.workload;
    let provider = match api {
        Api::V1 => V1_PROVIDER,
        Api::V2 => V2_PROVIDER,
    };
    let mut secrets: KubeApi<Secret> = KubeApi::namespaced(stack.kube_client(0).await?, "default");
    let apply = PatchParams::apply("kms-lab-tune").force();
    let remote_before = remote_calls(stack).await?;
    // The apiserver was (re)started for this point and its counters restart with it: sum them
    // at the end of each of its lives. They include its own reads (a Secrets informer lists
    // every Secret at start and decodes every write's watch event), as the model does.
    let mut counted = KmsCounters::default();
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / w.ops_per_second.max(0.001));
    let (mut writes, mut gets, mut lists) = (Vec::new(), Vec::new(), Vec::new());
    let (mut failed, mut failed_writes, mut ops) = (0u64, 0u64, 0u64);
    let n = w.secrets.max(1) as usize;
    let plan = operations(w, options.seed);
    let mut next = tokio::time::Instant::now();
    for (generation, op) in plan.iter().enumerate() {
        if generation % 20 == 0 {
            progress.set_message(format!("{what}: workload {generation}/{}", plan.len()));
        }
        if !matches!(op, Op::Write(_)) || generation >= n {
            // The initial writes go as fast as they can; the rest keep the workload's rate.
            tokio::time::sleep_until(next).await;
            next += interval;
        }
        let t = Instant::now();
        let outcome = match *op {
            Op::Write(i) => {
                let result = secrets.patch(&format!("tune-{i}"), &apply, &Patch::Apply(secret(i, generation as u64))).await.map(|_| ());
                writes.push(t.elapsed().as_secs_f64() * 1000.0);
                if result.is_err() {
                    failed_writes += 1;
                }
                result
            }
            Op::Get(i) => match secrets.get(&format!("tune-{i}")).await {
                // Its creation failed (counted there), as the model counts it.
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                result => {
                    gets.push(t.elapsed().as_secs_f64() * 1000.0);
                    result.map(|_| ())
                }
            },
            Op::List | Op::Restart => {
                if matches!(op, Op::Restart) {
                    counted = counted.plus(scrape(stack, api, provider).await?);
                    progress.set_message(format!("{what}: workload restarts the apiserver"));
                    stack.restart(&kms_lab_stack::Component::Apiserver(0), kms_lab_stack::WaitFor::Live).await?;
                    not_ready.extend(wait_ready(stack).await?);
                    secrets = KubeApi::namespaced(stack.kube_client(0).await?, "default");
                }
                let t = Instant::now();
                let result = secrets.list(&ListParams::default()).await.map(|_| ());
                lists.push(t.elapsed().as_secs_f64() * 1000.0);
                if matches!(op, Op::Restart) {
                    next = tokio::time::Instant::now();
                }
                result
            }
        };
        ops += 1;
        if outcome.is_err() {
            failed += 1;
        }
    }
    let minutes = (started.elapsed().as_secs_f64() / 60.0).max(1e-9);
    let counted = counted.plus(scrape(stack, api, provider).await?);
    let remote = remote_calls(stack).await?.saturating_sub(remote_before);
    let pct = |values: &mut Vec<f64>, q| {
        values.sort_by(f64::total_cmp);
        crate::calibration::quantile(values, q)
    };
    Ok(Metrics {
        hit_rate: if counted.lookups == 0.0 { 0.0 } else { (1.0 - counted.misses / counted.lookups).clamp(0.0, 1.0) },
        kms_calls_per_min: (counted.encrypts + counted.decrypts) / minutes,
        remote_calls_per_min: remote as f64 / minutes,
        write_p50_ms: pct(&mut writes, 0.5),
        write_p99_ms: pct(&mut writes, 0.99),
        read_p99_ms: pct(&mut gets, 0.99),
        list_p50_ms: pct(&mut lists, 0.5),
        failure_rate: failed as f64 / ops.max(1) as f64,
        write_failure_rate: failed_writes as f64 / writes.len().max(1) as f64,
        timeouts: counted.deadline_exceeded as u64,
        ops,
        minutes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# HELP apiserver_envelope_encryption_kms_operations_latency_seconds [ALPHA] KMS operation duration
apiserver_envelope_encryption_kms_operations_latency_seconds_count{grpc_status_code="OK",method_name="/v2.KeyManagementService/Encrypt",provider_name="tune-v2"} 1
apiserver_envelope_encryption_kms_operations_latency_seconds_count{grpc_status_code="OK",method_name="/v2.KeyManagementService/Decrypt",provider_name="tune-v2"} 7
apiserver_envelope_encryption_kms_operations_latency_seconds_count{grpc_status_code="DeadlineExceeded",method_name="/v2.KeyManagementService/Decrypt",provider_name="tune-v2"} 2
apiserver_envelope_encryption_kms_operations_latency_seconds_count{grpc_status_code="OK",method_name="/v2.KeyManagementService/Status",provider_name="tune-v2"} 3
apiserver_storage_envelope_transformation_cache_misses_total 12
apiserver_storage_transformation_operations_total{resource="secrets",status="OK",transformation_type="from_storage",transformer_prefix="k8s:enc:kms:v1:tune-v1:"} 100
apiserver_storage_transformation_operations_total{resource="secrets",status="DeadlineExceeded",transformation_type="from_storage",transformer_prefix="k8s:enc:kms:v1:tune-v1:"} 3
apiserver_storage_transformation_operations_total{resource="secrets",status="OK",transformation_type="to_storage",transformer_prefix="k8s:enc:kms:v1:tune-v1:"} 40
apiserver_storage_transformation_operations_total{resource="secrets",status="OK",transformation_type="from_storage",transformer_prefix="k8s:enc:kms:v2:tune-v2:"} 50
apiserver_storage_transformation_operations_total{resource="secrets",status="OK",transformation_type="to_storage",transformer_prefix="k8s:enc:kms:v2:tune-v2:"} 40
apiserver_storage_transformation_operations_total{resource="secrets",status="OK",transformation_type="from_storage",transformer_prefix="identity"} 5
"#;

    #[test]
    fn v1_counters_come_from_the_transformer_and_the_dek_cache_misses() {
        let counters = KmsCounters::parse(&PromMetrics::parse(METRICS).unwrap(), Api::V1, V1_PROVIDER);
        let expected = KmsCounters { encrypts: 40.0, decrypts: 12.0, failed: 3.0, deadline_exceeded: 3.0, lookups: 103.0, misses: 12.0 };
        assert_eq!(counters, expected);
    }

    #[test]
    fn v2_counters_come_from_the_providers_grpc_calls() {
        let counters = KmsCounters::parse(&PromMetrics::parse(METRICS).unwrap(), Api::V2, V2_PROVIDER);
        assert_eq!(counters, KmsCounters { encrypts: 1.0, decrypts: 9.0, failed: 2.0, deadline_exceeded: 2.0, lookups: 50.0, misses: 9.0 });
        assert_eq!(counters.plus(counters).decrypts, 18.0);
        // Without a DEK seed, reads fail with no Decrypt call: misses all the same.
        let seedless = "apiserver_storage_transformation_operations_total{resource=\"secrets\",status=\"Unknown\",\
                        transformation_type=\"from_storage\",transformer_prefix=\"k8s:enc:kms:v2:tune-v2:\"} 30\n";
        let counters = KmsCounters::parse(&PromMetrics::parse(seedless).unwrap(), Api::V2, V2_PROVIDER);
        assert_eq!((counters.lookups, counters.misses), (30.0, 30.0));
    }
}
