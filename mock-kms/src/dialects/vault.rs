//! The HashiCorp Vault dialect: the Transit secrets engine (`/v1/transit/…`) with `X-Vault-Token`
//! auth, and the unauthenticated `sys/` endpoints Vault clients and operators use for the seal and
//! HA state (`/v1/sys/health`, `/v1/sys/seal-status`, `PUT /v1/sys/unseal`), and the token's
//! own `auth/token/lookup-self` and `renew-self` that Vault clients call at start and to renew.
//!
//! Keys are the key store's keys: the Transit key `NAME` is the key store's key `NAME`. Versions
//! are numbered 1, 2, … in creation order (the key store's version ids, oldest first), and a
//! ciphertext is `vault:vN:` + base64 of the key store's blob (which names key and version).
//! `context` (base64) is bound as associated data. `min_decryption_version` is kept per key in
//! the process (not replicated or persisted). `PUT /v1/sys/unseal` drives the mock's Shamir seal
//! (`mock-kms init`, 5 shares, threshold 3); a sealed node answers 503 `Vault is sealed`.
//!
//! **HA** (a cluster: `--cluster N`, or processes with `--peers`), as Vault's integrated HA does
//! it: one unsealed node is *active* and serves; the others are *standbys*. A standby answers
//! `sys/health` with 429 (200 active, 503 sealed; `standbyok`, `activecode`, `standbycode`,
//! `sealedcode` as in Vault) and every other request with **307 Temporary Redirect** to the
//! active node's API address plus the same path and query — what a Vault standby does when it
//! cannot forward a request over the cluster port (`respondStandby` in Vault's `http/handler.go`;
//! the official Go client, `hashicorp/vault/api`, follows it). `sys/health`, `sys/seal-status`,
//! `sys/unseal` and `sys/leader` are answered by the node itself, as in Vault. Which node is
//! active: the one that took the lock and is still up; when none holds it (at the first unseal,
//! or after the active node is lost), the lowest-ranked unsealed node takes it the next time any
//! node is asked, and keeps it — a node that comes back later is a standby, as a Vault node that
//! comes back finds the lock held. Nodes learn each other's state on the admin API
//! (`GET` [`HA_PATH`], a peer that does not answer within [`HA_PROBE_DEADLINE`] counts as down).
//! No node answers 501 (uninitialised): the mock is always initialised (`mock-kms init`).
//!
//! The `--vault-token` is a renewable service token. By default it does not run down: a look-up
//! reports `ttl` = `creation_ttl` = [`TOKEN_TTL_SECS`], and `renew-self` grants the increment
//! asked (at most that) without changing what the next look-up reports. With
//! `--vault-token-ttl` it has a lease, as a Vault service token created with `-ttl`: it starts at
//! the token's first use on the process, a look-up reports the time left (`ttl`) and the TTL it
//! was created with (`creation_ttl`), `renew-self` sets the time left to the increment asked
//! (none: `creation_ttl`; at most the 768 h max TTL since its creation), and once the lease has
//! run out every call with it is refused 403 `permission denied`, as Vault refuses an expired
//! (revoked) token — renewal included. The lease lives in the process that answered (not
//! replicated): a node that becomes active starts its own at the token's first use there.
//! Errors are Vault's `{"errors": ["…"]}` with Vault's status codes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::Dialect;
use super::call::{Call, constant_time_eq, read_body};
use crate::api::{Action, ErrorCode, KeyMetadata, KeySpec, KeyState};
use crate::blob;
use crate::error::{KmsError, SealError};
use crate::keystore::KeyStore;
use crate::node::Node;

/// The largest plaintext encrypt takes (real Vault is bounded by its 32 MiB `max_request_size`).
pub const MAX_PLAINTEXT: usize = 64 * 1024;
/// The largest request body read: a 64 KiB plaintext in base64 with a context fits.
pub const MAX_BODY: usize = 256 * 1024;
/// The version `sys/health` and `sys/seal-status` report.
pub const VERSION: &str = "1.15.0+mock-kms";
/// The one key type served.
const KEY_TYPE: &str = "aes256-gcm96";
/// The context key `context` is bound under in the key store's blob.
const CONTEXT_KEY: &str = "vault:context";
const CONTENT_TYPE: &str = "application/json";
const PERMISSION_DENIED: &str = "permission denied";
/// The TTL and max TTL the `--vault-token` reports (Vault's default max TTL, 768 h); it does not
/// run down in the mock.
pub const TOKEN_TTL_SECS: u64 = 768 * 3600;
/// The policies the `--vault-token` reports: it may do everything the dialect serves.
const TOKEN_POLICIES: [&str; 2] = ["default", "mock-kms-transit"];

/// The admin path a node answers its Vault HA state on ([`HaInfo`]), for its peers.
pub const HA_PATH: &str = "/admin/vault/ha";
/// How long a node waits for a peer's HA state: a killed peer refuses at once, a hung one is
/// passed over after this.
pub const HA_PROBE_DEADLINE: Duration = Duration::from_millis(500);

/// Vault-only state of a process: each key's `min_decryption_version` and the token's lease (in
/// memory, not replicated or persisted; see the README).
#[derive(Debug, Default)]
pub(crate) struct VaultState {
    min_decryption_version: Mutex<BTreeMap<String, u32>>,
    /// When the token was first used (Unix seconds): its `creation_time` from then on.
    token_issued: OnceLock<u64>,
    /// The TTL the token was created with (`--vault-token-ttl`); `None`: it does not run down.
    token_ttl: Option<u64>,
    /// When its lease ends (Unix seconds), once it was first used and a TTL is set.
    token_expires: Mutex<Option<u64>>,
    /// The AppRole whose login hands out the token: its role id and secret id.
    approle: Option<(String, Zeroizing<String>)>,
}

