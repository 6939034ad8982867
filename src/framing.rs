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

/// Where the decoder is. The chunk-size line follows RFC 9112 7.1.1 to the letter:
/// `chunk-size [ chunk-ext ] CRLF` with
/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`, so
/// whitespace is allowed only where BWS is: before a `;` or an `=`, or after one. "5 \r\n",
/// "5;\r\n" and "5;a \r\n" are refused: hops disagree on them, and the canonical rewrite
/// drops extensions anyway, so refusing costs a valid client nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a chunk-size line; no digit yet.
    SizeStart,
    /// Reading hex digits.
    Size,
    /// Whitespace after the size digits: a `;` must follow.
    SizeWs,
    /// After `;` (and whitespace): an extension name must start.
    ExtNameStart,
    /// Inside an extension name.
    ExtName,
    /// Whitespace after a name: `;` or `=` must follow.
    ExtNameWs,
    /// After `=` (and whitespace): a token or a quoted string must start.
    ExtValueStart,
    /// Inside a token value.
    ExtToken,
    /// Inside a quoted extension value.
    ExtQuoted,
    /// After a backslash inside a quoted value.
    ExtQuotedEscape,
    /// After the closing quote of a value.
    ExtValueEnd,
    /// Whitespace after a value: `;` must follow.
    ExtValueWs,
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
    /// The canonical rewrite drops the current trailer line ([`forbidden_trailer`]).
    drop_line: bool,
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Trailer fields the canonical rewrite drops. RFC 9110 6.5.1: a sender must not put in
/// trailers a field needed before the content is processed, "such as those that describe
/// message framing, routing, authentication, request modifiers, response controls, or
/// content format" (RFC 7230 4.1.2 gave examples). A next hop that merged one into the head
/// would act on a field the proxy never checked ("Host: evil", "Content-Length: 5"). So:
/// framing; routing; the controls and conditionals of a request; credentials, challenges
/// and cookies; response control data; content format; hop-by-hop fields; and the
/// forwarding fields the proxy itself writes. Lower case.
const DROPPED_TRAILERS: &[&str] = &[
    // Framing.
    "content-length",
    "transfer-encoding",
    "trailer",
    // Routing.
    "host",
    // Request controls and conditionals.
    "cache-control",
    "expect",
    "max-forwards",
    "pragma",
    "range",
    "te",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    // Authentication.
    "authorization",
    "proxy-authorization",
    "www-authenticate",
    "proxy-authenticate",
    "authentication-info",
    "proxy-authentication-info",
    "cookie",
    "set-cookie",
    // Response control data.
    "age",
    "expires",
    "date",
    "location",
    "retry-after",
    "vary",
    "warning",
    // Content format.
    "content-encoding",
    "content-type",
    "content-range",
    // Hop by hop.
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    // Written by the proxy from the head (http1.rs): never taken from a client's trailer.
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Length of the longest name in [`DROPPED_TRAILERS`]: a longer name is kept as soon as
/// it is seen to be longer.
const MAX_DROPPED_NAME: usize = {
    let (mut max, mut i) = (0, 0);
    while i < DROPPED_TRAILERS.len() {
        if DROPPED_TRAILERS[i].len() > max {
            max = DROPPED_TRAILERS[i].len();
        }
        i += 1;
    }
    max
};

/// Whether a trailer field of this name is dropped by [`Rewrite::Canonical`].
pub fn forbidden_trailer(name: &[u8]) -> bool {
    name.len() <= MAX_DROPPED_NAME && DROPPED_TRAILERS.iter().any(|d| name.eq_ignore_ascii_case(d.as_bytes()))
}

/// What [`Body::rewrite_in_place`] does to the framing of a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// Removes it: only the data is kept (for an HTTP/1.0 recipient).
    Decode,
    /// Writes every chunk-size line afresh from the size parsed: lowercase hex digits
    /// without leading zeros, then CRLF; no extensions, no whitespace. Data, line ends and
    /// the (validated) trailer section pass as they are, so the next hop sees exactly the
    /// framing this decoder read, whatever its own parser makes of extensions; except that
    /// trailer fields that must not be trailers ([`forbidden_trailer`]) are dropped.
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
        Chunked {
            state: State::SizeStart,
            size: 0,
            line: 0,
            trailers: 0,
            data_total: 0,
            limit,
            colon: false,
            drop_line: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes of the current chunk not yet seen (0 outside a chunk's data).
    pub fn data_left(&self) -> u64 {
        if self.state == State::Data {
            self.size
        } else {
            0
        }
    }

    /// Counts off `n` data bytes of the current chunk (at most [`Chunked::data_left`]);
    /// its line end comes next once they are all seen.
    pub fn took(&mut self, n: u64) {
        debug_assert!(n <= self.data_left());
        self.size -= n.min(self.size);
        if self.size == 0 && self.state == State::Data {
            self.state = State::DataCr;
        }
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
    /// With [`Rewrite::Canonical`], a chunk-size line is consumed only once it is whole, and
    /// a trailer field line only once its name is known (kept or dropped); a partial one is
    /// left for the next call, with the bytes after it.
    pub fn rewrite_in_place(&mut self, data: &mut [u8], how: Rewrite) -> Result<(usize, usize), ChunkError> {
        let canonical = how == Rewrite::Canonical;
        let (mut i, mut w) = (0, 0);
        while i < data.len() && self.state != State::Done {
            if canonical && self.state == State::SizeStart {
                let Some(n) = self.size_line(&data[i..])? else { break };
                w += put_size_line(&mut data[w..i + n], self.size);
                i += n;
                continue;
            }
            // A field line (a CR here starts the empty line that ends the trailers).
            if canonical && self.state == State::TrailerStart && data[i] != b'\r' {
                let Some(n) = self.trailer_name(&data[i..])? else { break };
                if !self.drop_line {
                    if w != i {
                        data.copy_within(i..i + n, w);
                    }
                    w += n;
                }
                i += n;
                continue;
            }
            // A run of a trailer line ends with that line (see next_run).
            let dropping = self.drop_line;
            match self.next_run(&data[i..], canonical)? {
                Run::Framing(n) if how == Rewrite::Decode || dropping => i += n,
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

    /// At the start of a trailer field line: validates its name and colon at the front of
    /// `data` and decides whether the canonical rewrite drops the line; returns how many
    /// bytes that took, or None (and no change) when the name has not arrived whole yet. A
    /// name longer than any dropped one is kept without waiting for its colon, so at most
    /// a few bytes are ever held.
    fn trailer_name(&mut self, data: &[u8]) -> Result<Option<usize>, ChunkError> {
        let mut line = *self;
        for (i, &b) in data.iter().enumerate() {
            line.state = line.step(b)?;
            if line.colon || i == MAX_DROPPED_NAME {
                line.drop_line = line.colon && forbidden_trailer(&data[..i]);
                *self = line;
                return Ok(Some(i + 1));
            }
        }
        Ok(None)
    }

    /// Consumes the next run at the start of `data` (non-empty): chunk data in bulk, or
    /// framing bytes one by one until data starts, the body ends or `data` does (or, with
    /// `stop_at_line`, a chunk-size line or a trailer line starts).
    fn next_run(&mut self, data: &[u8], stop_at_line: bool) -> Result<Run, ChunkError> {
        if self.state == State::Data {
            let n = data.len().min(self.size.min(usize::MAX as u64) as usize);
            self.took(n as u64);
            return Ok(Run::Data(n));
        }
        let mut i = 0;
        while i < data.len() && !matches!(self.state, State::Data | State::Done) {
            self.state = self.step(data[i])?;
            i += 1;
            if stop_at_line && matches!(self.state, State::SizeStart | State::TrailerStart) {
                break;
            }
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
                    ExtNameStart
                } else if is_ws(b) {
                    SizeWs
                } else {
                    return Err(ChunkError::BadSize);
                }
            }
            // Only whitespace, then `;`, may follow the size: "5 5" must not reach a next hop
            // that might read it as 0x55, nor "5 \r\n" one that reads no size at all.
            SizeWs => {
                self.line_byte()?;
                match b {
                    b';' => ExtNameStart,
                    _ if is_ws(b) => SizeWs,
                    _ => return Err(ChunkError::BadSize),
                }
            }
            ExtNameStart | ExtName | ExtNameWs | ExtValueStart | ExtToken | ExtValueEnd | ExtValueWs => {
                self.line_byte()?;
                let state = self.state;
                match b {
                    _ if is_tchar(b) && matches!(state, ExtNameStart | ExtName) => ExtName,
                    _ if is_tchar(b) && matches!(state, ExtValueStart | ExtToken) => ExtToken,
                    b'"' if state == ExtValueStart => ExtQuoted,
                    b'\r' if matches!(state, ExtName | ExtToken | ExtValueEnd) => SizeLf,
                    b';' if !matches!(state, ExtNameStart | ExtValueStart) => ExtNameStart,
                    b'=' if matches!(state, ExtName | ExtNameWs) => ExtValueStart,
                    // BWS: after ";" or "=", or before one of them.
                    _ if is_ws(b) => match state {
                        ExtName => ExtNameWs,
                        ExtToken | ExtValueEnd => ExtValueWs,
                        _ => state,
                    },
                    _ => return Err(ChunkError::BadExtension),
                }
            }
            ExtQuoted => {
                self.line_byte()?;
                match b {
                    b'"' => ExtValueEnd,
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
                self.drop_line = false;
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

    /// How many more bytes of this body come with no framing between them: what is left
    /// of a Content-Length body, no end for one that runs to the close, the rest of the
    /// current chunk's data for a chunked one (none while a size line or a line end is
    /// next: that must be read), none for a finished one.
    pub fn unframed_left(&self) -> u64 {
        match self {
            Body::Length(left) => *left,
            Body::UntilClose => u64::MAX,
            Body::Chunked(c) => c.data_left(),
            Body::Done => 0,
        }
    }

    /// Counts off `n` bytes that went on without being looked at (at most
    /// [`Body::unframed_left`]).
    pub fn took(&mut self, n: u64) {
        match self {
            Body::Length(left) => {
                debug_assert!(n <= *left);
                *left -= n.min(*left);
                if *left == 0 {
                    *self = Body::Done;
                }
            }
            Body::Chunked(c) => c.took(n),
            Body::UntilClose | Body::Done => {}
        }
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
                self.took(n);
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
#[path = "framing_tests.rs"]
mod tests;
