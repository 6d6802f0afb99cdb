//! The plugin comparison: every target serves at once, and each round runs every cell
//! (call shape × callers) on every target back to back, in an order that rotates from round to
//! round, so a noisy moment on the machine hits all targets alike.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::BenchError;
use crate::load::{self, Op, Prepared, Workload};
use crate::stats::{self, Summary};
use crate::targets::{Role, RunningTarget, TargetSpec};

/// What to compare and for how long.
#[derive(Debug, Clone)]
pub struct ComparisonOptions {
    /// The targets (each a process).
    pub targets: Vec<TargetSpec>,
    /// The call shapes.
    pub workloads: Vec<Workload>,
    /// Numbers of concurrent callers.
    pub concurrencies: Vec<usize>,
    /// Interleaved rounds.
    pub rounds: usize,
    /// How long one target runs one cell in one round.
    pub segment: Duration,
    /// Unmeasured load on each target before the first round.
    pub warmup: Duration,
}

impl ComparisonOptions {
    /// Encrypt and Decrypt at 32 B and 1 KiB, at 1, 16 and 64 callers; `quick` keeps it under a minute.
    pub fn standard(targets: Vec<TargetSpec>, quick: bool) -> Self {
        let workloads =
            [Op::Encrypt, Op::Decrypt].into_iter().flat_map(|op| [32, 1024].map(|payload_bytes| Workload { op, payload_bytes })).collect();
        Self {
            targets,
            workloads,
            concurrencies: vec![1, 16, 64],
            rounds: if quick { 7 } else { 15 },
            segment: if quick { Duration::from_millis(120) } else { Duration::from_millis(300) },
            warmup: if quick { Duration::from_millis(500) } else { Duration::from_secs(2) },
        }
    }
}

/// One target's figures for one cell, over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct CellResult {
    /// The target.
    pub target: Role,
    /// The call shape.
    #[serde(flatten)]
    pub workload: Workload,
    /// Concurrent callers.
    pub concurrency: usize,
    /// Latency and throughput over all rounds.
    #[serde(flatten)]
    pub summary: Summary,
    /// Throughput of each round alone (its spread is the noise).
    pub round_throughputs: Vec<f64>,
    /// Median latency of each round alone, µs.
    pub round_p50_us: Vec<f64>,
    /// CPU time (user + system) the target process spent per call, µs: its own cost, whatever
    /// the client costs. `None` when the process's CPU time could not be read.
    pub server_cpu_us_per_call: Option<f64>,
    /// CPU time the client (this harness process) spent per call, µs. On a small machine the
    /// client shares the cores with the target, so a costly client dilutes every throughput ratio.
    pub client_cpu_us_per_call: Option<f64>,
}

#[derive(Default)]
struct Accumulated {
    samples: Vec<u64>,
    measured: Duration,
    round_throughputs: Vec<f64>,
    round_p50_us: Vec<f64>,
    server_cpu: Duration,
    client_cpu: Duration,
    /// A segment whose CPU times could not be read: the per-call CPU figures are left out.
    cpu_unknown: bool,
}

/// Starts every target, runs the rounds, stops every target (also on failure).
pub async fn run(options: &ComparisonOptions) -> Result<Vec<CellResult>, BenchError> {
    run_until(options, &std::sync::atomic::AtomicBool::new(false)).await.map(|(cells, _)| cells)
}

/// [`run`], stopping before the next cell once `stop` is set (Ctrl-C): the cells measured so far,
/// and how many rounds were begun.
pub async fn run_until(options: &ComparisonOptions, stop: &std::sync::atomic::AtomicBool) -> Result<(Vec<CellResult>, usize), BenchError> {
    let mut running = Vec::new();
    for spec in &options.targets {
        match RunningTarget::start(spec).await {
            Ok(target) => running.push(target),
            Err(error) => {
                stop_all(running).await;
                return Err(error);
            }
        }
    }
    let result = measure(options, &running, stop).await;
    stop_all(running).await;
    result
}

