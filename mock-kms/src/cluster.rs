//! HA replication between nodes: every key-state change is pushed as a full [`Snapshot`] (with
//! its logical clock as version counter) to every peer, and a node that starts, comes back from an
//! outage or is unsealed pulls the snapshots of every live peer and merges them.
//!
//! Snapshots travel over the admin API (`GET`/`POST` [`SNAPSHOT_PATH`]) with their key material
//! sealed under a transport key derived from the cluster secret, and the body signed (HMAC-SHA256)
//! with another key derived from it: nodes with another secret are refused. Merging is a CRDT
//! (see [`crate::keystore`]), so pushes may arrive in any order, twice, or not at all and the
//! nodes still converge at the next exchange. This is lab-grade HA: no TLS, no membership changes
//! at runtime; the peers are fixed at start.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::api;
use crate::crypto::SealingKey;
use crate::error::ClusterError;
use crate::keystore::{KeyStore, Snapshot};

/// The admin path peers exchange snapshots on.
pub const SNAPSHOT_PATH: &str = "/admin/cluster/snapshot";
/// The header carrying a snapshot body's signature.
pub const SIGNATURE_HEADER: &str = "x-kms-cluster-signature";
/// The header naming the sending node.
pub const NODE_HEADER: &str = "x-kms-node-id";
/// The cluster secret used when none is given (the lab default; set your own with --cluster-secret).
pub const DEFAULT_CLUSTER_SECRET: &str = "mock-kms lab cluster secret (insecure default)";
/// The deadline of one exchange with one peer.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// Normalises a peer URL to `http://host:port` (a bare `host:port` gets `http://`).
pub fn parse_peer(url: &str) -> Result<String, ClusterError> {
    let bad = |problem: &str| ClusterError::BadPeer { url: url.to_owned(), problem: problem.to_owned() };
    let trimmed = url.trim().trim_end_matches('/');
    let with_scheme = if trimmed.contains("://") { trimmed.to_owned() } else { format!("http://{trimmed}") };
    let uri: http::Uri = with_scheme.parse().map_err(|_| bad("it does not parse as a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http is supported"));
    }
    let authority = uri.authority().ok_or_else(|| bad("it has no host"))?;
    if authority.port_u16().is_none() {
        return Err(bad("it has no port"));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(bad("it has a path"));
    }
    Ok(format!("http://{authority}"))
}

/// Pushes and pulls snapshots to and from a fixed set of peers.
pub struct Replicator {
    node_id: String,
    peers: Vec<String>,
    transport: SealingKey,
    mac_key: Zeroizing<Vec<u8>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator").field("node_id", &self.node_id).field("peers", &self.peers).finish_non_exhaustive()
    }
}

