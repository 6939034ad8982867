//! Zero-error failover (issue 3) as a client sees it: a request the primary
//! cannot answer is re-sent to the backup when that is safe (connect
//! failures always; after sending, replayable methods or an
//! `Idempotency-Key` with a body that fits --retry-buffer), the backup gets
//! the same bytes, requests waiting on the primary are rescued when traffic
//! switches, --min-backup-time holds traffic on the backup, live failures
//! feed the health counters, and "both down" is a 503 with Retry-After.

use crate::common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Generous bound on a switch with `fast_checks` (2 x 100ms + 100ms).
const SWITCH_LIMIT: Duration = Duration::from_secs(3);

/// One worker, and a fail threshold no test reaches: what a client sees
/// comes from the per-request retry alone, never from a health flip.
fn steady(primary: &str, backup: &str) -> ProxyBuilder {
    Proxy::builder(primary, backup).set("--workers", "1").steady()
}

/// `n` bytes of every value, so a shifted or truncated replay shows.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// A request with `headers` (each line ending in CRLF) and, when `body` is
/// not empty, a Content-Length.
fn request(method: &str, path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let length = if body.is_empty() { String::new() } else { format!("Content-Length: {}\r\n", body.len()) };
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n{headers}{length}\r\n").into_bytes();
    out.extend_from_slice(body);
    out
}

/// Echoes what it got: `METHOD target len=N` with status `status`.
fn recorder(status: u16) -> Upstream {
    Upstream::with(move |s| {
        Action::Reply(reply(status, format!("backup {} {} len={}", s.method(), s.target(), s.body.len()).as_bytes()))
    })
}

/// Answers `GET /NNN` (or any method) with status NNN and `primary says NNN`.
fn status_by_path() -> Upstream {
    Upstream::with(|s| {
        let status: u16 = s.target().trim_start_matches('/').parse().unwrap_or(200);
        Action::Reply(reply(status, format!("primary says {status}").as_bytes()))
    })
}

fn assert_skipped(resp: &Response, status: u16, why: &str) {
    assert_eq!(resp.status, status, "{}", show(&resp.raw));
    assert_eq!(resp.header("x-failover-retry"), Some(why), "want X-Failover-Retry: {why}: {}", show(&resp.raw));
}

fn assert_from_backup(resp: &Response, what: &str) {
    assert_eq!(resp.status, 200, "{what}: {}", show(&resp.raw));
    assert!(resp.text().starts_with("backup"), "{what} must be answered by the backup: {}", show(&resp.raw));
    assert!(resp.header("x-failover-retry").is_none(), "{what}: a retried request has no skip header");
}

