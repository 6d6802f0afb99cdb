//! The plugin's remote-KMS client against wiremock: signing, error codes, malformed bodies,
//! slow answers, throttling with Retry-After, retries only where they help, and failover.

use std::time::Duration;

use base64::Engine;
use kms_plugin::config::{Credential, RemoteKmsConfig};
use kms_plugin::kek::{Claimed, KekError, RemoteKek};
use mock_kms::api;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};
use zeroize::Zeroizing;

const SECRET_KEY: &str = "wiremock-secret-key";

fn config(endpoints: Vec<String>, timeout: Duration, retries: u32) -> RemoteKmsConfig {
    RemoteKmsConfig {
        endpoints,
        key_id: "lab-key".into(),
        dialect: mock_kms::dialects::Dialect::Native,
        ca_file: None,
        credential: Credential { access_key: "AK".into(), secret_key: Zeroizing::new(SECRET_KEY.into()) },
        call_timeout: timeout,
        max_retries: retries,
    }
}

fn encrypt_ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "KeyId": "lab-key", "KeyVersionId": "v1", "CiphertextBlob": base64::engine::general_purpose::STANDARD.encode(b"opaque-blob"), "RequestId": "r-1"
    }))
}

fn error(status: u16, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(serde_json::json!({"Code": code, "Message": format!("{code} from wiremock"), "RequestId": "r-err"}))
}

/// Whether the request carries a valid signature over exactly what was sent.
fn signed_correctly(request: &Request) -> bool {
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (Some(access), Some(ts), Some(nonce), Some(signature)) =
        (header(api::HEADER_ACCESS_KEY), header(api::HEADER_TIMESTAMP), header(api::HEADER_NONCE), header(api::HEADER_SIGNATURE))
    else {
        return false;
    };
    let Ok(ts) = ts.parse() else { return false };
    access == "AK"
        && api::verify(SECRET_KEY.as_bytes(), &api::canonical_request("POST", request.url.path(), ts, &nonce, &request.body), &signature)
}

#[tokio::test]
async fn encrypt_is_signed_and_reports_key_and_version() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path("/v1/Encrypt")).and(signed_correctly).respond_with(encrypt_ok()).expect(1).mount(&server).await;
    let kek = RemoteKek::new(config(vec![server.uri()], Duration::from_secs(2), 2)).unwrap();
    let wrapped = kek.wrap(b"dek").await.expect("a signed Encrypt succeeds");
    assert_eq!(wrapped.key_id, "lab-key/v1");
    assert_eq!(wrapped.ciphertext.as_ref(), b"opaque-blob");
}

#[tokio::test]
async fn a_wrong_secret_is_unauthenticated_naming_the_credential_not_its_value() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/Encrypt")).respond_with(error(401, "SignatureDoesNotMatch")).expect(1).mount(&server).await;
    let kek = RemoteKek::new(config(vec![server.uri()], Duration::from_secs(2), 3)).unwrap();
    let error = kek.wrap(b"dek").await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::Unauthenticated);
    let message = error.to_string();
    assert!(message.contains("check SecretKey") && !message.contains(SECRET_KEY), "{message}");
}

