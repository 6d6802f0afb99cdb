//! A client for a KMS plugin's Unix socket, speaking both plugin APIs the way kube-apiserver
//! does (`:authority` is `localhost`, one channel, a deadline on every call).

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

use crate::proto::v1beta1::key_management_service_client::KeyManagementServiceClient as V1Client;
use crate::proto::v2::key_management_service_client::KeyManagementServiceClient as V2Client;

/// Where a plugin listens: a socket file, or a Linux abstract socket (`unix:///@name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddress {
    /// A socket file.
    Path(PathBuf),
    /// A Linux abstract socket name (without the leading `@`).
    Abstract(String),
}

impl SocketAddress {
    /// Parses an endpoint as the apiserver's EncryptionConfiguration spells it (`unix:///path`,
    /// `unix:///@name`); a bare absolute or relative path is accepted too.
    pub fn parse(endpoint: &str) -> Result<Self, ClientError> {
        let path = match endpoint.split_once("://") {
            Some(("unix", rest)) => rest,
            Some((scheme, _)) => return Err(ClientError::Scheme(scheme.to_owned())),
            None => endpoint,
        };
        if path.is_empty() {
            return Err(ClientError::EmptyEndpoint);
        }
        Ok(match path.strip_prefix("/@") {
            Some(name) if !name.is_empty() => Self::Abstract(name.to_owned()),
            _ => Self::Path(PathBuf::from(path)),
        })
    }

    async fn connect(&self) -> std::io::Result<tokio::net::UnixStream> {
        match self {
            Self::Path(path) => tokio::net::UnixStream::connect(path).await,
            Self::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                let stream = std::os::unix::net::UnixStream::connect_addr(&addr)?;
                stream.set_nonblocking(true)?;
                tokio::net::UnixStream::from_std(stream)
            }
        }
    }
}

impl std::fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(path) => write!(f, "unix://{}", path.display()),
            Self::Abstract(name) => write!(f, "unix:///@{name}"),
        }
    }
}

/// Why a plugin could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint string is empty.
    #[error("the plugin endpoint is empty: give unix:///path/to/plugin.sock")]
    EmptyEndpoint,
    /// The endpoint names a scheme other than `unix`.
    #[error("unsupported endpoint scheme `{0}`: a KMS plugin listens on a Unix socket, e.g. unix:///var/run/kms.sock")]
    Scheme(String),
    /// The socket could not be opened: the OS's reason and the hint that fits it (missing, a
    /// regular file, a directory, no permission, nobody listening).
    #[error("cannot connect to the plugin at `{address}`: {source} ({hint})", hint = socket_hint(address, source))]
    Socket {
        /// The socket.
        address: SocketAddress,
        /// What connecting said.
        #[source]
        source: std::io::Error,
    },
    /// The socket accepted the connection but the gRPC channel could not be set up.
    #[error("cannot open a gRPC channel to the plugin at `{address}`: {source} (is a KMS plugin serving gRPC there?)")]
    Connect {
        /// The socket.
        address: SocketAddress,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
}

/// What to do when connecting to `address` failed with `error`: the one place that tells a
/// missing socket from a regular file, a directory, a socket this user may not open and one
/// nobody listens on (every kms-lab command that dials a plugin shows this).
pub fn socket_hint(address: &SocketAddress, error: &std::io::Error) -> &'static str {
    use std::io::ErrorKind;
    let metadata = match address {
        SocketAddress::Path(path) => std::fs::metadata(path).ok(),
        SocketAddress::Abstract(_) => None,
    };
    match metadata {
        Some(meta) if meta.is_dir() => "it is a directory: give the plugin's socket file inside it",
        Some(meta) if meta.is_file() => "it is a regular file, not a socket: is this the plugin's --socket path?",
        _ if error.kind() == ErrorKind::PermissionDenied => {
            "this user may not connect to it: run as the plugin's user (the socket is 0600), or with sudo"
        }
        _ if error.kind() == ErrorKind::NotFound => "no such socket: is the plugin running, and is this its --socket path?",
        _ if error.kind() == ErrorKind::ConnectionRefused => "nobody listens on it: the plugin is not running (a stale socket file)",
        _ => "check the path and that the plugin is running",
    }
}

