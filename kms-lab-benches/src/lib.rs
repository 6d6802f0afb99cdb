//! kms-lab's benchmark harness: every headline figure is a ratio of two things measured side by
//! side in one run, because the machines it runs on are shared and noisy.
//!
//! - [`targets`]: plugin processes to measure on a Unix socket: the reference plugin, a bare
//!   tonic echo (the floor for any plugin, see [`echo`]) and a Go peer.
//! - [`load`]: a load generator driving KMS v2 Encrypt/Decrypt at a fixed number of callers.
//! - [`stats`]: latency percentiles and throughput of a set of samples.
//! - [`compare`]: the plugin comparison, in interleaved rounds so noise hits every target alike.
//! - [`apiserver`]: Secret creates/s and reads/s through the real kube-apiserver per provider.
//! - [`report`]: the table and the JSON summary (`cargo xtask bench --json FILE`).

pub mod apiserver;
pub mod compare;
pub mod echo;
mod error;
pub mod load;
pub mod report;
pub mod stats;
pub mod targets;

pub use error::BenchError;
