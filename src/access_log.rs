//! The access log (`--access-log PATH|-`): one line per request, JSON or the combined
//! format, written through a buffer per worker that the loop flushes once per turn.
//!
//! A request appends its line to the buffer (its memory is kept, so a line allocates
//! nothing); the flush is one `write` of many lines to a file opened `O_APPEND` by each
//! worker (whole lines from several workers never interleave). If the disk falls behind
//! and the buffer reaches its bound, lines are dropped and counted, never waited for.
//! SIGHUP reopens the file (after logrotate moved it).

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::time::Duration;

use crate::client_io::ClientIo;
use crate::config::Config;
use crate::health::unix_ms;
use crate::http1::Marks;
use crate::httpdate::{Clf, Rfc3339};

/// Past this many buffered bytes, new lines are dropped until a flush gets through.
const MAX_BUFFERED: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Json,
    Combined,
}

impl Style {
    pub fn parse(v: &str) -> Option<Style> {
        match v {
            "json" => Some(Style::Json),
            "combined" => Some(Style::Combined),
            _ => None,
        }
    }
}

/// Where the log goes, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A file path, or `-` for standard output.
    pub path: String,
    pub style: Style,
}

/// One attempt that failed before the answer (a retried request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Try {
    pub upstream: u8,
    /// The upstream's status (a retried 503), or 0 with `error`.
    pub status: u16,
    pub error: &'static str,
    pub ms: u32,
}

/// How one request ended, as its connection's code knows it.
pub struct Done<'a> {
    /// The request's head (None: the one in the log's own slot, for an answer the proxy made
    /// without an exchange).
    pub head: Option<&'a Head>,
    pub status: u16,
    pub duration: Duration,
    /// The upstream that answered (`None`: the proxy did).
    pub upstream: Option<usize>,
    pub upstream_status: u16,
    pub ttfb: Option<Duration>,
    pub tries: &'a [Try],
}

/// One request as the log writes it.
struct Record<'a> {
    pub at_ms: u64,
    pub client: IpAddr,
    pub head: &'a Head,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    /// The upstream that answered (`None`: the proxy did).
    pub upstream: Option<&'a str>,
    pub upstream_status: u16,
    pub ttfb: Option<Duration>,
    pub tries: &'a [Try],
    /// Upstream names by position (for `tries` and the route).
    pub names: &'a dyn Fn(usize) -> &'a str,
}

/// What the log keeps of a request head until its response ends: the method, target,
/// request id, Referer and User-Agent, copied (the client's buffer moves on). Its memory is
/// kept from request to request.
#[derive(Debug, Default)]
pub struct Head {
    bytes: Vec<u8>,
    /// Where each part ends in `bytes`.
    cuts: [usize; 5],
    pub minor: u8,
    /// Where the route pointed when the request arrived.
    pub route: usize,
    /// The client connection's sent-byte count when the request arrived.
    pub sent_before: u32,
}

impl Head {
    /// Copies the marked parts of `input`; `id` is the generated request id, used when the
    /// request has none.
    pub fn capture(&mut self, input: &[u8], m: &Marks, id: &[u8], minor: u8, route: usize) {
        self.bytes.clear();
        let part = |(a, b): (u16, u16)| input.get(a as usize..b as usize).unwrap_or_default();
        let id = if m.request_id == (0, 0) { id } else { part(m.request_id) };
        for (i, p) in [part(m.method), part(m.target), id, part(m.referer), part(m.user_agent)].into_iter().enumerate()
        {
            self.bytes.extend_from_slice(p);
            self.cuts[i] = self.bytes.len();
        }
        (self.minor, self.route) = (minor, route);
    }

    /// For a request that did not parse: nothing to show.
    pub fn clear(&mut self, route: usize) {
        self.bytes.clear();
        self.cuts = [0; 5];
        (self.minor, self.route) = (1, route);
    }

