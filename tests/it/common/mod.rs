//! Harness shared by the integration tests: the real `failover` binary as a
//! child process (`Proxy`, killed on drop, stderr captured to a temp file),
//! small blocking upstreams on 127.0.0.1 that record every request they
//! receive (`Upstream`), and a raw HTTP/1.1 client that reads responses
//! byte-exactly (`Client`). Std only. Nothing here ever opens a non-loopback
//! address, and every socket has a timeout so a broken proxy fails a test
//! instead of hanging it.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Read/write timeout of every client socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Health path the proxy is started with; upstreams answer it from their
/// `healthy` switch and keep probes out of the request log.
pub const PROBE_PATH: &str = "/__probe";
/// Host header the test clients send unless a test says otherwise.
pub const HOST: &str = "app.test";

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Polls `cond` every 10ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        thread::sleep(ms(10));
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() > 600 {
        format!("{:?}...({} bytes)", &s[..600], bytes.len())
    } else {
        format!("{s:?}")
    }
}

fn eof(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, what.to_string())
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A port on 127.0.0.1 that was free a moment ago and that no other test in
/// this process has been handed (the proxy binds with SO_REUSEPORT, so two
/// proxies on one port would silently share it).
pub fn free_port() -> u16 {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let used = USED.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port();
        if used.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// An address nothing listens on: connecting to it is refused.
pub fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A fresh path in the temp dir (not created).
pub fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, SeqCst);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    std::env::temp_dir().join(format!("failover-test-{}-{n}-{nanos}-{tag}", std::process::id()))
}

// ---------------------------------------------------------------- wire ----

/// A blocking byte stream (a socket, or a TLS stream over one) plus the bytes read from
/// it but not consumed yet, so pipelined messages and bytes after a head are never lost.
pub struct Wire<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

/// Runs `op` again while it fails with EINTR: some sandboxes (gVisor) interrupt blocking
/// socket calls when any child process exits, which would otherwise fail a test at random.
pub fn retrying<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A read that retries EINTR (see [`retrying`]).
pub fn read_retrying(stream: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    retrying(|| stream.read(buf))
}

impl<S: Read> Wire<S> {
    pub fn new(stream: S) -> Wire<S> {
        Wire { stream, buf: Vec::new() }
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 16 * 1024];
        let n = match read_retrying(&mut self.stream, &mut tmp) {
            // A TLS peer that closes TCP without close_notify: EOF all the same.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            r => r?,
        };
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The next head up to and including the blank line; `None` on a clean
    /// EOF before its first byte.
    pub fn read_head(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                return Ok(Some(self.buf.drain(..end + 4).collect()));
            }
            if self.fill()? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(eof(&format!("connection closed inside a head: {}", show(&self.buf))));
            }
        }
    }

    pub fn read_n(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(eof(&format!("connection closed after {} of {n} body bytes", self.buf.len())));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                return Ok(self.buf.drain(..i + 2).collect());
            }
            if self.fill()? == 0 {
                return Err(eof("connection closed inside a chunked body"));
            }
        }
    }

    /// A chunked body: (raw bytes as received, decoded data).
    pub fn read_chunked(&mut self) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let (mut raw, mut data) = (Vec::new(), Vec::new());
        loop {
            let line = self.read_line()?;
            raw.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line[..line.len() - 2]).to_string();
            let size_text = text.split(';').next().unwrap_or("").trim();
            let size =
                usize::from_str_radix(size_text, 16).map_err(|_| invalid(format!("bad chunk size line {text:?}")))?;
            if size == 0 {
                loop {
                    let trailer = self.read_line()?;
                    raw.extend_from_slice(&trailer);
                    if trailer == b"\r\n" {
                        return Ok((raw, data));
                    }
                }
            }
            let chunk = self.read_n(size + 2)?;
            if &chunk[size..] != b"\r\n" {
                return Err(invalid("chunk data not followed by CRLF".into()));
            }
            data.extend_from_slice(&chunk[..size]);
            raw.extend_from_slice(&chunk);
        }
    }

    pub fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }
}

