//! The floor for any plugin: a bare tonic unary service implementing `v2.KeyManagementService`
//! that returns the plaintext as the ciphertext (and back). Whatever a real plugin costs above
//! this is its own work: crypto, checks, logging, metrics.

use std::future::Future;
use std::path::Path;

use kms_wire::proto::{HEALTHZ_OK, KMS_V2_API_VERSION, v2};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

/// The key id the echo service reports.
pub const ECHO_KEY_ID: &str = "echo";

/// `v2.KeyManagementService` that echoes.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoService;

#[tonic::async_trait]
impl v2::key_management_service_server::KeyManagementService for EchoService {
    async fn status(&self, _request: Request<v2::StatusRequest>) -> Result<Response<v2::StatusResponse>, Status> {
        Ok(Response::new(v2::StatusResponse {
            version: KMS_V2_API_VERSION.to_owned(),
            healthz: HEALTHZ_OK.to_owned(),
            key_id: ECHO_KEY_ID.to_owned(),
        }))
    }

    async fn encrypt(&self, request: Request<v2::EncryptRequest>) -> Result<Response<v2::EncryptResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(v2::EncryptResponse {
            ciphertext: request.plaintext,
            key_id: ECHO_KEY_ID.to_owned(),
            annotations: Default::default(),
        }))
    }

    async fn decrypt(&self, request: Request<v2::DecryptRequest>) -> Result<Response<v2::DecryptResponse>, Status> {
        Ok(Response::new(v2::DecryptResponse { plaintext: request.into_inner().ciphertext }))
    }
}

/// Serves [`EchoService`] on a new socket at `socket` until `shutdown` resolves, then removes the socket file.
pub async fn serve(socket: &Path, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), std::io::Error> {
    let listener = tokio::net::UnixListener::bind(socket)?;
    let result = tonic::transport::Server::builder()
        .add_service(v2::key_management_service_server::KeyManagementServiceServer::new(EchoService))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    let _ = std::fs::remove_file(socket);
    result.map_err(std::io::Error::other)
}
