//! The admin listener (`--admin-listen`): the read-only endpoints, plus what moves traffic
//! by hand — `POST`/`DELETE /__failover/override` and `/__failover/drain` — with JSON in and
//! out. One blocking thread serves it, one connection at a time, off the event loops: an
//! operator's request is rare, and a slow one must not cost a loop anything.
//!
//! With `--admin-token-file`, every request needs `Authorization: Bearer <token>`, compared
//! in time that does not depend on where the bytes differ.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::admin::{self, Sources};
use crate::answer::{json_str, reason};
use crate::buffer::{Pool, Writer};
use crate::config::{AdminAddr, Config};
use crate::health::{Book, Change};
use crate::holds::{Hold, DEFAULT_TTL, MAX_TTL};
use crate::http1::{self, Forward};
use crate::units::parse_duration;
use crate::worker::{announce, Shared};

/// Largest request head and body the admin listener reads.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;
/// How long one admin request may take to arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Binds the admin listener (a unix socket is created mode 0600, replacing a stale one).
pub fn bind(addr: &AdminAddr) -> io::Result<Listener> {
    match addr {
        AdminAddr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a)?)),
        AdminAddr::Unix(path) => {
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if !meta.file_type().is_socket() {
                    return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket"));
                }
                std::fs::remove_file(path)?;
            }
            let l = UnixListener::bind(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            Ok(Listener::Unix(l))
        }
    }
}

/// Serves the admin listener: a thread accepts, and each connection gets a thread of its
/// own (at most [`MAX_CONNECTIONS`] at once), so an idle one holds up nobody.
pub fn spawn(listener: Listener, cfg: Arc<Config>, shared: Shared) -> io::Result<()> {
    let open = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new().name("admin".into()).spawn(move || loop {
        let accepted: io::Result<Box<dyn Conn>> = match &listener {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Conn>),
            Listener::Unix(l) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Conn>),
        };
        let mut conn = match accepted {
            Ok(c) => c,
            Err(e) => {
                log::warn!("admin listener: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if open.load(Ordering::Acquire) >= MAX_CONNECTIONS {
            let _ =
                conn.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            continue;
        }
        let _ = conn.timeouts(READ_TIMEOUT);
        open.fetch_add(1, Ordering::AcqRel);
        let (open, cfg, shared) = (open.clone(), cfg.clone(), shared.clone());
        let spawned = std::thread::Builder::new().name("admin-conn".into()).spawn(move || {
            let mut api = Api { cfg, seen: 0, shared, pool: Pool::new(2) };
            if let Err(e) = api.serve(conn) {
                log::debug!("admin connection: {e}");
            }
            open.fetch_sub(1, Ordering::AcqRel);
        });
        if let Err(e) = spawned {
            log::warn!("admin listener: cannot start a thread: {e}");
        }
    })?;
    Ok(())
}

/// Admin connections served at once; more get 503.
const MAX_CONNECTIONS: usize = 16;

/// A connection of either kind.
trait Conn: Read + Write + Send {
    fn timeouts(&self, d: Duration) -> io::Result<()>;
}

impl Conn for std::net::TcpStream {
    fn timeouts(&self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
}

impl Conn for std::os::unix::net::UnixStream {
    fn timeouts(&self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
}

struct Api {
    cfg: Arc<Config>,
    /// The configuration generation `cfg` is (a reload publishes a newer one).
    seen: u64,
    shared: Shared,
    pool: Pool,
}

/// An answer: status and JSON (or the endpoint's own bytes).
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

fn json(status: u16, body: String) -> Reply {
    Reply { status, content_type: "application/json", body: body.into_bytes() }
}

fn error(status: u16, what: &str) -> Reply {
    json(status, format!("{{\"error\":{}}}\n", json_str(what)))
}

/// `POST /__failover/override` and `/__failover/drain`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct HoldRequest {
    /// Position in the chain, URL or name (`primary`, `backup`, `backup2`...).
    target: serde_yaml::Value,
    ttl: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    force: bool,
}

/// `DELETE /__failover/drain` may name its target.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct Target {
    target: Option<serde_yaml::Value>,
}

