//! Request and response heads: parse with httparse, validate strictly (RFC 9112), and
//! rewrite straight into the outgoing buffer in the same pass.
//!
//! What is forwarded is re-serialized from what was parsed: one request line, the headers
//! in their order minus hop-by-hop ones, our `X-Forwarded-*`, and CRLF line ends, so the
//! next hop sees exactly one framing. This file never touches sockets or connection state.

use std::io::Write as _;
use std::mem::MaybeUninit;
use std::net::IpAddr;

use crate::buffer::Writer;
use crate::framing::Framing;

/// Most headers a head may have at all (`--max-headers` is at most this).
pub const MAX_HEADERS: usize = 256;
/// Largest response head accepted (more gets 502): a whole buffer.
pub const MAX_HEAD: usize = crate::buffer::BUF_SIZE;

/// Request head limits (`--max-header-bytes`, `--max-headers`, `--max-request-line`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head in bytes (more gets 431).
    pub head: usize,
    /// Most header fields (more gets 431).
    pub headers: usize,
    /// Longest request line (more gets 414).
    pub line: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits { head: 32 * 1024, headers: MAX_HEADERS, line: 8 * 1024 };
}

/// Why a request is refused; each maps to one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// 400, with a short reason.
    Bad(&'static str),
    /// 413: the declared body is larger than `--max-body`.
    BodyTooLarge,
    /// 414: the request line is longer than `--max-request-line`.
    UriTooLong,
    /// 417: an expectation other than 100-continue.
    Expectation,
    /// 431: head too large or too many headers.
    HeadTooLarge,
    /// 501: a transfer coding or method we do not relay.
    NotImplemented(&'static str),
    /// 505: not HTTP/1.0 or HTTP/1.1.
    Version,
}

impl Reject {
    pub fn status(self) -> u16 {
        match self {
            Reject::Bad(_) => 400,
            Reject::BodyTooLarge => 413,
            Reject::UriTooLong => 414,
            Reject::Expectation => 417,
            Reject::HeadTooLarge => 431,
            Reject::NotImplemented(_) => 501,
            Reject::Version => 505,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Reject::Bad(r) | Reject::NotImplemented(r) => r,
            Reject::BodyTooLarge => "request body is larger than the limit",
            Reject::UriTooLong => "request line is longer than the limit",
            Reject::Expectation => "only 100-continue is supported in Expect",
            Reject::HeadTooLarge => "request head is too large",
            Reject::Version => "only HTTP/1.0 and HTTP/1.1 are supported",
        }
    }
}

/// What the proxy needs to remember about a request once its head is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Length of the head in the input (the body starts here).
    pub head_len: usize,
    /// HTTP/1.x minor version.
    pub minor: u8,
    pub is_head: bool,
    pub framing: Framing,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// `Connection: upgrade` with an `Upgrade` header: tunnel after a 101.
    pub upgrade: bool,
    pub expect_continue: bool,
    /// Safe to send again after it may have reached an upstream: an idempotent method
    /// (RFC 9110 9.2.2) or an `Idempotency-Key` header.
    pub replay_ok: bool,
    /// The client lists `application/json` in Accept (for the proxy's own error bodies).
    pub accepts_json: bool,
    /// Addressed to the proxy itself (`/__failover/...`): not forwarded.
    pub admin: Option<Admin>,
    /// Where the access log's parts are in the input.
    pub marks: Marks,
}

/// Byte ranges of the head, `(start, end)` in the parsed input; `(0, 0)` when absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    pub method: (u16, u16),
    pub target: (u16, u16),
    pub request_id: (u16, u16),
    pub referer: (u16, u16),
    pub user_agent: (u16, u16),
}

/// The range `part` (a slice of `input`) covers in `input`.
fn span(input: &[u8], part: &[u8]) -> (u16, u16) {
    let start = (part.as_ptr() as usize).wrapping_sub(input.as_ptr() as usize);
    if start > input.len() || part.len() > input.len() - start {
        return (0, 0);
    }
    (start as u16, (start + part.len()) as u16)
}

