//! Issue 28: the mock KMS under hostile clients. For every dialect a generator mutates a valid
//! Encrypt call (method, path, headers, body, encodings, sizes; signed after the mutation or
//! not) and sends a batch of such requests at once over raw TCP, so bytes no HTTP client library
//! would send reach the server. Every answer must be the dialect's JSON error shape (or a
//! success), never a dropped connection; a refusal the dialect recognised as a call (it answered
//! its request-id header) is in the audit log; no answer holds a credential; and afterwards the
//! server still answers the valid call.
//!
//! The six dialects: native, AWS, GCP, Vault, JD Cloud and Alibaba Cloud (each signed as its SDK
//! signs; JD Cloud's and Alibaba's through `mock_kms::api::sign`, the signers kms-plugin uses). A
//! new dialect is one more [`Subject`] in [`SUBJECTS`]. Cases: `DEFAULT_CASES` batches per
//! dialect (CI), more with `PROPTEST_CASES=N`; a failure prints the shrunk batch (make it an
//! explicit test below with the fix).

mod common;

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{AK, SK};
use mock_kms::AuditQuery;
use mock_kms::MockKms;
use mock_kms::api;
use mock_kms::api::sign;
use mock_kms::dialects::Dialect;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestError, TestRunner};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "hvs.hostile-test-token-never-echoed";
/// Batches per dialect in CI (each batch: up to 6 requests at once, then the valid call).
const DEFAULT_CASES: u32 = 128;
/// The bound on one answer (the server has no faults on: answers come in milliseconds).
const ANSWER_BOUND: Duration = Duration::from_secs(10);
const GCP_KEY: &str = "projects/lab/locations/global/keyRings/ring/cryptoKeys/lab-key";
const PLAINTEXT: &[u8] = b"a 32-byte data key for the test!";

/// One HTTP request, as bytes on the wire will carry it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    /// The request target (already encoded).
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// One dialect under test.
struct Subject {
    dialect: Dialect,
    /// The valid call (unsigned).
    valid: fn() -> Request,
    /// Adds the dialect's authentication for `host` (after every other header is final).
    sign: fn(&mut Request, &str),
    /// Whether a JSON body is this dialect's error shape.
    error_shape: fn(&Value) -> bool,
    /// The header in which the dialect answers the request id it records in the audit log.
    request_id_header: &'static str,
}

const SUBJECTS: &[Subject] = &[
    Subject {
        dialect: Dialect::Native,
        valid: || Request {
            method: "POST".into(),
            path: "/v1/Encrypt".into(),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: serde_json::to_vec(&json!({"KeyId": "lab-key", "Plaintext": B64.encode(PLAINTEXT)})).expect("JSON"),
        },
        sign: sign_native,
        error_shape: |body| body["Code"].is_string() && body["Message"].is_string(),
        request_id_header: api::HEADER_REQUEST_ID,
    },
    Subject {
        dialect: Dialect::Aws,
        valid: || Request {
            method: "POST".into(),
            path: "/".into(),
            headers: vec![
                ("content-type".into(), b"application/x-amz-json-1.1".to_vec()),
                ("x-amz-target".into(), b"TrentService.Encrypt".to_vec()),
            ],
            body: serde_json::to_vec(&json!({"KeyId": "lab-key", "Plaintext": B64.encode(PLAINTEXT)})).expect("JSON"),
        },
        sign: sign_aws,
        error_shape: |body| body["__type"].is_string() && body["message"].is_string(),
        request_id_header: "x-amzn-requestid",
    },
    Subject {
        dialect: Dialect::Gcp,
        valid: || Request {
            method: "POST".into(),
            path: format!("/v1/{GCP_KEY}:encrypt"),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: serde_json::to_vec(&json!({"plaintext": B64.encode(PLAINTEXT)})).expect("JSON"),
        },
        sign: |_, _| {},
        error_shape: |body| {
            body["error"]["code"].is_number() && body["error"]["message"].is_string() && body["error"]["status"].is_string()
        },
        request_id_header: api::HEADER_REQUEST_ID,
    },
    Subject {
        dialect: Dialect::Vault,
        valid: || Request {
            method: "POST".into(),
            path: "/v1/transit/encrypt/lab-key".into(),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: serde_json::to_vec(&json!({"plaintext": B64.encode(PLAINTEXT)})).expect("JSON"),
        },
        sign: |request, _| request.headers.push(("x-vault-token".into(), TOKEN.as_bytes().to_vec())),
        error_shape: |body| body["errors"].is_array(),
        request_id_header: "x-vault-request-id",
    },
    Subject {
        dialect: Dialect::Jdcloud,
        valid: || Request {
            method: "POST".into(),
            path: "/v1/regions/cn-north-1/key/lab-key:Encrypt".into(),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: serde_json::to_vec(&json!({"plaintext": B64.encode(PLAINTEXT)})).expect("JSON"),
        },
        sign: sign_jdcloud,
        error_shape: |body| {
            body["requestId"].is_string()
                && body["error"]["code"].is_number()
                && body["error"]["status"].is_string()
                && body["error"]["message"].is_string()
        },
        request_id_header: "x-jdcloud-request-id",
    },
    Subject {
        dialect: Dialect::Aliyun,
        valid: || Request {
            method: "POST".into(),
            path: "/".into(),
            headers: vec![("content-type".into(), b"application/x-www-form-urlencoded".to_vec())],
            body: format!(
                "Action=Encrypt&Version=2016-01-20&Format=JSON&KeyId=lab-key&Plaintext={}",
                sign::percent_encode(&B64.encode(PLAINTEXT))
            )
            .into_bytes(),
        },
        sign: sign_aliyun,
        error_shape: |body| body["Code"].is_string() && body["Message"].is_string() && body["RequestId"].is_string(),
        request_id_header: "x-acs-request-id",
    },
];

