//! Chunked bodies, both ways: the data of a large chunk goes through a kernel pipe, the
//! framing around it (line ends, size lines, trailers) through user space, where it is
//! checked and written afresh. The other side must see exactly the bytes the copy path
//! gives: every size line canonical, every data byte in order, the trailers, the end.

use crate::common::*;
use crate::splice::{asked, assert_spliced, body, digest, get_req, proxies, proxies_with};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

/// The data of a chunked body with chunks of `sizes`.
fn data(sizes: &[usize]) -> Vec<u8> {
    let total: usize = sizes.iter().sum();
    body(total, total as u32 ^ sizes.len() as u32)
}

/// A chunked body of `sizes`. As an upstream writes it (`canonical` false): upper-case hex,
/// a leading zero and an extension on every other size line, a trailer field that is kept
/// and one that must not be a trailer. As the proxy must pass it on (`canonical` true):
/// lower-case hex, no extension, the second trailer field dropped.
fn chunked(sizes: &[usize], canonical: bool) -> Vec<u8> {
    let d = data(sizes);
    let mut out = Vec::new();
    let mut at = 0;
    for (i, &n) in sizes.iter().enumerate() {
        let line = match (canonical, i % 2) {
            (true, _) => format!("{n:x}\r\n"),
            (false, 0) => format!("0{n:X};part={i}\r\n"),
            (false, _) => format!("{n:X}\r\n"),
        };
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(&d[at..at + n]);
        out.extend_from_slice(b"\r\n");
        at += n;
    }
    out.extend_from_slice(b"0\r\nX-Checksum: abc\r\n");
    if !canonical {
        out.extend_from_slice(b"Content-Length: 1\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The path that asks [`chunked_upstream`] for chunks of `sizes`.
fn chunks_path(sizes: &[usize]) -> String {
    format!("/chunks/{}", sizes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","))
}

/// Asserts that `got` is `want`, byte for byte, saying where they first differ.
fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}: {} bytes, {} expected; first difference at {:?}",
        got.len(),
        want.len(),
        got.iter().zip(want).position(|(a, b)| a != b)
    );
}

/// `/chunks/A,B,C`: a chunked answer with chunks of A, B and C bytes.
fn sizes_of(target: &str) -> Vec<usize> {
    let list = target.trim_start_matches("/chunks/");
    list.split(',').filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect()
}

fn chunked_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()
}

fn chunked_upstream() -> Upstream {
    Upstream::with(|s| {
        let mut answer = chunked_head();
        answer.extend_from_slice(&chunked(&sizes_of(s.target()), false));
        Action::Reply(answer)
    })
}

/// The body part of a raw response, after its head.
fn after_head(raw: &[u8]) -> &[u8] {
    let at = find(raw, b"\r\n\r\n").map_or(raw.len(), |i| i + 4);
    &raw[at..]
}

/// Chunk sizes to send, in this order: large chunks first (the proxy learns to read heads
/// in small bites), then small chunks after large ones (they go back to the copy way),
/// chunks on both sides of the smallest spliced run, many small chunks, and none at all.
fn shapes() -> Vec<Vec<usize>> {
    vec![
        vec![3_000_000],
        vec![65_536; 4],
        vec![100_000, 10, 10, 10, 5_000, 200_000, 16_384, 16_383, 1],
        vec![1_000; 100],
        vec![16_383],
        vec![16_384],
        vec![70_000, 3],
        vec![],
        vec![40_000, 300, 40_000, 300, 40_000],
    ]
}

