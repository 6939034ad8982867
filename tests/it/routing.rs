//! Requests reach the primary unchanged (method, target, body bytes), the
//! URL prefix is prepended, and responses come back byte for byte.

use crate::common::*;

fn proxy_for(primary: &Upstream, backup: &Upstream) -> Proxy {
    Proxy::builder(&primary.url(), &backup.url()).start()
}

#[test]
fn every_method_goes_to_the_primary_with_its_request_line() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    for method in methods {
        let req = format!("{method} /things/42 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\n\r\n");
        let resp = exchange(proxy.addr, req.as_bytes());
        assert_eq!(resp.status, 200, "{method}: {}", show(&resp.raw));
        assert_eq!(resp.text(), "primary", "{method} answered by the wrong upstream");
    }
    let lines: Vec<String> = primary.requests().iter().map(|s| s.head.start_line.clone()).collect();
    let want: Vec<String> = methods.iter().map(|m| format!("{m} /things/42 HTTP/1.1")).collect();
    assert_eq!(lines, want);
    assert_eq!(backup.request_count(), 0, "the backup must see no traffic");
}

#[test]
fn content_length_body_arrives_byte_for_byte() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let mut req = format!(
        "POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let resp = exchange(proxy.addr, &req);
    assert_eq!(resp.status, 200, "{}", show(&resp.raw));
    let seen = primary.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("content-length"), Some("70000"));
    assert!(seen[0].body == body, "body changed on the way");
}

#[test]
fn large_body_streams_through_unchanged() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut c = Client::connect(proxy.addr);
    c.send(format!("PUT /big HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
    for part in body.chunks(64 * 1024) {
        c.send(part);
    }
    let resp = c.response();
    assert_eq!(resp.status, 200, "{}", show(&resp.raw));
    let seen = primary.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.len(), body.len());
    assert!(seen[0].body == body, "3MB body changed on the way");
}

#[test]
fn chunked_body_is_forwarded_as_is() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let parts: [&[u8]; 3] = [b"hello", b" chunked \r\n\r\n world", &[0u8, 1, 2, 255]];
    let mut raw_body = Vec::new();
    for p in parts {
        raw_body.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        raw_body.extend_from_slice(p);
        raw_body.extend_from_slice(b"\r\n");
    }
    raw_body.extend_from_slice(b"0\r\n\r\n");
    let mut req = format!("POST /c HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    req.extend_from_slice(&raw_body);
    let resp = exchange(proxy.addr, &req);
    assert_eq!(resp.status, 200, "{}", show(&resp.raw));
    let seen = primary.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("transfer-encoding"), Some("chunked"));
    assert_eq!(seen[0].header("content-length"), None);
    assert_eq!(seen[0].body, parts.concat());
    assert_eq!(show(&seen[0].raw_body), show(&raw_body));
}

#[test]
fn chunk_size_lines_reach_the_upstream_rewritten_from_what_was_parsed() {
    // Extensions, whitespace, leading zeros and upper-case digits are valid, but two
    // parsers may read them differently: the upstream gets one spelling only.
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let sent: &[u8] = b"0005 ;name=\"v;x\"\r\nhello\r\n00B\t; a = b\r\n, chunked!!\r\n000;last\r\nX-T: 1\r\n\r\n";
    let want = "5\r\nhello\r\nb\r\n, chunked!!\r\n0\r\nX-T: 1\r\n\r\n";
    let head = format!("POST /c HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n");
    // Whole, then a byte at a time (every chunk-size line split at every byte).
    let resp = exchange(proxy.addr, &[head.as_bytes(), sent].concat());
    assert_eq!(resp.status, 200, "{}", show(&resp.raw));
    let mut c = Client::connect(proxy.addr);
    c.send(head.as_bytes());
    for b in sent {
        c.send(&[*b]);
        std::thread::sleep(ms(1));
    }
    assert_eq!(c.response().status, 200);
    let seen = primary.requests();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(show(&s.raw_body), show(want.as_bytes()));
        assert_eq!(s.body, b"hello, chunked!!");
    }
}

#[test]
fn a_client_that_closes_inside_a_chunk_size_line_is_closed_too() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let mut c = Client::connect(proxy.addr);
    c.send(
        format!("POST /c HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ab").as_bytes(),
    );
    c.shutdown_write();
    assert!(c.is_closed(ms(3000)), "the proxy must not wait for the rest of a line that cannot come");
    assert!(primary.requests().is_empty(), "an incomplete request is never answered by the upstream");
}