/// Requests the proxy answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    Health,
    State,
    Metrics,
    /// The status page (`/__failover/` and `/__failover/status`).
    Status,
    /// Orchestrator probes: the loops turn; the proxy can serve (not while shutting down).
    Live,
    Ready,
    NotFound,
    MethodNotAllowed,
}

/// Where and how a request is being forwarded.
pub struct Forward<'a> {
    /// Path prefix of the upstream ("" for none).
    pub prefix: &'a str,
    pub client_ip: IpAddr,
    /// `http` or `https`, for X-Forwarded-Proto.
    pub proto: &'a str,
    /// Host value to send instead of the client's (the client's goes to X-Forwarded-Host).
    pub host: Option<&'a str>,
    /// Sent as `X-Request-Id` when the request has none (with the access log on).
    pub request_id: Option<&'a [u8]>,
    pub max_body: u64,
    pub limits: Limits,
}

/// Header names the proxy acts on, told apart by length first so that the common case
/// (a header we only copy) costs one or two comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    Expect,
    Te,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    IdempotencyKey,
    Accept,
    /// Read for the access log, copied like any other.
    RequestId,
    Referer,
    UserAgent,
    /// Keep-Alive, Proxy-Connection, Proxy-Authorization: always dropped.
    HopByHop,
}

fn classify(name: &str) -> Name {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    match name.len() {
        2 if is("te") => Name::Te,
        4 if is("host") => Name::Host,
        6 if is("expect") => Name::Expect,
        6 if is("accept") => Name::Accept,
        15 if is("idempotency-key") => Name::IdempotencyKey,
        7 if is("upgrade") => Name::Upgrade,
        7 if is("referer") => Name::Referer,
        10 if is("user-agent") => Name::UserAgent,
        12 if is("x-request-id") => Name::RequestId,
        10 if is("connection") => Name::Connection,
        10 if is("keep-alive") => Name::HopByHop,
        14 if is("content-length") => Name::ContentLength,
        15 if is("x-forwarded-for") => Name::XForwardedFor,
        16 if is("proxy-connection") => Name::HopByHop,
        16 if is("x-forwarded-host") => Name::XForwardedHost,
        17 if is("transfer-encoding") => Name::TransferEncoding,
        17 if is("x-forwarded-proto") => Name::XForwardedProto,
        19 if is("proxy-authorization") => Name::HopByHop,
        _ => Name::Other,
    }
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Comma-separated list elements, trimmed, empty ones skipped.
fn list(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |e| e + 1);
    &v[start..end]
}

fn list_has(v: &[u8], token: &str) -> bool {
    list(v).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// Headers a `Connection` option must never strip: removing them would change framing or
/// hide the client's address from the upstream.
fn protected(name: &[u8]) -> bool {
    [&b"host"[..], b"content-length", b"transfer-encoding", b"x-forwarded-for"]
        .iter()
        .any(|p| name.eq_ignore_ascii_case(p))
}

/// Whether `name` is listed in any `Connection` header of `headers`.
fn named_by_connection(headers: &[httparse::Header], name: &str) -> bool {
    if protected(name.as_bytes()) {
        return false;
    }
    headers.iter().filter(|h| eq(h.name, "connection")).any(|h| list_has(h.value, name))
}

fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// An `X-Request-Id` the log and the upstream can carry as is: 1 to 200 visible ASCII
/// characters. Another is replaced by a generated one (and forwarded as it came).
fn valid_request_id(v: &[u8]) -> bool {
    (1..=200).contains(&v.len()) && v.iter().all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

fn valid_host(v: &[u8]) -> bool {
    v.iter().all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b))
}