/// Sends `raw` and reads until the proxy closes (or 5s pass): every byte.
fn raw_until_close(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect to the proxy");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.write_all(raw).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// An upstream that reads only the first bytes of each request and closes
/// with the rest unread, so the kernel resets the connection: the primary
/// "crashes" after the request reached it. Probes are answered 200.
struct Resetter {
    addr: SocketAddr,
    resets: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Resetter {
    fn start() -> Resetter {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind resetter");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("resetter addr");
        let resets = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (resets2, stop2) = (resets.clone(), stop.clone());
        thread::spawn(move || {
            while !stop2.load(SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let resets = resets2.clone();
                        thread::spawn(move || reset_one(s, &resets));
                    }
                    Err(_) => thread::sleep(ms(2)),
                }
            }
        });
        Resetter { addr, resets, stop }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn resets(&self) -> usize {
        self.resets.load(SeqCst)
    }
}

impl Drop for Resetter {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

fn reset_one(mut s: TcpStream, resets: &AtomicUsize) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let probe = format!("GET {PROBE_PATH}");
    let mut first = vec![0u8; probe.len()];
    if s.read_exact(&mut first).is_err() {
        return;
    }
    if first == probe.as_bytes() {
        let mut wire = Wire::new(s);
        if let Ok(Some(_)) = wire.read_head() {
            let _ = wire.stream.write_all(&reply(200, b"ok"));
        }
        return;
    }
    // Let the rest of the request arrive, then close over it: RST.
    thread::sleep(ms(30));
    resets.fetch_add(1, SeqCst);
}

// ------------------------------------------------------ connect failure ----

#[test]
fn connect_refused_primary_get_is_answered_by_backup() {
    let backup = recorder(200);
    let proxy = steady(&format!("http://{}", dead_addr()), &backup.url()).start();
    for i in 0..3 {
        let resp = get(proxy.addr, &format!("/x?i={i}"));
        assert_from_backup(&resp, &format!("GET {i}"));
        assert_eq!(resp.text(), format!("backup GET /x?i={i} len=0"));
    }
    assert_eq!(backup.request_count(), 3);
    let state = proxy.state();
    assert!(!state.bool_field("on_backup"), "the threshold was not reached, only requests moved: {state:?}");
    assert!(!state.str_field("primary_last_error").is_empty(), "primary_last_error must say why: {state:?}");
    assert_eq!(state.str_field("backup_last_error"), "", "{state:?}");
}

#[test]
fn connect_refused_primary_post_reaches_backup_with_body_intact() {
    let backup = recorder(201);
    // Nothing reached the primary: --retry-buffer does not apply.
    let proxy = steady(&format!("http://{}", dead_addr()), &backup.url()).set("--retry-buffer", "1KB").start();
    let body = pattern(100_000);
    let resp = exchange(
        proxy.addr,
        &request("POST", "/orders", "X-Trace: 7\r\nContent-Type: application/octet-stream\r\n", &body),
    );
    assert_eq!(resp.status, 201, "a POST that never reached the primary goes to the backup: {}", show(&resp.raw));
    assert_eq!(resp.text(), "backup POST /orders len=100000");
    let chunked = b"POST /chunked HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n";
    let resp = exchange(proxy.addr, chunked);
    assert_eq!(resp.status, 201, "{}", show(&resp.raw));

    let seen = backup.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method(), "POST");
    assert_eq!(seen[0].header("x-trace"), Some("7"));
    assert_eq!(seen[0].body, body, "the backup must get the body byte for byte");
    // The same chunks and trailer, each size line written afresh (the extension dropped).
    assert_eq!(show(&seen[1].raw_body), show(b"5\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"));
}

// ------------------------------------------------ failure after sending ----

#[test]
fn reset_after_send_get_is_retried_on_backup() {
    let primary = Resetter::start();
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).start();
    let resp = exchange(proxy.addr, &request("GET", "/r?q=1", "X-Trace: 1\r\n", b""));
    assert_from_backup(&resp, "GET after a reset");
    assert_eq!(primary.resets(), 1, "the request must have reached the primary first");
    let seen = backup.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target(), "/r?q=1");
    assert_eq!(seen[0].header("x-trace"), Some("1"));
}

#[test]
fn reset_after_send_post_is_not_retried() {
    let primary = Resetter::start();
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).start();
    let resp = exchange(proxy.addr, &request("POST", "/pay", "", b"amount=10"));
    assert_skipped(&resp, 502, "skipped-method");
    assert_eq!(primary.resets(), 1);
    assert_eq!(backup.request_count(), 0, "a POST that may have reached the primary must not be replayed");
}

#[test]
fn reset_after_send_post_with_idempotency_key_is_retried() {
    let primary = Resetter::start();
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).start();
    let body = pattern(5000);
    let resp = exchange(proxy.addr, &request("POST", "/pay", "Idempotency-Key: k-123\r\n", &body));
    assert_from_backup(&resp, "POST with Idempotency-Key");
    let seen = backup.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method(), "POST");
    assert_eq!(seen[0].header("idempotency-key"), Some("k-123"));
    assert_eq!(seen[0].body, body);
}

/// Sends the first half of `raw`, waits 200ms, sends the rest; the response.
fn send_in_halves(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut c = Client::connect(addr);
    let (first, rest) = raw.split_at(raw.len() / 2);
    c.send(first);
    thread::sleep(ms(200));
    c.send(rest);
    c.response()
}

