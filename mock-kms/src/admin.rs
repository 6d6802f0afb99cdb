//! The admin API under `/admin/`, on the same listener as the KMS API.
//!
//! **For the lab only: it is unauthenticated.** Anyone who reaches it can change faults and
//! credentials, rotate keys and read the audit log. Admin calls are not audited and not subject to
//! faults (except `outage`, which takes the whole listener down).
//!
//! Bodies follow two conventions: the Vault/KMS-like endpoints (unseal, seal status, credentials,
//! keys, health) use PascalCase like the KMS API; lab data (fault profiles, audit records,
//! counters) uses snake_case, as in its YAML and JSON-lines files. Endpoints that act on one node
//! take `?node=ID` (or the node's index) to reach another node of the same process.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use serde::Deserialize;

use crate::api::AuditQuery;
use crate::api::admin::{AccessKeys, ClusterStatus, Health, KeyMetadataAnswer, Keys, NodeStatus, SetCurrentRequest, SnapshotPushAnswer};
use crate::api::faults::FaultProfile;
use crate::api::{ErrorBody, ErrorCode};
use crate::auth::Credential;
use crate::cluster::{NODE_HEADER, SIGNATURE_HEADER};
use crate::error::{KmsError, SealError};
use crate::keystore::KeyStore;
use crate::node::Node;
use crate::service::error_response;

/// The admin routes, with `node` as the node that serves them.
pub(crate) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/admin/health", get(health))
        .route("/admin/faults", get(get_faults).put(put_faults).delete(delete_faults))
        .route("/admin/audit", get(audit))
        .route("/admin/counters", get(counters))
        .route("/admin/unseal", post(unseal))
        .route("/admin/seal-status", get(seal_status))
        .route("/admin/credentials", put(put_credentials).get(get_credentials))
        .route("/admin/keys", get(list_keys))
        .route("/admin/keys/{key_id}/rotate", post(rotate))
        .route("/admin/keys/{key_id}/current", post(set_current))
        .route("/admin/keys/{key_id}/versions/{version_id}/disable", post(disable_version))
        .route("/admin/keys/{key_id}/versions/{version_id}/enable", post(enable_version))
        .route("/admin/keys/{key_id}/versions/{version_id}/destroy", post(destroy_version))
        .route("/admin/cluster", get(cluster_status))
        .route(crate::dialects::vault::HA_PATH, get(vault_ha))
        .route("/admin/policies", get(get_policies))
        .route("/admin/policies/{access_key}", put(put_policy).delete(delete_policy))
        .route(crate::cluster::SNAPSHOT_PATH, get(get_snapshot).post(post_snapshot))
}

fn bad_request(message: impl Into<String>) -> Response {
    error_response(&KmsError::InvalidParameter(message.into()), "")
}

fn admin_error(code: ErrorCode, message: String) -> Response {
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(ErrorBody { code, message, request_id: String::new() })).into_response()
}

/// `?node=ID|index`: which node of this process an admin call acts on.
#[derive(Debug, Default, Deserialize)]
struct NodeParam {
    node: Option<String>,
}

fn target(node: &Arc<Node>, param: &NodeParam) -> Result<Arc<Node>, Box<Response>> {
    let Some(wanted) = &param.node else {
        return Ok(node.clone());
    };
    let nodes = node.shared.nodes();
    nodes.iter().find(|n| n.id == *wanted || n.index.to_string() == *wanted).cloned().ok_or_else(|| {
        let known: Vec<String> = nodes.iter().map(|n| format!("{} ({})", n.id, n.index)).collect();
        Box::new(admin_error(ErrorCode::InvalidParameter, format!("no node `{wanted}` in this process (it has {})", known.join(", "))))
    })
}

/// `GET /admin/health`: 200 when the node serves `/v1/*`, else 503; the body says why.
async fn health(State(node): State<Arc<Node>>) -> Response {
    let sealed = node.shared.sealed();
    let ready = node.ready();
    let status = if sealed {
        "sealed"
    } else if ready {
        "ok"
    } else {
        "starting"
    };
    let store = node.keystore();
    let body = Health {
        status: status.to_owned(),
        node_id: node.id.clone(),
        sealed,
        ready,
        keys: store.map(|s| s.list().len()).unwrap_or_default(),
        clock: store.map(|s| s.clock()).unwrap_or_default(),
    };
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(body)).into_response()
}

async fn get_faults(State(node): State<Arc<Node>>, Query(param): Query<NodeParam>) -> Response {
    match target(&node, &param) {
        Ok(node) => axum::Json(node.faults.profile()).into_response(),
        Err(response) => *response,
    }
}

/// `PUT /admin/faults`: a JSON profile, or YAML with a `content-type` containing `yaml`.
async fn put_faults(State(node): State<Arc<Node>>, Query(param): Query<NodeParam>, headers: HeaderMap, body: Bytes) -> Response {
    let node = match target(&node, &param) {
        Ok(node) => node,
        Err(response) => return *response,
    };
    let yaml = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("yaml"));
    let profile = if yaml {
        FaultProfile::from_yaml(&String::from_utf8_lossy(&body)).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice::<FaultProfile>(&body).map_err(|e| format!("fault profile does not parse: {e}"))
    };
    let result = profile.and_then(|p| node.faults.set(p).map_err(|e| e.to_string()));
    match result {
        Ok(()) => axum::Json(node.faults.profile()).into_response(),
        Err(message) => bad_request(message),
    }
}