/// A parsed request or response head.
#[derive(Clone, Debug)]
pub struct Head {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn parse(raw: &[u8]) -> Head {
        let text = String::from_utf8_lossy(raw);
        let mut lines = text.split("\r\n");
        let start_line = lines.next().unwrap_or("").to_string();
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once(':') {
                Some((n, v)) => (n.to_string(), v.trim_matches([' ', '\t']).to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect();
        Head { start_line, headers }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// Whether any `name` header lists `token` (comma-separated, any case).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name).iter().any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    /// Headers with names lowercased, for order comparisons.
    pub fn lowered(&self) -> Vec<(String, String)> {
        self.headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.clone())).collect()
    }
}

// -------------------------------------------------------------- client ----

#[derive(Clone, Debug)]
pub struct Response {
    /// Head and body exactly as they came off the wire.
    pub raw: Vec<u8>,
    pub head: Head,
    pub status: u16,
    /// Decoded body (chunked framing removed).
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.get(name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    pub fn version(&self) -> &str {
        self.head.start_line.split(' ').next().unwrap_or("")
    }
}

pub fn read_response(wire: &mut Wire<impl Read>, head_request: bool) -> io::Result<Response> {
    let raw_head = wire.read_head()?.ok_or_else(|| eof("connection closed before any response byte"))?;
    let head = Head::parse(&raw_head);
    let status: u16 = head
        .start_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {:?}", head.start_line)))?;
    let mut raw = raw_head;
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let body = if no_body {
        Vec::new()
    } else if head.has_token("transfer-encoding", "chunked") {
        let (r, d) = wire.read_chunked()?;
        raw.extend_from_slice(&r);
        d
    } else if let Some(cl) = head.get("content-length") {
        let n: usize = cl.parse().map_err(|_| invalid(format!("bad Content-Length {cl:?}")))?;
        let b = wire.read_n(n)?;
        raw.extend_from_slice(&b);
        b
    } else {
        let b = wire.read_to_end()?;
        raw.extend_from_slice(&b);
        b
    };
    Ok(Response { raw, head, status, body })
}

/// A raw HTTP/1.1 client over one connection.
pub struct Client {
    wire: Wire,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client { wire: Wire::new(stream) })
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).unwrap_or_else(|e| panic!("sending {}: {e}", show(bytes)));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wire.stream.write_all(bytes)?;
        self.wire.stream.flush()
    }

    pub fn response(&mut self) -> Response {
        self.try_response(false).unwrap_or_else(|e| panic!("reading a response from the proxy: {e}"))
    }

    /// The response to a HEAD request (never has a body).
    pub fn head_response(&mut self) -> Response {
        self.try_response(true).unwrap_or_else(|e| panic!("reading a HEAD response from the proxy: {e}"))
    }

    pub fn try_response(&mut self, head_request: bool) -> io::Result<Response> {
        read_response(&mut self.wire, head_request)
    }

    /// Reads exactly `n` bytes (for tunnels).
    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        self.wire.read_n(n).unwrap_or_else(|e| panic!("reading {n} bytes from the proxy: {e}"))
    }

    pub fn shutdown_write(&self) {
        let _ = self.wire.stream.shutdown(Shutdown::Write);
    }

    pub fn set_read_timeout(&self, d: Duration) {
        let _ = self.wire.stream.set_read_timeout(Some(d));
    }

    /// Whether the proxy closes the connection (EOF or reset) within
    /// `within`; false if bytes arrive or nothing happens.
    pub fn is_closed(&mut self, within: Duration) -> bool {
        if !self.wire.buffered().is_empty() {
            return false;
        }
        self.set_read_timeout(within);
        let mut b = [0u8; 1024];
        let closed = match read_retrying(&mut self.wire.stream, &mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe
            ),
        };
        self.set_read_timeout(IO_TIMEOUT);
        closed
    }
}

/// One request on a new connection; returns the response.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut c = Client::connect(addr);
    c.send(raw);
    c.response()
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    exchange(addr, format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
}

/// GET with `Connection: close` on a new connection; errors are returned.
pub fn try_get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let mut c = Client::try_connect(addr)?;
    c.try_send(format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes())?;
    c.try_response(false)
}

/// Who answered `GET /who`: the body of a 200 (an `Upstream::named` name),
/// else `status NNN: body` or `error: ...`.
pub fn who(addr: SocketAddr) -> String {
    match try_get(addr, "/who") {
        Ok(r) if r.status == 200 => r.text(),
        Ok(r) => format!("status {}: {}", r.status, r.text()),
        Err(e) => format!("error: {e}"),
    }
}

