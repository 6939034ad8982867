//! A chunked body fed in random splits decodes the same as fed whole, and never panics;
//! its canonical rewrite (what reaches an upstream) frames the same data, in any split,
//! with the same trailer fields minus those that must not be trailers; and taking chunks'
//! data unseen (as a pipe does) ends the body where scanning it does.
#![no_main]

use failover::framing::{forbidden_trailer, Chunked, Rewrite};
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
    canonical(body, cuts[0] as usize % (body.len() + 1));
    piped(body, cuts[1] as usize);
});

/// Takes some of every chunk's data unseen, as a pipe does (`took`), and scans the rest:
/// the decoder ends where scanning everything ends, with the same error if any.
fn piped(body: &[u8], seed: usize) {
    let whole = {
        let mut c = Chunked::new();
        c.scan(body).map(|n| (n, c.is_done()))
    };
    let mut c = Chunked::new();
    let mut at = 0;
    let mut k = seed;
    let result = loop {
        let left = c.data_left().min((body.len() - at) as u64);
        if left > 0 {
            k = k.wrapping_mul(31).wrapping_add(7);
            let n = (k as u64 % left) + 1;
            c.took(n);
            at += n as usize;
            continue;
        }
        if at == body.len() || c.is_done() {
            break Ok(at);
        }
        // Framing (or data the pipe left) is scanned a few bytes at a time.
        let end = (at + 1 + k % 5).min(body.len());
        match c.scan(&body[at..end]) {
            Ok(n) => at += n,
            Err(e) => break Err(e),
        }
    };
    match (whole, result) {
        (Ok((n, done)), Ok(m)) => {
            assert_eq!(n, m);
            assert_eq!(done, c.is_done());
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("whole {a:?} vs piped {b:?}"),
    }
}

/// Rewrites `body` canonically in two parts split at `split`, the way the relay does (what
/// a call leaves unconsumed is offered again with the next bytes), and checks the result.
fn canonical(body: &[u8], split: usize) {
    let decoded = {
        let mut c = Chunked::new();
        let mut d = body.to_vec();
        match c.rewrite_in_place(&mut d, Rewrite::Decode) {
            Ok((used, kept)) if c.is_done() => Some((used, d[..kept].to_vec())),
            _ => None,
        }
    };
    let mut c = Chunked::new();
    let mut first = body[..split].to_vec();
    let Ok((used, kept)) = c.rewrite_in_place(&mut first, Rewrite::Canonical) else {
        assert!(decoded.is_none(), "canonical refused a body the decoder took");
        return;
    };
    let mut out = first[..kept].to_vec();
    let mut rest = [&first[used..], &body[split..]].concat();
    let mut total = used;
    if !c.is_done() {
        let Ok((used, kept)) = c.rewrite_in_place(&mut rest, Rewrite::Canonical) else {
            assert!(decoded.is_none(), "canonical refused a body the decoder took");
            return;
        };
        out.extend_from_slice(&rest[..kept]);
        total += used;
    }
    let Some((n, data)) = decoded else {
        assert!(!c.is_done(), "canonical took a body the decoder refused");
        return;
    };
    assert!(c.is_done());
    assert_eq!(total, n, "the same bytes belong to the body");
    // The output is a valid body with the same data, and already canonical.
    let mut again = out.clone();
    let mut d = Chunked::new();
    assert_eq!(d.rewrite_in_place(&mut again, Rewrite::Canonical).ok(), Some((out.len(), out.len())));
    assert!(again == out, "canonical output is a fixed point");
    let mut d = Chunked::new();
    let (used, kept) = d.rewrite_in_place(&mut again, Rewrite::Decode).expect("canonical output decodes");
    assert!(d.is_done() && used == out.len() && again[..kept] == data[..]);
    let allowed: Vec<&[u8]> = trailer_lines(&body[..n]).into_iter().filter(|l| !forbidden_trailer(name(l))).collect();
    assert_eq!(trailer_lines(&out), allowed, "the trailers kept are exactly the allowed ones");
}

/// The trailer field lines of a valid, complete chunked body.
fn trailer_lines(body: &[u8]) -> Vec<&[u8]> {
    let mut i = 0;
    loop {
        // A size line cannot hold an LF before its end (quoted strings refuse CR and LF).
        let end = i + body[i..].iter().position(|&b| b == b'\n').expect("a whole size line") + 1;
        let digits = body[i..].iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let size = u64::from_str_radix(std::str::from_utf8(&body[i..i + digits]).unwrap(), 16).unwrap();
        i = end;
        if size == 0 {
            break;
        }
        i += size as usize + 2;
    }
    let mut lines = Vec::new();
    while body[i] != b'\r' {
        let end = i + body[i..].iter().position(|&b| b == b'\n').expect("a whole trailer line") + 1;
        lines.push(&body[i..end]);
        i = end;
    }
    lines
}

fn name(line: &[u8]) -> &[u8] {
    &line[..line.iter().position(|&b| b == b':').unwrap_or(line.len())]
}
