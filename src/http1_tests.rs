//! Table tests for request and response heads: what is rejected with which status, and
//! the exact bytes forwarded.

use super::*;
use crate::buffer::Pool;

fn fwd() -> Forward<'static> {
    Forward {
        prefix: "",
        client_ip: "10.1.2.3".parse().unwrap(),
        proto: "http",
        host: None,
        request_id: None,
        max_body: 1000,
        limits: Limits { head: 16 * 1024, headers: 100, line: 1024 },
    }
}

fn request(input: &[u8], fwd: &Forward) -> (Result<Option<Request>, Reject>, String) {
    let (res, out) = request_raw(input, fwd);
    (res, String::from_utf8_lossy(&out).into_owned())
}

/// The parse result and the exact bytes that would be forwarded.
fn request_raw(input: &[u8], fwd: &Forward) -> (Result<Option<Request>, Reject>, Vec<u8>) {
    let mut pool = Pool::new(1);
    let mut out = pool.take();
    let res = parse_request(input, fwd, &mut Writer { buf: &mut out, overflow: false });
    (res, out.bytes().to_vec())
}

fn status_of(input: &[u8]) -> u16 {
    match request(input, &fwd()).0 {
        Ok(Some(_)) => 200,
        Ok(None) => 0,
        Err(r) => r.status(),
    }
}

