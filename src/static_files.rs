//! The static backup: a local directory (`--backup=file:///srv/site`) that the proxy serves
//! itself while traffic is on the backup, either as a site or as one sorry page.
//!
//! Given a [`Site`] and a complete request head, this file decides the answer (a file, 206,
//! 304, 301, 400, 404, 416, the read-only 503, or the sorry page), writes the response head
//! into the output buffer and returns the file region for the event loop to stream. It never
//! touches a socket and never reads a file body. It must never serve anything that resolves
//! outside the canonical root, a dot-file, or anything but a regular file, and it never
//! opens a path that could block the worker (a FIFO) or act on open (a device).

use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use httparse::Header;

use crate::answer::{reason, Answer};
use crate::buffer::Writer;
use crate::httpdate::{self, HttpDate};

const TEXT: &str = "text/plain; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const OCTETS: &str = "application/octet-stream";
const READ_ONLY: &str = "Service Unavailable: the site is read-only while it is served from a static copy\n";
const NOT_FOUND: &str = "Not Found\n";
const NO_PAGE: &str = "The site is temporarily unavailable. Please try again in a few minutes.\n";
/// Header slots for parsing the head again: the proxy's own limit plus the fields it adds
/// when forwarding (X-Forwarded-*).
const HEADERS: usize = crate::http1::MAX_HEADERS + 16;

/// A directory the proxy serves as a backup.
#[derive(Debug, Clone)]
pub struct Site {
    /// Canonical root directory.
    pub root: PathBuf,
    /// Sorry-page mode: every request gets this status (e.g. 503) with the page.
    pub status: Option<u16>,
    /// Canonical path of the sorry page (sorry mode only): `sorry_page` from the config or
    /// `root/index.html`.
    pub page: Option<PathBuf>,
}

/// What [`Site::serve`] decided.
pub struct Served {
    pub status: u16,
    /// File bytes to send after the head: None for HEAD requests, bodies written inline and
    /// empty files.
    pub body: Option<FileBody>,
}

/// A region of an open file for the event loop to stream.
pub struct FileBody {
    pub file: File,
    /// First byte to send and how many.
    pub offset: u64,
    pub len: u64,
}

impl Site {
    /// Config-time: checks the directory (and in sorry mode the page) exists; errors are
    /// short phrases a config error line can carry. `sorry_page`: None = root/index.html; a
    /// relative path is relative to the root; absolute allowed; ignored without `status`.
    pub fn open(dir: &Path, status: Option<u16>, sorry_page: Option<&str>) -> Result<Site, String> {
        if let Some(s) = status {
            if !(200..=599).contains(&s) {
                return Err(format!("status {s} must be between 200 and 599"));
            }
            // These cannot carry content (RFC 9110 §15.3.5, §15.3.6, §15.4.5), and the page
            // is the point of sorry mode.
            if matches!(s, 204 | 205 | 304) {
                return Err(format!("status {s} cannot carry a page"));
            }
        }
        let unreadable = |e: io::Error| format!("{dir:?} is not a readable directory: {}", phrase(&e));
        let root = fs::canonicalize(dir).map_err(unreadable)?;
        // read_dir, not is_dir: a directory we may not list is as useless as none.
        fs::read_dir(&root).map_err(unreadable)?;
        let page = match status {
            None => None,
            Some(_) => {
                // join() replaces the root when the page is absolute.
                let asked = root.join(sorry_page.unwrap_or("index.html"));
                let missing = |e: io::Error| format!("sorry page {asked:?} cannot be opened: {}", phrase(&e));
                let page = fs::canonicalize(&asked).map_err(missing)?;
                open_page(&page).map_err(missing)?;
                Some(page)
            }
        };
        Ok(Site { root, status, page })
    }

    /// Health of the backup: Ok while the directory can be read and, in sorry mode, the
    /// page can be opened.
    pub fn check(&self) -> Result<(), String> {
        fs::read_dir(&self.root).map_err(|e| format!("directory not readable: {}", phrase(&e)))?;
        if let Some(page) = &self.page {
            open_page(page).map_err(|e| format!("sorry page missing: {}", phrase(&e)))?;
        }
        Ok(())
    }