#[test]
fn reset_in_the_middle_of_a_large_body_replays_all_of_it() {
    let primary = Resetter::start();
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).start();
    // Several pool buffers' worth, under the default --retry-buffer=1MB, sent
    // in two halves: the primary resets between them, so the backup gets the
    // kept first half, then the rest as it arrives.
    let body = pattern(800_000);
    let resp = send_in_halves(proxy.addr, &request("PUT", "/upload", "", &body));
    assert_eq!(resp.text(), "backup PUT /upload len=800000", "{}", show(&resp.raw));
    assert!(backup.requests()[0].body == body, "the replayed body differs from the one sent");

    let mut chunked =
        format!("PUT /chunks HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    let mut raw_body = Vec::new();
    for piece in body.chunks(7000) {
        raw_body.extend(format!("{:x}\r\n", piece.len()).into_bytes());
        raw_body.extend_from_slice(piece);
        raw_body.extend_from_slice(b"\r\n");
    }
    raw_body.extend_from_slice(b"0\r\n\r\n");
    chunked.extend_from_slice(&raw_body);
    let resp = send_in_halves(proxy.addr, &chunked);
    assert_eq!(resp.text(), "backup PUT /chunks len=800000", "{}", show(&resp.raw));
    assert!(backup.requests()[1].raw_body == raw_body, "the replayed chunked body differs from the one sent");
    assert_eq!(primary.resets(), 2);
}

#[test]
fn reset_in_the_middle_of_a_body_over_retry_buffer_is_502() {
    let primary = Resetter::start();
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).set("--retry-buffer", "64KB").start();
    let mut c = Client::connect(proxy.addr);
    // The proxy may answer and stop reading before the client is done.
    let _ = c.try_send(&request("PUT", "/upload", "", &pattern(800_000)));
    let resp = c.response();
    assert_skipped(&resp, 502, "skipped-body-too-large");
    assert_eq!(backup.request_count(), 0);
}

#[test]
fn closed_after_send_replayable_methods_reach_backup_with_identical_bytes() {
    let primary = Upstream::closes_after_head();
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).start();
    let headers = "X-Repeat: a\r\nX-Repeat: b\r\nx-lower-case: v\r\nAccept: */*\r\n";
    let cases: [(&str, Vec<u8>); 6] = [
        ("GET", Vec::new()),
        ("HEAD", Vec::new()),
        ("OPTIONS", Vec::new()),
        ("PUT", pattern(300_000)),
        ("DELETE", Vec::new()),
        ("TRACE", Vec::new()),
    ];
    for (i, (method, body)) in cases.iter().enumerate() {
        let mut c = Client::connect(proxy.addr);
        c.send(&request(method, &format!("/m/{i}"), headers, body));
        let resp = if *method == "HEAD" { c.head_response() } else { c.response() };
        assert_eq!(resp.status, 200, "{method}: {}", show(&resp.raw));
        assert!(resp.header("x-failover-retry").is_none(), "{method}: {}", show(&resp.raw));
        if *method != "HEAD" {
            assert!(resp.text().starts_with("backup"), "{method}: {}", show(&resp.raw));
        }
    }
    let (sent, got) = (primary.requests(), backup.requests());
    assert_eq!(got.len(), cases.len(), "every replayable method goes to the backup");
    for ((method, body), (p, b)) in cases.iter().zip(sent.iter().zip(got.iter())) {
        assert_eq!(show(&b.raw_head), show(&p.raw_head), "{method}: the backup must get the head the primary got");
        assert!(b.raw_body == p.raw_body && b.body == *body, "{method}: the body changed on the way to the backup");
    }
}

#[test]
fn closed_after_send_non_idempotent_methods_are_not_retried() {
    let primary = Upstream::closes_after_head();
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).start();
    for method in ["POST", "PATCH"] {
        let resp = exchange(proxy.addr, &request(method, "/thing", "", b"{\"a\":1}"));
        assert_skipped(&resp, 502, "skipped-method");
    }
    assert_eq!(primary.request_count(), 2);
    assert_eq!(backup.request_count(), 0);
}

#[test]
fn invalid_response_head_get_is_retried_post_is_not() {
    let primary = Upstream::garbage();
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).start();
    let resp = get(proxy.addr, "/g");
    assert_from_backup(&resp, "GET after garbage");
    let resp = exchange(proxy.addr, &request("POST", "/g", "", b"x"));
    assert_skipped(&resp, 502, "skipped-method");
    assert!(find(&resp.raw, b"SSH-2.0").is_none(), "upstream garbage leaked: {}", show(&resp.raw));
    assert_eq!(backup.request_count(), 1);
}

