//! What a KMS plugin is to the lab and how to run it: a [`Manifest`] (YAML: build recipe,
//! templated command line, dialect, APIs, rotation, extra processes, readiness), the
//! [`catalog`] kept in the repository, builds through the stack's one locator ([`build`]), and
//! [`ManifestPlugin`], which the stack starts like its own plugins.

pub mod build;
pub mod catalog;
pub mod error;
pub mod manifest;
pub mod run;
pub mod template;

pub use catalog::resolve;
pub use error::{ManifestError, PluginError};
pub use manifest::{Api, Build, Capability, Manifest, Rotation};
pub use run::ManifestPlugin;
pub use template::{Placeholder, Template};
