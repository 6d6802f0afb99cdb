//! Issue 14's fixture suite of bad inputs: one case per file under `tests/bad-inputs/`, each
//! saying in its header the command (`# run:`, `{input}` is the case's input file, `{fixtures}`
//! the lint fixtures), the exit code (`# exit:`), text the message must contain (`# match:`,
//! repeatable) and strings that must NOT appear anywhere in the output (`# never:`, every
//! secret used). The input is what follows `# ---`, or generated (`# input: empty | zeros N |
//! xline N | longvalue N`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-inputs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

fn directives<'a>(header: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("# {name}:");
    header.lines().filter_map(|line| line.strip_prefix(&prefix).map(str::trim)).collect()
}

fn generate(spec: &str, body: &str) -> Vec<u8> {
    let (kind, size) = spec.split_once(' ').unwrap_or((spec, "0"));
    let size: usize = size.parse().expect("`# input:` size is a number");
    match kind {
        "empty" => Vec::new(),
        "zeros" => vec![0u8; size],
        "xline" => format!("kind: {}\n", "x".repeat(size)).into_bytes(),
        "longvalue" => format!(
            "apiVersion: {}\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: lab-kms\n          endpoint: unix:///tmp/p.sock\n      - identity: {{}}\n",
            "k".repeat(size)
        )
        .into_bytes(),
        "" => body.as_bytes().to_vec(),
        other => panic!("unknown `# input:` generator `{other}`"),
    }
}

#[test]
fn every_bad_input_gets_its_exit_code_and_message_and_never_echoes_a_secret() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lint/tests/fixtures");
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() >= 10, "the suite lost its cases: {all:?}");
    for case in all {
        let text = std::fs::read_to_string(&case).unwrap();
        let (header, body) = text.split_once("# ---\n").unwrap_or_else(|| panic!("{} has no `# ---` line", case.display()));
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let run = directives(header, "run").first().copied().unwrap_or_else(|| panic!("{name}: no `# run:`"));
        let exit: i32 = directives(header, "exit").first().and_then(|e| e.parse().ok()).unwrap_or_else(|| panic!("{name}: no `# exit:`"));
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input");
        std::fs::write(&input, generate(directives(header, "input").first().copied().unwrap_or(""), body)).unwrap();
        let args: Vec<String> = run
            .split_whitespace()
            .map(|word| word.replace("{input}", input.to_str().unwrap()).replace("{fixtures}", fixtures.to_str().unwrap()))
            .collect();
        let output = Command::new(env!("CARGO_BIN_EXE_kms-lab")).args(&args).output().expect("kms-lab runs");
        let all_output = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        let mut problems = Vec::new();
        if output.status.code() != Some(exit) {
            problems.push(format!("exit {:?}, expected {exit}", output.status.code()));
        }
        for expected in directives(header, "match") {
            if !all_output.contains(expected) {
                problems.push(format!("lacks `{expected}`"));
            }
        }
        for secret in directives(header, "never") {
            if all_output.contains(secret) {
                problems.push(format!("echoes `{secret}`"));
            }
        }
        if all_output.len() > 16 * 1024 {
            problems.push(format!("{} bytes of output", all_output.len()));
        }
        if !problems.is_empty() {
            let shown: String = all_output.chars().take(2000).collect();
            failures.push(format!("{name} (kms-lab {run}): {}\n{shown}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
