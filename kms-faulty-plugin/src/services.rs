//! Services that wrap the reference plugin's [`V2Service`] and [`V1beta1Service`] and break the
//! contract the way the switched-on [`Defects`] say.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kms_plugin::kek::Claimed;
use kms_plugin::service::{Shared, V1beta1Service, V2Service};
use kms_wire::proto::v1beta1::key_management_service_server::KeyManagementService as V1Api;
use kms_wire::proto::v2::key_management_service_server::KeyManagementService as V2Api;
use kms_wire::proto::{v1beta1, v2};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::defect::{Defect, Defects};

/// Padding that pushes a ciphertext over the apiserver's 1 KiB limit.
const CIPHERTEXT_PADDING: usize = 1100;
/// Padding that pushes a key id over the apiserver's 1 KiB limit.
const KEY_ID_PADDING: usize = 1100;
/// Plaintexts larger than this are refused (and quoted) by `plaintext-in-error`.
const QUOTED_PLAINTEXT_OVER: usize = 1024;
/// The non-FQDN annotation key of `bad-annotation-key`.
const BAD_ANNOTATION_KEY: &str = "kms_version";
/// The annotation of `oversize-annotations`.
const PADDING_ANNOTATION_KEY: &str = "padding.faulty.kms-lab.io";
/// How long `racy-under-load` keeps its shared buffer between write and read.
const RACE_WINDOW: Duration = Duration::from_millis(2);

/// The fixed key of `xor-fixed-key`.
const XOR_KEY: &[u8; 32] = b"kms-lab faulty plugin fixed key!";

/// The plaintext as the readable-DEK defects expose it, appended to the real ciphertext.
fn exposure(defects: &Defects, plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if defects.has(Defect::Base64Dek) {
        use base64::Engine as _;
        out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(plaintext).as_bytes());
    }
    if defects.has(Defect::PartialDek) {
        out.extend_from_slice(hex::encode(&plaintext[..plaintext.len().min(8)]).as_bytes());
    }
    if defects.has(Defect::XorFixedKey) {
        out.extend(plaintext.iter().zip(XOR_KEY.iter().cycle()).map(|(p, k)| p ^ k));
    }
    if defects.has(Defect::Substitution) {
        // An affine byte permutation (167 is odd, so it is a bijection).
        out.extend(plaintext.iter().map(|p| p.wrapping_mul(167).wrapping_add(13)));
    }
    out
}

/// Run-length encoding, `(count, byte)` pairs (`compress-then-encrypt`).
fn rle(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let run = data[i..].iter().take(255).take_while(|&&b| b == data[i]).count();
        out.extend_from_slice(&[run as u8, data[i]]);
        i += run;
    }
    out
}

/// Undoes [`rle`].
fn unrle(data: &[u8]) -> Option<Vec<u8>> {
    if !data.len().is_multiple_of(2) {
        return None;
    }
    Some(data.chunks(2).flat_map(|pair| std::iter::repeat_n(pair[1], pair[0] as usize)).collect())
}

/// State the defects need, shared by both services.
#[derive(Default)]
struct State {
    first_key_id: Mutex<Option<String>>,
    cached_status: Mutex<Option<v2::StatusResponse>>,
    status_calls: AtomicU64,
    latest_key_id: Mutex<Option<String>>,
    deterministic_v2: Mutex<HashMap<[u8; 32], v2::EncryptResponse>>,
    deterministic_v1: Mutex<HashMap<[u8; 32], Bytes>>,
    racy_buffer: Mutex<Vec<u8>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn digest(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn uid_tag(uid: &str) -> [u8; 4] {
    let d = Sha256::digest(uid.as_bytes());
    [d[0], d[1], d[2], d[3]]
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut out);
    out
}

/// The key id without its version: `key/version` → `key`, `local-vN-fp` → `local`.
fn without_version(key_id: &str) -> String {
    match key_id.rsplit_once('/') {
        Some((name, _)) => name.to_owned(),
        None if key_id.starts_with("local-v") => "local".to_owned(),
        None => key_id.to_owned(),
    }
}

/// What both faulty services share.
struct Faults {
    defects: Defects,
    state: State,
    shared: Shared,
}

impl Faults {
    fn has(&self, defect: Defect) -> bool {
        self.defects.has(defect)
    }

