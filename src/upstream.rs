//! Upstreams: what an upstream URL means (address, Host, path prefix) and the connections
//! a worker holds to them, including the per-target pool of idle keep-alive connections.
//!
//! This file never reads or writes HTTP: a connection here is a socket with readiness and
//! bookkeeping. What flows over it is the client state machine's business.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

use crate::readiness::Readiness;
use crate::timer::Deadline;
use crate::tls::UpstreamTls;
use crate::transport::Conn;

/// Which upstream a request, probe or connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Primary,
    Backup,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Primary => "primary",
            Target::Backup => "backup",
        }
    }

    pub fn other(self) -> Target {
        match self {
            Target::Primary => Target::Backup,
            Target::Backup => Target::Primary,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What Host header an upstream gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPolicy {
    /// The client's Host, unchanged.
    Client,
    /// The upstream URL's `host[:port]`.
    Upstream,
    /// This value.
    Literal(String),
}

impl HostPolicy {
    /// Parses `client`, `upstream` or a literal host name.
    pub fn parse(v: &str) -> Result<HostPolicy, String> {
        match v.trim() {
            "client" => Ok(HostPolicy::Client),
            "upstream" => Ok(HostPolicy::Upstream),
            v if !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b)) => {
                Ok(HostPolicy::Literal(v.to_string()))
            }
            v => Err(format!("{v:?} must be client, upstream or a host name")),
        }
    }
}

/// A parsed upstream URL, `http[s]://host[:port][/prefix]`, with how to talk to it.
#[derive(Debug, Clone)]
pub struct UpstreamUrl {
    /// The URL as the operator wrote it (shown in logs and `/__failover/state`).
    pub url: String,
    pub host: String,
    pub port: u16,
    /// `host[:port]` as it belongs in a Host header (port omitted when it is the default).
    pub authority: String,
    /// Path prefix without a trailing slash ("" when none), prepended to every request path.
    pub prefix: String,
    /// Resolved once at start.
    pub addr: SocketAddr,
    /// `https://`: the connection speaks TLS.
    pub tls: bool,
    /// Host header policy (default: client for http, upstream for https).
    pub host_header: HostPolicy,
    /// Certificate verification is off for this upstream.
    pub insecure: bool,
    /// TLS client setup (for `https://` only), built once at start.
    pub tls_client: Option<Arc<UpstreamTls>>,
}

impl UpstreamUrl {
    /// The Host value to send instead of the client's, if any.
    pub fn host_override(&self) -> Option<&str> {
        match &self.host_header {
            HostPolicy::Client => None,
            HostPolicy::Upstream => Some(&self.authority),
            HostPolicy::Literal(v) => Some(v),
        }
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl UpstreamUrl {
    /// Parses and resolves an upstream URL. The error is a phrase to follow the flag name.
    pub fn parse(url: &str) -> Result<UpstreamUrl, String> {
        let url = url.trim();
        let (rest, tls) = if let Some(rest) = url.strip_prefix("http://") {
            (rest, false)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (rest, true)
        } else {
            return Err(format!("{url:?} must start with http:// or https://"));
        };
        let (hostport, path) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if path.starts_with(['?', '#']) {
            return Err(format!("{url:?}: a query or fragment is not allowed in an upstream URL"));
        }
        if hostport.contains('@') {
            return Err(format!("{url:?}: user info is not allowed in an upstream URL"));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) =
            split_host_port(hostport, default_port).ok_or_else(|| format!("{url:?} has no valid host[:port]"))?;
        if path.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#') {
            return Err(format!("{url:?}: the path prefix has characters that are not allowed"));
        }
        let prefix = path.trim_end_matches('/').to_string();
        let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
            .to_socket_addrs()
            .map_err(|e| format!("{url:?}: cannot resolve {host:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url:?}: {host:?} resolves to no address"))?;
        let authority = if port == default_port { host.clone() } else { format!("{host}:{port}") };
        let host_header = if tls { HostPolicy::Upstream } else { HostPolicy::Client };
        Ok(UpstreamUrl {
            url: url.to_string(),
            host,
            port,
            authority,
            prefix,
            addr,
            tls,
            host_header,
            insecure: false,
            tls_client: None,
        })
    }
}

fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(end) = s.strip_prefix('[').and_then(|r| r.find(']')) {
        let host = &s[..end + 2];
        match &s[end + 2..] {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let valid = |b: u8| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b);
    if host.is_empty() || !host.bytes().all(valid) {
        return None;
    }
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0)?,
        None => default_port,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// What an upstream connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpState {
    /// Non-blocking connect in progress.
    Connecting,
    /// Attached to a client exchange.
    Busy,
    /// In the idle pool, waiting for reuse.
    Idle,
}

