//! Calibration on real plugins nobody in kms-lab wrote (`../shared/thirdparty`, located or built
//! by `kms_lab_provision::locate_go_subject`), each against a local emulator of its
//! remote KMS on loopback: a correct plugin must exit 0 (no FAIL); its warnings are listed.
//! Each run prints its plugin × check × level table (`--nocapture` shows it).
//!
//! The AWS plugins need `moto[server]` 5.2.5 and boto3 (`pip install 'moto[server]==5.2.5' boto3`):
//! a missing one fails the test with that command, never skips it. k8s-cloudkms-plugin runs against
//! the mock KMS's Cloud KMS dialect in process (its v2 rotate command runs `python3`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kms_lab_conformance::{Api, CheckOutcome, Options, Report, render_text};
use kms_lab_provision::{GoSubject, ProvisionOptions, locate_go_subject};
use kms_lab_stack::process::Supervised;
use kms_lab_stack::standalone::{PluginCommand, StandalonePlugin, short_run_dir};

const READY: Duration = Duration::from_secs(60);
/// SIGTERM to SIGKILL for a plugin under test.
const STOP_GRACE: Duration = Duration::from_secs(3);
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

fn aws_env(command: &mut PluginCommand) {
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
    let mut command = PluginCommand::new(&binary);
    command
        .arg(format!("--key={}", moto.key_arn))
        .arg(format!("--kms-endpoint={}", moto.endpoint))
        .arg("--region=us-east-1")
        .arg(format!("--listen={}", socket.display()))
        .arg(format!("--health-port=127.0.0.1:{}", free_port()));
    aws_env(&mut command);
    for api in [Api::V2, Api::V1beta1] {
        let log = dir.path().join(format!("aws-{api}.log"));
        let plugin =
            StandalonePlugin::start("aws-encryption-provider", &command, &socket, &log, READY).await.unwrap_or_else(|e| panic!("{e}"));
        let report = conformance(plugin.endpoint(), api).await;
        judge(&format!("aws-encryption-provider ({api})"), &report, &plugin.log_tail());
        plugin.stop(STOP_GRACE).await;
    }
    drop(moto);
}

