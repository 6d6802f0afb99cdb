//! Issue 28: `kms-lab conformance` never crashes on what a plugin sends it. A generator writes
//! hostile scripts (`kms_faulty_plugin::hostile::Script`: empty, huge, non-UTF-8 and
//! boundary-sized fields, wrong versions, changing key ids, odd annotations, every gRPC code
//! with odd messages, delays around the deadline, hangs, an exit mid-call, valid answers between
//! garbage ones); the real `kms-faulty-plugin --hostile-script` process serves each on its
//! socket, and the command's own entry point (`run_cli_until`) checks it on both APIs. Every run
//! must end within its bound with a verdict for every check and both reports written; the
//! outcome is pass or fail (exit 0 or 1), never a panic. Then `kms-lab report`'s renderer
//! writes the plugin report of those verdicts (Markdown, HTML, JUnit, JSON), as the report
//! command does: every file is written and well-formed, whatever the findings hold.
//!
//! Cases: `DEFAULT_CASES` per run (CI); more with `PROPTEST_CASES=N`. A failing case prints its
//! shrunk script as JSON: save it under `tests/hostile-fixtures/` (the fixtures test replays
//! every file there) together with the fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kms_faulty_plugin::hostile::{Blob, EncryptFields, Fill, Reply, Script, StatusFields, Text, VersionFields};
use kms_lab_conformance::{Api, ConformanceArgs, ConformanceError, FINDING_PART_MAX, Profile, Report, ReportTarget};
use kms_lab_stack::standalone::{PluginCommand, StandalonePlugin, short_run_dir};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestError, TestRunner};

const BINARY: &str = env!("CARGO_BIN_EXE_kms-faulty-plugin");
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// Cases per CI run (each starts the plugin twice and runs both suites).
const DEFAULT_CASES: u32 = 12;
/// The per-call deadline of the suite (`--timeout`); delays are chosen around it.
const TIMEOUT: Duration = Duration::from_millis(300);
/// The rotate command's wait (`--rotate-wait`, its minimum).
const ROTATE_WAIT: Duration = Duration::from_secs(1);
/// More calls than one run makes one after another (about 120 for v2): with every call waiting
/// out its deadline, a run still ends within this many deadlines.
const SEQUENTIAL_CALLS_BOUND: u32 = 250;
/// Concurrent callers in the load check (each makes 8 round trips one after another).
const CONCURRENCY: usize = 4;
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile-fixtures");

/// The bound of one run: every sequential call waiting out its deadline, the rotation wait, and
/// slack for starting up on a loaded machine.
fn run_bound() -> Duration {
    TIMEOUT * SEQUENTIAL_CALLS_BOUND + ROTATE_WAIT + Duration::from_secs(30)
}

// ---- The generator ----------------------------------------------------------------------

/// Pieces of text a plugin may send: the expected values, near misses, control characters,
/// markup, bidi overrides, non-characters, and anything printable.
fn piece() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "", "v2", "v2beta1", "v1beta1", "v1", "ok", "OK", "key-1", "a", "\u{0}", "\n\r\t", "é", "🔑", "\u{202e}",
            "<&>\"']]>", "%2F%%", "version.kms.example.io", "Kms_Version", "\u{fffe}\u{ffff}", "\u{7f}\u{1b}[31m",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ]
    .boxed()
}

/// A text: usually short, sometimes at a limit (1 KiB key id) or far beyond it.
fn text() -> BoxedStrategy<Text> {
    let times = prop_oneof![8 => 0usize..=3, 1 => prop::sample::select(vec![256usize, 1024, 1025]), 1 => 0usize..=70_000];
    (piece(), times).prop_map(|(piece, times)| Text { piece, times }).boxed()
}

/// Bytes: short, at every boundary the suite knows (8-byte window, 32-byte DEK, 1 KiB limit,
/// 32 KiB annotations), rarely beyond the client's 4 MiB message limit; or the request echoed.
fn blob() -> BoxedStrategy<Blob> {
    let len = prop_oneof![
        6 => 0usize..=40,
        3 => prop::sample::select(vec![0usize, 1, 7, 8, 9, 31, 32, 33, 64, 1023, 1024, 1025, 4096, 32 * 1024 + 1]),
        1 => Just(4 * 1024 * 1024 + 1),
    ];
    let fill = prop_oneof![any::<u8>().prop_map(Fill::Byte), Just(Fill::Random), Just(Fill::NotUtf8)];
    prop_oneof![
        8 => (len, fill).prop_map(|(len, fill)| Blob::Bytes { len, fill }),
        1 => Just(Blob::Echo),
        1 => Just(Blob::EchoHex),
    ]
    .boxed()
}