/// Where the token's lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lease {
    /// No TTL was set: it never runs down.
    Unlimited,
    /// This many seconds left.
    Left(u64),
    /// Run out: every call with it is refused.
    Expired,
}

impl VaultState {
    /// The state of a process whose token has a lease of `ttl` (`None`: it never runs down) and
    /// is handed out by an AppRole login with `approle` (role id, secret id), if given.
    pub(crate) fn new(ttl: Option<Duration>, approle: Option<(String, Zeroizing<String>)>) -> Self {
        Self { token_ttl: ttl.map(|t| t.as_secs().max(1)), approle, ..Self::default() }
    }

    /// An AppRole login: the token gets a fresh lease (its creation TTL from now); the seconds of it.
    fn login(&self) -> u64 {
        let Some(ttl) = self.token_ttl else {
            return TOKEN_TTL_SECS;
        };
        self.token_issued();
        *self.token_expires.lock().unwrap_or_else(|p| p.into_inner()) = Some(unix_now() + ttl);
        ttl
    }

    /// The token's lease now, starting it at its first use.
    fn lease(&self) -> Lease {
        let Some(ttl) = self.token_ttl else {
            return Lease::Unlimited;
        };
        let issued = self.token_issued();
        let mut expires = self.token_expires.lock().unwrap_or_else(|p| p.into_inner());
        let end = *expires.get_or_insert(issued + ttl);
        match end.checked_sub(unix_now()) {
            Some(left) if left > 0 => Lease::Left(left),
            _ => Lease::Expired,
        }
    }

    /// `renew-self`: the lease is set to `asked` seconds from now (none: the creation TTL), at
    /// most up to the max TTL since the token's creation; the seconds granted.
    fn renew(&self, asked: Option<u64>) -> u64 {
        let Some(ttl) = self.token_ttl else {
            return asked.filter(|s| *s > 0).map_or(TOKEN_TTL_SECS, |s| s.min(TOKEN_TTL_SECS));
        };
        let now = unix_now();
        let max_left = (self.token_issued() + TOKEN_TTL_SECS).saturating_sub(now);
        let granted = asked.filter(|s| *s > 0).unwrap_or(ttl).min(max_left);
        *self.token_expires.lock().unwrap_or_else(|p| p.into_inner()) = Some(now + granted);
        granted
    }

    fn min_decryption_version(&self, key: &str) -> u32 {
        self.min_decryption_version.lock().unwrap_or_else(|p| p.into_inner()).get(key).copied().unwrap_or(1)
    }

    fn set_min_decryption_version(&self, key: &str, version: u32) {
        self.min_decryption_version.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_owned(), version);
    }

    fn token_issued(&self) -> u64 {
        *self.token_issued.get_or_init(unix_now)
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A node's Vault HA state: whether it holds the active lock, and the API address standbys
/// redirect to (its Vault listener).
#[derive(Debug, Default)]
pub struct HaState {
    active: AtomicBool,
    /// When it became active (Unix seconds), for `sys/leader`'s `active_time`.
    active_since: OnceLock<u64>,
    api_addr: OnceLock<String>,
}

impl HaState {
    /// Records the node's Vault API address (`http://127.0.0.1:8201`), once its listener is bound.
    pub(crate) fn set_api_addr(&self, addr: String) {
        let _ = self.api_addr.set(addr);
    }

    /// Its Vault API address, if it serves the Vault dialect.
    pub fn api_addr(&self) -> Option<&str> {
        self.api_addr.get().map(String::as_str)
    }

    /// Whether it holds the active lock.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// Gives the lock up (an outage cut the node off: another node may have taken it since).
    pub(crate) fn step_down(&self) {
        if self.active.swap(false, Ordering::SeqCst) {
            tracing::warn!(api_addr = self.api_addr().unwrap_or_default(), "vault: this node lost the active lock");
        }
    }

    fn claim(&self) {
        if !self.active.swap(true, Ordering::SeqCst) {
            let _ = self.active_since.set(unix_now());
            tracing::info!(api_addr = self.api_addr().unwrap_or_default(), "vault: this node is now the active node");
        }
    }
}

/// What `GET` [`HA_PATH`] answers: a node's place in the cluster and its HA state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaInfo {
    /// Its rank (the lowest-ranked unsealed node takes the lock when none holds it).
    pub rank: usize,
    /// Whether it is sealed.
    pub sealed: bool,
    /// Whether it holds the active lock.
    pub active: bool,
    /// Its Vault API address, if it serves the Vault dialect.
    pub api_addr: Option<String>,
}

/// This node's [`HaInfo`] (the admin API's answer at [`HA_PATH`]).
pub(crate) fn ha_info(node: &Node) -> HaInfo {
    HaInfo {
        rank: node.rank,
        sealed: node.shared.sealed(),
        active: node.vault_ha.is_active() && !node.shared.sealed(),
        api_addr: node.vault_ha.api_addr().map(str::to_owned),
    }
}

/// Which node serves a request that reached an unsealed node.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Leader {
    /// This one (it holds the lock, or has just taken it).
    Me,
    /// Another: its Vault API address.
    Peer(String),
}

/// Finds the active node: this one if it holds the lock; else the peer that does; else (none
/// does) the lowest-ranked unsealed node, which takes the lock — this one, or the peer a
/// redirect sends the client to, which takes it when the client arrives.
async fn leader(node: &Node) -> Leader {
    if node.vault_ha.is_active() {
        return Leader::Me;
    }
    let mut peers = Vec::new();
    if let Some(replicator) = &node.replicator {
        for (_, body) in replicator.get_from_peers(HA_PATH, HA_PROBE_DEADLINE).await {
            if let Some(info) = body.and_then(|b| serde_json::from_slice::<HaInfo>(&b).ok())
                && !info.sealed
                && let Some(addr) = info.api_addr.clone()
            {
                peers.push((info, addr));
            }
        }
    }
    if let Some((_, addr)) = peers.iter().filter(|(info, _)| info.active).min_by_key(|(info, _)| info.rank) {
        return Leader::Peer(addr.clone());
    }
    match peers.iter().filter(|(info, _)| info.rank < node.rank).min_by_key(|(info, _)| info.rank) {
        Some((_, addr)) => Leader::Peer(addr.clone()),
        None => {
            node.vault_ha.claim();
            Leader::Me
        }
    }
}