#[test]
fn chunked_bodies_arrive_with_canonical_framing_over_one_connection_each_side() {
    let primary = chunked_upstream();
    let backup = Upstream::named("backup");
    let shapes = shapes();
    for (how, proxy) in proxies(&primary, &backup) {
        let before = primary.traffic_connections();
        let mut c = Client::connect(proxy.addr);
        for round in 0..2 {
            for sizes in &shapes {
                let path = chunks_path(sizes);
                c.send(&get_req(&path));
                let resp = c.response();
                assert_eq!(resp.status, 200, "{how}: {path}, round {round}");
                assert_eq!(resp.header("transfer-encoding"), Some("chunked"), "{how}: {path}");
                assert_bytes(after_head(&resp.raw), &chunked(sizes, true), &format!("{how}: {path}, round {round}"));
            }
        }
        assert_eq!(primary.traffic_connections() - before, 1, "{how}: one upstream connection carried them all");
        // Most of the 7.2 MB of data sits in chunks of 64 KB and more.
        assert_spliced(how, &proxy, "response", 5_000_000);
    }
}

/// `n` chunks of 100 KB, then small and large ones: more than the sockets between the
/// proxy and a slow peer hold.
fn many_chunks(n: usize) -> Vec<usize> {
    let mut sizes = vec![100_000; n];
    sizes.extend([17, 20_000, 5, 300_000]);
    sizes
}

#[test]
fn a_slow_reader_gets_every_chunk_in_order() {
    // The client's socket fills, so pipes hold data the client has yet to take while the
    // framing after it waits in the upstream's socket: it must reach the client after
    // that data, never before.
    let primary = chunked_upstream();
    let backup = Upstream::named("backup");
    let sizes = many_chunks(150);
    let path = chunks_path(&sizes);
    let want = chunked(&sizes, true);
    for (how, proxy) in proxies(&primary, &backup) {
        let mut c = Wire::new(asked(proxy.addr, &get_req(&path)));
        let head = c.read_head().unwrap().expect("a head");
        assert!(head.starts_with(b"HTTP/1.1 200"), "{how}");
        let mut got = Vec::new();
        while got.len() < want.len() {
            thread::sleep(ms(2));
            got.extend_from_slice(&c.read_n((want.len() - got.len()).min(64 * 1024)).unwrap());
        }
        assert_bytes(&got, &want, how);
        // The connection carries on.
        c.stream.write_all(&get_req("/chunks/5")).unwrap();
        let resp = read_response(&mut c, false).unwrap();
        assert_eq!(after_head(&resp.raw), chunked(&[5], true).as_slice(), "{how}");
    }
}

#[test]
fn an_http_1_0_client_gets_the_data_of_a_chunked_body_and_then_the_close() {
    let primary = chunked_upstream();
    let backup = Upstream::named("backup");
    let sizes = [200_000, 50_000, 10, 1_000_000];
    for (how, proxy) in proxies(&primary, &backup) {
        let request = format!("GET {} HTTP/1.0\r\nHost: {HOST}\r\n\r\n", chunks_path(&sizes));
        let mut s = asked(proxy.addr, request.as_bytes());
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        assert!(all.starts_with(b"HTTP/1.1 200"), "{how}: {}", show(&all[..all.len().min(200)]));
        let got = after_head(&all);
        assert!(got == data(&sizes).as_slice(), "{how}: {} bytes, {} expected", got.len(), data(&sizes).len());
    }
}

#[test]
fn an_upstream_that_closes_inside_a_large_chunk_never_ends_the_body_for_the_client() {
    // A chunk of 1 MB is announced; 300 KB of it come, then the close. The client gets
    // those bytes and the close, never the last-chunk line that would make the body look
    // whole.
    let mut answer = chunked_head();
    let whole = chunked(&[1_000_000], false);
    answer.extend_from_slice(&whole[..300_000]);
    let primary = Upstream::with(move |s| {
        if s.target() == "/cut" {
            Action::ReplyThenClose(answer.clone())
        } else {
            Action::Reply(reply(200, b"fine"))
        }
    });
    let backup = Upstream::named("backup");
    let want = chunked(&[1_000_000], true);
    for (how, proxy) in proxies(&primary, &backup) {
        let mut s = asked(proxy.addr, &get_req("/cut"));
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        let got = after_head(&all);
        assert!(all.starts_with(b"HTTP/1.1 200"), "{how}");
        assert!(got.len() < want.len() && want.starts_with(got), "{how}: {} bytes, not a prefix", got.len());
        assert!(got.len() > 200_000, "{how}: the bytes that came are passed on ({} of them)", got.len());
        assert_eq!(get(proxy.addr, "/next").text(), "fine", "{how}: the proxy serves on");
    }
}

