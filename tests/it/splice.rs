//! Large response bodies between plain-TCP sockets go through a kernel pipe (`splice`)
//! instead of user space. What a client sees must not change: every byte, in order, the
//! connection kept or closed as before, the upstream connection reused. Each test runs
//! with splicing (the default) and with `--no-splice` (the copy path), and expects the same.

use crate::common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

/// `n` bytes that differ from any shifted copy of themselves: a lost, doubled or
/// reordered range shows.
pub(crate) fn body(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Answers `/N` with N bytes of `body(N, N)`, with Content-Length, keeping the connection.
fn sized_upstream() -> Upstream {
    Upstream::with(|s| {
        let n: usize = s.target().trim_start_matches('/').parse().unwrap_or(0);
        Action::Reply(reply(200, &body(n, n as u32)))
    })
}

pub(crate) fn proxies(primary: &Upstream, backup: &Upstream) -> Vec<(&'static str, Proxy)> {
    proxies_with(&primary.url(), &backup.url(), |b| b)
}

/// One proxy that splices (the default) and one with `--no-splice`, one worker each, with
/// `more` settings on both.
pub(crate) fn proxies_with(
    primary: &str,
    backup: &str,
    more: impl Fn(ProxyBuilder) -> ProxyBuilder,
) -> Vec<(&'static str, Proxy)> {
    ["splice", "copy"]
        .into_iter()
        .map(|how| {
            let b = more(Proxy::builder(primary, backup).set("--workers", "1"));
            (how, if how == "copy" { b.flag("--no-splice") } else { b }.start())
        })
        .collect()
}

/// A new connection to `addr` (10 s read timeout) that has sent `request`.
pub(crate) fn asked(addr: std::net::SocketAddr, request: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    s
}

pub(crate) fn get_req(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes()
}

/// A request to /up with `body`, framed by Content-Length.
fn upload(method: &str, body: &[u8]) -> Vec<u8> {
    let mut req =
        format!("{method} /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    req.extend_from_slice(body);
    req
}

#[test]
fn bodies_of_every_size_arrive_whole_over_one_connection_each_side() {
    let primary = sized_upstream();
    let backup = Upstream::named("backup");
    // Large ones first (the proxy learns to read heads in small bites), then sizes around
    // every threshold: the bite, the smallest spliced body, a full buffer.
    let sizes = [
        3_000_000, 1_048_576, 70_000, 65_536, 40_000, 32_768, 32_767, 20_000, 16_384, 16_383, 12_000, 4_096, 4_000,
        100, 0, 2_000_001, 5_000,
    ];
    for (how, proxy) in proxies(&primary, &backup) {
        let before = primary.traffic_connections();
        let mut c = Client::connect(proxy.addr);
        for round in 0..2 {
            for &n in &sizes {
                c.send(&get_req(&format!("/{n}")));
                let resp = c.response();
                assert_eq!(resp.status, 200, "{how}: /{n}, round {round}");
                assert_eq!(resp.header("content-length"), Some(n.to_string().as_str()), "{how}: /{n}");
                assert!(resp.body == body(n, n as u32), "{how}: /{n}, round {round}: body differs");
            }
        }
        assert_eq!(
            primary.traffic_connections() - before,
            1,
            "{how}: every response went whole, so one upstream connection carried them all"
        );
        // The metrics say which way the bytes went: most of these 12 MB through pipes, or
        // none with --no-splice.
        assert_spliced(how, &proxy, "response", 10_000_000);
    }
}

/// The metrics say which way a body went: more than `over` bytes through pipes with
/// splicing, none with `--no-splice` (`how` is "splice" or "copy", as from [`proxies`]).
pub(crate) fn assert_spliced(how: &str, proxy: &Proxy, direction: &str, over: u64) {
    let spliced = spliced_bytes(proxy, direction);
    if how == "copy" {
        assert_eq!(spliced, 0, "{how}: {direction} bytes spliced");
    } else {
        assert!(spliced > over, "{how}: {spliced} {direction} bytes spliced, {over} expected at least");
    }
}

/// `failover_spliced_bytes_total{direction=...}` from the proxy's metrics.
pub(crate) fn spliced_bytes(proxy: &Proxy, direction: &str) -> u64 {
    let text = get(proxy.addr, "/__failover/metrics").text();
    let key = format!("failover_spliced_bytes_total{{direction=\"{direction}\"}} ");
    let line = text.lines().find(|l| l.starts_with(&key)).unwrap_or_else(|| panic!("no {key} in:\n{text}"));
    line[key.len()..].trim().parse().unwrap_or_else(|_| panic!("{line}"))
}

#[test]
fn pipelined_requests_after_a_large_body_are_answered_in_order() {
    let primary = sized_upstream();
    let backup = Upstream::named("backup");
    for (how, proxy) in proxies(&primary, &backup) {
        let mut c = Client::connect(proxy.addr);
        let mut all = Vec::new();
        for n in [500_000, 10, 200_000, 33_000] {
            all.extend_from_slice(&get_req(&format!("/{n}")));
        }
        c.send(&all);
        for n in [500_000, 10, 200_000, 33_000] {
            let resp = c.response();
            assert_eq!(resp.status, 200, "{how}: /{n}");
            assert!(resp.body == body(n, n as u32), "{how}: /{n}: body differs");
        }
    }
}

#[test]
fn a_slow_reader_gets_every_byte() {
    let primary = sized_upstream();
    let backup = Upstream::named("backup");
    let n = 4_000_000;
    for (how, proxy) in proxies(&primary, &backup) {
        let mut s = asked(proxy.addr, &get_req(&format!("/{n}")));
        // Reads 64 KB at a time with pauses: the proxy's side fills, the pipe holds what
        // the client's socket cannot take, and the upstream is read only as it drains.
        let mut got = Vec::new();
        let mut b = vec![0u8; 64 * 1024];
        let want_total = {
            let head_len = loop {
                let k = read_retrying(&mut s, &mut b).unwrap();
                assert!(k > 0, "{how}: closed before the head");
                got.extend_from_slice(&b[..k]);
                if let Some(i) = find(&got, b"\r\n\r\n") {
                    break i + 4;
                }
            };
            head_len + n
        };
        while got.len() < want_total {
            thread::sleep(ms(3));
            let k = read_retrying(&mut s, &mut b).unwrap();
            assert!(k > 0, "{how}: closed after {} of {want_total} bytes", got.len());
            got.extend_from_slice(&b[..k]);
        }
        assert_eq!(got.len(), want_total, "{how}: no byte more than the response");
        assert!(got[want_total - n..] == body(n, n as u32), "{how}: body differs");
        // The connection stays usable.
        let mut c = Wire::new(s);
        c.stream.write_all(&get_req("/7")).unwrap();
        let resp = read_response(&mut c, false).unwrap();
        assert_eq!(resp.body, body(7, 7), "{how}");
    }
}

#[test]
fn an_upstream_that_closes_inside_a_large_body_closes_the_client_connection() {
    // The head promises 2 MB; 600 KB come, then the upstream closes. The client gets those
    // bytes and then the close: a truncated body is never completed or passed as whole.
    let sent = body(600_000, 3);
    let mut answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n".to_vec();
    answer.extend_from_slice(&sent);
    let primary = Upstream::with(move |s| {
        if s.target() == "/short" {
            Action::ReplyThenClose(answer.clone())
        } else {
            Action::Reply(reply(200, b"fine"))
        }
    });
    let backup = Upstream::named("backup");
    for (how, proxy) in proxies(&primary, &backup) {
        let s = asked(proxy.addr, &get_req("/short"));
        let mut w = Wire::new(s);
        let head = w.read_head().unwrap().expect("a head");
        assert!(head.starts_with(b"HTTP/1.1 200"), "{how}: {}", show(&head));
        let rest = w.read_to_end().unwrap_or_default();
        assert_eq!(rest.len(), sent.len(), "{how}: the bytes that came, and then the close");
        assert!(rest == sent, "{how}: body differs");
        assert_eq!(get(proxy.addr, "/next").text(), "fine", "{how}: the proxy serves on");
    }
}

/// Caps the socket's receive buffer at 64 KB (loopback would grow it to megabytes), so
/// that a client that reads slowly makes the proxy hold bytes.
fn small_receive_buffer(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 64 * 1024;
    // SAFETY: setsockopt on a socket we own, with a pointer to a c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_RCVBUF: {}", std::io::Error::last_os_error());
}

#[test]
fn a_slow_client_gets_every_byte_that_came_before_the_upstream_closed_inside_the_body() {
    // 8 MB of a promised 20 MB come, then the close, while the client is not reading: the
    // bytes back up into the proxy (its pipe, with splicing) before the close is seen.
    // They still reach the client, and then the close.
    let sent = body(8_000_000, 4);
    let mut answer = b"HTTP/1.1 200 OK\r\nContent-Length: 20000000\r\n\r\n".to_vec();
    answer.extend_from_slice(&sent);
    let primary = Upstream::with(move |_| Action::ReplyThenClose(answer.clone()));
    let backup = Upstream::named("backup");
    for (how, proxy) in proxies(&primary, &backup) {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        small_receive_buffer(&s);
        s.write_all(&get_req("/short")).unwrap();
        thread::sleep(ms(300));
        // Then reads 32 KB at a time with pauses: the client's socket stays full.
        let mut all = Vec::new();
        let mut b = vec![0u8; 32 * 1024];
        loop {
            thread::sleep(ms(1));
            match read_retrying(&mut s, &mut b) {
                Ok(0) => break,
                Ok(k) => all.extend_from_slice(&b[..k]),
                Err(e) => panic!("{how}: {e} after {} bytes", all.len()),
            }
        }
        assert!(all.starts_with(b"HTTP/1.1 200"), "{how}");
        let rest = &all[find(&all, b"\r\n\r\n").expect("a head") + 4..];
        assert_eq!(rest.len(), sent.len(), "{how}: the bytes that came, and then the close");
        assert!(rest == sent.as_slice(), "{how}: body differs");
    }
}

#[test]
fn a_body_that_ends_with_the_close_arrives_whole_and_then_the_close() {
    let sent = body(1_500_000, 9);
    let mut answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    answer.extend_from_slice(&sent);
    let primary = Upstream::with(move |_| Action::ReplyThenClose(answer.clone()));
    let backup = Upstream::named("backup");
    for (how, proxy) in proxies(&primary, &backup) {
        let mut s = asked(proxy.addr, &get_req("/stream"));
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let at = find(&all, b"\r\n\r\n").expect("a head") + 4;
        assert!(all.starts_with(b"HTTP/1.1 200"), "{how}");
        assert!(all[at..] == sent[..], "{how}: {} of {} bytes", all.len() - at, sent.len());
    }
}

#[test]
fn clients_that_leave_inside_large_bodies_leave_no_pipe_or_socket_open() {
    let primary = sized_upstream();
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).set("--workers", "1").start();
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", proxy.pid())).map(|d| d.count()).unwrap_or(usize::MAX);
    assert_eq!(get(proxy.addr, "/100000").body, body(100_000, 100_000));
    let before = fds();
    // Each client reads the start of a 5 MB body and goes away with bytes unread (a
    // reset): the pipe that held its bytes in flight and its upstream connection are
    // closed, not kept or leaked. 150 leaks would be 450 descriptors.
    for _ in 0..150 {
        let mut s = asked(proxy.addr, &get_req("/5000000"));
        let mut got = 0;
        let mut b = [0u8; 16 * 1024];
        while got < 100_000 {
            let k = read_retrying(&mut s, &mut b).unwrap();
            assert!(k > 0, "closed after {got} bytes");
            got += k;
        }
    }
    assert_eq!(get(proxy.addr, "/300000").body, body(300_000, 300_000), "the proxy serves on");
    let settled = wait_until(Duration::from_secs(10), || fds() <= before + 30);
    assert!(settled, "descriptors: {before} before, {} after 150 abandoned downloads", fds());
}

/// Answers a POST or PUT with the length of the body it read and a position-weighted sum
/// of its bytes: the test sees whether the body arrived whole and in order.
fn counting_upstream() -> Upstream {
    Upstream::with(|s| Action::Reply(reply(200, digest(&s.body).as_bytes())))
}

pub(crate) fn digest(b: &[u8]) -> String {
    let sum: u64 = b.iter().enumerate().map(|(i, &x)| (i as u64 % 65_521 + 1) * x as u64).sum();
    format!("{} {sum}", b.len())
}

#[test]
fn large_uploads_arrive_whole_and_the_connections_carry_on() {
    // POST is never re-sent, so past the first bytes its body may be spliced; PUT is
    // replayable and is kept for a retry up to the retry buffer (1 MB), then spliced.
    let primary = counting_upstream();
    let backup = Upstream::named("backup");
    for (how, proxy) in proxies(&primary, &backup) {
        let mut c = Client::connect(proxy.addr);
        for (method, n) in
            [("POST", 5_000_000), ("PUT", 3_000_000), ("POST", 40_000), ("POST", 16_384), ("PUT", 500_000)]
        {
            let b = body(n, n as u32 + 1);
            c.send(&upload(method, &b));
            let resp = c.response();
            assert_eq!((resp.status, resp.text()), (200, digest(&b)), "{how}: {method} of {n} bytes");
        }
        // And a GET after them on the same connection.
        c.send(format!("GET /after HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes());
        assert_eq!(c.response().text(), digest(b""), "{how}");
        // POST 5 MB past its first bytes, PUT 3 MB past the 1 MB retry buffer.
        assert_spliced(how, &proxy, "request", 6_000_000);
    }
}

#[test]
fn a_client_that_stops_inside_a_large_upload_sends_no_complete_request_upstream() {
    let primary = counting_upstream();
    let backup = Upstream::named("backup");
    for (how, proxy) in proxies(&primary, &backup) {
        let before = primary.request_count();
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        let n = 4_000_000;
        s.write_all(format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {n}\r\n\r\n").as_bytes()).unwrap();
        s.write_all(&body(2_000_000, 5)).unwrap();
        drop(s);
        thread::sleep(ms(300));
        // The upstream got a head and part of a body, then the close: never a request it
        // could take as whole.
        assert_eq!(primary.request_count(), before, "{how}");
        let b = body(100_000, 6);
        assert_eq!(exchange(proxy.addr, &upload("POST", &b)).text(), digest(&b), "{how}: the proxy serves on");
    }
}

#[test]
fn where_the_kernel_forbids_splice_bodies_are_copied_whole() {
    // A strict seccomp profile (a container's, a systemd unit's) may refuse splice(2) with
    // EPERM. The first refusal turns splicing off and that body goes the copy way: no
    // download or upload is cut.
    let primary = Upstream::with(|s| {
        if s.method() == "POST" {
            Action::Reply(reply(200, digest(&s.body).as_bytes()))
        } else {
            let n: usize = s.target().trim_start_matches('/').parse().unwrap_or(0);
            Action::Reply(reply(200, &body(n, n as u32)))
        }
    });
    let backup = Upstream::named("backup");
    // Each way first: the first refusal may come on a response body or on a request body.
    for upload_first in [false, true] {
        let proxy =
            Proxy::builder(&primary.url(), &backup.url()).set("--workers", "1").deny_syscall(libc::SYS_splice).start();
        let mut c = Client::connect(proxy.addr);
        for step in 0..2 {
            if (step == 0) == upload_first {
                let b = body(1_000_000, 8);
                c.send(&upload("POST", &b));
                assert_eq!(c.response().text(), digest(&b), "upload first: {upload_first}");
            } else {
                for n in [3_000_000, 70_000] {
                    c.send(&get_req(&format!("/{n}")));
                    let resp = c.response();
                    assert!(resp.status == 200 && resp.body == body(n, n as u32), "/{n}: {} bytes", resp.body.len());
                }
            }
        }
        assert!(proxy.wait_for_log("splice: refused", Duration::from_secs(2)), "{}", proxy.log());
    }
}