fn sign_native(request: &mut Request, _host: &str) {
    let timestamp = common::now_ms();
    let nonce = nonce();
    let path = request.path.split('?').next().unwrap_or_default().to_owned();
    let signature = api::sign(SK.as_bytes(), &api::canonical_request(&request.method, &path, timestamp, &nonce, &request.body));
    for (name, value) in [
        (api::HEADER_ACCESS_KEY, AK.to_owned()),
        (api::HEADER_TIMESTAMP, timestamp.to_string()),
        (api::HEADER_NONCE, nonce),
        (api::HEADER_SIGNATURE, signature),
    ] {
        request.headers.push((name.into(), value.into_bytes()));
    }
}

/// A fresh nonce per signed request (the dialects refuse a replayed one).
fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NONCE: AtomicU64 = AtomicU64::new(0);
    format!("hostile-{}-{}", std::process::id(), NONCE.fetch_add(1, Ordering::Relaxed))
}

/// `JDCLOUD2-HMAC-SHA256` over what will be sent, as jdcloud-sdk-go signs (the shared
/// `mock_kms::api::sign`); a request whose path or headers are not text goes out unsigned.
fn sign_jdcloud(request: &mut Request, host: &str) {
    let timestamp: String =
        humantime::format_rfc3339_seconds(SystemTime::now()).to_string().chars().filter(|c| *c != '-' && *c != ':').collect();
    let nonce = nonce();
    let content_type = request
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        .unwrap_or_default();
    let (path, query) = request.path.split_once('?').unwrap_or((request.path.as_str(), ""));
    let headers = [
        ("content-type", content_type),
        ("host", host.to_owned()),
        ("x-jdcloud-date", timestamp.clone()),
        ("x-jdcloud-nonce", nonce.clone()),
    ];
    let signed = sign::Jdcloud2Request {
        method: &request.method,
        path,
        query,
        headers: &headers,
        body: &request.body,
        timestamp: &timestamp,
        region: "cn-north-1",
        service: "kms",
    };
    let authorization = format!(
        "JDCLOUD2-HMAC-SHA256 Credential={AK}/{}, SignedHeaders={}, Signature={}",
        signed.scope(),
        signed.signed_headers(),
        signed.signature(SK)
    );
    for (name, value) in [("x-jdcloud-date", timestamp), ("x-jdcloud-nonce", nonce), ("authorization", authorization)] {
        request.headers.push((name.into(), value.into_bytes()));
    }
}