/// A chunked answer of `sizes` cut wherever a read could end badly: inside and right after
/// every size line, between CR and LF, on both sides of a chunk's first and last data
/// byte, in the middle of its data, and between trailer lines.
fn trickled(sizes: &[usize]) -> Vec<Vec<u8>> {
    let d = data(sizes);
    let mut pieces = vec![chunked_head()];
    let mut at = 0;
    for (i, &n) in sizes.iter().enumerate() {
        let line = if i % 2 == 0 { format!("0{n:X};part={i}\r\n") } else { format!("{n:X}\r\n") };
        let (a, b) = line.as_bytes().split_at(line.len() / 2);
        let chunk = &d[at..at + n];
        let cuts = [0, 1, n / 2, n - 1, n];
        pieces.extend([a.to_vec(), b.to_vec()]);
        pieces.extend(cuts.windows(2).map(|w| chunk[w[0]..w[1]].to_vec()));
        pieces.extend([b"\r".to_vec(), b"\n".to_vec()]);
        at += n;
    }
    pieces.extend([
        b"0\r".to_vec(),
        b"\nX-Checksum: abc\r\n".to_vec(),
        b"Content-Length: 1\r\n".to_vec(),
        b"\r\n".to_vec(),
    ]);
    pieces
}

/// An upstream on 127.0.0.1 that writes a chunked answer to `/pieces` a few bytes of
/// framing at a time, with pauses: line ends, size lines and data split wherever a read
/// could end. Anything else gets a short 200.
fn trickling_upstream(sizes: &'static [usize]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            thread::spawn(move || {
                let mut w = Wire::new(s.try_clone().unwrap());
                while let Ok(Some(head)) = w.read_head() {
                    if !head.starts_with(b"GET /pieces ") {
                        if s.write_all(&reply(200, b"ok")).is_err() {
                            return;
                        }
                        continue;
                    }
                    let pieces = trickled(sizes);
                    for p in pieces {
                        if s.write_all(&p).is_err() {
                            return;
                        }
                        thread::sleep(Duration::from_millis(1));
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn framing_that_arrives_in_pieces_between_piped_chunks_is_read_right() {
    static SIZES: [usize; 6] = [100_000, 20_000, 17, 64_000, 16_384, 300_000];
    let primary = trickling_upstream(&SIZES);
    let backup = Upstream::named("backup");
    for (how, proxy) in proxies_with(&primary, &backup.url(), |b| b) {
        let mut c = Client::connect(proxy.addr);
        for round in 0..3 {
            c.send(&get_req("/pieces"));
            let resp = c.response();
            assert_eq!(resp.status, 200, "{how}, round {round}");
            assert_bytes(after_head(&resp.raw), &chunked(&SIZES, true), &format!("{how}, round {round}"));
        }
        assert_spliced(how, &proxy, "response", 500_000);
    }
}

#[test]
fn where_the_kernel_forbids_splice_chunked_bodies_are_copied_whole() {
    let primary = chunked_upstream();
    let backup = Upstream::named("backup");
    let proxy =
        Proxy::builder(&primary.url(), &backup.url()).set("--workers", "1").deny_syscall(libc::SYS_splice).start();
    let mut c = Client::connect(proxy.addr);
    for sizes in [vec![500_000, 70_000], vec![65_536; 3]] {
        let path = chunks_path(&sizes);
        c.send(&get_req(&path));
        let resp = c.response();
        assert!(after_head(&resp.raw) == chunked(&sizes, true).as_slice(), "{path}: {} bytes", resp.raw.len());
    }
    assert!(proxy.wait_for_log("splice: refused", Duration::from_secs(2)), "{}", proxy.log());
}

/// A chunked upload of `sizes` to /up, as a client writes it (extensions, upper case).
fn chunked_upload(sizes: &[usize]) -> Vec<u8> {
    let mut req = format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    req.extend_from_slice(&chunked(sizes, false));
    req
}

/// Answers with the digest of the body's bytes as received, framing included.
fn raw_counting_upstream() -> Upstream {
    Upstream::with(|s| Action::Reply(reply(200, digest(&s.raw_body).as_bytes())))
}

#[test]
fn chunked_uploads_reach_the_upstream_with_canonical_framing() {
    // A POST is never re-sent, so past its first bytes the data of its large chunks may
    // be spliced; the size lines between them are still read, checked and re-written.
    let primary = raw_counting_upstream();
    let backup = Upstream::named("backup");
    let shapes = shapes();
    for (how, proxy) in proxies(&primary, &backup) {
        let mut c = Client::connect(proxy.addr);
        for sizes in &shapes {
            c.send(&chunked_upload(sizes));
            let resp = c.response();
            assert_eq!(
                (resp.status, resp.text()),
                (200, digest(&chunked(sizes, true))),
                "{how}: chunks of {:?}",
                &sizes[..sizes.len().min(4)]
            );
        }
        c.send(&get_req("/after"));
        assert_eq!(c.response().text(), digest(b""), "{how}: the connection carries on");
        assert_spliced(how, &proxy, "request", 3_000_000);
    }
}

/// Reads at most 16 KB per call, 1 ms apart: an upstream that takes an upload slowly.
struct Slow(TcpStream);

impl Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        thread::sleep(Duration::from_millis(1));
        let n = buf.len().min(16 * 1024);
        self.0.read(&mut buf[..n])
    }
}

/// An upstream on 127.0.0.1 that reads chunked uploads slowly and answers each with the
/// digest of its raw body; anything else gets a short 200.
fn slow_reading_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            thread::spawn(move || {
                let mut w = Wire::new(Slow(s.try_clone().unwrap()));
                while let Ok(Some(head)) = w.read_head() {
                    let answer = if head.starts_with(b"POST ") {
                        match w.read_chunked() {
                            Ok((raw, _)) => reply(200, digest(&raw).as_bytes()),
                            Err(_) => return,
                        }
                    } else {
                        reply(200, b"ok")
                    };
                    if s.write_all(&answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn a_slow_upstream_gets_every_chunk_of_an_upload_in_order() {
    // The upstream's socket fills, so pipes hold data it has yet to take while the
    // client's next size line waits: it must go after that data, never before.
    let primary = slow_reading_upstream();
    let backup = Upstream::named("backup");
    let sizes = many_chunks(100);
    for (how, proxy) in proxies_with(&primary, &backup.url(), |b| b) {
        let mut c = Client::connect(proxy.addr);
        c.send(&chunked_upload(&sizes));
        let resp = c.response();
        assert_eq!((resp.status, resp.text()), (200, digest(&chunked(&sizes, true))), "{how}");
        assert_spliced(how, &proxy, "request", 5_000_000);
    }
}

#[test]
fn a_chunked_upload_past_the_body_limit_is_refused_even_when_spliced() {
    // --max-body counts chunk data at each size line, which is always read: the chunk
    // that goes past the limit ends the request with a 413, and the upstream never gets
    // a whole request.
    let primary = raw_counting_upstream();
    let backup = Upstream::named("backup");
    for (how, proxy) in proxies_with(&primary.url(), &backup.url(), |b| b.set("--max-body", "1MB")) {
        let before = primary.request_count();
        let mut c = Client::connect(proxy.addr);
        let _ = c.try_send(&chunked_upload(&[400_000, 400_000, 400_000, 400_000]));
        let resp = c.response();
        assert_eq!(resp.status, 413, "{how}: {}", resp.text());
        thread::sleep(ms(200));
        assert_eq!(primary.request_count(), before, "{how}: no whole request upstream");
        // The first chunks went through a pipe.
        assert_spliced(how, &proxy, "request", 300_000);
        let ok = [400_000, 400_000];
        assert_eq!(
            exchange(proxy.addr, &chunked_upload(&ok)).text(),
            digest(&chunked(&ok, true)),
            "{how}: within the limit"
        );
    }
}
