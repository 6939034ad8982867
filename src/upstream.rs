//! Upstreams: what one link of the chain is. Either an origin reached over HTTP(S) (its
//! address, Host policy, path prefix and TLS setup) or a directory the proxy serves itself.
//! Position in the chain is priority: index 0 is the primary, then the backups in order.
//!
//! This file never opens a connection and never reads a file: it describes, checked once
//! at start.

use std::fmt;
use std::sync::Arc;

use crate::http1::Addressing;
use crate::resolve::Addrs;
use crate::static_files::Site;
use crate::tls::UpstreamTls;

/// Most upstreams in a chain (a bit each in a routing mask, with room to spare).
pub const MAX_UPSTREAMS: usize = 16;

/// One link of the chain.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The URL as the operator wrote it (shown in logs and `/__failover/state`).
    pub url: String,
    /// `primary`, `backup`, `backup2`, ...: how logs and messages name it.
    pub name: String,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub enum Kind {
    /// An HTTP(S) server the proxy forwards to.
    Origin(Origin),
    /// A directory the proxy serves itself (`file://`).
    Site(Site),
}

/// The name of the upstream at `index` of the chain.
pub fn name_of(index: usize) -> String {
    match index {
        0 => "primary".to_string(),
        1 => "backup".to_string(),
        i => format!("backup{i}"),
    }
}

impl Upstream {
    pub fn origin(&self) -> Option<&Origin> {
        match &self.kind {
            Kind::Origin(o) => Some(o),
            Kind::Site(_) => None,
        }
    }

    pub fn site(&self) -> Option<&Site> {
        match &self.kind {
            Kind::Site(s) => Some(s),
            Kind::Origin(_) => None,
        }
    }

    /// How a request head is addressed for this upstream: a directory gets the client's
    /// path and Host unchanged.
    pub fn addressing(&self) -> Addressing<'_> {
        match &self.kind {
            Kind::Origin(o) => Addressing { prefix: &o.prefix, host: o.host_override() },
            Kind::Site(_) => Addressing::NONE,
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// What Host header an origin gets.
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

/// An HTTP(S) upstream, `http[s]://host[:port][/prefix]`, with how to talk to it.
#[derive(Debug, Clone)]
pub struct Origin {
    pub host: String,
    pub port: u16,
    /// `host[:port]` as it belongs in a Host header (port omitted when it is the default).
    pub authority: String,
    /// Path prefix without a trailing slash ("" when none), prepended to every request path.
    pub prefix: String,
    /// Every address the host resolves to, kept current by the resolver thread.
    pub addrs: Arc<Addrs>,
    /// `https://`: the connection speaks TLS.
    pub tls: bool,
    /// Host header policy (default: client for http, upstream for https).
    pub host_header: HostPolicy,
    /// Certificate verification is off for this upstream.
    pub insecure: bool,
    /// TLS client setup (for `https://` only), built once at start.
    pub tls_client: Option<Arc<UpstreamTls>>,
}

impl Origin {
    /// The Host value to send instead of the client's, if any.
    pub fn host_override(&self) -> Option<&str> {
        match &self.host_header {
            HostPolicy::Client => None,
            HostPolicy::Upstream => Some(&self.authority),
            HostPolicy::Literal(v) => Some(v),
        }
    }

    /// Parses an `http://` or `https://` URL and looks its host up. A malformed URL is an
    /// error (a phrase to follow the flag name); a name that does not resolve is not: the
    /// upstream starts without addresses, unhealthy, until a lookup succeeds.
    pub fn parse(url: &str) -> Result<Origin, String> {
        let url = url.trim();
        let (rest, tls) = if let Some(rest) = url.strip_prefix("http://") {
            (rest, false)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (rest, true)
        } else {
            return Err(format!("{url:?} must start with http://, https:// or file://"));
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
        let addrs = Arc::new(Addrs::new(&host, port));
        let authority = if port == default_port { host.clone() } else { format!("{host}:{port}") };
        let host_header = if tls { HostPolicy::Upstream } else { HostPolicy::Client };
        Ok(Origin { host, port, authority, prefix, addrs, tls, host_header, insecure: false, tls_client: None })
    }
}

/// The directory of a `file://` URL: `file:///srv/site` (absolute) or `file://./site`
/// (relative to the working directory). None when the URL is not `file://`.
pub fn file_path(url: &str) -> Option<Result<&str, String>> {
    let rest = url.trim().strip_prefix("file://")?;
    Some(match rest {
        "" => Err(format!("{url:?} names no directory (file:///abs/path or file://./relative)")),
        p if p.starts_with('/') || p.starts_with("./") || p.starts_with("../") || p == "." => Ok(p),
        _ => Err(format!("{url:?}: write file:///absolute/path or file://./relative/path")),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Origin::parse("http://127.0.0.1:9001").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.prefix.as_str()), ("127.0.0.1", 9001, ""));
        assert_eq!(u.authority, "127.0.0.1:9001");
        let u = Origin::parse("http://127.0.0.1/api/v1/").unwrap();
        assert_eq!((u.port, u.prefix.as_str(), u.authority.as_str()), (80, "/api/v1", "127.0.0.1"));
        let u = Origin::parse("http://localhost:8000/x").unwrap();
        assert!(u.addrs.pick().0.iter().all(|a| a.port() == 8000));
        let u =
            Origin::parse("http://no-such-host.invalid:81").expect("a name that does not resolve is no config error");
        assert!(u.addrs.pick().0.is_empty());
        let u = Origin::parse("http://[::1]:81").unwrap();
        assert_eq!(u.authority, "[::1]:81");
        let u = Origin::parse("https://127.0.0.1/b").unwrap();
        assert!(u.tls);
        assert_eq!((u.port, u.authority.as_str(), u.prefix.as_str()), (443, "127.0.0.1", "/b"));
        let u = Origin::parse("https://127.0.0.1:8443").unwrap();
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
            assert!(Origin::parse(bad).is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn file_urls() {
        let cases: &[(&str, Option<Result<&str, ()>>)] = &[
            ("file:///srv/site", Some(Ok("/srv/site"))),
            ("file://./examples/sorry", Some(Ok("./examples/sorry"))),
            ("file://../up", Some(Ok("../up"))),
            ("file://", Some(Err(()))),
            ("file://srv/site", Some(Err(()))),
            ("http://x", None),
        ];
        for (url, want) in cases {
            assert_eq!(file_path(url).map(|r| r.map_err(|_| ())), *want, "{url}");
        }
    }

    #[test]
    fn names_follow_the_chain() {
        assert_eq!([name_of(0), name_of(1), name_of(2), name_of(3)], ["primary", "backup", "backup2", "backup3"]);
    }
}