/// Parses a request head at the start of `input`. On success the rewritten head for the
/// upstream is in `out` (unless the request is for the proxy itself). `Ok(None)`: the head
/// is not complete yet.
pub fn parse_request(input: &[u8], fwd: &Forward, out: &mut Writer) -> Result<Option<Request>, Reject> {
    let limits = fwd.limits;
    let line_end = memchr_lf(&input[..input.len().min(limits.line + 2)]);
    if line_end.map_or(input.len() > limits.line + 1, |i| i > limits.line + 1) {
        return Err(Reject::UriTooLong);
    }
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(input, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        // Incomplete and already at the limit: it can only grow past it.
        Ok(httparse::Status::Partial) if input.len() >= limits.head => return Err(Reject::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::HeadTooLarge),
        Err(httparse::Error::Version) => return Err(Reject::Version),
        Err(httparse::Error::HeaderName) => return Err(Reject::Bad("invalid header name")),
        Err(httparse::Error::HeaderValue) => return Err(Reject::Bad("invalid header value")),
        Err(httparse::Error::NewLine) => return Err(Reject::Bad("invalid line ending or folded header")),
        Err(_) => return Err(Reject::Bad("malformed request line")),
    };
    if head_len > limits.head || req.headers.len() > limits.headers {
        return Err(Reject::HeadTooLarge);
    }
    if bare_line_end(&input[..head_len]) {
        return Err(Reject::Bad("line ends in a request head must be CRLF"));
    }
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Reject::Bad("malformed request line"));
    };
    let headers = req.headers;

    // Framing and the connection-level facts.
    let (mut hosts, mut lengths, mut encodings) = (0, 0, 0);
    let mut host_value: &[u8] = &[];
    let mut length = None;
    let mut chunked = false;
    let (mut close, mut keep_alive_opt, mut upgrade_opt, mut has_upgrade) = (false, false, false, false);
    let mut expect_continue = false;
    // Connection options other than these name headers to drop.
    let mut conn_names = false;
    let (mut idempotency_key, mut accepts_json) = (false, false);
    let mut kinds = [Name::Other; MAX_HEADERS];
    let mut marks =
        Marks { method: span(input, method.as_bytes()), target: span(input, path.as_bytes()), ..Marks::default() };
    for (h, kind) in headers.iter().zip(kinds.iter_mut()) {
        *kind = classify(h.name);
        let v = h.value;
        match *kind {
            Name::RequestId if marks.request_id == (0, 0) && valid_request_id(trim(v)) => {
                marks.request_id = span(input, trim(v));
                continue;
            }
            Name::Referer => {
                marks.referer = span(input, trim(v));
                continue;
            }
            Name::UserAgent => {
                marks.user_agent = span(input, trim(v));
                continue;
            }
            Name::RequestId => continue,
            Name::Other
            | Name::HopByHop
            | Name::Te
            | Name::XForwardedFor
            | Name::XForwardedProto
            | Name::XForwardedHost => continue,
            Name::IdempotencyKey => idempotency_key = true,
            Name::Accept => accepts_json |= v.windows(16).any(|w| w.eq_ignore_ascii_case(b"application/json")),
            _ => {}
        }
        if *kind == Name::Host {
            hosts += 1;
            host_value = trim(v);
            if !valid_host(trim(v)) {
                return Err(Reject::Bad("invalid Host header"));
            }
        } else if *kind == Name::ContentLength {
            lengths += 1;
            length = Some(parse_content_length(trim(v)).ok_or(Reject::Bad("invalid Content-Length"))?);
        } else if *kind == Name::TransferEncoding {
            encodings += 1;
            let mut codings = 0;
            for t in v.split(|&b| b == b',').map(trim) {
                codings += 1;
                if t.eq_ignore_ascii_case(b"chunked") {
                    if chunked {
                        return Err(Reject::Bad("chunked applied twice"));
                    }
                    chunked = true;
                } else if t.is_empty() {
                    return Err(Reject::Bad("invalid Transfer-Encoding"));
                } else {
                    return Err(Reject::NotImplemented("only the chunked transfer coding is supported"));
                }
            }
            if codings == 0 {
                return Err(Reject::Bad("invalid Transfer-Encoding"));
            }
        } else if *kind == Name::Connection {
            for t in list(v) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_opt = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    upgrade_opt = true;
                } else {
                    conn_names = true;
                }
            }
        } else if *kind == Name::Upgrade {
            has_upgrade = true;
        } else if *kind == Name::Expect {
            if !trim(v).eq_ignore_ascii_case(b"100-continue") {
                return Err(Reject::Expectation);
            }
            expect_continue = minor == 1;
        }
    }
    if hosts > 1 {
        return Err(Reject::Bad("more than one Host header"));
    }
    if hosts == 0 && minor == 1 {
        return Err(Reject::Bad("missing Host header"));
    }
    if lengths > 1 {
        return Err(Reject::Bad("more than one Content-Length"));
    }
    if encodings > 0 && lengths > 0 {
        return Err(Reject::Bad("both Content-Length and Transfer-Encoding"));
    }
    if encodings > 1 {
        return Err(Reject::Bad("more than one Transfer-Encoding header"));
    }
    if encodings > 0 && minor == 0 {
        return Err(Reject::Bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) if n > fwd.max_body => return Err(Reject::BodyTooLarge),
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::None,
    };

    if method == "CONNECT" {
        return Err(Reject::NotImplemented("CONNECT is not supported by a reverse proxy"));
    }
    // The request target: origin-form, `*` for OPTIONS, or absolute-form (reduced to origin-form).
    if path.contains('#') {
        return Err(Reject::Bad("a fragment is not allowed in the request target"));
    }
    // `slash`: the target needs a leading "/" (absolute-form with a query and no path).
    let (target, slash) = if path.starts_with('/') || (path == "*" && method == "OPTIONS") {
        (path, false)
    } else if let Some(rest) = strip_scheme(path) {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..end];
        // RFC 9112 3.2.2: the target's authority wins over Host; one that disagrees is
        // ambiguous between hops, so it is refused.
        if authority.is_empty() || (hosts == 1 && !host_value.eq_ignore_ascii_case(authority.as_bytes())) {
            return Err(Reject::Bad("Host does not match the absolute-form request target"));
        }
        match &rest[end..] {
            "" => ("/", false),
            t => (t, t.starts_with('?')),
        }
    } else {
        return Err(Reject::Bad("invalid request target"));
    };
    if !fwd.prefix.is_empty() && has_dot_segment(target) {
        return Err(Reject::Bad("dot-segments are not allowed under an upstream path prefix"));
    }

    let keep_alive = !close && (minor == 1 || keep_alive_opt);
    let upgrade = upgrade_opt && has_upgrade && minor == 1;
    let mut request = Request {
        head_len,
        minor,
        is_head: method == "HEAD",
        framing,
        keep_alive,
        upgrade,
        expect_continue,
        replay_ok: idempotency_key || matches!(method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"),
        accepts_json,
        admin: None,
        marks,
    };
    if let Some(admin_path) = target.strip_prefix("/__failover/") {
        let admin_path = admin_path.split('?').next().unwrap_or("");
        request.admin = Some(match (method, admin_path) {
            ("GET" | "HEAD", "health") => Admin::Health,
            ("GET" | "HEAD", "state") => Admin::State,
            ("GET" | "HEAD", "metrics") => Admin::Metrics,
            ("GET" | "HEAD", "" | "status") => Admin::Status,
            ("GET" | "HEAD", "live") => Admin::Live,
            ("GET" | "HEAD", "ready") => Admin::Ready,
            (_, "health" | "state" | "metrics" | "" | "status" | "live" | "ready") => Admin::MethodNotAllowed,
            _ => Admin::NotFound,
        });
        return Ok(Some(request));
    }

    // Rewrite: request line, headers in order minus hop-by-hop, then ours.
    out.put(method.as_bytes());
    out.put(b" ");
    if target != "*" {
        out.put(fwd.prefix.as_bytes());
    }
    if slash {
        out.put(b"/");
    }
    out.put(target.as_bytes());
    out.put(if minor == 1 { b" HTTP/1.1\r\n" } else { b" HTTP/1.0\r\n" });
    let kinds = &kinds[..headers.len()];
    let last_xff = kinds.iter().rposition(|k| *k == Name::XForwardedFor);
    for (i, (h, kind)) in headers.iter().zip(kinds).enumerate() {
        let keep = match kind {
            Name::Te => trim(h.value).eq_ignore_ascii_case(b"trailers"),
            Name::Connection | Name::Upgrade | Name::HopByHop | Name::XForwardedProto => false,
            Name::XForwardedHost if fwd.host.is_some() => false,
            Name::Other
            | Name::XForwardedFor
            | Name::XForwardedHost
            | Name::Expect
            | Name::IdempotencyKey
            | Name::Accept
            | Name::RequestId
            | Name::Referer
            | Name::UserAgent => !conn_names || !named_by_connection(headers, h.name),
            Name::Host | Name::ContentLength | Name::TransferEncoding => true,
        };
        if !keep {
            continue;
        }
        if let (Name::Host, Some(host)) = (kind, fwd.host) {
            out.put(b"Host: ");
            out.put(host.as_bytes());
            out.put(b"\r\nX-Forwarded-Host: ");
            out.put(trim(h.value));
            out.put(b"\r\n");
            continue;
        }
        out.put(h.name.as_bytes());
        out.put(b": ");
        out.put(trim(h.value));
        if Some(i) == last_xff {
            out.put(b", ");
            put_ip(out, fwd.client_ip);
        }
        out.put(b"\r\n");
    }
    if let (0, Some(host)) = (hosts, fwd.host) {
        out.put(b"Host: ");
        out.put(host.as_bytes());
        out.put(b"\r\n");
    }
    if last_xff.is_none() {
        out.put(b"X-Forwarded-For: ");
        put_ip(out, fwd.client_ip);
        out.put(b"\r\n");
    }
    out.put(b"X-Forwarded-Proto: ");
    out.put(fwd.proto.as_bytes());
    out.put(b"\r\n");
    if let (Some(id), (0, 0)) = (fwd.request_id, request.marks.request_id) {
        out.put(b"X-Request-Id: ");
        out.put(id);
        out.put(b"\r\n");
    }
    if upgrade {
        for (h, _) in headers.iter().zip(kinds).filter(|(_, k)| **k == Name::Upgrade) {
            out.put(b"Upgrade: ");
            out.put(trim(h.value));
            out.put(b"\r\n");
        }
        out.put(b"Connection: upgrade\r\n");
    }
    out.put(b"\r\n");
    if out.overflow {
        return Err(Reject::HeadTooLarge);
    }
    Ok(Some(request))
}