/// Alibaba's signature v1 over the form body's parameters plus the common ones, as
/// alibaba-cloud-sdk-go signs (the shared `mock_kms::api::sign`); a body that is not a form of
/// text is signed over what the form parser reads of it.
fn sign_aliyun(request: &mut Request, _host: &str) {
    let mut params: Vec<(String, String)> = form_urlencoded::parse(&request.body).into_owned().collect();
    let timestamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    for (name, value) in [
        ("AccessKeyId", AK.to_owned()),
        ("SignatureMethod", "HMAC-SHA1".to_owned()),
        ("SignatureVersion", "1.0".to_owned()),
        ("SignatureNonce", nonce()),
        ("Timestamp", timestamp),
        ("RegionId", "cn-hangzhou".to_owned()),
    ] {
        params.push((name.to_owned(), value));
    }
    let signature = sign::aliyun_v1_signature(SK, &request.method, params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    params.push(("Signature".to_owned(), signature));
    request.body = params
        .iter()
        .map(|(k, v)| format!("{}={}", sign::percent_encode(k), sign::percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes();
}

/// SigV4 over what will be sent (the headers that are text, and the host); a request the signer
/// cannot sign (a mutated path or header) goes out unsigned.
fn sign_aws(request: &mut Request, host: &str) {
    let identity = aws_credential_types::Credentials::new(AK, SK, None, None, "hostile-test").into();
    let Ok(params) = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("eu-west-1")
        .name("kms")
        .time(SystemTime::now())
        .settings(aws_sigv4::http_request::SigningSettings::default())
        .build()
    else {
        return;
    };
    let params = params.into();
    let mut headers: Vec<(String, String)> =
        request.headers.iter().filter_map(|(name, value)| Some((name.clone(), String::from_utf8(value.clone()).ok()?))).collect();
    headers.push(("host".into(), host.to_owned()));
    let Ok(signable) = aws_sigv4::http_request::SignableRequest::new(
        &request.method,
        format!("http://{host}{}", request.path),
        headers.iter().map(|(name, value)| (name.as_str(), value.as_str())),
        aws_sigv4::http_request::SignableBody::Bytes(&request.body),
    ) else {
        return;
    };
    if let Ok(output) = aws_sigv4::http_request::sign(signable, &params) {
        let (instructions, _) = output.into_parts();
        for (name, value) in instructions.headers() {
            request.headers.push((name.to_owned(), value.as_bytes().to_vec()));
        }
    }
}

// ---- The generator ----------------------------------------------------------------------

/// Bytes that are legal in a request target: unreserved characters, sub-delimiters, `%XX` of
/// any byte (NUL, invalid UTF-8), dot segments, and long runs.
fn target_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z0-9._~-]{0,8}",
        Just("..".to_owned()),
        Just("/".to_owned()),
        Just(":".to_owned()),
        Just("%".to_owned()),
        any::<u8>().prop_map(|b| format!("%{b:02X}")),
        prop::sample::select(vec!["%00", "%FF%FE", "%C3%28", "%2F", "%E2%80%AE", ":encrypt", ":decrypt", "?", "#", "&", "="])
            .prop_map(str::to_owned),
        (1usize..=12_000).prop_map(|n| "a".repeat(n)),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
}

/// A header value: visible ASCII, tabs and bytes above 0x7f (obs-text), sometimes long.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![8 => 0x20u8..=0x7e, 1 => Just(b'\t'), 2 => 0x80u8..=0xff];
    prop_oneof![
        6 => prop::collection::vec(byte, 0..40),
        1 => (1usize..=6_000).prop_map(|n| vec![b'x'; n]),
        2 => prop::sample::select(vec![
            "", "application/json", "text/plain; charset=utf-16", "application/x-amz-json-1.0", "TrentService.Decrypt",
            "TrentService.", "TrentService.GenerateDataKey", "gzip", "chunked", "-1", "99999999999999999999",
        ]).prop_map(|s| s.as_bytes().to_vec()),
    ]
}

/// Any JSON value, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec![0.5f64, -0.0, 1e308, f64::MIN_POSITIVE]).prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "=",
            "====",
            "AAAA",
            "lab-key",
            "alias/x",
            "arn:aws:kms:eu-west-1:123456789012:key/lab-key",
            "\u{0}"
        ])
        .prop_map(Value::from),
        (0usize..=8_000).prop_map(|n| Value::from(B64.encode(vec![0x41u8; n]))),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[A-Za-z]{1,12}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What happens to the valid body.
