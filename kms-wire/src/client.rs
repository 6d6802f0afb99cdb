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
    /// Nothing accepted a connection on the socket.
    #[error("cannot connect to the plugin at `{address}`: {source} (is the plugin running and listening there?)")]
    Connect {
        /// The socket.
        address: SocketAddress,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
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
}
