//! Micro-benchmarks of the per-request hot path that does not touch sockets: parsing and
//! rewriting a request head, parsing a response head, scanning a chunked body.
//!
//! `cargo bench --bench parse` prints nanoseconds per operation. Whole-proxy throughput is
//! measured side by side with HAProxy and nginx by `../shared/bench/compare.sh`.

use std::hint::black_box;
use std::time::Instant;

use failover::buffer::{Pool, Writer};
use failover::framing::{Body, Framing};
use failover::http1::{parse_request, parse_response, Forward, Limits};

fn bench(name: &str, iters: u32, mut f: impl FnMut()) {
    for _ in 0..iters / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    let ns = t.elapsed().as_nanos() as f64 / iters as f64;
    println!("{name:<32} {ns:>9.1} ns/op");
}

fn main() {
    let req =
        b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n\
Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate\r\n\
Connection: keep-alive\r\nCookie: session=abcdef0123456789\r\n\r\n";
    let resp =
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Tue, 24 Nov 2026 10:00:00 GMT\r\nContent-Type: text/html\r\n\
Content-Length: 1024\r\nConnection: keep-alive\r\nCache-Control: max-age=60\r\n\r\n";
    let mut pool = Pool::new(2);
    let mut out = pool.take();
    let fwd = Forward {
        prefix: "",
        client_ip: "127.0.0.1".parse().unwrap(),
        proto: "http",
        host: None,
        request_id: None,
        max_body: 10 << 20,
        limits: Limits::DEFAULT,
    };

    bench("request head parse+rewrite", 1_000_000, || {
        out.clear();
        let r = parse_request(black_box(req), &fwd, &mut Writer { buf: &mut out, overflow: false });
        black_box(r.ok());
    });
    let parsed = parse_request(req, &fwd, &mut Writer { buf: &mut out, overflow: false }).unwrap().unwrap();
    bench("response head parse+rewrite", 1_000_000, || {
        out.clear();
        let r = parse_response(black_box(resp), &parsed, b"", &mut Writer { buf: &mut out, overflow: false });
        black_box(r.ok());
    });
    let mut chunked = Vec::new();
    for _ in 0..16 {
        chunked.extend_from_slice(b"1000\r\n");
        chunked.extend(std::iter::repeat_n(b'x', 4096));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    bench("chunked scan 64 KiB in 16 chunks", 200_000, || {
        let mut b = Body::start(Framing::Chunked, u64::MAX);
        black_box(b.scan(black_box(&chunked)).ok());
    });
}
