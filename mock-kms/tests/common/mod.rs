//! A tiny signed client for the mock KMS (built on `mock_kms::api::sign`), admin helpers, a
//! bounded wait, and a runner for the `mock-kms` binary.

#![allow(dead_code)]

pub mod probe;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mock_kms::api::{self, Action, ErrorBody, ErrorCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The bound on every wait for a condition.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// The deadline of one HTTP call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

pub const AK: &str = "AK-test";
pub const SK: &str = "SK-test-secret-never-logged";

/// A response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body does not parse ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn error(&self) -> ErrorBody {
        self.json()
    }

    /// Asserts the status and error code.
    pub fn expect_error(&self, code: ErrorCode) -> ErrorBody {
        let body = self.error();
        assert_eq!((self.status, body.code), (code.http_status(), code), "body: {}", String::from_utf8_lossy(&self.body));
        body
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Overrides for one signed request.
#[derive(Debug, Clone, Default)]
pub struct Sign {
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub timestamp_ms: Option<u64>,
    pub nonce: Option<String>,
}

static NONCE: AtomicU64 = AtomicU64::new(0);

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A client for one node.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub access_key: String,
    pub secret_key: String,
    http: HttpClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self::with_credential(base, AK, SK)
    }

    pub fn with_credential(base: &str, access_key: &str, secret_key: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // No pooling: a node in an outage drops its connections, and every test call should see
        // the node as it is now.
        let http = HttpClient::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector);
        Self { base: base.trim_end_matches('/').to_owned(), access_key: access_key.into(), secret_key: secret_key.into(), http }
    }

    async fn send(&self, request: http::Request<Full<Bytes>>) -> Result<Reply, String> {
        let response = tokio::time::timeout(CALL_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Reply { status, headers, body })
    }

    /// A signed `POST /v1/<action_name>`; `Err` on a transport failure (e.g. connection refused).
    pub async fn raw(&self, action_name: &str, body: Vec<u8>, sign: Sign) -> Result<Reply, String> {
        let path = format!("/v1/{action_name}");
        let timestamp = sign.timestamp_ms.unwrap_or_else(now_ms);
        let nonce = sign.nonce.unwrap_or_else(|| format!("n-{}-{}-{}", std::process::id(), now_ms(), NONCE.fetch_add(1, Ordering::SeqCst)));
        let secret = sign.secret_key.unwrap_or_else(|| self.secret_key.clone());
        let signature = api::sign(secret.as_bytes(), &api::canonical_request("POST", &path, timestamp, &nonce, &body));
        let request = http::Request::post(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(api::HEADER_ACCESS_KEY, sign.access_key.unwrap_or_else(|| self.access_key.clone()))
            .header(api::HEADER_TIMESTAMP, timestamp.to_string())
            .header(api::HEADER_NONCE, nonce)
            .header(api::HEADER_SIGNATURE, signature)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.send(request).await
    }

    pub async fn try_call(&self, action: Action, body: &impl Serialize) -> Result<Reply, String> {
        self.raw(action.name(), serde_json::to_vec(body).unwrap(), Sign::default()).await
    }

    pub async fn call(&self, action: Action, body: &impl Serialize) -> Reply {
        self.try_call(action, body).await.unwrap_or_else(|e| panic!("{action} to {}: {e}", self.base))
    }

    /// A call that must succeed, parsed.
    pub async fn ok<T: DeserializeOwned>(&self, action: Action, body: &impl Serialize) -> T {
        let reply = self.call(action, body).await;
        assert_eq!(reply.status, 200, "{action} failed: {}", reply.text());
        reply.json()
    }

    pub async fn create_key(&self, key_id: &str) -> api::KeyMetadata {
        self.ok::<api::KeyResponse>(Action::CreateKey, &api::CreateKeyRequest { key_id: key_id.into(), ..Default::default() })
            .await
            .key_metadata
    }

    pub async fn encrypt(&self, key_id: &str, plaintext: &[u8]) -> api::EncryptResponse {
        self.ok(Action::Encrypt, &encrypt_request(key_id, plaintext)).await
    }

    pub async fn decrypt(&self, blob: &str) -> Reply {
        self.call(Action::Decrypt, &api::DecryptRequest { ciphertext_blob: blob.into(), ..Default::default() }).await
    }

    /// Decrypts and returns the plaintext, asserting success.
    pub async fn decrypt_ok(&self, blob: &str) -> Vec<u8> {
        let reply = self.decrypt(blob).await;
        assert_eq!(reply.status, 200, "Decrypt on {} failed: {}", self.base, reply.text());
        B64.decode(reply.json::<api::DecryptResponse>().plaintext).unwrap()
    }

    pub async fn admin(&self, method: &str, path: &str, content_type: &str, body: impl Into<Bytes>) -> Reply {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(body.into()))
            .unwrap();
        self.send(request).await.unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", self.base))
    }

    pub async fn admin_json(&self, method: &str, path: &str, body: serde_json::Value) -> Reply {
        self.admin(method, path, "application/json", serde_json::to_vec(&body).unwrap()).await
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        self.admin("GET", path, "application/json", Bytes::new()).await
    }
}

