//! Calibration on real plugins nobody in kms-lab wrote (`../shared/thirdparty`, located or built
//! by `kms_lab_stack::provision::locate_go_subject`), each against a local emulator of its
//! remote KMS on loopback: a correct plugin must exit 0 (no FAIL); its warnings are listed.
//! Each run prints its plugin × check × level table (`--nocapture` shows it).
//!
//! Needs `moto[server]` 5.2.5 and boto3 (`pip install 'moto[server]==5.2.5' boto3`): a missing
//! one fails the test with that command, never skips it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kms_lab_conformance::process::{PluginProcess, short_run_dir};
use kms_lab_conformance::{Api, CheckOutcome, Options, Report, render_text};
use kms_lab_stack::process::Supervised;
use kms_lab_stack::provision::{GoSubject, ProvisionOptions, locate_go_subject};

const READY: Duration = Duration::from_secs(60);
const INSTALL_MOTO: &str = "pip install 'moto[server]==5.2.5' boto3";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free loopback port").local_addr().expect("its address").port()
}

fn locate(subject: GoSubject) -> PathBuf {
    locate_go_subject(subject, &ProvisionOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// `moto_server` on a free loopback port, with one symmetric KMS key; stopped when dropped.
struct Moto {
    process: Option<Supervised>,
    endpoint: String,
    key_arn: String,
}

impl Moto {
    async fn start(dir: &Path) -> Self {
        let program = which("moto_server").unwrap_or_else(|| panic!("`moto_server` is not on PATH: install it with `{INSTALL_MOTO}`"));
        let port = free_port();
        let log = dir.join("moto.log");
        let args = ["-H".to_owned(), "127.0.0.1".to_owned(), "-p".to_owned(), port.to_string()];
        let mut process = Supervised::spawn("moto", &program, &args, &log, &[]).unwrap_or_else(|e| panic!("{e}"));
        let addr = format!("127.0.0.1:{port}");
        process
            .wait_ready(&format!("moto accepting connections on {addr}"), READY, || {
                let addr = addr.clone();
                async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let endpoint = format!("http://{addr}");
        let script = format!(
            "import boto3\nkms = boto3.client('kms', endpoint_url='{endpoint}', region_name='us-east-1', \
             aws_access_key_id='test', aws_secret_access_key='test')\nprint(kms.create_key()['KeyMetadata']['Arn'])"
        );
        let out = Command::new("python3").args(["-c", &script]).output().expect("python3 runs");
        assert!(
            out.status.success(),
            "CreateKey on moto failed (is boto3 installed? `{INSTALL_MOTO}`): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key_arn = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Self { process: Some(process), endpoint, key_arn }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Supervised kills its child when dropped (kill_on_drop).
        drop(self.process.take());
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file())
}

fn aws_env(command: &mut Command) {
    command.env("AWS_ACCESS_KEY_ID", "test").env("AWS_SECRET_ACCESS_KEY", "test").env("AWS_REGION", "us-east-1");
}

async fn conformance(endpoint: String, api: Api) -> Report {
    let mut options = Options::new(endpoint, api);
    // A remote KMS behind every call: the apiserver's own 3 s deadline, fewer load callers.
    options.concurrency = 8;
    options.round_trips_per_caller = 4;
    kms_lab_conformance::run(&options).await.expect("the suite runs")
}

/// `plugin  check  LEVEL` for every check that did not pass, then the verdict.
fn table(plugin: &str, report: &Report) -> String {
    let mut out = String::new();
    for check in &report.checks {
        let level = match &check.outcome {
            CheckOutcome::Pass => continue,
            CheckOutcome::Fail(_) => "FAIL",
            CheckOutcome::Warn(_) => "WARN",
            CheckOutcome::Skip { .. } => "SKIP",
        };
        out.push_str(&format!("| {plugin} | {} | {level} |\n", check.id));
    }
    out.push_str(&format!("| {plugin} | (exit) | {} |\n", if report.passed() { "0" } else { "1" }));
    out
}

fn judge(plugin: &str, report: &Report, log: &str) {
    let text = render_text(report);
    println!("{text}\n{}", table(plugin, report));
    assert!(report.passed(), "{plugin} is a working plugin, yet conformance FAILs it:\n{text}\nits log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_encryption_provider_against_moto_passes_v2_and_v1beta1() {
    let binary = tokio::task::spawn_blocking(|| locate(GoSubject::AwsEncryptionProvider)).await.expect("locator");
    let dir = short_run_dir().expect("run dir");
    let moto = Moto::start(dir.path()).await;
    let socket = dir.path().join("aws.sock");
    let mut command = Command::new(&binary);
    command
        .arg(format!("--key={}", moto.key_arn))
        .arg(format!("--kms-endpoint={}", moto.endpoint))
        .arg("--region=us-east-1")
        .arg(format!("--listen={}", socket.display()))
        .arg(format!("--health-port=127.0.0.1:{}", free_port()));
    aws_env(&mut command);
    for api in [Api::V2, Api::V1beta1] {
        let plugin = PluginProcess::start(
            "aws-encryption-provider",
            command_clone(&command),
            &socket,
            &dir.path().join(format!("aws-{api}.log")),
            api,
            READY,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let report = conformance(plugin.endpoint(), api).await;
        judge(&format!("aws-encryption-provider ({api})"), &report, &plugin.log_tail());
        drop(plugin);
    }
    drop(moto);
}

/// `Command` is not `Clone`: the same program, arguments and environment again.
fn command_clone(command: &Command) -> Command {
    let mut copy = Command::new(command.get_program());
    copy.args(command.get_args());
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            copy.env(key, value);
        }
    }
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trousseau_with_its_awskms_provider_against_moto_passes_v1beta1() {
    let (core, provider) =
        tokio::task::spawn_blocking(|| (locate(GoSubject::Trousseau), locate(GoSubject::TrousseauAwsKms))).await.expect("locator");
    let dir = short_run_dir().expect("run dir");
    let moto = Moto::start(dir.path()).await;
    let sockets = dir.path().join("sockets");
    std::fs::create_dir_all(sockets.join("awskms")).expect("socket dir");
    let config = dir.path().join("awskms.yaml");
    std::fs::write(&config, format!("profile: default\nkeyArn: {}\nendpoint: {}\n", moto.key_arn, moto.endpoint)).expect("config");
    let credentials = dir.path().join("credentials");
    std::fs::write(&credentials, "[default]\naws_access_key_id = test\naws_secret_access_key = test\nregion = us-east-1\n")
        .expect("credentials");

    let provider_log = dir.path().join("awskms.log");
    let args = vec![
        format!("--config-file-path={}", config.display()),
        format!("--listen-addr=unix://{}/awskms/awskms.socket", sockets.display()),
    ];
    let envs =
        [("AWS_SHARED_CREDENTIALS_FILE".to_owned(), credentials.display().to_string()), ("AWS_REGION".to_owned(), "us-east-1".to_owned())];
    let mut provider_process =
        Supervised::spawn("trousseau-awskms", &provider, &args, &provider_log, &envs).unwrap_or_else(|e| panic!("{e}"));
    let provider_socket = sockets.join("awskms/awskms.socket");
    provider_process
        .wait_ready(&format!("the awskms provider's socket {}", provider_socket.display()), READY, || {
            let socket = provider_socket.clone();
            async move { tokio::net::UnixStream::connect(socket).await.is_ok() }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", kms_lab_stack::process::tail(&provider_log, 30)));

    let socket = dir.path().join("trousseau.sock");
    let mut command = Command::new(&core);
    command
        .arg("--enabled-providers=awskms")
        .arg(format!("--socket-location={}", sockets.display()))
        .arg(format!("--listen-addr=unix://{}", socket.display()))
        .arg(format!("--healthz-port={}", free_port()))
        .arg(format!("--metrics-addr={}", free_port()));
    let plugin = PluginProcess::start("trousseau", command, &socket, &dir.path().join("trousseau.log"), Api::V1beta1, READY)
        .await
        .unwrap_or_else(|e| panic!("{e}\nprovider log:\n{}", kms_lab_stack::process::tail(&provider_log, 30)));
    let report = conformance(plugin.endpoint(), Api::V1beta1).await;
    judge("trousseau + awskms (v1beta1)", &report, &plugin.log_tail());
    drop(plugin);
    drop(provider_process);
    drop(moto);
}

/// The negative control: trousseau with its `debug` provider, which stores the DEK in base64
/// ("no encryption"). Before the readable-DEK checks it failed only as deterministic (now advice);
/// now the readable DEK is a FAIL, with the attack named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trousseau_with_its_debug_provider_fails_for_a_readable_dek() {
    let (core, provider) =
        tokio::task::spawn_blocking(|| (locate(GoSubject::Trousseau), locate(GoSubject::TrousseauDebug))).await.expect("locator");
    let dir = short_run_dir().expect("run dir");
    let sockets = dir.path().join("sockets");
    std::fs::create_dir_all(sockets.join("debug")).expect("socket dir");
    let provider_log = dir.path().join("debug.log");
    let provider_socket = sockets.join("debug/debug.socket");
    let args = vec![format!("--listen-addr=unix://{}", provider_socket.display())];
    let mut provider_process = Supervised::spawn("trousseau-debug", &provider, &args, &provider_log, &[]).unwrap_or_else(|e| panic!("{e}"));
    provider_process
        .wait_ready(&format!("the debug provider's socket {}", provider_socket.display()), READY, || {
            let socket = provider_socket.clone();
            async move { tokio::net::UnixStream::connect(socket).await.is_ok() }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", kms_lab_stack::process::tail(&provider_log, 30)));
    let socket = dir.path().join("trousseau.sock");
    let mut command = Command::new(&core);
    command
        .arg("--enabled-providers=debug")
        .arg(format!("--socket-location={}", sockets.display()))
        .arg(format!("--listen-addr=unix://{}", socket.display()))
        .arg(format!("--healthz-port={}", free_port()))
        .arg(format!("--metrics-addr={}", free_port()));
    let plugin = PluginProcess::start("trousseau (debug)", command, &socket, &dir.path().join("trousseau.log"), Api::V1beta1, READY)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let report = conformance(plugin.endpoint(), Api::V1beta1).await;
    let text = render_text(&report);
    println!("{text}\n{}", table("trousseau + debug (v1beta1)", &report));
    assert!(!report.passed(), "{text}");
    assert!(report.failed_ids().contains(&"v1beta1.encrypt.dek-not-readable"), "{text}");
    let finding = report.check("v1beta1.encrypt.dek-not-readable").and_then(|c| c.finding()).expect("a finding");
    assert!(finding.problem.contains("base64") && finding.problem.contains("whoever reads etcd"), "{text}");
    drop(plugin);
    drop(provider_process);
}
