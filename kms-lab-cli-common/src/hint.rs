//! What to do about an OS error on a TCP listener: the hint that fits the error (an address in
//! use is not an address this machine lacks). Unix-socket connect errors have theirs in
//! `kms_wire::client::socket_hint`, next to the client that meets them.

use std::io::ErrorKind;

/// The hint for a failed `bind` of a TCP listener on `addr` (shown after the OS's own words).
pub fn listen(error: &std::io::Error, addr: &std::net::SocketAddr) -> &'static str {
    match error.kind() {
        ErrorKind::AddrInUse => "another process listens there (another mock-kms?): stop it, or pick another port",
        ErrorKind::AddrNotAvailable => {
            "this machine has no such address: listen on one of its own, e.g. 127.0.0.1:PORT (this machine only) or 0.0.0.0:PORT (all interfaces)"
        }
        ErrorKind::PermissionDenied if addr.port() < 1024 => "ports below 1024 need root or CAP_NET_BIND_SERVICE: pick a port from 1024 up",
        ErrorKind::PermissionDenied => "this user may not listen there: pick another address or port",
        _ => "check the address and port",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_os_error_gets_its_own_hint() {
        let any = "127.0.0.1:8080".parse().unwrap();
        let low = "127.0.0.1:80".parse().unwrap();
        let used = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let error = std::net::TcpListener::bind(used.local_addr().unwrap()).unwrap_err();
        assert!(listen(&error, &any).contains("another process listens there"));
        let error = std::net::TcpListener::bind("8.8.8.8:0").unwrap_err();
        assert!(listen(&error, &any).contains("no such address"), "{error}");
        let denied = std::io::Error::from(ErrorKind::PermissionDenied);
        assert!(listen(&denied, &low).contains("below 1024"));
        assert!(!listen(&denied, &any).contains("below 1024"));
    }
}
