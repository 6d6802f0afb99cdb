//! The wire contract between kube-apiserver, a KMS plugin and etcd.
//!
//! - [`proto`]: the KMS `v2` and `v1beta1` gRPC APIs (generated from `proto/`), and the
//!   `EncryptedObject` kube-apiserver stores for KMS v2.
//! - [`envelope`]: parse and build every value kube-apiserver writes to etcd
//!   (`identity`, `aescbc`, `aesgcm`, `secretbox`, `kms` v1 and v2).
//! - [`seal`]: the data ciphers behind those envelopes, byte-compatible with upstream.
//! - [`limits`]: the validation rules upstream applies to key ids, wrapped DEKs and annotations.
//! - [`client`]: a client for a plugin's Unix socket, for tools and tests.
//! - [`Api`]: which of the two plugin APIs (`v2`, `v1beta1`).
//! - [`decode`]: turn a raw etcd value back into its plaintext, given the key side.

pub mod api;
pub mod client;
pub mod decode;
pub mod envelope;
pub mod limits;
pub mod proto;
pub mod seal;

pub use api::Api;
pub use client::{ClientError, PluginClient};
pub use decode::{DecodeError, KeySource, StaticKey};
pub use envelope::{Envelope, EnvelopeError, ProviderKind};
pub use limits::ValidationError;
pub use seal::SealError;
