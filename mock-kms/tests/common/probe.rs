//! The Go SDK probes of `mock-kms/sdk-probes/*`: built (or found in the cache) by kms-lab's Go
//! locator, run against a listener, their JSON lines read back by case name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kms_lab_provision::{GoSubject, ProvisionOptions, locate_go_subject};
use mock_kms::api::Action;
use mock_kms::api::faults::{FaultProfile, ThrottleFault};
use mock_kms::api::policy::AccessPolicy;
use mock_kms::dialects::Dialect;
use mock_kms::{AuditRecord, Credential, MockKms};
use serde::Deserialize;
use serde_json::Value;

use super::{AK, SK};

/// One case a probe printed: success with `detail`, or the SDK's error fields.
#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    pub case: String,
    #[serde(default)]
    pub ok: bool,
    /// JD Cloud: the HTTP status in `error.code`; Alibaba: the error code string.
    #[serde(default)]
    pub code: Value,
    /// JD Cloud: `error.status` (`NOT_FOUND`); Alibaba: the HTTP status.
    #[serde(default)]
    pub status: Value,
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "requestId")]
    pub request_id: Option<String>,
    #[serde(default)]
    pub transport: Option<String>,
    #[serde(default)]
    pub detail: Value,
}

/// The probe's binary: from `$KMS_LAB_…_SDK_PROBE`, the cache, or a Go build (the failure names
/// what to install or set; the test fails, it never passes without the SDK).
pub async fn binary(subject: GoSubject) -> PathBuf {
    let started = Instant::now();
    let path = tokio::task::spawn_blocking(move || locate_go_subject(subject, &ProvisionOptions::default()))
        .await
        .expect("the locator task")
        .unwrap_or_else(|e| panic!("the {subject} SDK probe is needed for this test and could not be found or built: {e}"));
    eprintln!("{subject}: {} ({:.1} s to locate or build)", path.display(), started.elapsed().as_secs_f64());
    path
}

/// Runs `phase` of the probe against `addr` with the test credential; its cases by name.
pub async fn run(binary: &Path, addr: SocketAddr, phase: &str) -> BTreeMap<String, Case> {
    run_as(binary, addr, phase, (AK, SK), None).await
}

/// Runs `phase` of the probe against `addr` as `credential` (access key, secret key), trusting
/// the CA in `ca_file` (`SSL_CERT_FILE`, which Go's TLS reads) when given; its cases by name.
pub async fn run_as(
    binary: &Path,
    addr: SocketAddr,
    phase: &str,
    credential: (&str, &str),
    ca_file: Option<&Path>,
) -> BTreeMap<String, Case> {
    let (ak, sk) = credential;
    let args = ["-endpoint".to_owned(), addr.to_string(), "-ak".into(), ak.into(), "-sk".into(), sk.into(), "-phase".into(), phase.into()];
    let binary = binary.to_path_buf();
    let ca_file = ca_file.map(Path::to_path_buf);
    let output = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(&binary);
        if let Some(ca_file) = ca_file {
            command.env("SSL_CERT_FILE", ca_file);
        }
        command.args(&args).output()
    })
    .await
    .expect("the probe task")
    .expect("the probe runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the probe failed ({}):\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    let mut cases = BTreeMap::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let case: Case = serde_json::from_str(line).unwrap_or_else(|e| panic!("probe line `{line}` is not a case: {e}"));
        assert!(case.transport.is_none(), "{}: the SDK could not reach the mock: {:?}", case.case, case.transport);
        assert!(!line.contains(SK) && !line.contains(sk), "the probe's output shows the secret key: {line}");
        cases.insert(case.case.clone(), case);
    }
    cases
}

/// `cases[name]`, or a panic listing the cases there are.
pub fn case<'a>(cases: &'a BTreeMap<String, Case>, name: &str) -> &'a Case {
    cases.get(name).unwrap_or_else(|| panic!("no case `{name}` in the probe's output: {:?}", cases.keys().collect::<Vec<_>>()))
}

/// Asserts every named case succeeded.
pub fn all_ok(cases: &BTreeMap<String, Case>, names: &[&str]) {
    for name in names {
        let case = case(cases, name);
        assert!(case.ok, "{name} failed through the SDK: {case:?}");
    }
}

