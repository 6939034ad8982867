//! Table tests for body framing: the chunked grammar byte by byte, limits at their edges,
//! and the in-place rewrites in every split of the input.

use super::*;

/// Feeds `input` whole and in every two-way split; all must agree.
fn decode(input: &[u8]) -> Result<usize, ChunkError> {
    let whole = {
        let mut c = Chunked::new();
        let n = c.scan(input)?;
        if !c.is_done() {
            return Ok(usize::MAX);
        }
        n
    };
    for split in 1..input.len() {
        let mut c = Chunked::new();
        let a = c.scan(&input[..split]).expect("prefix of a valid body");
        let b = if c.is_done() { 0 } else { c.scan(&input[split..]).expect("rest") };
        assert!(c.is_done(), "split {split}");
        assert_eq!(a + b, whole, "split {split}");
    }
    Ok(whole)
}

/// The error `input` is refused with: the same whole, in every two-way split, and by the
/// canonical rewrite (what the relay runs on requests) in every two-way split.
fn refusal(input: &[u8]) -> ChunkError {
    let show = String::from_utf8_lossy(input);
    let whole = Chunked::new().scan(input).map(|_| ()).expect_err(&format!("{show:?} is refused"));
    for split in 0..=input.len() {
        let mut c = Chunked::new();
        let got = c.scan(&input[..split]).and_then(|_| c.scan(&input[split..]));
        assert_eq!(got.map(|_| ()), Err(whole), "{show:?} split {split}");
        assert_eq!(canonical_in_two(input, split).map(|_| ()), Err(whole), "{show:?} canonical, split {split}");
    }
    whole
}

