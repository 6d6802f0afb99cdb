//! The two gRPC services kube-apiserver calls, over one KEK.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use kms_wire::proto::{KMS_V1BETA1_API_VERSION, KMS_V2_API_VERSION, v1beta1, v2};
use tonic::{Request, Response, Status};

use crate::health::Health;
use crate::kek::{Claimed, Kek};
use crate::metrics::Metrics;
use crate::{RUNTIME_NAME, RUNTIME_VERSION};

/// What both services share: the KEK, its health and the metrics.
#[derive(Clone)]
pub struct Shared {
    /// The KEK backend.
    pub kek: Arc<Kek>,
    /// The cached KEK health.
    pub health: Arc<Health>,
    /// The call metrics.
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// Runs one call, then logs and counts it (method, uid, key id, latency, outcome; never payloads).
    ///
    /// A served call is logged at `debug` (`KMS_PLUGIN_LOG=debug` shows every one): at `info`, one
    /// formatted line and one `write(2)` per call were most of the plugin's own cost per round trip
    /// (`cargo xtask bench`). A refused call is logged at `warn`, as before.
    async fn observed<T>(
        &self,
        api: &'static str,
        method: &'static str,
        uid: &str,
        call: impl Future<Output = Result<(T, String), Status>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = call.await;
        let elapsed = started.elapsed();
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        match &result {
            Ok((_, key_id)) => {
                tracing::debug!(api, method, uid, key_id = %key_id, latency_ms, outcome = "ok", "served")
            }
            Err(status) => {
                tracing::warn!(api, method, uid, latency_ms, outcome = ?status.code(), error = %status.message(), "refused")
            }
        }
        self.metrics.observe(api, method, result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok), elapsed);
        result.map(|(response, _)| Response::new(response))
    }
}

/// `v2.KeyManagementService`.
pub struct V2Service(pub Shared);

#[tonic::async_trait]
impl v2::key_management_service_server::KeyManagementService for V2Service {
    async fn status(&self, _request: Request<v2::StatusRequest>) -> Result<Response<v2::StatusResponse>, Status> {
        self.0
            .observed("v2", "Status", "", async {
                let report = self.0.health.report().await;
                self.0.metrics.set_healthy(report.is_ok());
                let key_id = report.key_id.clone();
                Ok((v2::StatusResponse { version: KMS_V2_API_VERSION.to_owned(), healthz: report.healthz, key_id: report.key_id }, key_id))
            })
            .await
    }

    async fn encrypt(&self, request: Request<v2::EncryptRequest>) -> Result<Response<v2::EncryptResponse>, Status> {
        let request = request.into_inner();
        self.0
            .observed("v2", "Encrypt", &request.uid, async {
                let wrapped = crate::kek::as_caller(crate::kek::Caller::Request, self.0.kek.wrap(&request.plaintext)).await?;
                let key_id = wrapped.key_id.clone();
                Ok((
                    v2::EncryptResponse { ciphertext: wrapped.ciphertext, key_id: wrapped.key_id, annotations: wrapped.annotations },
                    key_id,
                ))
            })
            .await
    }

    async fn decrypt(&self, request: Request<v2::DecryptRequest>) -> Result<Response<v2::DecryptResponse>, Status> {
        let request = request.into_inner();
        self.0
            .observed("v2", "Decrypt", &request.uid, async {
                let claimed = Claimed { key_id: Some(&request.key_id), annotations: Some(&request.annotations) };
                let mut plaintext =
                    crate::kek::as_caller(crate::kek::Caller::Request, self.0.kek.unwrap(&request.ciphertext, claimed)).await?;
                // Hand the buffer itself to the response (it leaves the process anyway) instead of copying it.
                Ok((v2::DecryptResponse { plaintext: std::mem::take(&mut *plaintext).into() }, request.key_id.clone()))
            })
            .await
    }
}

/// `v1beta1.KeyManagementService`.
pub struct V1beta1Service(pub Shared);

fn check_v1_version(version: &str) -> Result<(), Status> {
    if version.is_empty() || version == KMS_V1BETA1_API_VERSION {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!("unsupported KMS API version `{version}`: this service speaks `{KMS_V1BETA1_API_VERSION}`")))
    }
}

#[tonic::async_trait]
impl v1beta1::key_management_service_server::KeyManagementService for V1beta1Service {
    async fn version(&self, _request: Request<v1beta1::VersionRequest>) -> Result<Response<v1beta1::VersionResponse>, Status> {
        self.0
            .observed("v1beta1", "Version", "", async {
                let response = v1beta1::VersionResponse {
                    version: KMS_V1BETA1_API_VERSION.to_owned(),
                    runtime_name: RUNTIME_NAME.to_owned(),
                    runtime_version: RUNTIME_VERSION.to_owned(),
                };
                Ok((response, String::new()))
            })
            .await
    }

    async fn encrypt(&self, request: Request<v1beta1::EncryptRequest>) -> Result<Response<v1beta1::EncryptResponse>, Status> {
        let request = request.into_inner();
        self.0
            .observed("v1beta1", "Encrypt", "", async {
                check_v1_version(&request.version)?;
                let wrapped = crate::kek::as_caller(crate::kek::Caller::Request, self.0.kek.wrap(&request.plain)).await?;
                Ok((v1beta1::EncryptResponse { cipher: wrapped.ciphertext }, wrapped.key_id))
            })
            .await
    }

    async fn decrypt(&self, request: Request<v1beta1::DecryptRequest>) -> Result<Response<v1beta1::DecryptResponse>, Status> {
        let request = request.into_inner();
        self.0
            .observed("v1beta1", "Decrypt", "", async {
                check_v1_version(&request.version)?;
                let mut plain =
                    crate::kek::as_caller(crate::kek::Caller::Request, self.0.kek.unwrap(&request.cipher, Claimed::default())).await?;
                Ok((v1beta1::DecryptResponse { plain: std::mem::take(&mut *plain).into() }, String::new()))
            })
            .await
    }
}
