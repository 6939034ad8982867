//! Request-head limits and --max-connections.

use std::thread;

use crate::common::*;

#[test]
fn request_head_limits_are_flags() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url())
        .set("--max-header-bytes", "2KB")
        .set("--max-headers", "10")
        .set("--max-request-line", "256")
        .start();
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(300));
    assert_eq!(exchange(proxy.addr, long_line.as_bytes()).status, 414);
    let big_head = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "y".repeat(3000));
    assert_eq!(exchange(proxy.addr, big_head.as_bytes()).status, 431);
    let many: String = (0..12).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    assert_eq!(exchange(proxy.addr, many.as_bytes()).status, 431);
    assert_eq!(primary.request_count(), 0, "nothing over a limit is forwarded");
    let fine = format!("GET /{} HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n", "z".repeat(200));
    assert_eq!(exchange(proxy.addr, fine.as_bytes()).status, 200);
}

#[test]
fn past_max_connections_new_clients_wait_instead_of_failing() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url())
        .set("--workers", "1")
        .set("--max-connections", "2")
        .set("--check-interval", "10s")
        .start();
    // The harness' readiness check may still hold a connection for a moment.
    thread::sleep(ms(200));
    let mut a = Client::connect(proxy.addr);
    a.send(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(a.response().status, 200);
    let mut b = Client::connect(proxy.addr);
    b.send(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(b.response().status, 200);

    // The third connects (kernel backlog) but is not served while two are open.
    let mut c = Client::connect(proxy.addr);
    c.send(b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n");
    c.set_read_timeout(ms(400));
    assert!(c.try_response(false).is_err(), "served past --max-connections");
    drop(a);
    c.set_read_timeout(ms(3000));
    let r = c.try_response(false).expect("served once a connection closed");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_stalled_request_body_gets_408_after_body_timeout() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url())
        .set("--body-timeout", "300ms")
        .set("--upstream-timeout", "30s")
        .start();
    let mut c = Client::connect(proxy.addr);
    let t0 = std::time::Instant::now();
    c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
    let r = c.response();
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(t0.elapsed() < ms(3000), "answered after --body-timeout, not --upstream-timeout: {:?}", t0.elapsed());
    assert!(c.is_closed(ms(2000)));

    // With Expect: 100-continue, the upstream answers 100 and the client still sends
    // nothing: its fault too, and nothing that counts against the primary.
    let mut c = Client::connect(proxy.addr);
    c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.response();
    assert_eq!(interim.status, 100, "{}", show(&interim.raw));
    let r = c.response();
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(c.is_closed(ms(2000)));
    let state = get(proxy.addr, "/__failover/state").text();
    assert!(state.contains("\"on_backup\":false"), "{state}");
}

#[test]
fn heads_arriving_in_pieces_past_the_request_line_limit() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).start();
    // A 20KB head (over the 8KB request-line limit, under the 32KB head limit) in 1KB
    // pieces: its request line ended long ago, so it is served whole.
    let big = "v".repeat(20 * 1024);
    let head = format!("GET /big HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n");
    let mut c = Client::connect(proxy.addr);
    for piece in head.as_bytes().chunks(1024) {
        c.send(piece);
        thread::sleep(ms(2));
    }
    let r = c.response();
    assert_eq!(r.status, 200, "{}", show(&r.raw));
    assert_eq!(primary.requests()[0].header("x-big"), Some(big.as_str()));
    // A request line that passes 8KB without ending gets 414 without waiting for more.
    let mut c = Client::connect(proxy.addr);
    c.send(format!("GET /{}", "x".repeat(9 * 1024)).as_bytes());
    let r = c.response();
    assert_eq!(r.status, 414, "{}", show(&r.raw));
    assert_eq!(primary.request_count(), 1);
}

#[test]
fn memory_of_an_attack_is_returned_once_it_is_over() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).set("--workers", "1").start();
    for _ in 0..20 {
        assert_eq!(who(proxy.addr), "primary");
    }
    let before = proxy.rss_kib();
    // 1500 slow clients, each holding a head of 30 KB that never ends: a full buffer each.
    let partial = format!("GET /slow HTTP/1.1\r\nHost: {HOST}\r\nX-Pad: {}\r\n", "p".repeat(30_000));
    let mut attack = Vec::new();
    for _ in 0..1500 {
        let mut c = Client::connect(proxy.addr);
        c.send(partial.as_bytes());
        attack.push(c);
    }
    assert!(
        wait_until(ms(5000), || proxy.rss_kib() > before + 30_000),
        "the attack holds memory: {} KiB",
        proxy.rss_kib()
    );
    let during = proxy.rss_kib();
    drop(attack);
    let returned = wait_until(ms(30_000), || proxy.rss_kib() < before + 8 * 1024);
    assert!(returned, "RSS before {before} KiB, during {during} KiB, 30s after {} KiB", proxy.rss_kib());
    assert_eq!(who(proxy.addr), "primary", "and it still serves");
}