impl Replicator {
    /// A replicator for node `node_id` with `peers` (normalised URLs) sharing `secret`.
    pub fn new(node_id: &str, peers: Vec<String>, secret: &[u8]) -> Self {
        let mac = SealingKey::derive(secret, "mock-kms replication signature v1");
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(PEER_TIMEOUT));
        Self {
            node_id: node_id.to_owned(),
            peers,
            transport: SealingKey::derive(secret, "mock-kms replication transport v1"),
            mac_key: Zeroizing::new(mac.expose().to_vec()),
            client: Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector),
        }
    }

    /// The peers.
    pub fn peers(&self) -> &[String] {
        &self.peers
    }

    fn canonical(body: &[u8]) -> String {
        format!("mock-kms snapshot v1\n{}", hex::encode(Sha256::digest(body)))
    }

    fn signature(&self, body: &[u8]) -> String {
        api::sign(&self.mac_key, &Self::canonical(body))
    }

    /// A signed snapshot message of `store`: the body and its signature.
    pub fn encode(&self, store: &KeyStore) -> (Bytes, String) {
        let body = Bytes::from(serde_json::to_vec(&store.snapshot(&self.transport)).unwrap_or_default());
        let signature = self.signature(&body);
        (body, signature)
    }

    /// Verifies and parses a snapshot message from `peer`.
    pub fn decode(&self, body: &[u8], signature: Option<&str>, peer: &str) -> Result<Snapshot, ClusterError> {
        if !signature.is_some_and(|s| api::verify(&self.mac_key, &Self::canonical(body), s)) {
            return Err(ClusterError::BadSignature { peer: peer.to_owned() });
        }
        serde_json::from_slice(body).map_err(|e| ClusterError::Transport {
            peer: peer.to_owned(),
            message: format!("the snapshot does not parse: {}", crate::persist::json_problem(&e)),
        })
    }

    /// Merges a verified snapshot into `store`; whether anything changed.
    pub fn merge(&self, store: &KeyStore, snapshot: &Snapshot, peer: &str) -> Result<bool, ClusterError> {
        store.merge(snapshot, &self.transport).map_err(|source| ClusterError::Snapshot { peer: peer.to_owned(), source })
    }

    async fn exchange(
        &self,
        request: http::Request<Full<Bytes>>,
        peer: &str,
    ) -> Result<(http::StatusCode, Option<String>, Bytes), ClusterError> {
        let transport = |message: String| ClusterError::Transport { peer: peer.to_owned(), message };
        let response = tokio::time::timeout(PEER_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| transport(format!("no answer within {PEER_TIMEOUT:?}")))?
            .map_err(|e| transport(format!("unreachable: {e}")))?;
        let status = response.status();
        let signature = response.headers().get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = tokio::time::timeout(PEER_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| transport("the body did not arrive in time".into()))?
            .map_err(|e| transport(format!("reading the body failed: {e}")))?
            .to_bytes();
        Ok((status, signature, body))
    }

    /// Pushes `store`'s snapshot to every peer at once; returns how many accepted it.
    pub async fn push(&self, store: &KeyStore) -> usize {
        let (body, signature) = self.encode(store);
        let pushes = self.peers.iter().map(|peer| {
            let request = http::Request::post(format!("{peer}{SNAPSHOT_PATH}"))
                .header(SIGNATURE_HEADER, &signature)
                .header(NODE_HEADER, &self.node_id)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()));
            async move {
                let request = request.map_err(|e| ClusterError::Transport { peer: peer.clone(), message: e.to_string() })?;
                let (status, _, body) = self.exchange(request, peer).await?;
                if !status.is_success() {
                    let message = format!("refused the snapshot with {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
                    return Err(ClusterError::Transport { peer: peer.clone(), message });
                }
                Ok(())
            }
        });
        let results = join_all(pushes).await;
        let mut accepted = 0;
        for result in results {
            match result {
                Ok(()) => accepted += 1,
                Err(error) => {
                    tracing::debug!(%error, "replication push failed; the peer catches up when it next syncs")
                }
            }
        }
        accepted
    }

    /// `GET path` on every peer at once, each bounded by `deadline`: each peer's answer body when
    /// it answered 2xx, `None` when it did not answer or refused (down, sealed, starting).
    pub async fn get_from_peers(&self, path: &str, deadline: Duration) -> Vec<(String, Option<Bytes>)> {
        let gets = self.peers.iter().map(|peer| async move {
            let request = http::Request::get(format!("{peer}{path}")).header(NODE_HEADER, &self.node_id).body(Full::new(Bytes::new()));
            let Ok(request) = request else {
                return (peer.clone(), None);
            };
            let answer = tokio::time::timeout(deadline, self.exchange(request, peer)).await;
            let body = match answer {
                Ok(Ok((status, _, body))) if status.is_success() => Some(body),
                _ => None,
            };
            (peer.clone(), body)
        });
        join_all(gets).await
    }

    /// Pulls the snapshot of every live peer (verified, not merged yet).
    pub async fn pull(&self) -> Vec<(String, Snapshot)> {
        let pulls = self.peers.iter().map(|peer| async move {
            let request = http::Request::get(format!("{peer}{SNAPSHOT_PATH}"))
                .header(NODE_HEADER, &self.node_id)
                .body(Full::new(Bytes::new()))
                .map_err(|e| ClusterError::Transport { peer: peer.clone(), message: e.to_string() })?;
            let (status, signature, body) = self.exchange(request, peer).await?;
            if !status.is_success() {
                return Err(ClusterError::Transport { peer: peer.clone(), message: format!("answered {status} (sealed or starting?)") });
            }
            Ok((peer.clone(), self.decode(&body, signature.as_deref(), peer)?))
        });
        let mut snapshots = Vec::new();
        for result in join_all(pulls).await {
            match result {
                Ok(pulled) => snapshots.push(pulled),
                Err(error @ ClusterError::BadSignature { .. }) => {
                    tracing::error!(%error, "refusing a peer's snapshot")
                }
                Err(error) => tracing::debug!(%error, "no snapshot from a peer"),
            }
        }
        snapshots
    }
}

/// Runs futures concurrently on this task and collects their outputs in order.
async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::KeySpec;

    #[test]
    fn peer_urls_are_normalised_or_refused() {
        assert_eq!(parse_peer("127.0.0.1:8201").unwrap(), "http://127.0.0.1:8201");
        assert_eq!(parse_peer("http://h:1/").unwrap(), "http://h:1");
        for bad in ["https://h:1", "http://h", "http://h:1/x", "::"] {
            assert!(parse_peer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn messages_verify_only_with_the_same_secret() {
        let a = Replicator::new("a", vec![], b"s1");
        let b = Replicator::new("b", vec![], b"s1");
        let c = Replicator::new("c", vec![], b"s2");
        let store = KeyStore::new("a");
        store.create_key("k", KeySpec::Aes256).unwrap();
        let (body, signature) = a.encode(&store);
        let snapshot = b.decode(&body, Some(&signature), "a").unwrap();
        let copy = KeyStore::new("b");
        assert!(b.merge(&copy, &snapshot, "a").unwrap());
        assert!(copy.contains("k"));
        assert!(matches!(c.decode(&body, Some(&signature), "a"), Err(ClusterError::BadSignature { .. })));
        assert!(matches!(b.decode(&body, None, "a"), Err(ClusterError::BadSignature { .. })));
    }
}
