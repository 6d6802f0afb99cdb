//! The `kms-lab lint` command line: arguments and the run that prints the report and returns
//! the exit code.

use std::path::PathBuf;
use std::time::Duration;

use crate::{ApiserverFlags, LintContext, LintError, lint_files, parse_go_duration};
use kms_lab_cli_common::Exit;

/// Output format of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: one block per finding (`severity[id]: file: path`, why, fix).
    Text,
    /// One JSON object: `files`, `findings` (id, severity, file, path, reason, fix).
    Json,
}

/// `kms-lab lint` arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Exit codes (the same for every kms-lab command):
  0  clean, or info findings only (also warnings without --strict)
  1  the check failed: at least one error finding (the apiserver refuses the file, or it defeats
     encryption), or warnings with --strict
  2  usage or input error: a bad flag, or an input that could not be used (unreadable, over 1 MiB,
     empty, several YAML documents, not the kind of file its flag takes; file:line:column and what
     was expected)

Findings: unknown-field, wrong-api-version, wrong-kind, no-resources, no-providers, provider-not-one,
identity-first, duplicate-resource, aescbc-not-recommended, static-key-invalid, kms-missing-name,
kms-api-version-invalid, kms-endpoint-not-unix, kms-v1-without-gate, kms-v1-deprecated, cachesize-zero,
cachesize-disabled, cachesize-below-secrets, cachesize-on-v2, timeout-invalid, timeout-below-p99,
timeout-far-above-p99, timeout-exceeds-request-timeout, duplicate-kms-name, no-automatic-reload, ha-mismatch")]
pub struct LintArgs {
    /// The EncryptionConfiguration (the file given to `--encryption-provider-config`).
    pub file: PathBuf,
    /// Another control-plane node's configuration to compare with (HA; repeatable).
    #[arg(long, value_name = "OTHER_FILE")]
    pub against: Vec<PathBuf>,
    /// A file with kube-apiserver's flags (a command line, one flag per line, or a static pod manifest).
    #[arg(long, value_name = "FILE", conflicts_with = "feature_gates")]
    pub apiserver_flags: Option<PathBuf>,
    /// kube-apiserver's `--feature-gates` value, e.g. `KMSv1=true` (instead of --apiserver-flags).
    #[arg(long, value_name = "GATES")]
    pub feature_gates: Option<String>,
    /// The number of Secrets in the cluster (checks KMS v1 cachesize).
    #[arg(long, value_name = "N")]
    pub secrets: Option<u64>,
    /// The measured p99 latency of one KMS plugin call, e.g. `120ms` (checks timeouts).
    #[arg(long, value_name = "DURATION")]
    pub kms_p99: Option<String>,
    /// Exit 1 when there are warnings (and no errors).
    #[arg(long)]
    pub strict: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

impl LintArgs {
    /// The lint context these arguments describe.
    pub fn context(&self) -> Result<LintContext, LintError> {
        let mut flags = match &self.apiserver_flags {
            Some(path) => Some(ApiserverFlags::from_file(path)?),
            None => None,
        };
        if let Some(gates) = &self.feature_gates {
            flags.get_or_insert_with(ApiserverFlags::default).add_gates(gates)?;
        }
        let kms_p99 = match &self.kms_p99 {
            Some(text) => Some(parse_duration(text)?),
            None => None,
        };
        Ok(LintContext { flags, secrets: self.secrets, kms_p99 })
    }
}

fn parse_duration(text: &str) -> Result<Duration, LintError> {
    parse_go_duration(text).ok_or_else(|| LintError::Flag {
        flag: "--kms-p99",
        value: text.to_owned(),
        hint: "expected a duration such as `120ms` or `1.5s`".to_owned(),
    })
}

/// Runs the lint: prints the report to stdout (errors reading input to stderr) and returns the
/// exit code: 0 clean, 1 the config has findings that fail, 2 an input or flag cannot be used.
pub fn run(args: &LintArgs) -> Exit {
    let report = args.context().and_then(|context| lint_files(&args.file, &args.against, &context));
    match report {
        Ok(report) => {
            match args.format {
                Format::Text => print!("{}", report.render_text()),
                Format::Json => println!("{}", report.render_json()),
            }
            report.exit_code(args.strict)
        }
        Err(error) => {
            eprintln!("error: {error}");
            Exit::Usage
        }
    }
}