/// How an upstream wants its requests addressed: path prefix and Host override.
#[derive(Debug, Clone, Copy)]
pub struct Addressing<'a> {
    pub prefix: &'a str,
    pub host: Option<&'a str>,
}

impl Addressing<'_> {
    /// The client's path and Host, unchanged.
    pub const NONE: Addressing<'static> = Addressing { prefix: "", host: None };
}

/// Rewrites a head made by [`parse_request`] for one upstream into the head for another
/// (a retry on the other upstream): the path prefix and the Host line change.
pub fn retarget(head: &[u8], old: Addressing, new: Addressing, out: &mut Writer) {
    let start = head.iter().position(|&b| b == b' ').map_or(head.len(), |i| i + 1);
    let line_end = head.windows(2).position(|w| w == b"\r\n").map_or(head.len(), |i| i + 2);
    out.put(&head[..start]);
    let target = &head[start..line_end];
    if target.first() == Some(&b'*') {
        out.put(target);
    } else {
        out.put(new.prefix.as_bytes());
        out.put(&target[old.prefix.len().min(target.len())..]);
    }
    // The client's own Host is in X-Forwarded-Host when the old upstream overrode it.
    let mut client_host: &[u8] = &[];
    if old.host.is_some() {
        for line in head[line_end..].split(|&b| b == b'\n') {
            if let Some(v) = strip_name(line, b"x-forwarded-host:") {
                client_host = v;
            }
        }
    }
    for line in head[line_end..].split_inclusive(|&b| b == b'\n') {
        let is_host = strip_name(line, b"host:").is_some();
        let is_xfh = strip_name(line, b"x-forwarded-host:").is_some();
        if is_host {
            match (new.host, old.host) {
                (Some(h), _) => {
                    out.put(b"Host: ");
                    out.put(h.as_bytes());
                    out.put(b"\r\n");
                    if old.host.is_none() {
                        out.put(b"X-Forwarded-Host: ");
                        out.put(strip_name(line, b"host:").unwrap_or_default());
                        out.put(b"\r\n");
                    }
                }
                (None, Some(_)) => {
                    out.put(b"Host: ");
                    out.put(client_host);
                    out.put(b"\r\n");
                }
                (None, None) => out.put(line),
            }
        } else if is_xfh && old.host.is_some() && new.host.is_none() {
            // Added by us for the old upstream: the new one gets the client's Host itself.
        } else {
            out.put(line);
        }
    }
}

