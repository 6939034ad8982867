//! Any bytes as a request head: never panics, and whatever is accepted is re-serialized
//! into a head that parses again to the same framing.
#![no_main]

use failover::buffer::{Pool, Writer};
use failover::http1::{parse_request, Forward, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut pool = Pool::new(2);
    let mut out = pool.take();
    let fwd = Forward {
        prefix: "/p",
        client_ip: "127.0.0.1".parse().unwrap(),
        proto: "http",
        host: None,
        request_id: None,
        max_body: 1 << 20,
        limits: Limits::DEFAULT,
    };
    if let Ok(Some(req)) = parse_request(data, &fwd, &mut Writer { buf: &mut out, overflow: false }) {
        if req.admin.is_none() {
            let mut again = pool.take();
            let fwd2 = Forward { prefix: "", ..fwd };
            let re = parse_request(out.bytes(), &fwd2, &mut Writer { buf: &mut again, overflow: false });
            let re = re.expect("a forwarded head must be valid").expect("and complete");
            assert_eq!(re.framing, req.framing, "framing must survive the rewrite");
            assert_eq!(re.head_len, out.len());
        }
    }
});