/// One connection to an upstream.
pub struct Uplink {
    pub sock: Conn,
    pub ready: Readiness,
    pub target: Target,
    pub state: UpState,
    /// Slab key of the client using it, while `Busy` or `Connecting`.
    pub client: Option<usize>,
    /// True once it carried a complete exchange (a reused connection may have been closed
    /// by the upstream meanwhile, so a failure on it is retried on a fresh one).
    pub reused: bool,
    pub gen: u32,
    /// When it entered the idle pool.
    pub idle_since: Instant,
    /// Expiry while idle in the pool.
    pub deadline: Deadline,
}

/// Idle keep-alive connections of one worker, per target, most recently used first.
pub struct IdlePool {
    lists: [Vec<usize>; 2],
    max_per_target: usize,
}

impl IdlePool {
    pub fn new(max_per_target: usize) -> IdlePool {
        IdlePool { lists: [Vec::with_capacity(max_per_target), Vec::with_capacity(max_per_target)], max_per_target }
    }

    /// Takes the most recently used idle connection to `target`.
    pub fn take(&mut self, target: Target) -> Option<usize> {
        self.lists[target.index()].pop()
    }

    /// Offers an idle connection; false when the pool is full (the caller closes it).
    pub fn put(&mut self, target: Target, key: usize) -> bool {
        let list = &mut self.lists[target.index()];
        if list.len() >= self.max_per_target {
            return false;
        }
        list.push(key);
        true
    }

    /// Forgets a connection (closed while idle).
    pub fn remove(&mut self, target: Target, key: usize) {
        let list = &mut self.lists[target.index()];
        if let Some(i) = list.iter().position(|&k| k == key) {
            list.remove(i);
        }
    }

    /// The oldest idle connection of `target`, for expiry.
    pub fn oldest(&self, target: Target) -> Option<usize> {
        self.lists[target.index()].first().copied()
    }

    pub fn len(&self, target: Target) -> usize {
        self.lists[target.index()].len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = UpstreamUrl::parse("http://127.0.0.1:9001").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.prefix.as_str()), ("127.0.0.1", 9001, ""));
        assert_eq!(u.authority, "127.0.0.1:9001");
        let u = UpstreamUrl::parse("http://127.0.0.1/api/v1/").unwrap();
        assert_eq!((u.port, u.prefix.as_str(), u.authority.as_str()), (80, "/api/v1", "127.0.0.1"));
        let u = UpstreamUrl::parse("http://localhost:8000/x").unwrap();
        assert_eq!(u.addr.port(), 8000);
        let u = UpstreamUrl::parse("http://[::1]:81").unwrap();
        assert_eq!(u.authority, "[::1]:81");
        let u = UpstreamUrl::parse("https://127.0.0.1/b").unwrap();
        assert!(u.tls);
        assert_eq!((u.port, u.authority.as_str(), u.prefix.as_str()), (443, "127.0.0.1", "/b"));
        let u = UpstreamUrl::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!(u.authority, "127.0.0.1:8443");
        for bad in [
            "ftp://x",
            "127.0.0.1:80",
            "http://",
            "http://:80",
            "http://a:0",
            "http://a:99999",
            "http://a:b",
            "http://u@127.0.0.1",
            "http://127.0.0.1/?q",
            "http://127.0.0.1/a b",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn pool_is_lifo_and_bounded() {
        let mut p = IdlePool::new(2);
        assert!(p.put(Target::Primary, 1));
        assert!(p.put(Target::Primary, 2));
        assert!(!p.put(Target::Primary, 3));
        assert!(p.put(Target::Backup, 9));
        assert_eq!(p.oldest(Target::Primary), Some(1));
        assert_eq!(p.take(Target::Primary), Some(2));
        p.remove(Target::Primary, 1);
        assert_eq!(p.take(Target::Primary), None);
        assert_eq!(p.take(Target::Backup), Some(9));
    }
}
