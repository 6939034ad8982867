//! Table tests of `static_files` against a real directory: paths, types, conditionals,
//! ranges, methods, sorry mode and health.

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
        ("/digits.txt", "GET", &[("Range", "bytes=0-3"), ("If-Range", MTIME_DATE)], 206, Some("bytes 0-3/10"), "0123"),
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
