//! Every file in `tests/invalid/` is a scenario with one mistake; its header says where the
//! error must point (`# error-at: LINE`) and what the message must say (`# expect: TEXT`, each a
//! literal substring). Each is run through `scenarios --check`, alone in its own directory:
//! it must be refused before anything starts, at that line, naming the valid choices.

use std::path::Path;

use kms_lab_scenarios::{ScenarioArgs, ScenariosError};

struct Fixture {
    line: usize,
    expect: Vec<String>,
}

fn header(text: &str, file: &str) -> Fixture {
    let mut line = None;
    let mut expect = Vec::new();
    for comment in text.lines().map_while(|l| l.strip_prefix('#')) {
        let comment = comment.trim();
        if let Some(number) = comment.strip_prefix("error-at:") {
            line = Some(number.trim().parse().unwrap_or_else(|_| panic!("{file}: `# error-at:` needs a line number")));
        } else if let Some(needle) = comment.strip_prefix("expect:") {
            expect.push(needle.trim().to_owned());
        }
    }
    let line = line.unwrap_or_else(|| panic!("{file}: the header has no `# error-at: LINE`"));
    assert!(!expect.is_empty(), "{file}: the header has no `# expect: TEXT`");
    Fixture { line, expect }
}

fn check_args(dir: &Path) -> ScenarioArgs {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ScenarioArgs,
    }
    let dir = dir.to_str().expect("a UTF-8 temp path");
    Cli::parse_from(["scenarios", "--check", "--tier", "core", "--tier", "incident", "--tier", "slow", "--dir", dir]).args
}

#[tokio::test]
async fn every_invalid_file_is_refused_by_check_at_its_line_with_the_choices() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("invalid");
    let mut files: Vec<_> = std::fs::read_dir(&fixtures).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    assert!(files.len() >= 8, "expected the fixture files in {}", fixtures.display());
    let mut problems = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let fixture = header(&text, &file);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(&file), &text).unwrap();
        let message = match kms_lab_scenarios::cli::run(&check_args(dir.path())).await {
            Err(ScenariosError::Load(error)) => error.to_string(),
            Err(other) => {
                problems.push(format!("{file}: refused, but not as a scenario file error: {other}"));
                continue;
            }
            Ok(_) => {
                problems.push(format!("{file}: `scenarios --check` accepted it"));
                continue;
            }
        };
        let at = format!("{file}:{}:", fixture.line);
        if !message.contains(&at) {
            problems.push(format!("{file}: the error does not point at `{at}`: {message}"));
        }
        for needle in &fixture.expect {
            if !message.contains(needle.as_str()) {
                problems.push(format!("{file}: the error does not say `{needle}`: {message}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