async fn stop_all(targets: Vec<RunningTarget>) {
    for target in targets {
        target.stop().await;
    }
}

async fn measure(
    options: &ComparisonOptions,
    targets: &[RunningTarget],
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(Vec<CellResult>, usize), BenchError> {
    let stopped = || stop.load(std::sync::atomic::Ordering::Relaxed);
    let mut prepared: BTreeMap<(Role, Workload), Prepared> = BTreeMap::new();
    for target in targets {
        for workload in &options.workloads {
            prepared.insert((target.role(), *workload), load::prepare(target, *workload).await?);
        }
        if let Some(workload) = options.workloads.first() {
            let request = &prepared[&(target.role(), *workload)];
            load::run(target.client(), request, 16, options.warmup).await?;
        }
    }
    let cells: Vec<(Workload, usize)> =
        options.workloads.iter().flat_map(|w| options.concurrencies.iter().map(move |c| (*w, *c))).collect();
    let mut results: BTreeMap<(Role, Workload, usize), Accumulated> = BTreeMap::new();
    let mut rounds_begun = 0;
    'rounds: for round in 0..options.rounds {
        if stopped() {
            break;
        }
        rounds_begun += 1;
        eprintln!("    plugin round {}/{} ({} cells × {} targets)", round + 1, options.rounds, cells.len(), targets.len());
        for (index, (workload, concurrency)) in cells.iter().enumerate() {
            if stopped() {
                break 'rounds;
            }
            for offset in 0..targets.len() {
                let target = &targets[(round + index + offset) % targets.len()];
                let request = &prepared[&(target.role(), *workload)];
                let (server_before, client_before) = (stats::cpu_time(target.pid()), stats::cpu_time(None));
                let segment = load::run(target.client(), request, *concurrency, options.segment).await?;
                let spent = |before: Option<Duration>, now: Option<Duration>| Some(now?.saturating_sub(before?));
                let server_spent = spent(server_before, stats::cpu_time(target.pid()));
                let client_spent = spent(client_before, stats::cpu_time(None));
                if segment.errors > 0 {
                    return Err(BenchError::CallsFailed {
                        target: target.role().name().to_owned(),
                        cell: format!("{} {} B × {concurrency}", workload.op.name(), workload.payload_bytes),
                        errors: segment.errors,
                        calls: segment.errors + segment.samples.len() as u64,
                        first: segment.first_error.unwrap_or_default(),
                    });
                }
                let entry = results.entry((target.role(), *workload, *concurrency)).or_default();
                let seconds = segment.elapsed.as_secs_f64();
                entry.round_throughputs.push(if seconds > 0.0 { segment.samples.len() as f64 / seconds } else { 0.0 });
                let mut sorted = segment.samples.clone();
                sorted.sort_unstable();
                entry.round_p50_us.push(stats::percentile(&sorted, 50.0) as f64 / 1000.0);
                entry.measured += segment.elapsed;
                match (server_spent, client_spent) {
                    (Some(server), Some(client)) => {
                        entry.server_cpu += server;
                        entry.client_cpu += client;
                    }
                    _ => entry.cpu_unknown = true,
                }
                entry.samples.extend(segment.samples);
            }
        }
    }
    let cells = results
        .into_iter()
        .map(|((target, workload, concurrency), mut acc)| {
            let calls = acc.samples.len();
            let per_call = |cpu: Duration| (calls > 0 && !acc.cpu_unknown).then(|| cpu.as_secs_f64() * 1e6 / calls as f64);
            CellResult {
                target,
                workload,
                concurrency,
                summary: stats::summarize(&mut acc.samples, acc.measured),
                round_throughputs: acc.round_throughputs,
                round_p50_us: acc.round_p50_us,
                server_cpu_us_per_call: per_call(acc.server_cpu),
                client_cpu_us_per_call: per_call(acc.client_cpu),
            }
        })
        .collect();
    Ok((cells, rounds_begun))
}
