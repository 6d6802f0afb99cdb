//! A hostile plugin (`kms-faulty-plugin --hostile-script FILE`): every answer comes from a
//! [`Script`], so a generator (the proptest in `tests/hostile.rs`) can send `kms-lab conformance`
//! what no well-meaning plugin would: empty, huge and boundary-sized fields, wrong versions,
//! key ids that change, odd annotations, every gRPC code with odd messages, delays around the
//! deadline, hangs, a process that exits mid-call, and valid answers between garbage ones.
//!
//! Each method cycles through its own list of [`Reply`]s, one per call; an empty list answers
//! as the reference plugin does. Payloads are described ([`Blob`], [`Text`]), not spelled out,
//! so a script of a 4 MiB ciphertext stays a few bytes of JSON and shrinks well.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kms_plugin::service::{Shared, V1beta1Service, V2Service};
use kms_wire::proto::v1beta1::key_management_service_server::KeyManagementService as V1Api;
use kms_wire::proto::v2::key_management_service_server::KeyManagementService as V2Api;
use kms_wire::proto::{v1beta1, v2};
use serde::{Deserialize, Serialize};
use tonic::{Code, Request, Response, Status};

/// The exit code of a hostile plugin that a [`Reply::Exit`] stops mid-call.
pub const EXIT_MID_CALL: i32 = 70;

/// Every answer of a hostile plugin, per method, cycled call by call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Script {
    /// v2 Status (the first call is usually the harness's readiness probe).
    pub status: Vec<Reply<StatusFields>>,
    /// v2 Encrypt.
    pub encrypt: Vec<Reply<EncryptFields>>,
    /// v2 Decrypt: the plaintext.
    pub decrypt: Vec<Reply<Blob>>,
    /// v1beta1 Version.
    pub version: Vec<Reply<VersionFields>>,
    /// v1beta1 Encrypt: the cipher.
    pub v1_encrypt: Vec<Reply<Blob>>,
    /// v1beta1 Decrypt: the plain.
    pub v1_decrypt: Vec<Reply<Blob>>,
}

impl Script {
    /// Reads a script from its JSON file; the error says which file and what is wrong.
    pub fn load(path: &std::path::Path) -> Result<Self, ScriptError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScriptError::Read { path: path.to_owned(), source })?;
        serde_json::from_str(&text).map_err(|source| ScriptError::Parse { path: path.to_owned(), source })
    }
}

/// Why a hostile script could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The file could not be read.
    #[error("cannot read the hostile script `{path}`: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a script.
    #[error("the hostile script `{path}` is not a script (JSON as `tests/hostile.rs` writes it): {source}")]
    Parse {
        /// The file.
        path: std::path::PathBuf,
        /// Where the JSON is wrong.
        #[source]
        source: serde_json::Error,
    },
}

/// One answer to one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply<T> {
    /// What the reference plugin answers (valid, between garbage ones).
    Real,
    /// These fields, with gRPC OK.
    Answer(T),
    /// A gRPC error with this code (any number: unknown ones read as `Unknown`) and message.
    Error {
        /// The gRPC status code.
        code: i32,
        /// The message.
        message: Text,
    },
    /// An error whose message quotes the request's payload in hex (a leak the suite must withhold).
    ErrorQuotingRequest {
        /// The gRPC status code.
        code: i32,
    },
    /// `reply`, after `millis` milliseconds.
    Delayed {
        /// The delay.
        millis: u64,
        /// The answer after it.
        reply: Box<Reply<T>>,
    },
    /// No answer, ever (the caller's deadline ends the call).
    Hang,
    /// The plugin process exits ([`EXIT_MID_CALL`]) mid-call: the connection drops.
    Exit,
}

/// A string a hostile plugin sends: `piece` repeated `times` times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    /// What is repeated.
    pub piece: String,
    /// How often.
    pub times: usize,
}

impl Text {
    fn render(&self) -> String {
        self.piece.repeat(self.times)
    }
}

/// Bytes a hostile plugin sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Blob {
    /// `len` bytes of `fill`.
    Bytes {
        /// The length.
        len: usize,
        /// What they are.
        fill: Fill,
    },
    /// The request's payload (plaintext or ciphertext) as sent.
    Echo,
    /// The request's payload in lower-case hex.
    EchoHex,
}

/// What [`Blob::Bytes`] is filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fill {
    /// One byte value throughout.
    Byte(u8),
    /// Random bytes, new on every call.
    Random,
    /// Invalid UTF-8 and NUL bytes, repeating (`ff fe 00 c3 28`).
    NotUtf8,
}

