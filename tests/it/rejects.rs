//! Malformed requests get the right status, are never forwarded when the
//! head alone shows they are bad, and the client connection is closed after.

use crate::common::*;
use std::thread;
use std::time::{Duration, Instant};

/// Whether the upstream may have seen part of the request before the
/// proxy could know it was bad (bodies stream).
#[derive(Clone, Copy, PartialEq)]
enum Forwarding {
    Never,
    MayStart,
}

fn check(req: &[u8], want: u16, forwarding: Forwarding) {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).set("--max-body", "1KB").start();
    let mut c = Client::connect(proxy.addr);
    // The proxy may close while we are still writing; the answer must
    // still be readable.
    let _ = c.try_send(req);
    let resp = c.try_response(false).unwrap_or_else(|e| panic!("no response to {}: {e}", show(req)));
    assert_eq!(resp.status, want, "request {}\ngot {}", show(req), show(&resp.raw));
    assert!(
        c.is_closed(Duration::from_secs(2)),
        "the connection must be closed after a {want} (request {})",
        show(req)
    );
    if forwarding == Forwarding::Never {
        thread::sleep(ms(100));
        let seen = primary.requests();
        assert!(
            seen.is_empty() && backup.request_count() == 0,
            "a rejected request was forwarded: {}",
            show(&seen.first().map(|s| s.raw_head.clone()).unwrap_or_default())
        );
    }
}

macro_rules! reject {
    ($(#[$attr:meta])* $name:ident, $req:expr, $status:expr) => {
        reject!($(#[$attr])* $name, $req, $status, Forwarding::Never);
    };
    ($(#[$attr:meta])* $name:ident, $req:expr, $status:expr, $fwd:expr) => {
        #[test]
        $(#[$attr])*
        fn $name() {
            check(AsRef::<[u8]>::as_ref(&$req), $status, $fwd);
        }
    };
}

reject!(
    content_length_with_transfer_encoding_is_400,
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    400
);
reject!(
    duplicate_content_length_is_400,
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
    400
);
reject!(
    conflicting_content_lengths_are_400,
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    400
);
reject!(non_numeric_content_length_is_400, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400);
reject!(signed_content_length_is_400, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400);
reject!(negative_content_length_is_400, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400);
reject!(obs_fold_is_400, b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n", 400);
reject!(missing_host_on_http11_is_400, b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400);
reject!(two_host_headers_are_400, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
reject!(space_in_header_name_is_400, b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400);
reject!(space_before_colon_is_400, b"GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n", 400);
reject!(separator_in_header_name_is_400, b"GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n", 400);
reject!(nul_in_header_value_is_400, b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400);
reject!(transfer_encoding_gzip_is_501, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501);
reject!(http_2_0_is_505, b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
reject!(http_1_2_is_505, b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505);
reject!(
    head_over_32kb_is_431,
    [&b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: "[..], &[b'a'; 40_000][..], &b"\r\n\r\n"[..]].concat(),
    431
);
reject!(
    more_than_256_headers_is_431,
    format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", (0..1000).map(|i| format!("X-H{i}: v\r\n")).collect::<String>())
        .into_bytes(),
    431
);
reject!(content_length_over_max_body_is_413, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2048\r\n\r\n", 413);
reject!(
    chunked_body_over_max_body_is_413,
    [
        &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        format!("400\r\n{}\r\n", "x".repeat(0x400)).as_bytes(),
        format!("400\r\n{}\r\n", "y".repeat(0x400)).as_bytes(),
        &b"0\r\n\r\n"[..],
    ]
    .concat(),
    413,
    Forwarding::MayStart
);
reject!(
    bad_chunk_size_is_400,
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    400,
    Forwarding::MayStart
);
reject!(
    chunk_without_crlf_after_data_is_400,
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    400,
    Forwarding::MayStart
);

#[test]
fn a_valid_request_passes_the_same_checks() {
    // Guards the table above: the same proxy setup does forward good input.
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).set("--max-body", "1KB").start();
    let resp = exchange(proxy.addr, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "primary");
    assert_eq!(primary.requests()[0].body, b"hello");
}

#[test]
fn slow_request_head_gets_408_and_close() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).set("--header-timeout", "300ms").start();
    let mut c = Client::connect(proxy.addr);
    let start = Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n");
    let resp = c.response();
    let took = start.elapsed();
    assert_eq!(resp.status, 408, "{}", show(&resp.raw));
    assert!(took >= ms(250) && took < Duration::from_secs(3), "408 after {took:?}, want about 300ms");
    assert!(c.is_closed(Duration::from_secs(2)), "must close after 408");
    assert_eq!(primary.request_count(), 0);
}
