//! A KMS plugin with switchable defects: kms-lab's reference plugin ([`kms_plugin`]) whose v2 and
//! v1beta1 services are wrapped so they break the contract on purpose (`--defect NAME`).
//!
//! The mutants prove that `kms-lab conformance` catches what it claims, and give scenarios
//! plugins with real-world bugs (`ignore-rotation`, `status-always-ok`, `key-id-without-version`).
//! With `--hostile-script FILE` every answer comes from a [`hostile::Script`] instead: the
//! generated hostile subject of `tests/hostile.rs`.

#![warn(missing_docs)]

pub mod cli;
pub mod defect;
pub mod hostile;
pub mod services;

pub use defect::{Defect, Defects};
pub use services::{FaultyV1beta1, FaultyV2, services};