#[test]
fn rejects_with_the_right_status() {
    let cases: &[(&str, u16)] = &[
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        ("GET / HTTP/1.0\r\n\r\n", 200),
        ("GET / HTTP/1.1\r\nHost: a\r\n", 0),
        ("GET / HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n", 413),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n", 200),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n", 200),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n  folded\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX : 1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX\x01: 1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
        ("GET / HTTP/3\r\nHost: a\r\n\r\n", 505),
        ("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 501),
        ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        ("GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        ("GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", 200),
        ("GET / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n", 417),
        ("G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("\r\n", 0),
        ("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 200),
    ];
    for (input, want) in cases {
        assert_eq!(status_of(input.as_bytes()), *want, "{input:?}");
    }
}

#[test]
fn oversized_heads_get_431() {
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    while big.len() <= 16 * 1024 {
        big.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
    }
    assert_eq!(status_of(&big), 431, "incomplete and already too large");
    big.extend_from_slice(b"\r\n");
    assert_eq!(status_of(&big), 431, "complete but too large");
    let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..100 {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(status_of(&many), 431, "too many headers");
}

#[test]
fn forwards_headers_in_order_minus_hop_by_hop() {
    let input = b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-One: 1\r\nConnection: keep-alive, X-Secret\r\n\
X-Secret: s\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic x\r\n\
TE: gzip\r\nUpgrade: websocket\r\nX-Two: 2\r\nX-One: 3\r\nX-Forwarded-Proto: https\r\n\r\n";
    let (res, out) = request(input, &fwd());
    let req = res.unwrap().unwrap();
    assert!(req.keep_alive && !req.upgrade);
    assert_eq!(
        out,
        "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-One: 1\r\nX-Two: 2\r\nX-One: 3\r\n\
X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\r\n"
    );
}

#[test]
fn connection_options_cannot_strip_framing() {
    let input = b"POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length, host\r\nContent-Length: 3\r\n\r\nabc";
    let (res, out) = request(input, &fwd());
    assert_eq!(res.unwrap().unwrap().framing, Framing::Length(3));
    assert!(out.contains("\r\nContent-Length: 3\r\n") && out.contains("\r\nHost: a\r\n"), "{out}");
}

#[test]
fn appends_to_the_last_forwarded_for_and_keeps_te_trailers() {
    let input =
        b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: a\r\nX-Forwarded-For: 2.2.2.2\r\nTE: trailers\r\n\r\n";
    let (_, out) = request(input, &fwd());
    assert_eq!(
        out,
        "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: a\r\nX-Forwarded-For: 2.2.2.2, 10.1.2.3\r\n\
TE: trailers\r\nX-Forwarded-Proto: http\r\n\r\n"
    );
}

#[test]
fn prefix_absolute_form_and_upgrade() {
    let f = Forward { prefix: "/api", ..fwd() };
    let (_, out) = request(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", &f);
    assert!(out.starts_with("GET /api/x HTTP/1.1\r\n"), "{out}");
    let (_, out) = request(b"GET http://a:8/y?z HTTP/1.1\r\nHost: a:8\r\n\r\n", &f);
    assert!(out.starts_with("GET /api/y?z HTTP/1.1\r\n"), "{out}");
    let (res, _) = request(b"GET http://a:8/y HTTP/1.1\r\nHost: a\r\n\r\n", &f);
    assert_eq!(res.map_err(Reject::status), Err(400), "absolute-form authority differs from Host");
    let (res, _) = request(b"GET /v1/../../etc HTTP/1.1\r\nHost: a\r\n\r\n", &f);
    assert_eq!(res.map_err(Reject::status), Err(400), "dot-segments could climb out of the prefix");
    let (res, _) = request(b"GET /%2E%2e/x HTTP/1.1\r\nHost: a\r\n\r\n", &f);
    assert_eq!(res.map_err(Reject::status), Err(400), "encoded dot-segments too");
    let (res, _) = request(b"GET /a/b/../c HTTP/1.1\r\nHost: a\r\n\r\n", &f);
    assert!(matches!(res, Ok(Some(_))), "dot-segments that stay under the root are fine");
    let (_, out) = request(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &f);
    assert!(out.starts_with("OPTIONS * HTTP/1.1\r\n"), "{out}");
    let (res, out) = request(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
        &f,
    );
    assert!(res.unwrap().unwrap().upgrade);
    assert!(out.ends_with("Upgrade: websocket\r\nConnection: upgrade\r\n\r\n"), "{out}");
    assert!(out.contains("Sec-WebSocket-Key: k\r\n"), "{out}");
}

#[test]
fn keep_alive_rules() {
    let ka = |input: &str| request(input.as_bytes(), &fwd()).0.unwrap().unwrap().keep_alive;
    assert!(ka("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(!ka("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
    assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
    assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
}

#[test]
fn admin_paths_are_not_forwarded() {
    let admin = |input: &str| request(input.as_bytes(), &fwd()).0.unwrap().unwrap().admin;
    assert_eq!(admin("GET /__failover/health HTTP/1.1\r\nHost: a\r\n\r\n"), Some(Admin::Health));
    assert_eq!(admin("HEAD /__failover/state HTTP/1.1\r\nHost: a\r\n\r\n"), Some(Admin::State));
    assert_eq!(admin("GET /__failover/state?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"), Some(Admin::State));
    assert_eq!(admin("POST /__failover/state HTTP/1.1\r\nHost: a\r\n\r\n"), Some(Admin::MethodNotAllowed));
    assert_eq!(admin("GET /__failover/other HTTP/1.1\r\nHost: a\r\n\r\n"), Some(Admin::NotFound));
    assert_eq!(admin("GET /__failoverx HTTP/1.1\r\nHost: a\r\n\r\n"), None);
}

fn response(input: &[u8], req: &Request) -> (Result<Option<Response>, BadResponse>, String) {
    let (res, out) = response_raw(input, req);
    (res, String::from_utf8_lossy(&out).into_owned())
}

fn response_raw(input: &[u8], req: &Request) -> (Result<Option<Response>, BadResponse>, Vec<u8>) {
    let mut pool = Pool::new(1);
    let mut out = pool.take();
    let res = parse_response(input, req, b"", &mut Writer { buf: &mut out, overflow: false });
    (res, out.bytes().to_vec())
}

fn get11() -> Request {
    Request {
        head_len: 0,
        minor: 1,
        is_head: false,
        framing: Framing::None,
        keep_alive: true,
        upgrade: false,
        expect_continue: false,
        replay_ok: true,
        accepts_json: false,
        admin: None,
        marks: Default::default(),
    }
}

#[test]
fn response_framing_table() {
    let head = Request { is_head: true, ..get11() };
    let cases: &[(&str, Request, Result<Framing, ()>)] = &[
        ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", get11(), Ok(Framing::Length(5))),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", get11(), Ok(Framing::Chunked)),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", get11(), Ok(Framing::UntilClose)),
        ("HTTP/1.1 200 OK\r\n\r\n", get11(), Ok(Framing::UntilClose)),
        ("HTTP/1.1 204 No Content\r\n\r\n", get11(), Ok(Framing::None)),
        ("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", get11(), Ok(Framing::None)),
        ("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", head, Ok(Framing::None)),
        ("HTTP/1.1 100 Continue\r\n\r\n", get11(), Ok(Framing::None)),
        ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", get11(), Err(())),
        ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", get11(), Err(())),
        ("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", get11(), Err(())),
        ("HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\n", get11(), Err(())),
        ("HTTP/1.1 2000 OK\r\n\r\n", get11(), Err(())),
        ("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", get11(), Err(())),
        ("SSH-2.0-OpenSSH_9.2\r\n\r\n", get11(), Err(())),
    ];
    for (input, req, want) in cases {
        let got = response(input.as_bytes(), req).0.map(|r| r.unwrap().framing).map_err(|_| ());
        assert_eq!(got, *want, "{input:?}");
    }
}

#[test]
fn response_rewrite() {
    let (res, out) = response(
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nContent-Length: 2\r\nX-End: e\r\n\r\nhi",
        &get11(),
    );
    let r = res.unwrap().unwrap();
    assert!(r.keep_alive && r.reusable);
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-End: e\r\n\r\n");

    let (res, out) = response(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n", &get11());
    let r = res.unwrap().unwrap();
    assert!(!r.reusable && r.keep_alive, "upstream closing does not close the client");
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");

    let (res, out) = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Type: t\r\n\r\n", &get11());
    assert!(!res.unwrap().unwrap().keep_alive);
    assert_eq!(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Type: t\r\nConnection: close\r\n\r\n");

    let http10 = Request { minor: 0, keep_alive: true, ..get11() };
    let (res, out) = response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &http10);
    assert!(!res.unwrap().unwrap().reusable, "a 1.0 request may make the upstream close");
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n");

    let (_, out) = response(b"HTTP/1.1 100 Continue\r\n\r\n", &http10);
    assert_eq!(out, "", "no interim responses to HTTP/1.0 clients");

    let upgrade = Request { upgrade: true, ..get11() };
    let (res, out) =
        response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", &upgrade);
    let r = res.unwrap().unwrap();
    assert!(!r.reusable && !r.keep_alive);
    assert_eq!(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
}

#[test]
fn replayable_methods_and_keys() {
    let ok = |input: &str| request(input.as_bytes(), &fwd()).0.unwrap().unwrap().replay_ok;
    for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
        assert!(ok(&format!("{m} / HTTP/1.1\r\nHost: a\r\n\r\n")), "{m}");
    }
    assert!(!ok("POST / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(!ok("PATCH / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(ok("POST / HTTP/1.1\r\nHost: a\r\nIdempotency-Key: k1\r\n\r\n"));
}

#[test]
fn retarget_swaps_the_prefix_only() {
    let f = Forward { prefix: "/old", ..fwd() };
    let (_, head) = request(b"GET /x?y HTTP/1.1\r\nHost: a\r\n\r\n", &f);
    let mut pool = Pool::new(1);
    let mut out = pool.take();
    let a = |prefix, host| Addressing { prefix, host };
    retarget(head.as_bytes(), a("/old", None), a("/new/v2", None), &mut Writer { buf: &mut out, overflow: false });
    assert_eq!(String::from_utf8_lossy(out.bytes()), head.replace("GET /old/x", "GET /new/v2/x"));
    out.clear();
    retarget(b"OPTIONS * HTTP/1.1\r\n\r\n", a("", None), a("/p", None), &mut Writer { buf: &mut out, overflow: false });
    assert_eq!(out.bytes(), b"OPTIONS * HTTP/1.1\r\n\r\n");
}

#[test]
fn host_override_and_retarget_between_policies() {
    let f = Forward { host: Some("bucket.s3.example"), ..fwd() };
    let (_, over) = request(b"GET /x HTTP/1.1\r\nHost: www.example\r\nX-Forwarded-Host: spoof\r\nA: 1\r\n\r\n", &f);
    assert_eq!(
        over,
        "GET /x HTTP/1.1\r\nHost: bucket.s3.example\r\nX-Forwarded-Host: www.example\r\nA: 1\r\n\
X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\r\n"
    );
    let (_, plain) = request(b"GET /x HTTP/1.1\r\nHost: www.example\r\nA: 1\r\n\r\n", &fwd());
    let mut pool = Pool::new(1);
    let mut out = pool.take();
    let a = |host| Addressing { prefix: "", host };
    // client Host -> override: the client's goes to X-Forwarded-Host.
    retarget(plain.as_bytes(), a(None), a(Some("bucket.s3.example")), &mut Writer { buf: &mut out, overflow: false });
    assert_eq!(String::from_utf8_lossy(out.bytes()), over);
    // override -> client Host: restored from X-Forwarded-Host, which is dropped.
    out.clear();
    retarget(over.as_bytes(), a(Some("bucket.s3.example")), a(None), &mut Writer { buf: &mut out, overflow: false });
    assert_eq!(String::from_utf8_lossy(out.bytes()), plain);
    // HTTP/1.0 without Host gets the override.
    let (_, h10) = request(b"GET / HTTP/1.0\r\n\r\n", &f);
    assert!(h10.contains("\r\nHost: bucket.s3.example\r\n"), "{h10}");
}

#[test]
fn long_request_lines_get_414() {
    let line = |n: usize| format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(n));
    assert_eq!(status_of(line(1000).as_bytes()), 200);
    assert_eq!(status_of(line(1030).as_bytes()), 414, "over --max-request-line (1024 here)");
    assert_eq!(status_of(format!("GET /{}", "a".repeat(2000)).as_bytes()), 414, "detected before the line ends");
}

// ------------------------------------------------------------------------------------------
// Generated tables (RFC 9112 sections 2-7, RFC 9110 5.5-5.6): every byte value in each
// position that has a grammar, every version, every status code.

/// tchar (RFC 9110 5.6.2): what methods and field names are made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// field-vchar, SP or HTAB (RFC 9110 5.5): what a field value may hold.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

fn byte_name(b: u8) -> String {
    format!("byte 0x{b:02x} {:?}", b as char)
}

fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |e| e + 1);
    &v[start..end]
}

#[test]
fn method_is_any_token_and_nothing_else() {
    for b in 0..=255u8 {
        let input = [&[b'G', b, b'T'][..], b" / HTTP/1.1\r\nHost: a\r\n\r\n"].concat();
        let (res, out) = request_raw(&input, &fwd());
        if is_tchar(b) {
            assert!(matches!(res, Ok(Some(_))), "method with {}: {res:?}", byte_name(b));
            assert!(out.starts_with(&input[..16]), "method with {} forwarded as {}", byte_name(b), show(&out));
        } else {
            assert!(res.is_err(), "method with {}: {res:?}", byte_name(b));
        }
    }
    let every = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let (res, out) = request(format!("{every} / HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(), &fwd());
    assert!(matches!(res, Ok(Some(_))) && out.starts_with(&format!("{every} / HTTP/1.1\r\n")), "{out}");
}

#[test]
fn request_target_bytes() {
    let padding = "p".repeat(40);
    for b in 0..=255u8 {
        // Short, and past the 32-byte blocks httparse checks with SIMD.
        for pad in ["", padding.as_str()] {
            let line = [format!("GET /{pad}a").as_bytes(), &[b], b"b HTTP/1.1\r\n"].concat();
            let (res, out) = request_raw(&[&line[..], b"Host: a\r\n\r\n"].concat(), &fwd());
            let case = format!("target with {} after {} bytes", byte_name(b), pad.len() + 2);
            if b == b'#' {
                // A fragment is outside RFC 9112's grammar; see tests/it/smuggling.rs
                // fragment_in_request_target_is_refused. Refused or forwarded unchanged.
                assert!(res.is_err() || out.starts_with(&line), "{case}: {res:?} {}", show(&out));
            } else if (0x21..=0x7e).contains(&b) {
                assert!(matches!(res, Ok(Some(_))), "{case}: {res:?}");
                assert!(out.starts_with(&line), "{case}: forwarded as {}", show(&out));
            } else {
                // CTLs, SP, DEL, and a byte >= 0x80 that is not part of valid UTF-8.
                assert!(res.is_err(), "{case}: {res:?}");
            }
        }
    }
    let utf8 = "GET /caf\u{e9}?q=\u{2713} HTTP/1.1\r\n";
    let (res, out) = request(format!("{utf8}Host: a\r\n\r\n").as_bytes(), &fwd());
    assert!(matches!(res, Ok(Some(_))) && out.starts_with(utf8), "UTF-8 passes unchanged: {out}");
}

#[test]
fn field_name_bytes() {
    for b in 0..=255u8 {
        if b == b':' {
            continue; // ends the name: another, valid field
        }
        // (A bare LF first would end the head early: refused too, see bare_line_ends_are_refused.)
        let names = [("middle", vec![b'X', b, b'Y']), ("last", vec![b'X', b]), ("first", vec![b, b'X'])];
        for (at, name) in names {
            let field = [&name[..], b": v\r\n"].concat();
            let (res, out) = request_raw(&[b"GET / HTTP/1.1\r\nHost: a\r\n", &field[..], b"\r\n"].concat(), &fwd());
            let case = format!("field name with {} {at}", byte_name(b));
            if is_tchar(b) {
                assert!(matches!(res, Ok(Some(_))), "{case}: {res:?}");
                assert!(contains(&out, &field), "{case}: forwarded as {}", show(&out));
            } else {
                assert!(matches!(res, Err(Reject::Bad(_))), "{case}: {res:?}");
            }
        }
    }
}

#[test]
fn field_value_bytes() {
    let long = "v".repeat(40);
    for b in 0..=255u8 {
        let at: [(&str, &str, &str); 4] =
            [("first", "", "z"), ("middle", "a", "z"), ("last", "a", ""), ("past a SIMD block", &long, &long)];
        for (pos, before, after) in at {
            let value = [before.as_bytes(), &[b], after.as_bytes()].concat();
            let input = [&b"GET / HTTP/1.1\r\nHost: a\r\nX-V: "[..], &value, b"\r\n\r\n"].concat();
            let (res, out) = request_raw(&input, &fwd());
            let case = format!("field value with {} {pos}", byte_name(b));
            if is_field_byte(b) {
                assert!(matches!(res, Ok(Some(_))), "{case}: {res:?}");
                let line = [&b"\r\nX-V: "[..], trim_ows(&value), b"\r\n"].concat();
                assert!(contains(&out, &line), "{case}: forwarded as {}", show(&out));
            } else {
                // CTLs and DEL; a bare CR or LF, wherever it ends the line.
                assert!(matches!(res, Err(Reject::Bad(_))), "{case}: {res:?}");
            }
        }
    }
}

#[test]
fn host_value_bytes() {
    // RFC 3986 host (reg-name, IP literal) and port characters.
    let host_byte = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b);
    for b in 0..=255u8 {
        let input = [&b"GET / HTTP/1.1\r\nHost: a"[..], &[b], b"b\r\n\r\n"].concat();
        let want = if host_byte(b) { 200 } else { 400 };
        assert_eq!(status_of(&input), want, "Host with {}", byte_name(b));
    }
    for (host, want) in [("", 200), ("a:80", 200), ("[::1]:8080", 200), ("xn--nxa.example", 200), ("a b", 400)] {
        let input = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(status_of(input.as_bytes()), want, "Host {host:?}");
    }
}

fn request_framing(input: &[u8]) -> Result<Framing, u16> {
    match request(input, &fwd()).0 {
        Ok(Some(r)) => Ok(r.framing),
        Ok(None) => Err(0),
        Err(r) => Err(r.status()),
    }
}

#[test]
fn content_length_values() {
    let cases: &[(&str, Result<Framing, u16>)] = &[
        ("0", Ok(Framing::Length(0))),
        ("00", Ok(Framing::Length(0))),
        ("005", Ok(Framing::Length(5))),
        ("1000", Ok(Framing::Length(1000))),
        (" 7 ", Ok(Framing::Length(7))),
        ("\t7\t", Ok(Framing::Length(7))),
        ("0000000000000000001", Ok(Framing::Length(1))),
        // Over 19 digits is refused even with leading zeros: stricter than RFC 9110 8.6, never
        // ambiguous.
        ("00000000000000000001", Err(400)),
        ("1001", Err(413)),
        ("9999999999999999999", Err(413)),
        ("18446744073709551615", Err(400)),
        ("18446744073709551616", Err(400)),
        ("", Err(400)),
        ("+5", Err(400)),
        ("-5", Err(400)),
        ("-0", Err(400)),
        ("5 5", Err(400)),
        ("5,5", Err(400)),
        ("5, 5", Err(400)),
        ("5,", Err(400)),
        (",5", Err(400)),
        ("0x5", Err(400)),
        ("5.0", Err(400)),
        ("5e0", Err(400)),
        ("five", Err(400)),
        ("1_000", Err(400)),
        ("\"5\"", Err(400)),
        ("5;", Err(400)),
        ("\u{665}", Err(400)),
        ("\u{ff15}", Err(400)),
    ];
    for (v, want) in cases {
        let input = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {v}\r\n\r\n");
        assert_eq!(request_framing(input.as_bytes()), *want, "Content-Length {v:?}");
    }
    for b in 0..=255u8 {
        for (at, value) in [("before", [b, b'5']), ("after", [b'5', b])] {
            let input = [&b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: "[..], &value, b"\r\n\r\n"].concat();
            let want = match b {
                b'0'..=b'9' => Ok(Framing::Length(std::str::from_utf8(&value).unwrap().parse().unwrap())),
                b' ' | b'\t' => Ok(Framing::Length(5)),
                // A bare LF right after "5" would end the line there: refused like any other.
                _ => Err(400),
            };
            assert_eq!(request_framing(&input), want, "Content-Length with {} {at}", byte_name(b));
        }
    }
}

#[test]
fn transfer_encoding_values() {
    let cases: &[(&str, Result<Framing, u16>)] = &[
        ("chunked", Ok(Framing::Chunked)),
        ("CHUNKED", Ok(Framing::Chunked)),
        ("Chunked", Ok(Framing::Chunked)),
        (" chunked \t", Ok(Framing::Chunked)),
        ("gzip", Err(501)),
        ("deflate", Err(501)),
        ("compress", Err(501)),
        ("identity", Err(501)),
        ("x-chunked", Err(501)),
        ("xchunked", Err(501)),
        ("chunkedx", Err(501)),
        ("chunked;q=1", Err(501)),
        ("chunked ;", Err(501)),
        ("\"chunked\"", Err(501)),
        ("chunked\u{a0}", Err(501)),
        ("gzip, chunked", Err(501)),
        ("chunked, gzip", Err(501)),
        ("chunked, identity", Err(501)),
        ("", Err(400)),
        (",", Err(400)),
        (", chunked", Err(400)),
        ("chunked,", Err(400)),
        ("chunked,,", Err(400)),
        ("chunked, chunked", Err(400)),
        ("chunked,chunked", Err(400)),
    ];
    for (v, want) in cases {
        let input = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {v}\r\n\r\n");
        assert_eq!(request_framing(input.as_bytes()), *want, "Transfer-Encoding {v:?}");
    }
}

#[test]
fn framing_header_combinations() {
    // RFC 9112 6.1-6.3: TE and CL together, repeats, and TE in HTTP/1.0 are refused whatever
    // the order, the case of the names and the method.
    let te = ["Transfer-Encoding: chunked", "transfer-encoding: chunked", "TRANSFER-ENCODING: chunked"];
    let cl = ["Content-Length: 3", "content-length: 3", "CONTENT-LENGTH: 3"];
    for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        for (t, c) in te.iter().flat_map(|t| cl.iter().map(move |c| (t, c))) {
            for fields in [format!("{t}\r\n{c}"), format!("{c}\r\n{t}"), format!("{t}\r\n{t}"), format!("{c}\r\n{c}")] {
                let input = format!("{method} / HTTP/1.1\r\nHost: a\r\n{fields}\r\n\r\n");
                assert_eq!(request_framing(input.as_bytes()), Err(400), "{input:?}");
            }
            let input = format!("{method} / HTTP/1.0\r\n{t}\r\n\r\n");
            assert_eq!(request_framing(input.as_bytes()), Err(400), "{input:?}");
            let input = format!("{method} / HTTP/1.1\r\nHost: a\r\n{t}\r\n\r\n");
            assert_eq!(request_framing(input.as_bytes()), Ok(Framing::Chunked), "{input:?}");
            let input = format!("{method} / HTTP/1.0\r\n{c}\r\n\r\n");
            assert_eq!(request_framing(input.as_bytes()), Ok(Framing::Length(3)), "{input:?}");
        }
        let input = format!("{method} / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(request_framing(input.as_bytes()), Ok(Framing::None), "{input:?}");
    }
}

#[test]
fn every_version() {
    for major in 0..=9 {
        for minor in 0..=9 {
            let input = format!("GET / HTTP/{major}.{minor}\r\nHost: a\r\n\r\n");
            let want = if major == 1 && minor <= 1 { 200 } else { 505 };
            assert_eq!(status_of(input.as_bytes()), want, "HTTP/{major}.{minor}");
        }
    }
    let cases: &[(&str, u16)] = &[
        ("http/1.1", 505),
        ("HTTP/1", 505),
        ("HTTP/01.1", 505),
        ("HTTP /1.1", 505),
        ("HTTPS/1.1", 505),
        ("HTTP/1.1.1", 400),
        ("HTTP/1.10", 400),
        ("HTTP/1.1 ", 400),
        ("HTTP/1.1\t", 400),
        ("HTTP/1.1\x00", 400),
        ("HTTP/1.1\r", 400),
        (" HTTP/1.1", 505),
        ("", 505),
    ];
    for (v, want) in cases {
        let input = format!("GET / {v}\r\nHost: a\r\n\r\n");
        assert_eq!(status_of(input.as_bytes()), *want, "version {v:?}");
    }
}

#[test]
fn request_line_shapes() {
    let cases: &[(&str, u16)] = &[
        ("GET / HTTP/1.1", 200),
        ("GET /a/b?c=d&e HTTP/1.1", 200),
        ("GET //a HTTP/1.1", 200),
        ("GET http://a/ HTTP/1.1", 200),
        ("GET HTTPS://a:8443/x HTTP/1.1", 400),
        ("OPTIONS * HTTP/1.1", 200),
        ("PATCH / HTTP/1.1", 200),
        ("get / HTTP/1.1", 200),
        ("GET\t/ HTTP/1.1", 400),
        ("GET /\tHTTP/1.1", 400),
        (" GET / HTTP/1.1", 400),
        ("GET", 400),
        ("GET /", 400),
        ("GET  HTTP/1.1", 400),
        ("/ HTTP/1.1", 400),
        ("GET * HTTP/1.1", 400),
        ("HEAD * HTTP/1.1", 400),
        ("OPTIONS *x HTTP/1.1", 400),
        ("GET a HTTP/1.1", 400),
        ("GET ? HTTP/1.1", 400),
        ("GET ftp://a/ HTTP/1.1", 400),
        ("GET ws://a/ HTTP/1.1", 400),
        ("GET http:a HTTP/1.1", 400),
        ("GET //a HTTP/1.2", 505),
        ("CONNECT a:443 HTTP/1.1", 501),
        ("CONNECT / HTTP/1.1", 501),
        ("PRI * HTTP/2.0", 505),
    ];
    for (line, want) in cases {
        let input = format!("{line}\r\nHost: a\r\n\r\n");
        assert_eq!(status_of(input.as_bytes()), *want, "request line {line:?}");
    }
}

/// `input` is refused with 400 for its line ends (not for another reason httparse found).
fn refused_for_line_ends(input: &[u8]) -> Result<(), String> {
    match request(input, &fwd()).0 {
        Err(Reject::Bad(why)) if why.contains("CRLF") || why.contains("line ending") => Ok(()),
        other => Err(format!("{}: {other:?}", show(input))),
    }
}

#[test]
fn bare_line_ends_are_refused() {
    // RFC 9112 2.2 lets a recipient take LF alone as a line end, but a proxy that did would
    // frame differently from a CRLF-only hop in front of it: "x:x\nTransfer-Encoding" is one
    // field there and two here. Every position, with bodies that would smuggle a request.
    let cases: &[&[u8]] = &[
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nx:x\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nDummy: x\nContent-Length: 23\r\n\r\nGET /x HTTP/1.1\r\nH: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\n",
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\n\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\nHost: a\nContent-Length: 2\n\nok",
        b"GET / HTTP/1.0\n\n",
        b"GET / HTTP/1.0\r\n\n",
    ];
    let mut failures: Vec<String> = cases.iter().filter_map(|c| refused_for_line_ends(c).err()).collect();
    // Each CRLF of a valid head turned into LF alone, at every alignment (the scan works on
    // blocks of bytes), with the field value before it long and short.
    for pad in 0..70 {
        let head =
            format!("GET /{} HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\nX-B: 1\r\n\r\n", "p".repeat(pad), "v".repeat(pad));
        assert_eq!(status_of(head.as_bytes()), 200, "{head:?}");
        for (i, _) in head.match_indices("\r\n") {
            let lf = [&head.as_bytes()[..i], &head.as_bytes()[i + 1..]].concat();
            failures.extend(refused_for_line_ends(&lf).err());
        }
    }
    assert!(failures.is_empty(), "{} not refused:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn bare_cr_line_ends_are_refused() {
    // httparse refuses a CR that is not followed by LF; the proxy relies on it, so pin it.
    let cases: &[&[u8]] = &[
        b"GET / HTTP/1.1\rHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\rX",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX\r: 1\r\n\r\n",
        b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\rContent-Length: 3\r\n\r\n",
    ];
    for input in cases {
        assert_eq!(status_of(input), 400, "{}", show(input));
    }
    for pad in 0..40 {
        let head = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\nX-B: 1\r\n\r\n", "v".repeat(pad));
        for (i, _) in head.match_indices("\r\n") {
            let cr = [&head.as_bytes()[..i + 1], &head.as_bytes()[i + 2..]].concat();
            assert!(matches!(request(&cr, &fwd()).0, Err(_) | Ok(None)), "{}", show(&cr));
            let cr_then_more = [&cr[..], b"\r\n\r\n"].concat();
            assert_eq!(status_of(&cr_then_more), 400, "{}", show(&cr_then_more));
        }
    }
}

#[test]
fn responses_with_bare_lf_are_forwarded_with_crlf() {
    // Upstreams are not a smuggling direction: the head the client gets is re-serialized
    // with CRLF from what the proxy parsed, so one framing reaches it. Accepted on purpose.
    let (res, out) = response_raw(b"HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 2\n\nok", &get11());
    let r = res.unwrap().unwrap();
    assert_eq!((r.framing, r.head_len), (Framing::Length(2), 42));
    assert_eq!(show(&out), show(b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n"));
}

#[test]
fn keep_alive_by_version_and_connection() {
    // RFC 9112 9.3: 1.1 persists unless "close"; 1.0 only with "keep-alive".
    let options =
        ["", "close", "CLOSE", " close ", "keep-alive", "Keep-Alive", "close, keep-alive", "keep-alive, x-a", "x-a"];
    for minor in [0, 1] {
        for opt in options {
            let conn = if opt.is_empty() { String::new() } else { format!("Connection: {opt}\r\n") };
            let input = format!("GET / HTTP/1.{minor}\r\nHost: a\r\n{conn}\r\n");
            let req = request(input.as_bytes(), &fwd()).0.unwrap().unwrap();
            let list: Vec<String> = opt.split(',').map(|t| t.trim().to_ascii_lowercase()).collect();
            let want = !list.iter().any(|t| t == "close") && (minor == 1 || list.iter().any(|t| t == "keep-alive"));
            assert_eq!(req.keep_alive, want, "{input:?}");
        }
    }
}

fn head_req() -> Request {
    Request { is_head: true, ..get11() }
}

fn upgrade_req() -> Request {
    Request { upgrade: true, ..get11() }
}

fn response_framing(input: &[u8], req: &Request) -> Result<Framing, BadResponse> {
    response(input, req).0.map(|r| r.expect("complete").framing)
}

#[test]
fn every_status_code() {
    // RFC 9112 4 and 6.3: three digits; 1xx, 204 and 304 (and any answer to HEAD) have no
    // body; 101 only answers an upgrade.
    for code in 0..=999u16 {
        let input = format!("HTTP/1.1 {code:03} R\r\nContent-Length: 3\r\n\r\nabc");
        for (label, req) in [("GET", get11()), ("HEAD", head_req()), ("upgrade", upgrade_req())] {
            let want = match code {
                0..=99 => Err(()),
                101 if !req.upgrade => Err(()),
                100..=199 | 204 | 304 => Ok(Framing::None),
                _ if req.is_head => Ok(Framing::None),
                _ => Ok(Framing::Length(3)),
            };
            let (res, out) = response_raw(input.as_bytes(), &req);
            let got = res.map(|r| r.unwrap().framing).map_err(|_| ());
            assert_eq!(got, want, "status {code:03} to {label}");
            if want.is_ok() {
                let line = format!("HTTP/1.1 {code:03} R\r\n");
                assert!(out.starts_with(line.as_bytes()), "status {code:03} to {label}: {}", show(&out));
            }
        }
    }
    for line in
        ["HTTP/1.1 20 OK", "HTTP/1.1 2000 OK", "HTTP/1.1 OK", "HTTP/1.1 \r", "HTTP/1.1 2x0 OK", "HTTP/1.1  200 OK"]
    {
        let input = format!("{line}\r\nContent-Length: 0\r\n\r\n");
        assert!(response(input.as_bytes(), &get11()).0.is_err(), "status line {line:?}");
    }
}

#[test]
fn response_versions() {
    let cases: &[(&str, bool)] = &[
        ("HTTP/1.1 200 OK", true),
        ("HTTP/1.0 200 OK", true),
        ("HTTP/1.1 200", true),
        ("HTTP/1.1 200 ", true),
        ("HTTP/2 200", false),
        ("HTTP/2.0 200 OK", false),
        ("HTTP/0.9 200 OK", false),
        ("HTTP/1.2 200 OK", false),
        ("http/1.1 200 OK", false),
        ("ICY 200 OK", false),
        ("HTTP/1.1\t200 OK", false),
    ];
    for (line, ok) in cases {
        let input = format!("{line}\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(response(input.as_bytes(), &get11()).0.is_ok(), *ok, "status line {line:?}");
    }
}

#[test]
fn response_framing_matrix() {
    // RFC 9112 6.3, in order: no body for HEAD, 1xx, 204, 304; TE with CL, two CLs or an
    // invalid CL are errors; chunked last means chunked; other TE means until close; then
    // Content-Length; else until close. Persistence (9.3): never after until-close.
    let fields: &[(&str, Result<Framing, ()>)] = &[
        ("", Ok(Framing::UntilClose)),
        ("Content-Length: 7\r\n", Ok(Framing::Length(7))),
        ("Content-Length: 0\r\n", Ok(Framing::Length(0))),
        ("Transfer-Encoding: chunked\r\n", Ok(Framing::Chunked)),
        ("Transfer-Encoding: gzip, chunked\r\n", Ok(Framing::Chunked)),
        ("Transfer-Encoding: chunked, gzip\r\n", Ok(Framing::UntilClose)),
        ("Transfer-Encoding: gzip\r\n", Ok(Framing::UntilClose)),
        ("Content-Length: 7\r\nTransfer-Encoding: chunked\r\n", Err(())),
        ("Transfer-Encoding: chunked\r\nContent-Length: 7\r\n", Err(())),
        ("Content-Length: 7\r\nContent-Length: 7\r\n", Err(())),
        ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", Err(())),
        ("Content-Length: 7, 7\r\n", Err(())),
        ("Content-Length: -7\r\n", Err(())),
    ];
    for status in [100, 200, 204, 206, 301, 304, 404, 500, 503] {
        for (f, body_framing) in fields {
            for is_head in [false, true] {
                for minor in [0, 1] {
                    let req = Request { is_head, minor, keep_alive: minor == 1, ..get11() };
                    let input = format!("HTTP/1.1 {status} R\r\n{f}\r\n");
                    let case =
                        format!("{status} with {f:?} to {} HTTP/1.{minor}", if is_head { "HEAD" } else { "GET" });
                    let bodiless = is_head || (100..200).contains(&status) || status == 204 || status == 304;
                    let want = body_framing.map(|b| if bodiless { Framing::None } else { b });
                    let got = response(input.as_bytes(), &req).0.map(|r| r.unwrap());
                    assert_eq!(got.map(|r| r.framing).map_err(|_| ()), want, "{case}");
                    let (Ok(r), Ok(framing)) = (got, want) else { continue };
                    let dechunk = framing == Framing::Chunked && minor == 0;
                    assert_eq!(r.dechunk, dechunk, "{case}: dechunk");
                    assert_eq!(r.reusable, minor == 1 && framing != Framing::UntilClose, "{case}: reusable");
                    assert_eq!(r.keep_alive, minor == 1 && framing != Framing::UntilClose, "{case}: keep-alive");
                }
            }
        }
    }
}

#[test]
fn response_head_bytes() {
    let ok = |input: &[u8]| response(input, &get11()).0.is_ok();
    for b in 0..=255u8 {
        if b != b':' && b != b'\n' {
            let input = [&b"HTTP/1.1 200 OK\r\nX"[..], &[b], b"Y: v\r\nContent-Length: 0\r\n\r\n"].concat();
            assert_eq!(ok(&input), is_tchar(b), "response field name with {}", byte_name(b));
        }
        let input = [&b"HTTP/1.1 200 OK\r\nX: a"[..], &[b], b"b\r\nContent-Length: 0\r\n\r\n"].concat();
        assert_eq!(ok(&input), is_field_byte(b), "response field value with {}", byte_name(b));
        if b != b'\n' {
            // reason-phrase = *( HTAB / SP / VCHAR / obs-text ); a bare LF ends the line.
            let input = [&b"HTTP/1.1 200 O"[..], &[b], b"K\r\nContent-Length: 0\r\n\r\n"].concat();
            assert_eq!(ok(&input), is_field_byte(b), "reason phrase with {}", byte_name(b));
        }
    }
}

#[test]
fn response_content_length_bytes() {
    for b in 0..=255u8 {
        let input = [&b"HTTP/1.1 200 OK\r\nContent-Length: 2"[..], &[b], b"\r\n\r\n"].concat();
        let want = match b {
            b'0'..=b'9' => Ok(Framing::Length(20 + u64::from(b - b'0'))),
            b' ' | b'\t' | b'\n' => Ok(Framing::Length(2)),
            _ => Err(()),
        };
        assert_eq!(response_framing(&input, &get11()).map_err(|_| ()), want, "Content-Length with {}", byte_name(b));
    }
}

#[test]
fn too_many_or_too_large_response_heads_are_refused() {
    for n in [MAX_HEADERS - 1, MAX_HEADERS, MAX_HEADERS + 1, 1000] {
        let many: String = (0..n).map(|i| format!("X-{i}: v\r\n")).collect();
        let input = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert_eq!(response(input.as_bytes(), &get11()).0.is_ok(), n <= MAX_HEADERS, "{n} response headers");
    }
    let mut big = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    big.resize(MAX_HEAD, b'a');
    assert!(response(&big, &get11()).0.is_err(), "an unfinished head as large as a buffer");
    big.truncate(MAX_HEAD - 1);
    assert!(matches!(response(&big, &get11()).0, Ok(None)), "one byte less may still end");
}

#[test]
fn bare_line_end_scan_at_every_offset() {
    // The scan works on blocks of bytes: a lone CR or LF is found at any offset of any length.
    for len in 0..80 {
        // Lines of "aaaaa\r\n", cut at `len` (a CR cut from its LF becomes an "a").
        let mut clean: Vec<u8> = b"aaaaa\r\n".iter().copied().cycle().take(len).collect();
        if clean.last() == Some(&b'\r') {
            clean[len - 1] = b'a';
        }
        assert!(!bare_line_end(&clean), "len {len}");
        for at in 0..len {
            for lone in [b'\r', b'\n'] {
                let mut bad = clean.clone();
                if bad[at] == b'\r' || bad[at] == b'\n' {
                    continue;
                }
                bad[at] = lone;
                assert!(bare_line_end(&bad), "{} at {at} of {len}", lone as char);
            }
        }
    }
}

#[test]
fn request_id_is_kept_or_added_and_the_log_parts_are_marked() {
    let input =
        b"GET /a?b=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: curl/8\r\nReferer: http://r/\r\nX-Request-Id: abc-1\r\n\r\n";
    let f = Forward { request_id: Some(b"generated"), ..fwd() };
    let (req, out) = request(input, &f);
    let req = req.unwrap().unwrap();
    let part = |(a, b): (u16, u16)| &input[a as usize..b as usize];
    assert_eq!(part(req.marks.method), b"GET");
    assert_eq!(part(req.marks.target), b"/a?b=1");
    assert_eq!(part(req.marks.user_agent), b"curl/8");
    assert_eq!(part(req.marks.referer), b"http://r/");
    assert_eq!(part(req.marks.request_id), b"abc-1");
    assert!(out.contains("X-Request-Id: abc-1\r\n") && !out.contains("generated"), "{out}");

    let (req, out) = request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", &f);
    assert_eq!(req.unwrap().unwrap().marks.request_id, (0, 0));
    assert!(out.ends_with("X-Request-Id: generated\r\n\r\n"), "{out}");
    let (_, out) = request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", &fwd());
    assert!(!out.contains("X-Request-Id"), "added only with the access log on");
}
