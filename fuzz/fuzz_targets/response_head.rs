//! Any bytes as a response head: never panics; what is accepted rewrites to a valid head.
#![no_main]

use failover::buffer::{Pool, Writer};
use failover::framing::Framing;
use failover::http1::{parse_response, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let req = Request {
        head_len: 0,
        minor: data[0] & 1,
        is_head: data[0] & 2 != 0,
        framing: Framing::None,
        keep_alive: data[0] & 4 != 0,
        upgrade: data[0] & 8 != 0,
        expect_continue: false,
        replay_ok: true,
        accepts_json: false,
        admin: None,
    };
    let mut pool = Pool::new(1);
    let mut out = pool.take();
    let _ = parse_response(&data[1..], &req, b"", &mut Writer { buf: &mut out, overflow: false });
});