#[tokio::test]
async fn throttling_is_retried_after_the_time_the_kms_asks_for() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/Encrypt"))
        .respond_with(error(429, "Throttling").insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/Encrypt")).respond_with(encrypt_ok()).expect(1).mount(&server).await;
    let kek = RemoteKek::new(config(vec![server.uri()], Duration::from_secs(3), 2)).unwrap();
    let started = std::time::Instant::now();
    kek.wrap(b"dek").await.expect("the retry after Retry-After succeeds");
    assert!(started.elapsed() >= Duration::from_secs(1), "retried before Retry-After");
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/Encrypt")).respond_with(error(500, "InternalFailure")).expect(3).mount(&server).await;
    let kek = RemoteKek::new(config(vec![server.uri()], Duration::from_secs(5), 2)).unwrap();
    let error = kek.wrap(b"dek").await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::Unavailable, "{error}");
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/Decrypt")).respond_with(error(400, "InvalidCiphertext")).expect(1).mount(&server).await;
    Mock::given(path("/v1/Encrypt")).respond_with(error(409, "KeyNotEnabled")).expect(1).mount(&server).await;
    let kek = RemoteKek::new(config(vec![server.uri()], Duration::from_secs(2), 3)).unwrap();
    assert_eq!(kek.unwrap(b"garbage", Claimed::default()).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert_eq!(kek.wrap(b"dek").await.unwrap_err().code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn a_malformed_body_is_an_internal_error() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/Encrypt")).respond_with(ResponseTemplate::new(200).set_body_string("{not json")).mount(&server).await;
    let kek = RemoteKek::new(config(vec![server.uri()], Duration::from_secs(2), 1)).unwrap();
    assert!(matches!(kek.wrap(b"dek").await, Err(KekError::Internal(m)) if m.contains("not the expected JSON")));
}

#[tokio::test]
async fn a_slow_kms_fails_with_deadline_exceeded_not_a_hang() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/Encrypt")).respond_with(encrypt_ok().set_delay(Duration::from_secs(30))).mount(&server).await;
    let kek = RemoteKek::new(config(vec![server.uri()], Duration::from_millis(300), 2)).unwrap();
    let error = kek.wrap(b"dek").await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::DeadlineExceeded, "{error}");
}

#[tokio::test]
async fn a_dead_endpoint_fails_over_to_the_next() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let server = MockServer::start().await;
    Mock::given(path("/v1/Encrypt")).respond_with(encrypt_ok()).expect(2).mount(&server).await;
    let kek = RemoteKek::new(config(vec![format!("http://{dead}"), server.uri()], Duration::from_secs(2), 2)).unwrap();
    kek.wrap(b"dek").await.expect("fails over to the live endpoint");
    // The endpoint that answered is tried first next time.
    kek.wrap(b"dek").await.expect("goes straight to the live endpoint");
}

#[tokio::test]
async fn decrypt_refuses_a_key_id_that_does_not_match_the_blob() {
    let server = MockServer::start().await;
    let plaintext = base64::engine::general_purpose::STANDARD.encode(b"dek");
    Mock::given(path("/v1/Decrypt"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"KeyId": "lab-key", "KeyVersionId": "v2", "Plaintext": plaintext, "RequestId": "r"})),
        )
        .mount(&server)
        .await;
    let kek = RemoteKek::new(config(vec![server.uri()], Duration::from_secs(2), 0)).unwrap();
    let ok = kek.unwrap(b"blob", Claimed { key_id: Some("lab-key/v2"), annotations: None }).await.unwrap();
    assert_eq!(ok.as_slice(), b"dek");
    let wrong = kek.unwrap(b"blob", Claimed { key_id: Some("lab-key/v1"), annotations: None }).await.unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn every_call_says_why_it_was_made_when_the_task_knows() {
    use kms_plugin::kek::{Caller, as_caller};
    let server = MockServer::start().await;
    let caller_is =
        |want: Option<&'static str>| move |request: &Request| request.headers.get(api::HEADER_CALLER).and_then(|v| v.to_str().ok()) == want;
    Mock::given(path("/v1/Encrypt")).and(caller_is(Some("health-probe"))).respond_with(encrypt_ok()).expect(1).mount(&server).await;
    Mock::given(path("/v1/Encrypt")).and(caller_is(Some("request"))).respond_with(encrypt_ok()).expect(1).mount(&server).await;
    Mock::given(path("/v1/Encrypt")).and(caller_is(None)).respond_with(encrypt_ok()).expect(1).mount(&server).await;
    let kek = RemoteKek::new(config(vec![server.uri()], Duration::from_secs(2), 0)).unwrap();
    as_caller(Caller::HealthProbe, kek.wrap(b"dek")).await.expect("the probe's Encrypt matches");
    as_caller(Caller::Request, kek.wrap(b"dek")).await.expect("the request's Encrypt matches");
    kek.wrap(b"dek").await.expect("an Encrypt without a caller sends no header");
}
