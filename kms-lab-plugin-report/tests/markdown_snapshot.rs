//! Snapshot of the Markdown and JUnit renderings of a small fixed input. The expected files in
//! `tests/snapshots/` are generated, never hand-edited: `UPDATE_SNAPSHOTS=1 cargo test -p
//! kms-lab-plugin-report --test markdown_snapshot` rewrites them; review the diff before committing.

mod common;

use std::path::PathBuf;

fn check_snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; generate it with UPDATE_SNAPSHOTS=1 cargo test -p kms-lab-plugin-report --test markdown_snapshot",
            path.display()
        )
    });
    if expected != actual {
        let first =
            expected.lines().zip(actual.lines()).position(|(a, b)| a != b).unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the rendering, first at line {}:\nexpected: {:?}\nactual:   {:?}\nIf the change is intended, regenerate with UPDATE_SNAPSHOTS=1 cargo test -p kms-lab-plugin-report --test markdown_snapshot",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

#[test]
fn markdown_matches_snapshot() {
    check_snapshot("report.md", &kms_lab_plugin_report::markdown(&common::fixture()));
}

#[test]
fn junit_matches_snapshot() {
    check_snapshot("junit.xml", &kms_lab_plugin_report::junit(&common::fixture()));
}

#[test]
fn derived_figures_follow_the_timeline() {
    let report = common::fixture();
    let outage = kms_lab_plugin_report::DerivedFigures::of(&report.scenarios.scenarios[0]);
    // Three creates failed between the fault (1.0 s) and the heal (4.2 s); the first write after
    // the heal succeeded at 4.5 s; 3 request KMS calls (the probe excluded) for 10 writes.
    assert_eq!(outage.writes_refused_during_outage, Some(3));
    assert_eq!(outage.time_to_heal_s, Some(0.3));
    assert_eq!(outage.kms_calls_per_100_writes, Some(30.0));
    let skipped = kms_lab_plugin_report::DerivedFigures::of(&report.scenarios.scenarios[2]);
    assert_eq!(skipped, kms_lab_plugin_report::DerivedFigures::default());
}

/// `--out` may hold an earlier report (replaced) and other files (left alone); a file of the
/// user's under one of the report's names stops the report before it writes anything.
#[test]
fn the_out_directory_keeps_what_is_not_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    kms_lab_plugin_report::render(&common::fixture(), out).unwrap();
    kms_lab_plugin_report::render(&common::fixture(), out).expect("an earlier report's files are replaced");
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");

    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("report.md"), "# My own report\n").unwrap();
    let error = kms_lab_plugin_report::check_out_dir(&other).unwrap_err().to_string();
    assert!(error.contains("report.md") && error.contains("left as it is"), "{error}");
    assert!(kms_lab_plugin_report::render(&common::fixture(), &other).is_err());
    assert_eq!(std::fs::read_to_string(other.join("report.md")).unwrap(), "# My own report\n");
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1, "nothing else was written");
}
