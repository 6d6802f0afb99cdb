//! The `kms-lab conformance` command line, shared by `kms-lab` and `cargo xtask conformance`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::future::Future;
use std::io::Write;
use std::time::Instant;

use kms_lab_cli_common::ranged;

use crate::{Api, CheckReport, ConformanceError, Options, Report, render_check, render_header, render_junit, render_summary};

/// The shortest `--timeout`: below it no plugin answers, and every check would fail.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// The longest `--timeout` (a hanging plugin takes this long per check).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// The most `--concurrency` callers (each holds its own buffers: a million took 4 GB).
pub const MAX_CONCURRENCY: usize = 1024;

/// `kms-lab conformance`: check a KMS plugin's socket against what kube-apiserver expects.
#[derive(Debug, Clone, clap::Args)]
pub struct ConformanceArgs {
    /// The plugin's socket, as the EncryptionConfiguration spells it (unix:///path/plugin.sock).
    #[arg(long, value_name = "unix:///PATH", required_unless_present = "list")]
    pub endpoint: Option<String>,
    /// Which plugin API to check.
    #[arg(long, value_enum, default_value_t = Api::V2)]
    pub api: Api,
    /// Also write the report: `junit=FILE` or `json=FILE` (repeatable).
    #[arg(long, value_name = "junit=FILE|json=FILE", value_parser = ReportTarget::parse)]
    pub report: Vec<ReportTarget>,
    /// Deadline of every call to the plugin (kube-apiserver's default is 3s), from 10ms to 10m.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = ranged::duration(MIN_TIMEOUT, MAX_TIMEOUT))]
    pub timeout: Duration,
    /// Run only these check ids.
    #[arg(long, value_name = "ID", num_args = 1..)]
    pub only: Vec<String>,
    /// Skip these check ids.
    #[arg(long, value_name = "ID", num_args = 1..)]
    pub skip: Vec<String>,
    /// A shell command that rotates the plugin's KEK (run with `sh -c`, `KMS_PLUGIN_ENDPOINT` set);
    /// without it the rotation checks are skipped.
    #[arg(long, value_name = "CMD")]
    pub rotate_command: Option<String>,
    /// How long Status may take to report the new key id after the rotate command (1s to 1h).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = ranged::duration(Duration::from_secs(1), Duration::from_secs(3600)))]
    pub rotate_wait: Duration,
    /// Concurrent callers in the load check, 1 to 1024.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = ranged::number(1usize, MAX_CONCURRENCY))]
    pub concurrency: usize,
    /// Warnings fail the run too (exit 1 on any WARN, as on any FAIL).
    #[arg(long)]
    pub strict: bool,
    /// List every check (id, level and why, rule, upstream reference) and exit.
    #[arg(long)]
    pub list: bool,
    /// Which checks: `full` (every check), or `preflight` (Status, one small round trip and its
    /// latency: safe against a production plugin before rolling out an EncryptionConfiguration;
    /// no load, no rotation). `--only` narrows either.
    #[arg(long, value_enum, default_value_t = Profile::Full)]
    pub profile: Profile,
}

/// A named selection of checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Every check of the API.
    Full,
    /// The checks safe against a production plugin: Status, one small round trip (no load, no rotation).
    Preflight,
}

impl Profile {
    /// The check ids of this profile for `api` (`None`: every check).
    pub fn checks(self, api: Api) -> Option<&'static [&'static str]> {
        match (self, api) {
            (Self::Full, _) => None,
            (Self::Preflight, Api::V2) => Some(&[
                "v2.status.version",
                "v2.status.healthz",
                "v2.status.key-id-valid",
                "v2.encrypt.key-id-matches-status",
                "v2.decrypt.round-trip",
            ]),
            (Self::Preflight, Api::V1beta1) => Some(&["v1beta1.version.api", "v1beta1.version.runtime", "v1beta1.round-trip"]),
        }
    }
}

/// Where to write a machine-readable report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportTarget {
    /// JUnit XML.
    Junit(PathBuf),
    /// The serde JSON form of [`Report`].
    Json(PathBuf),
}

impl ReportTarget {
    /// Parses `junit=FILE` or `json=FILE`.
    pub fn parse(spec: &str) -> Result<Self, ConformanceError> {
        match spec.split_once('=') {
            Some(("junit", path)) if !path.is_empty() => Ok(Self::Junit(path.into())),
            Some(("json", path)) if !path.is_empty() => Ok(Self::Json(path.into())),
            _ => Err(ConformanceError::ReportSpec(spec.to_owned())),
        }
    }

    /// The file this target writes.
    pub fn path(&self) -> &Path {
        match self {
            Self::Junit(path) | Self::Json(path) => path,
        }
    }

    /// What it writes, and how an earlier report of that kind is recognised (only that, or
    /// nothing, is replaced at the path).
    fn kind(&self) -> kms_lab_cli_common::files::FileKind {
        use kms_lab_cli_common::files::{FileKind, Recognise};
        match self {
            Self::Junit(_) => FileKind::public("JUnit report", Recognise::XmlRoot(&["testsuite", "testsuites"])),
            Self::Json(_) => {
                FileKind::public("`kms-lab conformance` JSON report", Recognise::JsonObjectWith(&["endpoint", "api", "checks"]))
            }
        }
    }

