//! The real control plane for kms-lab, as local processes on loopback (the way
//! controller-runtime's envtest runs it): [`Stack`] runs etcd, kube-apiserver(s) and
//! kms-plugin(s), which scenarios drive, from the pinned upstream binaries `kms_lab_provision`
//! finds or builds.

pub mod apiserver;
pub mod certs;
pub mod component;
pub mod container;
pub mod controller_manager;
pub mod encryption;
pub mod error;
pub mod etcd;
pub mod etcd_client;
pub mod etcd_watch;
pub mod fsutil;
pub mod http;
pub mod images;
pub mod metrics;
pub mod mockkms;
pub mod own;
pub mod plugin;
pub mod ports;
pub mod process;
pub mod runtime;
pub mod stack;
pub mod standalone;

pub use apiserver::Readiness;
pub use component::{Component, WaitFor};
pub use encryption::EncryptionConfiguration;
pub use error::StackError;
pub use mockkms::{MockKmsCluster, MockKmsOptions};
pub use plugin::{PluginKek, PluginProgram, PluginSpec, ProgramContext, ProgramProcesses};
pub use runtime::{Launcher, Runtime};
pub use stack::{EncryptionBuilder, ResourceUse, Stack, StackOptions};