    /// The key id the plugin reports in place of the real `key_id`.
    fn present_key_id(&self, key_id: &str) -> String {
        let mut id = key_id.to_owned();
        if self.has(Defect::IgnoreRotation) {
            id = lock(&self.state.first_key_id).get_or_insert_with(|| key_id.to_owned()).clone();
        }
        if self.has(Defect::KeyIdWithoutVersion) {
            id = without_version(&id);
        }
        if self.has(Defect::OversizeKeyId) {
            id = format!("{id}+{}", "x".repeat(KEY_ID_PADDING));
        }
        id
    }

    /// Refuses a plaintext the way `plaintext-in-error` does, if on.
    fn refuse_quoting(&self, plaintext: &[u8]) -> Result<(), Status> {
        if self.has(Defect::PlaintextInError) && plaintext.len() > QUOTED_PLAINTEXT_OVER {
            return Err(Status::invalid_argument(format!(
                "plaintext too large ({} bytes): {}",
                plaintext.len(),
                hex::encode(&plaintext[..64.min(plaintext.len())])
            )));
        }
        Ok(())
    }

    async fn hang_if_asked(&self) {
        if self.has(Defect::HangOnEncrypt) {
            std::future::pending::<()>().await;
        }
    }

    /// Wraps the real ciphertext the way the ciphertext defects say.
    fn frame(&self, ciphertext: &[u8], plaintext: &[u8], uid: &str) -> Bytes {
        if self.has(Defect::EmptyCiphertext) {
            return Bytes::new();
        }
        let mut out = Vec::with_capacity(ciphertext.len() + 8);
        if self.has(Defect::EchoPlaintext) {
            out.extend_from_slice(&(plaintext.len() as u32).to_be_bytes());
            out.extend_from_slice(plaintext);
        }
        out.extend_from_slice(ciphertext);
        let exposed = exposure(&self.defects, plaintext);
        if !exposed.is_empty() {
            out.extend_from_slice(&exposed);
            out.extend_from_slice(&(exposed.len() as u16).to_be_bytes());
        }
        if self.has(Defect::OversizeCiphertext) {
            out.extend_from_slice(&[0u8; CIPHERTEXT_PADDING]);
        }
        if self.has(Defect::UidAffectsResult) {
            out.extend_from_slice(&uid_tag(uid));
        }
        out.into()
    }

    /// Undoes [`Faults::frame`].
    fn unframe(&self, framed: &[u8], uid: &str) -> Result<Bytes, Status> {
        let bad = |what: &str| Status::invalid_argument(format!("ciphertext rejected: {what}"));
        let mut rest = framed;
        if self.has(Defect::UidAffectsResult) {
            let split = rest.len().checked_sub(4).ok_or_else(|| bad("too short"))?;
            if rest[split..] != uid_tag(uid) {
                return Err(bad("it was encrypted for another request uid"));
            }
            rest = &rest[..split];
        }
        if self.has(Defect::OversizeCiphertext) {
            let split = rest.len().checked_sub(CIPHERTEXT_PADDING).ok_or_else(|| bad("too short"))?;
            rest = &rest[..split];
        }
        if [Defect::Base64Dek, Defect::PartialDek, Defect::XorFixedKey, Defect::Substitution].iter().any(|d| self.has(*d)) {
            let split = rest.len().checked_sub(2).ok_or_else(|| bad("too short"))?;
            let len = u16::from_be_bytes([rest[split], rest[split + 1]]) as usize;
            let start = split.checked_sub(len).ok_or_else(|| bad("too short"))?;
            rest = &rest[..start];
        }
        if self.has(Defect::EchoPlaintext) {
            let len = rest.get(..4).ok_or_else(|| bad("too short"))?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            rest = rest.get(4 + len..).ok_or_else(|| bad("too short"))?;
        }
        Ok(Bytes::copy_from_slice(rest))
    }