    fn part(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.cuts[i - 1] };
        self.bytes.get(start..self.cuts[i]).unwrap_or_default()
    }

    pub fn method(&self) -> &[u8] {
        self.part(0)
    }
    pub fn target(&self) -> &[u8] {
        self.part(1)
    }
    pub fn request_id(&self) -> &[u8] {
        self.part(2)
    }
    pub fn referer(&self) -> &[u8] {
        self.part(3)
    }
    pub fn user_agent(&self) -> &[u8] {
        self.part(4)
    }
}

enum Out {
    File(File),
    Stdout,
}

/// One worker's log.
pub struct AccessLog {
    target: Target,
    out: Out,
    buf: Vec<u8>,
    pub dropped: u64,
    failing: bool,
    /// The head of the request being parsed (moved into its exchange).
    pub head: Head,
    /// Request ids: a per-process prefix, the worker and a counter.
    id_prefix: u32,
    worker: u8,
    counter: u64,
}

impl AccessLog {
    pub fn open(target: &Target) -> io::Result<AccessLog> {
        Ok(AccessLog {
            out: open(&target.path)?,
            target: target.clone(),
            buf: Vec::with_capacity(64 * 1024),
            dropped: 0,
            failing: false,
            head: Head::default(),
            id_prefix: 0,
            worker: 0,
            counter: 0,
        })
    }

    /// Sets what makes this worker's request ids unique: the process's start time and id
    /// (mixed into 32 bits) and the worker number.
    pub fn ids_for(&mut self, worker: usize) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let mix = (now ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.id_prefix = (mix >> 32) as u32;
        self.worker = worker as u8;
    }

    /// A new request id (20 hex digits) in `out`; returns its length.
    pub fn next_id(&mut self, out: &mut [u8; 20]) -> usize {
        self.counter += 1;
        let v = (u128::from(self.id_prefix) << 48)
            | (u128::from(self.worker) << 40)
            | u128::from(self.counter & ((1 << 40) - 1));
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in out.iter_mut().enumerate() {
            *b = HEX[((v >> (4 * (19 - i))) & 0xf) as usize];
        }
        out.len()
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Opens the file again (after a rotation moved it) or another target.
    pub fn reopen(&mut self, target: &Target) {
        match open(&target.path) {
            Ok(out) => {
                self.flush();
                self.out = out;
                self.target = target.clone();
                self.failing = false;
            }
            Err(e) => log::error!("access log {}: cannot reopen: {e}; keeping the open file", target.path),
        }
    }

    /// Appends the line of one request of connection `io` (its client, and the bytes written
    /// to it since the request arrived, counting what is still queued).
    pub fn log(&mut self, cfg: &Config, io: &ClientIo, done: Done) {
        let own = if done.head.is_none() { std::mem::take(&mut self.head) } else { Head::default() };
        let head = done.head.unwrap_or(&own);
        let pending = io.cout.as_ref().map_or(0, |b| b.len()) as u32;
        // The sent count wraps at 4 GiB; one response's share of it is what matters.
        let bytes = io.sent.wrapping_add(pending).wrapping_sub(head.sent_before);
        let names = |i: usize| cfg.name(i);
        self.record(&Record {
            at_ms: unix_ms(),
            client: io.peer.ip(),
            head,
            status: done.status,
            bytes: u64::from(bytes),
            duration: done.duration,
            upstream: done.upstream.map(|i| cfg.name(i)),
            upstream_status: done.upstream_status,
            ttfb: done.ttfb,
            tries: done.tries,
            names: &names,
        });
        if done.head.is_none() {
            self.head = own;
        }
    }

    fn record(&mut self, r: &Record) {
        if self.buf.len() >= MAX_BUFFERED {
            self.dropped += 1;
            return;
        }
        match self.target.style {
            Style::Json => json(&mut self.buf, r),
            Style::Combined => combined(&mut self.buf, r),
        }
    }

    /// Writes what is buffered; called once per loop turn.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let res = match &mut self.out {
            Out::File(f) => write_some(f, &self.buf),
            Out::Stdout => write_some(&mut io::stdout().lock(), &self.buf),
        };
        match res {
            Ok(n) => {
                // Lines are kept whole: a partial write leaves the rest for the next turn.
                self.buf.drain(..n);
                self.failing = false;
            }
            Err(e) => {
                if !self.failing {
                    log::error!("access log {}: {e}; lines are held (up to 1 MB), then dropped", self.target.path);
                    self.failing = true;
                }
            }
        }
    }
}

