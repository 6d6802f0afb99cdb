//! Minimal plain HTTP on loopback: health endpoints (etcd `/health`, mock KMS admin) and etcd's
//! v3 JSON gateway (so reading raw etcd values needs no protobuf compiler at build time).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET http://127.0.0.1:<port><path>`: the status code and body, or `None` if nothing answered in `timeout`.
pub async fn get(port: u16, path: &str, timeout: Duration) -> Option<(u16, String)> {
    request(port, "GET", path, "application/json", "", timeout).await
}

/// `POST http://127.0.0.1:<port><path>` with a JSON body: the status code and body.
pub async fn post_json(port: u16, path: &str, body: &str, timeout: Duration) -> Option<(u16, String)> {
    request(port, "POST", path, "application/json", body, timeout).await
}

/// `<method> http://127.0.0.1:<port><path>` with a body of `content_type`: the status code and body,
/// or `None` if nothing answered in `timeout`.
pub async fn request(port: u16, method: &str, path: &str, content_type: &str, body: &str, timeout: Duration) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let raw_body = &response[split + 4..];
        let body = if head.contains("transfer-encoding: chunked") { dechunk(raw_body)? } else { raw_body.to_vec() };
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}

/// The body of a `Transfer-Encoding: chunked` response (large answers, e.g. an etcd range).
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(super::dechunk(b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n").unwrap(), b"Wikipedia");
        assert!(super::dechunk(b"9\r\nshort\r\n").is_none());
    }
}