/// A connection to one plugin socket, with typed clients for both APIs.
#[derive(Debug, Clone)]
pub struct PluginClient {
    channel: Channel,
    address: SocketAddress,
}

impl PluginClient {
    /// Connects to `endpoint` now, so a missing plugin is reported here; every later call is
    /// bounded by `call_timeout`.
    pub async fn connect(endpoint: &str, call_timeout: Duration) -> Result<Self, ClientError> {
        let address = SocketAddress::parse(endpoint)?;
        // Open the socket once by hand: the gRPC connector would wrap the OS's reason into
        // "transport error", and a user needs "permission denied" vs "no such file".
        drop(address.connect().await.map_err(|source| ClientError::Socket { address: address.clone(), source })?);
        let connector_address = address.clone();
        // The URI is not dialled: the connector below opens the socket. `localhost` matches the
        // `:authority` kube-apiserver sends.
        let channel = Endpoint::from_static("http://localhost")
            .timeout(call_timeout)
            .connect_timeout(call_timeout)
            .connect_with_connector(service_fn(move |_: Uri| {
                let address = connector_address.clone();
                async move { address.connect().await.map(TokioIo::new) }
            }))
            .await
            .map_err(|source| ClientError::Connect { address: address.clone(), source })?;
        Ok(Self { channel, address })
    }

    /// The socket this client talks to.
    pub fn address(&self) -> &SocketAddress {
        &self.address
    }

    /// A KMS v2 client on this connection.
    pub fn v2(&self) -> V2Client<Channel> {
        V2Client::new(self.channel.clone())
    }

    /// A KMS v1 (`v1beta1`) client on this connection.
    pub fn v1beta1(&self) -> V1Client<Channel> {
        V1Client::new(self.channel.clone())
    }

    /// Whether a plugin serves gRPC on this socket yet: a v2 Status call gets an answer of the
    /// plugin's own (healthy or not, an error code, or `Unimplemented` from a v1beta1-only
    /// plugin). Only `Unavailable` (nothing serving yet) is not. The one readiness probe of
    /// every tool that starts a plugin.
    pub async fn answers(&self) -> bool {
        match self.v2().status(crate::proto::v2::StatusRequest {}).await {
            Ok(_) => true,
            Err(status) => status.code() != tonic::Code::Unavailable,
        }
    }

    /// [`PluginClient::answers`] on `endpoint`, connecting first (a socket nobody listens on
    /// does not answer).
    pub async fn answers_at(endpoint: &str, call_timeout: Duration) -> bool {
        match Self::connect(endpoint, call_timeout).await {
            Ok(client) => client.answers().await,
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints_like_the_apiserver() {
        assert_eq!(SocketAddress::parse("unix:///tmp/kms.sock").unwrap(), SocketAddress::Path("/tmp/kms.sock".into()));
        assert_eq!(SocketAddress::parse("unix:///@kms").unwrap(), SocketAddress::Abstract("kms".into()));
        assert_eq!(SocketAddress::parse("/tmp/kms.sock").unwrap(), SocketAddress::Path("/tmp/kms.sock".into()));
        assert!(matches!(SocketAddress::parse("tcp://127.0.0.1:1"), Err(ClientError::Scheme(s)) if s == "tcp"));
        assert!(matches!(SocketAddress::parse("unix://"), Err(ClientError::EmptyEndpoint)));
    }

    async fn connect_error(endpoint: &str) -> String {
        PluginClient::connect(endpoint, Duration::from_secs(1)).await.unwrap_err().to_string()
    }

    #[tokio::test]
    async fn a_failed_connect_shows_the_os_error_and_the_hint_that_fits_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = connect_error(&format!("unix://{}/none.sock", dir.path().display())).await;
        assert!(missing.contains("No such file or directory") && missing.contains("is the plugin running"), "{missing}");
        let directory = connect_error(&format!("unix://{}", dir.path().display())).await;
        assert!(directory.contains("it is a directory"), "{directory}");
        let file = dir.path().join("plain");
        std::fs::write(&file, "").unwrap();
        let regular = connect_error(&format!("unix://{}", file.display())).await;
        assert!(regular.contains("it is a regular file, not a socket"), "{regular}");
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let refused = connect_error(&format!("unix://{}", stale.display())).await;
        assert!(refused.contains("Connection refused") && refused.contains("nobody listens on it"), "{refused}");
    }
}