fn open(path: &str) -> io::Result<Out> {
    if path == "-" {
        return Ok(Out::Stdout);
    }
    OpenOptions::new().create(true).append(true).open(path).map(Out::File)
}

fn write_some(w: &mut impl io::Write, buf: &[u8]) -> io::Result<usize> {
    loop {
        match w.write(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            res => return res,
        }
    }
}

/// Bytes as a JSON string body (quotes not included).
fn json_bytes(out: &mut Vec<u8>, v: &[u8]) {
    for &b in v {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(b),
            _ => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn json(out: &mut Vec<u8>, r: &Record) {
    let _ = write!(out, "{{\"ts\":\"{}\",\"client\":\"{}\",\"method\":\"", Rfc3339(r.at_ms), r.client);
    json_bytes(out, r.head.method());
    out.extend_from_slice(b"\",\"path\":\"");
    json_bytes(out, r.head.target());
    let _ = write!(
        out,
        "\",\"status\":{},\"bytes\":{},\"duration_s\":{:.6},\"upstream\":",
        r.status,
        r.bytes,
        secs(r.duration)
    );
    match r.upstream {
        Some(name) => {
            out.push(b'"');
            json_bytes(out, name.as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    match r.upstream_status {
        0 => out.extend_from_slice(b",\"upstream_status\":null"),
        s => {
            let _ = write!(out, ",\"upstream_status\":{s}");
        }
    }
    match r.ttfb {
        Some(t) => {
            let _ = write!(out, ",\"ttfb_s\":{:.6}", secs(t));
        }
        None => out.extend_from_slice(b",\"ttfb_s\":null"),
    }
    out.extend_from_slice(b",\"attempts\":[");
    for (i, t) in r.tries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"upstream\":\"");
        json_bytes(out, (r.names)(t.upstream as usize).as_bytes());
        if t.status != 0 {
            let _ = write!(out, "\",\"status\":{},\"ms\":{}}}", t.status, t.ms);
        } else {
            let _ = write!(out, "\",\"error\":\"{}\",\"ms\":{}}}", t.error, t.ms);
        }
    }
    out.extend_from_slice(b"],\"route\":\"");
    json_bytes(out, (r.names)(r.head.route).as_bytes());
    out.extend_from_slice(b"\",\"request_id\":\"");
    json_bytes(out, r.head.request_id());
    out.extend_from_slice(b"\"}\n");
}

/// The combined format (Apache's and nginx's), then the upstream, the request id and the
/// duration: `client - - [time] "request" status bytes "referer" "agent" upstream id secs`.
fn combined(out: &mut Vec<u8>, r: &Record) {
    let text = |out: &mut Vec<u8>, v: &[u8]| {
        if v.is_empty() {
            out.push(b'-');
        }
        for &b in v {
            match b {
                b'"' | b'\\' => {
                    let _ = write!(out, "\\x{b:02x}");
                }
                0x20..=0x7e => out.push(b),
                _ => {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
        }
    };
    let _ = write!(out, "{} - - [{}] \"", r.client, Clf(r.at_ms / 1000));
    text(out, r.head.method());
    out.push(b' ');
    text(out, r.head.target());
    let _ = write!(out, " HTTP/1.{}\" {} {} \"", r.head.minor, r.status, r.bytes);
    text(out, r.head.referer());
    out.extend_from_slice(b"\" \"");
    text(out, r.head.user_agent());
    out.extend_from_slice(b"\" ");
    text(out, r.upstream.unwrap_or("-").as_bytes());
    out.push(b' ');
    text(out, r.head.request_id());
    let _ = writeln!(out, " {:.6}", secs(r.duration));
}