#[test]
fn response_timeout_get_is_retried_post_gets_504() {
    let primary = Upstream::black_hole();
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).set("--upstream-timeout", "500ms").start();
    let start = Instant::now();
    let resp = get(proxy.addr, "/slow");
    let took = start.elapsed();
    assert_from_backup(&resp, "GET after a timeout");
    assert!(took >= ms(400) && took < Duration::from_secs(3), "answered after {took:?}; want about 500ms");

    let start = Instant::now();
    let resp = exchange(proxy.addr, &request("POST", "/slow", "", b"x"));
    let took = start.elapsed();
    assert_skipped(&resp, 504, "skipped-method");
    assert!(took >= ms(400) && took < Duration::from_secs(3), "504 after {took:?}; want about 500ms");
    assert_eq!(primary.request_count(), 2);
    assert_eq!(backup.request_count(), 1);
}

#[test]
fn nothing_is_replayed_after_the_first_response_byte() {
    let primary =
        Upstream::with(|_| Action::ReplyThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial".to_vec()));
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).start();
    let got = raw_until_close(proxy.addr, &request("GET", "/half", "", b""));
    assert!(got.starts_with(b"HTTP/1.1 200"), "the primary's head was already relayed: {}", show(&got));
    assert!(find(&got, b"partial").is_some(), "{}", show(&got));
    assert!(find(&got, b"backup").is_none(), "a second response after the first: {}", show(&got));
    assert_eq!(backup.request_count(), 0, "nothing may be replayed once the client got a byte");
}

// ------------------------------------------------------- retry statuses ----

#[test]
fn retry_status_moves_get_to_backup_and_passes_post_through() {
    let primary = status_by_path();
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).start();
    for status in [502, 503, 504] {
        let resp = get(proxy.addr, &format!("/{status}"));
        assert_from_backup(&resp, &format!("GET answered {status} by the primary"));
    }
    for status in [404, 500] {
        let resp = get(proxy.addr, &format!("/{status}"));
        assert_eq!(resp.status, status, "{status} is not a retry status: {}", show(&resp.raw));
        assert_eq!(resp.text(), format!("primary says {status}"));
        assert!(resp.header("x-failover-retry").is_none());
    }
    let resp = exchange(proxy.addr, &request("POST", "/503", "", b"x"));
    assert_skipped(&resp, 503, "skipped-method");
    assert_eq!(resp.text(), "primary says 503", "the primary's own answer, not a made-up one");
    let resp = exchange(proxy.addr, &request("POST", "/503", "Idempotency-Key: 1\r\n", b"x"));
    assert_from_backup(&resp, "POST with Idempotency-Key answered 503 by the primary");
    assert_eq!(backup.request_count(), 4);
}

#[test]
fn retry_on_status_flag_changes_the_set() {
    let primary = status_by_path();
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).set("--retry-on-status", "500").start();
    assert_from_backup(&get(proxy.addr, "/500"), "GET answered 500 with --retry-on-status=500");
    for status in [502, 503] {
        let resp = get(proxy.addr, &format!("/{status}"));
        assert_eq!(resp.status, status, "{status} is no longer a retry status: {}", show(&resp.raw));
        assert_eq!(resp.text(), format!("primary says {status}"));
        assert!(resp.header("x-failover-retry").is_none(), "{}", show(&resp.raw));
    }
    assert_eq!(backup.request_count(), 1);
}

// --------------------------------------------------------- retry buffer ----

#[test]
fn body_over_retry_buffer_is_not_replayed() {
    let primary = Upstream::closes_after_head();
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).set("--retry-buffer", "1KB").start();
    let resp = exchange(proxy.addr, &request("PUT", "/big", "", &pattern(4096)));
    assert_skipped(&resp, 502, "skipped-body-too-large");
    assert_eq!(backup.request_count(), 0);
    for n in [512, 1024] {
        let body = pattern(n);
        let resp = exchange(proxy.addr, &request("PUT", "/small", "", &body));
        assert_from_backup(&resp, &format!("PUT with {n} bytes (fits --retry-buffer=1KB)"));
        assert_eq!(backup.requests().last().map(|s| s.body.clone()), Some(body));
    }
    assert_eq!(primary.request_count(), 3, "every body still went to the primary first");
}