#[test]
fn response_bytes_come_back_unchanged() {
    let upstream_reply: &[u8] = b"HTTP/1.1 201 Created\r\nX-Upstream: yes\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Type: application/x-thing\r\nContent-Length: 11\r\n\r\nhello world";
    let primary = Upstream::fixed(upstream_reply);
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let resp = get(proxy.addr, "/thing");
    assert_eq!(resp.head.start_line, "HTTP/1.1 201 Created");
    let hop = ["connection", "keep-alive"];
    let got: Vec<(String, String)> =
        resp.head.lowered().into_iter().filter(|(n, _)| !hop.contains(&n.as_str())).collect();
    let want: Vec<(String, String)> = [
        ("x-upstream", "yes"),
        ("set-cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("content-type", "application/x-thing"),
        ("content-length", "11"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want, "response headers changed: {}", show(&resp.raw));
    assert_eq!(resp.text(), "hello world");
}

#[test]
fn large_response_body_comes_back_unchanged() {
    let body: Vec<u8> = (0..2_500_000u32).map(|i| (i % 253) as u8).collect();
    let primary = Upstream::fixed(&{
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(&body);
        r
    });
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let resp = get(proxy.addr, "/big");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), body.len());
    assert!(resp.body == body, "2.5MB response body changed on the way");
}

#[test]
fn chunked_response_is_relayed_and_the_connection_stays_usable() {
    let primary =
        Upstream::fixed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n");
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let mut c = Client::connect(proxy.addr);
    for i in 0..2 {
        c.send(format!("GET /wiki HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes());
        let resp = c.response();
        assert_eq!(resp.status, 200, "request {i}");
        assert_eq!(resp.text(), "Wikipedia", "request {i}: {}", show(&resp.raw));
    }
}

#[test]
fn response_delimited_by_close_is_relayed_whole() {
    let body = "streamed until the upstream closes\n".repeat(2000);
    let reply = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}").into_bytes();
    let primary = Upstream::with(move |_| Action::ReplyThenClose(reply.clone()));
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    // Repeated: the end of such a response is a race between the last
    // bytes and the upstream's FIN.
    for i in 0..10 {
        let mut c = Client::connect(proxy.addr);
        c.set_read_timeout(ms(2000));
        c.send(format!("GET /until-close HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes());
        let resp = c.try_response(false).unwrap_or_else(|e| panic!("exchange {i}: {e}"));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body.len(), body.len(), "exchange {i}");
        assert!(resp.text() == body, "close-delimited body changed");
    }
}

#[test]
fn url_prefix_is_prepended_and_query_kept() {
    let primary = Upstream::echo_target();
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&format!("{}/api/v1", primary.url()), &backup.url()).start();
    let cases = [
        ("/users?id=3", "/api/v1/users?id=3"),
        ("/", "/api/v1/"),
        ("/search?q=a%20b&x=1&x=2", "/api/v1/search?q=a%20b&x=1&x=2"),
        ("/a/b/../c;p=1?", "/api/v1/a/b/../c;p=1?"),
    ];
    for (sent, want) in cases {
        let resp = get(proxy.addr, sent);
        assert_eq!(resp.status, 200, "{sent}");
        assert_eq!(resp.text(), want, "target {sent:?} reached the upstream as");
    }
}

#[test]
fn query_string_reaches_the_upstream_unchanged() {
    let primary = Upstream::echo_target();
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    for target in ["/search?q=a%20b&x=1&x=2", "/p?", "/?a=%2F%3F&b", "/%7Euser/caf%C3%A9?x=%20&=&&"] {
        let resp = get(proxy.addr, target);
        assert_eq!(resp.text(), target);
    }
}

#[test]
fn probes_use_the_prefix_and_the_upstream_host() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let _proxy = Proxy::builder(&format!("{}/base", primary.url()), &backup.url()).start();
    assert!(
        wait_until(ms(3000), || !primary.probes().is_empty() && !backup.probes().is_empty()),
        "both upstreams must be probed"
    );
    let probe = &primary.probes()[0];
    assert_eq!(probe.head.start_line, format!("GET /base{PROBE_PATH} HTTP/1.1"));
    assert_eq!(probe.header("host"), Some(primary.addr.to_string().as_str()));
    let probe = &backup.probes()[0];
    assert_eq!(probe.head.start_line, format!("GET {PROBE_PATH} HTTP/1.1"));
    assert_eq!(probe.header("host"), Some(backup.addr.to_string().as_str()));
}

