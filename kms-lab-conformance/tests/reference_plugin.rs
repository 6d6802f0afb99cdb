//! Conformance passes kms-lab's reference plugin (the `kms-plugin` library, served in process
//! exactly as the binary serves it), in both APIs.

use std::time::{Duration, Instant};

use kms_lab_conformance::{Api, Options, render_text};
use kms_plugin::{ApiSelection, PluginConfig, config::KekConfig};

/// How long the in-process plugin may take to answer.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// The reference plugin serving both APIs on a socket in a short temp dir, until dropped.
struct InProcessPlugin {
    endpoint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl InProcessPlugin {
    async fn start() -> Self {
        let dir = kms_lab_stack::standalone::short_run_dir().expect("run dir under /tmp");
        let socket = dir.path().join("p.sock");
        let config = PluginConfig {
            socket: socket.clone(),
            api: ApiSelection::Both,
            kek: KekConfig::Local { kek_file: None },
            health_ttl: Duration::from_secs(10),
            metrics_addr: None,
        };
        let plugin = kms_plugin::Plugin::bind(config).expect("reference plugin binds its socket");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(plugin.serve(async move {
            let _ = stopped.await;
        }));
        let endpoint = format!("unix://{}", socket.display());
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(client) = kms_wire::PluginClient::connect(&endpoint, Duration::from_secs(1)).await
                && client.v2().status(kms_wire::proto::v2::StatusRequest {}).await.is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the in-process reference plugin gave no v2 Status answer on {endpoint} within {READY_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { endpoint, stop: Some(stop), _dir: dir }
    }
}

impl Drop for InProcessPlugin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_plugin_passes_v2_and_v1beta1() {
    let plugin = InProcessPlugin::start().await;
    for api in [Api::V2, Api::V1beta1] {
        let report = kms_lab_conformance::run(&Options::new(plugin.endpoint.clone(), api)).await.expect("the suite runs");
        let text = render_text(&report);
        assert!(report.passed(), "reference plugin fails {api}:\n{text}");
        // Without --rotate-command the rotation checks are skipped, and say why.
        if api == Api::V2 {
            let rotation = report.check("v2.rotation.key-id-changes").expect("rotation check is listed");
            assert!(text.contains("no --rotate-command given"), "{text}");
            assert!(matches!(rotation.outcome, kms_lab_conformance::CheckOutcome::Skip { .. }));
            assert!(report.check("v2.load.concurrent-round-trips").and_then(|c| c.latency.as_ref()).is_some_and(|l| l.encrypt.is_some()));
        }
        let junit = kms_lab_conformance::render_junit(&report);
        assert!(junit.contains("<testsuite") && !junit.contains("<failure"), "{junit}");
        let json = serde_json::to_value(&report).expect("the report serialises");
        assert_eq!(json["checks"][0]["outcome"], "pass", "{json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_and_skip_select_checks_and_unknown_ids_are_refused() {
    let plugin = InProcessPlugin::start().await;
    let mut options = Options::new(plugin.endpoint.clone(), Api::V2);
    options.only = vec!["v2.status.healthz".into(), "v2.decrypt.round-trip".into()];
    options.skip = vec!["v2.decrypt.round-trip".into()];
    let report = kms_lab_conformance::run(&options).await.expect("the suite runs");
    assert_eq!(report.checks.iter().map(|c| c.id).collect::<Vec<_>>(), ["v2.status.healthz"]);
    options.only = vec!["v2.status.helthz".into()];
    let message = kms_lab_conformance::run(&options).await.expect_err("unknown id").to_string();
    assert!(message.contains("`v2.status.helthz`") && message.contains("v2.status.healthz"), "{message}");
}

#[tokio::test]
async fn a_missing_plugin_is_an_error_naming_the_socket() {
    let dir = kms_lab_stack::standalone::short_run_dir().expect("run dir");
    let endpoint = format!("unix://{}/nothing.sock", dir.path().display());
    let message = kms_lab_conformance::run(&Options::new(endpoint.clone(), Api::V2)).await.expect_err("nothing listens").to_string();
    assert!(message.contains("nothing.sock"), "{message}");
}