/// Polls `who` until it answers `want`; the time it took, or the answers
/// seen if it never did within `limit`.
pub fn wait_for_who(addr: SocketAddr, want: &str, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let got = who(addr);
        if got == want {
            return Ok(start.elapsed());
        }
        if seen.last() != Some(&got) {
            seen.push(got);
        }
        if start.elapsed() > limit {
            return Err(format!("no answer from {want:?} within {limit:?}; answers seen in order: {seen:?}"));
        }
        thread::sleep(ms(20));
    }
}

/// A complete response with Content-Length (and text/plain if a body).
pub fn reply(status: u16, body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    };
    let mut out =
        format!("HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n", body.len())
            .into_bytes();
    out.extend_from_slice(body);
    out
}

// ------------------------------------------------------------ upstream ----

/// What an upstream does with a (non-probe) request it has read in full.
pub enum Action {
    /// Write these bytes and keep the connection for the next request.
    Reply(Vec<u8>),
    /// Write these bytes, then close.
    ReplyThenClose(Vec<u8>),
    /// Close without a byte.
    Close,
    /// Never answer; hold the connection until the peer closes it.
    Hang,
    /// Write these bytes (a 101), then echo every byte back until EOF.
    Tunnel(Vec<u8>),
    /// Write these bytes one at a time, 1ms apart, and keep the connection.
    Trickle(Vec<u8>),
}

/// A request as an upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Which accepted connection (0, 1, ...) carried it.
    pub conn: usize,
    pub raw_head: Vec<u8>,
    pub head: Head,
    /// Body bytes as received (chunked framing included).
    pub raw_body: Vec<u8>,
    /// Body with chunked framing removed.
    pub body: Vec<u8>,
}

impl Seen {
    pub fn method(&self) -> &str {
        self.head.start_line.split(' ').next().unwrap_or("")
    }

    pub fn target(&self) -> &str {
        self.head.start_line.split(' ').nth(1).unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.get(name)
    }
}

type Handler = dyn Fn(&Seen) -> Action + Send + Sync;

struct UpInner {
    handler: Box<Handler>,
    healthy: AtomicBool,
    probe_hangs: AtomicBool,
    seen: Mutex<Vec<Seen>>,
    probes: Mutex<Vec<Seen>>,
    accepted: AtomicUsize,
    open: Mutex<HashMap<usize, TcpStream>>,
    idle_close_ms: AtomicU64,
}

struct Acceptor {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// A blocking HTTP/1.1 server on 127.0.0.1 run by threads. Requests to
/// `PROBE_PATH` are health probes: answered 200 or 503 by `set_healthy`,
/// recorded apart. Everything else is recorded and handed to the handler.
pub struct Upstream {
    pub addr: SocketAddr,
    inner: Arc<UpInner>,
    acceptor: Mutex<Option<Acceptor>>,
}

impl Upstream {
    pub fn with(handler: impl Fn(&Seen) -> Action + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let up = Upstream {
            addr,
            inner: Arc::new(UpInner {
                handler: Box::new(handler),
                healthy: AtomicBool::new(true),
                probe_hangs: AtomicBool::new(false),
                seen: Mutex::new(Vec::new()),
                probes: Mutex::new(Vec::new()),
                accepted: AtomicUsize::new(0),
                open: Mutex::new(HashMap::new()),
                idle_close_ms: AtomicU64::new(0),
            }),
            acceptor: Mutex::new(None),
        };
        up.run(listener);
        up
    }

    /// Answers every request 200 with body `name`.
    pub fn named(name: &str) -> Upstream {
        let r = reply(200, name.as_bytes());
        Upstream::with(move |_| Action::Reply(r.clone()))
    }

    /// Answers every request with exactly these bytes.
    pub fn fixed(response: &[u8]) -> Upstream {
        let r = response.to_vec();
        Upstream::with(move |_| Action::Reply(r.clone()))
    }

    /// Answers every request 200 with the request target as body.
    pub fn echo_target() -> Upstream {
        Upstream::with(|s| Action::Reply(reply(200, s.target().as_bytes())))
    }

    /// Reads requests, never answers (probes still answered).
    pub fn black_hole() -> Upstream {
        Upstream::with(|_| Action::Hang)
    }

