//! Request smuggling and desync, as tables run against one proxy each: a head that is
//! malformed or ambiguous gets an error status, the connection is closed and no upstream
//! sees a byte of it; a chunked body that turns invalid midway reaches the upstream only up
//! to the last valid byte, never whole; a malformed upstream response becomes a 502 and its
//! connection is never reused. Every table reports all its failing cases by name.

use crate::common::*;
use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

type Case = (&'static str, Vec<u8>, u16);

/// A proxy with default flags in front of `primary`, and its backup (which must stay idle:
/// nothing in this file may be retried there).
fn proxy_for(primary: &str) -> (Proxy, Upstream) {
    let backup = Upstream::named("backup");
    (Proxy::builder(primary, &backup.url()).start(), backup)
}

/// Heads refused before anything is forwarded: (name, request bytes, status). None of
/// these is in `rejects.rs`. Bodies that would smuggle a second request ride along,
/// so a proxy that framed them differently would forward `/smuggled`.
fn head_cases() -> Vec<Case> {
    let table: &[(&str, &[u8], u16)] = &[
        // Content-Length together with Transfer-Encoding, both orders and odd spellings.
        ("te_then_cl", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("cl_then_te_upper_case_names", b"POST / HTTP/1.1\r\nHost: a\r\nCONTENT-LENGTH: 5\r\nTRANSFER-ENCODING: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("cl_zero_then_te", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
        ("cl_then_te_upper_case_value", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n", 400),
        ("te_with_ows_then_cl", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  chunked \t\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
        ("te_after_htab_then_cl", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400),
        ("cl_then_te_identity", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: identity\r\n\r\nhello", 501),
        ("te_gzip_chunked_then_cl", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\nhello", 501),
        ("cl_and_te_on_http10", b"POST / HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        // Content-Length repeated or list-valued.
        ("cl_list_same", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", 400),
        ("cl_list_different", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,6\r\n\r\nhello!", 400),
        ("cl_list_no_space", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\nhello", 400),
        ("cl_trailing_comma", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\nhello", 400),
        ("cl_zero_twice", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", 400),
        ("cl_twice_other_case", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello", 400),
        // Content-Length values that are not 1*DIGIT.
        ("cl_space_inside", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\n0123456789", 400),
        ("cl_hex", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", 400),
        ("cl_decimal_point", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5.0\r\n\r\nhello", 400),
        ("cl_exponent", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5e0\r\n\r\nhello", 400),
        ("cl_minus_zero", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -0\r\n\r\n", 400),
        ("cl_plus_zero", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +0\r\n\r\n", 400),
        ("cl_20_digits", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
        ("cl_u64_max_plus_one", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n", 400),
        ("cl_19_digits_over_max_body", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9999999999999999999\r\n\r\n", 413),
        ("cl_empty", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400),
        ("cl_only_htab", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\t\r\n\r\n", 400),
        ("cl_fullwidth_digit", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \xef\xbc\x95\r\n\r\nhello", 400),
        ("cl_quoted", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \"5\"\r\n\r\nhello", 400),
        ("cl_vertical_tab", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\x0b\r\n\r\nhello", 400),
        // Transfer-Encoding that does not end in exactly one chunked.
        ("te_chunked_then_gzip", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 501),
        ("te_gzip_then_chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        ("te_two_headers", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("te_two_headers_gzip_first", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        ("te_two_headers_identity_last", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\ntransfer-encoding: identity\r\n\r\n0\r\n\r\n", 501),
        ("te_chunked_listed_twice", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
        ("te_xchunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501),
        ("te_chunked_suffix", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n", 501),
        ("te_chunked_with_parameter", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n", 501),
        ("te_quoted", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n", 501),
        ("te_trailing_nbsp", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\xa0\r\n\r\n0\r\n\r\n", 501),
        ("te_vertical_tab_before", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n", 400),
        ("te_nul_after", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x00\r\n\r\n0\r\n\r\n", 400),
        ("te_leading_comma", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\n", 400),
        ("te_trailing_comma", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\n", 400),
        ("te_empty", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n0\r\n\r\n", 400),
        ("te_on_http10", b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("te_obs_folded_value", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400),
        // Whitespace between a field name and its colon.
        ("te_space_before_colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
        ("te_htab_before_colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n", 400),
        ("cl_space_before_colon", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello", 400),
        ("host_space_before_colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        // Field names that are not tokens.
        ("name_soh", b"GET / HTTP/1.1\r\nHost: a\r\nX\x01A: 1\r\n\r\n", 400),
        ("name_nul", b"GET / HTTP/1.1\r\nHost: a\r\nX\x00A: 1\r\n\r\n", 400),
        ("name_at_sign", b"GET / HTTP/1.1\r\nHost: a\r\nX@A: 1\r\n\r\n", 400),
        ("name_del", b"GET / HTTP/1.1\r\nHost: a\r\nX\x7fA: 1\r\n\r\n", 400),
        ("name_leading_paren", b"GET / HTTP/1.1\r\nHost: a\r\n(X: 1\r\n\r\n", 400),
        ("name_double_quote", b"GET / HTTP/1.1\r\nHost: a\r\nX\"A: 1\r\n\r\n", 400),
        ("name_obs_text", b"GET / HTTP/1.1\r\nHost: a\r\nX\xe9A: 1\r\n\r\n", 400),
        ("name_empty", b"GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", 400),
        ("line_without_colon", b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400),
        ("first_field_line_starts_with_space", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
        // Control bytes in field values.
        ("value_bare_cr", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", 400),
        ("value_nul_at_end", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00\r\n\r\n", 400),
        ("value_soh", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x01b\r\n\r\n", 400),
        ("value_escape", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \x1b[31mred\r\n\r\n", 400),
        ("value_del", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x7fb\r\n\r\n", 400),
        ("host_value_nul", b"GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n", 400),
        // obs-fold with SP and with HTAB.
        ("obs_fold_htab", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n\ttwo\r\n\r\n", 400),
        ("obs_fold_on_host", b"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", 400),
        ("obs_fold_on_cl", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n 0\r\n\r\n0123456789", 400),
        // Request-line oddities.
        ("space_after_version", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
        ("htab_separators", b"GET\t/\tHTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("missing_version", b"GET /\r\nHost: a\r\n\r\n", 400),
        ("http09_simple_request", b"GET /\r\n\r\n", 400),
        ("lower_case_version", b"GET / http/1.1\r\nHost: a\r\n\r\n", 505),
        ("version_with_extra_digit", b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
        ("version_without_minor", b"GET / HTTP/1\r\nHost: a\r\n\r\n", 505),
        ("huge_version", b"GET / HTTP/4294967297.1\r\nHost: a\r\n\r\n", 505),
        ("version_0_9", b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
        ("leading_space", b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("double_space_after_method", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("double_space_before_version", b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 505),
        ("space_in_target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 505),
        ("ctl_in_target", b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("del_in_target", b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("invalid_utf8_in_target", b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("nul_in_method", b"GE\x00T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("connect", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501),
        ("connect_origin_form", b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
        ("asterisk_with_get", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("asterisk_with_post", b"POST * HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 400),
        ("absolute_form_ftp", b"GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("absolute_form_file", b"GET file:///etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("absolute_form_one_slash", b"GET http:/a/x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("relative_target", b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("http2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        // Host oddities.
        ("host_with_space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        ("host_with_slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        ("host_with_userinfo", b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400),
        ("host_with_backslash", b"GET / HTTP/1.1\r\nHost: a\\b\r\n\r\n", 400),
        ("host_with_hash", b"GET / HTTP/1.1\r\nHost: a#b\r\n\r\n", 400),
        ("host_list", b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", 400),
        ("host_twice_other_case", b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400),
        ("host_empty_then_host", b"GET / HTTP/1.1\r\nHost:\r\nHost: a\r\n\r\n", 400),
        ("missing_host_with_absolute_form", b"GET http://a/ HTTP/1.1\r\n\r\n", 400),
        ("expect_list", b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, x\r\nContent-Length: 0\r\n\r\n", 417),
        // Line ends other than CRLF (RFC 9112 2.2 allows a recipient to take a bare LF; a
        // CRLF-only hop in front would see other lines): in every place of the head.
        ("bare_lf_after_request_line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
        ("bare_lf_between_fields", b"GET / HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n", 400),
        ("bare_lf_hides_transfer_encoding", b"POST / HTTP/1.1\r\nHost: a\r\nx:x\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("bare_lf_hides_content_length", b"GET / HTTP/1.1\r\nHost: a\r\nDummy: x\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("bare_lf_joins_te_and_cl", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400),
        ("bare_lf_blank_line", b"GET / HTTP/1.1\r\nHost: a\r\n\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("bare_lf_before_blank_line", b"GET / HTTP/1.1\r\nHost: a\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("bare_lf_twice_at_the_end", b"GET / HTTP/1.1\r\nHost: a\n\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("bare_lf_everywhere", b"POST / HTTP/1.1\nHost: a\nContent-Length: 5\n\nhello", 400),
        ("bare_lf_before_request_line", b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("bare_cr_after_request_line", b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
        ("bare_cr_between_fields", b"POST / HTTP/1.1\r\nHost: a\rTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("bare_cr_blank_line", b"GET / HTTP/1.1\r\nHost: a\r\n\r\rGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ];
    let mut cases: Vec<Case> = table.iter().map(|(n, r, s)| (*n, r.to_vec(), *s)).collect();
    // Past 32 bytes httparse checks values with SIMD: the same bytes must be refused there.
    let long = "x".repeat(40);
    for (name, byte) in [("long_value_soh", 0x01u8), ("long_value_del", 0x7f), ("long_value_nul", 0x00)] {
        let mut raw = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Long: {long}").into_bytes();
        raw.push(byte);
        raw.extend_from_slice(format!("{long}\r\n\r\n").as_bytes());
        cases.push((name, raw, 400));
    }
    cases
}

/// Sends every case on its own connection: the status must match, the connection must
/// close after it, and no upstream may record a request meanwhile.
fn run_head_cases(proxy: &Proxy, upstreams: &[&Upstream], cases: &[Case]) -> Vec<String> {
    let count = || upstreams.iter().map(|u| u.request_count()).sum::<usize>();
    let mut failures = Vec::new();
    for (name, raw, want) in cases {
        let before = count();
        let mut c = Client::connect(proxy.addr);
        // The proxy may close while we are still writing; the answer must still be readable.
        let _ = c.try_send(raw);
        match c.try_response(false) {
            Ok(r) if r.status == *want => {
                if !c.is_closed(Duration::from_secs(2)) {
                    failures.push(format!("{name}: connection still open after the {want}"));
                }
            }
            Ok(r) => failures.push(format!("{name}: want {want}, got {}", show(&r.raw))),
            Err(e) => failures.push(format!("{name}: no response: {e}")),
        }
        if count() != before {
            failures.push(format!("{name}: forwarded to an upstream: {}", show(raw)));
        }
    }
    failures
}

#[test]
fn malformed_and_ambiguous_heads_are_refused_and_never_forwarded() {
    let primary = Upstream::named("primary");
    let (proxy, backup) = proxy_for(&primary.url());
    let cases = head_cases();
    let mut names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names must be distinct");
    assert!(cases.len() >= 60, "only {} cases", cases.len());

    let mut failures = run_head_cases(&proxy, &[&primary, &backup], &cases);
    // Anything forwarded late (after the client got its answer) still counts.
    thread::sleep(ms(200));
    for s in primary.requests().iter().chain(&backup.requests()) {
        failures.push(format!("an upstream saw {}", show(&s.raw_head)));
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    // The table passes for the right reason: the same proxy forwards a valid request.
    let ok = exchange(proxy.addr, b"POST /valid HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!((ok.status, ok.text().as_str()), (200, "primary"), "{}", show(&ok.raw));
    assert_eq!(primary.requests()[0].body, b"hello");
}

// ------------------------------------------------------------ bare LF ----

#[test]
fn bare_lf_in_a_response_head_reaches_the_client_as_crlf() {
    // Accepted on purpose (RFC 9112 2.2): the client gets a head re-serialized with CRLF, so
    // only the proxy's reading of it matters, and that is one framing.
    let primary = Upstream::fixed(b"HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 2\n\nok");
    let (proxy, _backup) = proxy_for(&primary.url());
    let mut c = Client::connect(proxy.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let resp = c.response();
    assert_eq!((resp.status, resp.text().as_str()), (200, "ok"), "{}", show(&resp.raw));
    let head = &resp.raw[..find(&resp.raw, b"\r\n\r\n").expect("a CRLF head") + 4];
    let bare = head.iter().enumerate().any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'));
    assert!(!bare && find(head, b"\r\nX-A: 1\r\n").is_some(), "{}", show(head));
}

// ------------------------------------------------- odd but valid input ----

/// Requests that look odd but are valid (RFC 9112): (name, request, body). Each must be
/// forwarded once with exactly one framing and the body intact.
fn accepted_cases() -> Vec<(&'static str, Vec<u8>, &'static [u8])> {
    let chunked = "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let cases: [(&str, String, &[u8]); 10] = [
        ("te_trailing_ows", "Transfer-Encoding: chunked \t\r\n\r\n5\r\nhello\r\n0\r\n\r\n".into(), b"hello"),
        ("te_upper_case", "Transfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n".into(), b"hello"),
        ("cl_leading_zeros", "Content-Length: 005\r\n\r\nhello".into(), b"hello"),
        ("cl_no_space", "Content-Length:5\r\n\r\nhello".into(), b"hello"),
        (
            "chunk_extensions",
            "Transfer-Encoding: chunked\r\n\r\n5;a=\"q\\\"\" ; b\r\nhello\r\n0;z\r\n\r\n".into(),
            b"hello",
        ),
        ("chunk_size_leading_zeros", "Transfer-Encoding: chunked\r\n\r\n00005\r\nhello\r\n0\r\n\r\n".into(), b"hello"),
        ("trailer_fields", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n".into(), b"hello"),
        ("empty_host", chunked.into(), b"hello"),
        ("connection_names_framing_headers", format!("Connection: transfer-encoding, host\r\n{chunked}"), b"hello"),
        ("te_trailers_only", format!("TE: trailers\r\n{chunked}"), b"hello"),
    ];
    cases
        .into_iter()
        .enumerate()
        .map(|(i, (name, rest, body))| {
            let host = if name == "empty_host" { "" } else { "a" };
            (name, format!("POST /odd/{i} HTTP/1.1\r\nHost: {host}\r\n{rest}").into_bytes(), body)
        })
        .collect()
}

#[test]
fn odd_but_valid_requests_are_forwarded_with_one_framing() {
    let primary = Upstream::named("primary");
    let (proxy, backup) = proxy_for(&primary.url());
    let mut failures = Vec::new();
    for (i, (name, raw, body)) in accepted_cases().into_iter().enumerate() {
        let resp = exchange(proxy.addr, &raw);
        let target = format!("/odd/{i}");
        let seen: Vec<Seen> = primary.requests().into_iter().filter(|s| s.target() == target).collect();
        let framings =
            |s: &Seen| s.header("content-length").is_some() as u8 + s.header("transfer-encoding").is_some() as u8;
        if resp.status != 200 || seen.len() != 1 || seen[0].body != body || framings(&seen[0]) != 1 {
            let got = seen.iter().map(|s| show(&[&s.raw_head[..], &s.raw_body].concat())).collect::<Vec<_>>();
            failures.push(format!("{name}: status {}, upstream saw {got:?}", resp.status));
        }
    }
    assert_eq!(backup.request_count(), 0, "nothing is retried on the backup");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ------------------------------------------------ invalid chunked bodies ----

/// One non-probe connection to a [`Recorder`].
#[derive(Clone, Debug)]
struct RawConn {
    /// Every byte received, head included.
    bytes: Vec<u8>,
    /// The proxy has closed it.
    closed: bool,
}

impl RawConn {
    fn body(&self) -> Option<&[u8]> {
        find(&self.bytes, b"\r\n\r\n").map(|e| &self.bytes[e + 4..])
    }
}

/// An upstream that answers health probes and records every byte of any other request
/// without ever answering, so a test can see exactly how much of a body was forwarded.
struct Recorder {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<RawConn>>>,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        listener.set_nonblocking(true).expect("nonblocking recorder");
        let addr = listener.local_addr().expect("recorder addr");
        let conns = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (conns.clone(), stop.clone());
        thread::spawn(move || {
            while !s.load(SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let c = c.clone();
                        thread::spawn(move || record(stream, &c));
                    }
                    Err(_) => thread::sleep(ms(2)),
                }
            }
        });
        Recorder { addr, conns, stop }
    }

    /// The connection that carried the request for `target`.
    fn seen(&self, target: &str) -> Option<RawConn> {
        let line = format!("POST {target} HTTP/1.1\r\n");
        self.conns.lock().unwrap().iter().find(|c| c.bytes.starts_with(line.as_bytes())).cloned()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

fn record(mut stream: TcpStream, conns: &Mutex<Vec<RawConn>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut pending = Vec::new();
    let mut slot = None;
    let mut tmp = [0u8; 16 * 1024];
    loop {
        if slot.is_none() {
            if let Some(end) = find(&pending, b"\r\n\r\n") {
                if pending.starts_with(format!("GET {PROBE_PATH} ").as_bytes()) {
                    let _ = stream.write_all(&reply(200, b"ok"));
                    pending.drain(..end + 4);
                    continue;
                }
                let mut all = conns.lock().unwrap();
                all.push(RawConn { bytes: std::mem::take(&mut pending), closed: false });
                slot = Some(all.len() - 1);
            }
        }
        let n = read_retrying(&mut stream, &mut tmp).unwrap_or(0);
        match slot {
            Some(i) if n == 0 => conns.lock().unwrap()[i].closed = true,
            Some(i) => conns.lock().unwrap()[i].bytes.extend_from_slice(&tmp[..n]),
            None => pending.extend_from_slice(&tmp[..n]),
        }
        if n == 0 {
            return;
        }
    }
}

/// Chunked bodies that turn invalid: (name, valid prefix, rest starting at the first bad
/// byte). The head is valid, so the proxy may stream the prefix before it sees the error.
fn chunked_cases() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let table: &[(&str, &[u8], &[u8])] = &[
        ("size_0x_prefix", b"0", b"x5\r\nhello\r\n0\r\n\r\n"),
        ("size_plus_sign", b"", b"+5\r\nhello\r\n0\r\n\r\n"),
        ("size_minus_sign", b"", b"-5\r\nhello\r\n0\r\n\r\n"),
        ("size_leading_space", b"", b" 5\r\nhello\r\n0\r\n\r\n"),
        ("size_empty", b"", b"\r\nhello\r\n0\r\n\r\n"),
        ("size_overflow_17_digits", b"1000000000000000", b"5\r\nhello\r\n0\r\n\r\n"),
        ("size_bad_hex_char", b"5", b"g\r\nhello\r\n0\r\n\r\n"),
        ("size_underscore", b"1", b"_0\r\n0123456789abcdef\r\n0\r\n\r\n"),
        ("size_nul", b"5", b"\x00\r\nhello\r\n0\r\n\r\n"),
        ("size_line_bare_lf", b"5", b"\nhello\r\n0\r\n\r\n"),
        ("size_cr_without_lf", b"5\r", b"hello\r\n0\r\n\r\n"),
        ("last_chunk_bare_lf", b"5\r\nhello\r\n0", b"\n\n"),
        ("ext_ctl", b"5;a", b"\x01b\r\nhello\r\n0\r\n\r\n"),
        ("ext_del", b"5;a", b"\x7f\r\nhello\r\n0\r\n\r\n"),
        ("ext_at_sign", b"5;a=b", b"@c\r\nhello\r\n0\r\n\r\n"),
        ("ext_bare_lf", b"5;a", b"\nhello\r\n0\r\n\r\n"),
        ("ext_unbalanced_quote", b"5;a=\"b", b"\r\nhello\r\n0\r\n\r\n"),
        ("ext_nul_in_quotes", b"5;a=\"", b"\x00\"\r\nhello\r\n0\r\n\r\n"),
        ("data_longer_than_size", b"3\r\nhel", b"lo\r\n0\r\n\r\n"),
        ("data_shorter_than_size", b"7\r\nhello\r\n", b"0\r\n\r\n"),
        ("data_followed_by_lf_only", b"5\r\nhello", b"\n0\r\n\r\n"),
        ("data_followed_by_cr_only", b"5\r\nhello\r", b"0\r\n\r\n"),
        ("data_followed_by_request", b"5\r\nhello\r\n", b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("trailer_without_colon", b"5\r\nhello\r\n0\r\nNoColon", b"\r\n\r\n"),
        ("trailer_space_in_name", b"5\r\nhello\r\n0\r\nBad", b" Name: v\r\n\r\n"),
        ("trailer_space_before_colon", b"5\r\nhello\r\n0\r\nX", b" : v\r\n\r\n"),
        ("trailer_obs_fold", b"5\r\nhello\r\n0\r\nX: a\r\n", b" b\r\n\r\n"),
        ("trailer_nul", b"5\r\nhello\r\n0\r\nX: a", b"\x00\r\n\r\n"),
        ("trailer_bare_cr", b"5\r\nhello\r\n0\r\nX: a\r", b"b\r\n\r\n"),
        ("trailer_bare_lf", b"5\r\nhello\r\n0\r\nX: a", b"\nY: b\r\n\r\n"),
        ("final_cr_without_lf", b"5\r\nhello\r\n0\r\n\r", b"X"),
        // Whitespace after a size is BWS before ";" only (RFC 9112 7.1.1).
        ("size_trailing_space", b"5 ", b"\r\nhello\r\n0\r\n\r\n"),
        ("size_trailing_htab", b"5\t", b"\r\nhello\r\n0\r\n\r\n"),
        ("size_trailing_spaces_and_tabs", b"5 \t ", b"\r\nhello\r\n0\r\n\r\n"),
        ("last_chunk_trailing_space", b"5\r\nhello\r\n0 ", b"\r\n\r\n"),
        // Extensions without a name.
        ("ext_empty_name", b"5;", b"\r\nhello\r\n0\r\n\r\n"),
        ("ext_empty_name_size_2", b"2;", b"\r\nhi\r\n0\r\n\r\n"),
        ("ext_empty_name_after_space", b"5; ", b"\r\nhello\r\n0\r\n\r\n"),
        ("ext_empty_name_with_value", b"5;", b"=x\r\nhello\r\n0\r\n\r\n"),
        ("ext_empty_name_between", b"5;a;", b";b\r\nhello\r\n0\r\n\r\n"),
        ("ext_empty_name_last_chunk", b"5\r\nhello\r\n0;", b"\r\n\r\n"),
        ("ext_empty_value", b"5;a=", b"\r\nhello\r\n0\r\n\r\n"),
        ("ext_trailing_space", b"5;a ", b"\r\nhello\r\n0\r\n\r\n"),
        ("size_empty_after_a_chunk", b"5\r\nhello\r\n", b"\r\n0\r\n\r\n"),
    ];
    let mut cases: Vec<_> = table.iter().map(|(n, p, r)| (*n, p.to_vec(), r.to_vec())).collect();
    // A size line may have 4096 bytes (CR included), trailers 16KB (final CRLF excluded).
    let mut long_ext = b"5;".to_vec();
    long_ext.extend(std::iter::repeat_n(b'a', 4094));
    cases.push(("size_line_too_long", long_ext, b"a\r\nhello\r\n0\r\n\r\n".to_vec()));
    cases.push(("size_leading_zeros_too_long", vec![b'0'; 4096], b"5\r\nhello\r\n0\r\n\r\n".to_vec()));
    cases.push(("size_32_hex_digits", vec![b'f'; 16], b"ffffffffffffffff\r\n0\r\n\r\n".to_vec()));
    let mut trailers = b"0\r\nX-Big: ".to_vec();
    trailers.extend(std::iter::repeat_n(b'a', 16 * 1024 - 7));
    cases.push(("trailers_too_large", trailers, b"aa\r\n\r\n".to_vec()));
    cases
}

/// The part of a valid chunked prefix the proxy streams at once: all of it but a partial
/// chunk-size line at its end (the proxy forwards a size line when it is whole, since it
/// writes it afresh) or a trailer field whose name has not ended (the proxy drops some
/// fields by name; a name longer than 25 bytes is none of them). The rest of a trailer
/// field, and the final CRLF, stream byte by byte.
fn whole_lines(prefix: &[u8]) -> &[u8] {
    let mut i = 0;
    loop {
        let Some(lf) = find(&prefix[i..], b"\n") else { return &prefix[..i] };
        let digits: String = prefix[i..i + lf].iter().map(|&b| b as char).take_while(char::is_ascii_hexdigit).collect();
        let size = u64::from_str_radix(&digits, 16).expect("a valid size line in a valid prefix");
        if size == 0 {
            i += lf + 1;
            break;
        }
        i += lf + 1 + size as usize + 2;
        if i >= prefix.len() {
            return prefix;
        }
    }
    while let Some(lf) = find(&prefix[i..], b"\n") {
        i += lf + 1;
    }
    let last = &prefix[i..];
    if last.starts_with(b"\r") || last.contains(&b':') || last.len() > 25 {
        prefix
    } else {
        &prefix[..i]
    }
}

#[test]
fn invalid_chunked_bodies_are_cut_at_the_first_bad_byte() {
    let primary = Recorder::start();
    let (proxy, backup) = proxy_for(&format!("http://{}", primary.addr));
    let mut failures = Vec::new();
    let cases = chunked_cases();
    for (i, (name, prefix, rest)) in cases.iter().enumerate() {
        let target = format!("/chunk/{i}");
        let mut c = Client::connect(proxy.addr);
        c.send(format!("POST {target} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").as_bytes());
        c.send(prefix);
        // The valid prefix streams through before the bad byte is sent (a chunk-size line
        // only once it is whole).
        let want = whole_lines(prefix);
        let streamed =
            wait_until(Duration::from_secs(2), || primary.seen(&target).is_some_and(|s| s.body() == Some(want)));
        if !streamed {
            failures.push(format!("{name}: the valid prefix was not streamed: {:?}", primary.seen(&target)));
        }
        let _ = c.try_send(rest);
        match c.try_response(false) {
            Ok(r) if r.status == 400 => {}
            Ok(r) => failures.push(format!("{name}: want 400, got {}", show(&r.raw))),
            Err(e) => failures.push(format!("{name}: no response: {e}")),
        }
        if !c.is_closed(Duration::from_secs(2)) {
            failures.push(format!("{name}: client connection still open"));
        }
        // The upstream connection must be dropped, never reused: the next request on it
        // would be read as the rest of this body.
        wait_until(Duration::from_secs(2), || primary.seen(&target).is_none_or(|s| s.closed));
        if let Some(seen) = primary.seen(&target) {
            let body = seen.body().unwrap_or_default();
            if body.len() > prefix.len() || !prefix.starts_with(body) {
                failures.push(format!("{name}: upstream got past the bad byte: {}", show(body)));
            }
            if !seen.closed {
                failures.push(format!("{name}: upstream connection left open"));
            }
        }
    }
    assert_eq!(backup.request_count(), 0, "nothing is retried on the backup");
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

// ------------------------------------------------------------ trailers ----

#[test]
fn forbidden_trailer_fields_never_reach_the_upstream() {
    // RFC 9110 6.5.1: framing, routing, authentication and the like must not be trailers; a
    // next hop that merged "Host: evil" or "Content-Length: 5" into the head would act on it.
    let primary = Upstream::named("primary");
    let (proxy, backup) = proxy_for(&primary.url());
    let head = |i: u8| format!("POST /trailers/{i} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    let body: &[u8] = b"5\r\nhello\r\n0\r\nContent-Length: 5\r\nX-Checksum: abc\r\nHost: evil\r\n\r\n";
    let mut c = Client::connect(proxy.addr);
    c.send(&[head(0).as_bytes(), body].concat());
    assert_eq!(c.response().status, 200);
    // The same again, the trailer section trickled a byte at a time.
    c.send(head(1).as_bytes());
    c.send(&body[..10]);
    for b in &body[10..] {
        c.send(&[*b]);
        thread::sleep(ms(2));
    }
    assert_eq!(c.response().status, 200);
    c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().status, 200, "the connection is still in step");
    let seen = primary.requests();
    for target in ["/trailers/0", "/trailers/1"] {
        let s = seen.iter().find(|s| s.target() == target).unwrap_or_else(|| panic!("{target} not forwarded"));
        assert_eq!(show(&s.raw_body), show(b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n"), "{target}");
        assert_eq!(s.header("host"), Some("a"), "{target}");
    }
    assert!(seen.iter().any(|s| s.target() == "/after"));
    assert_eq!(backup.request_count(), 0);
}

#[test]
fn forbidden_trailer_fields_never_reach_the_client_and_size_lines_are_canonical() {
    let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        005;ext=1\r\nhello\r\n0\r\nSet-Cookie: s=1\r\nServer-Timing: db;dur=5\r\nContent-Length: 3\r\n\r\n";
    let primary = Upstream::fixed(response);
    let (proxy, _backup) = proxy_for(&primary.url());
    let mut c = Client::connect(proxy.addr);
    c.send(b"GET /t HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200, "{}", show(&r.raw));
    let want: &[u8] = b"\r\n\r\n5\r\nhello\r\n0\r\nServer-Timing: db;dur=5\r\n\r\n";
    assert!(r.raw.ends_with(want), "{}", show(&r.raw));
    c.send(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().status, 200, "the connection is still in step");
}

// ------------------------------------------------ malformed responses ----

/// Responses the proxy must refuse (the client gets 502): (name, bytes).
fn response_cases() -> Vec<(&'static str, Vec<u8>)> {
    let table: &[(&str, &[u8])] = &[
        ("cl_then_te", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("te_then_cl", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
        ("cl_twice_same", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"),
        ("cl_twice_different", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"),
        ("cl_list", b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"),
        ("cl_not_a_number", b"HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\nok"),
        ("cl_signed", b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok"),
        ("cl_20_digits", b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nok"),
        ("cl_empty", b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nok"),
        ("te_twice", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("obs_fold_sp", b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n"),
        ("obs_fold_htab", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: one\r\n\ttwo\r\n\r\n"),
        ("garbage_status_line", b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
        ("status_missing", b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n"),
        ("status_empty", b"HTTP/1.1 \r\nContent-Length: 0\r\n\r\n"),
        ("status_two_digits", b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"),
        ("status_four_digits", b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"),
        ("status_below_100", b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n"),
        ("http2_status_line", b"HTTP/2 200\r\nContent-Length: 0\r\n\r\n"),
        ("http2_0_status_line", b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ("lower_case_version", b"http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ("header_without_colon", b"HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 0\r\n\r\n"),
        ("nul_in_header_value", b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n"),
        ("bare_cr_in_header_value", b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n"),
        ("ctl_in_header_name", b"HTTP/1.1 200 OK\r\nX\x01A: 1\r\nContent-Length: 0\r\n\r\n"),
        ("space_before_colon", b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"),
        ("nul_in_reason", b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n"),
        ("unasked_101", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"),
    ];
    let mut cases: Vec<_> = table.iter().map(|(n, r)| (*n, r.to_vec())).collect();
    let many: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    cases.push(("over_256_headers", format!("HTTP/1.1 200 OK\r\n{many}Content-Length: 0\r\n\r\n").into_bytes()));
    let big = format!("HTTP/1.1 200 OK\r\nX-Big: {}", "a".repeat(40_000));
    cases.push(("head_over_32kb_without_end", big.into_bytes()));
    cases
}

fn post(addr: SocketAddr, target: &str) -> Result<Response, String> {
    let mut c = Client::try_connect(addr).map_err(|e| e.to_string())?;
    c.try_send(format!("POST {target} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    c.try_response(false).map_err(|e| e.to_string())
}

#[test]
fn malformed_responses_are_502_and_their_connection_is_not_reused() {
    let cases = response_cases();
    let bad: HashMap<String, Vec<u8>> =
        cases.iter().enumerate().map(|(i, (_, r))| (format!("/bad/{i}"), r.clone())).collect();
    let primary = Upstream::with(move |s| Action::Reply(bad.get(s.target()).cloned().unwrap_or(reply(200, b"ok"))));
    let backup = Upstream::named("backup");
    // One worker, so one pool: a bad connection put back would be the next one taken.
    let proxy = Proxy::builder(&primary.url(), &backup.url()).set("--workers", "1").start();
    let conn_of = |target: &str| primary.requests().iter().find(|s| s.target() == target).map(|s| s.conn);
    for target in ["/pool/a", "/pool/b"] {
        assert_eq!(post(proxy.addr, target).map(|r| r.status), Ok(200), "{target}");
        thread::sleep(ms(50));
    }
    assert_eq!(conn_of("/pool/a"), conn_of("/pool/b"), "setup: this proxy must pool upstream connections");

    let mut failures = Vec::new();
    for (i, (name, _)) in cases.iter().enumerate() {
        let (bad, ok) = (format!("/bad/{i}"), format!("/ok/{i}"));
        match post(proxy.addr, &bad) {
            Ok(r) if r.status == 502 => {}
            Ok(r) => failures.push(format!("{name}: want 502, got {}", show(&r.raw))),
            Err(e) => failures.push(format!("{name}: no response: {e}")),
        }
        match post(proxy.addr, &ok) {
            Ok(r) if r.status == 200 && r.text() == "ok" => {}
            other => failures.push(format!("{name}: the next request failed: {other:?}")),
        }
        if conn_of(&bad).is_some() && conn_of(&bad) == conn_of(&ok) {
            failures.push(format!("{name}: the connection that carried the bad response was reused"));
        }
        thread::sleep(ms(20));
    }
    assert_eq!(backup.request_count(), 0, "a POST is never retried on the backup");
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn bytes_after_a_complete_response_are_never_served_as_the_next_one() {
    let smuggled =
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled";
    let primary = Upstream::with(move |s| {
        Action::Reply(if s.target() == "/first" { smuggled.to_vec() } else { reply(200, b"fresh") })
    });
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).set("--workers", "1").start();
    let mut c = Client::connect(proxy.addr);
    c.send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().text(), "ok");
    c.send(b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().text(), "fresh", "the second request got the upstream's extra bytes");
    assert_eq!(get(proxy.addr, "/third").text(), "fresh");
}

// ---------------------------------------------------- known proxy bugs ----

// Each test below asserts the correct behaviour for one case the proxy gets wrong today.

#[test]
fn chunk_size_with_junk_after_whitespace_is_refused() {
    // RFC 9112 7.1: only BWS ";" may follow chunk-size. A next hop that reads "5 5" as 0x55,
    // or as 5 and the rest as data, frames the body differently from the proxy.
    let primary = Recorder::start();
    let (proxy, _backup) = proxy_for(&format!("http://{}", primary.addr));
    let mut c = Client::connect(proxy.addr);
    c.send(b"POST /junk HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 5\r\nhello\r\n0\r\n\r\n");
    c.set_read_timeout(Duration::from_secs(2));
    let status = c.try_response(false).map(|r| r.status).map_err(|e| e.to_string());
    let seen = primary.seen("/junk");
    let body = seen.as_ref().and_then(RawConn::body).unwrap_or_default();
    assert!(
        status == Ok(400) && !body.starts_with(b"5 5"),
        "want 400 and nothing past \"5\" forwarded; got {status:?}, upstream body {}",
        show(body)
    );
}

#[test]
fn absolute_form_query_without_path_keeps_the_query() {
    // RFC 3986 3.2: the authority ends at the first '/', '?' or '#'; "http://a?x=/y" is
    // path "" (sent as "/") and query "x=/y".
    let primary = Upstream::echo_target();
    let (proxy, _backup) = proxy_for(&primary.url());
    let resp = exchange(proxy.addr, b"GET http://a?x=/y HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((resp.status, resp.text().as_str()), (200, "/?x=/y"), "target the upstream saw");
}

#[test]
fn absolute_form_authority_wins_over_host() {
    // RFC 9112 3.2.2: a proxy MUST ignore the received Host and generate one from the
    // absolute-form target (or refuse the request); the upstream must not see Host: a.
    let primary = Upstream::named("primary");
    let (proxy, _backup) = proxy_for(&primary.url());
    let resp = exchange(proxy.addr, b"GET http://other.example/x HTTP/1.1\r\nHost: a\r\n\r\n");
    let host = primary.requests().first().and_then(|s| s.header("host").map(str::to_string));
    assert!(
        resp.status == 400 || host.as_deref() == Some("other.example"),
        "got {}, upstream Host {host:?}",
        resp.status
    );
}

#[test]
fn fragment_in_request_target_is_refused() {
    // Next hops disagree on "/a#b": some cut the fragment, some keep it in the path (the
    // path-rule bypass of CVE-2023-45539 in HAProxy).
    let primary = Upstream::echo_target();
    let (proxy, _backup) = proxy_for(&primary.url());
    let resp = exchange(proxy.addr, b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(resp.status, 400, "upstream saw {:?}", primary.requests().first().map(|s| s.target().to_string()));
}

#[test]
fn connection_option_cannot_remove_x_forwarded_for() {
    let primary = Upstream::named("primary");
    let (proxy, _backup) = proxy_for(&primary.url());
    let resp = exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\nConnection: X-Forwarded-For\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let seen = &primary.requests()[0];
    let xff = seen.head.get_all("x-forwarded-for").join(", ");
    assert!(xff.ends_with("127.0.0.1"), "the upstream must learn the client address: {}", show(&seen.raw_head));
}