async fn delete_faults(State(node): State<Arc<Node>>, Query(param): Query<NodeParam>) -> Response {
    match target(&node, &param) {
        Ok(node) => {
            node.faults.clear();
            axum::Json(node.faults.profile()).into_response()
        }
        Err(response) => *response,
    }
}

/// `GET /admin/audit?action=&key_id=&outcome=&node=&since_seq=&since=&limit=`: JSON lines.
async fn audit(State(node): State<Arc<Node>>, Query(query): Query<AuditQuery>) -> Response {
    let mut out = String::new();
    for record in node.shared.audit.query(&query) {
        if let Ok(line) = serde_json::to_string(&record) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    ([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], out).into_response()
}

async fn counters(State(node): State<Arc<Node>>) -> Response {
    axum::Json(node.shared.audit.counters()).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct UnsealRequest {
    #[serde(default)]
    share: Option<zeroize::Zeroizing<String>>,
    #[serde(default)]
    reset: bool,
}

/// `POST /admin/unseal {"Share": "..."}` (or `{"Reset": true}`).
async fn unseal(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    let request: UnsealRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return bad_request(format!(
                "expected {{\"Share\": \"<base64 share>\"}} or {{\"Reset\": true}}: {}",
                crate::persist::json_problem(&e)
            ));
        }
    };
    if request.reset {
        if let Some(unsealer) = &node.shared.unsealer
            && node.shared.sealed()
        {
            unsealer.reset();
        }
        return axum::Json(node.shared.seal_status()).into_response();
    }
    let Some(share) = request.share else {
        return bad_request("expected {\"Share\": \"<base64 share>\"}");
    };
    match node.shared.unseal(&share).await {
        Ok(status) => axum::Json(status).into_response(),
        Err(error @ SealError::Open(_)) | Err(error @ SealError::Persist(_)) => {
            error_response(&KmsError::InternalFailure(error.to_string()), "")
        }
        Err(error) => bad_request(error.to_string()),
    }
}

async fn seal_status(State(node): State<Arc<Node>>) -> Response {
    axum::Json(node.shared.seal_status()).into_response()
}

/// `PUT /admin/credentials [{"AccessKey": "AK", "SecretKey": "SK"}, ...]`: replaces the whole set.
async fn put_credentials(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Vec<Credential>>(&body) {
        Ok(credentials) => {
            node.shared.auth.replace(credentials);
            tracing::info!(access_keys = ?node.shared.auth.access_keys(), "credentials replaced");
            axum::Json(AccessKeys { access_keys: node.shared.auth.access_keys() }).into_response()
        }
        Err(e) => bad_request(format!("expected [{{\"AccessKey\": \"..\", \"SecretKey\": \"..\"}}]: {}", crate::persist::json_problem(&e))),
    }
}

async fn get_credentials(State(node): State<Arc<Node>>) -> Response {
    axum::Json(AccessKeys { access_keys: node.shared.auth.access_keys() }).into_response()
}

async fn list_keys(State(node): State<Arc<Node>>) -> Response {
    match node.serving_keystore() {
        Ok(store) => axum::Json(Keys { keys: store.list() }).into_response(),
        Err(error) => error_response(&error, ""),
    }
}

/// `POST /admin/keys/{key_id}/rotate`: RotateKey without signing (replicated like any change).
async fn rotate(State(node): State<Arc<Node>>, Path(key_id): Path<String>) -> Response {
    change_key(&node, |store| store.rotate(&key_id)).await
}

/// Applies an admin change to a key on the serving keystore, replicates it, and answers with
/// the key's metadata.
async fn change_key(node: &Node, change: impl FnOnce(&KeyStore) -> Result<crate::api::KeyMetadata, KmsError>) -> Response {
    let result = async {
        let metadata = change(node.serving_keystore()?)?;
        node.commit().await?;
        Ok::<_, KmsError>(metadata)
    }
    .await;
    match result {
        Ok(key_metadata) => axum::Json(KeyMetadataAnswer { key_metadata }).into_response(),
        Err(error) => error_response(&error, ""),
    }
}

/// `POST /admin/keys/{key_id}/current {"VersionId": "…"}`: makes an existing version current
/// again (a rollback A→B→A), replicated like a rotation.
async fn set_current(State(node): State<Arc<Node>>, Path(key_id): Path<String>, body: Bytes) -> Response {
    let body: SetCurrentRequest = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => return admin_error(ErrorCode::InvalidParameter, format!("expected {{\"VersionId\": \"…\"}}: {error}")),
    };
    change_key(&node, |store| store.set_current(&key_id, &body.version_id)).await
}

