//! Body framing: Content-Length, chunked (decoded and validated on the fly), until-close,
//! none.
//!
//! A body is scanned as it streams: [`Body::scan`] looks at the bytes held so far and says
//! how many of them belong to the body and have been validated, so the caller may forward
//! exactly those. Nothing here buffers, allocates or touches a socket.

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// Why a chunked body is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    BadSize,
    SizeTooLarge,
    BadExtension,
    LineTooLong,
    MissingCrlf,
    BadTrailer,
    TrailersTooLarge,
    /// More data than the body limit allows.
    TooLarge,
}

/// Longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: u32 = 4096;
/// Most trailer bytes accepted.
const MAX_TRAILERS: u32 = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a chunk-size line; no digit yet.
    SizeStart,
    /// Reading hex digits.
    Size,
    /// Whitespace after the size digits.
    SizeWs,
    /// After `;`: extensions until CR.
    Ext,
    /// Inside a quoted extension value.
    ExtQuoted,
    /// After a backslash inside a quoted value.
    ExtQuotedEscape,
    /// Saw CR ending the size line.
    SizeLf,
    /// Chunk data, this many bytes left.
    Data,
    /// Expect CR after data.
    DataCr,
    /// Expect LF after data.
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// Saw CR ending a trailer line.
    TrailerLf,
    /// Saw CR of the final empty line.
    EndLf,
    Done,
}

/// What [`Chunked::next_run`] consumed.
enum Run {
    Data(usize),
    Framing(usize),
}

/// Streaming chunked decoder that validates framing without copying.
#[derive(Debug, Clone, Copy)]
pub struct Chunked {
    state: State,
    size: u64,
    line: u32,
    trailers: u32,
    /// Data bytes seen so far.
    pub data_total: u64,
    /// Most data bytes accepted.
    limit: u64,
    /// The current trailer line has had its colon.
    colon: bool,
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What [`Body::rewrite_in_place`] does to the framing of a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// Removes it: only the data is kept (for an HTTP/1.0 recipient).
    Decode,
    /// Writes every chunk-size line afresh from the size parsed: lowercase hex digits
    /// without leading zeros, then CRLF; no extensions, no whitespace. Data, line ends and
    /// the (validated) trailer section pass as they are, so the next hop sees exactly the
    /// framing this decoder read, whatever its own parser makes of extensions.
    Canonical,
}

/// Writes `size` as a canonical chunk-size line at the front of `out`; returns its length.
/// `out` is the line it replaces, which is never shorter: that has at least as many digits,
/// and CRLF.
fn put_size_line(out: &mut [u8], size: u64) -> usize {
    let digits = (64 - size.leading_zeros()).div_ceil(4).max(1) as usize;
    for (k, b) in out[..digits].iter_mut().enumerate() {
        *b = b"0123456789abcdef"[((size >> (4 * (digits - 1 - k))) & 0xf) as usize];
    }
    out[digits..digits + 2].copy_from_slice(b"\r\n");
    digits + 2
}

impl Chunked {
    pub fn new() -> Chunked {
        Chunked::with_limit(u64::MAX)
    }

