//! A node's accept loop: HTTP/1.1 connections (over TLS on a listener given a [`TlsAcceptor`])
//! served by the node's router, an `outage` fault
//! that closes the listener and drops every open connection (clients see "connection refused")
//! and re-binds the same address when cleared, and a graceful stop on shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::faults::ActiveFaults;
use crate::node::Node;

/// How long in-flight calls may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// How often a node in recovery retries binding its address.
const REBIND_INTERVAL: Duration = Duration::from_millis(100);

enum Stop {
    Outage,
    Shutdown,
}

/// Serves `node` on `listener` (over TLS with `tls`) until shutdown, going down and up with
/// `outage` faults.
pub(crate) async fn serve(node: Arc<Node>, listener: TcpListener, app: Router, tls: Option<TlsAcceptor>) {
    let mut shutdown = node.shared.shutdown.subscribe();
    let mut faults = node.faults.subscribe();
    let addr = listener.local_addr().unwrap_or(node.addr);
    let mut listener = Some(listener);
    while let Some(bound) = listener.take() {
        node.set_listening(true);
        if let Stop::Shutdown = accept_until_stopped(&node, bound, &app, tls.as_ref(), &mut shutdown, &mut faults).await {
            node.set_listening(false);
            return;
        }
        node.set_listening(false);
        node.set_ready(false);
        // An active Vault node cut off from its cluster loses its lock: it comes back a standby.
        node.vault_ha.step_down();
        tracing::warn!(node = %node.id, %addr, "outage: listener closed, connections dropped");
        if !wait_for_recovery(&mut shutdown, &mut faults).await {
            return;
        }
        listener = rebind(&node, addr, &mut shutdown).await;
        if listener.is_some() {
            tracing::info!(node = %node.id, %addr, "outage over: listening again");
            let node = node.clone();
            tokio::spawn(async move {
                if node.keystore().is_some() {
                    node.sync().await;
                    node.set_ready(true);
                }
            });
        }
    }
}

async fn accept_until_stopped(
    node: &Arc<Node>,
    listener: TcpListener,
    app: &Router,
    tls: Option<&TlsAcceptor>,
    shutdown: &mut watch::Receiver<bool>,
    faults: &mut watch::Receiver<ActiveFaults>,
) -> Stop {
    let mut connections = JoinSet::new();
    let (graceful, graceful_rx) = watch::channel(false);
    let stop = if faults.borrow_and_update().outage() {
        Stop::Outage
    } else {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(serve_connection(stream, app.clone(), graceful_rx.clone(), tls.cloned()));
                    }
                    Err(error) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!(node = %node.id, %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                changed = faults.changed() => {
                    if changed.is_err() {
                        break Stop::Shutdown;
                    }
                    if faults.borrow_and_update().outage() {
                        break Stop::Outage;
                    }
                }
                _ = stopped(shutdown) => break Stop::Shutdown,
            }
        }
    };
    drop(listener);
    match stop {
        Stop::Outage => {
            connections.abort_all();
            while connections.join_next().await.is_some() {}
        }
        Stop::Shutdown => {
            let _ = graceful.send(true);
            let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} }).await;
            if drained.is_err() {
                tracing::warn!(node = %node.id, "calls still running after {SHUTDOWN_GRACE:?}; dropping them");
                connections.abort_all();
                while connections.join_next().await.is_some() {}
            }
        }
    }
    stop
}

async fn serve_connection(stream: TcpStream, app: Router, graceful: watch::Receiver<bool>, tls: Option<TlsAcceptor>) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => serve_http(stream, app, graceful).await,
        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => serve_http(stream, app, graceful).await,
            Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake not finished within {HANDSHAKE_DEADLINE:?}"),
        },
    }
}

async fn serve_http<S>(stream: S, app: Router, mut graceful: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let connection =
        hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stopped(&mut graceful) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// The TLS acceptor of a PEM certificate chain and key; the error says which file part is wrong.
pub(crate) fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate file is not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate file holds no PEM certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("the key file holds no PEM private key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Waits until the outage is cleared (true) or shutdown (false).
async fn wait_for_recovery(shutdown: &mut watch::Receiver<bool>, faults: &mut watch::Receiver<ActiveFaults>) -> bool {
    loop {
        if !faults.borrow_and_update().outage() {
            return true;
        }
        tokio::select! {
            changed = faults.changed() => if changed.is_err() { return false },
            _ = stopped(shutdown) => return false,
        }
    }
}

async fn rebind(node: &Arc<Node>, addr: std::net::SocketAddr, shutdown: &mut watch::Receiver<bool>) -> Option<TcpListener> {
    let mut warned = false;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Some(listener),
            Err(error) if !warned => {
                tracing::error!(node = %node.id, %addr, %error, "cannot listen again after the outage; retrying");
                warned = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(REBIND_INTERVAL) => {}
            _ = stopped(shutdown) => return None,
        }
    }
}

/// Resolves once `flag` is true (or its sender is gone).
pub(crate) async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}