#[test]
fn request_sent_byte_by_byte_is_forwarded_whole() {
    let primary = Upstream::with(|s| Action::Reply(reply(200, &s.body)));
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let req = format!(
        "POST /slow/drip?x=1 HTTP/1.1\r\nHost: {HOST}\r\nX-Note: one byte at a time\r\n\
         Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    );
    let mut c = Client::connect(proxy.addr);
    for b in req.as_bytes().chunks(1) {
        c.send(b);
        std::thread::sleep(ms(1));
    }
    let resp = c.response();
    assert_eq!(resp.status, 200, "{}", show(&resp.raw));
    assert_eq!(resp.text(), "abcdefg");
    let seen = &primary.requests()[0];
    assert_eq!(seen.head.start_line, "POST /slow/drip?x=1 HTTP/1.1");
    assert_eq!(seen.header("x-note"), Some("one byte at a time"));
}

#[test]
fn response_trickled_byte_by_byte_is_relayed_whole() {
    let primary = Upstream::with(|_| {
        Action::Trickle(
            b"HTTP/1.1 200 OK\r\nX-Slow: yes\r\nTransfer-Encoding: chunked\r\n\r\n6\r\ntrick\n\r\n3\r\nled\r\n0\r\n\r\n"
                .to_vec(),
        )
    });
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let mut c = Client::connect(proxy.addr);
    for _ in 0..2 {
        c.send(format!("GET /t HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes());
        let resp = c.response();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-slow"), Some("yes"));
        assert_eq!(resp.text(), "trick\nled");
    }
}

#[test]
fn many_headers_are_forwarded_in_order() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let names: Vec<String> = (0..150).map(|i| format!("X-Many-{i}")).collect();
    let mut req = format!("GET /many HTTP/1.1\r\nHost: {HOST}\r\n");
    for (i, n) in names.iter().enumerate() {
        req.push_str(&format!("{n}: {i}\r\n"));
    }
    req.push_str("\r\n");
    let resp = exchange(proxy.addr, req.as_bytes());
    assert_eq!(resp.status, 200, "150 small headers (well under 16KB) must pass: {}", show(&resp.raw));
    let seen = &primary.requests()[0];
    let got: Vec<&str> =
        seen.head.headers.iter().map(|(n, _)| n.as_str()).filter(|n| n.starts_with("X-Many-")).collect();
    assert_eq!(got, names);
}

#[test]
fn response_with_many_headers_is_relayed() {
    let mut upstream_reply = "HTTP/1.1 200 OK\r\n".to_string();
    for i in 0..150 {
        upstream_reply.push_str(&format!("Set-Cookie: c{i}=v{i}\r\n"));
    }
    upstream_reply.push_str("Content-Length: 2\r\n\r\nok");
    let primary = Upstream::fixed(upstream_reply.as_bytes());
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    let resp = get(proxy.addr, "/cookies");
    assert_eq!(resp.status, 200, "{}", show(&resp.raw));
    let cookies = resp.head.get_all("set-cookie");
    assert_eq!(cookies.len(), 150);
    assert_eq!(cookies[149], "c149=v149");
}

#[test]
fn upstream_error_statuses_are_relayed_unchanged() {
    let primary = Upstream::with(|s| {
        let status: u16 = s.target().trim_start_matches('/').parse().unwrap_or(500);
        Action::Reply(reply(status, format!("upstream says {status}").as_bytes()))
    });
    let backup = Upstream::named("backup");
    let proxy = proxy_for(&primary, &backup);
    for status in [404u16, 500] {
        let resp = get(proxy.addr, &format!("/{status}"));
        assert_eq!(resp.status, status);
        assert_eq!(resp.text(), format!("upstream says {status}"), "the upstream's own {status} must pass through");
    }
    // 502/503/504 are --retry-on-status by default: a GET goes to the backup
    // (zero_error.rs), a POST gets the primary's own answer.
    for status in [502u16, 503, 504] {
        let resp = exchange(
            proxy.addr,
            format!("POST /{status} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1\r\n\r\nx").as_bytes(),
        );
        assert_eq!(resp.status, status);
        assert_eq!(resp.text(), format!("upstream says {status}"), "the upstream's own {status} must pass through");
    }
    assert_eq!(backup.request_count(), 0);
}
