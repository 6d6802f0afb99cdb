//! `kms-lab conformance`: does a KMS plugin behave the way kube-apiserver expects?
//!
//! Point it at any plugin's Unix socket; it runs a list of checks, each with a stable id
//! (`v2.encrypt.key-id-matches-status`), a one-line rule and the upstream code the rule comes
//! from. A failure says what was sent, what came back and which rule that breaks. Every call has
//! a deadline, so a hanging plugin fails a check instead of hanging the suite.
//!
//! Each check has a level: `FAIL` where the real kube-apiserver misbehaves with such a plugin or
//! the data key is exposed (the reason names the apiserver code path or the attack), `WARN` for
//! advice. The run passes (exit 0) iff nothing FAILs; [`Options::strict`] makes warnings fail.
//!
//! - [`ConformanceArgs`] / [`Options`]: what to check; [`run`] returns a typed [`Report`].
//! - [`catalogue`]: every check with its rule and reference.
//! - [`render_text`], [`render_junit`], JSON through serde: the report formats.
//!
//! The Go peer (`go-plugin/`, a plugin on upstream's own `k8s.io/kms/pkg/service`) is located or
//! built by `kms_lab_provision::locate_go_subject(GoSubject::GoPeer, ..)`.

#![warn(missing_docs)]

mod checks;
mod cli;
mod context;
mod error;
mod render;
mod report;

pub use checks::{CheckInfo, catalogue};
pub use cli::{ConformanceArgs, Profile, ReportTarget, run_cli, run_cli_until};
pub use error::ConformanceError;
pub use render::{render_check, render_header, render_junit, render_summary, render_text, xml_escape};
pub use report::{CheckOutcome, CheckReport, FINDING_PART_MAX, Finding, LatencySummary, Level, Percentiles, Report};

use std::time::{Duration, Instant};

/// Which plugin API the suite checks (`kms_wire::Api`, re-exported).
pub use kms_wire::Api;

/// Everything a run needs; [`ConformanceArgs`] resolves into this.
#[derive(Debug, Clone)]
pub struct Options {
    /// The plugin socket, as the apiserver's EncryptionConfiguration spells it (`unix:///path`).
    pub endpoint: String,
    /// Which API to check.
    pub api: Api,
    /// The deadline of every single call to the plugin.
    pub timeout: Duration,
    /// Run only these check ids (empty: all).
    pub only: Vec<String>,
    /// Skip these check ids.
    pub skip: Vec<String>,
    /// A shell command that rotates the plugin's KEK; the rotation checks run only with it.
    pub rotate_command: Option<String>,
    /// How long after the rotate command Status may take to report the new key id.
    pub rotate_wait: Duration,
    /// Concurrent callers in the load check.
    pub concurrency: usize,
    /// Round trips per caller in the load check.
    pub round_trips_per_caller: usize,
    /// Warnings fail the run too (`--strict`).
    pub strict: bool,
}

impl Options {
    /// Defaults for `endpoint` and `api`: kube-apiserver's 3 s call timeout, 16 callers.
    pub fn new(endpoint: impl Into<String>, api: Api) -> Self {
        Self {
            endpoint: endpoint.into(),
            api,
            timeout: Duration::from_secs(3),
            only: Vec::new(),
            skip: Vec::new(),
            rotate_command: None,
            rotate_wait: Duration::from_secs(60),
            concurrency: 16,
            round_trips_per_caller: 8,
            strict: false,
        }
    }
}

/// Runs the suite against `options.endpoint` and returns the report; `Err` only when the suite
/// cannot run at all (bad ids, no plugin on the socket, the plugin does not serve the API).
/// Check failures are in the report.
pub async fn run(options: &Options) -> Result<Report, ConformanceError> {
    run_streamed(options, |_| {}).await
}

/// [`run`], calling `on_check` with each check's result as it finishes (a hanging plugin shows
/// progress check by check instead of everything at the end).
pub async fn run_streamed(options: &Options, mut on_check: impl FnMut(&CheckReport)) -> Result<Report, ConformanceError> {
    let selected = checks::select(options.api, &options.only, &options.skip)?;
    let client = kms_wire::PluginClient::connect(&options.endpoint, options.timeout).await?;
    probe_api(&client, options.api).await?;
    let ctx = context::Ctx::new(client, options.clone());
    let started = Instant::now();
    let mut reports = Vec::with_capacity(selected.len());
    for info in selected {
        let check_started = Instant::now();
        let outcome = checks::run_one(&ctx, info).await;
        let report = CheckReport::new(info, outcome, check_started.elapsed());
        on_check(&report);
        reports.push(report);
    }
    Ok(Report {
        endpoint: options.endpoint.clone(),
        api: options.api,
        duration_ms: started.elapsed().as_millis(),
        strict: options.strict,
        interrupted: false,
        checks: reports,
    })
}

/// Whether the plugin serves `api` at all: its first call (Status for v2, Version for v1beta1)
/// answers `Unimplemented` when it does not. Then the suite says so once, and which API the
/// plugin does serve, instead of failing every check with `Unimplemented`.
async fn probe_api(client: &kms_wire::PluginClient, api: Api) -> Result<(), ConformanceError> {
    use kms_wire::proto::{KMS_V1BETA1_API_VERSION, v1beta1, v2};
    async fn serves(client: &kms_wire::PluginClient, api: Api) -> bool {
        let answer = match api {
            Api::V2 => client.v2().status(v2::StatusRequest {}).await.map(drop),
            Api::V1beta1 => {
                client.v1beta1().version(v1beta1::VersionRequest { version: KMS_V1BETA1_API_VERSION.to_owned() }).await.map(drop)
            }
        };
        // Any other answer (an error code, a timeout) is for the checks to judge.
        !matches!(answer, Err(status) if status.code() == tonic::Code::Unimplemented)
    }
    if serves(client, api).await {
        return Ok(());
    }
    let other = match api {
        Api::V2 => Api::V1beta1,
        Api::V1beta1 => Api::V2,
    };
    let serves_other = serves(client, other).await;
    Err(ConformanceError::ApiNotServed { endpoint: client.address().to_string(), api, other: serves_other.then_some(other) })
}
