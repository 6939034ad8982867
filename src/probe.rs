//! Health checks: one probe is a fresh connection to an origin (a reused one would hide
//! L4 failures), `GET <prefix><health-path>`, and a verdict on the status line; a directory
//! upstream is checked by reading it.
//!
//! This file judges one check. It never counts results or decides routing: that is
//! [`crate::health`]'s, and when probes run is the worker's.

use std::io;
use std::time::Instant;

use crate::buffer::Buf;
use crate::config::Config;
use crate::readiness::Readiness;
use crate::transport::{Conn, SockResult};
use crate::uplink::{check_connect, kind_text};
use crate::upstream::{Kind, Upstream};

/// One health check over HTTP: connect, send the request, read the status line, close.
pub struct Probe {
    pub conn: Conn,
    pub ready: Readiness,
    /// Position of the probed upstream in the chain.
    pub upstream: usize,
    pub gen: u32,
    pub started: Instant,
    connected: bool,
    sent: usize,
    got: Buf,
}

/// How a check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Healthy,
    Unhealthy(String),
}

impl Probe {
    pub fn new(conn: Conn, upstream: usize, gen: u32, started: Instant) -> Probe {
        Probe { conn, ready: Readiness::new(), upstream, gen, started, connected: false, sent: 0, got: Buf::small(16) }
    }

    /// Moves the probe along; `request` is the probe's request bytes.
    pub fn drive(&mut self, request: &[u8]) -> Outcome {
        if !self.connected {
            match check_connect(&self.conn, &mut self.ready) {
                Ok(true) => self.connected = true,
                Ok(false) => return Outcome::Pending,
                Err(why) => return Outcome::Unhealthy(why),
            }
        }
        if self.sent < request.len() && self.ready.can_write() {
            let (n, res) = self.conn.write_two(&mut self.ready, &request[self.sent..], &[]);
            self.sent += n;
            if let SockResult::Error(k) = res {
                return Outcome::Unhealthy(self.failure("send failed", k));
            }
        }
        if self.conn.wants_flush() && self.ready.can_write() {
            if let SockResult::Error(k) = self.conn.flush(&mut self.ready) {
                return Outcome::Unhealthy(self.failure("send failed", k));
            }
        }
        if !self.ready.can_read() {
            return Outcome::Pending;
        }
        let (_, res) = self.conn.read_into(&mut self.ready, &mut self.got);
        match res {
            SockResult::Error(k) => Outcome::Unhealthy(self.failure("read failed", k)),
            SockResult::WouldBlock if self.got.len() < 12 => Outcome::Pending,
            _ => judge(self.got.bytes()),
        }
    }

    fn failure(&self, what: &str, k: io::ErrorKind) -> String {
        match self.conn.tls_error() {
            Some(tls) => format!("TLS handshake failed: {tls}"),
            None => format!("{what}: {}", kind_text(k)),
        }
    }
}

/// Judges the first bytes of a probe response: 2xx and 3xx are healthy.
pub fn judge(got: &[u8]) -> Outcome {
    if got.is_empty() {
        return Outcome::Unhealthy("closed without a response".into());
    }
    let status = (got.len() >= 12 && got.starts_with(b"HTTP/1.") && got[8] == b' ')
        .then(|| std::str::from_utf8(&got[9..12]).ok()?.parse::<u16>().ok())
        .flatten();
    match status {
        Some(200..=399) => Outcome::Healthy,
        Some(s) => Outcome::Unhealthy(format!("status {s}")),
        None => Outcome::Unhealthy("invalid response".into()),
    }
}

/// The probe request of every upstream, by position (empty for a directory).
pub fn requests(cfg: &Config) -> Vec<Vec<u8>> {
    cfg.upstreams.iter().map(|up| request(cfg, up)).collect()
}

fn request(cfg: &Config, up: &Upstream) -> Vec<u8> {
    match &up.kind {
        Kind::Origin(o) => format!(
            "GET {}{} HTTP/1.1\r\nHost: {}\r\nUser-Agent: failover-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            o.prefix, cfg.health_path, o.authority
        )
        .into_bytes(),
        Kind::Site(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_status_lines() {
        let healthy = |b: &[u8]| judge(b) == Outcome::Healthy;
        assert!(healthy(b"HTTP/1.1 200 OK\r\n"));
        assert!(healthy(b"HTTP/1.0 301 Moved"));
        assert!(healthy(b"HTTP/1.1 204 No"));
        assert!(!healthy(b"HTTP/1.1 404 Not"));
        assert!(!healthy(b"HTTP/1.1 503 Unavailable"));
        assert!(!healthy(b"HTTP/1.1 199 x"));
        assert!(!healthy(b""));
        assert!(!healthy(b"SSH-2.0-OpenSSH"));
        assert!(!healthy(b"HTTP/1.1 2"));
    }
}