    /// A decoder that fails with [`ChunkError::TooLarge`] once the data exceeds `limit`.
    pub fn with_limit(limit: u64) -> Chunked {
        Chunked { state: State::SizeStart, size: 0, line: 0, trailers: 0, data_total: 0, limit, colon: false }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Validates as much of `data` as possible; returns how many bytes were consumed.
    /// Stops at the end of the body (the rest belongs to the next message).
    pub fn scan(&mut self, data: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < data.len() && self.state != State::Done {
            i += match self.next_run(&data[i..], false)? {
                Run::Data(n) | Run::Framing(n) => n,
            };
        }
        Ok(i)
    }

    /// Like [`Chunked::scan`], but also rewrites what it consumes, in place: the bytes to
    /// forward are moved to the front of `data`. Returns (consumed, bytes to forward).
    ///
    /// With [`Rewrite::Canonical`], a chunk-size line is consumed only once it is whole (a
    /// partial one is left for the next call, with the bytes after it).
    pub fn rewrite_in_place(&mut self, data: &mut [u8], how: Rewrite) -> Result<(usize, usize), ChunkError> {
        let (mut i, mut w) = (0, 0);
        while i < data.len() && self.state != State::Done {
            if how == Rewrite::Canonical && self.state == State::SizeStart {
                let Some(n) = self.size_line(&data[i..])? else { break };
                w += put_size_line(&mut data[w..i + n], self.size);
                i += n;
                continue;
            }
            match self.next_run(&data[i..], how == Rewrite::Canonical)? {
                Run::Framing(n) if how == Rewrite::Decode => i += n,
                Run::Data(n) | Run::Framing(n) => {
                    // Nothing shrank yet (the usual case for a canonical client): no move.
                    if w != i {
                        data.copy_within(i..i + n, w);
                    }
                    i += n;
                    w += n;
                }
            }
        }
        Ok((i, w))
    }

    /// At the start of a chunk-size line: validates the whole line at the front of `data`
    /// and returns its length, or None (and no change) when its end has not arrived yet.
    fn size_line(&mut self, data: &[u8]) -> Result<Option<usize>, ChunkError> {
        let mut line = *self;
        for (i, &b) in data.iter().enumerate() {
            line.state = line.step(b)?;
            if matches!(line.state, State::Data | State::TrailerStart) {
                *self = line;
                return Ok(Some(i + 1));
            }
        }
        Ok(None)
    }

    /// Consumes the next run at the start of `data` (non-empty): chunk data in bulk, or
    /// framing bytes one by one until data starts, the body ends or `data` does (or, with
    /// `stop_at_line`, a chunk-size line starts).
    fn next_run(&mut self, data: &[u8], stop_at_line: bool) -> Result<Run, ChunkError> {
        if self.state == State::Data {
            let n = data.len().min(self.size.min(usize::MAX as u64) as usize);
            self.size -= n as u64;
            if self.size == 0 {
                self.state = State::DataCr;
            }
            return Ok(Run::Data(n));
        }
        let mut i = 0;
        while i < data.len() && !matches!(self.state, State::Data | State::Done) {
            if stop_at_line && self.state == State::SizeStart {
                break;
            }
            self.state = self.step(data[i])?;
            i += 1;
        }
        Ok(Run::Framing(i))
    }

    fn line_byte(&mut self) -> Result<(), ChunkError> {
        self.line += 1;
        if self.line > MAX_CHUNK_LINE {
            return Err(ChunkError::LineTooLong);
        }
        Ok(())
    }

    fn step(&mut self, b: u8) -> Result<State, ChunkError> {
        use State::*;
        Ok(match self.state {
            SizeStart | Size => {
                self.line_byte()?;
                if let Some(d) = (b as char).to_digit(16) {
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(d as u64))
                        .ok_or(ChunkError::SizeTooLarge)?;
                    Size
                } else if self.state == SizeStart {
                    return Err(ChunkError::BadSize);
                } else if b == b'\r' {
                    SizeLf
                } else if b == b';' {
                    Ext
                } else if b == b' ' || b == b'\t' {
                    SizeWs
                } else {
                    return Err(ChunkError::BadSize);
                }
            }
            // Only whitespace, then `;` or the end of the line, may follow the size: "5 5"
            // must not reach a next hop that might read it as 0x55.
            SizeWs => {
                self.line_byte()?;
                match b {
                    b' ' | b'\t' => SizeWs,
                    b';' => Ext,
                    b'\r' => SizeLf,
                    _ => return Err(ChunkError::BadSize),
                }
            }
            Ext => {
                self.line_byte()?;
                match b {
                    b'\r' => SizeLf,
                    b'"' => ExtQuoted,
                    b';' | b'=' | b' ' | b'\t' => Ext,
                    b if is_tchar(b) => Ext,
                    _ => return Err(ChunkError::BadExtension),
                }
            }
            ExtQuoted => {
                self.line_byte()?;
                match b {
                    b'"' => Ext,
                    b'\\' => ExtQuotedEscape,
                    b'\t' | b' '..=b'~' | 0x80..=0xff => ExtQuoted,
                    _ => return Err(ChunkError::BadExtension),
                }
            }
            ExtQuotedEscape => {
                self.line_byte()?;
                match b {
                    b'\t' | b' '..=b'~' | 0x80..=0xff => ExtQuoted,
                    _ => return Err(ChunkError::BadExtension),
                }
            }
            SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError::MissingCrlf);
                }
                self.line = 0;
                if self.size == 0 {
                    TrailerStart
                } else {
                    self.data_total = self.data_total.saturating_add(self.size);
                    if self.data_total > self.limit {
                        return Err(ChunkError::TooLarge);
                    }
                    Data
                }
            }
            Data => unreachable!("data is consumed in bulk by scan"),
            DataCr => match b {
                b'\r' => DataLf,
                _ => return Err(ChunkError::MissingCrlf),
            },
            DataLf => match b {
                b'\n' => SizeStart,
                _ => return Err(ChunkError::MissingCrlf),
            },
            TrailerStart | Trailer => {
                self.trailers += 1;
                if self.trailers > MAX_TRAILERS {
                    return Err(ChunkError::TrailersTooLarge);
                }
                match b {
                    b'\r' if self.state == TrailerStart => EndLf,
                    b'\r' if self.colon => TrailerLf,
                    b':' if self.state == Trailer && !self.colon => {
                        self.colon = true;
                        Trailer
                    }
                    b if !self.colon && is_tchar(b) => Trailer,
                    b'\t' | b' '..=b'~' | 0x80..=0xff if self.colon => Trailer,
                    _ => return Err(ChunkError::BadTrailer),
                }
            }
            TrailerLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadTrailer);
                }
                self.colon = false;
                TrailerStart
            }
            EndLf => {
                if b != b'\n' {
                    return Err(ChunkError::MissingCrlf);
                }
                Done
            }
            Done => Done,
        })
    }
}