    /// Checks, before the run, that the report can be written there (an existing directory, not a
    /// directory itself, writable), so a long run is not wasted on a typo in the path.
    pub fn check_writable(&self) -> Result<(), ConformanceError> {
        let path = self.path();
        let problem = |problem: String| ConformanceError::ReportPath { path: path.to_owned(), problem };
        if path.is_dir() {
            return Err(problem("it is a directory: give a file name inside it".into()));
        }
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            return Err(problem(format!("the directory `{}` does not exist: create it first, or write elsewhere", parent.display())));
        }
        let existed = path.exists();
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|error| problem(format!("cannot write there: {error}")))?;
        if !existed {
            let _ = std::fs::remove_file(path);
        }
        kms_lab_cli_common::files::check_replaceable(path, &self.kind()).map_err(|error| problem(error.to_string()))
    }

    /// Writes `report` in this format.
    pub fn write(&self, report: &Report) -> Result<(), ConformanceError> {
        let (path, text) = match self {
            Self::Junit(path) => (path, render_junit(report)),
            Self::Json(path) => (path, serde_json::to_string_pretty(report).unwrap_or_default()),
        };
        kms_lab_cli_common::files::replace(path, &self.kind(), text.as_bytes())
            .map_err(|error| ConformanceError::WriteReport { path: path.clone(), error })
    }
}

impl ConformanceArgs {
    /// The run options these flags describe.
    pub fn options(&self) -> Options {
        Options {
            timeout: self.timeout,
            only: match (self.only.is_empty(), self.profile.checks(self.api)) {
                (true, Some(ids)) => ids.iter().map(|id| (*id).to_owned()).collect(),
                _ => self.only.clone(),
            },
            skip: self.skip.clone(),
            rotate_command: self.rotate_command.clone(),
            rotate_wait: self.rotate_wait,
            concurrency: self.concurrency,
            strict: self.strict,
            ..Options::new(self.endpoint.clone().unwrap_or_default(), self.api)
        }
    }
}

/// Runs the command until Ctrl-C; see [`run_cli_until`].
pub async fn run_cli(args: &ConformanceArgs) -> Result<Option<Report>, ConformanceError> {
    run_cli_until(args, async {
        // Without a handler Ctrl-C is the default (the process dies): wait forever then.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
    .await
}

/// Runs the command: prints each check to stdout as it finishes, then the verdict, and writes
/// the `--report` files (their paths are checked first); returns the report (the caller exits 0
/// iff [`Report::passed`]). With `--list`, prints the catalogue and returns `None`. When
/// `interrupt` resolves first, the run stops (a running rotate command is killed), the
/// finished checks are kept, partial reports written, and [`ConformanceError::Interrupted`]
/// returned.
pub async fn run_cli_until(args: &ConformanceArgs, interrupt: impl Future<Output = ()>) -> Result<Option<Report>, ConformanceError> {
    if args.list {
        let in_profile = |id: &str| args.profile.checks(args.api).is_none_or(|ids| ids.contains(&id));
        for check in crate::catalogue().iter().filter(|c| c.api == args.api && in_profile(c.id)) {
            println!(
                "{} [{}]\n    rule:     {}\n    {}:     {}\n    upstream: {}",
                check.id,
                check.level,
                check.rule,
                if check.level == crate::Level::Fail { "why" } else { "advice" },
                check.why,
                check.reference
            );
        }
        return Ok(None);
    }
    for target in &args.report {
        target.check_writable()?;
    }
    let options = args.options();
    let selected = crate::checks::select(options.api, &options.only, &options.skip)?;
    let width = selected.iter().map(|c| c.id.len()).max().unwrap_or(0);
    let started = Instant::now();
    let mut finished: Vec<CheckReport> = Vec::new();
    let result = {
        let run = crate::run_streamed(&options, |check| {
            let mut out = std::io::stdout().lock();
            if finished.is_empty() {
                let _ = out.write_all(render_header(&options.endpoint, options.api, selected.len()).as_bytes());
            }
            let _ = out.write_all(render_check(check, width).as_bytes());
            let _ = out.flush();
            finished.push(check.clone());
        });
        tokio::select! {
            result = run => Some(result),
            () = interrupt => None,
        }
    };
    let report = match result {
        Some(result) => result?,
        None => {
            let report = Report {
                endpoint: options.endpoint.clone(),
                api: options.api,
                duration_ms: started.elapsed().as_millis(),
                strict: options.strict,
                interrupted: true,
                checks: finished,
            };
            println!("interrupted");
            print!("{}", render_summary(&report));
            for target in &args.report {
                target.write(&report)?;
                println!("partial report written to {}", target.path().display());
            }
            return Err(ConformanceError::Interrupted { finished: report.checks.len(), selected: selected.len() });
        }
    };
    print!("{}", render_summary(&report));
    for target in &args.report {
        target.write(&report)?;
    }
    Ok(Some(report))
}

#[cfg(test)]
mod profile_tests {
    use super::*;
    use crate::Level;

    #[test]
    fn the_preflight_profile_names_real_checks_without_load_or_rotation() {
        for api in [Api::V2, Api::V1beta1] {
            let ids = Profile::Preflight.checks(api).unwrap();
            let selected = crate::checks::select(api, &ids.iter().map(|id| (*id).to_owned()).collect::<Vec<_>>(), &[]).unwrap();
            assert_eq!(selected.len(), ids.len());
            assert!(selected.iter().all(|c| !c.id.contains("load") && !c.id.contains("rotation")));
            assert!(selected.iter().any(|c| c.level == Level::Fail && c.id.contains("round-trip")));
        }
    }
}