/// Annotations: none, a few of any shape, or thousands.
fn annotations() -> BoxedStrategy<Vec<(Text, Blob)>> {
    prop_oneof![
        9 => prop::collection::vec((text(), blob()), 0..3),
        1 => (1usize..3000).prop_map(|n| {
            (0..n).map(|i| (Text { piece: format!("k{i}.example.io"), times: 1 }, Blob::Bytes { len: 16, fill: Fill::Byte(b'v') })).collect()
        }),
    ]
    .boxed()
}

/// Any gRPC code, and numbers that are none.
fn code() -> BoxedStrategy<i32> {
    prop_oneof![8 => 0i32..=16, 1 => prop::sample::select(vec![-1, 17, 255, i32::MAX])].boxed()
}

/// A delay around the deadline.
fn delay() -> BoxedStrategy<u64> {
    let t = TIMEOUT.as_millis() as u64;
    prop::sample::select(vec![0, 1, t / 2, t - 5, t, t + 5, 2 * t]).boxed()
}

/// One reply: mostly valid or scripted answers, errors of every code, rarely a hang or an exit.
fn reply<T: std::fmt::Debug + Clone + 'static>(fields: BoxedStrategy<T>) -> BoxedStrategy<Reply<T>> {
    let leaf = prop_oneof![
        4 => Just(Reply::Real),
        6 => fields.prop_map(Reply::Answer),
        3 => (code(), text()).prop_map(|(code, message)| Reply::Error { code, message }),
        1 => code().prop_map(|code| Reply::ErrorQuotingRequest { code }),
        1 => Just(Reply::Hang),
        // Rare: the rest of the run then meets a dead socket.
        1 => prop_oneof![19 => Just(Reply::Real), 1 => Just(Reply::Exit)],
    ]
    .boxed();
    prop_oneof![
        5 => leaf.clone(),
        1 => (delay(), leaf).prop_map(|(millis, reply)| Reply::Delayed { millis, reply: Box::new(reply) }),
    ]
    .boxed()
}

fn replies<T: std::fmt::Debug + Clone + 'static>(fields: BoxedStrategy<T>) -> impl Strategy<Value = Vec<Reply<T>>> {
    prop::collection::vec(reply(fields), 0..4)
}

/// A whole script. The first Status answers the harness's readiness probe, validly.
fn script() -> impl Strategy<Value = Script> {
    let status = (text(), text(), text()).prop_map(|(version, healthz, key_id)| StatusFields { version, healthz, key_id }).boxed();
    let encrypt = (blob(), text(), annotations())
        .prop_map(|(ciphertext, key_id, annotations)| EncryptFields { ciphertext, key_id, annotations })
        .boxed();
    let version = (text(), text(), text())
        .prop_map(|(version, runtime_name, runtime_version)| VersionFields { version, runtime_name, runtime_version })
        .boxed();
    (replies(status), replies(encrypt), replies(blob()), replies(version), replies(blob()), replies(blob())).prop_map(
        |(status, encrypt, decrypt, version, v1_encrypt, v1_decrypt)| Script {
            status: [vec![Reply::Real], status].concat(),
            encrypt,
            decrypt,
            version,
            v1_encrypt,
            v1_decrypt,
        },
    )
}

// ---- The property -------------------------------------------------------------------------