    /// Closes right after reading a request, without a byte.
    pub fn closes_after_head() -> Upstream {
        Upstream::with(|_| Action::Close)
    }

    /// Answers with bytes that are not HTTP, then closes.
    pub fn garbage() -> Upstream {
        Upstream::with(|_| Action::ReplyThenClose(b"SSH-2.0-not-http\r\n\x00\x01\x02\r\n\r\n".to_vec()))
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Non-probe requests received so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.inner.seen.lock().unwrap().len()
    }

    pub fn probes(&self) -> Vec<Seen> {
        self.inner.probes.lock().unwrap().clone()
    }

    /// Accepted connections of any kind (probes included).
    pub fn accepted(&self) -> usize {
        self.inner.accepted.load(SeqCst)
    }

    /// Distinct connections that carried at least one non-probe request.
    pub fn traffic_connections(&self) -> usize {
        let seen = self.inner.seen.lock().unwrap();
        seen.iter().map(|s| s.conn).collect::<HashSet<_>>().len()
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.inner.healthy.store(healthy, SeqCst);
    }

    /// Probes get no answer at all (the connection is held open).
    pub fn set_probe_hangs(&self, hangs: bool) {
        self.inner.probe_hangs.store(hangs, SeqCst);
    }

    /// Close a keep-alive connection after it has been idle this long.
    pub fn set_idle_close(&self, idle: Option<Duration>) {
        let v = idle.map(|d| d.as_millis().max(1) as u64).unwrap_or(0);
        self.inner.idle_close_ms.store(v, SeqCst);
    }

    /// Stops listening and shuts every open connection: from now on
    /// connecting is refused, like a killed process.
    pub fn stop(&self) {
        if let Some(a) = self.acceptor.lock().unwrap().take() {
            a.stop.store(true, SeqCst);
            let _ = a.thread.join();
        }
        for (_, s) in self.inner.open.lock().unwrap().drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same port.
    pub fn restart(&self) {
        let start = Instant::now();
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if start.elapsed() > Duration::from_secs(5) => {
                    panic!("rebinding upstream {}: {e}", self.addr)
                }
                Err(_) => thread::sleep(ms(20)),
            }
        };
        self.run(listener);
    }

    fn run(&self, listener: TcpListener) {
        listener.set_nonblocking(true).expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let inner = self.inner.clone();
        let stop2 = stop.clone();
        let thread = thread::spawn(move || accept_loop(listener, stop2, inner));
        *self.acceptor.lock().unwrap() = Some(Acceptor { stop, thread });
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, stop: Arc<AtomicBool>, inner: Arc<UpInner>) {
    while !stop.load(SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let id = inner.accepted.fetch_add(1, SeqCst);
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                if let Ok(clone) = stream.try_clone() {
                    inner.open.lock().unwrap().insert(id, clone);
                }
                let inner = inner.clone();
                thread::spawn(move || {
                    serve(&mut Wire::new(stream), id, &inner);
                    if let Some(s) = inner.open.lock().unwrap().remove(&id) {
                        let _ = s.shutdown(Shutdown::Both);
                    }
                });
            }
            Err(_) => thread::sleep(ms(2)),
        }
    }
}

enum BodyFraming {
    None,
    Length(usize),
    Chunked,
}

fn request_framing(head: &Head) -> BodyFraming {
    if head.get("transfer-encoding").is_some() {
        return BodyFraming::Chunked;
    }
    match head.get("content-length").and_then(|v| v.parse().ok()) {
        Some(0) | None => BodyFraming::None,
        Some(n) => BodyFraming::Length(n),
    }
}

