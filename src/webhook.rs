//! One blocking `POST` of a JSON body to a webhook, over TCP or rustls, for the notification
//! thread. Never used by an event loop: it blocks for up to its timeout.
//!
//! The answer is read as far as the status line and `Retry-After`; the body is not needed.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::tls::UpstreamTls;

/// Where a webhook lives: `http[s]://host[:port]/path?query`.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// `host[:port]` for the Host header.
    authority: String,
    /// Path and query, at least `/`.
    path: String,
    tls: Option<Arc<UpstreamTls>>,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Sent(u16),
    /// Worth trying again (a network error, 408, 429, 5xx), maybe after the receiver's
    /// `Retry-After`.
    Retry(String, Option<Duration>),
    /// Trying again would not help (another 4xx, a bad answer).
    Failed(String),
}

impl Target {
    /// Parses a webhook URL; `ca` replaces the default roots for https:// (tests, private CAs).
    pub fn parse(url: &str, ca: Option<&str>) -> Result<Target, String> {
        let (rest, tls) = if let Some(rest) = url.strip_prefix("https://") {
            (rest, true)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (rest, false)
        } else {
            return Err(format!("{url:?} must start with https:// or http://"));
        };
        let (hostport, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
        if hostport.contains('@') || path.contains('#') {
            return Err(format!("{url:?}: user info and fragments are not allowed"));
        }
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("{url:?}: the path has characters that are not allowed"));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !p.contains(']') => {
                (h, p.parse::<u16>().map_err(|_| format!("{url:?} has a bad port"))?)
            }
            _ => (hostport, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == b'/') {
            return Err(format!("{url:?} has no valid host"));
        }
        let authority = hostport.to_string();
        let tls = if tls { Some(Arc::new(UpstreamTls::new(&host, ca, false)?)) } else { None };
        Ok(Target { host, port, authority, path, tls })
    }

    /// Posts `body` (JSON); every step together takes at most `timeout`.
    pub fn post(&self, body: &str, timeout: Duration) -> Outcome {
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: failover/{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.path,
            self.authority,
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        match self.send(&request, Instant::now() + timeout) {
            Ok(head) => judge(&head),
            Err(e) => Outcome::Retry(e.to_string(), None),
        }
    }

    /// GETs the URL (`failover probe`): `Sent` for 2xx and 3xx.
    pub fn get(&self, timeout: Duration) -> Outcome {
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: failover/{}\r\nConnection: close\r\n\r\n",
            self.path,
            self.authority,
            env!("CARGO_PKG_VERSION")
        );
        let head = match self.send(&request, Instant::now() + timeout) {
            Ok(head) => head,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        match status_of(&head) {
            Ok((status @ 200..=399, _)) => Outcome::Sent(status),
            Ok((status, _)) => Outcome::Failed(format!("HTTP {status}")),
            Err(why) => Outcome::Failed(why),
        }
    }

    /// Sends one request and reads the response head.
    fn send(&self, request: &str, deadline: Instant) -> io::Result<Vec<u8>> {
        let mut sock = self.connect(deadline)?;
        match &self.tls {
            None => exchange(&mut sock, request.as_bytes(), deadline),
            Some(tls) => {
                let conn = tls.client().map_err(io::Error::other)?;
                exchange(&mut rustls::StreamOwned::new(conn, sock), request.as_bytes(), deadline)
            }
        }
    }

    fn connect(&self, deadline: Instant) -> io::Result<TcpStream> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{} resolves to no address", self.host));
        for addr in addrs {
            let left = remaining(deadline)?;
            match TcpStream::connect_timeout(&addr, left) {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
    }
    Ok(left)
}

/// A stream over a TCP socket (plain, or TLS on top), whose socket carries the timeouts.
trait OverTcp: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl OverTcp for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl OverTcp for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// Sends the request and reads until the end of the response head (or 16 KB, or EOF);
/// every socket operation gets what is left until `deadline` (a TLS write may read too).
fn exchange(stream: &mut impl OverTcp, request: &[u8], deadline: Instant) -> io::Result<Vec<u8>> {
    stream.tcp().set_write_timeout(Some(remaining(deadline)?))?;
    stream.tcp().set_read_timeout(Some(remaining(deadline)?))?;
    stream.write_all(request)?;
    stream.flush()?;
    read_head(|buf| {
        stream.tcp().set_read_timeout(Some(remaining(deadline)?))?;
        stream.read(buf)
    })
}

fn read_head(mut read: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the answer"))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(head)
}

/// The status of a response head and its `Retry-After` (seconds).
fn status_of(head: &[u8]) -> Result<(u16, Option<Duration>), String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut headers);
    // A whole status line is enough to know the outcome, even if the head ends early.
    let status = match (res.parse(head), res.code) {
        (Ok(httparse::Status::Complete(_)), Some(code)) => code,
        (Ok(httparse::Status::Partial), Some(code)) if head.windows(2).any(|w| w == b"\r\n") => code,
        (Ok(_), _) => return Err("the answer ended inside its status line".into()),
        (Err(e), _) => return Err(format!("bad answer: {e}")),
    };
    let retry_after = res
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Ok((status, retry_after))
}

/// Whether a webhook's answer means sent, try again, or give up.
fn judge(head: &[u8]) -> Outcome {
    let (status, retry_after) = match status_of(head) {
        Ok(s) => s,
        Err(why) => return Outcome::Retry(why, None),
    };
    match status {
        200..=299 => Outcome::Sent(status),
        408 | 429 | 500..=599 => Outcome::Retry(format!("HTTP {status}"), retry_after),
        _ => Outcome::Failed(format!("HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("http://127.0.0.1:9/hook?x=1", None).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1", 9, "127.0.0.1:9", "/hook?x=1")
        );
        let t = Target::parse("https://hooks.slack.com/services/T0/B0/X", None).unwrap();
        assert_eq!((t.port, t.authority.as_str(), t.tls.is_some()), (443, "hooks.slack.com", true));
        let t = Target::parse("http://[::1]:8080", None).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("::1", 8080, "/"));
        for bad in ["ftp://x/", "http://", "http://a:b/", "http://u@h/", "http://h/a b", "http://h/#f"] {
            assert!(Target::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers() {
        assert_eq!(judge(b"HTTP/1.1 202 Accepted\r\n\r\n"), Outcome::Sent(202));
        assert_eq!(judge(b"HTTP/1.1 204 No Content\r\n\r\n"), Outcome::Sent(204));
        assert_eq!(
            judge(b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\n\r\n"),
            Outcome::Retry("HTTP 429".into(), Some(Duration::from_secs(7)))
        );
        assert_eq!(judge(b"HTTP/1.1 503 x\r\n\r\n"), Outcome::Retry("HTTP 503".into(), None));
        assert_eq!(judge(b"HTTP/1.1 404 x\r\n\r\n"), Outcome::Failed("HTTP 404".into()));
        assert!(matches!(judge(b"HTTP/1.1 200"), Outcome::Retry(..)));
        assert!(matches!(judge(b"garbage\r\n\r\n"), Outcome::Retry(..)));
    }
}