/// The trimmed value of a header line if it has this (lower-case, colon-ended) name.
fn strip_name<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    if line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name) {
        Some(trim(
            line[name.len()..]
                .strip_suffix(b"\r\n")
                .or(line[name.len()..].strip_suffix(b"\r"))
                .unwrap_or(&line[name.len()..]),
        ))
    } else {
        None
    }
}

/// Whether the path's `..` segments (also percent-encoded) climb above its root, which
/// would lead out of an upstream's path prefix once the upstream normalises it.
fn has_dot_segment(target: &str) -> bool {
    let path = target.split('?').next().unwrap_or("");
    let mut depth = 0usize;
    for seg in path.split('/').skip(1) {
        match seg.to_ascii_lowercase().replace("%2e", ".").as_str() {
            ".." if depth == 0 => return true,
            ".." => depth -= 1,
            "" | "." => {}
            _ => depth += 1,
        }
    }
    false
}

/// Whether a head has a line end other than CRLF: an LF without its CR, or a CR without
/// its LF. httparse takes a bare LF as a line end (RFC 9112 2.2 lets a recipient), but a
/// CRLF-only hop in front reads "x:x\nTransfer-Encoding: chunked" as one field, so the
/// two would frame the body differently. (httparse refuses a bare CR already; the check
/// costs nothing more.) One pass over pairs of bytes, without an early exit so that it
/// compiles to vector instructions: the common head is never parsed twice.
fn bare_line_end(head: &[u8]) -> bool {
    let Some(last) = head.len().checked_sub(1) else { return false };
    let edges = head[0] == b'\n' || head[last] == b'\r';
    let pairs = head[..last].iter().zip(&head[1..]);
    edges | pairs.fold(false, |bad, (&prev, &b)| bad | ((b == b'\n') != (prev == b'\r')))
}

