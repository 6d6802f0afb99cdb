//! The `kms-lab tune` command line: arguments, progress, and the run that writes the outputs.

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use kms_lab_cli_common::ranged;

use crate::calibration::Calibration;
use crate::error::TuneError;
use crate::profile::Profile;
use crate::{TuneOptions, TuneResult, report};

/// `kms-lab tune` arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  kms-lab tune --quick --model --out target/tune             # seconds: the calibrated simulation
  kms-lab tune --calibrate cal.json                          # measure the plugin + mock KMS (no apiserver)
  kms-lab tune --model --calibration cal.json --secrets 5000 --out out
  kms-lab tune --quick --out target/tune-real                # the real stack, 12 points (about 3 minutes)

Writes tune.md (recommendation + table), tune.csv and tune.svg into --out.")]
pub struct TuneArgs {
    /// Where the stack's components run: `process` or `container` (Docker, images built offline
    /// from the same binaries). Default: `KMS_LAB_RUNTIME`, else `process`.
    #[arg(long, value_name = "RUNTIME")]
    pub runtime: Option<kms_lab_stack::Runtime>,
    /// Where tune.md, tune.csv and tune.svg go.
    #[arg(long, value_name = "DIR", default_value = "target/kms-lab/tune")]
    pub out: PathBuf,
    /// Run the calibrated simulation instead of the real stack.
    #[arg(long)]
    pub model: bool,
    /// Measure the plugin on the mock KMS for every profile and write the calibration to FILE
    /// (then, with --model, simulate with it; alone, stop there).
    #[arg(long, value_name = "FILE")]
    pub calibrate: Option<PathBuf>,
    /// A calibration file for --model (default: the one built in, recorded on the lab machine).
    #[arg(long, value_name = "FILE", conflicts_with = "calibrate")]
    pub calibration: Option<PathBuf>,
    /// A small sweep for CI.
    #[arg(long)]
    pub quick: bool,
    /// Mock KMS profiles: built-in names (same-region, cross-region, throttled, flaky) or YAML files (repeatable;
    /// default: every built-in one, or same-region and cross-region on the real stack with --quick).
    #[arg(long = "profile", value_name = "NAME|FILE")]
    pub profiles: Vec<String>,
    /// Secrets in the workload, 1 to 1,000,000 (default 2000; 500 with --quick; 40 on the real
    /// stack with --quick).
    #[arg(long, value_name = "N", value_parser = ranged::number(1u64, MAX_SECRETS))]
    pub secrets: Option<u64>,
    /// Operations after the initial writes, 1 to 10,000,000 (default 4 × Secrets; 100 on the real
    /// stack with --quick).
    #[arg(long, value_name = "N", value_parser = ranged::number(1u64, MAX_OPS))]
    pub ops: Option<u64>,
    /// Share of operations that are reads, 0–1.
    #[arg(long, value_name = "SHARE", default_value_t = 0.9)]
    pub read_share: f64,
    /// Share of reads that are full lists, 0–1.
    #[arg(long, value_name = "SHARE", default_value_t = 0.02)]
    pub list_share: f64,
    /// Client operations per second.
    #[arg(long, value_name = "N", default_value_t = 50.0)]
    pub rate: f64,
    /// Apiserver restarts during the workload, 0 to 100.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = ranged::number(0u32, 100))]
    pub restarts: u32,
    /// KMS v1 cache sizes to sweep (comma-separated; default: around the Secret count).
    #[arg(long, value_name = "N,N,…", value_delimiter = ',')]
    pub cachesizes: Vec<i64>,
    /// Timeouts to sweep (comma-separated, e.g. 250ms,1s,3s), each from 1ms to 10m (the
    /// apiserver refuses a zero timeout, as `kms-lab lint` says).
    #[arg(long, value_name = "D,D,…", value_delimiter = ',', value_parser = ranged::duration(Duration::from_millis(1), Duration::from_secs(600)))]
    pub timeouts: Vec<Duration>,
    /// Seed of every random choice (same seed, same numbers on the model).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// The most `--secrets` (the model keeps a record per Secret: 100 million took 2.5 GB).
pub const MAX_SECRETS: u64 = 1_000_000;
/// The most `--ops`.
pub const MAX_OPS: u64 = 10_000_000;

fn argument(flag: &'static str, message: impl Into<String>) -> TuneError {
    TuneError::Argument { flag, message: message.into() }
}

impl TuneArgs {
    /// The sweep these arguments describe.
    pub fn options(&self) -> Result<TuneOptions, TuneError> {
        // The real stack with --quick: one profile, a small workload (calibration alone is fast enough for all).
        let real_quick = self.quick && !self.model && self.calibrate.is_none();
        let profiles = if self.profiles.is_empty() {
            if real_quick { vec![Profile::load("same-region")?, Profile::load("cross-region")?] } else { Profile::builtin()? }
        } else {
            self.profiles.iter().map(|spec| Profile::load(spec)).collect::<Result<_, _>>()?
        };
        let secrets = self.secrets.unwrap_or(if real_quick {
            40
        } else if self.quick {
            500
        } else {
            2000
        });
        let ops = self.ops.unwrap_or(if real_quick { 100 } else { (secrets * 4).min(MAX_OPS) });
        for (flag, value) in [("--read-share", self.read_share), ("--list-share", self.list_share)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(argument(flag, format!("is {value}; expected a share between 0 and 1")));
            }
        }
        if self.rate.is_nan() || self.rate <= 0.0 {
            return Err(argument("--rate", "must be above 0"));
        }
        let mut options = TuneOptions::new(profiles, secrets, ops, self.quick);
        if real_quick {
            // 12 points of about 15 s (two apiserver starts each): a cache that cannot hold every
            // DEK and one that can, a timeout near the cross-region latency and the default.
            options.cachesizes = vec![(secrets / 2) as i64, (2 * secrets) as i64];
            options.timeouts_ms = vec![100.0, 3000.0];
        }
        if !self.cachesizes.is_empty() {
            if let Some(bad) = self.cachesizes.iter().find(|c| **c == 0) {
                return Err(argument(
                    "--cachesizes",
                    format!("`{bad}` is refused by the apiserver; use a positive size (or negative: no cache)"),
                ));
            }
            options.cachesizes = self.cachesizes.clone();
        }
        if !self.timeouts.is_empty() {
            options.timeouts_ms = self.timeouts.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        }
        options.workload.read_share = self.read_share;
        options.workload.list_share = self.list_share;
        options.workload.ops_per_second = self.rate;
        options.workload.restarts = self.restarts;
        options.seed = self.seed;
        // The command as a user types it, whatever the binary's path (or a test harness's argv).
        let words: Vec<String> = std::env::args().skip(1).skip_while(|w| w != "tune").collect();
        options.command = if words.is_empty() { "kms-lab tune".into() } else { format!("kms-lab {}", words.join(" ")) };
        Ok(options)
    }
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// What a run did: the result (absent for a calibration-only run) and the files written.
#[derive(Debug)]
pub struct Outcome {
    /// The sweep's result.
    pub result: Option<TuneResult>,
    /// Files written.
    pub written: Vec<PathBuf>,
}

/// Runs `kms-lab tune`: calibrates, sweeps, writes the outputs, prints where they are and the recommendation.
pub async fn run(args: &TuneArgs) -> Result<Outcome, TuneError> {
    if let Some(runtime) = args.runtime {
        kms_lab_stack::Runtime::choose_for_process(runtime);
    }
    let options = args.options()?;
    let bar = progress_bar();
    let mut written = Vec::new();
    let calibration = match &args.calibrate {
        Some(path) => {
            let calls = if args.quick { 100 } else { 400 };
            let calibration = crate::real::calibrate(&options.profiles, calls, &bar).await;
            let calibration = match calibration {
                Ok(c) => c,
                Err(error) => {
                    bar.finish_and_clear();
                    return Err(error);
                }
            };
            calibration.write(path)?;
            written.push(path.clone());
            if !args.model {
                bar.finish_and_clear();
                println!("calibration written to {}", path.display());
                return Ok(Outcome { result: None, written });
            }
            calibration
        }
        None => match &args.calibration {
            Some(path) => Calibration::read(path)?,
            None => Calibration::builtin()?,
        },
    };
    let result = if args.model {
        // Ctrl-C stops the sweep at once; the points that finished are written as a partial report.
        // The handlers are installed here, before the line below says Ctrl-C is handled.
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind| signal(kind).map_err(|source| TuneError::Io { what: "install the Ctrl-C handler".into(), source });
        let (mut interrupt, mut terminate) = (install(SignalKind::interrupt())?, install(SignalKind::terminate())?);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = tokio::spawn({
            let stop = stop.clone();
            async move {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
        eprintln!(
            "sweeping {} point(s) on the model ({} Secrets, {} operations each); Ctrl-C writes the points that finished",
            options.settings().len() * options.profiles.len(),
            options.workload.secrets,
            options.workload.ops
        );
        let result = crate::run_model_until(&options, &calibration, &bar, &stop);
        watcher.abort();
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            bar.finish_and_clear();
            let finished = result.points.len();
            report::write_all(&result, &args.out)?;
            println!("interrupted: {finished} point(s) finished; partial report written to {}", args.out.join("tune.md").display());
            return Err(TuneError::Interrupted);
        }
        result
    } else {
        let calls = if args.quick { 50 } else { 200 };
        match crate::real::run_real(&options, calls, &bar).await {
            Ok(crate::real::RealOutcome::Complete(result)) => result,
            Ok(crate::real::RealOutcome::Interrupted(result)) => {
                // Every process is stopped; the points that finished are the partial report.
                bar.finish_and_clear();
                let finished = result.points.len();
                report::write_all(&result, &args.out)?;
                println!("interrupted: {finished} point(s) finished; partial report written to {}", args.out.join("tune.md").display());
                return Err(TuneError::Interrupted);
            }
            Err(error) => {
                bar.finish_and_clear();
                return Err(error);
            }
        }
    };
    bar.finish_and_clear();
    report::write_all(&result, &args.out)?;
    for name in ["tune.md", "tune.csv", "tune.svg"] {
        written.push(args.out.join(name));
    }
    if let Some(measured) = &result.calibration {
        let path = args.out.join("calibration.json");
        measured.write(&path)?;
        written.push(path);
    }
    for recommendation in &result.recommendations {
        let cachesize = recommendation.cachesize.map(|c| format!("cachesize {c}, ")).unwrap_or_default();
        println!(
            "{:<14} KMS {}: {cachesize}timeout {}",
            recommendation.profile,
            recommendation.api.as_str(),
            crate::recommend::show_ms(recommendation.timeout_ms)
        );
    }
    println!("wrote {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok(Outcome { result: Some(result), written })
}