pub fn encrypt_request(key_id: &str, plaintext: &[u8]) -> api::EncryptRequest {
    api::EncryptRequest { key_id: key_id.into(), plaintext: B64.encode(plaintext), ..Default::default() }
}

/// Polls `condition` until it holds, failing after [`DEADLINE`].
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if condition().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {DEADLINE:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a TCP connection to `addr` is refused now.
pub async fn refused(addr: &str) -> bool {
    let addr = addr.trim_start_matches("http://");
    matches!(tokio::net::TcpStream::connect(addr).await, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// A `mock-kms` process; killed (SIGKILL) when dropped.
pub struct KmsProcess {
    child: Option<Child>,
    pub urls: Vec<String>,
    pub log: std::path::PathBuf,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_mock-kms")
}

/// Runs `mock-kms args` to completion: (status, stdout, stderr).
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    let output = Command::new(binary()).args(args).stdin(Stdio::null()).env_remove("MOCK_KMS_SECRET_KEY").output().expect("mock-kms runs");
    (output.status, String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

impl KmsProcess {
    /// Starts `mock-kms args` and waits for `nodes` "listening" lines.
    pub fn start(dir: &Path, args: &[&str], nodes: usize) -> Self {
        let log = dir.join(format!("mock-kms-{}-{}.log", now_ms(), NONCE.fetch_add(1, Ordering::SeqCst)));
        let mut child = Command::new(binary())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("mock-kms starts");
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = Self { child: Some(child), urls: Vec::new(), log };
        let deadline = Instant::now() + DEADLINE;
        while process.urls.len() < nodes {
            let left = deadline.saturating_duration_since(Instant::now());
            match received.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("mock-kms listening on ") {
                        process.urls.push(url.to_owned());
                    }
                }
                Err(_) => {
                    panic!("mock-kms {args:?} did not print {nodes} listening line(s) within {DEADLINE:?}; log:\n{}", process.log_text())
                }
            }
        }
        process
    }

    pub fn url(&self) -> &str {
        &self.urls[0]
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill_9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub async fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on a child we spawned, with a valid signal number.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("mock-kms did not exit within {DEADLINE:?} of SIGTERM; log:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for KmsProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free loopback port (bound then released; fine on a test machine).
/// A mock KMS speaking `dialect`, with a native listener beside it, the test credential and
/// `lab-key`, seeded.
pub async fn dialect_kms(dialect: mock_kms::dialects::Dialect) -> mock_kms::MockKms {
    mock_kms::MockKms::builder()
        .dialect(dialect)
        .extra_listener(mock_kms::dialects::Dialect::Native, "127.0.0.1:0".parse().unwrap())
        .credential(mock_kms::Credential::new(AK, SK))
        .key("lab-key")
        .seed(15)
        .start()
        .await
        .unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