fn serve(wire: &mut Wire, conn: usize, inner: &UpInner) {
    loop {
        let idle = inner.idle_close_ms.load(SeqCst);
        let _ = wire.stream.set_read_timeout((idle > 0).then(|| ms(idle)));
        let raw_head = match wire.read_head() {
            Ok(Some(h)) => h,
            _ => return,
        };
        let _ = wire.stream.set_read_timeout(Some(Duration::from_secs(10)));
        let head = Head::parse(&raw_head);
        let framing = request_framing(&head);
        if head.has_token("expect", "100-continue") && !matches!(framing, BodyFraming::None) {
            let _ = wire.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let (raw_body, body) = match framing {
            BodyFraming::None => (Vec::new(), Vec::new()),
            BodyFraming::Length(n) => match wire.read_n(n) {
                Ok(b) => (b.clone(), b),
                Err(_) => return,
            },
            BodyFraming::Chunked => match wire.read_chunked() {
                Ok(rd) => rd,
                Err(_) => return,
            },
        };
        let seen = Seen { conn, raw_head, head, raw_body, body };
        let close_asked = seen.head.has_token("connection", "close");
        if seen.target().ends_with(PROBE_PATH) {
            inner.probes.lock().unwrap().push(seen);
            if inner.probe_hangs.load(SeqCst) {
                let _ = wire.stream.set_read_timeout(None);
                let _ = wire.read_to_end();
                return;
            }
            let answer = if inner.healthy.load(SeqCst) { reply(200, b"ok") } else { reply(503, b"down") };
            if wire.stream.write_all(&answer).is_err() || close_asked {
                return;
            }
            continue;
        }
        inner.seen.lock().unwrap().push(seen.clone());
        match (inner.handler)(&seen) {
            Action::Reply(bytes) => {
                if wire.stream.write_all(&bytes).is_err() || close_asked {
                    return;
                }
            }
            Action::ReplyThenClose(bytes) => {
                let _ = wire.stream.write_all(&bytes);
                return;
            }
            Action::Close => return,
            Action::Trickle(bytes) => {
                for b in bytes.chunks(1) {
                    if wire.stream.write_all(b).is_err() {
                        return;
                    }
                    thread::sleep(ms(1));
                }
            }
            Action::Hang => {
                let _ = wire.stream.set_read_timeout(None);
                let _ = wire.read_to_end();
                return;
            }
            Action::Tunnel(bytes) => {
                if wire.stream.write_all(&bytes).is_err() {
                    return;
                }
                let _ = wire.stream.set_read_timeout(Some(Duration::from_secs(10)));
                let pending = std::mem::take(&mut wire.buf);
                if wire.stream.write_all(&pending).is_err() {
                    return;
                }
                let mut b = [0u8; 16 * 1024];
                loop {
                    match read_retrying(&mut wire.stream, &mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if wire.stream.write_all(&b[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = wire.stream.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}

// --------------------------------------------------------------- proxy ----

/// Arguments for one proxy start. Keys are flag names (`--check-interval`);
/// `set` replaces a default instead of repeating the flag.
pub struct ProxyBuilder {
    args: Vec<(String, Option<String>)>,
    /// Listen address given through a config file instead of `--listen`.
    fixed_listen: Option<SocketAddr>,
    envs: Vec<(String, String)>,
    /// System calls the proxy's kernel refuses with EPERM (a seccomp filter, as a strict
    /// container or systemd profile would install).
    denied: Vec<libc::c_long>,
}

/// The real `failover` binary, killed on drop.
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    pub log_path: PathBuf,
    out_path: PathBuf,
}

impl Proxy {
    /// Defaults for tests that do not exercise failover: 2 workers, probes
    /// every 250ms that would need 3 consecutive failures to flip.
    pub fn builder(primary: &str, backup: &str) -> ProxyBuilder {
        ProxyBuilder::bare()
            .set("--primary", primary)
            .set("--backup", backup)
            .set("--workers", "2")
            .set("--check-interval", "250ms")
            .set("--check-timeout", "200ms")
            .set("--fail-threshold", "3")
            .set("--recover-threshold", "2")
            .set("--health-path", PROBE_PATH)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The proxy's resident memory now, in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        wait_until(limit, || self.log().contains(needle))
    }

    /// GET /__failover/state, parsed.
    pub fn state(&self) -> Json {
        let r = get(self.addr, "/__failover/state");
        assert_eq!(r.status, 200, "GET /__failover/state: {}", show(&r.raw));
        Json::parse(&r.text()).unwrap_or_else(|e| panic!("/__failover/state is not JSON ({e}): {}", r.text()))
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) to the proxy process, with kill(2): no extra
    /// child process.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) with a pid this guard spawned and has not reaped yet.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill -{sig} {pid}: {}", io::Error::last_os_error());
    }

    /// Waits up to `limit` for the process to exit; its exit code (None: still running or
    /// killed by a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            thread::sleep(ms(10));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("---- proxy {} stderr ----\n{}---- end ----", self.addr, self.log());
        }
        let _ = fs::remove_file(&self.log_path);
        let _ = fs::remove_file(&self.out_path);
    }
}

impl ProxyBuilder {
    /// No flags at all.
    pub fn bare() -> ProxyBuilder {
        ProxyBuilder { args: Vec::new(), fixed_listen: None, envs: Vec::new(), denied: Vec::new() }
    }

    pub fn set(mut self, key: &str, value: &str) -> ProxyBuilder {
        self.args.retain(|(k, _)| k != key);
        self.args.push((key.to_string(), Some(value.to_string())));
        self
    }

    /// Adds a flag once more, keeping earlier ones (`--backup` given several times).
    pub fn add(mut self, key: &str, value: &str) -> ProxyBuilder {
        self.args.push((key.to_string(), Some(value.to_string())));
        self
    }

    /// A flag without a value (`--json-logs`) or a positional word.
    pub fn flag(mut self, key: &str) -> ProxyBuilder {
        self.args.retain(|(k, _)| k != key);
        self.args.push((key.to_string(), None));
        self
    }

    pub fn unset(mut self, key: &str) -> ProxyBuilder {
        self.args.retain(|(k, _)| k != key);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> ProxyBuilder {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// The proxy runs with system call `nr` (`libc::SYS_splice`) failing EPERM.
    pub fn deny_syscall(mut self, nr: libc::c_long) -> ProxyBuilder {
        self.denied.push(nr);
        self
    }

    /// Failover timings: probes every 100ms bounded by 100ms, 2 failures to
    /// fail over, 2 successes to come back.
    pub fn fast_checks(self) -> ProxyBuilder {
        self.set("--check-interval", "100ms")
            .set("--check-timeout", "100ms")
            .set("--fail-threshold", "2")
            .set("--recover-threshold", "2")
    }

    /// Probes and live failures never flip traffic: what a request meets is its own
    /// outcome.
    pub fn steady(self) -> ProxyBuilder {
        self.set("--fail-threshold", "1000")
    }

    /// Do not pass `--listen`; the config file puts the proxy on `addr`.
    pub fn listen_from_config(mut self, addr: SocketAddr) -> ProxyBuilder {
        self.fixed_listen = Some(addr);
        self
    }

    pub fn arg_list(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            })
            .collect()
    }

    pub fn start(self) -> Proxy {
        self.start_when(Vec::new, |addr| matches!(try_get(addr, "/__failover/health"), Ok(r) if r.status == 200))
    }

    /// Like [`ProxyBuilder::start`], with the flags `per_try` returns added (afresh for each
    /// attempt: more ports, say), and ready once `ready(listen address)` holds.
    pub fn start_when(self, mut per_try: impl FnMut() -> Vec<String>, ready: impl Fn(SocketAddr) -> bool) -> Proxy {
        let mut last = String::new();
        for _attempt in 0..4 {
            let addr = self.fixed_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
            let mut args = self.arg_list();
            if self.fixed_listen.is_none() {
                args.push(format!("--listen={addr}"));
            }
            args.extend(per_try());
            let log_path = temp_path("stderr");
            let out_path = temp_path("stdout");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_failover"));
            cmd.args(&args)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(File::create(&out_path).expect("stdout file"))
                .stderr(File::create(&log_path).expect("stderr file"));
            for (k, v) in &self.envs {
                cmd.env(k, v);
            }
            if !self.denied.is_empty() {
                deny_in_child(&mut cmd, &self.denied);
            }
            let child = cmd.spawn().expect("spawn failover");
            let mut proxy = Proxy { child, addr, log_path, out_path };
            let ready = wait_until(Duration::from_secs(10), || !proxy.is_running() || ready(addr));
            if ready && proxy.is_running() {
                return proxy;
            }
            let status = proxy.child.try_wait().ok().flatten();
            last = format!("failover {args:?} not ready on {addr} (exit: {status:?}); stderr:\n{}", proxy.log());
            if self.fixed_listen.is_some() {
                break;
            }
        }
        panic!("{last}");
    }
}

/// Installs, in the child between fork and exec, a seccomp filter that fails the system
/// calls `nrs` with EPERM and allows everything else.
fn deny_in_child(cmd: &mut Command, nrs: &[libc::c_long]) {
    use std::os::unix::process::CommandExt;
    const LD_NR: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let stmt = |code, k| libc::sock_filter { code, jt: 0, jf: 0, k };
    // nr is the first field of struct seccomp_data.
    let mut prog = vec![stmt(LD_NR, 0)];
    for &nr in nrs {
        prog.push(libc::sock_filter { code: JEQ, jt: 0, jf: 1, k: nr as u32 });
        prog.push(stmt(RET, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32));
    }
    prog.push(stmt(RET, libc::SECCOMP_RET_ALLOW));
    // SAFETY: the closure runs in the forked child before exec and only makes two prctl
    // calls (async-signal-safe); `prog` is moved in and outlives them.
    unsafe {
        cmd.pre_exec(move || {
            let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const libc::sock_fprog) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Outcome of running the binary to completion.
#[derive(Debug)]
pub struct Finished {
    /// None if it was still running at the deadline (then killed).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `failover args`, kills it if it is still running after `limit`.
pub fn run_to_exit(args: &[String], limit: Duration) -> Finished {
    let out_path = temp_path("run-stdout");
    let err_path = temp_path("run-stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_failover"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn failover");
    let mut code = None;
    let exited = wait_until(limit, || match child.try_wait() {
        Ok(Some(status)) => {
            code = status.code();
            true
        }
        _ => false,
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    let done = Finished {
        code,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    };
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    done
}

// ---------------------------------------------------------------- json ----

/// Just enough JSON to check the state endpoint and `--json-logs` lines.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn parse(text: &str) -> Result<Json, String> {
        let mut p = JsonParser { s: text.as_bytes(), i: 0 };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing bytes at {}", p.i));
        }
        Ok(v)
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Num(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// `self[key]` as a bool, panicking with the whole object if absent.
    pub fn bool_field(&self, key: &str) -> bool {
        self.get(key).and_then(Json::as_bool).unwrap_or_else(|| panic!("no boolean {key:?} in {self:?}"))
    }

    pub fn u64_field(&self, key: &str) -> u64 {
        self.get(key)
            .and_then(Json::as_f64)
            .filter(|n| *n >= 0.0 && n.fract() == 0.0)
            .map(|n| n as u64)
            .unwrap_or_else(|| panic!("no unsigned integer {key:?} in {self:?}"))
    }

    pub fn str_field(&self, key: &str) -> String {
        self.get(key)
            .and_then(Json::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no string {key:?} in {self:?}"))
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> Result<(), String> {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(format!("expected {lit:?} at {}", self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(Json::Str),
            Some(b't') => self.eat("true").map(|_| Json::Bool(true)),
            Some(b'f') => self.eat("false").map(|_| Json::Bool(false)),
            Some(b'n') => self.eat("null").map(|_| Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(format!("unexpected byte at {}", self.i)),
        }
    }

    fn object(&mut self) -> Result<Json, String> {
        self.i += 1;
        let mut fields = Vec::new();
        self.ws();
        if self.s.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(Json::Obj(fields));
        }
        loop {
            self.ws();
            if self.s.get(self.i) != Some(&b'"') {
                return Err(format!("expected a key at {}", self.i));
            }
            let key = self.string()?;
            self.ws();
            self.eat(":")?;
            let v = self.value()?;
            fields.push((key, v));
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Json::Obj(fields));
                }
                _ => return Err(format!("expected , or }} at {}", self.i)),
            }
        }
    }

    fn array(&mut self) -> Result<Json, String> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.s.get(self.i) == Some(&b']') {
            self.i += 1;
            return Ok(Json::Arr(items));
        }
        loop {
            items.push(self.value()?);
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                _ => return Err(format!("expected , or ] at {}", self.i)),
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match b {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or("unterminated escape")?;
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
                            let hex = std::str::from_utf8(hex).map_err(|e| e.to_string())?;
                            let code = u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                            self.i += 4;
                            char::from_u32(code).unwrap_or('\u{fffd}')
                        }
                        _ => return Err(format!("bad escape at {}", self.i)),
                    };
                    let mut tmp = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                }
                0..=0x1f => return Err(format!("raw control byte in string at {}", self.i)),
                _ => out.push(b),
            }
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        while self.i < self.s.len() && matches!(self.s[self.i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
        text.parse::<f64>().map(Json::Num).map_err(|_| format!("bad number {text:?}"))
    }
}