/// `POST /admin/keys/{key_id}/versions/{version_id}/disable`: the version neither decrypts
/// (409 `KeyNotEnabled`) nor, when current, encrypts; keystore state, replicated like a rotation
/// and untouched by `DELETE /admin/faults`.
async fn disable_version(State(node): State<Arc<Node>>, Path((key_id, version_id)): Path<(String, String)>) -> Response {
    change_key(&node, |store| store.set_version_enabled(&key_id, &version_id, false)).await
}

/// `POST /admin/keys/{key_id}/versions/{version_id}/enable`: undoes a version's disable.
async fn enable_version(State(node): State<Arc<Node>>, Path((key_id, version_id)): Path<(String, String)>) -> Response {
    change_key(&node, |store| store.set_version_enabled(&key_id, &version_id, true)).await
}

/// `POST /admin/keys/{key_id}/versions/{version_id}/destroy`: the version's material is wiped and
/// it is disabled for good (a completed scheduled deletion); replicated like a rotation.
async fn destroy_version(State(node): State<Arc<Node>>, Path((key_id, version_id)): Path<(String, String)>) -> Response {
    change_key(&node, |store| store.destroy_version(&key_id, &version_id)).await
}

async fn get_policies(State(node): State<Arc<Node>>) -> Response {
    axum::Json(node.shared.policies.all()).into_response()
}

/// `PUT /admin/policies/{access_key}` with an [`crate::api::policy::AccessPolicy`]: replaces the
/// access key's policy (an allow-list); answers every policy.
async fn put_policy(State(node): State<Arc<Node>>, Path(access_key): Path<String>, body: Bytes) -> Response {
    let policy = match serde_json::from_slice::<crate::api::policy::AccessPolicy>(&body) {
        Ok(policy) => policy,
        Err(e) => {
            return bad_request(format!(
                "expected {{\"Statements\": [{{\"Actions\": [\"kms:GetSecretValue\"], \"Resources\": [\"secret/NAME\"]}}]}}: {}",
                crate::persist::json_problem(&e)
            ));
        }
    };
    match node.shared.policies.set(&access_key, policy) {
        Ok(()) => {
            tracing::info!(access_key, "access policy set");
            axum::Json(node.shared.policies.all()).into_response()
        }
        Err(problem) => bad_request(problem),
    }
}

/// `DELETE /admin/policies/{access_key}`: the access key may call everything again.
async fn delete_policy(State(node): State<Arc<Node>>, Path(access_key): Path<String>) -> Response {
    node.shared.policies.remove(&access_key);
    axum::Json(node.shared.policies.all()).into_response()
}

/// `GET /admin/cluster`: this node's peers and the status of every node of this process.
async fn cluster_status(State(node): State<Arc<Node>>) -> Response {
    let nodes = node
        .shared
        .nodes()
        .iter()
        .map(|n| NodeStatus {
            node_id: n.id.clone(),
            url: n.url(),
            ready: n.ready(),
            listening: n.listening(),
            hung_requests: n.faults.hung(),
            clock: n.keystore().map(|s| s.clock()).unwrap_or_default(),
        })
        .collect();
    let peers = node.replicator.as_ref().map(|r| r.peers().to_vec()).unwrap_or_default();
    axum::Json(ClusterStatus { node_id: node.id.clone(), peers, nodes }).into_response()
}

/// `GET /admin/vault/ha`: this node's Vault HA state ([`crate::dialects::vault::HaInfo`]), for
/// its peers to find the active node.
async fn vault_ha(State(node): State<Arc<Node>>) -> Response {
    axum::Json(crate::dialects::vault::ha_info(&node)).into_response()
}

/// `GET /admin/cluster/snapshot`: this node's signed snapshot, for a peer that syncs.
async fn get_snapshot(State(node): State<Arc<Node>>) -> Response {
    let (Some(replicator), Some(store)) = (&node.replicator, node.keystore()) else {
        return error_response(
            &KmsError::ServiceUnavailable(format!("node {} is not open (sealed or starting) or has no peers", node.id)),
            "",
        );
    };
    let (body, signature) = replicator.encode(store);
    (
        [
            (axum::http::header::CONTENT_TYPE, "application/json"),
            (axum::http::HeaderName::from_static(SIGNATURE_HEADER), signature.as_str()),
        ],
        body,
    )
        .into_response()
}

/// `POST /admin/cluster/snapshot`: a peer pushes its signed snapshot.
async fn post_snapshot(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(replicator) = &node.replicator else {
        return error_response(&KmsError::ServiceUnavailable(format!("node {} has no peers", node.id)), "");
    };
    let peer = headers.get(NODE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("a peer").to_owned();
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let snapshot = match replicator.decode(&body, signature, &peer) {
        Ok(snapshot) => snapshot,
        Err(error) => {
            tracing::error!(node = %node.id, %error, "refused a pushed snapshot");
            return admin_error(ErrorCode::Forbidden, error.to_string());
        }
    };
    match node.accept_push(&snapshot, &peer).await {
        Ok(changed) => axum::Json(SnapshotPushAnswer { changed }).into_response(),
        Err(message) => error_response(&KmsError::ServiceUnavailable(message), ""),
    }
}
