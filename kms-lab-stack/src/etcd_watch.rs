//! Every revision, not only the last: a watch on etcd (its v3 JSON gateway's streaming
//! `/v3/watch`) that scans each value written under a prefix for a byte string, from a start
//! revision on. A plaintext that was written and then overwritten (or compacted away) is still
//! caught, and the count of revisions checked is reported.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::StackError;

/// What the recorder saw, over a window of revisions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistorySummary {
    /// Values written (puts) under the prefix in the window.
    pub revisions: u64,
    /// How many of them held the byte string.
    pub leaked: u64,
    /// The first key that held it and its revision.
    pub first_leak: Option<(String, i64)>,
    /// Revisions etcd compacted before the watch read them (not checked).
    pub compacted_gap: Option<(i64, i64)>,
}

/// Everything seen: the revision of every put, and the puts that held the byte string.
#[derive(Debug, Default)]
struct Seen {
    /// The highest store revision the watch has reported (every message's header).
    through: i64,
    puts: Vec<i64>,
    leaks: Vec<(i64, String)>,
    compacted_gap: Option<(i64, i64)>,
}

/// A running watch; stopped by [`Recorder::stop`] or when dropped.
pub struct Recorder {
    state: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Watches `prefix` on the etcd serving its gateway at `127.0.0.1:port` from `start_revision`
    /// (1: everything still in etcd's history), scanning every value for `needle`. Returns once
    /// etcd accepted the watch; reconnects by itself if etcd restarts.
    pub async fn start(port: u16, prefix: &str, needle: &[u8], start_revision: i64) -> Result<Self, StackError> {
        let state = Arc::new(Mutex::new(Seen::default()));
        let watch = Watch { port, prefix: prefix.as_bytes().to_vec(), needle: needle.to_vec(), state: state.clone() };
        let (created, accepted) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(watch.run(start_revision, created));
        match tokio::time::timeout(Duration::from_secs(10), accepted).await {
            Ok(Ok(Ok(()))) => Ok(Self { state, task }),
            Ok(Ok(Err(why))) => {
                task.abort();
                Err(StackError::Etcd(format!("etcd did not accept a watch on {prefix}: {why}")))
            }
            _ => {
                task.abort();
                Err(StackError::Etcd(format!("etcd on 127.0.0.1:{port} did not confirm a watch on {prefix} within 10 s")))
            }
        }
    }