/// A standby's answer to a request it does not serve: 307 to the active node's address with the
/// same path and query, no body (Vault's `respondStandby`).
fn redirect(active: &str, uri: &Uri) -> Response {
    let target = format!("{}{}", active.trim_end_matches('/'), uri.path_and_query().map_or("/", |pq| pq.as_str()));
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(value) = HeaderValue::from_str(&target) {
        response.headers_mut().insert(axum::http::header::LOCATION, value);
    }
    response
}

/// Any request under no `/v1/` path: Vault's `{"errors": […]}` with 404, not the router's empty one.
pub(crate) async fn unrouted(method: Method, uri: Uri) -> Response {
    let message = super::call::unrouted_message(&method, &uri, "under /v1/transit/… and /v1/sys/…");
    let error = VaultError::new(404, ErrorCode::InvalidParameter, message);
    super::call::unrouted_answer(error.status, &error.body(), CONTENT_TYPE)
}

/// An error as Vault shapes it: a status and `{"errors": [message]}`.
struct VaultError {
    status: u16,
    message: String,
    /// The native code the audit log records.
    code: ErrorCode,
    /// Seconds in `Retry-After` (a throttled call).
    retry_after_secs: Option<u64>,
}

impl VaultError {
    fn new(status: u16, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), code, retry_after_secs: None }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, ErrorCode::InvalidParameter, message)
    }

    fn invalid_ciphertext(message: impl Into<String>) -> Self {
        Self::new(400, ErrorCode::InvalidCiphertext, message)
    }

    fn denied(code: ErrorCode) -> Self {
        Self::new(403, code, PERMISSION_DENIED)
    }

    fn body(&self) -> Value {
        json!({ "errors": [self.message] })
    }
}

impl From<KmsError> for VaultError {
    /// By the native code, so a new [`KmsError`] variant maps without an edit here.
    fn from(error: KmsError) -> Self {
        let code = error.code();
        let (status, message) = match &error {
            KmsError::Sealed => (503, "Vault is sealed".to_owned()),
            KmsError::Throttling { .. } => (429, "rate limit quota exceeded (injected fault: throttle)".to_owned()),
            KmsError::Forbidden { .. } => (403, PERMISSION_DENIED.to_owned()),
            KmsError::KeyNotFound(_) => (400, "encryption key not found".to_owned()),
            _ => {
                let status = match code {
                    ErrorCode::InvalidParameter | ErrorCode::InvalidCiphertext | ErrorCode::KeyNotEnabled => 400,
                    ErrorCode::InvalidAccessKeyId
                    | ErrorCode::SignatureDoesNotMatch
                    | ErrorCode::RequestTimeTooSkewed
                    | ErrorCode::RequestReplayed
                    | ErrorCode::Forbidden => 403,
                    ErrorCode::KeyNotFound => 404,
                    ErrorCode::KeyAlreadyExists => 400,
                    ErrorCode::Throttling => 429,
                    ErrorCode::InternalFailure => 500,
                    ErrorCode::Sealed | ErrorCode::ServiceUnavailable => 503,
                };
                (status, error.to_string())
            }
        };
        let retry_after_secs = match error {
            KmsError::Throttling { retry_after_secs } => Some(retry_after_secs),
            _ => None,
        };
        Self { status, message, code, retry_after_secs }
    }
}

impl From<SealError> for VaultError {
    fn from(error: SealError) -> Self {
        match error {
            SealError::MalformedShare(_) | SealError::DuplicateShare { .. } | SealError::WrongShares { .. } => {
                Self::bad_request(error.to_string())
            }
            other => Self::new(500, ErrorCode::InternalFailure, other.to_string()),
        }
    }
}

/// The Transit and sys operations served, by Vault's path names (the audit log's `operation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Encrypt,
    Decrypt,
    ReadKey,
    CreateKey,
    RotateKey,
    ConfigKey,
    ListKeys,
    /// `auth/token/lookup-self`: the token's own properties.
    LookupSelf,
    /// `auth/token/renew-self`: a new lease for the token.
    RenewSelf,
    /// `auth/approle/login`: the token, for a role id and secret id.
    AppRoleLogin,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Encrypt => "transit/encrypt",
            Self::Decrypt => "transit/decrypt",
            Self::ReadKey => "transit/keys/read",
            Self::CreateKey => "transit/keys/create",
            Self::RotateKey => "transit/keys/rotate",
            Self::ConfigKey => "transit/keys/config",
            Self::ListKeys => "transit/keys/list",
            Self::LookupSelf => "auth/token/lookup-self",
            Self::RenewSelf => "auth/token/renew-self",
            Self::AppRoleLogin => "auth/approle/login",
        }
    }

    /// The native action (faults and audit counters use it). `config` is DisableKey: raising
    /// `min_decryption_version` disables the older versions for decryption. The token's own
    /// look-up and renewal are DescribeKey, the native read of metadata that changes no key (a
    /// renewal changes only the token's lease); the audit record's `operation` names them.
    fn action(self) -> Action {
        match self {
            Self::Encrypt => Action::Encrypt,
            Self::Decrypt => Action::Decrypt,
            Self::ReadKey => Action::DescribeKey,
            Self::CreateKey => Action::CreateKey,
            Self::RotateKey => Action::RotateKey,
            Self::ListKeys => Action::ListKeys,
            Self::ConfigKey => Action::DisableKey,
            Self::LookupSelf | Self::RenewSelf | Self::AppRoleLogin => Action::DescribeKey,
        }
    }
}