/// The audit record of the call that answered `case` (by its request id), or the newest record of
/// `operation` on `dialect` when the SDK does not hand the request id over.
pub fn audited<'a>(records: &'a [AuditRecord], case: &Case, dialect: &str, operation: &str) -> &'a AuditRecord {
    let found = match &case.request_id {
        Some(id) if !id.is_empty() => records.iter().find(|r| &r.request_id == id),
        _ => records.iter().rev().find(|r| r.dialect.name() == dialect && r.operation == operation),
    };
    let record = found.unwrap_or_else(|| panic!("no audit record for {case:?}"));
    assert_eq!((record.dialect.name(), record.operation.as_str()), (dialect, operation), "{case:?}");
    record
}

/// A mock KMS speaking `dialect` with the test credential, `lab-key` and `doomed-key`.
pub async fn kms(dialect: Dialect) -> MockKms {
    MockKms::builder().dialect(dialect).credential(Credential::new(AK, SK)).key("lab-key").key("doomed-key").seed(26).start().await.unwrap()
}

/// Asserts `case` reached the SDK refused with `code` and `status` (each SDK's own fields),
/// without the secret key in its message, and was audited on `dialect` as `operation` with the
/// native `outcome`.
pub fn refused(kms: &MockKms, case: &Case, code: Value, status: Value, operation: &str, outcome: &str) {
    assert!(!case.ok, "{case:?}");
    assert_eq!((&case.code, &case.status), (&code, &status), "{case:?}");
    assert!(!case.message.contains(SK), "{case:?}");
    let records = kms.audit().records();
    assert_eq!(audited(&records, case, kms.dialect().name(), operation).outcome.name(), outcome, "{case:?}");
}

/// Runs `subject`'s `throttled` phase (two Encrypts) on a `dialect` mock twice: under a throttle
/// fault that admits one call (the second must be refused as `throttled`, each SDK's `(code,
/// status)`), then with no fault but an access policy allowing only Decrypt (the first must be
/// refused as `denied`). Both refusals must be audited as the native Throttling and Forbidden.
pub async fn throttled_then_denied(subject: GoSubject, dialect: Dialect, throttled: (Value, Value), denied: (Value, Value)) {
    let binary = binary(subject).await;
    let kms = kms(dialect).await;
    let throttle = ThrottleFault { per_second: 0.001, burst: Some(1.0), actions: None };
    kms.set_faults(FaultProfile { throttle: Some(throttle), ..Default::default() }).unwrap();
    let cases = run(&binary, kms.addr(), "throttled").await;
    all_ok(&cases, &["Encrypt 1"]);
    refused(&kms, case(&cases, "Encrypt 2"), throttled.0, throttled.1, "Encrypt", "Throttling");
    kms.clear_faults();
    kms.set_policy(AK, AccessPolicy::allow([Action::Decrypt], ["key/*"])).unwrap();
    let cases = run(&binary, kms.addr(), "throttled").await;
    refused(&kms, case(&cases, "Encrypt 1"), denied.0, denied.1, "Encrypt", "Forbidden");
    kms.shutdown().await;
}

/// A sealed `dialect` mock (`mock-kms init`: 5 shares, none given): `subject`'s first Encrypt must
/// be refused as `sealed` (each SDK's `(code, status)`) and audited as the native Sealed.
pub async fn sealed(subject: GoSubject, dialect: Dialect, sealed: (Value, Value)) {
    let binary = binary(subject).await;
    let dir = tempfile::tempdir().unwrap();
    mock_kms::seal::init(dir.path(), 5, 3).unwrap();
    let kms = MockKms::builder()
        .dialect(dialect)
        .data_dir(dir.path())
        .sealed(true)
        .key("lab-key")
        .credential(Credential::new(AK, SK))
        .start()
        .await
        .unwrap();
    let cases = run(&binary, kms.addr(), "throttled").await;
    refused(&kms, case(&cases, "Encrypt 1"), sealed.0, sealed.1, "Encrypt", "Sealed");
    kms.shutdown().await;
}
