//! kms-lab's scenario suite: YAML files under `scenarios/` (one per scenario, read like a
//! procedure), their typed [`model`], [`load`]ing with file:line errors, and the [`runner`]
//! that plays each on a fresh real stack (etcd, kube-apiserver, plugins, mock KMS) and
//! [`report`]s a table, JUnit XML and JSON. [`cli`] is the command both `kms-lab scenarios` and
//! `cargo xtask scenarios` run. While a scenario runs, its [`world`] holds the stack and what was
//! written; steps reach the API through the [`object_client`], the apiserver's configuration is
//! built by [`encryption`], and what happened when goes on the [`timeline`].

pub mod cli;
pub mod components;
pub mod conditions;
pub mod encryption;
pub mod error;
pub mod load;
pub mod model;
pub mod object_client;
pub mod parallel;
pub mod plugin_under_test;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod steps;
pub mod timeline;
pub mod world;

pub use cli::{ScenarioArgs, ScenariosError};
pub use model::{Scenario, Tier};
