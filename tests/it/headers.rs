//! What the upstream sees of the client's headers: order and repeats kept,
//! hop-by-hop headers gone, X-Forwarded-For/-Proto added, Host untouched.

use crate::common::*;

/// Sends `head` (a full request head) through a fresh proxy and returns
/// the one request the primary saw.
fn forwarded(head: &str) -> Seen {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).start();
    let resp = exchange(proxy.addr, head.as_bytes());
    assert_eq!(resp.status, 200, "{}", show(&resp.raw));
    assert_eq!(resp.text(), "primary");
    let seen = primary.requests();
    assert_eq!(seen.len(), 1, "the primary must see exactly one request");
    seen[0].clone()
}

fn lowered(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.to_string())).collect()
}

#[test]
fn header_order_and_repeated_headers_are_kept() {
    let sent = [
        ("Host", "app.test"),
        ("X-B", "1"),
        ("Accept", "*/*"),
        ("X-A", "2"),
        ("X-B", "3"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
        ("User-Agent", "tests/1.0 (with; odd \"chars\")"),
        ("X-Empty", ""),
        ("x-lower", "v"),
    ];
    let mut head = "GET /h HTTP/1.1\r\n".to_string();
    for (n, v) in sent {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let seen = forwarded(&head);
    let added = ["x-forwarded-for", "x-forwarded-proto", "connection"];
    let got: Vec<(String, String)> =
        seen.head.lowered().into_iter().filter(|(n, _)| !added.contains(&n.as_str())).collect();
    assert_eq!(got, lowered(&sent), "raw head seen: {}", show(&seen.raw_head));
}

#[test]
fn hop_by_hop_headers_are_removed() {
    let seen = forwarded(
        "GET /hop HTTP/1.1\r\n\
         Host: app.test\r\n\
         Connection: keep-alive, X-Secret, x-other\r\n\
         X-Secret: 1\r\n\
         X-Kept: yes\r\n\
         X-Other: 2\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
         TE: gzip\r\n\
         \r\n",
    );
    let raw = show(&seen.raw_head);
    for gone in ["x-secret", "x-other", "keep-alive", "proxy-connection", "proxy-authorization", "te"] {
        assert_eq!(seen.header(gone), None, "{gone} must not be forwarded: {raw}");
    }
    for v in seen.head.get_all("connection") {
        let v = v.to_ascii_lowercase();
        assert!(!v.contains("x-secret") && !v.contains("x-other"), "the client's Connection list leaked: {raw}");
    }
    assert_eq!(seen.header("x-kept"), Some("yes"), "{raw}");
    assert_eq!(seen.header("host"), Some("app.test"), "{raw}");
}

#[test]
fn te_trailers_is_kept() {
    let seen = forwarded("GET /te HTTP/1.1\r\nHost: app.test\r\nTE: trailers\r\n\r\n");
    assert_eq!(seen.head.get_all("te"), ["trailers"], "{}", show(&seen.raw_head));
}

#[test]
fn x_forwarded_for_is_added() {
    let seen = forwarded("GET / HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!(seen.head.get_all("x-forwarded-for"), ["127.0.0.1"], "{}", show(&seen.raw_head));
}

#[test]
fn x_forwarded_for_is_appended_to() {
    let seen = forwarded("GET / HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n");
    assert_eq!(seen.head.get_all("x-forwarded-for"), ["203.0.113.7, 127.0.0.1"], "{}", show(&seen.raw_head));
}

#[test]
fn x_forwarded_proto_is_http() {
    let seen = forwarded("GET / HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!(seen.head.get_all("x-forwarded-proto"), ["http"], "{}", show(&seen.raw_head));
}

#[test]
fn x_forwarded_proto_from_the_client_is_replaced() {
    let seen = forwarded("GET / HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-Proto: https\r\n\r\n");
    assert_eq!(
        seen.head.get_all("x-forwarded-proto"),
        ["http"],
        "a client must not be able to claim https: {}",
        show(&seen.raw_head)
    );
}

#[test]
fn host_is_passed_through_as_sent() {
    let seen = forwarded("GET / HTTP/1.1\r\nHost: Shop.Example.TEST:8443\r\n\r\n");
    assert_eq!(seen.head.get_all("host"), ["Shop.Example.TEST:8443"]);
}
