//! `kms-lab-bench [--quick] [--json FILE]`: the comparison set behind `cargo xtask bench`, built
//! with optimisations (a debug-built client would blur every ratio). Prints a table; writes the
//! JSON summary when asked.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kms_lab_benches::apiserver::{self, ApiserverOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kms_lab_benches::compare::{self, ComparisonOptions};
use kms_lab_benches::load::{Op, Workload};
use kms_lab_benches::report::{self, Report};
use kms_lab_benches::targets::{self, SOCKET_PLACEHOLDER, TargetSpec};
use kms_lab_provision::{GoSubject, ProvisionOptions, locate_go_subject};

/// Benchmarks kms-lab's plugin and kube-apiserver's providers side by side.
#[derive(Debug, Parser)]
struct Args {
    /// Short segments and one apiserver round: a few minutes on 2 cores.
    #[arg(long)]
    quick: bool,
    /// Write the JSON summary here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The Go peer plugin binary (default: `kms-lab-conformance/go-plugin`, built once into the cache;
    /// `KMS_LAB_GO_PLUGIN` names a prebuilt one).
    #[arg(long, value_name = "PATH")]
    go_plugin: Option<PathBuf>,
    /// The Go peer's arguments, `{socket}` standing for the socket path.
    #[arg(long, value_name = "ARGS", default_value = "--socket {socket}", allow_hyphen_values = true)]
    go_plugin_args: String,
    /// Leave the Go peer out.
    #[arg(long)]
    no_go_plugin: bool,
    /// Skip the plugin comparison.
    #[arg(long)]
    no_plugin: bool,
    /// Plugin comparison: only these numbers of concurrent callers (comma-separated; default 1,16,64).
    #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
    callers: Vec<usize>,
    /// Plugin comparison: only these call shapes, `OP:BYTES` (e.g. `encrypt:1024`; default Encrypt
    /// and Decrypt at 32 and 1024).
    #[arg(long, value_name = "OP:BYTES", value_delimiter = ',', value_parser = parse_workload)]
    workload: Vec<Workload>,
    /// Plugin comparison: how long one target runs one cell in one round (e.g. `2s`, `300ms`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    segment: Option<Duration>,
    /// Plugin comparison: the number of interleaved rounds.
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
    /// Skip the apiserver-level bench (it needs kube-apiserver and etcd, provisioned into ~/.cache/kms-lab).
    #[arg(long)]
    no_apiserver: bool,
    /// Where the stack's run directory goes (kept only if the apiserver bench fails).
    #[arg(long, value_name = "DIR", default_value = "target/kms-lab/bench-runs")]
    run_root: PathBuf,
}

/// `encrypt:1024` → Encrypt with 1 KiB of plaintext.
fn parse_workload(text: &str) -> Result<Workload, String> {
    let (op, bytes) = text.split_once(':').ok_or_else(|| format!("`{text}`: give OP:BYTES, e.g. encrypt:1024"))?;
    let op = match op {
        "encrypt" => Op::Encrypt,
        "decrypt" => Op::Decrypt,
        other => return Err(format!("unknown call `{other}`: the choices are encrypt, decrypt")),
    };
    let payload_bytes = bytes.parse().map_err(|_| format!("`{bytes}` is not a number of bytes (in `{text}`)"))?;
    Ok(Workload { op, payload_bytes })
}

/// An error ends the run as one `error: …` line (the cause chain, never a backtrace), exit 1;
/// a panic (a bug) as a message and exit 1, after its guards stopped every target process.
fn main() -> std::process::ExitCode {
    kms_lab_cli_common::guard_panics("kms-lab-bench", main_body)
}

fn main_body() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("KMS_LAB_LOG").unwrap_or_else(|_| "warn,kube_client=off".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let ran = tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|runtime| runtime.block_on(run(args)));
    match ran {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => kms_lab_cli_common::fail(&format!("{error:#}"), kms_lab_cli_common::Exit::Failed),
    }
}