/// What a request's method and path ask for.
enum Route {
    Health,
    Leader,
    SealStatus,
    Unseal,
    /// A Transit operation on a key (none for the list and the token's own operations).
    Op(Op, Option<String>),
}

/// The paths served, for the 404 of any other.
const SERVED: &str = "POST|PUT /v1/transit/encrypt/:name, /v1/transit/decrypt/:name, GET|POST /v1/transit/keys/:name, \
                      POST /v1/transit/keys/:name/rotate, POST /v1/transit/keys/:name/config, LIST /v1/transit/keys, \
                      GET /v1/sys/health, GET /v1/sys/leader, GET /v1/sys/seal-status, PUT /v1/sys/unseal, \
                      GET|POST /v1/auth/token/lookup-self, POST|PUT /v1/auth/token/renew-self, POST|PUT /v1/auth/approle/login";

fn route(method: &Method, uri: &Uri) -> Option<Route> {
    let path = uri.path().strip_prefix("/v1/")?.trim_end_matches('/');
    let write = *method == Method::POST || *method == Method::PUT;
    let read = *method == Method::GET || *method == Method::HEAD;
    let list = method.as_str() == "LIST" || (*method == Method::GET && uri.query().is_some_and(|q| q.split('&').any(|p| p == "list=true")));
    let parts: Vec<&str> = path.split('/').collect();
    let key = |name: &str| Some(name.to_owned());
    Some(match (parts.as_slice(), write, read) {
        (["sys", "health"], _, true) => Route::Health,
        (["sys", "leader"], _, true) => Route::Leader,
        (["sys", "seal-status"], _, true) => Route::SealStatus,
        (["sys", "unseal"], true, _) => Route::Unseal,
        (["auth", "token", "lookup-self"], _, _) if read || write => Route::Op(Op::LookupSelf, None),
        (["auth", "token", "renew-self"], true, _) => Route::Op(Op::RenewSelf, None),
        (["auth", "approle", "login"], true, _) => Route::Op(Op::AppRoleLogin, None),
        (["transit", "keys"], _, _) if list => Route::Op(Op::ListKeys, None),
        (["transit", "encrypt", name], true, _) => Route::Op(Op::Encrypt, key(name)),
        (["transit", "decrypt", name], true, _) => Route::Op(Op::Decrypt, key(name)),
        (["transit", "keys", name], _, true) => Route::Op(Op::ReadKey, key(name)),
        (["transit", "keys", name], true, _) => Route::Op(Op::CreateKey, key(name)),
        (["transit", "keys", name, "rotate"], true, _) => Route::Op(Op::RotateKey, key(name)),
        (["transit", "keys", name, "config"], true, _) => Route::Op(Op::ConfigKey, key(name)),
        _ => return None,
    })
}

/// Every request body field a served operation reads. No `Debug`: it holds the plaintext.
#[derive(Default, Deserialize)]
#[serde(default)]
struct VaultRequest {
    plaintext: Option<String>,
    ciphertext: Option<String>,
    context: Option<String>,
    batch_input: Option<Value>,
    key_version: Option<u32>,
    #[serde(rename = "type")]
    key_type: Option<String>,
    min_decryption_version: Option<i64>,
    /// `sys/unseal`: one share.
    key: Option<Zeroizing<String>>,
    /// `sys/unseal`: forget the shares given so far.
    reset: bool,
    /// `renew-self`: the lease asked for, in seconds or as a duration string (`"1h"`).
    increment: Option<Value>,
    /// `approle/login`: the role id.
    role_id: Option<String>,
    /// `approle/login`: the secret id.
    secret_id: Option<Zeroizing<String>>,
}

fn parse_request(body: &[u8]) -> Result<VaultRequest, VaultError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(VaultRequest::default());
    }
    serde_json::from_slice(body).map_err(|e| VaultError::bad_request(format!("error parsing JSON: {}", crate::persist::json_problem(&e))))
}

fn json_response(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, serde_json::to_vec(body).unwrap_or_default()).into_response();
    response.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// `/v1/…`: one Vault call.
