//! A chunked body fed in random splits decodes the same as fed whole, and never panics.
#![no_main]

use failover::framing::Chunked;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (cuts, body) = data.split_at(2);
    let whole = {
        let mut c = Chunked::new();
        c.scan(body).map(|n| (n, c.is_done()))
    };
    let mut c = Chunked::new();
    let mut at = 0;
    let mut result = Ok(0);
    let mut step = (cuts[0] as usize % 7) + 1;
    while at < body.len() && !c.is_done() {
        let end = (at + step).min(body.len());
        match c.scan(&body[at..end]) {
            Ok(n) => {
                at += n;
                result = Ok(at);
                if n < end - (at - n) && !c.is_done() {
                    unreachable!("a scan consumes everything until the body ends");
                }
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        step = (step * (cuts[1] as usize + 3)) % 13 + 1;
    }
    match (whole, result) {
        (Ok((n, done)), Ok(m)) => {
            assert_eq!(n, m);
            assert_eq!(done, c.is_done());
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("whole {a:?} vs split {b:?}"),
    }
});
