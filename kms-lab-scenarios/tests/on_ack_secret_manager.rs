//! The secret-sync scenarios on the seed's own controller, ack-secret-manager (built from
//! `../shared/thirdparty/ack-secret-manager`, run as `kms-lab scenarios --secret-sync
//! ack-secret-manager` runs it), on the real apiserver and the mock KMS's `aliyun` dialect.
//!
//! `secret-sync` passes on it, its Ready steps reported as not observed (it writes no status).
//! `secret-sync-failures` does not: ack-secret-manager takes the keys out of its Secret when a
//! read of the store fails (README, "Side by side with the real ack-secret-manager"). This test
//! holds that finding to what the lab reports, so a change on either side is noticed: if it
//! fails because ack-secret-manager now keeps the Secret, update the README's table and this test.
//!
//! Without the third-party folder the test says where it looked and passes only if
//! `KMS_LAB_REQUIRE_THIRDPARTY` is unset.

use std::path::Path;

use kms_lab_provision::{GoRecipe, ProvisionOptions};
use kms_lab_scenarios::load;
use kms_lab_scenarios::runner::{self, RunOptions, ScenarioOutcome};
use kms_lab_scenarios::steps::sync::SyncController;

async fn run_on_theirs(name: &str) -> ScenarioOutcome {
    let file = kms_lab_scenarios::runner::repository_scenario_dir().join(format!("{name}.yaml"));
    let scenario = load::load_file(&file).unwrap_or_else(|e| panic!("{e}"));
    let binaries = tokio::task::spawn_blocking(|| kms_lab_provision::provision(&ProvisionOptions::default())).await.unwrap();
    let options = RunOptions {
        binaries: binaries.expect("kube-apiserver and etcd are provisioned"),
        run_root: Path::new(env!("CARGO_TARGET_TMPDIR")).join("kms-lab-runs"),
        seed: None,
        keep_logs: false,
        plugin: None,
        secret_sync: Some(SyncController::AckSecretManager),
    };
    let outcome = runner::run_scenario(&scenario, &options, &|line| eprintln!("[{name}] {line}")).await;
    assert_eq!(outcome.components.get("secret_sync").map(String::as_str), Some("ack-secret-manager"), "the report names the controller");
    outcome
}

/// The labels of the steps reported as not observed.
fn not_observed(outcome: &ScenarioOutcome) -> Vec<&str> {
    outcome.steps.iter().filter(|s| s.not_observed.is_some()).map(|s| s.label.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_sync_passes_on_ack_secret_manager_and_its_ready_steps_are_not_observed() {
    if kms_lab_provision::thirdparty_source_or_skip(&GoRecipe::ack_secret_manager()).is_none() {
        return;
    }
    let outcome = run_on_theirs("secret-sync").await;
    assert!(outcome.passed, "secret-sync failed on ack-secret-manager: {:?}", outcome.failure);
    let unseen = not_observed(&outcome);
    assert!(!unseen.is_empty() && unseen.iter().all(|label| label.contains("ExternalSecret `app` Ready=")), "{unseen:?}");
    // Everything else ran: the syncs, the new version, --disable-polling across two restarts.
    let ran = outcome.steps.iter().filter(|s| s.not_observed.is_none()).count();
    assert_eq!(ran + unseen.len(), outcome.steps.len());
    assert!(outcome.steps.iter().any(|s| s.label.contains("restart the secret sync controller with --disable-polling") && s.passed));
    assert!(outcome.figures.contains_key("sync.delay_s"), "{:?}", outcome.figures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_secret_manager_loses_its_secret_in_a_store_outage() {
    if kms_lab_provision::thirdparty_source_or_skip(&GoRecipe::ack_secret_manager()).is_none() {
        return;
    }
    let outcome = run_on_theirs("secret-sync-failures").await;
    assert!(!outcome.passed, "ack-secret-manager kept its Secret through every store failure: update the README's side-by-side table");
    let failed = outcome.steps.iter().find(|s| !s.passed).expect("a failed step");
    assert!(
        failed.label.starts_with("expect for 5s: Secret `app` key `password` holds the latest value"),
        "the first failure is no longer the outage's: {failed:?}"
    );
    assert!(failed.detail.contains("has no key `password`"), "{failed:?}");
    // Before it: the Secret was synced, and the outage began.
    assert!(outcome.steps.iter().any(|s| s.label.contains("mock KMS faults") && s.passed));
    assert!(outcome.steps.iter().filter(|s| s.label.starts_with("wait ≤ 1m until Secret `app` key `password`")).all(|s| s.passed));
}
