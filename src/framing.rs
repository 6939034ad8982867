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
    /// After the size: optional whitespace and extensions until CR.
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
        while i < data.len() {
            if self.state == State::Data {
                let n = (data.len() - i).min(self.size.min(usize::MAX as u64) as usize);
                i += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = self.step(b)?;
            if self.state == State::Done {
                break;
            }
        }
        Ok(i)
    }

    /// Like [`Chunked::scan`], but also removes the framing: the data bytes of what was
    /// consumed are moved to the front of `data`. Returns (consumed, data bytes produced).
    pub fn decode_in_place(&mut self, data: &mut [u8]) -> Result<(usize, usize), ChunkError> {
        let (mut i, mut w) = (0, 0);
        while i < data.len() {
            if self.state == State::Data {
                let n = (data.len() - i).min(self.size.min(usize::MAX as u64) as usize);
                data.copy_within(i..i + n, w);
                i += n;
                w += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = self.step(b)?;
            if self.state == State::Done {
                break;
            }
        }
        Ok((i, w))
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
                } else if b == b';' || b == b' ' || b == b'\t' {
                    Ext
                } else {
                    return Err(ChunkError::BadSize);
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

    /// Like [`Body::scan`], removing chunked framing in place: returns (bytes consumed,
    /// payload bytes now at the front of `data`).
    pub fn decode_in_place(&mut self, data: &mut [u8]) -> Result<(usize, usize), ChunkError> {
        match self {
            Body::Chunked(c) => {
                let r = c.decode_in_place(data)?;
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
            let (n1, p1) = c.decode_in_place(&mut a).unwrap();
            assert_eq!(n1, split);
            payload.extend_from_slice(&a[..p1]);
            let mut b = raw[split..].to_vec();
            let (n2, p2) = if c.is_done() { (0, 0) } else { c.decode_in_place(&mut b).unwrap() };
            payload.extend_from_slice(&b[..p2]);
            assert_eq!(payload, b"hello world", "split {split}");
            assert_eq!(n1 + n2, raw.len() - 4, "stops before the next message, split {split}");
        }
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
}
