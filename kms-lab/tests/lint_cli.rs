//! `kms-lab lint` as a process: the exit codes CI relies on, and both output formats.

use std::path::PathBuf;
use std::process::Command;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kms-lab-lint/tests/fixtures").join(name).display().to_string()
}

fn lint(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kms-lab")).arg("lint").args(args).output().expect("kms-lab runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn exit_codes_are_0_clean_1_findings_2_usage_or_unreadable_input() {
    let flags = fixture("flags/good.txt");
    assert_eq!(lint(&[&fixture("clean.yaml"), "--apiserver-flags", &flags]).0, 0);
    assert_eq!(lint(&[&fixture("aescbc-not-recommended.yaml"), "--strict"]).0, 0, "info only");
    let warnings = fixture("no-automatic-reload.yaml");
    let no_reload = fixture("flags/no-reload.txt");
    assert_eq!(lint(&[&warnings, "--apiserver-flags", &no_reload]).0, 0);
    assert_eq!(lint(&[&warnings, "--apiserver-flags", &no_reload, "--strict"]).0, 1);
    let (code, stdout, _) = lint(&[&fixture("identity-first.yaml")]);
    assert_eq!(code, 1);
    assert!(stdout.contains("error[identity-first]") && stdout.contains("fix:"), "{stdout}");
    let (code, _, stderr) = lint(&[&fixture("unreadable/bad-indent.yaml")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("bad-indent.yaml:9:"), "{stderr}");
    assert_eq!(lint(&["/nonexistent/encryption.yaml"]).0, 2);
    assert_eq!(lint(&[&fixture("clean.yaml"), "--kms-p99", "fast"]).0, 2, "a malformed flag value is a usage error");
    assert_eq!(lint(&[&fixture("clean.yaml"), "--no-such-flag"]).0, 2, "clap's usage errors share the code");
}

#[test]
fn json_output_lists_findings_with_id_severity_reason_and_fix() {
    let (code, stdout, _) =
        lint(&[&fixture("cachesize-below-secrets.yaml"), "--feature-gates", "KMSv1=true", "--secrets", "5000", "--format", "json"]);
    assert_eq!(code, 0, "warnings and infos only");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let finding = report["findings"].as_array().unwrap().iter().find(|f| f["id"] == "cachesize-below-secrets").expect("the finding");
    assert_eq!(finding["severity"], "warning");
    assert!(finding["reason"].as_str().unwrap().contains("5000"));
    assert!(finding["fix"].as_str().unwrap().contains("6001"));
}

#[test]
fn help_documents_the_exit_codes() {
    let output = Command::new(env!("CARGO_BIN_EXE_kms-lab")).args(["lint", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for line in ["0  clean", "1  the check failed", "2  usage or input error"] {
        assert!(help.contains(line), "--help lacks `{line}`:\n{help}");
    }
}