impl Blob {
    fn render(&self, request: &[u8]) -> Bytes {
        match self {
            Self::Bytes { len, fill: Fill::Byte(byte) } => Bytes::from(vec![*byte; *len]),
            Self::Bytes { len, fill: Fill::Random } => {
                let mut out = vec![0u8; *len];
                rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut out);
                out.into()
            }
            Self::Bytes { len, fill: Fill::NotUtf8 } => [0xff, 0xfe, 0x00, 0xc3, 0x28].iter().copied().cycle().take(*len).collect(),
            Self::Echo => Bytes::copy_from_slice(request),
            Self::EchoHex => hex::encode(request).into_bytes().into(),
        }
    }
}

/// The fields of a v2 StatusResponse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusFields {
    /// `version`.
    pub version: Text,
    /// `healthz`.
    pub healthz: Text,
    /// `key_id`.
    pub key_id: Text,
}

/// The fields of a v2 EncryptResponse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptFields {
    /// `ciphertext`.
    pub ciphertext: Blob,
    /// `key_id`.
    pub key_id: Text,
    /// `annotations` (a later equal key replaces an earlier one).
    pub annotations: Vec<(Text, Blob)>,
}

/// The fields of a v1beta1 VersionResponse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionFields {
    /// `version`.
    pub version: Text,
    /// `runtime_name`.
    pub runtime_name: Text,
    /// `runtime_version`.
    pub runtime_version: Text,
}

/// Per-method call counters: which reply is next.
#[derive(Default)]
struct Calls {
    status: AtomicUsize,
    encrypt: AtomicUsize,
    decrypt: AtomicUsize,
    version: AtomicUsize,
    v1_encrypt: AtomicUsize,
    v1_decrypt: AtomicUsize,
}

/// The reply for the next call of a method (`None`: the list is empty, answer as the reference plugin).
fn next<'a, T>(replies: &'a [Reply<T>], counter: &AtomicUsize) -> Option<&'a Reply<T>> {
    let call = counter.fetch_add(1, Ordering::Relaxed);
    replies.get(call.checked_rem(replies.len())?)
}

/// Answers one call with `reply`: `real` is the reference plugin's answer, `build` makes the
/// scripted one, `payload` is what the request carried (for echoes and quoting errors).
async fn answer<T, F>(
    reply: Option<&Reply<F>>,
    payload: &[u8],
    real: impl Future<Output = Result<Response<T>, Status>>,
    build: impl FnOnce(&F) -> T,
) -> Result<Response<T>, Status> {
    let mut reply = match reply {
        Some(reply) => reply,
        None => return real.await,
    };
    loop {
        return match reply {
            Reply::Delayed { millis, reply: then } => {
                tokio::time::sleep(Duration::from_millis(*millis)).await;
                reply = then;
                continue;
            }
            Reply::Real => real.await,
            Reply::Answer(fields) => Ok(Response::new(build(fields))),
            Reply::Error { code, message } => Err(Status::new(Code::from_i32(*code), message.render())),
            Reply::ErrorQuotingRequest { code } => {
                Err(Status::new(Code::from_i32(*code), format!("refused {} bytes: {}", payload.len(), hex::encode(payload))))
            }
            Reply::Hang => std::future::pending().await,
            Reply::Exit => {
                tracing::warn!("hostile script: exiting mid-call");
                std::process::exit(EXIT_MID_CALL)
            }
        };
    }
}

/// `v2.KeyManagementService` answering from a script.
pub struct HostileV2 {
    inner: V2Service,
    script: Arc<Script>,
    calls: Arc<Calls>,
}

/// `v1beta1.KeyManagementService` answering from a script.
pub struct HostileV1beta1 {
    inner: V1beta1Service,
    script: Arc<Script>,
    calls: Arc<Calls>,
}

/// Both hostile services; [`Reply::Real`] answers come from the plugin's shared KEK.
pub fn services(shared: Shared, script: Script) -> (HostileV2, HostileV1beta1) {
    let (script, calls) = (Arc::new(script), Arc::new(Calls::default()));
    (
        HostileV2 { inner: V2Service(shared.clone()), script: script.clone(), calls: calls.clone() },
        HostileV1beta1 { inner: V1beta1Service(shared), script, calls },
    )
}