#[derive(Debug, Clone)]
enum BodyMutation {
    Keep,
    /// These bytes instead (random, not JSON, not UTF-8).
    Bytes(Vec<u8>),
    /// Cut after this many bytes (modulo the length).
    Truncate(usize),
    /// The field with this index (modulo the field count), or a new `Extra` field, set to this value.
    Field(usize, Value),
    /// The body's fields under this many nested arrays.
    Deep(usize),
    /// `len` bytes of a valid-looking JSON string (beyond the limit, or just below it).
    Huge(usize),
}

/// What happens to the valid headers.
#[derive(Debug, Clone)]
enum HeaderMutation {
    /// Drop the header with this index (modulo the count).
    Drop(usize),
    /// Set the header with this index (modulo the count) to this value.
    Set(usize, Vec<u8>),
    /// Add a header.
    Add(String, Vec<u8>),
}

/// One hostile request: what is changed in the valid call.
#[derive(Debug, Clone)]
struct Mutation {
    method: Option<&'static str>,
    /// Replace the request target after its first `/` (or append to it).
    target: Option<(bool, String)>,
    headers: Vec<HeaderMutation>,
    body: BodyMutation,
    /// Sign after mutating (else the request goes without credentials).
    sign: bool,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let method = prop_oneof![6 => Just(None), 1 => prop::sample::select(vec!["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "POST", "BREW"]).prop_map(Some)];
    let target = prop_oneof![4 => Just(None), 1 => (any::<bool>(), target_text()).prop_map(Some)];
    let header = prop_oneof![
        (0usize..8).prop_map(HeaderMutation::Drop),
        (0usize..8, header_value()).prop_map(|(i, v)| HeaderMutation::Set(i, v)),
        (
            prop::sample::select(vec![
                "content-type",
                "content-encoding",
                "x-amz-target",
                "x-vault-token",
                "authorization",
                "x-kms-access-key",
                "x-kms-timestamp",
                "x-kms-caller",
                "x-amz-date",
                "transfer-encoding-x",
                "x-custom",
            ]),
            header_value()
        )
            .prop_map(|(name, value)| HeaderMutation::Add(name.to_owned(), value)),
    ];
    let body = prop_oneof![
        3 => Just(BodyMutation::Keep),
        2 => prop::collection::vec(any::<u8>(), 0..256).prop_map(BodyMutation::Bytes),
        1 => any::<usize>().prop_map(BodyMutation::Truncate),
        4 => (any::<usize>(), json_value()).prop_map(|(i, v)| BodyMutation::Field(i, v)),
        1 => prop::sample::select(vec![2usize, 200, 5_000]).prop_map(BodyMutation::Deep),
        1 => prop::sample::select(vec![60 * 1024, 64 * 1024, 64 * 1024 + 1, 300 * 1024]).prop_map(BodyMutation::Huge),
    ];
    (method, target, prop::collection::vec(header, 0..3), body, prop::bool::weighted(0.8))
        .prop_map(|(method, target, headers, body, sign)| Mutation { method, target, headers, body, sign })
}

impl Mutation {
    fn apply(&self, valid: Request) -> Request {
        let mut request = valid;
        if let Some(method) = self.method {
            request.method = method.to_owned();
        }
        match &self.target {
            Some((true, text)) => request.path.push_str(text),
            Some((false, text)) => request.path = format!("/{text}"),
            None => {}
        }
        for change in &self.headers {
            let count = request.headers.len().max(1);
            match change {
                HeaderMutation::Drop(i) if !request.headers.is_empty() => drop(request.headers.remove(i % count)),
                HeaderMutation::Set(i, value) if !request.headers.is_empty() => request.headers[i % count].1 = value.clone(),
                HeaderMutation::Add(name, value) => request.headers.push((name.clone(), value.clone())),
                _ => {}
            }
        }
        request.body = match &self.body {
            BodyMutation::Keep => request.body,
            BodyMutation::Bytes(bytes) => bytes.clone(),
            BodyMutation::Truncate(at) => request.body[..at % request.body.len().max(1)].to_vec(),
            BodyMutation::Field(index, value) => {
                let mut object: serde_json::Map<String, Value> = serde_json::from_slice(&request.body).unwrap_or_default();
                let key = object.keys().nth(index % (object.len() + 1)).cloned().unwrap_or_else(|| "Extra".to_owned());
                object.insert(key, value.clone());
                serde_json::to_vec(&object).expect("JSON")
            }
            BodyMutation::Deep(depth) => {
                let object: Value = serde_json::from_slice(&request.body).unwrap_or_default();
                format!("{}{object}{}", "[".repeat(*depth), "]".repeat(*depth)).into_bytes()
            }
            BodyMutation::Huge(len) => format!("{{\"Plaintext\":\"{}\"}}", "A".repeat(*len)).into_bytes(),
        };
        request
    }
}

// ---- The wire -----------------------------------------------------------------------------

/// An answer as read off the socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    raw: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends `request` over a new connection (HTTP/1.0: the server closes after answering) and
/// reads the whole answer; `Err` says what went wrong on the wire.
async fn send(port: u16, request: &Request) -> Result<Answer, String> {
    let mut wire =
        format!("{} {} HTTP/1.0\r\nhost: 127.0.0.1:{port}\r\ncontent-length: {}\r\n", request.method, request.path, request.body.len())
            .into_bytes();
    for (name, value) in &request.headers {
        wire.extend_from_slice(name.as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    wire.extend_from_slice(&request.body);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect: {e}"))?;
        // The server may answer (a refusal) before reading the whole body, and close.
        let _ = stream.write_all(&wire).await;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.map_err(|e| format!("read: {e} after {} bytes", raw.len()))?;
        Ok::<_, String>(raw)
    };
    let raw = tokio::time::timeout(ANSWER_BOUND, exchange).await.map_err(|_| format!("no answer within {ANSWER_BOUND:?}"))??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("the connection closed after {} bytes, no answer", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|line| line.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).ok_or("no status line")?;
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
    Ok(Answer { status, headers, body: raw[split + 4..].to_vec(), raw })
}

/// Whether the answer is acceptable for a hostile request to `subject` on `kms`.
fn judge(subject: &Subject, kms: &MockKms, request: &Request, answer: &Answer) -> Result<(), TestCaseError> {
    let what = format!("{} {} {:?}", request.method, request.path.chars().take(120).collect::<String>(), answer);
    let what = what.chars().take(600).collect::<String>();
    prop_assert!((200..300).contains(&answer.status) || (400..600).contains(&answer.status), "status {}: {}", answer.status, what);
    if answer.status >= 400 {
        let body: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| TestCaseError::fail(format!("{}: an error that is not JSON ({e}): {what}", subject.dialect)))?;
        prop_assert!((subject.error_shape)(&body), "{}: not its error shape: {}", subject.dialect, what);
    }
    for secret in [SK, TOKEN] {
        prop_assert!(
            !answer.raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{}: a credential in the answer: {}",
            subject.dialect,
            what
        );
    }
    if let Some(request_id) = answer.header(subject.request_id_header) {
        let records = kms.audit().query(&AuditQuery::default());
        let record = records.iter().find(|r| r.request_id == request_id);
        prop_assert!(record.is_some(), "{}: answered request id {request_id} is not in the audit log: {}", subject.dialect, what);
        let record = record.expect("checked");
        prop_assert_eq!(record.dialect, subject.dialect);
        if answer.status >= 400 {
            prop_assert!(record.outcome != mock_kms::Outcome::Ok, "{}: a refusal audited as Ok: {}", subject.dialect, what);
        }
        let serialised = serde_json::to_string(record).expect("a record serialises");
        prop_assert!(!serialised.contains(SK) && !serialised.contains(TOKEN), "{}: a credential in the audit log", subject.dialect);
    }
    Ok(())
}

async fn start(dialect: Dialect) -> MockKms {
    MockKms::builder()
        .dialect(dialect)
        .credential(mock_kms::Credential::new(AK, SK))
        .vault_token(TOKEN)
        .key("lab-key")
        .seed(28)
        .start()
        .await
        .unwrap_or_else(|e| panic!("the mock KMS starts in the {dialect} dialect: {e}"))
}

/// The valid call, signed, answers 200 (the server is up and the subject's valid call is valid).
async fn valid_call_succeeds(subject: &Subject, port: u16) -> Result<(), TestCaseError> {
    let mut request = (subject.valid)();
    (subject.sign)(&mut request, &format!("127.0.0.1:{port}"));
    let answer = send(port, &request).await.map_err(|e| TestCaseError::fail(format!("{}: the valid call: {e}", subject.dialect)))?;
    prop_assert_eq!(answer.status, 200, "{}: the valid call after the batch: {}", subject.dialect, String::from_utf8_lossy(&answer.body));
    Ok(())
}

async fn batch(subject: &Subject, kms: &MockKms, mutations: &[Mutation]) -> Result<(), TestCaseError> {
    let port = kms.addr().port();
    let host = format!("127.0.0.1:{port}");
    let requests: Vec<Request> = mutations
        .iter()
        .map(|m| {
            let mut request = m.apply((subject.valid)());
            if m.sign {
                (subject.sign)(&mut request, &host);
            }
            request
        })
        .collect();
    let answers = futures_join_all(requests.iter().cloned().map(|r| async move { send(port, &r).await })).await;
    for (request, answer) in requests.iter().zip(answers) {
        let answer = answer.map_err(|e| TestCaseError::fail(format!("{}: {} {}: {e}", subject.dialect, request.method, request.path)))?;
        judge(subject, kms, request, &answer)?;
    }
    valid_call_succeeds(subject, port).await
}

/// `join_all` without a futures dependency: every future on its own task.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("a request task does not panic"));
    }
    out
}

#[test]
fn every_dialect_answers_hostile_requests_in_its_error_shape_and_stays_up() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    let mut config = ProptestConfig { failure_persistence: None, max_shrink_iters: 256, ..ProptestConfig::default() };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    for subject in SUBJECTS {
        let kms = runtime.block_on(start(subject.dialect));
        runtime.block_on(valid_call_succeeds(subject, kms.addr().port())).unwrap_or_else(|e| panic!("{e}"));
        let mut runner = TestRunner::new(config.clone());
        let result = runner.run(&prop::collection::vec(mutation(), 1..6), |mutations| runtime.block_on(batch(subject, &kms, &mutations)));
        match result {
            Ok(()) => println!("{}: {} hostile batches answered in its error shape", subject.dialect, config.cases),
            Err(TestError::Fail(reason, mutations)) => panic!("{}: {reason}\nshrunk batch: {mutations:#?}", subject.dialect),
            Err(TestError::Abort(reason)) => panic!("{}: proptest aborted: {reason}", subject.dialect),
        }
        runtime.block_on(kms.shutdown());
    }
}

