//! Apiserver level, on the real stack: Secret creates/s and reads/s through kube-apiserver with
//! each write provider (identity, KMS v1 at several `cachesize`, KMS v2), same client, same run.
//!
//! Before each segment the apiserver is restarted with that provider first in its
//! EncryptionConfiguration, so every provider starts from cold caches alike; rounds interleave
//! the providers. Reads are plain GETs (quorum reads from etcd), so every read is decrypted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kms_lab_provision::ProvisionOptions;
use kms_lab_stack::encryption::{EncryptionConfiguration, KmsProvider, Provider};
use kms_lab_stack::{Stack, StackOptions};
use kube::api::{Api, PostParams};
use serde::Serialize;

use crate::BenchError;
use crate::stats;

/// The plugin every KMS provider talks to.
const PLUGIN: &str = "plugin-0";
/// Each KMS call's deadline in the EncryptionConfiguration.
const KMS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `/readyz` (KMS health included) may take after a restart.
const READY_DEADLINE: Duration = Duration::from_secs(120);
/// How often `/readyz` is polled.
const READY_POLL: Duration = Duration::from_millis(100);
/// Untimed creates and reads after each restart.
const WARMUP_SECRETS: usize = 5;

/// A write provider to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ProviderSetup {
    /// No encryption.
    Identity,
    /// KMS v1 with this many cached DEKs.
    KmsV1 {
        /// The `cachesize`.
        cachesize: u32,
    },
    /// KMS v2.
    KmsV2,
}

impl ProviderSetup {
    /// The name used in tables and JSON keys, e.g. `kms-v1-cache10`.
    pub fn name(self) -> String {
        match self {
            Self::Identity => "identity".to_owned(),
            Self::KmsV1 { cachesize } => format!("kms-v1-cache{cachesize}"),
            Self::KmsV2 => "kms-v2".to_owned(),
        }
    }

    fn kms_provider(self, socket: &std::path::Path) -> Option<KmsProvider> {
        match self {
            Self::Identity => None,
            Self::KmsV1 { cachesize } => Some(KmsProvider::v1(&format!("bench-v1-c{cachesize}"), socket, cachesize, KMS_TIMEOUT)),
            Self::KmsV2 => Some(KmsProvider::v2("bench-v2", socket, KMS_TIMEOUT)),
        }
    }

    /// This provider writes; every other one of `all` (and identity) still reads, so Secrets an
    /// earlier segment wrote stay readable (kube-apiserver's own informers list every Secret).
    fn encryption(self, all: &[ProviderSetup], stack: &Stack) -> EncryptionConfiguration {
        let socket = stack.plugin_socket(PLUGIN).map(PathBuf::from).unwrap_or_default();
        let readers = all.iter().copied().filter(|p| *p != self);
        let providers = std::iter::once(self)
            .chain(readers)
            .filter_map(|p| p.kms_provider(&socket))
            .map(Provider::Kms)
            .chain([Provider::Identity(Default::default())])
            .collect();
        EncryptionConfiguration::new(&["secrets"], providers)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ApiserverOptions {
    /// The write providers, in the order of the first round.
    pub providers: Vec<ProviderSetup>,
    /// Secrets created (then read) per provider per round.
    pub secrets: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Interleaved rounds.
    pub rounds: usize,
    /// Bytes of data in each Secret.
    pub secret_bytes: usize,
    /// Where the stack's run directory (component logs) goes; kept only on failure.
    pub run_root: PathBuf,
}

impl ApiserverOptions {
    /// identity, KMS v1 with `cachesize` 10 and 1000, KMS v2; `quick` keeps it near a minute.
    pub fn standard(run_root: PathBuf, quick: bool) -> Self {
        Self {
            providers: vec![
                ProviderSetup::Identity,
                ProviderSetup::KmsV1 { cachesize: 10 },
                ProviderSetup::KmsV1 { cachesize: 1000 },
                ProviderSetup::KmsV2,
            ],
            secrets: if quick { 150 } else { 400 },
            concurrency: 8,
            rounds: if quick { 1 } else { 3 },
            secret_bytes: 1024,
            run_root,
        }
    }
}

/// One provider's figures over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderResult {
    /// The provider's name.
    pub provider: String,
    /// Creates per second over all rounds.
    pub creates_per_s: f64,
    /// Reads per second over all rounds.
    pub reads_per_s: f64,
    /// Median create latency, ms.
    pub create_p50_ms: f64,
    /// 99th percentile create latency, ms.
    pub create_p99_ms: f64,
    /// Median read latency, ms.
    pub read_p50_ms: f64,
    /// 99th percentile read latency, ms.
    pub read_p99_ms: f64,
    /// Creates per second of each round.
    pub round_creates_per_s: Vec<f64>,
    /// Reads per second of each round.
    pub round_reads_per_s: Vec<f64>,
}

/// What the apiserver bench measured, and which providers it had to leave out and why.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// One entry per provider that worked.
    pub results: Vec<ProviderResult>,
    /// One line per provider left out.
    pub notes: Vec<String>,
}

#[derive(Default)]
struct Accumulated {
    creates: Vec<u64>,
    create_time: Duration,
    reads: Vec<u64>,
    read_time: Duration,
    round_creates: Vec<f64>,
    round_reads: Vec<f64>,
}

/// Provisions the binaries, brings the stack up, runs the rounds and tears everything down
/// (keeping the logs, and saying where, if anything failed).
pub async fn run(options: &ApiserverOptions) -> Result<Outcome, BenchError> {
    let binaries = tokio::task::spawn_blocking(|| kms_lab_provision::provision(&ProvisionOptions::default())).await??;
    let mut stack_options = StackOptions::new("bench", binaries, &options.run_root);
    // Placeholder until the plugin's socket is known; the first segment writes the real one and restarts.
    stack_options.encryption = Some(EncryptionConfiguration::new(&["secrets"], vec![Provider::Identity(Default::default())]));
    let mut stack = Stack::launch(stack_options).await?;
    let result = measure(options, &mut stack).await;
    let kept = stack.shutdown(result.is_err()).await;
    if let Some(dir) = kept {
        eprintln!("    apiserver bench failed; component logs kept in {}", dir.display());
    }
    result
}

