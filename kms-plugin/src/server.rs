//! Wires configuration, KEK, health, services, socket and metrics into a running plugin.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kms_wire::proto::{v1beta1, v2};
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::PluginConfig;
use crate::health::Health;
use crate::kek::{Kek, KekError};
use crate::metrics::Metrics;
use crate::service::{Shared, V1beta1Service, V2Service};
use crate::socket::{BoundSocket, SocketError};

/// The longest a Status health probe may take; kube-apiserver's default call timeout is 3 s.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the plugin could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The KEK backend could not be set up.
    #[error("cannot set up the KEK: {0}")]
    Kek(#[from] KekError),
    /// The socket could not be bound.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The metrics endpoint could not be served.
    #[error("cannot serve metrics on {addr}: {source} ({hint})", hint = kms_lab_cli_common::hint::listen(source, addr))]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A plugin whose KEK is ready and whose socket is bound, not yet serving.
pub struct Plugin {
    config: PluginConfig,
    socket: BoundSocket,
    shared: Shared,
}

impl Plugin {
    /// Sets up the KEK and binds the socket, so every start-up error surfaces here.
    pub fn bind(config: PluginConfig) -> Result<Self, ServeError> {
        let kek = Arc::new(Kek::from_config(&config.kek)?);
        let socket = BoundSocket::bind(&config.socket)?;
        let health = Arc::new(Health::new(kek.clone(), config.health_ttl, PROBE_TIMEOUT));
        let shared = Shared { kek, health, metrics: Arc::new(Metrics::default()) };
        Ok(Self { config, socket, shared })
    }

    /// The KEK, e.g. to reload it on SIGHUP.
    pub fn kek(&self) -> Arc<Kek> {
        self.shared.kek.clone()
    }

    /// What the services share (KEK, health, metrics), e.g. to build wrapping services for [`Plugin::serve_with`].
    pub fn shared(&self) -> Shared {
        self.shared.clone()
    }

    /// Serves until `shutdown` resolves; in-flight calls finish, then the socket file is removed.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let v2 = V2Service(self.shared.clone());
        let v1 = V1beta1Service(self.shared.clone());
        self.serve_with(v2, v1, shutdown).await
    }

    /// Like [`Plugin::serve`], but with caller-supplied services (e.g. ones that wrap [`V2Service`]
    /// and [`V1beta1Service`]); the configured API selection still decides which are served.
    pub async fn serve_with<S2, S1>(mut self, v2: S2, v1: S1, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError>
    where
        S2: v2::key_management_service_server::KeyManagementService,
        S1: v1beta1::key_management_service_server::KeyManagementService,
    {
        let listener = self.socket.take_listener().ok_or_else(|| KekError::Internal("the socket was already served".into()))?;
        let listener = tokio::net::UnixListener::from_std(listener).map_err(|source| SocketError::Io {
            action: "serve",
            path: self.socket.path().to_owned(),
            source,
        })?;
        let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics_task = match self.config.metrics_addr {
            Some(addr) => {
                let metrics_listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Metrics { addr, source })?;
                let metrics = self.shared.metrics.clone();
                Some(tokio::spawn(crate::metrics::serve(metrics_listener, metrics, async {
                    let _ = metrics_stopped.await;
                })))
            }
            None => None,
        };
        let api = self.config.api;
        tracing::info!(socket = %self.socket.path().display(), v2 = api.v2(), v1beta1 = api.v1beta1(), "KMS plugin serving");
        let v2 = api.v2().then(|| v2::key_management_service_server::KeyManagementServiceServer::new(v2));
        let v1 = api.v1beta1().then(|| v1beta1::key_management_service_server::KeyManagementServiceServer::new(v1));
        let result = tonic::transport::Server::builder()
            .add_optional_service(v2)
            .add_optional_service(v1)
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
            .await;
        let _ = stop_metrics.send(());
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        tracing::info!(socket = %self.socket.path().display(), "KMS plugin stopped; removing socket");
        drop(self.socket);
        Ok(result?)
    }
}

/// Binds and serves `config` until `shutdown` resolves.
pub async fn serve(config: PluginConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    Plugin::bind(config)?.serve(shutdown).await
}