    /// Turns a real decrypt result into the faulty one.
    async fn finish_decrypt(&self, result: Result<Bytes, Status>) -> Result<Bytes, Status> {
        let mut plaintext = match result {
            Ok(plaintext) if self.has(Defect::CompressThenEncrypt) => {
                unrle(&plaintext).ok_or_else(|| Status::invalid_argument("ciphertext rejected: bad run-length encoding"))?
            }
            Ok(plaintext) => plaintext.to_vec(),
            Err(_) if self.has(Defect::DecryptIgnoresTamper) => random_bytes(32),
            Err(status) if self.has(Defect::WrongStatusCode) => return Err(Status::unavailable(status.message().to_owned())),
            Err(status) => return Err(status),
        };
        if self.has(Defect::CorruptsPlaintext)
            && let Some(last) = plaintext.last_mut()
        {
            *last ^= 0x01;
        }
        if self.has(Defect::RacyUnderLoad) {
            *lock(&self.state.racy_buffer) = plaintext;
            tokio::time::sleep(RACE_WINDOW).await;
            plaintext = lock(&self.state.racy_buffer).clone();
        }
        Ok(plaintext.into())
    }
}

/// `v2.KeyManagementService` with defects.
pub struct FaultyV2 {
    inner: V2Service,
    faults: std::sync::Arc<Faults>,
}

/// `v1beta1.KeyManagementService` with defects.
pub struct FaultyV1beta1 {
    inner: V1beta1Service,
    faults: std::sync::Arc<Faults>,
}

/// Both faulty services over one plugin's shared KEK, health and metrics.
pub fn services(shared: Shared, defects: Defects) -> (FaultyV2, FaultyV1beta1) {
    let faults = std::sync::Arc::new(Faults { defects, state: State::default(), shared: shared.clone() });
    (FaultyV2 { inner: V2Service(shared.clone()), faults: faults.clone() }, FaultyV1beta1 { inner: V1beta1Service(shared), faults })
}

#[tonic::async_trait]
impl V2Api for FaultyV2 {
    async fn status(&self, request: Request<v2::StatusRequest>) -> Result<Response<v2::StatusResponse>, Status> {
        let f = &self.faults;
        let cached = if f.has(Defect::StatusAlwaysOk) { lock(&f.state.cached_status).clone() } else { None };
        let mut response = match cached {
            Some(cached) => cached,
            None => {
                let real = self.inner.status(request).await?.into_inner();
                if f.has(Defect::StatusAlwaysOk) && real.healthz == kms_wire::proto::HEALTHZ_OK {
                    *lock(&f.state.cached_status) = Some(real.clone());
                }
                real
            }
        };
        response.key_id = f.present_key_id(&response.key_id);
        if f.has(Defect::WrongVersion) {
            response.version = "v1".to_owned();
        }
        if f.has(Defect::Unhealthy) {
            response.healthz = "degraded: KEK probe skipped (faulty plugin)".to_owned();
        }
        if f.has(Defect::UnstableKeyId) {
            let call = f.state.status_calls.fetch_add(1, Ordering::Relaxed);
            response.key_id = format!("{}-{call}", response.key_id);
        }
        Ok(Response::new(response))
    }

    async fn encrypt(&self, request: Request<v2::EncryptRequest>) -> Result<Response<v2::EncryptResponse>, Status> {
        let f = &self.faults;
        f.hang_if_asked().await;
        let request = request.into_inner();
        f.refuse_quoting(&request.plaintext)?;
        let key = digest(&request.plaintext);
        if f.has(Defect::Deterministic)
            && let Some(cached) = lock(&f.state.deterministic_v2).get(&key).cloned()
        {
            return Ok(Response::new(cached));
        }
        if f.has(Defect::DropsEmptyPayload) && request.plaintext.is_empty() {
            let status = self.inner.status(Request::new(v2::StatusRequest {})).await?.into_inner();
            let dropped =
                v2::EncryptResponse { ciphertext: Bytes::new(), key_id: f.present_key_id(&status.key_id), annotations: BTreeMap::new() };
            return Ok(Response::new(dropped));
        }
        let plaintext = request.plaintext.clone();
        let uid = request.uid.clone();
        let mut request = request;
        if f.has(Defect::CompressThenEncrypt) {
            request.plaintext = rle(&request.plaintext).into();
        }
        let mut response = self.inner.encrypt(Request::new(request)).await?.into_inner();
        *lock(&f.state.latest_key_id) = Some(response.key_id.clone());
        response.ciphertext = f.frame(&response.ciphertext, &plaintext, &uid);
        response.key_id = f.present_key_id(&response.key_id);
        if f.has(Defect::KeyIdDiffersFromStatus) {
            response.key_id.push_str("-encrypt");
        }
        if f.has(Defect::BadAnnotationKey) {
            response.annotations.insert(BAD_ANNOTATION_KEY.to_owned(), Bytes::from_static(b"1"));
        }
        if f.has(Defect::OversizeAnnotations) {
            response.annotations.insert(PADDING_ANNOTATION_KEY.to_owned(), Bytes::from(vec![b'p'; 33 * 1024]));
        }
        if f.has(Defect::Deterministic) {
            lock(&f.state.deterministic_v2).insert(key, response.clone());
        }
        Ok(Response::new(response))
    }

