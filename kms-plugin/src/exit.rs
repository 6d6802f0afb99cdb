//! The one place `kms-plugin` and `kms-faulty-plugin` map their errors to the exit-code table
//! (`kms_lab_cli_common::Exit`): 2 for what the user must fix before anything can be served (flags,
//! the config file, the key file, a socket path or metrics address that cannot be used), 1 when
//! serving itself failed.

use kms_lab_cli_common::Exit;

use crate::socket::SocketError;
use crate::{ConfigError, KekError, ServeError};

/// The code for a KEK error: a key file the user must fix is a configuration error.
pub fn for_kek(error: &KekError) -> Exit {
    match error {
        KekError::KeyFile(_) => Exit::Usage,
        _ => Exit::Failed,
    }
}

/// The code for a serve error.
pub fn for_serve(error: &ServeError) -> Exit {
    match error {
        ServeError::Kek(kek) => for_kek(kek),
        ServeError::Socket(_) | ServeError::Metrics { .. } => Exit::Usage,
        ServeError::Transport(_) => Exit::Failed,
    }
}

/// The code for whatever error a plugin binary ends with.
pub fn for_error(error: &anyhow::Error) -> Exit {
    if let Some(serve) = error.downcast_ref::<ServeError>() {
        for_serve(serve)
    } else if let Some(kek) = error.downcast_ref::<KekError>() {
        for_kek(kek)
    } else if error.is::<ConfigError>() || error.is::<SocketError>() {
        Exit::Usage
    } else {
        Exit::Failed
    }
}