#[test]
fn body_over_retry_buffer_gets_the_primarys_retry_status() {
    let primary = status_by_path();
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).set("--retry-buffer", "1KB").start();
    let resp = exchange(proxy.addr, &request("PUT", "/503", "", &pattern(4096)));
    assert_skipped(&resp, 503, "skipped-body-too-large");
    assert_eq!(resp.text(), "primary says 503");
    assert_from_backup(&exchange(proxy.addr, &request("PUT", "/503", "", &pattern(1000))), "PUT of 1000 bytes");
    assert_eq!(backup.request_count(), 1);
}

// ------------------------------------------------------------- prefixes ----

#[test]
fn backup_gets_its_own_prefix_instead_of_the_primarys() {
    let primary = Upstream::closes_after_head();
    let backup = recorder(200);
    let primary_url = format!("{}/api/v1", primary.url());
    let backup_url = format!("{}/mirror", backup.url());
    let proxy = steady(&primary_url, &backup_url).start();
    let resp = get(proxy.addr, "/users/7?full=1");
    assert_eq!(resp.text(), "backup GET /mirror/users/7?full=1 len=0", "{}", show(&resp.raw));
    let (p, b) = (&primary.requests()[0], &backup.requests()[0]);
    assert_eq!(p.target(), "/api/v1/users/7?full=1");
    let mut want = String::from_utf8_lossy(&p.raw_head).to_string();
    want = want.replacen("/api/v1/users", "/mirror/users", 1);
    assert_eq!(show(&b.raw_head), show(want.as_bytes()), "only the prefix may change");

    // A connect failure takes the same path.
    let dead = format!("http://{}/api/v1", dead_addr());
    let proxy = steady(&dead, &backup_url).start();
    let resp = exchange(proxy.addr, &request("POST", "/orders", "", b"x"));
    assert_eq!(resp.text(), "backup POST /mirror/orders len=1", "{}", show(&resp.raw));
}

// ------------------------------------------------------------- counters ----

#[test]
fn retries_counter_counts_requests_resent_after_a_failure() {
    let primary = Upstream::closes_after_head();
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).start();
    assert_eq!(proxy.state().u64_field("retries"), 0);
    assert_eq!(proxy.state().u64_field("rescues"), 0);
    get(proxy.addr, "/a");
    get(proxy.addr, "/b");
    assert_eq!(proxy.state().u64_field("retries"), 2);
    let resp = exchange(proxy.addr, &request("POST", "/c", "", b"x"));
    assert_eq!(resp.status, 502);
    assert_eq!(proxy.state().u64_field("retries"), 2, "a request not re-sent is not a retry");
    exchange(proxy.addr, &request("POST", "/d", "Idempotency-Key: d\r\n", b"x"));
    assert_eq!(proxy.state().u64_field("retries"), 3);
}

#[test]
fn retries_counter_counts_status_retries() {
    let primary = status_by_path();
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).start();
    assert_from_backup(&get(proxy.addr, "/503"), "GET answered 503 by the primary");
    assert_eq!(backup.request_count(), 1);
    let state = proxy.state();
    assert_eq!(state.u64_field("retries"), 1, "the GET was re-sent to the backup after the primary's 503: {state:?}");
}

// --------------------------------------------------------------- rescue ----

/// Sends `raw` from a thread; the response (or error) and when it came.
fn in_flight(addr: SocketAddr, raw: Vec<u8>) -> thread::JoinHandle<(Result<Response, String>, Instant)> {
    thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.set_read_timeout(Duration::from_secs(10));
        c.send(&raw);
        let r = c.try_response(false).map_err(|e| e.to_string());
        (r, Instant::now())
    })
}

#[test]
fn get_waiting_on_black_hole_primary_is_rescued_by_the_switch() {
    let primary = Upstream::black_hole();
    let backup = recorder(200);
    let proxy = Proxy::builder(&primary.url(), &backup.url())
        .fast_checks()
        .set("--workers", "2")
        .set("--upstream-timeout", "30s")
        .start();
    let pending = in_flight(proxy.addr, request("GET", "/stuck", "", b""));
    assert!(wait_until(SWITCH_LIMIT, || primary.request_count() == 1), "the GET never reached the primary");
    let broke = Instant::now();
    primary.set_probe_hangs(true);
    let (resp, at) = pending.join().expect("client thread");
    let resp = resp.unwrap_or_else(|e| panic!("no answer for the stuck GET: {e}"));
    let took = at - broke;
    assert_from_backup(&resp, "the GET stuck on the primary");
    // 2 x 100ms + 100ms probe timeout to switch; 30s would be the upstream timeout.
    assert!(took < SWITCH_LIMIT, "rescued after {took:?}; want about 300ms");
    eprintln!("rescue took {took:?}");
    let state = proxy.state();
    assert!(state.bool_field("on_backup"), "{state:?}");
    assert!(state.u64_field("rescues") >= 1, "{state:?}");
    assert_eq!(backup.requests()[0].target(), "/stuck");
}

