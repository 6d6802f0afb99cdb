//! Every file in `tests/invalid/` is a scenario with one mistake; its header says where the
//! error must point (`# error-at: LINE`) and what the message must say (`# expect: TEXT`, each a
//! literal substring). Each is run through `scenarios --check`, alone in its own directory:
//! it must be refused before anything starts, at that line, naming the valid choices.

use std::path::Path;

use kms_lab_scenarios::{ScenarioArgs, ScenariosError};

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
    let mut problems = Vec::new();
    for fixture in kms_lab_fixtures::load_dir(&fixtures, 8) {
        let file = &fixture.file;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(file), &fixture.text).unwrap();
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
        problems.extend(fixture.problems(&message));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
