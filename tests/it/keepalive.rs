//! Connection management: keep-alive and pipelining on the client side,
//! pooled connections on the upstream side, HTTP/1.0, bodiless responses,
//! Expect: 100-continue and Upgrade tunnels.

use crate::common::*;
use std::thread;
use std::time::Duration;

fn proxy_for(primary: &Upstream, backup: &Upstream) -> Proxy {
    Proxy::builder(&primary.url(), &backup.url()).start()
}

fn get_req(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes()
}

#[test]
fn several_requests_share_one_client_connection() {
    let primary = Upstream::echo_target();
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let mut c = Client::connect(proxy.addr);
    for i in 0..5 {
        let path = format!("/seq/{i}");
        c.send(&get_req(&path));
        let resp = c.response();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), path);
    }
}

#[test]
fn sequential_requests_reuse_one_upstream_connection() {
    let primary = Upstream::echo_target();
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let mut c = Client::connect(proxy.addr);
    for i in 0..6 {
        c.send(&get_req(&format!("/reuse/{i}")));
        assert_eq!(c.response().status, 200);
    }
    assert_eq!(primary.request_count(), 6);
    assert_eq!(
        primary.traffic_connections(),
        1,
        "6 sequential requests over one client connection should use 1 upstream connection"
    );
}

#[test]
fn pooled_upstream_connection_serves_later_clients() {
    let primary = Upstream::echo_target();
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).set("--workers", "1").start();
    for i in 0..4 {
        let resp = get(proxy.addr, &format!("/client/{i}"));
        assert_eq!(resp.status, 200);
        thread::sleep(ms(50));
    }
    assert_eq!(
        primary.traffic_connections(),
        1,
        "4 clients one after another on one worker should share 1 pooled upstream connection"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let primary = Upstream::with(|s| {
        if s.target() == "/p1" {
            thread::sleep(ms(100)); // a slow first answer must still come first
        }
        let mut body = s.target().as_bytes().to_vec();
        body.extend_from_slice(&s.body);
        Action::Reply(reply(200, &body))
    });
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let mut c = Client::connect(proxy.addr);
    let mut batch = Vec::new();
    batch.extend_from_slice(&get_req("/p1"));
    batch.extend_from_slice(format!("POST /p2 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\n\r\n+two").as_bytes());
    batch.extend_from_slice(&get_req("/p3"));
    batch.extend_from_slice(
        format!("PUT /p4 HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n+four\r\n0\r\n\r\n")
            .as_bytes(),
    );
    batch.extend_from_slice(&get_req("/p5"));
    c.send(&batch);
    let bodies: Vec<String> = (0..5).map(|_| c.response().text()).collect();
    assert_eq!(bodies, ["/p1", "/p2+two", "/p3", "/p4+four", "/p5"]);
}

#[test]
fn http10_client_gets_its_answer_and_a_close() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let mut c = Client::connect(proxy.addr);
    c.send(b"GET /old HTTP/1.0\r\n\r\n");
    let resp = c.response();
    assert_eq!(resp.status, 200, "{}", show(&resp.raw));
    assert_eq!(resp.text(), "primary");
    assert!(c.is_closed(Duration::from_secs(2)), "an HTTP/1.0 request without keep-alive must end with a close");
}

#[test]
fn http10_client_never_gets_chunked() {
    let primary =
        Upstream::fixed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n");
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let mut c = Client::connect(proxy.addr);
    c.send(b"GET /old HTTP/1.0\r\nHost: app.test\r\n\r\n");
    let resp = c.response();
    assert_eq!(resp.status, 200);
    assert!(resp.header("transfer-encoding").is_none(), "an HTTP/1.0 client cannot read chunked: {}", show(&resp.raw));
    assert_eq!(resp.text(), "Wikipedia", "{}", show(&resp.raw));
}

#[test]
fn upstream_closing_its_idle_connection_does_not_fail_the_next_request() {
    let primary = Upstream::echo_target();
    primary.set_idle_close(Some(ms(50)));
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).set("--workers", "1").start();
    let mut c = Client::connect(proxy.addr);
    for i in 0..3 {
        let path = format!("/after-idle/{i}");
        c.send(&get_req(&path));
        let resp = c.response();
        assert_eq!(resp.status, 200, "request {i}: {}", show(&resp.raw));
        assert_eq!(resp.text(), path);
        thread::sleep(ms(300));
    }
    for i in 0..2 {
        let resp = get(proxy.addr, &format!("/new-client/{i}"));
        assert_eq!(resp.status, 200, "new client {i}: {}", show(&resp.raw));
        thread::sleep(ms(300));
    }
    assert_eq!(backup.request_count(), 0);
}