    /// Answers one request. `head` is a complete, already-validated request head as the
    /// proxy forwards it; `extra` holds header lines (each ending in CRLF) for every
    /// response; `retry_after` is the Retry-After of 503s in seconds; `now` dates the
    /// response. Writes the whole head into `out` (with a short inline body where there is
    /// no file) and returns the decision.
    pub fn serve(&self, head: &[u8], extra: &str, retry_after: u32, now: SystemTime, out: &mut Writer) -> Served {
        let mut slots = [httparse::EMPTY_HEADER; HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        let complete = matches!(req.parse(head), Ok(httparse::Status::Complete(_)));
        let method = req.method.unwrap_or("");
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut reply = Reply { extra, retry_after, date: HttpDate(secs), head_only: method == "HEAD", out };
        if let Some(status) = self.status {
            return self.sorry(status, &mut reply);
        }
        let (true, Some(target)) = (complete, req.path) else {
            return reply.text(400, "Bad Request: the request head could not be read\n", "");
        };
        if method != "GET" && method != "HEAD" {
            return reply.text(503, READ_ONLY, &format!("Retry-After: {retry_after}\r\n"));
        }
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let decoded = match decode_path(path.as_bytes()) {
            Ok(decoded) => decoded,
            Err(Refuse::Bad) => return reply.text(400, "Bad Request: the path is not validly percent-encoded\n", ""),
            Err(Refuse::Hidden) => return reply.text(404, NOT_FOUND, ""),
        };
        let mut asked = self.root.clone();
        asked.extend(decoded.split('/').filter(|segment| !segment.is_empty()));
        let (file, meta) = match (self.find(&asked), decoded.ends_with('/')) {
            (Some(Found::File(file, meta)), false) => (file, meta),
            // Like nginx: a directory is its index.html, never a listing, and only under
            // its slash URL so that relative links in the index resolve.
            (Some(Found::Dir), true) => {
                asked.push("index.html");
                match self.find(&asked) {
                    Some(Found::File(file, meta)) => (file, meta),
                    _ => return reply.text(404, NOT_FOUND, ""),
                }
            }
            (Some(Found::Dir), false) => return reply.redirect(path, query),
            // Also a file asked for as a directory (`/a.txt/`), as the kernel would say.
            _ => return reply.text(404, NOT_FOUND, ""),
        };
        // The type follows the name the client asked for, as the browser sees it.
        let content_type = content_type(&asked).unwrap_or(OCTETS);
        reply.file(file, &meta, content_type, req.headers, method == "GET")
    }

    /// A path inside the root, after symlinks: a directory, an opened regular file, or None
    /// (missing, outside the root, or another kind of file).
    fn find(&self, asked: &Path) -> Option<Found> {
        let real = fs::canonicalize(asked).ok()?;
        if !real.starts_with(&self.root) {
            return None;
        }
        // Stat before open: opening a FIFO blocks and opening a device can act.
        let meta = fs::metadata(&real).ok()?;
        if meta.is_dir() {
            return Some(Found::Dir);
        }
        if !meta.is_file() {
            return None;
        }
        // O_NOFOLLOW: `real` has no symlinks, so one appearing since is a swap; refuse it.
        let (file, meta) = open_regular(&real, libc::O_NOFOLLOW).ok()?;
        Some(Found::File(file, meta))
    }

    /// Sorry mode: the page with the configured status, whatever was asked.
    fn sorry(&self, status: u16, reply: &mut Reply) -> Served {
        let retry = match status {
            429 | 500.. => format!("Retry-After: {}\r\n", reply.retry_after),
            _ => String::new(),
        };
        let Some((file, meta, path)) = self.page.as_deref().and_then(|p| open_page(p).ok().map(|(f, m)| (f, m, p)))
        else {
            return reply.text(status, NO_PAGE, &retry);
        };
        let content_type = content_type(path).unwrap_or(HTML);
        let len = meta.len();
        // no-store: a CDN must not keep serving the failure page once the site is back.
        let fields =
            format!("Content-Type: {content_type}\r\nContent-Length: {len}\r\nCache-Control: no-store\r\n{retry}");
        reply.head(status, &fields);
        reply.body(status, file, 0, len)
    }
}

enum Found {
    Dir,
    File(File, Metadata),
}

/// Why a path is refused before touching the file system: 400 or 404.
#[derive(Debug, PartialEq)]
enum Refuse {
    Bad,
    Hidden,
}

/// The request path (no query) percent-decoded exactly once, or why not. Anything that
/// could climb out of the root or reach a dot-file is `Hidden` (404: we do not say why);
/// checking after decoding is what makes `%2e%2e` and `..%2f` harmless, and decoding once
/// is what keeps `%252e` a literal `%2e` file name.
fn decode_path(path: &[u8]) -> Result<String, Refuse> {
    if path.first() != Some(&b'/') {
        return Err(Refuse::Bad);
    }
    let mut out = Vec::with_capacity(path.len());
    let mut rest = path;
    while let Some((&c, tail)) = rest.split_first() {
        if c == b'%' {
            let (hi, lo) = match tail {
                [hi, lo, ..] => (hex(*hi).ok_or(Refuse::Bad)?, hex(*lo).ok_or(Refuse::Bad)?),
                _ => return Err(Refuse::Bad),
            };
            out.push(hi << 4 | lo);
            rest = &tail[2..];
        } else {
            out.push(c);
            rest = tail;
        }
    }
    if out.iter().any(|&c| c == 0 || c == b'\\') {
        return Err(Refuse::Hidden);
    }
    // Valid UTF-8 only: this also refuses overlong forms such as %c0%ae for '.'.
    let text = String::from_utf8(out).map_err(|_| Refuse::Hidden)?;
    // A leading dot covers `.`, `..` and every dot-file or dot-directory (.git, .env).
    if text.split('/').any(|segment| segment.starts_with('.')) {
        return Err(Refuse::Hidden);
    }
    Ok(text)
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// The response under construction: where it goes and what every response carries.
struct Reply<'a, 'b> {
    extra: &'a str,
    retry_after: u32,
    date: HttpDate,
    head_only: bool,
    out: &'a mut Writer<'b>,
}

impl Reply<'_, '_> {
    /// Status line, Server, Date, `fields` (each ending in CRLF), the caller's extra lines
    /// and the blank line.
    fn head(&mut self, status: u16, fields: &str) {
        let head = format!(
            "HTTP/1.1 {status} {}\r\nServer: failover\r\nDate: {}\r\n{fields}{}\r\n",
            reason(status),
            self.date,
            self.extra
        );
        self.out.put(head.as_bytes());
    }

    /// The file region to stream after a head already written; none for HEAD.
    fn body(&self, status: u16, file: File, offset: u64, len: u64) -> Served {
        let body = (!self.head_only && len > 0).then_some(FileBody { file, offset, len });
        Served { status, body }
    }

    /// A response with a short plain-text body written inline.
    fn text(&mut self, status: u16, body: &str, fields: &str) -> Served {
        let extra = format!("Date: {}\r\n{fields}{}", self.date, self.extra);
        let answer = Answer {
            status,
            content_type: TEXT,
            body: body.as_bytes(),
            close: false,
            head_only: self.head_only,
            extra: &extra,
        };
        answer.put(self.out);
        Served { status, body: None }
    }

    /// 301 to the directory's slash URL. Leading slashes collapse to one: `//evil.example`
    /// would otherwise send the browser to another host.
    fn redirect(&mut self, path: &str, query: Option<&str>) -> Served {
        let path = path.trim_start_matches('/');
        let location = match query {
            Some(query) => format!("/{path}/?{query}"),
            None => format!("/{path}/"),
        };
        self.text(301, &format!("Moved Permanently: {location}\n"), &format!("Location: {location}\r\n"))
    }

    /// A regular file, after conditionals (RFC 9110 §13) and Range (§14).
    fn file(&mut self, file: File, meta: &Metadata, content_type: &str, headers: &[Header], is_get: bool) -> Served {
        let size = meta.len();
        let tags = Validators::of(meta, self.date.0);
        let validators = format!("Last-Modified: {}\r\nETag: {}\r\n", HttpDate(tags.modified), tags.etag);
        if not_modified(headers, &tags) {
            self.head(304, &validators);
            return Served { status: 304, body: None };
        }
        let span = if is_get { requested_span(headers, &tags, size) } else { Span::Whole };
        let (status, offset, len, range) = match span {
            Span::Whole => (200, 0, size, String::new()),
            Span::Part { start, len } => {
                (206, start, len, format!("Content-Range: bytes {start}-{}/{size}\r\n", start + len - 1))
            }
            Span::Unsatisfiable => {
                return self.text(416, "Range Not Satisfiable\n", &format!("Content-Range: bytes */{size}\r\n"));
            }
        };
        let fields = format!(
            "Content-Type: {content_type}\r\nContent-Length: {len}\r\n{range}{validators}Accept-Ranges: bytes\r\n"
        );
        self.head(status, &fields);
        self.body(status, file, offset, len)
    }
}

/// What identifies one version of a file.
struct Validators {
    /// Strong: a new inode (replaced), size (rewritten) or nanosecond mtime (touched)
    /// changes it.
    etag: String,
    /// Last-Modified in unix seconds; never later than now (RFC 9110 §8.8.2.1), so a tree
    /// copied with future times still validates sensibly.
    modified: u64,
}

impl Validators {
    fn of(meta: &Metadata, now: u64) -> Validators {
        let mtime_ns = (meta.mtime() as u64).wrapping_mul(1_000_000_000).wrapping_add(meta.mtime_nsec() as u64);
        let etag = format!("\"{:x}-{:x}-{:x}\"", meta.ino(), meta.len(), mtime_ns);
        let modified = u64::try_from(meta.mtime()).unwrap_or(0).min(now);
        Validators { etag, modified }
    }
}

/// RFC 9110 §13.2.2 steps 3 and 4 for GET/HEAD: If-None-Match (weak comparison) decides
/// when present; otherwise If-Modified-Since, with whole seconds.
fn not_modified(headers: &[Header], tags: &Validators) -> bool {
    let mut none_match = fields(headers, "if-none-match").peekable();
    if none_match.peek().is_some() {
        return none_match.any(|list| list_matches(list, &tags.etag));
    }
    let since = fields(headers, "if-modified-since").next().and_then(|v| httpdate::parse(trim(v)));
    since.is_some_and(|since| tags.modified <= since)
}

/// Whether an If-None-Match list holds `*` or a tag equal to `etag` by weak comparison
/// (`W/"x"` matches `"x"`). A malformed list stops matching where it breaks, which at worst
/// sends the full file.
fn list_matches(list: &[u8], etag: &str) -> bool {
    let mut rest = list;
    loop {
        rest = trim_start(rest, b" \t,");
        if rest.starts_with(b"*") {
            return true;
        }
        let tag = rest.strip_prefix(b"W/").unwrap_or(rest);
        let Some(close) = tag.strip_prefix(b"\"").and_then(|t| t.iter().position(|&c| c == b'"')) else {
            return false;
        };
        let (quoted, after) = tag.split_at(close + 2);
        if quoted == etag.as_bytes() {
            return true;
        }
        rest = after;
    }
}

/// Which bytes a GET asked for.
#[derive(Debug, PartialEq)]
enum Span {
    Whole,
    Part { start: u64, len: u64 },
    Unsatisfiable,
}

/// Range with If-Range (RFC 9110 §13.1.5, §14.2). Anything we do not serve as one range
/// (several Range fields, a malformed one, several ranges) is ignored: a 200 is always a
/// correct answer to a Range request.
fn requested_span(headers: &[Header], tags: &Validators, size: u64) -> Span {
    let mut ranges = fields(headers, "range");
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return Span::Whole;
    };
    if let Some(condition) = fields(headers, "if-range").next() {
        let condition = trim(condition);
        // An entity tag compares strongly (a weak one never matches, as ours is strong);
        // a date must be exactly Last-Modified.
        let holds = if condition.starts_with(b"\"") || condition.starts_with(b"W/") {
            condition == tags.etag.as_bytes()
        } else {
            httpdate::parse(condition) == Some(tags.modified)
        };
        if !holds {
            return Span::Whole;
        }
    }
    byte_range(trim(range), size)
}

/// One `bytes=` range-spec: `a-b`, `a-` or `-n`. The unit is case-insensitive; numbers too
/// large for u64 saturate, which makes them unsatisfiable or clamped rather than ignored.
fn byte_range(value: &[u8], size: u64) -> Span {
    let Some(set) = value.get(..6).filter(|unit| unit.eq_ignore_ascii_case(b"bytes=")).map(|_| &value[6..]) else {
        return Span::Whole;
    };
    let mut specs = set.split(|&c| c == b',').map(trim).filter(|spec| !spec.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return Span::Whole;
    };
    let Some(dash) = spec.iter().position(|&c| c == b'-') else {
        return Span::Whole;
    };
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    match (number(first), number(last)) {
        (Some(first), Some(last)) if first <= last => from(first, last, size),
        (Some(first), None) if last.is_empty() => from(first, u64::MAX, size),
        (None, Some(suffix)) if first.is_empty() => match suffix.min(size) {
            0 => Span::Unsatisfiable,
            len => Span::Part { start: size - len, len },
        },
        _ => Span::Whole,
    }
}

/// Bytes `first..=last`, the end clamped to the file.
fn from(first: u64, last: u64, size: u64) -> Span {
    if first >= size {
        return Span::Unsatisfiable;
    }
    Span::Part { start: first, len: last.min(size - 1) - first + 1 }
}

/// ASCII digits (at least one) as a saturating u64.
fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &c| n.saturating_mul(10).saturating_add(u64::from(c - b'0'))))
}

