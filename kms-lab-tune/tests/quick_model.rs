//! `kms-lab tune --quick --model --out DIR` (through the library's CLI entry): the three files
//! appear, the table and plot carry every profile, and the same seed gives the same numbers.

use clap::Parser;
use kms_lab_tune::cli::{TuneArgs, run};

#[derive(Parser)]
struct Harness {
    #[command(flatten)]
    args: TuneArgs,
}

fn args(out: &std::path::Path) -> TuneArgs {
    Harness::try_parse_from(["tune", "--quick", "--model", "--out", &out.display().to_string()]).unwrap().args
}

#[tokio::test]
async fn quick_model_run_writes_markdown_csv_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(&args(dir.path())).await.unwrap();
    let result = outcome.result.expect("a sweep result");
    for name in ["tune.md", "tune.csv", "tune.svg"] {
        let path = dir.path().join(name);
        assert!(path.is_file() && std::fs::metadata(&path).unwrap().len() > 100, "{name} missing or empty");
    }
    let markdown = std::fs::read_to_string(dir.path().join("tune.md")).unwrap();
    for profile in ["same-region", "cross-region", "throttled", "flaky"] {
        assert!(markdown.contains(&format!("| {profile} | `cachesize:")), "no recommendation row for {profile}:\n{markdown}");
    }
    let csv = std::fs::read_to_string(dir.path().join("tune.csv")).unwrap();
    assert_eq!(csv.lines().count(), result.points.len() + 1);
    let svg = std::fs::read_to_string(dir.path().join("tune.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("hit rate") && svg.contains("throttled"), "{}", &svg[..svg.len().min(300)]);

    // Seeded: a second run gives the same table.
    let again = tempfile::tempdir().unwrap();
    run(&args(again.path())).await.unwrap();
    assert_eq!(std::fs::read_to_string(again.path().join("tune.csv")).unwrap(), csv);
}

#[test]
fn the_throttled_profile_wants_a_cache_that_holds_every_dek() {
    // On the built-in calibration: with a 20/s quota, a v1 cache below the Secret count fails
    // lists; the recommendation holds every Secret's DEK.
    let profiles = vec![kms_lab_tune::Profile::load("throttled").unwrap()];
    let options = kms_lab_tune::TuneOptions::new(profiles, 200, 800, true);
    let calibration = kms_lab_tune::Calibration::builtin().unwrap();
    let result = kms_lab_tune::run_model(&options, &calibration, &indicatif::ProgressBar::hidden());
    let v1 = result.recommendations.iter().find(|r| r.api == kms_lab_tune::Api::V1).unwrap();
    assert!(v1.cachesize.unwrap() >= 200, "{v1:?}");
}