#[test]
fn upstream_closing_after_a_length_delimited_reply_is_handled() {
    // The upstream closes after each reply without saying so.
    let primary = Upstream::with(|s| Action::ReplyThenClose(reply(200, s.target().as_bytes())));
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).set("--workers", "1").start();
    let mut c = Client::connect(proxy.addr);
    for i in 0..4 {
        let path = format!("/quiet-close/{i}");
        c.send(&get_req(&path));
        let resp = c.response();
        assert_eq!(resp.status, 200, "request {i}: {}", show(&resp.raw));
        assert_eq!(resp.text(), path);
        thread::sleep(ms(50));
    }
}

#[test]
fn head_response_has_no_body() {
    let primary = Upstream::with(|s| {
        if s.method() == "HEAD" {
            Action::Reply(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n".to_vec())
        } else {
            Action::Reply(reply(200, s.target().as_bytes()))
        }
    });
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let mut c = Client::connect(proxy.addr);
    c.send(format!("HEAD /h HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes());
    let resp = c.head_response();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some("1234"));
    // Nothing but the next response may follow on the connection.
    c.send(&get_req("/after-head"));
    let next = c.response();
    assert_eq!(next.head.start_line, "HTTP/1.1 200 OK", "{}", show(&next.raw));
    assert_eq!(next.text(), "/after-head");
}

#[test]
fn no_content_and_not_modified_have_no_body() {
    let primary = Upstream::with(|s| match s.target() {
        "/204" => Action::Reply(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n".to_vec()),
        "/304" => Action::Reply(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n".to_vec()),
        other => Action::Reply(reply(200, other.as_bytes())),
    });
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let mut c = Client::connect(proxy.addr);
    for (path, status) in [("/204", 204), ("/304", 304)] {
        c.send(&get_req(path));
        let resp = c.response();
        assert_eq!(resp.status, status);
        assert!(resp.header("transfer-encoding").is_none(), "{status} must not be chunked: {}", show(&resp.raw));
        c.send(&get_req("/next"));
        let next = c.response();
        assert_eq!(next.head.start_line, "HTTP/1.1 200 OK", "after {status}: {}", show(&next.raw));
        assert_eq!(next.text(), "/next");
    }
}

#[test]
fn expect_100_continue_works() {
    let primary = Upstream::with(|s| Action::Reply(reply(200, &s.body)));
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let mut c = Client::connect(proxy.addr);
    c.send(
        format!("POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
            .as_bytes(),
    );
    let interim = c.response();
    assert_eq!(
        interim.status,
        100,
        "the client waits for 100 Continue before sending the body: {}",
        show(&interim.raw)
    );
    c.send(b"hello world");
    let mut resp = c.response();
    while resp.status == 100 {
        resp = c.response();
    }
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "hello world");
    assert_eq!(primary.requests()[0].body, b"hello world");
}

/// An upstream that ignores `Expect`: it reads the head, then waits for a Content-Length
/// body without ever sending 100, and echoes the body in a 200.
fn upstream_without_100() -> (std::net::SocketAddr, thread::JoinHandle<Vec<u8>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let t = thread::spawn(move || loop {
        let (stream, _) = listener.accept().expect("accept");
        let mut wire = Wire::new(stream);
        let Ok(Some(head)) = wire.read_head() else { continue };
        let Some(len) = Head::parse(&head).get("content-length").and_then(|v| v.parse().ok()) else {
            // A health probe.
            let _ = std::io::Write::write_all(&mut wire.stream, &reply(200, b"ok"));
            continue;
        };
        let body = wire.read_n(len).expect("body");
        std::io::Write::write_all(&mut wire.stream, &reply(200, &body)).expect("reply");
        return head;
    });
    (addr, t)
}

#[test]
fn expect_100_continue_gets_a_100_even_from_an_upstream_that_never_sends_one() {
    let (addr, upstream) = upstream_without_100();
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&format!("http://{addr}"), &backup.url()).set("--check-interval", "1h").start();
    let mut c = Client::connect(proxy.addr);
    c.send(
        format!("POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
            .as_bytes(),
    );
    let interim = c.response();
    assert_eq!(interim.head.start_line, "HTTP/1.1 100 Continue", "{}", show(&interim.raw));
    c.send(b"hello world");
    let resp = c.response();
    assert_eq!(resp.status, 200, "{}", show(&resp.raw));
    assert_eq!(resp.text(), "hello world");
    let head = upstream.join().expect("upstream thread");
    assert!(show(&head).to_ascii_lowercase().contains("expect: 100-continue"), "{}", show(&head));
    assert_eq!(backup.request_count(), 0);
}

#[test]
fn upgrade_is_tunnelled_byte_for_byte_after_101() {
    let primary = Upstream::with(|s| {
        if s.head.has_token("connection", "upgrade") {
            Action::Tunnel(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nHELLO"
                    .to_vec(),
            )
        } else {
            Action::Reply(reply(200, b"no upgrade"))
        }
    });
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let mut c = Client::connect(proxy.addr);
    c.send(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    );
    let resp = c.response();
    assert_eq!(resp.status, 101, "{}", show(&resp.raw));
    assert!(resp.head.has_token("upgrade", "websocket"), "{}", show(&resp.raw));
    assert!(resp.head.has_token("connection", "upgrade"), "{}", show(&resp.raw));
    assert_eq!(c.read_n(5), b"HELLO", "bytes sent right after the 101 are lost");
    let seen = &primary.requests()[0];
    assert!(seen.head.has_token("upgrade", "websocket"), "{}", show(&seen.raw_head));
    assert!(seen.head.has_token("connection", "upgrade"), "{}", show(&seen.raw_head));

    let frames: Vec<u8> = (0..100_000u32).map(|i| (i % 256) as u8).collect();
    for part in [&b"\x81\x05hello"[..], b"GET / HTTP/1.1\r\n\r\n", &frames] {
        c.send(part);
        assert!(c.read_n(part.len()) == part, "tunnel changed {} bytes", part.len());
    }
    c.shutdown_write();
    assert!(c.is_closed(Duration::from_secs(3)), "half-close must travel through the tunnel and back");
}

#[test]
fn idle_client_connection_is_closed_after_idle_timeout() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).set("--idle-timeout", "300ms").start();
    let mut c = Client::connect(proxy.addr);
    c.send(&get_req("/"));
    assert_eq!(c.response().status, 200);
    assert!(c.is_closed(Duration::from_secs(3)), "an idle keep-alive connection must be closed after --idle-timeout");
}

#[test]
fn client_connection_close_is_honoured() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let mut c = Client::connect(proxy.addr);
    c.send(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes());
    let resp = c.response();
    assert_eq!(resp.text(), "primary");
    assert!(c.is_closed(Duration::from_secs(2)), "Connection: close must end the connection");
}

#[test]
fn concurrent_clients_each_get_their_own_answers() {
    let primary = Upstream::with(|s| {
        let mut body = s.target().as_bytes().to_vec();
        body.extend_from_slice(&s.body);
        Action::Reply(reply(200, &body))
    });
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let addr = proxy.addr;
    let threads: Vec<_> = (0..24)
        .map(|t| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..8 {
                    let payload = format!("-{}", "p".repeat(t * 100 + i));
                    c.send(
                        format!(
                            "POST /t{t}/r{i} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n{payload}",
                            payload.len()
                        )
                        .as_bytes(),
                    );
                    let resp = c.response();
                    assert_eq!(resp.text(), format!("/t{t}/r{i}{payload}"), "client {t} request {i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread failed");
    }
    assert_eq!(primary.request_count(), 24 * 8);
}

#[test]
fn client_vanishing_mid_response_does_not_hurt_others() {
    let body = vec![b'v'; 4_000_000];
    let big = [format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes(), body].concat();
    let primary = Upstream::with(move |s| {
        if s.target() == "/big" {
            Action::Reply(big.clone())
        } else {
            Action::Reply(reply(200, b"small"))
        }
    });
    let backup = Upstream::named("backup");
    let mut proxy = Proxy::builder(&primary.url(), &backup.url()).set("--workers", "1").start();
    for _ in 0..3 {
        let mut c = Client::connect(proxy.addr);
        c.send(&get_req("/big"));
        c.read_n(1000);
        drop(c);
    }
    let mut c = Client::connect(proxy.addr);
    c.send(&get_req("/big"));
    c.shutdown_write();
    drop(c);
    thread::sleep(ms(100));
    assert!(proxy.is_running(), "the proxy died after clients went away");
    for _ in 0..3 {
        assert_eq!(get(proxy.addr, "/small").text(), "small");
    }
}