pub(crate) async fn call(State(node): State<Arc<Node>>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let (op, name) = match route(&method, &uri) {
        Some(Route::Health) => return health(&node, &uri, method == Method::HEAD).await,
        Some(Route::Leader) => return sys_leader(&node).await,
        Some(Route::SealStatus) => return json_response(200, &seal_status(&node)),
        Some(Route::Unseal) => {
            return match unseal(&node, body).await {
                Ok(status) => json_response(200, &status),
                Err(error) => json_response(error.status, &error.body()),
            };
        }
        Some(Route::Op(op, name)) => {
            if !node.shared.sealed()
                && let Leader::Peer(active) = leader(&node).await
            {
                return redirect(&active, &uri);
            }
            (op, name)
        }
        None => {
            let error =
                VaultError::new(404, ErrorCode::InvalidParameter, format!("no handler for route `{}` (served: {SERVED})", uri.path()));
            return json_response(404, &error.body());
        }
    };
    let mut call = Call::new(&node, Dialect::Vault, op.name(), Some(op.action()));
    if let Some(name) = &name {
        // Named in the audit record also when a fault refuses the call.
        call.set_key(name, None);
    }
    let result = run(&mut call, op, name.as_deref(), &headers, body).await;
    match result {
        Ok(Some(body)) => call.answer(200, None, &body, CONTENT_TYPE, "x-vault-request-id"),
        Ok(None) => {
            call.finish(Ok(()));
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => {
            let mut response = call.answer(error.status, Some(error.code), &error.body(), CONTENT_TYPE, "x-vault-request-id");
            if let Some(secs) = error.retry_after_secs
                && let Ok(value) = HeaderValue::from_str(&secs.to_string())
            {
                response.headers_mut().insert(axum::http::header::RETRY_AFTER, value);
            }
            response
        }
    }
}

async fn run(call: &mut Call, op: Op, name: Option<&str>, headers: &HeaderMap, body: Body) -> Result<Option<Value>, VaultError> {
    let body = read_body(body, MAX_BODY, "the Vault dialect takes at most 64 KiB of plaintext").await?;
    let request = parse_request(&body)?;
    let store = call.enter().await?;
    // A login is how a client gets a token: it presents none.
    if op != Op::AppRoleLogin {
        check_token(call, headers)?;
    }
    call.admit(op.name())?;
    let mut ops = Ops { call, store: &store };
    let name = match (op, name) {
        (Op::ListKeys, _) => return Ok(Some(ops.list())),
        (Op::AppRoleLogin, _) => return ops.approle_login(&request).map(Some),
        (Op::LookupSelf, _) => return Ok(Some(ops.lookup_self(headers))),
        (Op::RenewSelf, _) => return ops.renew_self(headers, &request).map(Some),
        (_, Some(name)) => name,
        (op, None) => return Err(KmsError::InternalFailure(format!("{} was routed without a key name", op.name())).into()),
    };
    match op {
        Op::Encrypt => ops.encrypt(name, &request).await.map(Some),
        Op::Decrypt => ops.decrypt(name, &request).map(Some),
        Op::ReadKey => ops.read(name).map(Some),
        Op::CreateKey => ops.create(name, &request).await,
        Op::RotateKey => ops.rotate(name).await.map(Some),
        Op::ConfigKey => ops.config(name, &request).map(Some),
        Op::ListKeys | Op::LookupSelf | Op::RenewSelf | Op::AppRoleLogin => {
            Err(KmsError::InternalFailure(format!("{} was dispatched twice", op.name())).into())
        }
    }
}

/// The token a request carries: `X-Vault-Token`, else `Authorization: Bearer`.
fn given_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .or_else(|| headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")))
        .filter(|g| !g.is_empty())
}

/// `X-Vault-Token` (or `Authorization: Bearer`) must be the `--vault-token`.
fn check_token(call: &mut Call, headers: &HeaderMap) -> Result<(), VaultError> {
    let Some(given) = given_token(headers) else {
        return Err(VaultError::denied(ErrorCode::InvalidAccessKeyId));
    };
    call.set_access_key(Some("x-vault-token"));
    let expected = call.node.shared.vault_token.as_ref().map(|t| t.as_bytes());
    match expected {
        Some(expected) if constant_time_eq(expected, given.as_bytes()) => {}
        _ => return Err(VaultError::denied(ErrorCode::SignatureDoesNotMatch)),
    }
    // An expired token is revoked in Vault: refused like an unknown one.
    match call.node.shared.vault.lease() {
        Lease::Expired => Err(VaultError::denied(ErrorCode::Forbidden)),
        Lease::Unlimited | Lease::Left(_) => Ok(()),
    }
}

/// `GET /v1/sys/leader`: the HA state as Vault reports it (503 while sealed).
async fn sys_leader(node: &Node) -> Response {
    if node.shared.sealed() {
        return json_response(503, &VaultError::from(KmsError::Sealed).body());
    }
    // A node without peers is not in HA mode: Vault answers it with no leader.
    if node.replicator.is_none() {
        return json_response(
            200,
            &json!({ "ha_enabled": false, "is_self": false, "active_time": "0001-01-01T00:00:00Z", "leader_address": "",
                     "leader_cluster_address": "", "performance_standby": false, "performance_standby_last_remote_wal": 0 }),
        );
    }
    let leader = leader(node).await;
    let address = match &leader {
        Leader::Me => node.vault_ha.api_addr().unwrap_or_default().to_owned(),
        Leader::Peer(addr) => addr.clone(),
    };
    let active_time = node
        .vault_ha
        .active_since
        .get()
        .map(|secs| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(*secs)).to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
    json_response(
        200,
        &json!({
            "ha_enabled": true,
            "is_self": leader == Leader::Me,
            "active_time": active_time,
            "leader_address": address,
            "leader_cluster_address": "",
            "performance_standby": false,
            "performance_standby_last_remote_wal": 0,
        }),
    )
}

/// `GET|HEAD /v1/sys/health` with Vault's query parameters (`standbyok`, `activecode`,
/// `standbycode`, `sealedcode`, `uninitcode`, `perfstandbyok`, `performancestandbycode`, …):
/// 200 active, 429 standby, 503 sealed.
async fn health(node: &Node, uri: &Uri, head: bool) -> Response {
    let query: BTreeMap<String, String> = Query::try_from_uri(uri).map(|Query(q)| q).unwrap_or_default();
    let flag = |name: &str| query.get(name).is_some_and(|v| v.is_empty() || v.eq_ignore_ascii_case("true") || v == "1");
    let code = |name: &str, default: u16| {
        query.get(name).and_then(|v| v.parse::<u16>().ok()).filter(|c| (100..600).contains(c)).unwrap_or(default)
    };
    let sealed = node.shared.sealed();
    let standby = !sealed && leader(node).await != Leader::Me;
    let status = if sealed {
        code("sealedcode", 503)
    } else if standby && !flag("standbyok") {
        code("standbycode", 429)
    } else {
        code("activecode", 200)
    };
    let now = unix_now();
    let body = json!({
        "initialized": true,
        "sealed": sealed,
        "standby": standby,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": now,
        "version": VERSION,
        "cluster_name": "mock-kms",
        "cluster_id": "mock-kms-cluster",
    });
    let mut response = json_response(status, &body);
    if head {
        *response.body_mut() = Body::empty();
    }
    response
}

/// `GET /v1/sys/seal-status` (also the answer of `PUT /v1/sys/unseal`).
fn seal_status(node: &Node) -> Value {
    let status = node.shared.seal_status();
    let (threshold, shares) = if node.shared.unsealer.is_some() { (status.threshold, status.shares) } else { (1, 1) };
    json!({
        "type": "shamir",
        "initialized": true,
        "sealed": node.shared.sealed(),
        "t": threshold,
        "n": shares,
        "progress": status.progress,
        "nonce": "",
        "version": VERSION,
        "build_date": "",
        "migration": false,
        "cluster_name": "mock-kms",
        "cluster_id": "mock-kms-cluster",
        "recovery_seal": false,
        "storage_type": "mock-kms",
    })
}

/// `PUT /v1/sys/unseal` `{"key": share}` or `{"reset": true}`: drives the Shamir seal (not
/// audited, as the admin API's unseal).
async fn unseal(node: &Arc<Node>, body: Body) -> Result<Value, VaultError> {
    let request = parse_request(&read_body(body, MAX_BODY, "an unseal share is 44 characters").await?)?;
    let shared = node.shared.clone();
    if request.reset {
        if let Some(unsealer) = &shared.unsealer
            && shared.sealed()
        {
            unsealer.reset();
        }
        return Ok(seal_status(node));
    }
    let share = request
        .key
        .as_ref()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| VaultError::bad_request("'key' must be specified in request body as JSON, or 'reset' set to true"))?;
    shared.unseal(share).await?;
    Ok(seal_status(node))
}

