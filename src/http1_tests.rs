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
        max_body: 1000,
        limits: Limits { head: 16 * 1024, headers: 100, line: 1024 },
    }
}

fn request(input: &[u8], fwd: &Forward) -> (Result<Option<Request>, Reject>, String) {
    let mut pool = Pool::new(1);
    let mut out = pool.take();
    let res = parse_request(input, fwd, &mut Writer { buf: &mut out, overflow: false });
    (res, String::from_utf8_lossy(out.bytes()).into_owned())
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
    let (_, out) = request(b"GET http://a:8/y?z HTTP/1.1\r\nHost: a\r\n\r\n", &f);
    assert!(out.starts_with("GET /api/y?z HTTP/1.1\r\n"), "{out}");
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
    let mut pool = Pool::new(1);
    let mut out = pool.take();
    let res = parse_response(input, req, b"", &mut Writer { buf: &mut out, overflow: false });
    (res, String::from_utf8_lossy(out.bytes()).into_owned())
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