/// trousseau's `name` provider (`provider` with `args` and `envs`, listening on
/// `dir/sockets/NAME/NAME.socket`), ready, and its core with that provider enabled on
/// `dir/trousseau.sock` (v1beta1), ready.
async fn start_trousseau(
    dir: &Path,
    core: &Path,
    name: &str,
    provider: &Path,
    mut args: Vec<String>,
    envs: &[(String, String)],
) -> (Supervised, StandalonePlugin) {
    let sockets = dir.join("sockets");
    std::fs::create_dir_all(sockets.join(name)).expect("socket dir");
    let provider_log = dir.join(format!("{name}.log"));
    let provider_socket = sockets.join(format!("{name}/{name}.socket"));
    args.push(format!("--listen-addr=unix://{}", provider_socket.display()));
    let mut provider_process =
        Supervised::spawn(&format!("trousseau-{name}"), provider, &args, &provider_log, envs).unwrap_or_else(|e| panic!("{e}"));
    provider_process
        .wait_ready(&format!("the {name} provider's socket {}", provider_socket.display()), READY, || {
            let socket = provider_socket.clone();
            async move { tokio::net::UnixStream::connect(socket).await.is_ok() }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", kms_lab_stack::process::tail(&provider_log, 30)));
    let socket = dir.join("trousseau.sock");
    let mut command = PluginCommand::new(core);
    command
        .arg(format!("--enabled-providers={name}"))
        .arg(format!("--socket-location={}", sockets.display()))
        .arg(format!("--listen-addr=unix://{}", socket.display()))
        .arg(format!("--healthz-port={}", free_port()))
        .arg(format!("--metrics-addr={}", free_port()));
    let plugin = StandalonePlugin::start(&format!("trousseau ({name})"), &command, &socket, &dir.join("trousseau.log"), READY)
        .await
        .unwrap_or_else(|e| panic!("{e}\nprovider log:\n{}", kms_lab_stack::process::tail(&provider_log, 30)));
    (provider_process, plugin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trousseau_with_its_awskms_provider_against_moto_passes_v1beta1() {
    let (core, provider) =
        tokio::task::spawn_blocking(|| (locate(GoSubject::Trousseau), locate(GoSubject::TrousseauAwsKms))).await.expect("locator");
    let dir = short_run_dir().expect("run dir");
    let moto = Moto::start(dir.path()).await;
    let config = dir.path().join("awskms.yaml");
    std::fs::write(&config, format!("profile: default\nkeyArn: {}\nendpoint: {}\n", moto.key_arn, moto.endpoint)).expect("config");
    let credentials = dir.path().join("credentials");
    std::fs::write(&credentials, "[default]\naws_access_key_id = test\naws_secret_access_key = test\nregion = us-east-1\n")
        .expect("credentials");
    let args = vec![format!("--config-file-path={}", config.display())];
    let envs =
        [("AWS_SHARED_CREDENTIALS_FILE".to_owned(), credentials.display().to_string()), ("AWS_REGION".to_owned(), "us-east-1".to_owned())];
    let (provider_process, plugin) = start_trousseau(dir.path(), &core, "awskms", &provider, args, &envs).await;
    let report = conformance(plugin.endpoint(), Api::V1beta1).await;
    judge("trousseau + awskms (v1beta1)", &report, &plugin.log_tail());
    plugin.stop(STOP_GRACE).await;
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
    let (provider_process, plugin) = start_trousseau(dir.path(), &core, "debug", &provider, Vec::new(), &[]).await;
    let report = conformance(plugin.endpoint(), Api::V1beta1).await;
    let text = render_text(&report);
    println!("{text}\n{}", table("trousseau + debug (v1beta1)", &report));
    assert!(!report.passed(), "{text}");
    assert!(report.failed_ids().contains(&"v1beta1.encrypt.dek-not-readable"), "{text}");
    let finding = report.check("v1beta1.encrypt.dek-not-readable").and_then(|c| c.finding()).expect("a finding");
    assert!(finding.problem.contains("base64") && finding.problem.contains("whoever reads etcd"), "{text}");
    plugin.stop(STOP_GRACE).await;
    drop(provider_process);
}

// ---------------------------------------------------------------------------------------------
// k8s-cloudkms-plugin (GKE's) on the mock KMS's Cloud KMS dialect, in the plugin's own
// `--integration-test --fake-kms-port P` mode: plain HTTP to localhost:P, no Google auth.
// ---------------------------------------------------------------------------------------------

/// The key the plugin uses; any project, location and key ring name the mock's `lab-key`.
const GCP_KEY: &str = "projects/kms-lab/locations/global/keyRings/lab/cryptoKeys/lab-key";

/// The mock KMS in process, speaking Cloud KMS REST on a loopback port, with `lab-key`.
async fn gcp_mock_kms() -> mock_kms::MockKms {
    mock_kms::MockKms::builder()
        .dialect(mock_kms::dialects::Dialect::Gcp)
        .listen("127.0.0.1:0".parse().expect("an address"))
        .key("lab-key")
        .seed(13)
        .start()
        .await
        .unwrap_or_else(|e| panic!("the mock KMS starts: {e}"))
}

/// k8s-cloudkms-plugin on `socket`, `--kms v2` or `v1`, against the mock KMS on `kms_port`; its
/// healthz on `healthz_port` (glog to stderr, so nothing is left in /tmp).
fn cloudkms_command(binary: &Path, kms_port: u16, socket: &Path, kms: &str, healthz_port: u16) -> PluginCommand {
    let mut command = PluginCommand::new(binary);
    command
        .arg("--integration-test")
        .arg(format!("--fake-kms-port={kms_port}"))
        .arg(format!("--key-uri={GCP_KEY}"))
        .arg(format!("--path-to-unix-socket={}", socket.display()))
        .arg(format!("--kms={kms}"))
        .arg(format!("--healthz-port={healthz_port}"))
        .arg(format!("--metrics-port={}", free_port()))
        .arg("--logtostderr");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_cloudkms_plugin_on_the_gcp_dialect_passes_v2_and_v1beta1() {
    let binary = tokio::task::spawn_blocking(|| locate(GoSubject::CloudKmsPlugin)).await.expect("locator");
    let dir = short_run_dir().expect("run dir");
    let kms = gcp_mock_kms().await;
    let port = kms.addr().port();
    for (api, flag) in [(Api::V2, "v2"), (Api::V1beta1, "v1")] {
        let socket = dir.path().join(format!("gcp-{flag}.sock"));
        let command = cloudkms_command(&binary, port, &socket, flag, free_port());
        let log = dir.path().join(format!("cloudkms-{flag}.log"));
        let plugin = StandalonePlugin::start("k8s-cloudkms-plugin", &command, &socket, &log, READY).await.unwrap_or_else(|e| panic!("{e}"));
        let mut options = Options::new(plugin.endpoint(), api);
        options.concurrency = 8;
        options.round_trips_per_caller = 4;
        // Rotation as a Cloud KMS operator would see it: a new primary version (the admin API
        // adds one and makes it primary); the plugin's Status reports the new version's name.
        // (python3 is there for moto; urlopen fails the command on a non-2xx answer.)
        options.rotate_command = Some(format!(
            "python3 -c \"import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:{port}/admin/keys/lab-key/rotate', method='POST'))\""
        ));
        options.rotate_wait = Duration::from_secs(20);
        let report = kms_lab_conformance::run(&options).await.expect("the suite runs");
        judge(&format!("k8s-cloudkms-plugin ({api})"), &report, &plugin.log_tail());
        plugin.stop(STOP_GRACE).await;
    }
    // Every plugin call reached the mock KMS as a Cloud KMS operation.
    let records = kms.audit().records();
    assert!(
        records.iter().any(|r| r.dialect.name() == "gcp" && r.operation == "Encrypt" && r.outcome.name() == "Ok"),
        "no GCP Encrypt in the audit log"
    );
    assert!(
        records.iter().any(|r| r.dialect.name() == "gcp" && r.operation == "Decrypt" && r.outcome.name() == "Ok"),
        "no GCP Decrypt in the audit log"
    );
    kms.shutdown().await;
}

/// `METHOD http://127.0.0.1:port/path` with a JSON `body`: the status code and body (HTTP/1.0,
/// the connection closes).
async fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("the HTTP server listens");
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("request sent");
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_string(&mut text)).await.expect("an answer").expect("readable");
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
}

/// What the plugin answers to one v2 call: `ok`, or the gRPC code and message.
fn outcome<T>(result: &Result<tonic::Response<T>, tonic::Status>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_cloudkms_plugin_under_kms_faults() {
    use kms_wire::proto::v2;
    use mock_kms::Outcome;
    use mock_kms::api::faults::{DenyFault, FaultProfile, ThrottleFault};
    use mock_kms::api::{Action, ErrorCode};

    let binary = tokio::task::spawn_blocking(|| locate(GoSubject::CloudKmsPlugin)).await.expect("locator");
    let dir = short_run_dir().expect("run dir");
    let kms = gcp_mock_kms().await;
    let socket = dir.path().join("gcp.sock");
    let healthz = free_port();
    let command = cloudkms_command(&binary, kms.addr().port(), &socket, "v2", healthz);
    let plugin = StandalonePlugin::start("k8s-cloudkms-plugin", &command, &socket, &dir.path().join("cloudkms.log"), READY)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = kms_wire::PluginClient::connect(&plugin.endpoint(), Duration::from_secs(10)).await.expect("the plugin's socket");
    let v1 = format!("{GCP_KEY}/cryptoKeyVersions/1");
    let encrypt = || async { client.v2().encrypt(v2::EncryptRequest { plaintext: vec![7u8; 32].into(), uid: "fault-test".into() }).await };
    let decrypt = |ciphertext: bytes::Bytes, key_id: String| async {
        let request = v2::DecryptRequest { ciphertext, uid: "fault-test".into(), key_id, ..Default::default() };
        client.v2().decrypt(request).await
    };
    let status = || async { client.v2().status(v2::StatusRequest {}).await.expect("Status answers").into_inner() };

    // Healthy: a v2 round trip under version 1; Status and /healthz (TestIamPermissions) are ok.
    let sealed = encrypt().await.expect("Encrypt").into_inner();
    assert_eq!(sealed.key_id, v1);
    let opened = decrypt(sealed.ciphertext.clone(), sealed.key_id.clone()).await.expect("Decrypt").into_inner();
    assert_eq!(opened.plaintext.as_ref(), &[7u8; 32]);
    assert_eq!((status().await.healthz.as_str(), status().await.key_id), ("ok", v1.clone()));
    assert_eq!(http(healthz, "GET", "/healthz", "").await.0, 200);

    // Decrypt denied: Decrypt fails with gRPC Unknown carrying Google's 403 (no retry), Encrypt
    // and Status stay ok, and the plugin's /healthz turns 403: TestIamPermissions lacks useToDecrypt.
    kms.set_faults(FaultProfile { deny: Some(DenyFault { actions: Some(vec![Action::Decrypt]) }), ..Default::default() }).unwrap();
    let denied = outcome(&decrypt(sealed.ciphertext.clone(), sealed.key_id.clone()).await);
    assert!(denied.starts_with("Unknown: googleapi: Error 403: Permission 'cloudkms.cryptoKeyVersions.useToDecrypt' denied"), "{denied}");
    assert_eq!(outcome(&encrypt().await), "ok");
    assert_eq!(status().await.healthz, "ok");
    let (code, body) = http(healthz, "GET", "/healthz", "").await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("cloudkms.cryptoKeyVersions.useToDecrypt"), "{body}");
    assert_eq!(
        kms.audit().count("lab-key", Action::Decrypt, Outcome::Refused(ErrorCode::Forbidden)),
        1,
        "one denied Decrypt reached the KMS: the plugin does not retry"
    );

    // Throttling: Encrypt fails at once with Google's 429 (the client does not retry it).
    let throttle = ThrottleFault { per_second: 0.001, burst: Some(1.0), actions: Some(vec![Action::Encrypt]) };
    kms.set_faults(FaultProfile { throttle: Some(throttle), ..Default::default() }).unwrap();
    assert_eq!(outcome(&encrypt().await), "ok");
    let throttled = outcome(&encrypt().await);
    assert!(throttled.starts_with("Unknown: googleapi: Error 429: Quota exceeded"), "{throttled}");
    assert!(throttled.contains("rateLimitExceeded"), "{throttled}");
    assert_eq!(
        kms.audit().count("lab-key", Action::Encrypt, Outcome::Refused(ErrorCode::Throttling)),
        1,
        "the throttled Encrypt was sent once"
    );
    kms.clear_faults();

    // Key version disabled (Cloud KMS's own operation, PATCH state=DISABLED): Encrypt and Decrypt
    // fail with FAILED_PRECONDITION; Status turns "not reachable" but keeps the last key id, so
    // the apiserver does not start a key migration; enabled again, all is well.
    let kms_port = kms.addr().port();
    let set_state = |state: &'static str| {
        let path = format!("/v1/{v1}?updateMask=state");
        async move { http(kms_port, "PATCH", &path, &format!("{{\"state\": \"{state}\"}}")).await }
    };
    let (code, body) = set_state("DISABLED").await;
    assert_eq!(code, 200, "PATCH state DISABLED: {body}");
    let refused = outcome(&encrypt().await);
    assert!(refused.contains("Error 400") && refused.contains("is not enabled, current state is: DISABLED."), "{refused}");
    let refused = outcome(&decrypt(sealed.ciphertext.clone(), sealed.key_id.clone()).await);
    assert!(refused.contains("failedPrecondition"), "{refused}");
    let during = status().await;
    assert_eq!((during.healthz.as_str(), during.key_id), ("Cloud KMS key is not reachable", v1.clone()));
    assert_eq!(set_state("ENABLED").await.0, 200);
    assert_eq!(outcome(&decrypt(sealed.ciphertext.clone(), sealed.key_id.clone()).await), "ok");

    // KMS outage (the listener closes, open connections drop): Encrypt fails with gRPC Unknown
    // (connection refused, or reset if the plugin's pooled connection was cut under it; the Go
    // client does not retry a POST); Status reports "not reachable" and keeps the last key id;
    // back when the outage ends.
    kms.set_faults(FaultProfile::from_yaml("outage: {}").unwrap()).unwrap();
    let deadline = std::time::Instant::now() + READY;
    while tokio::net::TcpStream::connect(("127.0.0.1", kms_port)).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "the mock KMS still accepts connections {READY:?} into its outage");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let down = outcome(&encrypt().await);
    let cut = down.contains("connection refused") || down.contains("connection reset by peer");
    assert!(down.starts_with("Unknown: ") && cut, "{down}");
    let during = status().await;
    assert_eq!((during.healthz.as_str(), during.key_id), ("Cloud KMS key is not reachable", v1.clone()));
    kms.clear_faults();
    assert_eq!(outcome(&decrypt(sealed.ciphertext.clone(), sealed.key_id.clone()).await), "ok");
    assert_eq!(status().await.healthz, "ok");

    plugin.stop(STOP_GRACE).await;
    kms.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// trousseau with its `vault` provider on the mock KMS's Vault Transit dialect (sealed start,
// Shamir 5/3 unsealed through Vault's own `PUT /v1/sys/unseal`).
// ---------------------------------------------------------------------------------------------

/// The token the mock KMS accepts and the provider sends.
const VAULT_TOKEN: &str = "s.kms-lab-trousseau-token";

/// The mock KMS in process, speaking Vault Transit on a loopback port, started sealed (Shamir
/// 5/3, state in `dir`), with `lab-key` once unsealed; and the five unseal shares.
async fn sealed_vault_mock_kms(dir: &Path) -> (mock_kms::MockKms, Vec<String>) {
    let shares = mock_kms::seal::init(dir, 5, 3).expect("mock-kms init").iter().map(|s| s.to_string()).collect();
    let kms = mock_kms::MockKms::builder()
        .dialect(mock_kms::dialects::Dialect::Vault)
        .vault_token(VAULT_TOKEN)
        .data_dir(dir)
        .sealed(true)
        .listen("127.0.0.1:0".parse().expect("an address"))
        .key("lab-key")
        .seed(17)
        .start()
        .await
        .unwrap_or_else(|e| panic!("the mock KMS starts: {e}"));
    (kms, shares)
}

/// trousseau's vault provider (on `sockets/vault/vault.socket`, against the Vault at `kms_port`
/// with [`VAULT_TOKEN`]) and its core on `dir/trousseau.sock`, v1beta1.
async fn trousseau_on_vault(dir: &Path, kms_port: u16) -> (Supervised, StandalonePlugin) {
    let (core, provider) =
        tokio::task::spawn_blocking(|| (locate(GoSubject::Trousseau), locate(GoSubject::TrousseauVault))).await.expect("locator");
    let config = dir.join("vault.yaml");
    std::fs::write(&config, format!("keyNames:\n  - lab-key\naddress: http://127.0.0.1:{kms_port}\ntoken: {VAULT_TOKEN}\n"))
        .expect("config");
    start_trousseau(dir, &core, "vault", &provider, vec![format!("--config-file-path={}", config.display())], &[]).await
}

/// trousseau's vault provider, configured with a token (`token:`), swallows every Vault error:
/// `withRefreshToken` returns `(result, nil)` whenever a token is configured, so a failed
/// encrypt is an empty ciphertext and a failed decrypt an empty plaintext, both answered as
/// success; the core then stores `vault:-:` + newline as the DEK's cipher. Every fault below
/// shows it; the conformance suite FAILs it for `decrypt.refuses-garbage`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trousseau_with_its_vault_provider_on_the_vault_dialect() {
    use kms_wire::proto::v1beta1;
    use mock_kms::api::Action;
    use mock_kms::api::faults::{DenyFault, FaultProfile, ThrottleFault};

    /// What trousseau's core answers when its vault provider answered an empty cipher.
    const EMPTY: &[u8] = b"vault:-:\n";

    let dir = short_run_dir().expect("run dir");
    let data = dir.path().join("kms");
    std::fs::create_dir_all(&data).expect("data dir");
    let (kms, shares) = sealed_vault_mock_kms(&data).await;
    let port = kms.addr().port();
    let (provider, plugin) = trousseau_on_vault(dir.path(), port).await;
    let client = kms_wire::PluginClient::connect(&plugin.endpoint(), Duration::from_secs(30)).await.expect("the plugin's socket");
    let dek = vec![7u8; 32];
    let encrypt = || async {
        let request = v1beta1::EncryptRequest { version: "v1beta1".into(), plain: dek.clone().into() };
        client.v1beta1().encrypt(request).await.map(|r| r.into_inner().cipher)
    };
    let decrypt = |cipher: bytes::Bytes| async {
        client.v1beta1().decrypt(v1beta1::DecryptRequest { version: "v1beta1".into(), cipher }).await.map(|r| r.into_inner().plain)
    };
    let count = |operation: &str, outcome: &str| {
        kms.audit()
            .records()
            .iter()
            .filter(|r| r.dialect.name() == "vault" && r.operation == operation && r.outcome.name() == outcome)
            .count()
    };

    // Sealed Vault: the provider's client tries 3 times (Vault's Go client retries a 503 twice),
    // then trousseau answers Encrypt with success and an empty cipher: the DEK is lost.
    let sealed = encrypt().await.expect("trousseau answers Encrypt while Vault is sealed");
    assert_eq!(sealed.as_ref(), EMPTY, "{:?}", String::from_utf8_lossy(&sealed));
    assert_eq!(count("transit/encrypt", "Sealed"), 3, "Vault's Go client sends a call 3 times against a sealed Vault");

    // Unsealed with 3 of the 5 shares through Vault's own API; trousseau recovers at once.
    let mut last = String::new();
    for share in &shares[..3] {
        let (code, body) = http(port, "PUT", "/v1/sys/unseal", &format!("{{\"key\": \"{share}\"}}")).await;
        assert_eq!(code, 200, "{body}");
        last = body;
    }
    assert!(last.contains("\"sealed\":false"), "{last}");
    let cipher = encrypt().await.expect("Encrypt after unseal");
    assert!(cipher.starts_with(b"vault:-:") && cipher.len() > 100, "{:?}", String::from_utf8_lossy(&cipher));
    assert_eq!(decrypt(cipher.clone()).await.expect("Decrypt after unseal").as_ref(), dek.as_slice());
    // What was "encrypted" while sealed "decrypts" to an empty DEK: lost for good.
    assert!(decrypt(sealed.clone()).await.expect("trousseau answers").is_empty());

    // The suite's verdict on a healthy Vault: FAIL, for the same swallowed errors.
    let report = conformance(plugin.endpoint(), Api::V1beta1).await;
    let text = render_text(&report);
    println!("{text}\n{}", table("trousseau + vault (v1beta1)", &report));
    assert_eq!(report.failed_ids(), ["v1beta1.decrypt.refuses-garbage"], "{text}");

    // Decrypt denied: one 403 reaches Vault; trousseau answers an empty plaintext as success.
    kms.set_faults(FaultProfile { deny: Some(DenyFault { actions: Some(vec![Action::Decrypt]) }), ..Default::default() }).unwrap();
    assert!(decrypt(cipher.clone()).await.expect("trousseau answers Decrypt while it is denied").is_empty());
    assert_eq!(count("transit/decrypt", "Forbidden"), 1, "a 403 is not retried");

    // Throttling (429): not retried; the throttled Encrypt is an empty cipher answered as success.
    let throttle = ThrottleFault { per_second: 0.001, burst: Some(1.0), actions: Some(vec![Action::Encrypt]) };
    kms.set_faults(FaultProfile { throttle: Some(throttle), ..Default::default() }).unwrap();
    assert_ne!(encrypt().await.expect("within the burst").as_ref(), EMPTY);
    assert_eq!(encrypt().await.expect("trousseau answers Encrypt while throttled").as_ref(), EMPTY);
    assert_eq!(count("transit/encrypt", "Throttling"), 1, "a 429 is not retried");

    // Outage (connection refused): the same empty cipher, after the client's retries.
    kms.set_faults(FaultProfile::from_yaml("outage: {}").unwrap()).unwrap();
    let deadline = std::time::Instant::now() + READY;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "the mock KMS still accepts connections {READY:?} into its outage");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(encrypt().await.expect("trousseau answers Encrypt during an outage").as_ref(), EMPTY);
    kms.clear_faults();
    let cipher = encrypt().await.expect("Encrypt after the outage");
    assert_eq!(decrypt(cipher).await.expect("Decrypt after the outage").as_ref(), dek.as_slice());

    plugin.stop(STOP_GRACE).await;
    drop(provider);
    kms.shutdown().await;
}