impl Api {
    fn serve<S: Read + Write>(&mut self, mut s: S) -> io::Result<()> {
        if let Some((generation, cfg)) = self.shared.control.config_since(self.seen) {
            (self.seen, self.cfg) = (generation, cfg);
        }
        let mut buf = Vec::with_capacity(2048);
        let mut chunk = [0u8; 4096];
        let head_len = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                return self.reply(&mut s, error(431, "request head too large"), false);
            }
            match s.read(&mut chunk)? {
                0 => return Ok(()),
                n => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let (method, path) = match req.parse(&buf[..head_len]) {
            Ok(httparse::Status::Complete(_)) => (req.method.unwrap_or(""), req.path.unwrap_or("")),
            _ => return self.reply(&mut s, error(400, "malformed request"), false),
        };
        let (method, path) = (method.to_string(), path.split('?').next().unwrap_or("").to_string());
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
        };
        if let Some(token) = &self.cfg.admin_token {
            let given = header("authorization").unwrap_or_default();
            let given = given.strip_prefix("Bearer ").unwrap_or("");
            if !same(given.as_bytes(), token.as_bytes()) {
                log::warn!(event = "admin_unauthorized"; "admin: {method} {path} refused: missing or wrong bearer token");
                return self.reply(&mut s, error(401, "missing or wrong bearer token"), true);
            }
        }
        let length: usize = match header("content-length").map(|v| v.parse::<usize>()) {
            None => 0,
            Some(Ok(n)) if n <= MAX_BODY => n,
            Some(Ok(_)) => return self.reply(&mut s, error(413, "body too large (at most 64 KB)"), false),
            Some(Err(_)) => return self.reply(&mut s, error(400, "invalid Content-Length"), false),
        };
        if header("transfer-encoding").is_some() {
            return self.reply(&mut s, error(411, "send the body with Content-Length"), false);
        }
        let mut body = buf[head_len..].to_vec();
        while body.len() < length {
            match s.read(&mut chunk)? {
                0 => return Ok(()),
                n => body.extend_from_slice(&chunk[..n]),
            }
        }
        body.truncate(length);
        let reply = match (method.as_str(), path.as_str()) {
            ("POST", "/__failover/override") => self.set(&body, true),
            ("DELETE", "/__failover/override") => self.clear(true, &body),
            ("POST", "/__failover/drain") => self.set(&body, false),
            ("DELETE", "/__failover/drain") => self.clear(false, &body),
            (_, "/__failover/override" | "/__failover/drain") => {
                return self.reply(&mut s, error(405, "use POST or DELETE"), false);
            }
            ("GET" | "HEAD", _) => return self.read_only(&mut s, &buf[..head_len]),
            _ => error(404, "no such admin endpoint"),
        };
        self.reply(&mut s, reply, false)
    }

    /// The read-only endpoints, answered as on the public listener (the state with the
    /// reasons operators gave).
    fn read_only<S: Write>(&mut self, s: &mut S, head: &[u8]) -> io::Result<()> {
        let cfg = self.cfg.clone();
        let fwd = Forward {
            prefix: "",
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            proto: "http",
            host: None,
            request_id: None,
            max_body: 0,
            limits: cfg.limits,
        };
        let mut scratch = self.pool.take();
        let parsed = http1::parse_request(head, &fwd, &mut Writer { buf: &mut scratch, overflow: false });
        self.pool.put(scratch);
        let mut req = match parsed {
            Ok(Some(req)) => req,
            _ => return self.reply(s, error(400, "malformed request"), false),
        };
        let Some(kind) = req.admin else { return self.reply(s, error(404, "no such admin endpoint"), false) };
        req.keep_alive = false;
        let mut out = self.pool.take();
        let sh = &self.shared;
        let from = Sources { cfg: &cfg, board: &sh.board, control: &sh.control, metrics: &sh.metrics, private: true };
        admin::answer(kind, &req, from, &mut out);
        let res = s.write_all(out.bytes());
        self.pool.put(out);
        res
    }

    fn set(&mut self, body: &[u8], pin: bool) -> Reply {
        let what = if pin { "override" } else { "drain" };
        let req: HoldRequest = match serde_yaml::from_slice(body) {
            Ok(r) => r,
            Err(e) => return error(400, &format!("{what}: {}", e.to_string().replace('\n', " "))),
        };
        let cfg = self.cfg.clone();
        let Some(target) = find(&cfg, &req.target) else {
            return error(400, &format!("{what}: no upstream {:?} (an index, URL or name)", show(&req.target)));
        };
        let ttl = match req.ttl.as_deref().map(parse_duration) {
            None => DEFAULT_TTL,
            Some(Ok(t)) if t.is_zero() => return error(400, "ttl must be more than 0"),
            Some(Ok(t)) if t > MAX_TTL => return error(400, "ttl is at most 24h"),
            Some(Ok(t)) => t,
            Some(Err(e)) => return error(400, &format!("ttl {e}")),
        };
        let name = cfg.name(target).to_string();
        let book = self.shared.board.snapshot();
        let healthy = book.ups.get(target).is_some_and(|h| h.healthy);
        if pin && !healthy && !req.force {
            let why = book.ups.get(target).map_or("", |h| h.last_error.as_str());
            return error(409, &format!("{name} fails its checks ({why}); add \"force\": true to pin it anyway"));
        }
        if !pin && !req.force && book.first_serving(Some(target)).is_none() {
            return error(
                409,
                &format!("draining {name} leaves no healthy upstream; add \"force\": true to drain it anyway"),
            );
        }
        let url = cfg.upstreams.get(target).map_or("", |u| u.url.as_str());
        let pinned = book.holds.pin.as_ref().map(|p| p.target);
        if pin && book.holds.is_drained(target) {
            return error(409, &format!("{name} is drained; DELETE the drain first"));
        }
        if !pin && pinned == Some(target) {
            return error(409, &format!("new requests are pinned to {name}; DELETE the override first"));
        }
        let hold = Hold::new(target, url, ttl, req.reason.as_deref().unwrap_or(""), req.force);
        let change = self.shared.board.hold(|b| if pin { b.set_pin(&cfg, hold) } else { b.set_drain(&cfg, hold) });
        self.announce(change);
        json(200, format!("{{{}}}\n", holds_json(&cfg, &self.shared.board.snapshot(), true)))
    }

    fn clear(&mut self, pin: bool, body: &[u8]) -> Reply {
        let cfg = self.cfg.clone();
        let change = if pin {
            self.shared.board.hold(|b| b.clear_pin(&cfg))
        } else {
            let t: Target = if body.iter().all(u8::is_ascii_whitespace) {
                Target::default()
            } else {
                match serde_yaml::from_slice(body) {
                    Ok(t) => t,
                    Err(e) => return error(400, &format!("drain: {}", e.to_string().replace('\n', " "))),
                }
            };
            let target = match &t.target {
                None => None,
                Some(v) => match find(&cfg, v) {
                    Some(i) => Some(i),
                    None => return error(400, &format!("drain: no upstream {:?}", show(v))),
                },
            };
            self.shared.board.hold(|b| b.clear_drain(&cfg, target))
        };
        if change.is_none() {
            return error(404, if pin { "no override is set" } else { "no such drain" });
        }
        self.announce(change);
        json(200, format!("{{{}}}\n", holds_json(&cfg, &self.shared.board.snapshot(), true)))
    }

    /// Logs the change, sends its notification and wakes the loops to follow it.
    fn announce(&self, change: Option<Change>) {
        if let Some(c) = change {
            announce(&self.cfg, &self.shared, &c);
        }
    }

    fn reply<S: Write>(&self, s: &mut S, r: Reply, auth: bool) -> io::Result<()> {
        let extra = if auth { "WWW-Authenticate: Bearer\r\n" } else { "" };
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{extra}Connection: close\r\n\r\n",
            r.status,
            reason(r.status),
            r.content_type,
            r.body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(&r.body)?;
        s.flush()
    }
}

