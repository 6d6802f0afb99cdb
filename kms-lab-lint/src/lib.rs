//! `kms-lab lint`: checks a kube-apiserver `EncryptionConfiguration` (and optionally the
//! apiserver's flags, the Secret count, the measured KMS latency and HA peers' files) for the
//! mistakes that break KMS deployments in the field, each with the reason and the fix.
//!
//! ```no_run
//! use kms_lab_lint::{LintContext, lint_files};
//! let report = lint_files(std::path::Path::new("encryption.yaml"), &[], &LintContext::default())?;
//! print!("{}", report.render_text());
//! std::process::exit(report.exit_code(false).code().into());
//! # Ok::<(), kms_lab_lint::LintError>(())
//! ```

pub mod cli;
mod duration;
mod error;
mod flags;
pub mod input;
mod model;
mod report;
mod rules;

use std::path::{Path, PathBuf};

pub use duration::parse_go_duration;
pub use error::LintError;
pub use flags::{ApiserverFlags, DEFAULT_REQUEST_TIMEOUT};
pub use model::{RawConfig, parse as parse_config};
pub use report::{Finding, MAX_FINDINGS_PER_ID, Omitted, Report, Severity};
pub use rules::{DEFAULT_CACHESIZE, DEFAULT_KMS_TIMEOUT, LintContext};

/// Every finding id the linter reports (each has a fixture under `kms-lab-lint/tests/fixtures/`).
pub const FINDING_IDS: &[&str] = &[
    "unknown-field",
    "wrong-api-version",
    "wrong-kind",
    "no-resources",
    "no-providers",
    "provider-not-one",
    "identity-first",
    "duplicate-resource",
    "aescbc-not-recommended",
    "static-key-invalid",
    "kms-missing-name",
    "kms-api-version-invalid",
    "kms-endpoint-not-unix",
    "kms-v1-without-gate",
    "kms-v1-deprecated",
    "cachesize-zero",
    "cachesize-disabled",
    "cachesize-below-secrets",
    "cachesize-on-v2",
    "timeout-invalid",
    "timeout-below-p99",
    "timeout-far-above-p99",
    "timeout-exceeds-request-timeout",
    "duplicate-kms-name",
    "no-automatic-reload",
    "ha-mismatch",
];

/// Lints the text of one configuration (named `file` in findings and errors).
pub fn lint_str(text: &str, file: &str, context: &LintContext) -> Result<Report, LintError> {
    let config = model::parse(text, file)?;
    Ok(Report { files: vec![file.to_owned()], findings: rules::lint_config(&config, file, context), omitted: Vec::new() }.finish())
}

/// Lints `path`, and compares it with each HA peer's file in `against`.
pub fn lint_files(path: &Path, against: &[PathBuf], context: &LintContext) -> Result<Report, LintError> {
    let file = path.display().to_string();
    let config = model::parse_file(path)?;
    let mut report = Report { files: vec![file.clone()], findings: rules::lint_config(&config, &file, context), omitted: Vec::new() };
    for other_path in against {
        let other_file = other_path.display().to_string();
        let other = model::parse_file(other_path)?;
        if let Some(found) = other.not_an_encryption_configuration() {
            return Err(LintError::WrongKind {
                path: other_path.clone(),
                flag: "--against",
                found,
                expected: "an EncryptionConfiguration (another control-plane node's copy)",
            });
        }
        report.findings.extend(rules::compare(&config, &file, &other, &other_file));
        report.files.push(other_file);
    }
    Ok(report.finish())
}
