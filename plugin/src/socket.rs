//! The plugin's Unix socket: refuse a live one, replace a stale one, mode 0600, removed on drop.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another process accepts connections on the socket.
    #[error("another process is already serving on `{0}`: stop it first, or pass another --socket")]
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("`{0}` exists and is not a socket; refusing to replace it (remove it or pass another --socket)")]
    NotASocket(PathBuf),
    /// The socket's directory does not exist.
    #[error("the directory of `{0}` does not exist: create it first")]
    NoDirectory(PathBuf),
    /// Any other I/O failure.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was tried.
        action: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A bound socket; dropping it removes the socket file if it is still the one bound here.
#[derive(Debug)]
pub struct BoundSocket {
    listener: Option<UnixListener>,
    path: PathBuf,
    inode: u64,
}

impl BoundSocket {
    /// Binds `path`: a stale socket (nobody listening) is removed first, a live one refused.
    pub fn bind(path: &Path) -> Result<Self, SocketError> {
        let io = |action, source| SocketError::Io { action, path: path.to_owned(), source };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(SocketError::NotASocket(path.to_owned()));
            }
            Ok(_) => match UnixStream::connect(path) {
                Ok(_) => return Err(SocketError::InUse(path.to_owned())),
                Err(_) => {
                    tracing::info!(path = %path.display(), "removing stale socket left by an earlier run");
                    std::fs::remove_file(path).map_err(|e| io("remove stale socket", e))?;
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("inspect", e)),
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(SocketError::NoDirectory(path.to_owned()));
        }
        let listener = UnixListener::bind(path).map_err(|e| io("bind", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| io("chmod 0600", e))?;
        listener.set_nonblocking(true).map_err(|e| io("configure", e))?;
        let inode = std::fs::metadata(path).map_err(|e| io("inspect", e))?.ino();
        Ok(Self { listener: Some(listener), path: path.to_owned(), inode })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the listener out for serving; the file is still removed when this guard drops.
    pub fn take_listener(&mut self) -> Option<UnixListener> {
        self.listener.take()
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        let ours = std::fs::metadata(&self.path).is_ok_and(|meta| meta.ino() == self.inode);
        if ours && let Err(error) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "could not remove the socket file");
        }
    }
}
