//! Generated protobuf and gRPC types (see `proto/` for the sources).

/// KMS v2 plugin API: `v2.KeyManagementService`.
pub mod v2 {
    #![allow(missing_docs)] // generated from the upstream .proto files, documented there
    tonic::include_proto!("v2");
}

/// KMS v1 plugin API: `v1beta1.KeyManagementService`.
pub mod v1beta1 {
    #![allow(missing_docs)] // generated from the upstream .proto files, documented there
    tonic::include_proto!("v1beta1");
}

/// What kube-apiserver stores in etcd after the `k8s:enc:kms:v2:<name>:` prefix.
pub mod storage {
    #![allow(missing_docs)] // generated from the upstream .proto files, documented there
    tonic::include_proto!("kmsv2storage");
}

/// The `version` a KMS v2 plugin reports in `StatusResponse`.
pub const KMS_V2_API_VERSION: &str = "v2";
/// The older KMS v2 version string kube-apiserver still accepts.
pub const KMS_V2BETA1_API_VERSION: &str = "v2beta1";
/// The `version` field of every KMS v1 request and `VersionResponse`.
pub const KMS_V1BETA1_API_VERSION: &str = "v1beta1";
/// The `healthz` value a healthy KMS v2 plugin reports.
pub const HEALTHZ_OK: &str = "ok";
