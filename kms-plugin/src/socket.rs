//! The plugin's Unix socket: refuse a live one, replace a stale one, mode 0600, removed on drop.
//!
//! "Stale" is decided conservatively ([`judge_existing`]): a socket file is removed only when
//! connecting to it is *refused* (nobody listens: `ECONNREFUSED`) **and** it is owned by the uid
//! this process runs as. Any other answer — it accepts, connecting is denied (which means "cannot
//! tell", not "dead"), another user owns it, any other OS error — leaves the file alone and
//! refuses to start, saying why.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Why the socket could not be bound. Every variant names the path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another process accepts connections on the socket.
    #[error("another process is already serving on `{0}`: stop it first, or pass another --socket")]
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("`{path}` exists and is {kind}, not a socket; refusing to replace it (remove it, or pass another --socket)")]
    NotASocket {
        /// The socket path.
        path: PathBuf,
        /// What is there: `a directory`, `a regular file`, `a symlink`, ….
        kind: &'static str,
    },
    /// Nobody listens on the socket, but it belongs to another user: not ours to remove.
    #[error(
        "`{path}` is a socket nobody listens on, but it is owned by uid {owner}, not by this process (uid {ours}); refusing to remove another user's socket: have its owner remove it, or pass another --socket"
    )]
    NotOurs {
        /// The socket path.
        path: PathBuf,
        /// The uid owning the socket file.
        owner: u32,
        /// The uid this process runs as.
        ours: u32,
    },
    /// Connecting to the existing socket failed in a way that does not prove it stale.
    #[error("`{path}` exists and connecting to it failed ({source}), so it may be live; leaving it alone: {hint}")]
    CannotTell {
        /// The socket path.
        path: PathBuf,
        /// What connecting said.
        #[source]
        source: std::io::Error,
        /// What to do.
        hint: &'static str,
    },
    /// The socket's directory does not exist.
    #[error("the directory of `{0}` does not exist: create it first")]
    NoDirectory(PathBuf),
    /// Any other I/O failure, with the OS error and a hint that fits it.
    #[error("cannot {action} `{path}`: {source}{}", hint_for(source))]
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

/// A hint for an OS error met while creating or replacing the socket (empty when none fits).
fn hint_for(error: &std::io::Error) -> &'static str {
    match error.kind() {
        ErrorKind::PermissionDenied => {
            " (this user may not create files in that directory: run the plugin as a user who can, or pass a --socket in a directory you own)"
        }
        ErrorKind::AddrInUse => " (another process bound it a moment ago: stop it, or pass another --socket)",
        ErrorKind::InvalidInput => " (a Unix socket path may be at most 107 bytes: pass a shorter --socket)",
        ErrorKind::ReadOnlyFilesystem => " (the file system is read-only: pass a --socket on a writable one)",
        ErrorKind::NotADirectory => " (a part of the path is a file, not a directory)",
        _ => "",
    }
}

/// What [`judge_existing`] decided about a socket file found at the path.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nobody listens and it is ours: remove it and bind.
    RemoveStale,
}

/// Decides what to do with an existing socket file at `path`, from what connecting to it said
/// (`connect`), the uid owning the file and the uid of this process. Only a refused connection
/// to a socket of our own uid is stale; everything else is an error that leaves the file alone.
pub fn judge_existing(path: &Path, connect: std::io::Result<()>, owner: u32, ours: u32) -> Result<Verdict, SocketError> {
    let error = match connect {
        Ok(()) => return Err(SocketError::InUse(path.to_owned())),
        Err(error) => error,
    };
    match error.kind() {
        ErrorKind::ConnectionRefused if owner == ours => Ok(Verdict::RemoveStale),
        ErrorKind::ConnectionRefused => Err(SocketError::NotOurs { path: path.to_owned(), owner, ours }),
        ErrorKind::PermissionDenied => Err(SocketError::CannotTell {
            path: path.to_owned(),
            source: error,
            hint: "this user may not connect to it, which says nothing about whether it is live; run the plugin as the socket's owner, or pass another --socket",
        }),
        _ => Err(SocketError::CannotTell { path: path.to_owned(), source: error, hint: "check the path, or pass another --socket" }),
    }
}

/// What a non-socket file type is, for an error message.
fn describe_kind(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_file() {
        "a regular file"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_fifo() {
        "a named pipe"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else {
        "something else"
    }
}

/// The effective uid of this process.
fn our_uid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A bound socket; dropping it removes the socket file if it is still the one bound here.
#[derive(Debug)]
pub struct BoundSocket {
    listener: Option<UnixListener>,
    path: PathBuf,
    inode: u64,
}

impl BoundSocket {
    /// Binds `path`: a stale socket (see [`judge_existing`]) is removed first; a live one, one
    /// that cannot be judged, or one of another user is refused with the reason.
    pub fn bind(path: &Path) -> Result<Self, SocketError> {
        let io = |action, source| SocketError::Io { action, path: path.to_owned(), source };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(SocketError::NotASocket { path: path.to_owned(), kind: describe_kind(meta.file_type()) });
            }
            Ok(meta) => {
                let connect = UnixStream::connect(path).map(drop);
                let Verdict::RemoveStale = judge_existing(path, connect, meta.uid(), our_uid())?;
                tracing::info!(path = %path.display(), "removing stale socket left by an earlier run (nobody listens on it and it is ours)");
                std::fs::remove_file(path).map_err(|e| io("remove stale socket", e))?;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io("inspect", e)),
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            match std::fs::metadata(parent) {
                Ok(meta) if !meta.is_dir() => return Err(io("bind", std::io::Error::from(ErrorKind::NotADirectory))),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(SocketError::NoDirectory(path.to_owned())),
                Err(e) => return Err(io("inspect the directory of", e)),
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn os(kind: ErrorKind) -> std::io::Result<()> {
        Err(std::io::Error::from(kind))
    }

    #[test]
    fn only_a_refused_socket_of_our_own_uid_is_stale() {
        let path = Path::new("/run/kms.sock");
        assert_eq!(judge_existing(path, os(ErrorKind::ConnectionRefused), 1000, 1000).unwrap(), Verdict::RemoveStale);
        let cases = [
            (Ok(()), 1000, "already serving"),
            (os(ErrorKind::ConnectionRefused), 0, "owned by uid 0, not by this process (uid 1000)"),
            (os(ErrorKind::PermissionDenied), 1000, "may be live"),
            (os(ErrorKind::PermissionDenied), 0, "permission denied"),
            (os(ErrorKind::TimedOut), 1000, "may be live"),
            (os(ErrorKind::Other), 1000, "leaving it alone"),
        ];
        for (connect, owner, expected) in cases {
            let message = judge_existing(path, connect, owner, 1000).expect_err(expected).to_string();
            assert!(message.to_lowercase().contains(expected), "`{message}` lacks `{expected}`");
        }
    }

    #[test]
    fn a_directory_or_regular_file_in_the_way_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let message = BoundSocket::bind(dir.path()).unwrap_err().to_string();
        assert!(message.contains("is a directory, not a socket"), "{message}");
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        let message = BoundSocket::bind(&file).unwrap_err().to_string();
        assert!(message.contains("is a regular file, not a socket"), "{message}");
        assert!(file.exists(), "the regular file was removed");
        let message = BoundSocket::bind(&file.join("kms.sock")).unwrap_err().to_string();
        assert!(message.contains("not a directory"), "{message}");
    }
}
