//! The `kms-lab` command line's commands, as a library so tests call them in process.

pub mod decode;
pub mod exit;
pub mod lab;
pub mod ops;
pub mod plugins;
pub mod report;