async fn measure(options: &ApiserverOptions, stack: &mut Stack) -> Result<Outcome, BenchError> {
    let value = ByteString((0..options.secret_bytes).map(|i| b'a' + (i % 26) as u8).collect());
    let mut results: BTreeMap<usize, Accumulated> = BTreeMap::new();
    let mut failed: BTreeMap<usize, String> = BTreeMap::new();
    for round in 0..options.rounds {
        for offset in 0..options.providers.len() {
            let index = (round + offset) % options.providers.len();
            let provider = options.providers[index];
            eprintln!("    apiserver round {}/{}: {}", round + 1, options.rounds, provider.name());
            stack.write_encryption_config(0, &provider.encryption(&options.providers, stack))?;
            stack.restart(&kms_lab_stack::Component::Apiserver(0), kms_lab_stack::WaitFor::Live).await?;
            if failed.contains_key(&index) {
                continue;
            }
            // A provider that never turns `/readyz` green (or whose writes fail) is reported, not fatal:
            // the other providers are still measured.
            if let Err(error) = wait_ready(stack, provider).await {
                failed.insert(index, error.to_string());
                continue;
            }
            let secrets: Api<Secret> = Api::namespaced(stack.kube_client(0).await?, "default");
            let prefix = format!("bench-{}-r{round}", provider.name());
            let warmup: Vec<String> = (0..WARMUP_SECRETS).map(|i| format!("{prefix}-warm-{i}")).collect();
            if let Err(error) = timed(&warmup, 1, |name| create(&secrets, name, &value)).await {
                failed.insert(index, error.to_string());
                continue;
            }
            timed(&warmup, 1, |name| read(&secrets, name)).await?;
            let names: Vec<String> = (0..options.secrets).map(|i| format!("{prefix}-{i}")).collect();
            let (mut creates, create_time) = timed(&names, options.concurrency, |name| create(&secrets, name, &value)).await?;
            let (mut reads, read_time) = timed(&names, options.concurrency, |name| read(&secrets, name)).await?;
            let entry = results.entry(index).or_default();
            entry.round_creates.push(names.len() as f64 / create_time.as_secs_f64());
            entry.round_reads.push(names.len() as f64 / read_time.as_secs_f64());
            entry.creates.append(&mut creates);
            entry.reads.append(&mut reads);
            entry.create_time += create_time;
            entry.read_time += read_time;
        }
    }
    let notes =
        failed.into_iter().map(|(index, error)| format!("apiserver: `{}` left out: {error}", options.providers[index].name())).collect();
    let results = results
        .into_iter()
        .map(|(index, mut acc)| {
            let creates = stats::summarize(&mut acc.creates, acc.create_time);
            let reads = stats::summarize(&mut acc.reads, acc.read_time);
            ProviderResult {
                provider: options.providers[index].name(),
                creates_per_s: creates.throughput_per_s,
                reads_per_s: reads.throughput_per_s,
                create_p50_ms: creates.p50_us / 1000.0,
                create_p99_ms: creates.p99_us / 1000.0,
                read_p50_ms: reads.p50_us / 1000.0,
                read_p99_ms: reads.p99_us / 1000.0,
                round_creates_per_s: acc.round_creates,
                round_reads_per_s: acc.round_reads,
            }
        })
        .collect();
    Ok(Outcome { results, notes })
}

/// Polls `/readyz` until it answers 200; past the deadline, the error shows which checks failed.
async fn wait_ready(stack: &Stack, provider: ProviderSetup) -> Result<(), BenchError> {
    let started = Instant::now();
    loop {
        if let Ok((200, _)) = stack.apiserver_get(0, "/readyz").await {
            return Ok(());
        }
        if started.elapsed() > READY_DEADLINE {
            let (_, body) = stack.apiserver_get(0, "/readyz?verbose").await.unwrap_or_default();
            let failing: Vec<&str> = body.lines().filter(|l| l.starts_with("[-]")).collect();
            return Err(BenchError::NotReady { provider: provider.name(), seconds: READY_DEADLINE.as_secs(), failing: failing.join("; ") });
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

async fn create(secrets: &Api<Secret>, name: String, value: &ByteString) -> Result<(), BenchError> {
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(name.clone()), ..Default::default() },
        data: Some(BTreeMap::from([("value".to_owned(), value.clone())])),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .map(drop)
        .map_err(|source| BenchError::Kube { what: format!("create Secret `{name}`"), source: Box::new(source) })
}

async fn read(secrets: &Api<Secret>, name: String) -> Result<(), BenchError> {
    secrets.get(&name).await.map(drop).map_err(|source| BenchError::Kube { what: format!("get Secret `{name}`"), source: Box::new(source) })
}

/// Runs `call` once per name with at most `concurrency` in flight; returns each latency (ns) and
/// the wall time of the whole batch.
async fn timed<F, Fut>(names: &[String], concurrency: usize, call: F) -> Result<(Vec<u64>, Duration), BenchError>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(), BenchError>>,
{
    let started = Instant::now();
    let latencies: Vec<Result<u64, BenchError>> = futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let call = call(name);
            async move {
                let at = Instant::now();
                call.await.map(|()| at.elapsed().as_nanos() as u64)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    Ok((latencies.into_iter().collect::<Result<Vec<_>, _>>()?, elapsed))
}