#[test]
fn post_waiting_on_the_primary_is_not_rescued() {
    let primary = Upstream::black_hole();
    let backup = recorder(200);
    let proxy = Proxy::builder(&primary.url(), &backup.url())
        .fast_checks()
        .set("--workers", "1")
        .set("--upstream-timeout", "2s")
        .start();
    let sent = Instant::now();
    let pending = in_flight(proxy.addr, request("POST", "/stuck", "", b"x"));
    assert!(wait_until(SWITCH_LIMIT, || primary.request_count() == 1), "the POST never reached the primary");
    primary.set_probe_hangs(true);
    assert!(wait_until(SWITCH_LIMIT, || proxy.state().bool_field("on_backup")), "never switched");
    let (resp, at) = pending.join().expect("client thread");
    let resp = resp.unwrap_or_else(|e| panic!("no answer for the stuck POST: {e}"));
    assert_skipped(&resp, 504, "skipped-method");
    let took = at - sent;
    assert!(took >= ms(1800), "the POST was answered after {took:?}, before --upstream-timeout=2s");
    assert_eq!(backup.request_count(), 0, "a POST must not be replayed by a rescue");
    assert_eq!(proxy.state().u64_field("rescues"), 0);
}

// ------------------------------------------------------------ hold-down ----

#[test]
fn min_backup_time_holds_traffic_on_the_backup() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url())
        .fast_checks()
        .set("--workers", "1")
        .set("--min-backup-time", "2s")
        .start();
    assert_eq!(who(proxy.addr), "primary");
    primary.set_healthy(false); // probes fail; traffic itself would still work
    wait_for_who(proxy.addr, "backup", SWITCH_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let switched = Instant::now();
    primary.set_healthy(true);

    thread::sleep(ms(1000));
    let state = proxy.state();
    assert!(state.bool_field("primary_healthy"), "10 good probes later the primary is healthy: {state:?}");
    assert!(state.bool_field("on_backup"), "held on the backup: {state:?}");
    wait_for_who(proxy.addr, "primary", Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
    let held = switched.elapsed();
    eprintln!("held on the backup for {held:?} after the switch (--min-backup-time=2s)");
    assert!(held >= ms(1700), "back on the primary {held:?} after the switch, before --min-backup-time=2s");
    assert!(held < Duration::from_secs(5), "held {held:?}, far longer than 2s");
}

// ------------------------------------------------------------ both down ----

#[test]
fn both_down_is_503_with_retry_after_in_text_or_json() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).fast_checks().set("--workers", "1").start();
    primary.stop();
    backup.stop();
    assert!(
        wait_until(SWITCH_LIMIT, || {
            let s = proxy.state();
            !s.bool_field("primary_healthy") && !s.bool_field("backup_healthy")
        }),
        "the state never showed both upstreams unhealthy"
    );
    let state = proxy.state();
    assert!(!state.str_field("primary_last_error").is_empty(), "{state:?}");
    assert!(!state.str_field("backup_last_error").is_empty(), "{state:?}");

    let resp = get(proxy.addr, "/x");
    assert_eq!(resp.status, 503, "{}", show(&resp.raw));
    let retry_after = resp.header("retry-after").unwrap_or_else(|| panic!("no Retry-After: {}", show(&resp.raw)));
    assert!(retry_after.parse::<u32>().is_ok_and(|s| s >= 1), "Retry-After {retry_after:?} is not seconds");
    assert!(resp.header("content-type").unwrap_or("").starts_with("text/plain"), "{}", show(&resp.raw));
    assert!(!resp.body.is_empty() && resp.body.len() < 512, "{}", show(&resp.raw));

    let resp = exchange(proxy.addr, &request("GET", "/x", "Accept: text/html, application/json;q=0.9\r\n", b""));
    assert_eq!(resp.status, 503, "{}", show(&resp.raw));
    assert!(resp.header("retry-after").is_some(), "{}", show(&resp.raw));
    assert!(resp.header("content-type").unwrap_or("").starts_with("application/json"), "{}", show(&resp.raw));
    let json = Json::parse(resp.text().trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {}", show(&resp.raw)));
    assert_eq!(json.str_field("error"), "Service Unavailable");
    assert!(!json.str_field("detail").is_empty(), "{json:?}");
}

