//! A node's accept loop: HTTP/1.1 connections served by the node's router, an `outage` fault
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

use crate::faults::ActiveFaults;
use crate::node::Node;

/// How long in-flight calls may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often a node in recovery retries binding its address.
const REBIND_INTERVAL: Duration = Duration::from_millis(100);

enum Stop {
    Outage,
    Shutdown,
}

/// Serves `node` on `listener` until shutdown, going down and up with `outage` faults.
pub(crate) async fn serve(node: Arc<Node>, listener: TcpListener, app: Router) {
    let mut shutdown = node.shared.shutdown.subscribe();
    let mut faults = node.faults.subscribe();
    let addr = listener.local_addr().unwrap_or(node.addr);
    let mut listener = Some(listener);
    while let Some(bound) = listener.take() {
        node.set_listening(true);
        if let Stop::Shutdown = accept_until_stopped(&node, bound, &app, &mut shutdown, &mut faults).await {
            node.set_listening(false);
            return;
        }
        node.set_listening(false);
        node.set_ready(false);
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
                        connections.spawn(serve_connection(stream, app.clone(), graceful_rx.clone()));
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

async fn serve_connection(stream: TcpStream, app: Router, mut graceful: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
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
