//! kms-lab's emulated remote KMS.
//!
//! [`api`] is the wire contract (bodies, error codes, request signing) and has no server
//! dependencies: the reference plugin builds its client on it.

pub mod api;