    async fn decrypt(&self, request: Request<v2::DecryptRequest>) -> Result<Response<v2::DecryptResponse>, Status> {
        let f = &self.faults;
        let mut request = request.into_inner();
        if f.has(Defect::ForgetsOldKek)
            && let Some(latest) = lock(&f.state.latest_key_id).clone()
            && request.key_id != latest
        {
            return Err(Status::not_found(format!("KEK version `{}` is no longer available", request.key_id)));
        }
        if f.has(Defect::DropsEmptyPayload) && request.ciphertext.is_empty() {
            return Ok(Response::new(v2::DecryptResponse { plaintext: Bytes::new() }));
        }
        request.annotations.remove(BAD_ANNOTATION_KEY);
        request.annotations.remove(PADDING_ANNOTATION_KEY);
        if f.defects.mangles_key_id() {
            request.key_id.clear();
        }
        let result = match f.unframe(&request.ciphertext, &request.uid) {
            Err(status) => Err(status),
            Ok(ciphertext) if f.has(Defect::IgnoresAnnotations) => {
                let claimed = Claimed { key_id: None, annotations: None };
                f.shared.kek.unwrap(&ciphertext, claimed).await.map(|p| Bytes::from(p.to_vec())).map_err(Status::from)
            }
            Ok(ciphertext) => {
                request.ciphertext = ciphertext;
                self.inner.decrypt(Request::new(request)).await.map(|r| r.into_inner().plaintext)
            }
        };
        Ok(Response::new(v2::DecryptResponse { plaintext: f.finish_decrypt(result).await? }))
    }
}

#[tonic::async_trait]
impl V1Api for FaultyV1beta1 {
    async fn version(&self, request: Request<v1beta1::VersionRequest>) -> Result<Response<v1beta1::VersionResponse>, Status> {
        let mut response = self.inner.version(request).await?.into_inner();
        if self.faults.has(Defect::V1beta1BadVersion) {
            response.version = "v1".to_owned();
        }
        if self.faults.has(Defect::V1beta1BadRuntimeVersion) {
            response.runtime_version = "latest".to_owned();
        }
        Ok(Response::new(response))
    }

    async fn encrypt(&self, request: Request<v1beta1::EncryptRequest>) -> Result<Response<v1beta1::EncryptResponse>, Status> {
        let f = &self.faults;
        f.hang_if_asked().await;
        let request = request.into_inner();
        f.refuse_quoting(&request.plain)?;
        let key = digest(&request.plain);
        if f.has(Defect::Deterministic)
            && let Some(cipher) = lock(&f.state.deterministic_v1).get(&key).cloned()
        {
            return Ok(Response::new(v1beta1::EncryptResponse { cipher }));
        }
        let plain = request.plain.clone();
        let mut request = request;
        if f.has(Defect::CompressThenEncrypt) {
            request.plain = rle(&request.plain).into();
        }
        let mut response = self.inner.encrypt(Request::new(request)).await?.into_inner();
        response.cipher = f.frame(&response.cipher, &plain, "");
        if f.has(Defect::Deterministic) {
            lock(&f.state.deterministic_v1).insert(key, response.cipher.clone());
        }
        Ok(Response::new(response))
    }

    async fn decrypt(&self, request: Request<v1beta1::DecryptRequest>) -> Result<Response<v1beta1::DecryptResponse>, Status> {
        let f = &self.faults;
        let mut request = request.into_inner();
        let result = match f.unframe(&request.cipher, "") {
            Err(status) => Err(status),
            Ok(cipher) => {
                request.cipher = cipher;
                self.inner.decrypt(Request::new(request)).await.map(|r| r.into_inner().plain)
            }
        };
        Ok(Response::new(v1beta1::DecryptResponse { plain: f.finish_decrypt(result).await? }))
    }
}
