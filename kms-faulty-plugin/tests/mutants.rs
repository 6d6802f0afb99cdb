//! Proof that conformance catches what it claims: every defect of the faulty plugin fails the
//! check written for it, and the same binary without defects passes everything, rotation included.

use std::path::PathBuf;
use std::time::Duration;

use kms_lab_conformance::{Api, Level, Options, Report, render_text};
use kms_lab_stack::standalone::{PluginCommand, StandalonePlugin, short_run_dir};

const BINARY: &str = env!("CARGO_BIN_EXE_kms-faulty-plugin");
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// One mutant: its defect, the API checked, whether it needs a KEK rotation, the check ids that
/// must catch it, and the level they must report (FAIL: exit 1; WARN: reported, exit 0).
struct Mutant {
    defect: &'static str,
    api: Api,
    rotate: bool,
    fails: &'static [&'static str],
    level: Level,
}

const fn m(defect: &'static str, api: Api, fails: &'static [&'static str]) -> Mutant {
    Mutant { defect, api, rotate: false, fails, level: Level::Fail }
}

const fn warn(defect: &'static str, api: Api, fails: &'static [&'static str]) -> Mutant {
    Mutant { defect, api, rotate: false, fails, level: Level::Warn }
}

const fn rotating(defect: &'static str, fails: &'static [&'static str]) -> Mutant {
    Mutant { defect, api: Api::V2, rotate: true, fails, level: Level::Fail }
}

/// defect → the check ids that must catch it.
const MUTANTS: &[Mutant] = &[
    m("wrong-version", Api::V2, &["v2.status.version"]),
    m("unhealthy", Api::V2, &["v2.status.healthz"]),
    m("oversize-key-id", Api::V2, &["v2.status.key-id-valid"]),
    warn("unstable-key-id", Api::V2, &["v2.status.key-id-stable"]),
    m("key-id-differs-from-status", Api::V2, &["v2.encrypt.key-id-matches-status"]),
    m("echo-plaintext", Api::V2, &["v2.encrypt.not-plaintext"]),
    warn("deterministic", Api::V2, &["v2.encrypt.non-deterministic"]),
    // Readable DEK, one defect per family.
    m("base64-dek", Api::V2, &["v2.encrypt.dek-not-readable"]),
    m("partial-dek", Api::V2, &["v2.encrypt.dek-not-readable"]),
    m("xor-fixed-key", Api::V2, &["v2.encrypt.dek-not-readable"]),
    m("substitution", Api::V2, &["v2.encrypt.dek-not-readable"]),
    warn("compress-then-encrypt", Api::V2, &["v2.encrypt.length-hides-content"]),
    m("base64-dek", Api::V1beta1, &["v1beta1.encrypt.dek-not-readable"]),
    m("partial-dek", Api::V1beta1, &["v1beta1.encrypt.dek-not-readable"]),
    m("xor-fixed-key", Api::V1beta1, &["v1beta1.encrypt.dek-not-readable"]),
    m("substitution", Api::V1beta1, &["v1beta1.encrypt.dek-not-readable"]),
    warn("compress-then-encrypt", Api::V1beta1, &["v1beta1.encrypt.length-hides-content"]),
    m("oversize-ciphertext", Api::V2, &["v2.encrypt.ciphertext-size"]),
    m("bad-annotation-key", Api::V2, &["v2.encrypt.annotations-valid"]),
    m("oversize-annotations", Api::V2, &["v2.encrypt.annotations-valid"]),
    m("drops-empty-payload", Api::V2, &["v2.encrypt.payload-sizes"]),
    m("uid-affects-result", Api::V2, &["v2.encrypt.uid-independent"]),
    m("empty-ciphertext", Api::V2, &["v2.encrypt.ciphertext-size", "v2.encrypt.dek-not-readable", "v2.decrypt.round-trip"]),
    m("empty-ciphertext", Api::V1beta1, &["v1beta1.round-trip", "v1beta1.encrypt.dek-not-readable"]),
    m("hang-on-encrypt", Api::V2, &["v2.encrypt.key-id-matches-status", "v2.decrypt.round-trip"]),
    m("corrupts-plaintext", Api::V2, &["v2.decrypt.round-trip"]),
    m("decrypt-ignores-tamper", Api::V2, &["v2.decrypt.refuses-garbage", "v2.decrypt.refuses-tampered"]),
    warn("decrypt-ignores-tamper", Api::V2, &["v2.decrypt.refuses-truncated"]),
    warn("ignores-annotations", Api::V2, &["v2.decrypt.refuses-wrong-annotations"]),
    rotating("ignore-rotation", &["v2.rotation.key-id-changes"]),
    rotating("status-always-ok", &["v2.rotation.key-id-changes"]),
    rotating("key-id-without-version", &["v2.rotation.key-id-changes"]),
    rotating("forgets-old-kek", &["v2.rotation.old-ciphertext-decrypts"]),
    m("racy-under-load", Api::V2, &["v2.load.concurrent-round-trips"]),
    warn("wrong-status-code", Api::V2, &["v2.hygiene.error-codes"]),
    m("plaintext-in-error", Api::V2, &["v2.hygiene.no-plaintext-in-errors"]),
    m("v1beta1-bad-version", Api::V1beta1, &["v1beta1.version.api"]),
    warn("v1beta1-bad-runtime-version", Api::V1beta1, &["v1beta1.version.runtime"]),
    m("hang-on-encrypt", Api::V1beta1, &["v1beta1.round-trip"]),
    m("corrupts-plaintext", Api::V1beta1, &["v1beta1.round-trip"]),
    m("echo-plaintext", Api::V1beta1, &["v1beta1.encrypt.not-plaintext"]),
    warn("deterministic", Api::V1beta1, &["v1beta1.encrypt.non-deterministic"]),
    m("decrypt-ignores-tamper", Api::V1beta1, &["v1beta1.decrypt.refuses-garbage"]),
    m("racy-under-load", Api::V1beta1, &["v1beta1.load.concurrent-round-trips"]),
    warn("wrong-status-code", Api::V1beta1, &["v1beta1.hygiene.error-codes"]),
    m("plaintext-in-error", Api::V1beta1, &["v1beta1.hygiene.no-plaintext-in-errors"]),
];

/// The faulty plugin with `defects`, a KEK file (so it can rotate) and a fast health TTL.
struct Faulty {
    process: StandalonePlugin,
    kek_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Faulty {
    async fn start(defects: &[&str]) -> Self {
        let dir = short_run_dir().expect("run dir under /tmp");
        let socket = dir.path().join("f.sock");
        let kek_file = dir.path().join("kek");
        let mut command = PluginCommand::new(BINARY);
        command.arg("--socket").arg(&socket).args(["--kms", "local", "--health-ttl", "100ms", "--kek-file"]).arg(&kek_file);
        for defect in defects {
            command.args(["--defect", defect]);
        }
        let name = format!("kms-faulty-plugin {defects:?}");
        let process = StandalonePlugin::start(&name, &command, &socket, &dir.path().join("f.log"), READY_DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Self { process, kek_file, _dir: dir }
    }

    /// Options for a quick run; with `rotate`, a rotate command that appends a KEK version and sends SIGHUP.
    fn options(&self, api: Api, rotate: bool) -> Options {
        let mut options = Options::new(self.process.endpoint(), api);
        options.timeout = Duration::from_secs(1);
        options.concurrency = 8;
        options.round_trips_per_caller = 4;
        if rotate {
            let pid = self.process.pid().expect("running");
            options.rotate_command = Some(format!("'{BINARY}' rotate-kek --kek-file '{}' && kill -HUP {pid}", self.kek_file.display()));
            options.rotate_wait = Duration::from_secs(5);
        }
        options
    }

    async fn conformance(&self, api: Api, rotate: bool) -> Report {
        kms_lab_conformance::run(&self.options(api, rotate)).await.expect("the suite runs")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_defects_every_check_passes_in_both_apis_rotation_included() {
    let plugin = Faulty::start(&[]).await;
    let v2 = plugin.conformance(Api::V2, true).await;
    assert!(v2.passed(), "{}", render_text(&v2));
    assert!(v2.warned_ids().is_empty(), "no warnings either:\n{}", render_text(&v2));
    assert_eq!(v2.counts().2, 0, "nothing skipped with a rotate command:\n{}", render_text(&v2));
    let v1 = plugin.conformance(Api::V1beta1, false).await;
    assert!(v1.passed(), "{}", render_text(&v1));
    assert!(v1.warned_ids().is_empty(), "no warnings either:\n{}", render_text(&v1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_makes_a_warning_fail_and_junit_shows_it_without_failing() {
    let plugin = Faulty::start(&["wrong-status-code"]).await;
    let mut report = plugin.conformance(Api::V2, false).await;
    assert_eq!(report.warned_ids(), ["v2.hygiene.error-codes"], "{}", render_text(&report));
    assert!(report.passed(), "{}", render_text(&report));
    let junit = kms_lab_conformance::render_junit(&report);
    assert!(junit.contains("failures=\"0\"") && junit.contains("warnings=\"1\"") && junit.contains("WARN: "), "{junit}");
    let text = render_text(&report);
    assert!(text.contains("  WARN v2.hygiene.error-codes") && text.contains("0 failed, 1 warnings"), "{text}");
    report.strict = true;
    assert!(!report.passed(), "--strict: a warning fails the run");
    assert!(kms_lab_conformance::render_junit(&report).contains("failures=\"1\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutant_fails_the_check_written_for_it() {
    let mut missed = Vec::new();
    for mutant in MUTANTS {
        let plugin = Faulty::start(&[mutant.defect]).await;
        let report = plugin.conformance(mutant.api, mutant.rotate).await;
        let (failed, warned) = (report.failed_ids(), report.warned_ids());
        let caught = if mutant.level == Level::Fail { &failed } else { &warned };
        let missing: Vec<_> = mutant.fails.iter().filter(|id| !caught.contains(id)).collect();
        println!("{:28} {:8} → failed {failed:?} warned {warned:?}", mutant.defect, mutant.api.to_string());
        if !missing.is_empty() {
            missed.push(format!(
                "--defect {} ({}): expected {missing:?} at {}\n{}",
                mutant.defect,
                mutant.api,
                mutant.level,
                render_text(&report)
            ));
        }
        // A WARN-only defect leaves the exit code at 0; any FAIL-level defect makes it 1.
        if mutant.level == Level::Warn && mutant.fails.iter().all(|id| !failed.contains(id)) && failed.is_empty() {
            assert!(report.passed(), "a warning must not fail the run:\n{}", render_text(&report));
        }
        // A failure or warning names what was sent, what came back and the upstream rule.
        for id in mutant.fails {
            if let Some(finding) = report.check(id).and_then(|c| c.finding()) {
                assert!(!finding.sent.is_empty() && !finding.received.is_empty() && !finding.problem.is_empty(), "{finding:?}");
            }
        }
    }
    assert!(missed.is_empty(), "{} mutants were not caught:\n{}", missed.len(), missed.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_plaintext_is_withheld_from_the_report() {
    let plugin = Faulty::start(&["plaintext-in-error"]).await;
    let report = plugin.conformance(Api::V2, false).await;
    let text = render_text(&report);
    let json = serde_json::to_string(&report).expect("serialises");
    assert!(text.contains("message withheld: it contains the hex of the plaintext"), "{text}");
    // The mutant quotes 64 bytes as 128 hex digits; no such run may reach the report.
    for rendered in [&text, &json] {
        let longest_hex_run = rendered.split(|c: char| !c.is_ascii_hexdigit()).map(str::len).max().unwrap_or(0);
        assert!(longest_hex_run < 64, "a hex run of {longest_hex_run} digits in the report");
    }
}

/// Issue 28: a plugin answering Encrypt with an empty ciphertext and gRPC OK made the suite panic
/// (`index out of bounds` in the exposure checks, exit 101, no report). Now every check ends with
/// a verdict, the findings say what came back (sizes), and both report formats are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_ciphertext_answered_ok_fails_checks_instead_of_crashing_the_suite() {
    let plugin = Faulty::start(&["empty-ciphertext"]).await;
    for (api, check) in [(Api::V2, "v2.encrypt.dek-not-readable"), (Api::V1beta1, "v1beta1.encrypt.dek-not-readable")] {
        let report = plugin.conformance(api, false).await;
        let selected = kms_lab_conformance::catalogue().iter().filter(|c| c.api == api).count();
        assert_eq!(report.checks.len(), selected, "a verdict for every check:\n{}", render_text(&report));
        assert!(!report.passed(), "{}", render_text(&report));
        let finding = report.check(check).and_then(|c| c.finding()).unwrap_or_else(|| panic!("{check} has a finding"));
        assert!(finding.received.contains("ciphertext 0 B") && finding.problem.contains("empty ciphertext"), "{finding:?}");
        let dir = tempfile::tempdir().expect("temp dir");
        for target in [
            kms_lab_conformance::ReportTarget::Json(dir.path().join("r.json")),
            kms_lab_conformance::ReportTarget::Junit(dir.path().join("r.xml")),
        ] {
            target.write(&report).expect("the report is written");
            assert!(std::fs::metadata(target.path()).expect("written").len() > 0);
        }
    }
}