/// Whether the suite's first call (its API probe: v2 Status after the readiness probe, v1beta1
/// Version) answers `Unimplemented` in time: then the suite rightly stops with
/// [`ConformanceError::ApiNotServed`] instead of running checks.
fn probe_answers_unimplemented(script: &Script, api: Api) -> bool {
    fn unimplemented<T>(replies: &[Reply<T>], call: usize) -> bool {
        let Some(mut reply) = replies.get(call % replies.len().max(1)) else { return false };
        let mut waited = 0;
        while let Reply::Delayed { millis, reply: then } = reply {
            waited += millis;
            reply = then;
        }
        let code = match reply {
            Reply::Error { code, .. } | Reply::ErrorQuotingRequest { code } => tonic::Code::from_i32(*code),
            _ => return false,
        };
        code == tonic::Code::Unimplemented && Duration::from_millis(waited) < TIMEOUT
    }
    match api {
        Api::V2 => unimplemented(&script.status, 1),
        Api::V1beta1 => unimplemented(&script.version, 0),
    }
}

/// Characters XML 1.0 does not allow, even escaped.
fn not_xml(c: char) -> bool {
    ((c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{fffe}' | '\u{ffff}')
}

fn check_report(report: &Report, api: Api, json: &Path, junit: &Path) -> Result<(), TestCaseError> {
    let selected = kms_lab_conformance::catalogue().iter().filter(|c| c.api == api).count();
    prop_assert_eq!(report.checks.len(), selected, "a verdict for every check");
    prop_assert!(!report.interrupted);
    for check in &report.checks {
        if let Some(finding) = check.finding() {
            for part in [&finding.sent, &finding.received, &finding.problem] {
                prop_assert!(!part.is_empty(), "{}: a finding says what was sent, received and wrong: {:?}", check.id, finding);
                prop_assert!(part.len() <= FINDING_PART_MAX + 64, "{}: a finding part of {} B", check.id, part.len());
            }
        }
    }
    let json = std::fs::read_to_string(json).map_err(|e| TestCaseError::fail(format!("JSON report: {e}")))?;
    let value: serde_json::Value = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(format!("JSON report: {e}")))?;
    prop_assert_eq!(value["checks"].as_array().map(Vec::len), Some(selected));
    let junit = std::fs::read_to_string(junit).map_err(|e| TestCaseError::fail(format!("JUnit report: {e}")))?;
    prop_assert_eq!(junit.matches("<testcase ").count(), selected);
    prop_assert!(junit.ends_with("</testsuite>\n"));
    prop_assert!(!junit.chars().any(not_xml), "the JUnit report holds a character XML 1.0 forbids");
    Ok(())
}

/// Starts the hostile plugin on `script`, runs `kms-lab conformance --api API` against it as the
/// command does (reports to files), and checks the outcome; the report, if the API is served.
async fn conformance_against(script: &Script, api: Api) -> Result<Option<Report>, TestCaseError> {
    let dir = short_run_dir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let script_file = dir.path().join("script.json");
    std::fs::write(&script_file, serde_json::to_vec(script).expect("a script serialises")).expect("write the script");
    let socket = dir.path().join("h.sock");
    let mut command = PluginCommand::new(BINARY);
    command.arg("--socket").arg(&socket).args(["--kms", "local", "--kek-file"]).arg(dir.path().join("kek"));
    command.arg("--hostile-script").arg(&script_file);
    let plugin = StandalonePlugin::start("hostile plugin", &command, &socket, &dir.path().join("h.log"), READY_DEADLINE)
        .await
        .map_err(|e| TestCaseError::fail(format!("the hostile plugin did not start: {e}")))?;
    let (json, junit) = (dir.path().join("report.json"), dir.path().join("report.xml"));
    let args = ConformanceArgs {
        endpoint: Some(plugin.endpoint()),
        api,
        report: vec![ReportTarget::Json(json.clone()), ReportTarget::Junit(junit.clone())],
        timeout: TIMEOUT,
        only: Vec::new(),
        skip: Vec::new(),
        rotate_command: Some("true".to_owned()),
        rotate_wait: ROTATE_WAIT,
        concurrency: CONCURRENCY,
        strict: false,
        list: false,
        profile: Profile::Full,
    };
    let outcome = tokio::time::timeout(run_bound(), kms_lab_conformance::run_cli_until(&args, std::future::pending())).await;
    let log = plugin.log_tail();
    plugin.stop(Duration::from_secs(5)).await;
    match outcome {
        Err(_) => Err(TestCaseError::fail(format!("{api}: the run did not end within its bound of {:?}", run_bound()))),
        Ok(Ok(Some(report))) => check_report(&report, api, &json, &junit).map(|()| Some(report)),
        Ok(Ok(None)) => Err(TestCaseError::fail("no report without --list")),
        Ok(Err(ConformanceError::ApiNotServed { .. })) if probe_answers_unimplemented(script, api) => Ok(None),
        Ok(Err(error)) => Err(TestCaseError::fail(format!("{api}: the suite could not run: {error}; plugin log:\n{log}"))),
    }
}

async fn both_apis(script: &Script) -> Result<(), TestCaseError> {
    let v2 = conformance_against(script, Api::V2).await?;
    let v1 = conformance_against(script, Api::V1beta1).await?;
    render_plugin_report(v2.into_iter().chain(v1).collect())
}

/// `kms-lab report`'s renderer on the hostile plugin's verdicts (no scenarios ran): all four
/// files written and well-formed, every failed check named in the summary.
fn render_plugin_report(conformance: Vec<Report>) -> Result<(), TestCaseError> {
    use kms_lab_plugin_report::{PluginInfo, PluginReport};
    let failed: Vec<String> = conformance.iter().flat_map(|r| r.checks.iter().filter(|c| c.failed()).map(|c| c.id.to_string())).collect();
    let checks: usize = conformance.iter().map(|r| r.checks.len()).sum();
    let report = PluginReport {
        plugin: PluginInfo { name: "hostile".into(), description: "kms-faulty-plugin --hostile-script".into() },
        conformance,
        scenarios: kms_lab_scenarios::report::SuiteReport {
            scenarios: Vec::new(),
            seconds: 0.0,
            kubernetes_version: "v1.37.2".into(),
            jobs: 1,
            shard: None,
        },
        started: "2026-12-06T00:00:00Z".into(),
        finished: "2026-12-06T00:01:00Z".into(),
        kubernetes_version: "v1.37.2".into(),
        interrupted: false,
    };
    let out = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let files = kms_lab_plugin_report::render(&report, out.path()).map_err(|e| TestCaseError::fail(format!("the plugin report: {e}")))?;
    let read = |path: &Path| std::fs::read_to_string(path).map_err(|e| TestCaseError::fail(format!("{}: {e}", path.display())));
    let markdown = read(&files.markdown)?;
    for id in &failed {
        prop_assert!(markdown.contains(id.as_str()), "the summary names the failed check {}", id);
    }
    let html = read(&files.html)?;
    prop_assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    let json: serde_json::Value =
        serde_json::from_str(&read(&files.json)?).map_err(|e| TestCaseError::fail(format!("report.json: {e}")))?;
    let rendered: usize = json["conformance"].as_array().map_or(0, |a| a.iter().map(|r| r["checks"].as_array().map_or(0, Vec::len)).sum());
    prop_assert_eq!(rendered, checks, "report.json holds every verdict");
    let junit = read(&files.junit)?;
    prop_assert_eq!(junit.matches("<testcase ").count(), checks);
    prop_assert!(!junit.chars().any(not_xml), "the plugin report's JUnit holds a character XML 1.0 forbids");
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime")
}

#[test]
fn conformance_ends_with_verdicts_against_any_hostile_plugin() {
    let mut config = ProptestConfig { failure_persistence: None, max_shrink_iters: 64, ..ProptestConfig::default() };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    let cases = config.cases;
    let runtime = runtime();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&script(), |script| runtime.block_on(both_apis(&script)));
    match result {
        Ok(()) => println!("{cases} hostile scripts, both APIs: every run ended with a verdict for every check"),
        Err(TestError::Fail(reason, script)) => panic!(
            "{reason}\nshrunk script (save it as {FIXTURES}/NAME.json with the fix):\n{}",
            serde_json::to_string(&script).unwrap_or_default()
        ),
        Err(TestError::Abort(reason)) => panic!("proptest aborted: {reason}"),
    }
}

/// Every counterexample found so far (and the original crash), replayed.
#[test]
fn hostile_fixtures_end_with_verdicts() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(FIXTURES)
        .expect("tests/hostile-fixtures exists")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {FIXTURES}");
    let runtime = runtime();
    for file in files {
        let script = Script::load(&file).unwrap_or_else(|e| panic!("{e}"));
        if let Err(error) = runtime.block_on(both_apis(&script)) {
            panic!("{}: {error}", file.display());
        }
    }
}
