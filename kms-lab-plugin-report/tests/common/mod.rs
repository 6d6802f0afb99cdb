//! The fixed input of the report tests: a suite with a pass, a failure and a skip, and a
//! conformance run with a pass, a FAIL, a WARN and a skip.

use kms_lab_conformance::{Api, CheckOutcome, CheckReport, Finding, Level, Report};
use kms_lab_plugin_report::{PluginInfo, PluginReport};
use kms_lab_scenarios::report::SuiteReport;

fn check(id: &'static str, level: Level, outcome: CheckOutcome) -> CheckReport {
    CheckReport {
        id,
        rule: "the rule | in one line",
        reference: "k8s.io/apiserver kmsv2",
        level,
        level_reason: "the apiserver rejects it",
        outcome,
        notes: Vec::new(),
        latency: None,
        duration_ms: 12,
    }
}

/// The fixed plugin report.
pub fn fixture() -> PluginReport {
    let suite: SuiteReport =
        serde_json::from_str(include_str!("../fixtures/suite.json")).expect("tests/fixtures/suite.json is a SuiteReport");
    let conformance = Report {
        endpoint: "unix:///tmp/plugin.sock".into(),
        api: Api::V2,
        duration_ms: 1500,
        strict: false,
        interrupted: false,
        checks: vec![
            check("v2.status", Level::Fail, CheckOutcome::Pass),
            check(
                "v2.key-id-stable",
                Level::Fail,
                CheckOutcome::Fail(Finding::new("Status twice", "key_id \"a\" then \"b\"", "key_id changed without rotation")),
            ),
            check(
                "v2.annotations-size",
                Level::Warn,
                CheckOutcome::Warn(Finding::new("Encrypt of 32 bytes (sha256 ab12)", "annotations of 40 KiB", "close to the 32 KiB limit")),
            ),
            check("v2.load", Level::Warn, CheckOutcome::Skip { reason: "--quick given".into() }),
        ],
    };
    PluginReport {
        plugin: PluginInfo { name: "example-plugin".into(), description: "A <fixture> plugin & its report.".into() },
        conformance: vec![conformance],
        scenarios: suite,
        started: "2026-12-05T12:00:00Z".into(),
        finished: "2026-12-05T12:01:00Z".into(),
        kubernetes_version: "v1.31.0".into(),
        interrupted: false,
    }
}