struct Ops<'a> {
    call: &'a mut Call,
    store: &'a Arc<KeyStore>,
}

impl Ops<'_> {
    fn vault(&self) -> &VaultState {
        &self.call.node.shared.vault
    }

    /// The key's metadata, or 404 with no message (as Vault reads a missing key).
    fn key(&self, name: &str) -> Result<KeyMetadata, VaultError> {
        self.store.describe(name).map_err(|error| match error {
            KmsError::KeyNotFound(_) => VaultError::new(404, ErrorCode::KeyNotFound, ""),
            other => other.into(),
        })
    }

    fn key_json(&self, name: &str, metadata: &KeyMetadata) -> Value {
        let metadata = self.call.shown(metadata.clone());
        let created = humantime::parse_rfc3339_weak(&metadata.creation_date)
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let keys: BTreeMap<String, u64> = (1..=metadata.key_version_ids.len()).map(|n| (n.to_string(), created)).collect();
        let usable = metadata.key_state == KeyState::Enabled;
        json!({
            "name": name,
            "type": KEY_TYPE,
            "latest_version": metadata.key_version_ids.len(),
            "min_decryption_version": self.vault().min_decryption_version(name),
            "min_encryption_version": 0,
            "min_available_version": 0,
            "keys": keys,
            "deletion_allowed": false,
            "derived": false,
            "exportable": false,
            "allow_plaintext_backup": false,
            "auto_rotate_period": 0,
            "imported_key": false,
            "supports_encryption": usable,
            "supports_decryption": usable,
            "supports_derivation": true,
            "supports_signing": false,
        })
    }

    fn envelope(&self, data: Value) -> Value {
        json!({
            "request_id": self.call.request_id,
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": data,
            "wrap_info": null,
            "warnings": null,
            "auth": null,
        })
    }

    /// `auth/token/lookup-self`: the token's properties as Vault reports a service token's
    /// (`id` is the token the caller sent, as in Vault's answer).
    fn lookup_self(&self, headers: &HeaderMap) -> Value {
        let issued = self.vault().token_issued();
        let time = |secs: u64| humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string();
        let (creation_ttl, ttl) = match self.vault().lease() {
            Lease::Unlimited => (TOKEN_TTL_SECS, TOKEN_TTL_SECS),
            Lease::Left(left) => (self.vault().token_ttl.unwrap_or(TOKEN_TTL_SECS), left),
            Lease::Expired => (self.vault().token_ttl.unwrap_or(TOKEN_TTL_SECS), 0),
        };
        self.envelope(json!({
            "accessor": "mock-kms-token-accessor",
            "creation_time": issued,
            "creation_ttl": creation_ttl,
            "display_name": "token",
            "entity_id": "",
            "expire_time": time(unix_now() + ttl),
            "explicit_max_ttl": 0,
            "id": given_token(headers).unwrap_or_default(),
            "issue_time": time(issued),
            "meta": null,
            "num_uses": 0,
            "orphan": true,
            "path": "auth/token/create",
            "policies": TOKEN_POLICIES,
            "renewable": true,
            "ttl": ttl,
            "type": "service",
        }))
    }

    /// `auth/token/renew-self` `{"increment": …}`: Vault's `auth` block with the lease granted
    /// (the increment, at most [`TOKEN_TTL_SECS`]; none asked for is the full TTL).
    fn renew_self(&self, headers: &HeaderMap, request: &VaultRequest) -> Result<Value, VaultError> {
        let asked = match &request.increment {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => {
                Some(n.as_u64().ok_or_else(|| VaultError::bad_request("increment must be a whole number of seconds"))?)
            }
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(match s.parse::<u64>() {
                Ok(secs) => secs,
                Err(_) => humantime::parse_duration(s)
                    .map_err(|_| VaultError::bad_request(format!("error parsing increment: time: invalid duration {s:?}")))?
                    .as_secs(),
            }),
            Some(_) => return Err(VaultError::bad_request("increment must be a number of seconds or a duration string")),
        };
        let granted = self.vault().renew(asked);
        Ok(self.auth_answer(given_token(headers).unwrap_or_default(), Value::Null, granted))
    }

    /// Vault's answer to a login or a renewal: the `auth` block with `token`, its `metadata` and
    /// its lease.
    fn auth_answer(&self, token: &str, metadata: Value, lease_duration: u64) -> Value {
        let mut answer = self.envelope(Value::Null);
        answer["auth"] = json!({
            "client_token": token,
            "accessor": "mock-kms-token-accessor",
            "policies": TOKEN_POLICIES,
            "token_policies": TOKEN_POLICIES,
            "metadata": metadata,
            "lease_duration": lease_duration,
            "renewable": true,
            "entity_id": "",
            "token_type": "service",
            "orphan": true,
            "num_uses": 0,
        });
        answer
    }

    /// `auth/approle/login` `{"role_id", "secret_id"}`: Vault's `auth` block with the token and a
    /// fresh lease, as Vault answers an AppRole login (the mock has one token: a login hands it
    /// out again, its lease starting over). Wrong or missing ids: 400 as Vault answers them; no
    /// AppRole configured: 400 as Vault answers a role it does not know.
    fn approle_login(&mut self, request: &VaultRequest) -> Result<Value, VaultError> {
        let role_id = request.role_id.as_deref().filter(|r| !r.is_empty()).ok_or_else(|| VaultError::bad_request("missing role_id"))?;
        let secret_id = request.secret_id.as_ref().filter(|s| !s.is_empty()).ok_or_else(|| VaultError::bad_request("missing secret_id"))?;
        self.call.set_access_key(Some("approle"));
        let invalid = || VaultError::new(400, ErrorCode::SignatureDoesNotMatch, "invalid role or secret ID");
        let Some((expected_role, expected_secret)) = &self.vault().approle else {
            return Err(invalid());
        };
        let role_ok = constant_time_eq(expected_role.as_bytes(), role_id.as_bytes());
        let secret_ok = constant_time_eq(expected_secret.as_bytes(), secret_id.as_bytes());
        if !(role_ok && secret_ok) {
            return Err(invalid());
        }
        let token = self.call.node.shared.vault_token.clone().ok_or_else(|| {
            VaultError::new(500, ErrorCode::InternalFailure, "the mock KMS has no --vault-token to hand out on an AppRole login")
        })?;
        let lease = self.vault().login();
        Ok(self.auth_answer(token.as_str(), json!({ "role_name": "mock-kms" }), lease))
    }

    fn list(&self) -> Value {
        let keys: Vec<String> = self.store.list().into_iter().map(|m| m.key_id).collect();
        self.envelope(json!({ "keys": keys }))
    }

    fn read(&self, name: &str) -> Result<Value, VaultError> {
        let metadata = self.key(name)?;
        Ok(self.envelope(self.key_json(name, &metadata)))
    }

    /// Creates the key (a key that exists is left as it is, as Vault does); 204.
    async fn create(&mut self, name: &str, request: &VaultRequest) -> Result<Option<Value>, VaultError> {
        match request.key_type.as_deref() {
            None | Some(KEY_TYPE) => {}
            Some(other) => return Err(VaultError::bad_request(format!("unknown key type: {other} (the mock serves {KEY_TYPE})"))),
        }
        if !self.store.contains(name) {
            self.store.create_key(name, KeySpec::Aes256)?;
            self.call.node.commit().await?;
        }
        Ok(None)
    }

    async fn rotate(&mut self, name: &str) -> Result<Value, VaultError> {
        self.key(name)?;
        self.call.check_fault_disabled(name, None)?;
        let metadata = self.store.rotate(name)?;
        self.call.set_key(name, Some(&metadata.current_key_version_id));
        self.call.node.commit().await?;
        Ok(self.envelope(self.key_json(name, &metadata)))
    }

    fn config(&mut self, name: &str, request: &VaultRequest) -> Result<Value, VaultError> {
        let metadata = self.key(name)?;
        if let Some(wanted) = request.min_decryption_version {
            let latest = metadata.key_version_ids.len() as i64;
            if wanted > latest {
                return Err(VaultError::bad_request("cannot set min decryption version to a value greater than the latest version"));
            }
            // 0 (or below) means the oldest version, as in Vault.
            self.vault().set_min_decryption_version(name, u32::try_from(wanted.max(1)).unwrap_or(1));
        }
        Ok(self.envelope(self.key_json(name, &metadata)))
    }

    fn context(request: &VaultRequest) -> Result<BTreeMap<String, String>, VaultError> {
        match request.context.as_deref().filter(|c| !c.is_empty()) {
            None => Ok(BTreeMap::new()),
            Some(context) => {
                B64.decode(context).map_err(|_| VaultError::bad_request("failed to base64-decode context"))?;
                Ok(BTreeMap::from([(CONTEXT_KEY.to_owned(), context.to_owned())]))
            }
        }
    }

    /// Encrypts with the latest version; an unknown key is created first (Vault's upsert).
    async fn encrypt(&mut self, name: &str, request: &VaultRequest) -> Result<Value, VaultError> {
        if request.batch_input.is_some() {
            return Err(VaultError::bad_request("batch_input is not served by the mock KMS: encrypt one plaintext per request"));
        }
        if let Some(version) = request.key_version.filter(|v| *v != 0) {
            return Err(VaultError::bad_request(format!(
                "key_version {version} is not served by the mock KMS: encryption uses the latest version"
            )));
        }
        let plaintext = Zeroizing::new(
            B64.decode(request.plaintext.as_deref().ok_or_else(|| VaultError::bad_request("missing plaintext to encrypt"))?)
                .map_err(|_| VaultError::bad_request("failed to base64-decode plaintext"))?,
        );
        let context = Self::context(request)?;
        if !self.store.contains(name) {
            self.store.create_key(name, KeySpec::Aes256)?;
            self.call.node.commit().await?;
        }
        self.call.check_fault_disabled(name, None)?;
        let sealed = self.store.encrypt_up_to(name, &plaintext, &context, MAX_PLAINTEXT)?;
        self.call.set_key(name, Some(&sealed.version_id));
        let metadata = self.store.describe(name)?;
        let number = version_number(&metadata, &sealed.version_id)
            .ok_or_else(|| KmsError::InternalFailure(format!("key `{name}` lost the version it just used")))?;
        let mut blob = sealed.blob;
        if let Some(pick) = self.call.corruption() {
            crate::faults::flip_byte(&mut blob, pick);
        }
        Ok(self.envelope(json!({ "ciphertext": format!("vault:v{number}:{}", B64.encode(blob)), "key_version": number })))
    }

    fn decrypt(&mut self, name: &str, request: &VaultRequest) -> Result<Value, VaultError> {
        if request.batch_input.is_some() {
            return Err(VaultError::bad_request("batch_input is not served by the mock KMS: decrypt one ciphertext per request"));
        }
        let ciphertext = request.ciphertext.as_deref().ok_or_else(|| VaultError::bad_request("missing ciphertext to decrypt"))?;
        let context = Self::context(request)?;
        let rest = ciphertext.strip_prefix("vault:").ok_or_else(|| VaultError::invalid_ciphertext("invalid ciphertext: no prefix"))?;
        let (version, encoded) =
            rest.split_once(':').ok_or_else(|| VaultError::invalid_ciphertext("invalid ciphertext: wrong number of fields"))?;
        let number = version
            .strip_prefix('v')
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| VaultError::invalid_ciphertext("invalid ciphertext: version number could not be decoded"))?;
        let blob = B64.decode(encoded).map_err(|_| VaultError::invalid_ciphertext("invalid ciphertext: could not decode base64"))?;
        let metadata = self.store.describe(name)?;
        let latest = metadata.key_version_ids.len() as u32;
        if number > latest {
            return Err(VaultError::invalid_ciphertext("invalid ciphertext: version is too new"));
        }
        if number < self.vault().min_decryption_version(name) {
            return Err(VaultError::invalid_ciphertext("ciphertext or signature version is disallowed by policy (too old)"));
        }
        let failed = || VaultError::invalid_ciphertext("cipher: message authentication failed");
        let parsed = blob::parse(&blob).map_err(|_| failed())?;
        let expected = &metadata.key_version_ids[number as usize - 1];
        if parsed.key_id != name || parsed.version_id != expected {
            return Err(failed());
        }
        self.call.set_key(name, Some(expected));
        self.call.check_fault_disabled(name, Some(expected))?;
        let opened = self.store.decrypt(&blob, &context).map_err(|error| match error {
            KmsError::InvalidCiphertext(_) | KmsError::KeyVersionNotFound { .. } => failed(),
            other => other.into(),
        })?;
        let mut plaintext = Zeroizing::new(opened.plaintext.to_vec());
        if let Some(pick) = self.call.corruption() {
            crate::faults::flip_byte(&mut plaintext, pick);
        }
        Ok(self.envelope(json!({ "plaintext": B64.encode(&*plaintext) })))
    }
}

