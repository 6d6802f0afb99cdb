//! Free loopback ports for the stack's listeners, never the same one twice in one process.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

use crate::error::StackError;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A TCP port on 127.0.0.1 that was free a moment ago and was not handed out before.
pub fn free_port() -> Result<u16, StackError> {
    for _ in 0..64 {
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(StackError::io("find a free port on 127.0.0.1"))?.port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err(StackError::Io {
        what: "find a free port on 127.0.0.1".into(),
        source: std::io::Error::other("64 tries gave only ports used before"),
    })
}