/// `--json FILE`: replaced only if it is an earlier bench report (or absent).
const BENCH_REPORT: kms_lab_cli_common::files::FileKind = kms_lab_cli_common::files::FileKind::public(
    "`kms-lab-bench` JSON report",
    kms_lab_cli_common::files::Recognise::JsonObjectWith(&["mode", "ratios"]),
);

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(path) = &args.json {
        // Checked before minutes of measuring, not after.
        kms_lab_cli_common::files::check_replaceable(path, &BENCH_REPORT)?;
    }
    let mut notes = Vec::new();
    // Ctrl-C (or SIGTERM) stops the comparison before its next cell and the apiserver run at once;
    // what finished is printed and written, marked partial, and the exit code is 130.
    let stop = Arc::new(AtomicBool::new(false));
    let signalled = {
        let stop = stop.clone();
        async move {
            kms_lab_cli_common::stop_signal().await;
            stop.store(true, Ordering::Relaxed);
        }
    };
    let watcher = tokio::spawn(signalled);
    let plugin = if args.no_plugin {
        Vec::new()
    } else {
        let mut specs =
            vec![TargetSpec::reference_plugin(targets::locate_reference_plugin()?), TargetSpec::bare_tonic(targets::locate_echo()?)];
        if !args.go_plugin_args.contains(SOCKET_PLACEHOLDER) {
            anyhow::bail!("--go-plugin-args `{}` must name the socket as `{SOCKET_PLACEHOLDER}`", args.go_plugin_args);
        }
        let go_plugin = match (&args.go_plugin, args.no_go_plugin) {
            (_, true) => None,
            (Some(program), false) => Some(program.clone()),
            (None, false) => {
                eprintln!("==> locating the Go peer (kms-lab-conformance/go-plugin; built once with `go build`)");
                Some(tokio::task::spawn_blocking(|| locate_go_subject(GoSubject::GoPeer, &ProvisionOptions::default())).await??)
            }
        };
        match go_plugin {
            Some(program) => {
                let go_args = args.go_plugin_args.split_whitespace().map(str::to_owned).collect();
                specs.push(TargetSpec::go_peer(program, go_args));
            }
            None => notes.push("the Go peer was left out (--no-go-plugin): its ratios are missing".to_owned()),
        }
        let mut options = ComparisonOptions::standard(specs, args.quick);
        if !args.callers.is_empty() {
            options.concurrencies = args.callers.clone();
        }
        if !args.workload.is_empty() {
            options.workloads = args.workload.clone();
        }
        options.segment = args.segment.unwrap_or(options.segment);
        options.rounds = args.rounds.unwrap_or(options.rounds);
        eprintln!("==> plugin comparison: {} targets, interleaved rounds", options.targets.len());
        let (cells, rounds) = compare::run_until(&options, &stop).await?;
        if stop.load(Ordering::Relaxed) {
            notes.push(format!("interrupted: partial — {rounds} of {} plugin round(s) begun before Ctrl-C", options.rounds));
        }
        cells
    };
    let apiserver = if args.no_apiserver || stop.load(Ordering::Relaxed) {
        Vec::new()
    } else {
        eprintln!("==> kube-apiserver: identity vs KMS v1 vs KMS v2 on the real stack");
        let options = ApiserverOptions::standard(args.run_root.clone(), args.quick);
        // On Ctrl-C the run's future is dropped: its stacks stop every process they started. (Every
        // listener gets the signal: the watcher above sets `stop` too.)
        tokio::select! {
            outcome = apiserver::run(&options) => {
                let outcome = outcome?;
                notes.extend(outcome.notes);
                outcome.results
            }
            () = kms_lab_cli_common::stop_signal() => {
                notes.push("interrupted: partial — the kube-apiserver comparison was stopped before it finished".to_owned());
                Vec::new()
            }
        }
    };
    watcher.abort();
    let interrupted = stop.load(Ordering::Relaxed);
    let report = Report::new(args.quick, plugin, apiserver, notes);
    println!("{}", report::table(&report));
    if let Some(path) = &args.json {
        kms_lab_cli_common::files::replace(path, &BENCH_REPORT, (report.to_json()? + "\n").as_bytes())?;
        eprintln!("==> wrote {}", path.display());
    }
    if interrupted {
        let written = args.json.as_ref().map(|p| format!("; partial report written to {}", p.display())).unwrap_or_default();
        eprintln!("interrupted: every process was stopped{written}");
        std::process::exit(kms_lab_cli_common::Exit::Interrupted.code().into());
    }
    Ok(())
}