/// Progress through one message body.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// No body, or the body is complete.
    Done,
    /// This many bytes left.
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

impl Body {
    /// Starts a body; a chunked one may carry at most `limit` data bytes.
    pub fn start(f: Framing, limit: u64) -> Body {
        match f {
            Framing::None | Framing::Length(0) => Body::Done,
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked(Chunked::with_limit(limit)),
            Framing::UntilClose => Body::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Body::Done)
    }

    /// Like [`Body::scan`], rewriting chunked framing in place (see [`Rewrite`]): returns
    /// (bytes consumed, bytes to forward, now at the front of `data`).
    pub fn rewrite_in_place(&mut self, data: &mut [u8], how: Rewrite) -> Result<(usize, usize), ChunkError> {
        match self {
            Body::Chunked(c) => {
                let r = c.rewrite_in_place(data, how)?;
                if c.is_done() {
                    *self = Body::Done;
                }
                Ok(r)
            }
            _ => self.scan(data).map(|n| (n, n)),
        }
    }

    /// Looks at `data` (bytes held after what was already scanned) and returns how many of
    /// them belong to this body and are valid to forward.
    pub fn scan(&mut self, data: &[u8]) -> Result<usize, ChunkError> {
        match self {
            Body::Done => Ok(0),
            Body::Length(left) => {
                let n = (*left).min(data.len() as u64);
                *left -= n;
                if *left == 0 {
                    *self = Body::Done;
                }
                Ok(n as usize)
            }
            Body::Chunked(c) => {
                let n = c.scan(data)?;
                if c.is_done() {
                    *self = Body::Done;
                }
                Ok(n)
            }
            Body::UntilClose => Ok(data.len()),
        }
    }
}

#[cfg(test)]
mod tests {
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
        ];
        for (input, want) in cases {
            let mut c = Chunked::new();
            assert_eq!(c.scan(input), Err(*want), "{:?}", String::from_utf8_lossy(input));
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
    fn extension_bytes() {
        for b in 0..=255u8 {
            let input = [&b"5;"[..], &[b], DONE].concat();
            let want = match b {
                _ if is_tchar_byte(b) || matches!(b, b';' | b'=' | b' ' | b'\t') => Ok((input.len(), true)),
                // An opening quote never closed before CR.
                b'"' => Err(ChunkError::BadExtension),
                // "5;" CR then CR: the line ended, LF missing.
                b'\r' => Err(ChunkError::MissingCrlf),
                _ => Err(ChunkError::BadExtension),
            };
            assert_eq!(outcome(&input), want, "{}", case("extension byte", b));

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
            for spelled in
                [format!("{size:x}"), format!("{size:X}"), format!("{size:08x}"), format!("{size:x};e=\"v\"")]
            {
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
}
