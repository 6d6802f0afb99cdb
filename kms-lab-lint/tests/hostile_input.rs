//! Issue 28: `kms-lab lint` reads what the user points it at. Generated EncryptionConfigurations
//! (every field of every provider with odd values: durations Go would refuse, huge and negative
//! numbers, keys that are not base64, names of any text), arbitrary text, and arbitrary
//! kube-apiserver flag lines: each ends with a report or a clear error, never a panic.

use kms_lab_lint::{ApiserverFlags, LintContext, lint_str, parse_go_duration};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Text where the linter expects a duration, a number, a name or a key.
fn odd_text() -> BoxedStrategy<Value> {
    prop_oneof![
        prop::sample::select(vec![
            "3s",
            "0",
            "-1s",
            "1e400s",
            "1.5.5s",
            "3µs",
            "99999999999999999999h",
            ".s",
            "+",
            "",
            "unix:///tmp/p.sock",
            "unix://",
            "tcp://x",
            "v1",
            "v2",
            "v3",
            "c2VjcmV0",
            "not base64!",
            "\u{0}",
            "é",
            "secrets",
            "*.*",
            "*.",
            ".",
        ])
        .prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec![0.5f64, -0.0, 1e308]).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
        Just(json!([])),
        Just(json!({})),
    ]
    .boxed()
}

fn provider() -> impl Strategy<Value = Value> {
    let keys = prop::collection::vec((odd_text(), odd_text()).prop_map(|(name, secret)| json!({"name": name, "secret": secret})), 0..3);
    prop_oneof![
        (odd_text(), odd_text(), odd_text(), odd_text(), odd_text())
            .prop_map(|(name, api, endpoint, timeout, cachesize)| json!({"kms": {"name": name, "apiVersion": api, "endpoint": endpoint, "timeout": timeout, "cachesize": cachesize}})),
        keys.clone().prop_map(|keys| json!({"aescbc": {"keys": keys}})),
        keys.clone().prop_map(|keys| json!({"aesgcm": {"keys": keys}})),
        keys.prop_map(|keys| json!({"secretbox": {"keys": keys}})),
        Just(json!({"identity": {}})),
        odd_text().prop_map(|v| json!({ "unknownProvider": v })),
        odd_text(),
    ]
}

fn configuration() -> impl Strategy<Value = Value> {
    let resource = (prop::collection::vec(odd_text(), 0..3), prop::collection::vec(provider(), 0..4))
        .prop_map(|(resources, providers)| json!({"resources": resources, "providers": providers}));
    (odd_text(), odd_text(), prop::collection::vec(resource, 0..3), prop::option::of(odd_text())).prop_map(
        |(api_version, kind, resources, extra)| {
            let mut config = json!({"apiVersion": api_version, "kind": kind, "resources": resources});
            if let Some(extra) = extra {
                config["extraField"] = extra;
            }
            config
        },
    )
}

/// The real header most of the time, so the generator gets past it.
fn with_header(mut config: Value, real: bool) -> Value {
    if real {
        config["apiVersion"] = json!("apiserver.config.k8s.io/v1");
        config["kind"] = json!("EncryptionConfiguration");
    }
    config
}

fn lints(text: &str) -> Result<(), TestCaseError> {
    match lint_str(text, "generated.yaml", &LintContext::default()) {
        Ok(report) => {
            let _ = report.render_text();
            let json: Value = serde_json::from_str(&report.render_json()).map_err(|e| TestCaseError::fail(format!("JSON report: {e}")))?;
            prop_assert!(json.is_object() || json.is_array());
        }
        Err(error) => prop_assert!(!error.to_string().is_empty()),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)))]

    #[test]
    fn any_generated_configuration_gets_a_report_or_an_error(config in configuration(), real in prop::bool::weighted(0.8)) {
        let yaml = serde_yaml::to_string(&with_header(config, real)).expect("YAML");
        lints(&yaml)?;
    }

    #[test]
    fn any_text_gets_a_report_or_an_error(text in prop_oneof!["\\PC{0,200}", "(resources:|- |  |kms:|name: |---\n|\t|: |\\[|\\]|\\{|\\}|&a |\\*a|!!binary |\n){0,40}"]) {
        lints(&text)?;
    }

    #[test]
    fn any_flag_line_parses_or_is_refused(text in "(kube-apiserver|--feature-gates[= ]|--request-timeout[= ]|--encryption-provider-config(-automatic-reload)?[= ]?|KMSv1=|true|false|[0-9.]{1,6}(s|m|h|ms)?|,| |\\\\\n|\\PC){0,30}") {
        if let Ok(mut flags) = ApiserverFlags::parse(&text) {
            let _ = flags.request_timeout();
            let _ = flags.add_gates(&text);
        }
    }

    #[test]
    fn any_duration_text_is_a_duration_or_none(text in "([0-9.]{0,30}(ns|us|µs|ms|s|m|h|x)?){0,4}|\\PC{0,20}") {
        let _ = parse_go_duration(&text);
    }
}