/// Every value of the header `name` (lower case), in order.
fn fields<'h>(headers: &'h [Header<'h>], name: &'static str) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

fn trim(s: &[u8]) -> &[u8] {
    let s = trim_start(s, b" \t");
    let end = s.iter().rposition(|c| !b" \t".contains(c)).map_or(0, |i| i + 1);
    &s[..end]
}

fn trim_start<'s>(s: &'s [u8], drop: &[u8]) -> &'s [u8] {
    let start = s.iter().position(|c| !drop.contains(c)).unwrap_or(s.len());
    &s[start..]
}

/// Content-Type by extension (case-insensitive); None for one we do not know.
fn content_type(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "html" | "htm" => HTML,
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "txt" => TEXT,
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "woff2" => "font/woff2",
        "wasm" => "application/wasm",
        _ => return None,
    })
}

/// The sorry page, wherever the config put it (it may be a symlink, or outside the root).
fn open_page(path: &Path) -> io::Result<(File, Metadata)> {
    if !fs::metadata(path)?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    open_regular(path, 0)
}

/// Opens a file the caller has just seen to be regular, and checks the file it got is.
/// O_NONBLOCK keeps a FIFO swapped in since the stat from blocking the open; it changes
/// nothing for regular files, which nginx also opens this way before sendfile.
fn open_regular(path: &Path, flags: i32) -> io::Result<(File, Metadata)> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | flags).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok((file, meta))
}

/// An I/O error as its bare phrase ("No such file or directory"), for config error lines.
fn phrase(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(end) => text[..end].to_string(),
        None => text,
    }
}

#[cfg(test)]
#[path = "static_files_tests.rs"]
mod tests;