/// An upstream by position, URL or name.
fn find(cfg: &Config, v: &serde_yaml::Value) -> Option<usize> {
    match v {
        serde_yaml::Value::Number(n) => n.as_u64().map(|i| i as usize).filter(|&i| i < cfg.upstreams.len()),
        serde_yaml::Value::String(s) => {
            let s = s.trim();
            cfg.upstreams
                .iter()
                .position(|u| u.url == s || u.name == s || u.url.trim_end_matches('/') == s.trim_end_matches('/'))
        }
        _ => None,
    }
}

fn show(v: &serde_yaml::Value) -> String {
    serde_yaml::to_string(v).unwrap_or_default().trim().to_string()
}

/// Equal tokens, in time that depends on the lengths only (never on where bytes differ).
fn same(given: &[u8], token: &[u8]) -> bool {
    let mut diff = given.len() ^ token.len();
    for (i, &t) in token.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ t);
    }
    diff == 0
}

/// The override and drains as JSON (`private`: with the reasons operators gave).
pub fn holds_json(cfg: &Config, book: &Book, private: bool) -> String {
    let now = Instant::now();
    let one = |h: &Hold| {
        let reason = if private { format!(",\"reason\":{}", json_str(&h.reason)) } else { String::new() };
        format!(
            "{{\"index\":{},\"name\":{},\"url\":{},\"set_unix\":{},\"until_unix\":{},\"expires_in_s\":{},\"forced\":{}{reason}}}",
            h.target,
            json_str(cfg.name(h.target)),
            json_str(&h.url),
            h.set_ms / 1000,
            h.until_ms.div_ceil(1000),
            h.until.saturating_duration_since(now).as_secs_f64().ceil() as u64,
            h.forced,
        )
    };
    let pin = book.holds.pin.as_ref().map_or("null".to_string(), one);
    let drains: Vec<String> = book.holds.drains.iter().map(one).collect();
    format!("\"override\":{pin},\"drains\":[{}]", drains.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same(b"0123456789abcdeX", b"0123456789abcdef"));
        assert!(!same(b"0123456789abcde", b"0123456789abcdef"));
        assert!(!same(b"0123456789abcdef0", b"0123456789abcdef"));
        assert!(!same(b"", b"0123456789abcdef"));
    }
}