/// `version_id`'s number: its place (from 1) among the key's versions, oldest first.
fn version_number(metadata: &KeyMetadata, version_id: &str) -> Option<u32> {
    metadata.key_version_ids.iter().position(|v| v == version_id).map(|i| i as u32 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(method: &str, path: &str) -> Option<(Op, Option<String>)> {
        let uri: Uri = path.parse().unwrap();
        match route(&Method::from_bytes(method.as_bytes()).unwrap(), &uri)? {
            Route::Op(op, name) => Some((op, name)),
            Route::Health => Some((Op::ReadKey, Some("<health>".into()))),
            Route::Leader => Some((Op::ReadKey, Some("<leader>".into()))),
            Route::SealStatus => Some((Op::ReadKey, Some("<seal-status>".into()))),
            Route::Unseal => Some((Op::ReadKey, Some("<unseal>".into()))),
        }
    }

    #[test]
    fn routes_follow_vaults_paths_and_methods() {
        assert_eq!(routed("PUT", "/v1/transit/encrypt/k"), Some((Op::Encrypt, Some("k".into()))));
        assert_eq!(routed("POST", "/v1/transit/decrypt/k"), Some((Op::Decrypt, Some("k".into()))));
        assert_eq!(routed("GET", "/v1/transit/keys/k"), Some((Op::ReadKey, Some("k".into()))));
        assert_eq!(routed("POST", "/v1/transit/keys/k"), Some((Op::CreateKey, Some("k".into()))));
        assert_eq!(routed("POST", "/v1/transit/keys/k/rotate"), Some((Op::RotateKey, Some("k".into()))));
        assert_eq!(routed("LIST", "/v1/transit/keys"), Some((Op::ListKeys, None)));
        assert_eq!(routed("GET", "/v1/transit/keys?list=true"), Some((Op::ListKeys, None)));
        assert_eq!(routed("PUT", "/v1/sys/unseal"), Some((Op::ReadKey, Some("<unseal>".into()))));
        assert_eq!(routed("GET", "/v1/sys/health?standbyok=true"), Some((Op::ReadKey, Some("<health>".into()))));
        assert_eq!(routed("GET", "/v1/auth/token/lookup-self"), Some((Op::LookupSelf, None)));
        assert_eq!(routed("POST", "/v1/auth/token/lookup-self"), Some((Op::LookupSelf, None)));
        assert_eq!(routed("PUT", "/v1/auth/token/renew-self"), Some((Op::RenewSelf, None)));
        assert_eq!(routed("POST", "/v1/auth/token/renew-self"), Some((Op::RenewSelf, None)));
        assert_eq!(routed("GET", "/v1/auth/token/renew-self"), None);
        assert_eq!(routed("POST", "/v1/auth/approle/login"), Some((Op::AppRoleLogin, None)));
        assert_eq!(routed("PUT", "/v1/auth/approle/login"), Some((Op::AppRoleLogin, None)));
        assert_eq!(routed("GET", "/v1/auth/approle/login"), None);
        assert_eq!(routed("GET", "/v1/sys/leader"), Some((Op::ReadKey, Some("<leader>".into()))));
        assert_eq!(routed("GET", "/v1/transit/encrypt/k"), None);
        assert_eq!(routed("POST", "/v1/secret/data/x"), None);
    }
}