fn memchr_lf(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

fn strip_scheme(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    (eq(scheme, "http") || eq(scheme, "https")).then_some(rest)
}

fn put_ip(out: &mut Writer, ip: IpAddr) {
    let mut tmp = [0u8; 48];
    let mut cur = &mut tmp[..];
    let _ = write!(cur, "{ip}");
    let n = 48 - cur.len();
    out.put(&tmp[..n]);
}

/// What the proxy needs to know about a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub head_len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The upstream connection may carry another request after this response.
    pub reusable: bool,
    /// The client connection stays open after this response.
    pub keep_alive: bool,
    /// A chunked response to an HTTP/1.0 client: the proxy removes the chunked framing and
    /// ends the body by closing.
    pub dechunk: bool,
}

/// Why a response head is refused (the client gets 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadResponse(pub &'static str);

/// Parses a response head at the start of `input` and writes the head the client will get
/// into `out`, with the header lines `extra` added. `req` is the request it answers.
/// `Ok(None)`: not complete yet.
pub fn parse_response(
    input: &[u8],
    req: &Request,
    extra: &[u8],
    out: &mut Writer,
) -> Result<Option<Response>, BadResponse> {
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let head_len =
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, input, &mut headers) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if input.len() >= MAX_HEAD => {
                return Err(BadResponse("response head too large"))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(BadResponse("too many response headers")),
            Err(_) => return Err(BadResponse("malformed response head")),
        };
    let (Some(minor), Some(status)) = (resp.version, resp.code) else {
        return Err(BadResponse("malformed status line"));
    };
    if !(100..=999).contains(&status) {
        return Err(BadResponse("invalid status code"));
    }
    let headers = resp.headers;
    let (mut lengths, mut encodings, mut length, mut chunked_last) = (0, 0, None, false);
    let (mut close, mut keep_alive_opt, mut conn_names) = (false, false, false);
    let mut kinds = [Name::Other; MAX_HEADERS];
    for (h, kind) in headers.iter().zip(kinds.iter_mut()) {
        *kind = classify(h.name);
        match kind {
            Name::ContentLength => {
                lengths += 1;
                length = Some(parse_content_length(trim(h.value)).ok_or(BadResponse("invalid Content-Length"))?);
            }
            Name::TransferEncoding => {
                encodings += 1;
                chunked_last = list(h.value).last().is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            }
            Name::Connection => {
                for t in list(h.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive_opt = true;
                    } else if !t.eq_ignore_ascii_case(b"upgrade") {
                        conn_names = true;
                    }
                }
            }
            _ => {}
        }
    }
    if lengths > 1 {
        return Err(BadResponse("more than one Content-Length"));
    }
    if lengths > 0 && encodings > 0 {
        return Err(BadResponse("both Content-Length and Transfer-Encoding"));
    }
    if encodings > 1 {
        return Err(BadResponse("more than one Transfer-Encoding header"));
    }
    let switching = status == 101;
    if switching && !req.upgrade {
        return Err(BadResponse("101 Switching Protocols to a request that did not ask for it"));
    }
    let interim = (100..200).contains(&status) && !switching;
    let framing = if interim || switching || req.is_head || status == 204 || status == 304 {
        Framing::None
    } else if encodings > 0 && chunked_last {
        Framing::Chunked
    } else if encodings > 0 {
        Framing::UntilClose
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    let upstream_persistent = !close && (minor == 1 || keep_alive_opt);
    let reusable = upstream_persistent && req.minor == 1 && framing != Framing::UntilClose && !switching;
    // HTTP/1.0 clients do not know chunked (RFC 9112 7.1): decode it and close at the end.
    let dechunk = framing == Framing::Chunked && req.minor == 0;
    let keep_alive = req.keep_alive && framing != Framing::UntilClose && !switching && !dechunk;

    // An interim response is not forwarded to an HTTP/1.0 client (RFC 9110 15.2).
    if interim && req.minor == 0 {
        return Ok(Some(Response { head_len, status, framing, reusable, keep_alive, dechunk }));
    }
    out.put(b"HTTP/1.1 ");
    let mut code = [b'0'; 3];
    code[0] += (status / 100) as u8;
    code[1] += (status / 10 % 10) as u8;
    code[2] += (status % 10) as u8;
    out.put(&code);
    out.put(b" ");
    out.put(resp.reason.unwrap_or("").as_bytes());
    out.put(b"\r\n");
    let drop_length = framing == Framing::UntilClose && !req.is_head;
    for (h, kind) in headers.iter().zip(&kinds[..headers.len()]) {
        let keep = match kind {
            Name::Upgrade => switching,
            Name::Connection | Name::HopByHop | Name::Te => false,
            Name::ContentLength => !drop_length,
            Name::TransferEncoding => !dechunk,
            _ => !conn_names || !named_by_connection(headers, h.name),
        };
        if !keep {
            continue;
        }
        out.put(h.name.as_bytes());
        out.put(b": ");
        out.put(trim(h.value));
        out.put(b"\r\n");
    }
    out.put(extra);
    if switching {
        out.put(b"Connection: upgrade\r\n");
    } else if interim {
        // Interim heads say nothing about the connection.
    } else if !keep_alive {
        out.put(b"Connection: close\r\n");
    } else if req.minor == 0 {
        out.put(b"Connection: keep-alive\r\n");
    }
    out.put(b"\r\n");
    if out.overflow {
        return Err(BadResponse("response head too large"));
    }
    Ok(Some(Response { head_len, status, framing, reusable, keep_alive, dechunk }))
}

#[cfg(test)]
#[path = "http1_tests.rs"]
mod tests;