// ------------------------------------------------------------- passive ----

/// One worker probing every 10s (each probe bounded by 5s): after the probe
/// at start, only live requests and the probes they trigger can move the
/// health counters within a test.
fn slow_probes(primary: &str, backup: &str, fail_threshold: &str) -> ProxyBuilder {
    Proxy::builder(primary, backup)
        .set("--workers", "1")
        .set("--check-interval", "10s")
        .set("--check-timeout", "5s")
        .set("--fail-threshold", fail_threshold)
}

/// Waits until the probe made at start has been answered.
fn wait_for_first_probe(up: &Upstream) {
    assert!(wait_until(SWITCH_LIMIT, || !up.probes().is_empty()), "the first probe never came");
    thread::sleep(ms(50));
}

#[test]
fn live_connect_failures_count_toward_fail_threshold() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = slow_probes(&primary.url(), &backup.url(), "3").start();
    wait_for_first_probe(&primary);
    primary.stop();
    thread::sleep(ms(300));
    assert!(!proxy.state().bool_field("on_backup"), "switched with no live failure and no failed probe");
    for i in 0..3 {
        assert_eq!(who(proxy.addr), "backup", "request {i}: a refused connect goes to the backup");
    }
    assert!(
        wait_until(ms(1500), || proxy.state().bool_field("on_backup")),
        "3 refused live requests (fail-threshold 3) did not switch: {:?}",
        proxy.state()
    );
}

#[test]
fn live_response_timeouts_do_not_count_toward_fail_threshold() {
    // A slow URL is not a down upstream: timed-out live requests only ask for a probe, and
    // the probes (which pass here) decide.
    let primary = Upstream::black_hole();
    let backup = recorder(200);
    let proxy = slow_probes(&primary.url(), &backup.url(), "2").set("--upstream-timeout", "300ms").start();
    wait_for_first_probe(&primary);
    let probes = primary.probes().len();
    for i in 0..4 {
        assert_from_backup(&get(proxy.addr, &format!("/t{i}")), "GET after a response timeout");
    }
    assert!(
        wait_until(ms(1500), || primary.probes().len() > probes),
        "no confirmation probe after timed-out live requests"
    );
    std::thread::sleep(ms(500));
    let state = proxy.state();
    assert!(!state.bool_field("on_backup"), "4 timed-out live requests switched traffic: {state:?}");
    assert!(state.bool_field("primary_healthy"), "{state:?}");
}

#[test]
fn live_close_triggers_a_confirmation_probe() {
    let primary = Upstream::closes_after_head();
    let backup = recorder(200);
    let proxy = slow_probes(&primary.url(), &backup.url(), "1").start();
    wait_for_first_probe(&primary);
    primary.set_healthy(false);
    let probes = primary.probes().len();
    assert!(!proxy.state().bool_field("on_backup"));
    assert_from_backup(&get(proxy.addr, "/c"), "GET after a close");
    // The next scheduled probe is 10s away; only a confirmation probe can
    // see the 503 this soon.
    assert!(
        wait_until(ms(1500), || proxy.state().bool_field("on_backup")),
        "no confirmation probe after a failed live request: {:?}",
        proxy.state()
    );
    assert!(primary.probes().len() > probes);
}