    /// Waits (at most `timeout`) until the watch has read etcd's history through `revision`;
    /// whether it did.
    pub async fn caught_up(&self, revision: i64, timeout: Duration) -> bool {
        let started = std::time::Instant::now();
        loop {
            if self.state.lock().map(|s| s.through >= revision).unwrap_or(false) {
                return true;
            }
            if started.elapsed() > timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What was seen so far, from the start revision on.
    pub fn summary(&self) -> HistorySummary {
        self.summary_after(0)
    }

    /// What was seen in the revisions after `revision` (e.g. one taken at a scenario's mark).
    pub fn summary_after(&self, revision: i64) -> HistorySummary {
        let Ok(seen) = self.state.lock() else { return HistorySummary::default() };
        let mut leaks = seen.leaks.iter().filter(|(r, _)| *r > revision);
        let first_leak = leaks.next().map(|(r, key)| (key.clone(), *r));
        HistorySummary {
            revisions: seen.puts.iter().filter(|r| **r > revision).count() as u64,
            leaked: u64::from(first_leak.is_some()) + leaks.count() as u64,
            first_leak,
            compacted_gap: seen.compacted_gap.filter(|(_, to)| *to > revision),
        }
    }

    /// Stops watching.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Watch {
    port: u16,
    prefix: Vec<u8>,
    needle: Vec<u8>,
    state: Arc<Mutex<Seen>>,
}

impl Watch {
    async fn run(self, start_revision: i64, created: tokio::sync::oneshot::Sender<Result<(), String>>) {
        let mut created = Some(created);
        let mut next = start_revision;
        loop {
            let result = self.stream(next, &mut created).await;
            match result {
                Ok(last) | Err((last, _)) => next = next.max(last + 1),
            }
            if let Some(sender) = created.take() {
                // The first watch never got going: say why and stop.
                let _ = sender.send(Err("the watch stream ended before etcd confirmed it".into()));
                return;
            }
            // etcd went away (a `kill: etcd` step): watch again from the next revision once it is back.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// One watch stream until it ends: the last revision seen.
    async fn stream(
        &self,
        from: i64,
        created: &mut Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    ) -> Result<i64, (i64, String)> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut end = self.prefix.clone();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = serde_json::json!({
            "create_request": { "key": b64.encode(&self.prefix), "range_end": b64.encode(&end), "start_revision": from.to_string() }
        })
        .to_string();
        let mut last = from - 1;
        let mut stream =
            tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.map_err(|e| (last, format!("cannot connect: {e}")))?;
        let request = format!(
            "POST /v3/watch HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| (last, e.to_string()))?;
        let mut raw = Vec::new();
        let mut head_done = false;
        let mut decoder = Dechunker::default();
        let mut buffer = [0u8; 64 * 1024];
        loop {
            let read = stream.read(&mut buffer).await.map_err(|e| (last, e.to_string()))?;
            if read == 0 {
                return Ok(last);
            }
            raw.extend_from_slice(&buffer[..read]);
            if !head_done {
                let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                let head = String::from_utf8_lossy(&raw[..split]).to_string();
                if !head.starts_with("HTTP/1.1 200") {
                    return Err((last, head.lines().next().unwrap_or_default().to_owned()));
                }
                raw.drain(..split + 4);
                head_done = true;
            }
            decoder.feed(&std::mem::take(&mut raw));
            while let Some(message) = decoder.next_message() {
                let Ok(message) = serde_json::from_slice::<serde_json::Value>(&message) else { continue };
                let result = &message["result"];
                if let Some(revision) = result["header"]["revision"].as_str().and_then(|r| r.parse::<i64>().ok())
                    && let Ok(mut state) = self.state.lock()
                {
                    state.through = state.through.max(revision);
                }
                if result["created"].as_bool() == Some(true)
                    && let Some(sender) = created.take()
                {
                    let _ = sender.send(Ok(()));
                }
                if let Some(compacted) = result["compact_revision"].as_str().and_then(|r| r.parse::<i64>().ok()) {
                    if let Ok(mut state) = self.state.lock() {
                        state.compacted_gap = Some((from, compacted - 1));
                    }
                    return Err((compacted - 1, format!("etcd compacted revisions up to {compacted}")));
                }
                for event in result["events"].as_array().into_iter().flatten() {
                    let kv = &event["kv"];
                    let revision = kv["mod_revision"].as_str().and_then(|r| r.parse::<i64>().ok()).unwrap_or(last);
                    last = last.max(revision);
                    if event["type"].as_str() == Some("DELETE") {
                        continue;
                    }
                    let value = b64.decode(kv["value"].as_str().unwrap_or_default()).unwrap_or_default();
                    let leaked = !self.needle.is_empty() && value.windows(self.needle.len()).any(|w| w == self.needle.as_slice());
                    if let Ok(mut state) = self.state.lock() {
                        state.puts.push(revision);
                        if leaked {
                            let key = b64.decode(kv["key"].as_str().unwrap_or_default()).unwrap_or_default();
                            state.leaks.push((revision, String::from_utf8_lossy(&key).into_owned()));
                        }
                    }
                }
            }
        }
    }
}

/// Undoes `Transfer-Encoding: chunked` as bytes arrive, and splits the body into the gateway's
/// newline-separated JSON messages.
#[derive(Default)]
struct Dechunker {
    input: Vec<u8>,
    body: Vec<u8>,
    /// Bytes left in the current chunk (`None`: a size line comes next).
    remaining: Option<usize>,
}

impl Dechunker {
    fn feed(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        loop {
            match self.remaining {
                None => {
                    let Some(end) = self.input.windows(2).position(|w| w == b"\r\n") else { return };
                    let line = String::from_utf8_lossy(&self.input[..end]).to_string();
                    self.input.drain(..end + 2);
                    if line.is_empty() {
                        continue;
                    }
                    let size = usize::from_str_radix(line.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
                    self.remaining = Some(size);
                }
                Some(size) => {
                    let take = size.min(self.input.len());
                    self.body.extend(self.input.drain(..take));
                    if take == size {
                        self.remaining = None;
                    } else {
                        self.remaining = Some(size - take);
                        return;
                    }
                }
            }
        }
    }

    fn next_message(&mut self) -> Option<Vec<u8>> {
        let end = self.body.iter().position(|b| *b == b'\n')?;
        let message: Vec<u8> = self.body.drain(..=end).collect();
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::Dechunker;

    #[test]
    fn chunks_split_anywhere_give_the_same_messages() {
        let wire = b"5\r\n{\"a\":\r\n4\r\n1}\n{\r\n6\r\n\"b\":2}\r\n1\r\n\n\r\n";
        for split in 1..wire.len() {
            let mut d = Dechunker::default();
            d.feed(&wire[..split]);
            d.feed(&wire[split..]);
            let mut messages = Vec::new();
            while let Some(m) = d.next_message() {
                messages.push(String::from_utf8(m).unwrap());
            }
            assert_eq!(messages, ["{\"a\":1}\n", "{\"b\":2}\n"], "split at {split}");
        }
    }
}
