//! Cross-check on code we did not write: a Go plugin on upstream's own server framework
//! (`k8s.io/kms/pkg/service`), located or built once into the kms-lab cache by the stack's locator.

use std::time::Duration;

use kms_lab_conformance::{Api, Options, render_text};
use kms_lab_provision::{GoSubject, ProvisionOptions, locate_go_subject};
use kms_lab_stack::standalone::{PluginCommand, StandalonePlugin, short_run_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_peer_on_upstream_framework_passes_v2_with_rotation() {
    let binary = locate_go_subject(GoSubject::GoPeer, &ProvisionOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let dir = short_run_dir().expect("run dir");
    let socket = dir.path().join("go.sock");
    let mut command = PluginCommand::new(&binary);
    command.arg("--socket").arg(&socket);
    let plugin = StandalonePlugin::start("kms-go-plugin", &command, &socket, &dir.path().join("go.log"), Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut options = Options::new(plugin.endpoint(), Api::V2);
    options.rotate_command = Some(format!("kill -HUP {}", plugin.pid().expect("running")));
    options.rotate_wait = Duration::from_secs(10);
    let report = kms_lab_conformance::run(&options).await.expect("the suite runs");
    let text = render_text(&report);
    println!("{text}");
    assert!(report.passed(), "the Go peer fails:\n{text}\nits log:\n{}", plugin.log_tail());
    assert!(report.checks.iter().all(|c| !matches!(c.outcome, kms_lab_conformance::CheckOutcome::Skip { .. })), "{text}");
    plugin.stop(Duration::from_secs(3)).await;
}
