//! Single-caller v2 round-trip latency over a Unix socket: the reference plugin against the
//! bare tonic echo (the floor), both as release-built processes driven by the same client.
//! The Go peer joins when `KMS_LAB_GO_PLUGIN_BIN` names its binary.
//!
//! Needs `cargo build --release -p kms-plugin` first (`cargo xtask bench` does it); the load
//! at 16 and 64 callers and the ratios are `cargo xtask bench`'s job.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kms_lab_benches::load::{self, Op, Workload};
use kms_lab_benches::targets::{self, RunningTarget, SOCKET_PLACEHOLDER, TargetSpec};

fn specs() -> Vec<TargetSpec> {
    let plugin = targets::locate_reference_plugin().unwrap_or_else(|error| panic!("{error}"));
    let echo = std::env::var_os("KMS_LAB_ECHO_BIN").map_or_else(|| env!("CARGO_BIN_EXE_kms-lab-echo-plugin").into(), Into::into);
    let mut specs = vec![TargetSpec::reference_plugin(plugin), TargetSpec::bare_tonic(echo)];
    if let Some(go) = std::env::var_os("KMS_LAB_GO_PLUGIN_BIN") {
        let args = std::env::var("KMS_LAB_GO_PLUGIN_ARGS").unwrap_or_else(|_| format!("--socket {SOCKET_PLACEHOLDER}"));
        specs.push(TargetSpec::go_peer(go.into(), args.split_whitespace().map(str::to_owned).collect()));
    }
    specs
}

fn round_trips(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let running: Vec<RunningTarget> = runtime
        .block_on(async {
            let mut running = Vec::new();
            for spec in specs() {
                running.push(RunningTarget::start(&spec).await?);
            }
            Ok::<_, kms_lab_benches::BenchError>(running)
        })
        .unwrap_or_else(|error| panic!("{error}"));
    let mut group = c.benchmark_group("plugin_v2_single_caller");
    for op in [Op::Encrypt, Op::Decrypt] {
        for payload_bytes in [32, 1024] {
            group.throughput(Throughput::Bytes(payload_bytes as u64));
            for target in &running {
                let request = runtime.block_on(load::prepare(target, Workload { op, payload_bytes })).expect("request prepared");
                let mut client = target.client().v2();
                let id = BenchmarkId::new(format!("{}/{}", op.name(), target.role().name()), payload_bytes);
                group.bench_function(id, |b| b.iter(|| runtime.block_on(load::call_once(&mut client, &request)).expect("call succeeds")));
            }
        }
    }
    group.finish();
    runtime.block_on(async {
        for target in running {
            target.stop().await;
        }
    });
}

criterion_group!(benches, round_trips);
criterion_main!(benches);