#[tonic::async_trait]
impl V2Api for HostileV2 {
    async fn status(&self, request: Request<v2::StatusRequest>) -> Result<Response<v2::StatusResponse>, Status> {
        let reply = next(&self.script.status, &self.calls.status);
        let real = self.inner.status(request);
        answer(reply, &[], real, |f| v2::StatusResponse {
            version: f.version.render(),
            healthz: f.healthz.render(),
            key_id: f.key_id.render(),
        })
        .await
    }

    async fn encrypt(&self, request: Request<v2::EncryptRequest>) -> Result<Response<v2::EncryptResponse>, Status> {
        let reply = next(&self.script.encrypt, &self.calls.encrypt);
        let plaintext = request.get_ref().plaintext.clone();
        let real = self.inner.encrypt(request);
        answer(reply, &plaintext, real, |f| v2::EncryptResponse {
            ciphertext: f.ciphertext.render(&plaintext),
            key_id: f.key_id.render(),
            annotations: f.annotations.iter().map(|(k, v)| (k.render(), v.render(&plaintext))).collect::<BTreeMap<_, _>>(),
        })
        .await
    }

    async fn decrypt(&self, request: Request<v2::DecryptRequest>) -> Result<Response<v2::DecryptResponse>, Status> {
        let reply = next(&self.script.decrypt, &self.calls.decrypt);
        let ciphertext = request.get_ref().ciphertext.clone();
        let real = self.inner.decrypt(request);
        answer(reply, &ciphertext, real, |f| v2::DecryptResponse { plaintext: f.render(&ciphertext) }).await
    }
}

#[tonic::async_trait]
impl V1Api for HostileV1beta1 {
    async fn version(&self, request: Request<v1beta1::VersionRequest>) -> Result<Response<v1beta1::VersionResponse>, Status> {
        let reply = next(&self.script.version, &self.calls.version);
        let real = self.inner.version(request);
        answer(reply, &[], real, |f| v1beta1::VersionResponse {
            version: f.version.render(),
            runtime_name: f.runtime_name.render(),
            runtime_version: f.runtime_version.render(),
        })
        .await
    }

    async fn encrypt(&self, request: Request<v1beta1::EncryptRequest>) -> Result<Response<v1beta1::EncryptResponse>, Status> {
        let reply = next(&self.script.v1_encrypt, &self.calls.v1_encrypt);
        let plain = request.get_ref().plain.clone();
        let real = self.inner.encrypt(request);
        answer(reply, &plain, real, |f| v1beta1::EncryptResponse { cipher: f.render(&plain) }).await
    }

    async fn decrypt(&self, request: Request<v1beta1::DecryptRequest>) -> Result<Response<v1beta1::DecryptResponse>, Status> {
        let reply = next(&self.script.v1_decrypt, &self.calls.v1_decrypt);
        let cipher = request.get_ref().cipher.clone();
        let real = self.inner.decrypt(request);
        answer(reply, &cipher, real, |f| v1beta1::DecryptResponse { plain: f.render(&cipher) }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_round_trips_through_json_and_cycles_per_method() {
        let script = Script {
            encrypt: vec![
                Reply::Real,
                Reply::Delayed {
                    millis: 1,
                    reply: Box::new(Reply::Error { code: 99, message: Text { piece: "\u{0}é".into(), times: 3 } }),
                },
            ],
            ..Script::default()
        };
        let json = serde_json::to_string(&script).expect("serialises");
        assert_eq!(serde_json::from_str::<Script>(&json).expect("parses"), script);
        let counter = AtomicUsize::new(0);
        assert_eq!(next(&script.encrypt, &counter), Some(&Reply::Real));
        assert!(matches!(next(&script.encrypt, &counter), Some(Reply::Delayed { .. })));
        assert_eq!(next(&script.encrypt, &counter), Some(&Reply::Real));
        assert_eq!(next(&script.decrypt, &counter), None, "an empty list answers as the reference plugin");
    }

    #[test]
    fn blobs_are_rendered_from_their_description() {
        assert_eq!(Blob::Bytes { len: 7, fill: Fill::NotUtf8 }.render(b""), Bytes::from_static(&[0xff, 0xfe, 0, 0xc3, 0x28, 0xff, 0xfe]));
        assert_eq!(Blob::EchoHex.render(b"\x01\xff"), Bytes::from_static(b"01ff"));
        assert_eq!(Blob::Bytes { len: 0, fill: Fill::Random }.render(b"x"), Bytes::new());
    }
}
