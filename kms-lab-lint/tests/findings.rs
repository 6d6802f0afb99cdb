//! One fixture per finding under `tests/fixtures/`: each file says in its header what it is,
//! which finding ids it must produce (`# expect:`, exactly that set) and with which extra
//! arguments (`# lint:`, paths relative to the fixtures directory).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Parser;
use kms_lab_lint::cli::LintArgs;
use kms_lab_lint::{FINDING_IDS, LintError, Report, lint_files};

#[derive(Parser)]
struct Harness {
    #[command(flatten)]
    args: LintArgs,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn directive<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| line.strip_prefix(&format!("# {name}:")).map(str::trim))
}

/// Lints a fixture the way `kms-lab lint` would, with its `# lint:` arguments.
fn lint_fixture(path: &Path) -> (Report, BTreeSet<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let expected: BTreeSet<String> = directive(&text, "expect")
        .unwrap_or_else(|| panic!("{} has no `# expect:` line", path.display()))
        .split_whitespace()
        .filter(|id| *id != "(none)")
        .map(str::to_owned)
        .collect();
    let extra: Vec<String> = directive(&text, "lint")
        .unwrap_or("")
        .split_whitespace()
        .map(|word| if word.contains('/') { fixtures().join(word).display().to_string() } else { word.to_owned() })
        .collect();
    let argv = std::iter::once("lint".to_owned()).chain(std::iter::once(path.display().to_string())).chain(extra);
    let args = Harness::try_parse_from(argv).unwrap_or_else(|e| panic!("{}: bad `# lint:` line: {e}", path.display())).args;
    let context = args.context().unwrap();
    (lint_files(&args.file, &args.against, &context).unwrap(), expected)
}

fn fixture_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_fixture_produces_exactly_its_expected_findings() {
    let mut failures = Vec::new();
    for path in fixture_files() {
        let (report, expected) = lint_fixture(&path);
        let got: BTreeSet<String> = report.findings.iter().map(|f| f.id.to_owned()).collect();
        if got != expected {
            failures.push(format!("{}: expected {expected:?}, got {got:?}\n{}", path.display(), report.render_text()));
        }
        for finding in &report.findings {
            assert!(!finding.reason.is_empty() && !finding.fix.is_empty(), "{finding:?} lacks a reason or a fix");
            assert!(FINDING_IDS.contains(&finding.id), "{} is not in FINDING_IDS", finding.id);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_finding_id_has_its_own_fixture() {
    for id in FINDING_IDS {
        let path = fixtures().join(format!("{id}.yaml"));
        assert!(path.is_file(), "no fixture {}", path.display());
        let (report, _) = lint_fixture(&path);
        assert!(report.has(id), "{} does not produce `{id}`:\n{}", path.display(), report.render_text());
    }
}

#[test]
fn exit_codes_follow_the_worst_severity() {
    let code = |name: &str, strict: bool| lint_fixture(&fixtures().join(name)).0.exit_code(strict).code();
    assert_eq!(code("clean.yaml", true), 0);
    assert_eq!(code("aescbc-not-recommended.yaml", true), 0, "info never fails");
    assert_eq!(code("no-automatic-reload.yaml", false), 0, "warnings pass without --strict");
    assert_eq!(code("no-automatic-reload.yaml", true), 1);
    assert_eq!(code("identity-first.yaml", false), 1, "an error finding fails the check (2 is for usage errors)");
}

#[test]
fn a_repeated_finding_is_listed_ten_times_and_counted_after_that() {
    let groups: String = (0..500).map(|i| format!("- resources: [secrets]\n  providers:\n  - identity: {{}}\n  x{i}: 1\n")).collect();
    let text = format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n{groups}");
    let report = kms_lab_lint::lint_str(&text, "many.yaml", &Default::default()).unwrap();
    assert_eq!(report.findings.iter().filter(|f| f.id == "identity-first").count(), kms_lab_lint::MAX_FINDINGS_PER_ID);
    let omitted = report.omitted.iter().find(|o| o.id == "identity-first").expect("the rest is counted");
    assert_eq!(omitted.count, 500 - kms_lab_lint::MAX_FINDINGS_PER_ID);
    let text = report.render_text();
    assert!(text.contains("… and 490 more error[identity-first]"), "{text}");
    assert!(text.contains("many.yaml: 500 error(s), 999 warning(s)"), "{text}");
    assert!(text.lines().count() < 200, "{} lines", text.lines().count());
    assert_eq!(report.exit_code(false).code(), 1);
}

#[test]
fn yaml_errors_name_file_line_column_and_what_was_expected() {
    let bad = fixtures().join("unreadable/bad-indent.yaml");
    let error = lint_files(&bad, &[], &Default::default()).unwrap_err();
    let LintError::Yaml { line, column, .. } = &error else { panic!("{error:?}") };
    assert_eq!(*line, 9, "{error}");
    assert!(*column > 0);
    assert!(error.to_string().starts_with(&format!("{}:9:", bad.display())), "{error}");

    let typed = fixtures().join("unreadable/wrong-type.yaml");
    let error = lint_files(&typed, &[], &Default::default()).unwrap_err().to_string();
    assert!(error.contains("resources[0].providers[0].kms.cachesize") || error.contains("cachesize"), "{error}");
    assert!(error.contains("expected"), "{error}");
    assert!(error.contains(&typed.display().to_string()), "{error}");
}

#[test]
fn ha_differences_name_the_resource_and_provider_position() {
    let (report, _) = lint_fixture(&fixtures().join("ha-mismatch.yaml"));
    let paths: Vec<&str> = report.findings.iter().filter(|f| f.id == "ha-mismatch").map(|f| f.path.as_str()).collect();
    assert!(paths.contains(&"resources[0] (secrets) providers[0]"), "{paths:?}");
    let text = report.render_text();
    assert!(!text.contains("eHh4eHh4"), "a key's secret leaked into the report:\n{text}");
}

#[test]
fn the_lab_default_configuration_is_clean() {
    let config = kms_lab_lint::lint_str(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources:\n  - secrets\n  providers:\n  - kms:\n      apiVersion: v2\n      name: lab-kms\n      endpoint: unix:///tmp/p.sock\n      timeout: 3s\n  - identity: {}\n",
        "lab.yaml",
        &Default::default(),
    )
    .unwrap();
    assert!(config.findings.is_empty(), "{}", config.render_text());
}