/// Counterexamples the generator found (issue 28), each with its fix.
mod found {
    use super::*;

    async fn judged(subject: &Subject, request: Request) -> Answer {
        let kms = start(subject.dialect).await;
        let answer = send(kms.addr().port(), &request).await.unwrap_or_else(|e| panic!("{}: {e}", subject.dialect));
        judge(subject, &kms, &request, &answer).unwrap_or_else(|e| panic!("{e}"));
        kms.shutdown().await;
        answer
    }

    /// A path no route takes, and a method the route does not take, were axum's empty 404 and
    /// 405: an SDK reads neither. Each dialect now answers them in its own error shape.
    #[tokio::test]
    async fn an_unrouted_path_or_method_is_answered_in_the_dialects_error_shape() {
        for subject in SUBJECTS {
            for (method, path) in [("POST", "/nope"), ("GET", "/"), ("DELETE", "/v1/Encrypt")] {
                let request = Request { method: method.into(), path: path.into(), headers: Vec::new(), body: Vec::new() };
                let answer = judged(subject, request).await;
                assert!(answer.status >= 400, "{}: {method} {path}: {answer:?}", subject.dialect);
            }
        }
    }

    /// `POST /v1/Encrypt%80` (an action that is not UTF-8 once decoded) was axum's plain-text
    /// "Invalid URL" 400; it is now an unknown action, refused in the native shape and audited.
    #[tokio::test]
    async fn a_native_action_that_is_not_utf8_is_an_audited_refusal() {
        let subject = &SUBJECTS[0];
        let mut request = (subject.valid)();
        request.path = "/v1/Encrypt%80".into();
        let answer = judged(subject, request).await;
        assert_eq!(answer.status, 400, "{answer:?}");
        assert!(answer.header(subject.request_id_header).is_some(), "the refusal is audited under its request id: {answer:?}");
    }
}