#[test]
fn suspect_primary_is_probed_at_the_fast_interval() {
    let primary = Upstream::closes_after_head();
    let backup = recorder(200);
    // Fast interval: 4s / 4 = 1s. Three failures: confirmation + 2 fast
    // probes ~2s, against 8s more on the regular schedule.
    let proxy = slow_probes(&primary.url(), &backup.url(), "3").set("--check-interval", "4s").start();
    wait_for_first_probe(&primary);
    primary.set_healthy(false);
    let start = Instant::now();
    assert_from_backup(&get(proxy.addr, "/c"), "GET after a close");
    assert!(wait_until(ms(3500), || proxy.state().bool_field("on_backup")), "{:?}", proxy.state());
    let took = start.elapsed();
    eprintln!("switched {took:?} after the first live failure (fast interval 1s)");
    assert!(took >= ms(1500), "3 failures 1s apart cannot take {took:?}");
}

#[test]
fn suspect_primary_probe_rate_does_not_grow_with_workers() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let _proxy = Proxy::builder(&primary.url(), &backup.url())
        .fast_checks()
        .set("--workers", "4")
        .set("--fail-threshold", "1000")
        .start();
    primary.set_healthy(false);
    thread::sleep(ms(300));
    let before = primary.probes().len();
    thread::sleep(ms(1000));
    let rate = primary.probes().len() - before;
    // Fast interval 100ms / 4 -> 50ms: 20 probes a second, once for the
    // process (probes are shared out among workers). Twice that is allowed
    // for the regular ticks running alongside.
    assert!(rate <= 40, "{rate} probes/s of a suspect primary with 4 workers; want about 20");
    assert!(rate >= 10, "{rate} probes/s: the suspect primary is not probed at the fast interval");
}

// ----------------------------------------------------------- zero error ----

#[test]
fn killing_the_primary_under_load_shows_no_client_an_error() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).fast_checks().set("--workers", "2").start();
    let addr = proxy.addr;
    let load = thread::spawn(move || {
        let start = Instant::now();
        let mut answers = Vec::new();
        while start.elapsed() < ms(1500) {
            answers.push(who(addr));
        }
        answers
    });
    thread::sleep(ms(300));
    primary.stop();
    let answers = load.join().expect("load thread");
    let errors: Vec<&String> = answers.iter().filter(|a| *a != "primary" && *a != "backup").collect();
    assert!(errors.is_empty(), "{} of {} requests failed: {errors:?}", errors.len(), answers.len());
    assert_eq!(answers.last().map(String::as_str), Some("backup"));
    assert!(wait_until(SWITCH_LIMIT, || proxy.state().bool_field("on_backup")));
}

// ---------------------------------------------------------- connections ----

#[test]
fn pipelined_requests_are_all_retried_in_order() {
    let primary = Upstream::closes_after_head();
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).start();
    let mut c = Client::connect(proxy.addr);
    let mut both = request("GET", "/one", "", b"");
    both.extend(request("PUT", "/two", "", b"payload"));
    c.send(&both);
    assert_eq!(c.response().text(), "backup GET /one len=0");
    assert_eq!(c.response().text(), "backup PUT /two len=7");
    // The client connection stays usable after a retry.
    c.send(&request("GET", "/three", "", b""));
    assert_eq!(c.response().text(), "backup GET /three len=0");
    assert_eq!(primary.request_count(), 3, "each request tried the primary first");
}

#[test]
fn expect_continue_body_is_replayed() {
    let primary = Upstream::closes_after_head();
    let backup = recorder(200);
    let proxy = steady(&primary.url(), &backup.url()).start();
    let body = pattern(2000);
    let mut c = Client::connect(proxy.addr);
    c.send(
        format!("PUT /e HTTP/1.1\r\nHost: {HOST}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len())
            .as_bytes(),
    );
    let first = c.response();
    assert_eq!(first.status, 100, "{}", show(&first.raw));
    c.send(&body);
    let mut resp = c.response();
    while resp.status == 100 {
        resp = c.response();
    }
    assert_from_backup(&resp, "PUT with Expect: 100-continue");
    assert_eq!(backup.requests()[0].body, body);
}

#[test]
fn head_error_answers_have_no_body() {
    let proxy = steady(&format!("http://{}", dead_addr()), &format!("http://{}", dead_addr())).start();
    let got = raw_until_close(proxy.addr, &request("HEAD", "/h", "", b""));
    let end = find(&got, b"\r\n\r\n").map(|i| i + 4).unwrap_or(0);
    assert!(got.starts_with(b"HTTP/1.1 502"), "{}", show(&got));
    assert_eq!(show(&got[end..]), show(b""), "a HEAD response carries no body: {}", show(&got));
}
