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
mod tests {
    use super::*;
    use crate::buffer::Pool;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{symlink, FileExt};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    const SECRET: &str = "OUTSIDE-SECRET";
    const NOW: u64 = 1_700_100_000;
    /// digits.txt's mtime: half a second past a whole second, to test truncation.
    const MTIME: u64 = 1_700_000_000;
    const MTIME_DATE: &str = "Tue, 14 Nov 2023 22:13:20 GMT";
    const EXTRA: &str = "Connection: keep-alive\r\n";

    /// Request header fields of a case.
    type Fields<'a> = &'a [(&'a str, &'a str)];
    /// (target, method, fields, status, Content-Range, body)
    type RangeCase<'a> = (&'a str, &'a str, Fields<'a>, u16, Option<&'a str>, &'a str);
    /// (status, sorry_page, Retry-After, Content-Type, body)
    type SorryCase<'a> = (u16, Option<&'a str>, Option<&'a str>, &'a str, &'a str);
    /// (dir, status, sorry_page, result)
    type OpenCase<'a> = (&'a Path, Option<u16>, Option<&'a str>, Result<(), String>);

    /// A site and an outside directory under one temp directory, removed on drop.
    struct Tree {
        base: PathBuf,
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.base);
        }
    }

    impl Tree {
        fn new(name: &str) -> Tree {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let base = std::env::temp_dir().join(format!("failover-static-{name}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&base);
            for dir in ["site/sub", "site/a", "site/nodex", "site/evil.com", "site/.git", "outside"] {
                fs::create_dir_all(base.join(dir)).unwrap();
            }
            let files: &[(&str, &[u8])] = &[
                ("outside/secret.txt", SECRET.as_bytes()),
                ("x", SECRET.as_bytes()),
                ("site/index.html", b"<h1>home</h1>\n"),
                ("site/a.txt", b"hello a\n"),
                ("site/a b.txt", b"space\n"),
                ("site/100%.txt", b"percent\n"),
                ("site/digits.txt", b"0123456789"),
                ("site/empty.txt", b""),
                ("site/sub/index.html", b"sub index\n"),
                ("site/.env", SECRET.as_bytes()),
                ("site/.git/config", SECRET.as_bytes()),
                ("site/sub/.hidden", SECRET.as_bytes()),
            ];
            for (path, body) in files {
                fs::write(base.join(path), body).unwrap();
            }
            for name in MIME.iter().map(|(target, _)| &target[1..]) {
                fs::write(base.join("site").join(name), name).unwrap();
            }
            let site = base.join("site");
            symlink(base.join("outside/secret.txt"), site.join("link-out")).unwrap();
            symlink(base.join("outside"), site.join("link-dir-out")).unwrap();
            symlink("a.txt", site.join("link-in")).unwrap();
            let fifo = std::ffi::CString::new(site.join("fifo").as_os_str().as_bytes()).unwrap();
            // SAFETY: `fifo` is a NUL-terminated path that outlives the call.
            assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
            let digits = File::options().write(true).open(site.join("digits.txt")).unwrap();
            digits.set_modified(UNIX_EPOCH + Duration::new(MTIME, 500_000_000)).unwrap();
            Tree { base }
        }

        fn site(&self) -> PathBuf {
            self.base.join("site")
        }

        fn open(&self) -> Site {
            Site::open(&self.site(), None, None).unwrap()
        }
    }

    /// A response as the client would see it, plus what `serve` returned.
    #[derive(Debug)]
    struct Response {
        head: String,
        status: u16,
        fields: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Response {
        fn field(&self, name: &str) -> Option<&str> {
            self.fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
    }

    /// Serves one request and checks what every response must have.
    fn ask(site: &Site, method: &str, target: &str, headers: &[(&str, &str)]) -> Response {
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: example.com\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut pool = Pool::new(1);
        let mut buf = pool.take();
        let mut out = Writer { buf: &mut buf, overflow: false };
        let served = site.serve(head.as_bytes(), EXTRA, 7, UNIX_EPOCH + Duration::from_secs(NOW), &mut out);
        assert!(!out.overflow);
        let text = String::from_utf8(buf.bytes().to_vec()).unwrap();
        let (head, inline) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line[9..12].parse().unwrap();
        let fields: Vec<(String, String)> =
            lines.map(|l| l.split_once(": ").unwrap()).map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let mut body = inline.as_bytes().to_vec();
        if let Some(file) = served.body {
            assert!(body.is_empty() && method != "HEAD");
            body = vec![0; file.len as usize];
            file.file.read_exact_at(&mut body, file.offset).unwrap();
        }
        let response = Response { head: format!("{head}\r\n\r\n"), status, fields, body };
        assert_eq!(served.status, status, "{response:?}");
        assert_eq!(status_line, format!("HTTP/1.1 {status} {}", reason(status)));
        assert_eq!(response.field("Server"), Some("failover"));
        assert_eq!(response.field("Date"), Some("Thu, 16 Nov 2023 02:00:00 GMT"));
        assert!(response.head.ends_with(&format!("\r\n{EXTRA}\r\n")), "{}", response.head);
        if status != 304 {
            let len: usize = response.field("Content-Length").unwrap().parse().unwrap();
            assert_eq!(response.body.len(), if method == "HEAD" { 0 } else { len }, "{response:?}");
        }
        response
    }

    fn etag(path: &Path) -> String {
        let meta = fs::metadata(path).unwrap();
        format!(
            "\"{:x}-{:x}-{:x}\"",
            meta.ino(),
            meta.len(),
            meta.mtime() as u64 * 1_000_000_000 + meta.mtime_nsec() as u64
        )
    }

    #[test]
    fn full_response_bytes() {
        let tree = Tree::new("full");
        let site = tree.open();
        let meta = fs::metadata(tree.site().join("digits.txt")).unwrap();
        let want = format!(
            "HTTP/1.1 200 OK\r\nServer: failover\r\nDate: Thu, 16 Nov 2023 02:00:00 GMT\r\n\
             Content-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\n\
             Last-Modified: {MTIME_DATE}\r\nETag: \"{:x}-a-{:x}\"\r\nAccept-Ranges: bytes\r\n{EXTRA}\r\n",
            meta.ino(),
            MTIME * 1_000_000_000 + 500_000_000,
        );
        let get = ask(&site, "GET", "/digits.txt", &[]);
        assert_eq!((get.head.as_str(), get.body.as_slice()), (want.as_str(), &b"0123456789"[..]));
        let head = ask(&site, "HEAD", "/digits.txt", &[]);
        assert_eq!((head.head.as_str(), head.body.as_slice()), (want.as_str(), &b""[..]));
        let empty = ask(&site, "GET", "/empty.txt", &[]);
        assert_eq!((empty.status, empty.field("Content-Length"), empty.body.len()), (200, Some("0"), 0));
    }

    #[test]
    fn path_safety_table() {
        let tree = Tree::new("paths");
        let site = tree.open();
        // (target, status, body for 200 or Location for 301)
        let cases: &[(&str, u16, &str)] = &[
            ("/../x", 404, ""),
            ("/%2e%2e/x", 404, ""),
            ("/%2E%2E/x", 404, ""),
            ("/%252e%252e/x", 404, ""),
            ("/..%2fx", 404, ""),
            ("/%2e%2e%2fx", 404, ""),
            ("/.%2e/x", 404, ""),
            ("/a/../../x", 404, ""),
            ("/a/%2e%2e/%2e%2e/x", 404, ""),
            ("/sub/..", 404, ""),
            ("//../x", 404, ""),
            ("/..\\x", 404, ""),
            ("/%5c..%5cx", 404, ""),
            ("/a/..%5c..%5cx", 404, ""),
            ("/%2e%2e%5cx", 404, ""),
            ("/x%00.html", 404, ""),
            ("/..%00/x", 404, ""),
            ("/%c0%ae%c0%ae/x", 404, ""),
            ("/%e0%80%ae/", 404, ""),
            ("/%ff", 404, ""),
            ("/.", 404, ""),
            ("/..", 404, ""),
            ("/%2e", 404, ""),
            ("/./a.txt", 404, ""),
            ("/%2e/a.txt", 404, ""),
            ("/....//x", 404, ""),
            ("/.env", 404, ""),
            ("/%2eenv", 404, ""),
            ("/.git/config", 404, ""),
            ("/sub/.hidden", 404, ""),
            ("/link-out", 404, ""),
            ("/link-dir-out/secret.txt", 404, ""),
            ("/fifo", 404, ""),
            ("/nodex/", 404, ""),
            ("/missing.txt", 404, ""),
            ("/a.txt/", 404, ""),
            ("/x?/../x", 404, ""),
            ("/%", 400, ""),
            ("/%zz", 400, ""),
            ("/%2", 400, ""),
            ("/a.txt%", 400, ""),
            ("/%g0", 400, ""),
            ("x", 400, ""),
            ("*", 400, ""),
            ("/", 200, "<h1>home</h1>\n"),
            ("/a.txt", 200, "hello a\n"),
            ("/a.txt?v=2", 200, "hello a\n"),
            ("/a.txt?/../../x", 200, "hello a\n"),
            ("//a.txt", 200, "hello a\n"),
            ("/a%20b.txt", 200, "space\n"),
            ("/100%25.txt", 200, "percent\n"),
            ("/sub/", 200, "sub index\n"),
            ("/sub//index.html", 200, "sub index\n"),
            ("/%73ub/", 200, "sub index\n"),
            ("/link-in", 200, "hello a\n"),
            ("/sub", 301, "/sub/"),
            ("/sub?x=1", 301, "/sub/?x=1"),
            ("/%73ub", 301, "/%73ub/"),
            ("//evil.com", 301, "/evil.com/"),
            ("///evil.com?a", 301, "/evil.com/?a"),
        ];
        for &(target, status, want) in cases {
            let r = ask(&site, "GET", target, &[]);
            let body = String::from_utf8_lossy(&r.body);
            assert!(!body.contains(SECRET), "{target}: {body}");
            assert_eq!(r.status, status, "{target}: {r:?}");
            match status {
                200 => assert_eq!(body, want, "{target}"),
                301 => assert_eq!(r.field("Location"), Some(want), "{target}"),
                404 => assert_eq!(body, NOT_FOUND, "{target}"),
                _ => assert_eq!(r.field("Content-Type"), Some(TEXT), "{target}"),
            }
        }
    }

    const MIME: &[(&str, &str)] = &[
        ("/page.html", "text/html; charset=utf-8"),
        ("/page.htm", "text/html; charset=utf-8"),
        ("/PAGE2.HTML", "text/html; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/lib.mjs", "text/javascript; charset=utf-8"),
        ("/data.json", "application/json"),
        ("/logo.svg", "image/svg+xml"),
        ("/pic.png", "image/png"),
        ("/pic.jpg", "image/jpeg"),
        ("/photo.JPEG", "image/jpeg"),
        ("/anim.gif", "image/gif"),
        ("/img.webp", "image/webp"),
        ("/favicon.ico", "image/x-icon"),
        ("/notes.txt", "text/plain; charset=utf-8"),
        ("/feed.xml", "application/xml"),
        ("/doc.pdf", "application/pdf"),
        ("/font.woff2", "font/woff2"),
        ("/mod.wasm", "application/wasm"),
        ("/blob.bin", "application/octet-stream"),
        ("/archive.tar.gz", "application/octet-stream"),
        ("/noext", "application/octet-stream"),
        ("/trailing.", "application/octet-stream"),
    ];

    #[test]
    fn mime_table() {
        let tree = Tree::new("mime");
        let site = tree.open();
        for &(target, want) in MIME {
            let r = ask(&site, "GET", target, &[]);
            assert_eq!((r.status, r.field("Content-Type")), (200, Some(want)), "{target}");
            assert_eq!(r.body, &target.as_bytes()[1..]);
        }
        assert_eq!(ask(&site, "GET", "/sub/", &[]).field("Content-Type"), Some(HTML));
    }

    #[test]
    fn conditional_table() {
        let tree = Tree::new("conditional");
        let site = tree.open();
        let tag = etag(&tree.site().join("digits.txt"));
        let weak = format!("W/{tag}");
        let list = format!("\"a\", {tag}");
        let tight = format!("\"a\",{weak} ,\"b\"");
        const EARLIER: &str = "Tue, 14 Nov 2023 22:13:19 GMT";
        const LATER: &str = "Tue, 14 Nov 2023 22:13:21 GMT";
        let cases: &[(&str, Fields, u16)] = &[
            ("GET", &[("If-None-Match", &tag)], 304),
            ("HEAD", &[("If-None-Match", &tag)], 304),
            ("GET", &[("if-none-match", &tag)], 304),
            ("GET", &[("If-None-Match", "\"nope\"")], 200),
            ("GET", &[("If-None-Match", &list)], 304),
            ("GET", &[("If-None-Match", &tight)], 304),
            ("GET", &[("If-None-Match", "\"a\""), ("If-None-Match", &tag)], 304),
            ("GET", &[("If-None-Match", &weak)], 304),
            ("GET", &[("If-None-Match", "*")], 304),
            ("GET", &[("If-None-Match", "\"a\", *")], 304),
            ("GET", &[("If-None-Match", "garbage")], 200),
            ("GET", &[("If-None-Match", "\"unterminated")], 200),
            ("GET", &[("If-None-Match", "")], 200),
            ("GET", &[("If-Modified-Since", MTIME_DATE)], 304),
            ("HEAD", &[("If-Modified-Since", MTIME_DATE)], 304),
            ("GET", &[("If-Modified-Since", LATER)], 304),
            ("GET", &[("If-Modified-Since", EARLIER)], 200),
            ("GET", &[("If-Modified-Since", "Tuesday, 14-Nov-23 22:13:20 GMT")], 304),
            ("GET", &[("If-Modified-Since", "Tue Nov 14 22:13:20 2023")], 304),
            ("GET", &[("If-Modified-Since", "yesterday")], 200),
            ("GET", &[("If-Modified-Since", "")], 200),
            ("GET", &[("If-None-Match", "\"nope\""), ("If-Modified-Since", LATER)], 200),
            ("GET", &[("If-None-Match", &tag), ("If-Modified-Since", EARLIER)], 304),
            ("GET", &[("If-None-Match", &tag), ("Range", "bytes=0-1")], 304),
        ];
        for &(method, headers, status) in cases {
            let r = ask(&site, method, "/digits.txt", headers);
            assert_eq!(r.status, status, "{method} {headers:?}");
            assert_eq!(r.field("ETag"), Some(tag.as_str()));
            assert_eq!(r.field("Last-Modified"), Some(MTIME_DATE));
            if status == 304 {
                assert!(r.body.is_empty() && r.field("Content-Length").is_none(), "{r:?}");
            }
        }
    }

    #[test]
    fn range_table() {
        let tree = Tree::new("range");
        let site = tree.open();
        let tag = etag(&tree.site().join("digits.txt"));
        let weak = format!("W/{tag}");
        let all = "0123456789";
        let cases: &[RangeCase] = &[
            ("/digits.txt", "GET", &[("Range", "bytes=0-3")], 206, Some("bytes 0-3/10"), "0123"),
            ("/digits.txt", "GET", &[("Range", "bytes=2-")], 206, Some("bytes 2-9/10"), "23456789"),
            ("/digits.txt", "GET", &[("Range", "bytes=-3")], 206, Some("bytes 7-9/10"), "789"),
            ("/digits.txt", "GET", &[("Range", "bytes=9-9")], 206, Some("bytes 9-9/10"), "9"),
            ("/digits.txt", "GET", &[("Range", "bytes=0-0")], 206, Some("bytes 0-0/10"), "0"),
            ("/digits.txt", "GET", &[("Range", "bytes=5-100")], 206, Some("bytes 5-9/10"), "56789"),
            ("/digits.txt", "GET", &[("Range", "bytes=0-99999999999999999999999")], 206, Some("bytes 0-9/10"), all),
            ("/digits.txt", "GET", &[("Range", "bytes=-100")], 206, Some("bytes 0-9/10"), all),
            ("/digits.txt", "GET", &[("Range", "bytes=0-")], 206, Some("bytes 0-9/10"), all),
            ("/digits.txt", "GET", &[("Range", "BYTES=1-1")], 206, Some("bytes 1-1/10"), "1"),
            ("/digits.txt", "GET", &[("Range", "bytes= 1-2 ")], 206, Some("bytes 1-2/10"), "12"),
            ("/digits.txt", "GET", &[("Range", "bytes=1-2,")], 206, Some("bytes 1-2/10"), "12"),
            ("/digits.txt", "GET", &[("Range", "bytes=10-")], 416, Some("bytes */10"), "Range Not Satisfiable\n"),
            ("/digits.txt", "GET", &[("Range", "bytes=10-20")], 416, Some("bytes */10"), "Range Not Satisfiable\n"),
            ("/digits.txt", "GET", &[("Range", "bytes=-0")], 416, Some("bytes */10"), "Range Not Satisfiable\n"),
            (
                "/digits.txt",
                "GET",
                &[("Range", "bytes=99999999999999999999999-")],
                416,
                Some("bytes */10"),
                "Range Not Satisfiable\n",
            ),
            ("/empty.txt", "GET", &[("Range", "bytes=0-")], 416, Some("bytes */0"), "Range Not Satisfiable\n"),
            ("/empty.txt", "GET", &[("Range", "bytes=-1")], 416, Some("bytes */0"), "Range Not Satisfiable\n"),
            ("/digits.txt", "GET", &[("Range", "bytes=0-1,5-6")], 200, None, all),
            ("/digits.txt", "GET", &[("Range", "bytes=0-1"), ("Range", "bytes=0-1")], 200, None, all),
            ("/digits.txt", "GET", &[("Range", "bytes=3-1")], 200, None, all),
            ("/digits.txt", "GET", &[("Range", "bytes=abc")], 200, None, all),
            ("/digits.txt", "GET", &[("Range", "bytes=1")], 200, None, all),
            ("/digits.txt", "GET", &[("Range", "bytes=")], 200, None, all),
            ("/digits.txt", "GET", &[("Range", "bytes=-")], 200, None, all),
            ("/digits.txt", "GET", &[("Range", "bytes=--1")], 200, None, all),
            ("/digits.txt", "GET", &[("Range", "bytes=+1-2")], 200, None, all),
            ("/digits.txt", "GET", &[("Range", "items=0-1")], 200, None, all),
            ("/digits.txt", "GET", &[("Range", "0-1")], 200, None, all),
            ("/digits.txt", "HEAD", &[("Range", "bytes=0-3")], 200, None, ""),
            ("/digits.txt", "GET", &[("Range", "bytes=0-3"), ("If-Range", &tag)], 206, Some("bytes 0-3/10"), "0123"),
            ("/digits.txt", "GET", &[("Range", "bytes=0-3"), ("If-Range", "\"other\"")], 200, None, all),
            ("/digits.txt", "GET", &[("Range", "bytes=0-3"), ("If-Range", &weak)], 200, None, all),
            (
                "/digits.txt",
                "GET",
                &[("Range", "bytes=0-3"), ("If-Range", MTIME_DATE)],
                206,
                Some("bytes 0-3/10"),
                "0123",
            ),
            (
                "/digits.txt",
                "GET",
                &[("Range", "bytes=0-3"), ("If-Range", "Tue, 14 Nov 2023 22:13:21 GMT")],
                200,
                None,
                all,
            ),
            ("/digits.txt", "GET", &[("Range", "bytes=0-3"), ("If-Range", "garbage")], 200, None, all),
            ("/digits.txt", "GET", &[("Range", "bytes=10-"), ("If-Range", "\"other\"")], 200, None, all),
            ("/digits.txt", "GET", &[("If-Range", &tag)], 200, None, all),
        ];
        for &(target, method, headers, status, content_range, body) in cases {
            let r = ask(&site, method, target, headers);
            let what = format!("{method} {target} {headers:?}");
            assert_eq!(r.status, status, "{what}: {r:?}");
            assert_eq!(r.field("Content-Range"), content_range, "{what}");
            assert_eq!(String::from_utf8_lossy(&r.body), body, "{what}");
        }
    }

    #[test]
    fn method_table() {
        let tree = Tree::new("methods");
        let site = tree.open();
        let cases: &[(&str, &str)] = &[
            ("POST", "/a.txt"),
            ("PUT", "/a.txt"),
            ("DELETE", "/a.txt"),
            ("PATCH", "/missing"),
            ("OPTIONS", "*"),
            ("OPTIONS", "/"),
            ("get", "/a.txt"),
        ];
        for &(method, target) in cases {
            let r = ask(&site, method, target, &[]);
            assert_eq!(r.status, 503, "{method} {target}");
            assert_eq!(r.field("Retry-After"), Some("7"));
            assert_eq!(r.field("Cache-Control"), Some("no-store"));
            assert_eq!(r.body, READ_ONLY.as_bytes());
        }
    }

    #[test]
    fn head_of_inline_answers_keeps_length() {
        let tree = Tree::new("head");
        let site = tree.open();
        for (target, status, length) in
            [("/missing", 404, NOT_FOUND.len()), ("/sub", 301, "Moved Permanently: /sub/\n".len())]
        {
            let r = ask(&site, "HEAD", target, &[]);
            assert_eq!((r.status, r.field("Content-Length")), (status, Some(length.to_string().as_str())));
        }
    }

    #[test]
    fn sorry_mode_table() {
        let tree = Tree::new("sorry");
        let site = Site::open(&tree.site(), Some(503), None).unwrap();
        assert_eq!(site.page.as_deref(), Some(tree.site().join("index.html").canonicalize().unwrap().as_path()));
        let cases: &[(&str, &str)] = &[
            ("GET", "/"),
            ("GET", "/a.txt"),
            ("GET", "/missing"),
            ("GET", "/../x"),
            ("POST", "/form"),
            ("DELETE", "/a"),
            ("OPTIONS", "*"),
            ("GET", "/%zz"),
            ("HEAD", "/"),
        ];
        for &(method, target) in cases {
            let r = ask(&site, method, target, &[("If-None-Match", "*"), ("Range", "bytes=0-1")]);
            assert_eq!(r.status, 503, "{method} {target}");
            assert_eq!(r.field("Content-Type"), Some(HTML));
            assert_eq!(r.field("Content-Length"), Some("14"));
            assert_eq!(r.field("Cache-Control"), Some("no-store"));
            assert_eq!(r.field("Retry-After"), Some("7"));
            assert_eq!((r.field("ETag"), r.field("Last-Modified"), r.field("Content-Range")), (None, None, None));
            assert_eq!(r.body, if method == "HEAD" { &b""[..] } else { b"<h1>home</h1>\n" });
        }
    }

    #[test]
    fn sorry_pages_and_statuses() {
        let tree = Tree::new("sorry-pages");
        let outside = tree.base.join("outside/secret.txt");
        let cases: &[SorryCase] = &[
            (503, Some("sub/index.html"), Some("7"), HTML, "sub index\n"),
            (503, Some("a.txt"), Some("7"), TEXT, "hello a\n"),
            // The page is canonical: a symlink's target names the type.
            (503, Some("link-in"), Some("7"), TEXT, "hello a\n"),
            (503, outside.to_str(), Some("7"), TEXT, SECRET),
            (429, None, Some("7"), HTML, "<h1>home</h1>\n"),
            (500, None, Some("7"), HTML, "<h1>home</h1>\n"),
            (200, None, None, HTML, "<h1>home</h1>\n"),
            (404, None, None, HTML, "<h1>home</h1>\n"),
        ];
        for &(status, page, retry, content_type, body) in cases {
            let site = Site::open(&tree.site(), Some(status), page).unwrap();
            let r = ask(&site, "GET", "/whatever", &[]);
            assert_eq!(r.status, status, "{status} {page:?}");
            assert_eq!((r.field("Retry-After"), r.field("Content-Type")), (retry, Some(content_type)), "{status}");
            assert_eq!(String::from_utf8_lossy(&r.body), body, "{status} {page:?}");
        }
    }

    #[test]
    fn sorry_page_gone_at_request_time_falls_back_to_text() {
        let tree = Tree::new("sorry-gone");
        let site = Site::open(&tree.site(), Some(503), Some("sub/index.html")).unwrap();
        fs::remove_file(tree.site().join("sub/index.html")).unwrap();
        for method in ["GET", "HEAD"] {
            let r = ask(&site, method, "/", &[]);
            assert_eq!((r.status, r.field("Content-Type"), r.field("Retry-After")), (503, Some(TEXT), Some("7")));
            assert_eq!(r.field("Content-Length"), Some(NO_PAGE.len().to_string().as_str()));
        }
    }

    #[test]
    fn open_table() {
        let tree = Tree::new("open");
        let site = tree.site();
        let missing = tree.base.join("nope");
        let file = site.join("a.txt");
        let abs = tree.base.join("outside/secret.txt");
        let cases: &[OpenCase] = &[
            (&site, None, None, Ok(())),
            (&site, None, Some("missing.html"), Ok(())),
            (&site, Some(503), None, Ok(())),
            (&site, Some(200), Some("sub/index.html"), Ok(())),
            (&site, Some(599), abs.to_str(), Ok(())),
            (&missing, None, None, Err(format!("{missing:?} is not a readable directory: No such file or directory"))),
            (&file, None, None, Err(format!("{file:?} is not a readable directory: Not a directory"))),
            (&site, Some(199), None, Err("status 199 must be between 200 and 599".into())),
            (&site, Some(600), None, Err("status 600 must be between 200 and 599".into())),
            (&site, Some(204), None, Err("status 204 cannot carry a page".into())),
            (&site, Some(304), None, Err("status 304 cannot carry a page".into())),
            (
                &site,
                Some(503),
                Some("gone.html"),
                Err(format!("sorry page {:?} cannot be opened: No such file or directory", site.join("gone.html"))),
            ),
            (
                &site,
                Some(503),
                Some("sub"),
                Err(format!("sorry page {:?} cannot be opened: not a regular file", site.join("sub"))),
            ),
            (
                &site,
                Some(503),
                Some("fifo"),
                Err(format!("sorry page {:?} cannot be opened: not a regular file", site.join("fifo"))),
            ),
        ];
        for (dir, status, page, want) in cases {
            let got = Site::open(dir, *status, *page).map(|_| ());
            assert_eq!(&got, want, "{dir:?} {status:?} {page:?}");
        }
        let plain = Site::open(&site, None, Some("a.txt")).unwrap();
        assert_eq!((plain.root, plain.status, plain.page), (site.canonicalize().unwrap(), None, None));
    }

    #[test]
    fn check_follows_the_directory_and_the_page() {
        let tree = Tree::new("check");
        let site = tree.open();
        let sorry = Site::open(&tree.site(), Some(503), Some("sub/index.html")).unwrap();
        assert_eq!((site.check(), sorry.check()), (Ok(()), Ok(())));
        fs::remove_file(tree.site().join("sub/index.html")).unwrap();
        assert_eq!(site.check(), Ok(()));
        assert_eq!(sorry.check(), Err("sorry page missing: No such file or directory".into()));
        fs::remove_dir_all(tree.site()).unwrap();
        assert_eq!(site.check(), Err("directory not readable: No such file or directory".into()));
        assert_eq!(sorry.check(), Err("directory not readable: No such file or directory".into()));
    }

    #[test]
    fn byte_range_table() {
        let cases: &[(&str, u64, Span)] = &[
            ("bytes=0-0", 1, Span::Part { start: 0, len: 1 }),
            ("bytes=0-", 1, Span::Part { start: 0, len: 1 }),
            ("bytes=-1", 1, Span::Part { start: 0, len: 1 }),
            ("bytes=1-", 1, Span::Unsatisfiable),
            ("bytes=-5", 3, Span::Part { start: 0, len: 3 }),
            ("bytes=18446744073709551614-", u64::MAX, Span::Part { start: u64::MAX - 1, len: 1 }),
            ("bytes=0-", 0, Span::Unsatisfiable),
            ("bytes=-0", 0, Span::Unsatisfiable),
            ("bytes=0-1, 3-4", 10, Span::Whole),
            ("bytes=1 -2", 10, Span::Whole),
            ("bytes 0-1", 10, Span::Whole),
            ("byte", 10, Span::Whole),
            ("", 10, Span::Whole),
        ];
        for &(value, size, ref want) in cases {
            assert_eq!(&byte_range(value.as_bytes(), size), want, "{value} of {size}");
        }
    }
}
