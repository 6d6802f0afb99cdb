//! Minimal plain HTTP on loopback: health endpoints (etcd `/health`, mock KMS admin) and etcd's
//! v3 JSON gateway (so reading raw etcd values needs no protobuf compiler at build time).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET http://127.0.0.1:<port><path>`: the status code and body, or `None` if nothing answered in `timeout`.
pub async fn get(port: u16, path: &str, timeout: Duration) -> Option<(u16, String)> {
    exchange(port, "GET", path, "", timeout).await
}

/// `POST http://127.0.0.1:<port><path>` with a JSON body: the status code and body.
pub async fn post_json(port: u16, path: &str, body: &str, timeout: Duration) -> Option<(u16, String)> {
    exchange(port, "POST", path, body, timeout).await
}

async fn exchange(port: u16, method: &str, path: &str, body: &str, timeout: Duration) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}