#[test]
fn valid_bodies() {
    let cases: &[(&[u8], usize)] = &[
        (b"0\r\n\r\n", 5),
        (b"5\r\nhello\r\n0\r\n\r\n", 15),
        (b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1", 15),
        (b"A\r\n0123456789\r\n0\r\n\r\n", 20),
        (b"a\r\n0123456789\r\n0\r\n\r\n", 20),
        (b"005\r\nhello\r\n0\r\n\r\n", 17),
        (b"5;ext=1\r\nhello\r\n0\r\n\r\n", 21),
        (b"5 ; ext=\"q\\\"v\"\r\nhello\r\n0\r\n\r\n", 28),
        (b"0\r\nTrailer-A: v\r\nB: 2\r\n\r\n", 25),
        // RFC 9112 7.1.1: BWS before ";" and around "=" (and, by this reading, after ";").
        (b"5 ;a\r\nhello\r\n0\r\n\r\n", 18),
        (b"5\t;a\r\nhello\r\n0\r\n\r\n", 18),
        (b"5 \t ;a=b\r\nhello\r\n0\r\n\r\n", 22),
        (b"5;a = b ; c =\t\"d\"\r\nhello\r\n0\r\n\r\n", 31),
        (b"5; a\r\nhello\r\n0\r\n\r\n", 18),
        (b"5;a;b=c;d\r\nhello\r\n0\r\n\r\n", 23),
        (b"0 ;a\r\n\r\n", 8),
    ];
    for (input, want) in cases {
        assert_eq!(decode(input), Ok(*want), "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn invalid_bodies() {
    let cases: &[(&[u8], ChunkError)] = &[
        (b"x\r\n", ChunkError::BadSize),
        (b"\r\n", ChunkError::BadSize),
        (b"-5\r\n", ChunkError::BadSize),
        (b"+5\r\n", ChunkError::BadSize),
        (b"0x5\r\n", ChunkError::BadSize),
        (b"5\nhello", ChunkError::BadSize),
        (b"5\r\nhelloX", ChunkError::MissingCrlf),
        (b"5\r\nhello\rX", ChunkError::MissingCrlf),
        (b"5\r\nhello\n0\r\n", ChunkError::MissingCrlf),
        (b"fffffffffffffffff\r\n", ChunkError::SizeTooLarge),
        (b"5;a\x00\r\n", ChunkError::BadExtension),
        (b"5;a=\"\x01\"\r\n", ChunkError::BadExtension),
        (b"5;(x)\r\n", ChunkError::BadExtension),
        (b"0\r\nBad Name: v\r\n\r\n", ChunkError::BadTrailer),
        (b"0\r\nNoColon\r\n\r\n", ChunkError::BadTrailer),
        (b"0\r\nA: v\nB: 2\r\n\r\n", ChunkError::BadTrailer),
        (b"0\r\nA: \x00\r\n\r\n", ChunkError::BadTrailer),
        (b"0\r\n\rX", ChunkError::MissingCrlf),
        // An empty size line, first or after a chunk.
        (b"\r\n0\r\n\r\n", ChunkError::BadSize),
        (b"5\r\nhello\r\n\r\n0\r\n\r\n", ChunkError::BadSize),
        // Whitespace after the size is BWS before ";" (RFC 9112 7.1.1), never before CRLF.
        (b"5 \r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
        (b"5\t\r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
        (b"5   \r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
        (b"5 \t \r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
        (b"5\r\nhello\r\n0 \r\n\r\n", ChunkError::BadSize),
        (b"0\t\r\n\r\n", ChunkError::BadSize),
        (b"5 5\r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
        // An extension without a name, in every spelling.
        (b"5;\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"2;\r\nhi\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5; \r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5;\t\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5 ;\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5 ; \r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5;=x\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5; =x\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5;=\"x\"\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5;;\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5;;a\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5;a;\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5;a;;b\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5;a=b;\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"0;\r\n\r\n", ChunkError::BadExtension),
        // The rest of chunk-ext: a value after "=", whitespace only before ";" or "=".
        (b"5;a=\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5;a= \r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5;a \r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5;a=b \r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5;a=\"b\" \r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5;a=\"b\"c\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5;a=b=c\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5;a b\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
        (b"5;a=b c\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
    ];
    for (input, want) in cases {
        assert_eq!(refusal(input), *want, "{:?}", String::from_utf8_lossy(input));
    }
    let mut long = b"5;".to_vec();
    long.extend(std::iter::repeat_n(b'a', 5000));
    assert_eq!(Chunked::new().scan(&long), Err(ChunkError::LineTooLong));
}

#[test]
fn decodes_in_place_across_splits() {
    let raw = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: 1\r\n\r\nNEXT";
    for split in 0..=raw.len() - 4 {
        let mut c = Chunked::new();
        let mut payload = Vec::new();
        let mut a = raw[..split].to_vec();
        let (n1, p1) = c.rewrite_in_place(&mut a, Rewrite::Decode).unwrap();
        assert_eq!(n1, split);
        payload.extend_from_slice(&a[..p1]);
        let mut b = raw[split..].to_vec();
        let (n2, p2) = if c.is_done() { (0, 0) } else { c.rewrite_in_place(&mut b, Rewrite::Decode).unwrap() };
        payload.extend_from_slice(&b[..p2]);
        assert_eq!(payload, b"hello world", "split {split}");
        assert_eq!(n1 + n2, raw.len() - 4, "stops before the next message, split {split}");
    }
}

/// Feeds `raw` to a canonical rewrite in two parts split at every point, the way a
/// relay does: what a call leaves unconsumed is offered again with the next bytes.
fn canonical_in_two(raw: &[u8], split: usize) -> Result<(Vec<u8>, usize), ChunkError> {
    let mut c = Chunked::new();
    let mut held = raw[..split].to_vec();
    let (used, kept) = c.rewrite_in_place(&mut held, Rewrite::Canonical)?;
    let mut out = held[..kept].to_vec();
    let mut rest = [&held[used..], &raw[split..]].concat();
    let (used2, kept2) = if c.is_done() { (0, 0) } else { c.rewrite_in_place(&mut rest, Rewrite::Canonical)? };
    out.extend_from_slice(&rest[..kept2]);
    assert!(c.is_done(), "split {split}: the body is whole by now");
    Ok((out, used + used2))
}

#[test]
fn canonical_lines_across_splits() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"5\r\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
        (
            b"0005 ; a=b;c=\"x;y\"\r\nhello\r\nA;z\r\n0123456789\r\n000\t;q\r\nT: 1\r\n\r\n",
            b"5\r\nhello\r\na\r\n0123456789\r\n0\r\nT: 1\r\n\r\n",
        ),
        (b"1;e\r\n;\r\n0;last\r\n\r\n", b"1\r\n;\r\n0\r\n\r\n"),
    ];
    for (raw, want) in cases {
        let mut next = raw.to_vec();
        next.extend_from_slice(b"GET");
        for split in 0..=next.len() {
            let (out, used) = canonical_in_two(&next, split).unwrap();
            assert_eq!(
                (String::from_utf8_lossy(&out), used),
                (String::from_utf8_lossy(want), raw.len()),
                "split {split}"
            );
        }
    }
    // A partial size line is held, not consumed, and still validated as it grows.
    let mut c = Chunked::new();
    assert_eq!(c.rewrite_in_place(&mut b"5;ab".to_vec(), Rewrite::Canonical), Ok((0, 0)));
    assert_eq!(c.rewrite_in_place(&mut b"5;a\x00".to_vec(), Rewrite::Canonical), Err(ChunkError::BadExtension));
    let mut long = b"5;".to_vec();
    long.extend(std::iter::repeat_n(b'a', 5000));
    assert_eq!(Chunked::new().rewrite_in_place(&mut long, Rewrite::Canonical), Err(ChunkError::LineTooLong));
}

/// Feeds `raw` to a canonical rewrite `piece` bytes at a time, holding what a call leaves
/// unconsumed for the next, as the relay does; stops when the body ends.
fn canonical_in_pieces(raw: &[u8], piece: usize) -> Result<(Vec<u8>, usize), ChunkError> {
    let (mut c, mut held, mut out, mut used_total) = (Chunked::new(), Vec::new(), Vec::new(), 0);
    for part in raw.chunks(piece) {
        if c.is_done() {
            break;
        }
        held.extend_from_slice(part);
        let (used, kept) = c.rewrite_in_place(&mut held, Rewrite::Canonical)?;
        out.extend_from_slice(&held[..kept]);
        held.drain(..used);
        used_total += used;
    }
    assert!(c.is_done(), "the body is whole by now");
    Ok((out, used_total))
}

/// Trailer fields RFC 9110 6.5.1 says a sender must not put in trailers (framing,
/// routing, request modifiers, authentication, response control, content processing),
/// hop-by-hop fields, and the proxy's own X-Forwarded-*: the canonical rewrite drops them.
const MUST_DROP: &[&str] = &[
    "Content-Length",
    "Transfer-Encoding",
    "Trailer",
    "Host",
    "Cache-Control",
    "Expect",
    "Max-Forwards",
    "Pragma",
    "Range",
    "TE",
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
    "If-Range",
    "Authorization",
    "Proxy-Authorization",
    "WWW-Authenticate",
    "Proxy-Authenticate",
    "Authentication-Info",
    "Proxy-Authentication-Info",
    "Cookie",
    "Set-Cookie",
    "Age",
    "Expires",
    "Date",
    "Location",
    "Retry-After",
    "Vary",
    "Warning",
    "Content-Encoding",
    "Content-Type",
    "Content-Range",
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "Upgrade",
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
];

/// Every way the relay can receive `raw`: whole, in every two-way split, one byte at a time
/// and in threes. All must forward `want` and consume exactly `raw`.
fn assert_canonical(raw: &[u8], want: &[u8]) {
    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let next = [raw, b"GET"].concat();
    for split in 0..=next.len() {
        let got = canonical_in_two(&next, split).unwrap_or_else(|e| panic!("{:?} split {split}: {e:?}", show(raw)));
        assert_eq!((show(&got.0), got.1), (show(want), raw.len()), "split {split}");
    }
    for piece in [1, 3] {
        let got = canonical_in_pieces(&next, piece).unwrap_or_else(|e| panic!("{:?} by {piece}: {e:?}", show(raw)));
        assert_eq!((show(&got.0), got.1), (show(want), raw.len()), "{piece} bytes at a time");
    }
    // Scanning alone (responses) and decoding are not changed by it.
    assert_eq!(outcome(&next), Ok((raw.len(), true)), "{:?}", show(raw));
}

#[test]
fn forbidden_trailers_are_dropped_in_any_split() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"0\r\nContent-Length: 5\r\n\r\n", b"0\r\n\r\n"),
        (b"0\r\nHost: evil\r\n\r\n", b"0\r\n\r\n"),
        (b"0\r\nHOST:evil\r\n\r\n", b"0\r\n\r\n"),
        (b"0\r\nhost:\r\n\r\n", b"0\r\n\r\n"),
        (b"0\r\ntransfer-encoding: chunked\r\n\r\n", b"0\r\n\r\n"),
        (
            b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nContent-Length: 5\r\nX-B: 2\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-B: 2\r\n\r\n",
        ),
        (
            b"5 ;x\r\nhello\r\n0;y\r\nHost: evil\r\nSet-Cookie: a=b\r\nX-Checksum: c\r\nTE: x\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX-Checksum: c\r\n\r\n",
        ),
        // A dropped value may hold anything a value may, ":" and long runs included.
        (b"0\r\nLocation: http://a:80/x\r\nContent-Type: text/plain; charset=\"x\"\r\n\r\n", b"0\r\n\r\n"),
        // Names that only start or end like a dropped one are kept.
        (
            b"0\r\nHostx: 1\r\nHost-Name: 2\r\nX-Host: 3\r\nContent-Length-X: 4\r\nT: 5\r\n\r\n",
            b"0\r\nHostx: 1\r\nHost-Name: 2\r\nX-Host: 3\r\nContent-Length-X: 4\r\nT: 5\r\n\r\n",
        ),
        // Longer than any dropped name: forwarded before its colon arrives.
        (
            b"0\r\nX-A-Very-Long-Trailer-Name-Indeed: v\r\nServer-Timing: db;dur=53\r\n\r\n",
            b"0\r\nX-A-Very-Long-Trailer-Name-Indeed: v\r\nServer-Timing: db;dur=53\r\n\r\n",
        ),
    ];
    for (raw, want) in cases {
        assert_canonical(raw, want);
    }
    for name in MUST_DROP {
        for spelled in [name.to_string(), name.to_ascii_lowercase(), name.to_ascii_uppercase()] {
            let raw = format!("3\r\nabc\r\n0\r\nX-Checksum: 1\r\n{spelled}: v\r\nX-Sum: 2\r\n\r\n");
            assert_canonical(raw.as_bytes(), b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-Sum: 2\r\n\r\n");
            let raw = format!("0\r\n{spelled}:\r\n\r\n");
            assert_canonical(raw.as_bytes(), b"0\r\n\r\n");
            // One byte more or less is another field, kept.
            for other in [format!("{spelled}s"), format!("X{spelled}"), spelled[1..].to_string()] {
                let raw = format!("0\r\n{other}: v\r\n\r\n");
                assert_canonical(raw.as_bytes(), raw.as_bytes());
            }
        }
    }
    assert_eq!(MAX_DROPPED_NAME, "proxy-authentication-info".len());
    assert!(DROPPED_TRAILERS.iter().all(|d| MUST_DROP.iter().any(|m| m.eq_ignore_ascii_case(d))), "and no more");
    // A bad byte in a dropped field is still refused, wherever the input splits.
    assert_eq!(refusal(b"0\r\nHost: a\x00\r\n\r\n"), ChunkError::BadTrailer);
    assert_eq!(refusal(b"0\r\nHost : a\r\n\r\n"), ChunkError::BadTrailer);
    assert_eq!(refusal(b"0\r\nHost: a\nX: b\r\n\r\n"), ChunkError::BadTrailer);
}

#[test]
fn counts_data_for_limits() {
    let mut c = Chunked::new();
    c.scan(b"5\r\nhello\r\n3\r\nabc\r\n").unwrap();
    assert_eq!(c.data_total, 8);
    assert!(!c.is_done());
    let mut c = Chunked::with_limit(8);
    assert!(c.scan(b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n").is_ok(), "at the limit");
    let mut c = Chunked::with_limit(7);
    assert_eq!(c.scan(b"5\r\nhello\r\n3\r\nabc\r\n"), Err(ChunkError::TooLarge));
    let mut b = Body::start(Framing::Chunked, 4);
    assert_eq!(b.scan(b"5\r\n"), Err(ChunkError::TooLarge), "refused before the data arrives");
}

#[test]
fn length_and_close_bodies() {
    let mut b = Body::start(Framing::Length(5), 0);
    assert_eq!(b.scan(b"abc"), Ok(3));
    assert_eq!(b.scan(b"defgh"), Ok(2));
    assert!(b.is_done());
    assert!(Body::start(Framing::Length(0), 0).is_done());
    assert!(Body::start(Framing::None, 0).is_done());
    let mut b = Body::start(Framing::UntilClose, 0);
    assert_eq!(b.scan(b"anything"), Ok(8));
    assert!(!b.is_done());
}

// Generated tables for the chunked grammar (RFC 9112 7.1): every byte value in each
// position, every size spelling, and the limits at their exact edges.

/// Scans `input` whole, then again one byte at a time; both must agree. Ok((consumed,
/// done)) or the first error.
fn outcome(input: &[u8]) -> Result<(usize, bool), ChunkError> {
    let mut c = Chunked::new();
    let whole = c.scan(input).map(|n| (n, c.is_done()));
    let mut c = Chunked::new();
    let mut n = 0;
    let mut bytewise = Ok((0, false));
    for i in 0..input.len() {
        match c.scan(&input[i..=i]) {
            Ok(k) => n += k,
            Err(e) => {
                bytewise = Err(e);
                break;
            }
        }
        bytewise = Ok((n, c.is_done()));
        if c.is_done() {
            break;
        }
    }
    assert_eq!(whole, bytewise, "whole and byte-at-a-time differ for {:?}", String::from_utf8_lossy(input));
    whole
}

fn is_tchar_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// qdtext and quoted-pair's second byte, and field values: HTAB, SP, VCHAR, obs-text.
fn is_text(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

fn case(what: &str, b: u8) -> String {
    format!("{what} 0x{b:02x} {:?}", b as char)
}

const DONE: &[u8] = b"\r\nhello\r\n0\r\n\r\n";

#[test]
fn first_byte_of_a_size_line() {
    for b in 0..=255u8 {
        let size = (b as char).to_digit(16);
        let input = match size {
            Some(0) => b"0\r\n\r\n".to_vec(),
            Some(n) => [&[b, b'\r', b'\n'][..], &vec![b'x'; n as usize], b"\r\n0\r\n\r\n"].concat(),
            None => [&[b][..], DONE].concat(),
        };
        let want = if size.is_some() { Ok((input.len(), true)) } else { Err(ChunkError::BadSize) };
        assert_eq!(outcome(&input), want, "{}", case("size starting with", b));
    }
}

#[test]
fn byte_after_a_size_digit() {
    for b in 0..=255u8 {
        // chunk-size [ BWS ";" ... ] CRLF: another digit, CR, or the start of an extension.
        let ok = b.is_ascii_hexdigit() || matches!(b, b'\r' | b';' | b' ' | b'\t');
        let want = if ok { Ok((2, false)) } else { Err(ChunkError::BadSize) };
        assert_eq!(outcome(&[b'5', b]), want, "{}", case("after \"5\"", b));
    }
}

#[test]
fn byte_after_whitespace_after_a_size() {
    // chunk-size [ BWS ";" ... ] CRLF: whitespace after the size must lead to ";".
    for ws in [&b" "[..], b"\t", b"  ", b" \t"] {
        for b in 0..=255u8 {
            let input = [&b"5"[..], ws, &[b], b"e", DONE].concat();
            let want = if b == b';' { Ok((input.len(), true)) } else { Err(ChunkError::BadSize) };
            let what = format!("after \"5{}\"", String::from_utf8_lossy(ws));
            assert_eq!(outcome(&input), want, "{}", case(&what, b));
        }
    }
}

#[test]
fn extension_bytes() {
    // chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ), value a
    // token or a quoted-string (RFC 9112 7.1.1). Each row: what comes before the byte, and
    // the error the byte gets there (None: valid).
    use ChunkError::{BadExtension as Bad, MissingCrlf as Crlf};
    let tchar_or = |b: u8, other: ChunkError| if is_tchar_byte(b) { None } else { Some(other) };
    let bws_tchar = |b: u8| if b == b' ' || b == b'\t' { None } else { tchar_or(b, Bad) };
    type Refusal<'a> = &'a dyn Fn(u8) -> Option<ChunkError>;
    let rows: [(&[u8], Refusal); 7] = [
        // The name starts: nothing but a tchar, after optional BWS.
        (b"5;", &bws_tchar),
        (b"5; ", &bws_tchar),
        // After a name or a token value: more of it, ";" (another one), "=" after a name,
        // or CR ending the line (then "\r\r" lacks its LF); whitespace only before ";"/"=".
        (b"5;a", &|b| if b == b';' || b == b'=' { None } else { tchar_or(b, if b == b'\r' { Crlf } else { Bad }) }),
        (b"5;a=b", &|b| if b == b';' { None } else { tchar_or(b, if b == b'\r' { Crlf } else { Bad }) }),
        // After "=" and optional BWS: a token or a quoted-string (an unclosed one here).
        (b"5;a=", &bws_tchar),
        (b"5;a= ", &bws_tchar),
        // BWS after a name leads to ";" or "=" only.
        (b"5;a ", &|b| if b == b';' || b == b'=' { None } else { Some(Bad) }),
    ];
    for (before, refusal) in rows {
        for b in 0..=255u8 {
            // "c" completes whatever the byte started ("5;a ;c", "5;a =c").
            let input = [before, &[b], b"c", DONE].concat();
            let want = refusal(b).map_or(Ok((input.len(), true)), Err);
            let what = format!("after {:?}", String::from_utf8_lossy(before));
            assert_eq!(outcome(&input), want, "{}", case(&what, b));
        }
    }
    for b in 0..=255u8 {
        // After a closing quote: CR, or BWS before ";" (then a name).
        let input = [&b"5;a=\"v\""[..], &[b], b"c", DONE].concat();
        let want = match b {
            b';' => Ok((input.len(), true)),
            b'\r' => Err(ChunkError::MissingCrlf),
            _ => Err(ChunkError::BadExtension),
        };
        assert_eq!(outcome(&input), want, "{}", case("after a quoted value", b));

        let input = [&b"5;a=\""[..], &[b], b"\"", DONE].concat();
        let ok = is_text(b) && b != b'"' && b != b'\\';
        let want = if ok { Ok((input.len(), true)) } else { Err(ChunkError::BadExtension) };
        assert_eq!(outcome(&input), want, "{}", case("quoted extension byte", b));

        let input = [&b"5;a=\"\\"[..], &[b], b"\"", DONE].concat();
        let want = if is_text(b) { Ok((input.len(), true)) } else { Err(ChunkError::BadExtension) };
        assert_eq!(outcome(&input), want, "{}", case("escaped extension byte", b));
    }
}

#[test]
fn line_ends_around_chunk_data() {
    for b in 0..=255u8 {
        let spots: [(&str, Vec<u8>, u8); 4] = [
            ("LF after the size line's CR", [&b"5\r"[..], &[b], b"hello\r\n0\r\n\r\n"].concat(), b'\n'),
            ("CR after the data", [&b"5\r\nhello"[..], &[b], b"\n0\r\n\r\n"].concat(), b'\r'),
            ("LF after the data", [&b"5\r\nhello\r"[..], &[b], b"0\r\n\r\n"].concat(), b'\n'),
            ("LF of the last line", [&b"0\r\n\r"[..], &[b]].concat(), b'\n'),
        ];
        for (spot, input, only) in spots {
            let want = if b == only { Ok((input.len(), true)) } else { Err(ChunkError::MissingCrlf) };
            assert_eq!(outcome(&input), want, "{}", case(spot, b));
        }
    }
}

#[test]
fn trailer_bytes() {
    for b in 0..=255u8 {
        let input = [&b"0\r\n"[..], &[b], b"X: v\r\n\r\n"].concat();
        let want = match b {
            _ if is_tchar_byte(b) => Ok((input.len(), true)),
            // An empty line ends the trailers; "X" is not its LF.
            b'\r' => Err(ChunkError::MissingCrlf),
            _ => Err(ChunkError::BadTrailer),
        };
        assert_eq!(outcome(&input), want, "{}", case("trailer starting with", b));

        // ':' here only starts the value early ("X:: v"), which is valid.
        let input = [&b"0\r\nX"[..], &[b], b": v\r\n\r\n"].concat();
        let ok = is_tchar_byte(b) || b == b':';
        let want = if ok { Ok((input.len(), true)) } else { Err(ChunkError::BadTrailer) };
        assert_eq!(outcome(&input), want, "{}", case("trailer name byte", b));

        let input = [&b"0\r\nX: a"[..], &[b], b"\r\n\r\n"].concat();
        let want = if is_text(b) { Ok((input.len(), true)) } else { Err(ChunkError::BadTrailer) };
        assert_eq!(outcome(&input), want, "{}", case("trailer value byte", b));
    }
}

#[test]
fn every_size_spelling_frames_exactly_its_data() {
    for size in 0..=0x1ffusize {
        // Data bytes include CR, LF and digits: data is never parsed.
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        for spelled in [format!("{size:x}"), format!("{size:X}"), format!("{size:08x}"), format!("{size:x};e=\"v\"")] {
            let mut input = format!("{spelled}\r\n").into_bytes();
            if size > 0 {
                input.extend_from_slice(&data);
                input.extend_from_slice(b"\r\n0\r\n");
            }
            input.extend_from_slice(b"\r\nNEXT");
            let end = input.len() - 4;
            assert_eq!(outcome(&input), Ok((end, true)), "size {spelled:?}");
            let mut c = Chunked::new();
            let mut buf = input.clone();
            let (used, kept) = c.rewrite_in_place(&mut buf, Rewrite::Decode).unwrap();
            assert_eq!((used, &buf[..kept], c.data_total), (end, &data[..], size as u64), "size {spelled:?}");
            // Whatever the spelling, the next hop gets the one canonical line.
            let mut canonical = format!("{size:x}\r\n").into_bytes();
            if size > 0 {
                canonical.extend_from_slice(&data);
                canonical.extend_from_slice(b"\r\n0\r\n");
            }
            canonical.extend_from_slice(b"\r\n");
            let (mut c, mut buf) = (Chunked::new(), input.clone());
            let (used, kept) = c.rewrite_in_place(&mut buf, Rewrite::Canonical).unwrap();
            assert_eq!((used, &buf[..kept]), (end, &canonical[..]), "size {spelled:?}");
        }
    }
}

#[test]
fn limits_at_their_edges() {
    // 16 hex digits fit in a u64; the 17th overflows.
    assert_eq!(outcome(b"ffffffffffffffff\r\n"), Ok((18, false)));
    let zeros = [&[b'0'; 30][..], b"5", DONE].concat();
    assert_eq!(outcome(&zeros), Ok((zeros.len(), true)), "leading zeros do not overflow");
    assert_eq!(outcome(b"10000000000000000\r\n"), Err(ChunkError::SizeTooLarge));
    // A size line may be 4096 bytes, its CR included.
    for (fill, ok) in [(4093, true), (4094, false)] {
        let input = [&b"5;"[..], &vec![b'a'; fill], DONE].concat();
        let want = if ok { Ok((input.len(), true)) } else { Err(ChunkError::LineTooLong) };
        assert_eq!(outcome(&input), want, "extension of {fill} bytes");
        let input = [&vec![b'0'; fill + 1], &b"5"[..], DONE].concat();
        let want = if ok { Ok((input.len(), true)) } else { Err(ChunkError::LineTooLong) };
        assert_eq!(outcome(&input), want, "{} leading zeros", fill + 1);
    }
    // Trailers may take 16KB, the CRs of their lines and of the last line included.
    for (fill, ok) in [(16 * 1024 - 9, true), (16 * 1024 - 8, false)] {
        let input = [&b"0\r\nX-Big: "[..], &vec![b'a'; fill], b"\r\n\r\n"].concat();
        let want = if ok { Ok((input.len(), true)) } else { Err(ChunkError::TrailersTooLarge) };
        assert_eq!(outcome(&input), want, "trailer value of {fill} bytes");
    }
    for limit in 0..8u64 {
        for size in 0..8u64 {
            let input = format!("{size:x}\r\n{}\r\n0\r\n\r\n", "x".repeat(size as usize));
            let input = if size == 0 { "0\r\n\r\n".to_string() } else { input };
            let mut c = Chunked::with_limit(limit);
            let got = c.scan(input.as_bytes()).map(|_| c.is_done());
            let want = if size <= limit { Ok(true) } else { Err(ChunkError::TooLarge) };
            assert_eq!(got, want, "{size} data bytes with a limit of {limit}");
        }
    }
}

#[test]
fn length_bodies_stop_at_their_end_in_any_split() {
    for len in 0..40u64 {
        let input = vec![b'x'; len as usize + 10];
        for split in 0..=input.len() {
            let mut b = Body::start(Framing::Length(len), 0);
            let first = b.scan(&input[..split]).unwrap();
            let second = b.scan(&input[first..]).unwrap();
            assert_eq!((first + second, b.is_done()), (len as usize, true), "length {len}, split {split}");
        }
    }
}

#[test]
fn unframed_bytes_are_counted_off_a_body() {
    let mut b = Body::start(Framing::Length(10), u64::MAX);
    assert_eq!(b.unframed_left(), 10);
    b.took(4);
    assert_eq!(b.unframed_left(), 6);
    b.took(6);
    assert!(b.is_done(), "the last byte ends it");
    let mut b = Body::start(Framing::UntilClose, u64::MAX);
    b.took(1 << 40);
    assert_eq!(b.unframed_left(), u64::MAX, "no end until the close");
    assert_eq!(Body::start(Framing::Chunked, u64::MAX).unframed_left(), 0, "size lines must be read");
    assert_eq!(Body::start(Framing::None, u64::MAX).unframed_left(), 0);
}

#[test]
fn a_chunks_data_is_unframed_and_its_line_end_is_not() {
    let mut b = Body::start(Framing::Chunked, u64::MAX);
    assert_eq!(b.scan(b"a;x=1\r\nab").unwrap(), 9);
    assert_eq!(b.unframed_left(), 8, "10 data bytes, 2 seen");
    b.took(5);
    assert_eq!(b.unframed_left(), 3);
    b.took(3);
    assert_eq!(b.unframed_left(), 0, "the line end after the data must be read");
    assert!(b.scan(b"x").is_err(), "after the data only CRLF may come");
    let mut b = Body::start(Framing::Chunked, u64::MAX);
    b.scan(b"4\r\n").unwrap();
    b.took(4);
    let rest = b"\r\n3\r\nxyz\r\n0\r\n\r\nNEXT";
    assert_eq!(b.scan(rest).unwrap(), rest.len() - 4, "the body ends before the next message");
    assert!(b.is_done());
    // In the middle of a size line, nothing is unframed.
    let mut b = Body::start(Framing::Chunked, u64::MAX);
    b.scan(b"10").unwrap();
    assert_eq!(b.unframed_left(), 0);
    b.scan(b"\r\n").unwrap();
    assert_eq!(b.unframed_left(), 16);
}
