//! The static backup (`--backup=file://DIR`) as a client sees it over real sockets: the
//! proxy serves a directory itself while traffic is on that backup. Content types,
//! conditionals, ranges, path safety (nothing outside the root, no dot-files), the
//! read-only 503, directories and redirects, a 1 GiB download with flat memory, sorry mode,
//! the directory's health, the repository's `examples/sorry` and keep-alive.
//!
//! Every test gets its own directory tree (removed on drop, even on panic) and its own
//! proxy whose primary refuses connections, so traffic is on the directory.

use crate::common::*;
use std::fs::{self, File};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{symlink, FileExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Bytes that live outside the served root: no response may ever carry them.
const SECRET: &[u8] = b"OUTSIDE-SECRET-c8f1e2";
const INDEX: &[u8] = b"<!doctype html><h1>home</h1>\n";
const SUB_INDEX: &[u8] = b"<h1>sub index</h1>\n";
const MAINTENANCE: &[u8] = b"<h1>down for maintenance</h1>\n";
/// Size of `big.bin`, pseudo-random bytes for the range table.
const BIG: usize = 100_000;
/// mtime of `dated.txt`, and the same instant as an HTTP date.
const MTIME: u64 = 1_700_000_000;
const MTIME_DATE: &str = "Tue, 14 Nov 2023 22:13:20 GMT";
/// Generous bound on a health change: fail-threshold 2 x interval 100ms, ten times over.
const SWITCH_LIMIT: Duration = Duration::from_secs(5);

/// Files named for a Content-Type check: (name, Content-Type). Each holds its own name.
const MIME: &[(&str, &str)] = &[
    ("page.html", "text/html; charset=utf-8"),
    ("page.htm", "text/html; charset=utf-8"),
    ("style.css", "text/css; charset=utf-8"),
    ("app.js", "text/javascript; charset=utf-8"),
    ("mod.mjs", "text/javascript; charset=utf-8"),
    ("data.json", "application/json"),
    ("logo.svg", "image/svg+xml"),
    ("img.png", "image/png"),
    ("photo.jpg", "image/jpeg"),
    ("photo.jpeg", "image/jpeg"),
    ("anim.gif", "image/gif"),
    ("pic.webp", "image/webp"),
    ("favicon.ico", "image/x-icon"),
    ("notes.txt", "text/plain; charset=utf-8"),
    ("feed.xml", "application/xml"),
    ("doc.pdf", "application/pdf"),
    ("font.woff2", "font/woff2"),
    ("prog.wasm", "application/wasm"),
    ("UPPER.PNG", "image/png"),
    ("Mixed.JpEg", "image/jpeg"),
    ("Page.HTML", "text/html; charset=utf-8"),
    ("blob.unknownext", "application/octet-stream"),
    ("archive.tar.gz", "application/octet-stream"),
    ("noext", "application/octet-stream"),
];

/// Request header fields of a table case.
type Fields<'a> = &'a [(&'a str, &'a str)];
/// The bytes a 206 carries: first..=last.
type Bytes = (usize, usize);

// ---------------------------------------------------------------- tree ----

/// `base/site` (the served root) next to `base/outside` and `base/x` (secrets), all removed
/// on drop.
struct Tree {
    base: PathBuf,
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

impl Tree {
    fn new(tag: &str) -> Tree {
        let tree = Tree { base: temp_path(&format!("static-{tag}")) };
        for dir in ["outside", "site/sub", "site/nosub", "site/a", "site/.git"] {
            fs::create_dir_all(tree.base.join(dir)).unwrap();
        }
        fs::write(tree.base.join("outside/secret.txt"), SECRET).unwrap();
        fs::write(tree.base.join("x"), SECRET).unwrap();
        let site = tree.site();
        let files: &[(&str, &[u8])] = &[
            ("index.html", INDEX),
            ("maintenance.html", MAINTENANCE),
            ("sub/index.html", SUB_INDEX),
            ("nosub/page.txt", b"no index here\n"),
            ("a/page.txt", b"page a\n"),
            ("a/.hidden", SECRET),
            ("a b.txt", b"with a space\n"),
            ("empty.txt", b""),
            ("dated.txt", b"0123456789"),
            (".env", SECRET),
            (".git/config", SECRET),
            ("big.bin", &big_bytes()),
        ];
        for (name, body) in files {
            fs::write(site.join(name), body).unwrap();
        }
        for (name, _) in MIME {
            fs::write(site.join(name), name).unwrap();
        }
        symlink(tree.base.join("outside/secret.txt"), site.join("link-out")).unwrap();
        symlink(tree.base.join("outside"), site.join("link-dir-out")).unwrap();
        symlink("notes.txt", site.join("link-in")).unwrap();
        let dated = File::options().write(true).open(site.join("dated.txt")).unwrap();
        dated.set_modified(UNIX_EPOCH + Duration::from_secs(MTIME)).unwrap();
        tree
    }

    fn site(&self) -> PathBuf {
        self.base.join("site")
    }

    fn url(&self) -> String {
        format!("file://{}", self.site().display())
    }
}

/// `BIG` bytes from a fixed xorshift sequence.
fn big_bytes() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..BIG)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// --------------------------------------------------------------- proxy ----

/// A proxy whose primary refuses connections and whose backup is the tree's directory.
fn site_builder(tree: &Tree) -> ProxyBuilder {
    Proxy::builder(&format!("http://{}", dead_addr()), &tree.url()).fast_checks()
}

/// Starts the proxy and waits until traffic is on the directory (upstream 1).
fn on_site(builder: ProxyBuilder) -> Proxy {
    let proxy = builder.start();
    let active = || proxy.state().get("active").map(|a| a.u64_field("index"));
    assert!(
        wait_until(SWITCH_LIMIT, || active() == Some(1)),
        "traffic never moved to the directory: {:?}",
        proxy.state()
    );
    proxy
}

/// `upstreams[i]` of `/__failover/state`.
fn upstream_state(proxy: &Proxy, i: usize) -> Json {
    match proxy.state().get("upstreams") {
        Some(Json::Arr(ups)) if ups.len() > i => ups[i].clone(),
        other => panic!("no upstreams[{i}] in the state: {other:?}"),
    }
}

// -------------------------------------------------------------- client ----

/// One request on a new connection with `Connection: close`, read to EOF, so every byte
/// the proxy sent is in `raw`: a body longer than its Content-Length would show.
fn fetch(addr: SocketAddr, method: &str, target: &str, fields: &[(&str, &str)]) -> Response {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n");
    for (name, value) in fields {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    fetch_raw(addr, req.as_bytes())
}

/// Sends `req` as is (it must make the proxy close) and reads everything until EOF.
fn fetch_raw(addr: SocketAddr, req: &[u8]) -> Response {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut wire = Wire::new(stream);
    wire.stream.write_all(req).unwrap_or_else(|e| panic!("sending {}: {e}", show(req)));
    let raw = wire.read_to_end().unwrap_or_else(|e| panic!("reading the answer to {}: {e}", show(req)));
    let end = find(&raw, b"\r\n\r\n").unwrap_or_else(|| panic!("no complete head for {}: {}", show(req), show(&raw)));
    let head = Head::parse(&raw[..end + 4]);
    let status = head.start_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw[end + 4..].to_vec();
    Response { raw, head, status, body }
}

/// Content-Length is there and says exactly how many bytes followed the head (none for
/// HEAD and 304).
fn assert_framed(r: &Response, method: &str) {
    let len: Option<usize> = r.header("content-length").and_then(|v| v.parse().ok());
    if r.status != 304 {
        assert!(len.is_some(), "{method}: no Content-Length: {}", show(&r.raw));
    }
    let want = if method == "HEAD" || r.status == 304 { 0 } else { len.unwrap_or(0) };
    assert_eq!(r.body.len(), want, "{method}: body length vs Content-Length: {}", show(&r.raw));
}

/// The headers every file response carries.
fn assert_file_headers(r: &Response, what: &str) {
    for name in ["date", "last-modified", "etag", "content-length", "content-type"] {
        assert!(r.header(name).is_some(), "{what}: no {name}: {}", show(&r.raw));
    }
    assert_eq!(r.header("accept-ranges"), Some("bytes"), "{what}: {}", show(&r.raw));
    let etag = r.header("etag").unwrap_or("");
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2, "{what}: not a strong ETag: {etag:?}");
}

/// The read-only or sorry 503: Retry-After and no-store.
fn assert_unavailable(r: &Response, what: &str) {
    assert_eq!(r.status, 503, "{what}: {}", show(&r.raw));
    let retry = r.header("retry-after").unwrap_or("");
    assert!(retry.parse::<u32>().is_ok_and(|s| s > 0), "{what}: Retry-After {retry:?}: {}", show(&r.raw));
    assert_eq!(r.header("cache-control"), Some("no-store"), "{what}: {}", show(&r.raw));
}

fn assert_no_secret(r: &Response, what: &str) {
    assert!(find(&r.raw, SECRET).is_none(), "{what}: the outside secret leaked: {}", show(&r.raw));
    assert!(find(&r.raw, b"root:x:0:0").is_none(), "{what}: /etc/passwd leaked: {}", show(&r.raw));
}

// --------------------------------------------------------------- tests ----

#[test]
fn content_type_follows_the_extension() {
    let tree = Tree::new("mime");
    let proxy = on_site(site_builder(&tree));
    for &(name, content_type) in MIME {
        let r = fetch(proxy.addr, "GET", &format!("/{name}"), &[]);
        assert_eq!(r.status, 200, "{name}: {}", show(&r.raw));
        assert_eq!(r.header("content-type"), Some(content_type), "{name}: {}", show(&r.raw));
        assert_eq!(r.body, name.as_bytes(), "{name}: {}", show(&r.raw));
        assert_framed(&r, "GET");
        assert_file_headers(&r, name);
    }
}

#[test]
fn conditional_requests_table() {
    let tree = Tree::new("cond");
    let proxy = on_site(site_builder(&tree));
    let first = fetch(proxy.addr, "GET", "/dated.txt", &[]);
    assert_eq!((first.status, first.body.as_slice()), (200, &b"0123456789"[..]), "{}", show(&first.raw));
    assert_file_headers(&first, "first GET");
    assert_eq!(first.header("last-modified"), Some(MTIME_DATE), "{}", show(&first.raw));
    let etag = first.header("etag").unwrap().to_string();
    let weak = format!("W/{etag}");
    let list = format!("\"nope\", {etag}, \"other\"");
    let earlier = "Tue, 14 Nov 2023 22:13:19 GMT";
    let later = "Tue, 14 Nov 2023 22:13:21 GMT";
    let next_year = "Thu, 14 Nov 2024 22:13:20 GMT";
    let inm = "If-None-Match";
    let ims = "If-Modified-Since";
    // (request fields, status)
    let cases: &[(Fields, u16)] = &[
        (&[(inm, &etag)], 304),
        (&[(inm, "\"nope\"")], 200),
        (&[(inm, &list)], 304),
        (&[(inm, "\"nope\", \"other\"")], 200),
        (&[(inm, &weak)], 304),
        (&[(inm, "*")], 304),
        (&[(inm, "\"nope\""), (inm, &etag)], 304),
        (&[(ims, MTIME_DATE)], 304),
        (&[(ims, earlier)], 200),
        (&[(ims, later)], 304),
        (&[(ims, next_year)], 304),
        (&[(ims, "not a date")], 200),
        (&[(ims, "")], 200),
        (&[(inm, "\"nope\""), (ims, later)], 200),
        (&[(inm, &etag), (ims, earlier)], 304),
        (&[(inm, &etag), (ims, "garbage")], 304),
    ];
    for &(fields, status) in cases {
        for method in ["GET", "HEAD"] {
            let r = fetch(proxy.addr, method, "/dated.txt", fields);
            assert_eq!(r.status, status, "{method} {fields:?}: {}", show(&r.raw));
            assert_framed(&r, method);
            assert_eq!(r.header("etag"), Some(etag.as_str()), "{method} {fields:?}: {}", show(&r.raw));
            assert_eq!(r.header("last-modified"), Some(MTIME_DATE), "{method} {fields:?}: {}", show(&r.raw));
            let want: &[u8] = if status == 200 && method == "GET" { b"0123456789" } else { b"" };
            assert_eq!(r.body, want, "{method} {fields:?}: {}", show(&r.raw));
        }
    }
}

#[test]
fn range_table() {
    let tree = Tree::new("range");
    let proxy = on_site(site_builder(&tree));
    let data = big_bytes();
    let first = fetch(proxy.addr, "GET", "/big.bin", &[]);
    assert_eq!(first.status, 200, "{}", show(&first.raw));
    assert!(first.body == data, "the whole file differs ({} bytes)", first.body.len());
    let etag = first.header("etag").unwrap().to_string();
    let last_modified = first.header("last-modified").unwrap().to_string();
    let weak = format!("W/{etag}");
    let r = "Range";
    let ir = "If-Range";
    // (request fields, status, the bytes a 206 carries)
    let cases: &[(Fields, u16, Option<Bytes>)] = &[
        (&[(r, "bytes=0-0")], 206, Some((0, 0))),
        (&[(r, "bytes=0-99")], 206, Some((0, 99))),
        (&[(r, "bytes=100-")], 206, Some((100, BIG - 1))),
        (&[(r, "bytes=-100")], 206, Some((BIG - 100, BIG - 1))),
        (&[(r, "bytes=99990-200000")], 206, Some((99_990, BIG - 1))),
        (&[(r, "bytes=99999-")], 206, Some((BIG - 1, BIG - 1))),
        (&[(r, "bytes=-200000")], 206, Some((0, BIG - 1))),
        (&[(r, "bytes=12345-54321")], 206, Some((12_345, 54_321))),
        (&[(r, "bytes=200000-")], 416, None),
        (&[(r, "bytes=100000-100001")], 416, None),
        (&[(r, "bytes=-0")], 416, None),
        (&[(r, "bytes=abc")], 200, None),
        (&[(r, "items=0-1")], 200, None),
        (&[(r, "bytes=5-1")], 200, None),
        (&[(r, "bytes=0-1,5-6")], 200, None),
        (&[(r, "bytes=0-1, 10-20, 30-")], 200, None),
        (&[(r, "bytes=0-1"), (r, "bytes=5-6")], 200, None),
        (&[(r, "bytes=0-9"), (ir, &etag)], 206, Some((0, 9))),
        (&[(r, "bytes=0-9"), (ir, "\"another\"")], 200, None),
        (&[(r, "bytes=0-9"), (ir, &weak)], 200, None),
        (&[(r, "bytes=0-9"), (ir, &last_modified)], 206, Some((0, 9))),
        (&[(r, "bytes=0-9"), (ir, "Tue, 14 Nov 2000 22:13:20 GMT")], 200, None),
    ];
    for &(fields, status, part) in cases {
        let got = fetch(proxy.addr, "GET", "/big.bin", fields);
        assert_eq!(got.status, status, "{fields:?}: {}", show(&got.raw));
        assert_framed(&got, "GET");
        match (status, part) {
            (206, Some((first, last))) => {
                let want = format!("bytes {first}-{last}/{BIG}");
                assert_eq!(got.header("content-range"), Some(want.as_str()), "{fields:?}: {}", show(&got.raw));
                assert!(got.body == data[first..=last], "{fields:?}: wrong bytes: {}", show(&got.raw));
            }
            (416, _) => {
                let want = format!("bytes */{BIG}");
                assert_eq!(got.header("content-range"), Some(want.as_str()), "{fields:?}: {}", show(&got.raw));
            }
            _ => {
                assert_eq!(got.header("content-range"), None, "{fields:?}: {}", show(&got.raw));
                assert!(got.body == data, "{fields:?}: a 200 must carry the whole file: {}", show(&got.raw));
            }
        }
    }
    // HEAD ignores Range: the full length, no body.
    let head = fetch(proxy.addr, "HEAD", "/big.bin", &[(r, "bytes=0-9")]);
    assert_eq!((head.status, head.header("content-length")), (200, Some("100000")), "{}", show(&head.raw));
    assert_framed(&head, "HEAD");
}

#[test]
fn traversal_table_never_leaves_the_root() {
    let tree = Tree::new("traversal");
    let proxy = on_site(site_builder(&tree));
    // Sanity: the secrets are where the table aims.
    assert_eq!(fs::read(tree.site().join("../x")).unwrap(), SECRET);
    assert_eq!(fs::read(tree.site().join("link-out")).unwrap(), SECRET);
    let targets: &[&[u8]] = &[
        b"/..",
        b"/../x",
        b"/../outside/secret.txt",
        b"/../../../../../../../../etc/passwd",
        b"/a/../../x",
        b"/sub/../../x",
        b"//../x",
        b"/%2e%2e/x",
        b"/%2E%2e/x",
        b"/%2e%2E/outside/secret.txt",
        b"/%2e%2e%2fx",
        b"/..%2fx",
        b"/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        b"/a/..%2f..%2fx",
        b"/%2e%2e",
        b"/%252e%252e/x",
        b"/%252e%252e%252fx",
        b"/%25%32%65%25%32%65/x",
        b"/..\\x",
        b"/a\\..\\..\\x",
        b"/..%5cx",
        b"/%5c..%5cx",
        b"/a%5c..%5c..%5cx",
        b"/x%00",
        b"/index.html%00.txt",
        b"/%00/../x",
        b"/%c0%ae%c0%ae/x",
        b"/%C0%AE%C0%AE%C0%AFx",
        b"/%e0%80%ae%e0%80%ae/x",
        b"/..%c0%afx",
        b"/..%c1%9cx",
        b"/.env",
        b"/%2eenv",
        b"/%2Eenv",
        b"/./.env",
        b"/.git/config",
        b"/.git/",
        b"/%2egit/config",
        b"/a/.hidden",
        b"/a/%2ehidden",
        b"/.",
        b"/link-out",
        b"/link-dir-out/secret.txt",
        b"/link-dir-out/",
        b"/link-dir-out",
        b"/%",
        b"/%zz/../x",
        b"/%2",
    ];
    assert!(targets.len() >= 25);
    for target in targets {
        let req = [&b"GET "[..], target, b" HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"].concat();
        let r = fetch_raw(proxy.addr, &req);
        let what = format!("GET {}", show(target));
        assert!(matches!(r.status, 400 | 404), "{what}: want 400 or 404: {}", show(&r.raw));
        assert_no_secret(&r, &what);
        assert_framed(&r, "GET");
    }
    // A raw NUL byte in the request line never reaches the directory either.
    let r = fetch_raw(proxy.addr, b"GET /x\x00/../../x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    assert!(matches!(r.status, 400 | 404), "raw NUL: {}", show(&r.raw));
    assert_no_secret(&r, "raw NUL");
}

#[test]
fn other_methods_get_read_only_503_and_head_matches_get() {
    let tree = Tree::new("methods");
    let proxy = on_site(site_builder(&tree));
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for target in ["/", "/notes.txt", "/missing"] {
            let r = fetch(proxy.addr, method, target, &[("Content-Length", "0")]);
            assert_unavailable(&r, &format!("{method} {target}"));
            assert_framed(&r, method);
        }
    }
    for target in ["/", "/notes.txt", "/big.bin", "/empty.txt", "/sub/"] {
        let get = fetch(proxy.addr, "GET", target, &[]);
        let head = fetch(proxy.addr, "HEAD", target, &[]);
        assert_eq!(get.status, 200, "GET {target}: {}", show(&get.raw));
        assert_framed(&head, "HEAD");
        assert!(head.body.is_empty(), "HEAD {target} has a body: {}", show(&head.raw));
        // Every header but Date is the same (Date may tick between the two).
        let fields = |r: &Response| r.head.lowered().into_iter().filter(|(n, _)| n != "date").collect::<Vec<_>>();
        assert_eq!(
            (head.head.start_line.as_str(), fields(&head)),
            (get.head.start_line.as_str(), fields(&get)),
            "HEAD {target} vs GET"
        );
        assert!(head.header("date").is_some());
    }
}

#[test]
fn directories_redirects_and_missing_files() {
    let tree = Tree::new("dirs");
    let proxy = on_site(site_builder(&tree));
    enum Want {
        Body(&'static [u8], &'static str),
        Location(&'static str),
        NotFound,
    }
    use Want::*;
    let cases: &[(&str, Want)] = &[
        ("/", Body(INDEX, "text/html; charset=utf-8")),
        ("/index.html", Body(INDEX, "text/html; charset=utf-8")),
        ("/?v=3", Body(INDEX, "text/html; charset=utf-8")),
        ("/sub/", Body(SUB_INDEX, "text/html; charset=utf-8")),
        ("/sub/index.html", Body(SUB_INDEX, "text/html; charset=utf-8")),
        ("/sub", Location("/sub/")),
        ("/sub?x=1&y=2", Location("/sub/?x=1&y=2")),
        ("/nosub", Location("/nosub/")),
        ("//sub", Location("/sub/")),
        ("/nosub/", NotFound),
        ("/nosub/page.txt", Body(b"no index here\n", "text/plain; charset=utf-8")),
        ("/a%20b.txt", Body(b"with a space\n", "text/plain; charset=utf-8")),
        ("/%61/page.txt", Body(b"page a\n", "text/plain; charset=utf-8")),
        ("/link-in", Body(b"notes.txt", "application/octet-stream")),
        ("/empty.txt", Body(b"", "text/plain; charset=utf-8")),
        ("/missing", NotFound),
        ("/missing/", NotFound),
        ("/sub/missing.html", NotFound),
        ("/notes.txt/", NotFound),
        ("/a%2520b.txt", NotFound),
    ];
    for (target, want) in cases {
        let r = fetch(proxy.addr, "GET", target, &[]);
        assert_framed(&r, "GET");
        match want {
            Body(body, content_type) => {
                assert_eq!(r.status, 200, "{target}: {}", show(&r.raw));
                assert_eq!(r.body, *body, "{target}: {}", show(&r.raw));
                assert_eq!(r.header("content-type"), Some(*content_type), "{target}: {}", show(&r.raw));
                assert_file_headers(&r, target);
            }
            Location(to) => {
                assert_eq!(r.status, 301, "{target}: {}", show(&r.raw));
                assert_eq!(r.header("location"), Some(*to), "{target}: {}", show(&r.raw));
            }
            NotFound => assert_eq!(r.status, 404, "{target}: {}", show(&r.raw)),
        }
    }
}

/// The proxy's PID: the child of this test process started with `--listen=<its address>`
/// (the harness keeps its `Child` private).
fn proxy_pid(proxy: &Proxy) -> u32 {
    let listen = format!("--listen={}", proxy.addr);
    let me = std::process::id();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else { continue };
        if !cmdline.split(|&b| b == 0).any(|arg| arg == listen.as_bytes()) {
            continue;
        }
        // The parent PID is the second field after the ')' that ends the command name.
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(me) {
            return pid;
        }
    }
    panic!("no child process of {me} with {listen}");
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}: {status}"))
}

#[test]
fn one_gib_file_streams_whole_with_flat_memory() {
    const SIZE: u64 = 1 << 30;
    let tree = Tree::new("huge");
    // Sparse: 1 GiB long, a few marked places, zeros elsewhere; one marker straddles
    // a 32 KiB boundary in the middle.
    let markers: [(u64, &[u8]); 3] =
        [(0, b"FIRST-16-BYTES!!"), ((1 << 29) - 5, b"MIDDLE-MARKER-ok"), (SIZE - 16, b"LAST-16-BYTES!!!")];
    let file = File::create(tree.site().join("huge.bin")).unwrap();
    file.set_len(SIZE).unwrap();
    for (at, bytes) in markers {
        file.write_all_at(bytes, at).unwrap();
    }
    drop(file);
    let proxy = on_site(site_builder(&tree));
    let pid = proxy_pid(&proxy);
    // Warm up the worker's buffers before the baseline.
    assert_eq!(fetch(proxy.addr, "GET", "/big.bin", &[]).status, 200);

    let start = Instant::now();
    let mut stream = TcpStream::connect(proxy.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
        .write_all(format!("GET /huge.bin HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut pending = Vec::new();
    let head_end = loop {
        let n = read_retrying(&mut stream, &mut buf).unwrap();
        assert!(n > 0, "closed before the head: {}", show(&pending));
        pending.extend_from_slice(&buf[..n]);
        if let Some(i) = find(&pending, b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = Head::parse(&pending[..head_end]);
    assert!(head.start_line.starts_with("HTTP/1.1 200"), "{}", show(&pending[..head_end]));
    assert_eq!(head.get("content-length"), Some(SIZE.to_string().as_str()));
    assert_eq!(head.get("content-type"), Some("application/octet-stream"));
    let baseline = rss_kib(pid);
    let mut peak = baseline;
    let mut got: u64 = 0;
    let mut seen = [0usize; 3];
    let mut next_sample = 0u64;
    let mut stalled = false;
    let mut check = |chunk: &[u8], at: u64| {
        for (i, (mark_at, mark)) in markers.iter().enumerate() {
            let (lo, hi) = ((*mark_at).max(at), (mark_at + mark.len() as u64).min(at + chunk.len() as u64));
            for pos in lo..hi {
                assert_eq!(chunk[(pos - at) as usize], mark[(pos - mark_at) as usize], "byte {pos} of the file");
                seen[i] += 1;
            }
        }
    };
    let early = pending[head_end..].to_vec();
    check(&early, 0);
    got += early.len() as u64;
    loop {
        let n = read_retrying(&mut stream, &mut buf).unwrap_or_else(|e| panic!("after {got} bytes: {e}"));
        if n == 0 {
            break;
        }
        check(&buf[..n], got);
        got += n as u64;
        if got >= next_sample {
            peak = peak.max(rss_kib(pid));
            next_sample += 16 << 20;
        }
        if !stalled && got >= 64 << 20 {
            // The client stops reading: a proxy that read ahead of the socket would fill
            // its memory now.
            stalled = true;
            std::thread::sleep(ms(500));
            peak = peak.max(rss_kib(pid));
        }
    }
    peak = peak.max(rss_kib(pid));
    let took = start.elapsed();
    eprintln!("1 GiB in {took:?}; proxy RSS {baseline} KiB at the start, peak {peak} KiB");
    assert_eq!(got, SIZE, "body bytes");
    assert_eq!(seen, markers.map(|(_, m)| m.len()), "marker bytes seen");
    let growth = peak.saturating_sub(baseline);
    assert!(growth < 32 * 1024, "proxy RSS grew by {growth} KiB while streaming 1 GiB ({baseline} -> {peak} KiB)");
}

#[test]
fn sorry_mode_answers_everything_with_the_page() {
    let tree = Tree::new("sorry");
    let proxy = on_site(site_builder(&tree).set("--backup-status", "503"));
    let plain = tree.site().join("notes.txt");
    let plain = plain.to_str().unwrap();
    // (method, target, request fields)
    let cases: &[(&str, &str, Fields)] = &[
        ("GET", "/", &[]),
        ("GET", "/any/path", &[]),
        ("GET", "/notes.txt", &[]),
        ("GET", "/../x", &[]),
        ("GET", "/.env", &[]),
        ("GET", plain, &[]),
        ("GET", "/", &[("If-None-Match", "*"), ("Range", "bytes=0-3")]),
        // A body: sent by `run` below.
        ("POST", "/x", &[]),
        ("PUT", "/x", &[("Content-Length", "0")]),
        ("DELETE", "/", &[]),
        ("OPTIONS", "/", &[]),
        ("HEAD", "/", &[]),
        ("HEAD", "/any/path", &[]),
    ];
    let run = |proxy: &Proxy, page: &[u8]| {
        for &(method, target, fields) in cases {
            let req = if method == "POST" {
                let r = format!(
                    "POST {target} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"
                );
                fetch_raw(proxy.addr, r.as_bytes())
            } else {
                fetch(proxy.addr, method, target, fields)
            };
            let what = format!("{method} {target} {fields:?}");
            assert_unavailable(&req, &what);
            assert_framed(&req, method);
            assert_eq!(req.header("content-type"), Some("text/html; charset=utf-8"), "{what}: {}", show(&req.raw));
            assert_eq!(req.header("content-length"), Some(page.len().to_string().as_str()), "{what}");
            let want: &[u8] = if method == "HEAD" { b"" } else { page };
            assert_eq!(req.body, want, "{what}: {}", show(&req.raw));
            assert_no_secret(&req, &what);
        }
    };
    run(&proxy, INDEX);
    drop(proxy);
    let proxy = on_site(site_builder(&tree).set("--backup-status", "503").set("--sorry-page", "maintenance.html"));
    run(&proxy, MAINTENANCE);
}

/// The directory (upstream 1) turns unhealthy in the state, and with the primary dead
/// too, clients get the all-down 503, then keep getting it.
fn assert_all_down(proxy: &Proxy, what: &str) {
    assert!(
        wait_until(SWITCH_LIMIT, || !upstream_state(proxy, 1).bool_field("healthy")),
        "{what}: the directory stayed healthy: {:?}",
        proxy.state()
    );
    assert!(proxy.state().bool_field("all_down"), "{what}: {:?}", proxy.state());
    // The state reads the shared board; a worker follows it when its wake-up comes, which
    // may be a moment later (it copies the route when woken). The answer must turn within
    // that moment.
    let is_down = |r: &Response| r.status == 503 && r.text().contains("down");
    let mut last = None;
    let turned = wait_until(ms(1000), || {
        let r = fetch(proxy.addr, "GET", "/", &[]);
        let down = is_down(&r);
        last = Some(r);
        down
    });
    let last = last.map(|r| show(&r.raw)).unwrap_or_default();
    assert!(turned, "{what}: want the all-down 503, last answer {last}");
    for _ in 0..5 {
        let r = fetch(proxy.addr, "GET", "/", &[]);
        assert!(is_down(&r), "{what}: want the all-down 503: {}", show(&r.raw));
        assert!(r.header("retry-after").is_some(), "{what}: {}", show(&r.raw));
    }
}

#[test]
fn removed_directory_is_unhealthy_and_recreated_one_serves_again() {
    let tree = Tree::new("health");
    let proxy = on_site(site_builder(&tree));
    let dir = upstream_state(&proxy, 1);
    assert_eq!((dir.str_field("kind"), dir.str_field("role")), ("directory".into(), "backup".into()), "{dir:?}");
    assert_eq!(dir.str_field("url"), tree.url());
    assert!(dir.bool_field("healthy"), "{dir:?}");
    assert_eq!(upstream_state(&proxy, 0).str_field("kind"), "http");
    assert_eq!(fetch(proxy.addr, "GET", "/", &[]).body, INDEX);

    fs::remove_dir_all(tree.site()).unwrap();
    assert_all_down(&proxy, "the directory removed");

    fs::create_dir(tree.site()).unwrap();
    fs::write(tree.site().join("index.html"), b"<h1>back</h1>\n").unwrap();
    let back = wait_until(SWITCH_LIMIT, || {
        let r = fetch(proxy.addr, "GET", "/", &[]);
        r.status == 200 && r.body == b"<h1>back</h1>\n"
    });
    assert!(back, "the recreated directory is not served: {:?}", proxy.state());
    assert!(upstream_state(&proxy, 1).bool_field("healthy"));
}

#[test]
fn removed_sorry_page_is_unhealthy_and_recreated_one_serves_again() {
    let tree = Tree::new("health-sorry");
    let builder = site_builder(&tree).set("--backup-status", "503").set("--sorry-page", "maintenance.html");
    let proxy = on_site(builder);
    assert_eq!(fetch(proxy.addr, "GET", "/", &[]).body, MAINTENANCE);

    let page = tree.site().join("maintenance.html");
    fs::remove_file(&page).unwrap();
    assert_all_down(&proxy, "the sorry page removed");

    fs::write(&page, b"<h1>page is back</h1>\n").unwrap();
    let back = wait_until(SWITCH_LIMIT, || fetch(proxy.addr, "GET", "/", &[]).body == b"<h1>page is back</h1>\n");
    assert!(back, "the recreated page is not served: {:?}", proxy.state());
}

/// The binary started by hand (the harness cannot set a working directory), killed on
/// drop; its stderr is printed if the test fails.
struct Started {
    child: Child,
    log: PathBuf,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- proxy stderr ----\n{}---- end ----", fs::read_to_string(&self.log).unwrap_or_default());
        }
        let _ = fs::remove_file(&self.log);
    }
}

#[test]
fn relative_example_directory_serves_until_the_primary_comes_up() {
    let root = env!("CARGO_MANIFEST_DIR");
    let page = fs::read(Path::new(root).join("examples/sorry/index.html")).unwrap();
    let primary = Upstream::named("primary");
    primary.stop();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = temp_path("readme-stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_failover"))
        .current_dir(root)
        .args([
            format!("--primary=http://{}", primary.addr),
            "--backup=file://./examples/sorry".to_string(),
            format!("--listen={addr}"),
            format!("--health-path={PROBE_PATH}"),
            "--check-interval=100ms".to_string(),
            "--check-timeout=100ms".to_string(),
            "--fail-threshold=2".to_string(),
            "--recover-threshold=2".to_string(),
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("spawn failover");
    let mut started = Started { child, log };
    let mut first = None;
    let up = wait_until(Duration::from_secs(10), || {
        assert!(matches!(started.child.try_wait(), Ok(None)), "the proxy exited");
        first = try_get(addr, "/").ok();
        first.is_some()
    });
    assert!(up, "the proxy never answered on {addr}");
    let first = first.unwrap();
    assert_eq!(first.status, 200, "{}", show(&first.raw));
    assert!(first.body == page, "GET / is not examples/sorry/index.html: {}", show(&first.raw));
    assert_eq!(first.header("content-type"), Some("text/html; charset=utf-8"));

    // Let the proxy count the primary down first (as after a real outage): a refused
    // connect seen just before the primary comes up may still be counted just after, and
    // flip traffic to the directory for a moment.
    let on_directory = wait_until(SWITCH_LIMIT, || {
        let state = try_get(addr, "/__failover/state").ok().and_then(|r| Json::parse(&r.text()).ok());
        state.and_then(|s| s.get("active").map(|a| a.u64_field("index"))) == Some(1)
    });
    assert!(on_directory, "traffic never moved to examples/sorry");
    assert_eq!(try_get(addr, "/").map(|r| r.body == page).ok(), Some(true), "the page while on the directory");

    primary.restart();
    let took = wait_for_who(addr, "primary", Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("traffic moved to the primary {took:?} after it came up");
    for _ in 0..5 {
        assert_eq!(who(addr), "primary");
    }
    drop(started);
}

#[test]
fn keep_alive_serves_several_files_on_one_connection() {
    let tree = Tree::new("keepalive");
    let proxy = on_site(site_builder(&tree));
    let data = big_bytes();
    let mut c = Client::connect(proxy.addr);
    // (target, body)
    let gets: &[(&str, &[u8])] =
        &[("/notes.txt", b"notes.txt"), ("/big.bin", &data), ("/sub/", SUB_INDEX), ("/empty.txt", b"")];
    for (target, body) in gets {
        c.send(format!("GET {target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!(r.status, 200, "{target}: {}", show(&r.raw));
        assert!(r.body == *body, "{target}: {}", show(&r.raw));
        assert_eq!(r.header("connection"), None, "{target}: {}", show(&r.raw));
    }
    // A HEAD, a 304, a 206 and a 404 in between keep the framing right.
    c.send(format!("HEAD /big.bin HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes());
    assert_eq!(c.head_response().header("content-length"), Some("100000"));
    c.send(format!("GET /notes.txt HTTP/1.1\r\nHost: {HOST}\r\nIf-None-Match: *\r\n\r\n").as_bytes());
    assert_eq!(c.response().status, 304);
    c.send(format!("GET /big.bin HTTP/1.1\r\nHost: {HOST}\r\nRange: bytes=10-19\r\n\r\n").as_bytes());
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (206, &data[10..20]), "{}", show(&r.raw));
    c.send(format!("GET /missing HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes());
    assert_eq!(c.response().status, 404);
    // Pipelined: three requests in one write, three answers in order.
    c.send(
        format!(
            "GET /style.css HTTP/1.1\r\nHost: {HOST}\r\n\r\nGET /app.js HTTP/1.1\r\nHost: {HOST}\r\n\r\n\
             GET /data.json HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
        )
        .as_bytes(),
    );
    for want in ["style.css", "app.js", "data.json"] {
        let r = c.response();
        assert_eq!((r.status, r.text()), (200, want.to_string()), "pipelined: {}", show(&r.raw));
    }
}

#[test]
fn http_1_0_closes_unless_it_asks_for_keep_alive() {
    let tree = Tree::new("http10");
    let proxy = on_site(site_builder(&tree));
    let mut c = Client::connect(proxy.addr);
    for target in ["/notes.txt", "/sub", "/missing"] {
        c.send(format!("GET {target} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!(r.header("connection"), Some("keep-alive"), "{target}: {}", show(&r.raw));
    }
    c.send(b"GET /notes.txt HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")), "{}", show(&r.raw));
    assert!(c.is_closed(Duration::from_secs(3)), "HTTP/1.0 without keep-alive must close");
}

#[test]
fn post_with_its_body_still_coming_gets_503_and_close() {
    let tree = Tree::new("post-close");
    let proxy = on_site(site_builder(&tree));
    let mut c = Client::connect(proxy.addr);
    c.send(format!("GET /notes.txt HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes());
    assert_eq!(c.response().status, 200);
    c.send(format!("POST /form HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100000\r\n\r\npartial").as_bytes());
    let r = c.response();
    assert_unavailable(&r, "POST with its body still coming");
    assert_eq!(r.header("connection"), Some("close"), "{}", show(&r.raw));
    assert!(c.is_closed(Duration::from_secs(3)), "the connection must close after an unread body");
}

#[test]
fn request_body_that_arrived_whole_keeps_the_connection() {
    let tree = Tree::new("body-kept");
    let proxy = on_site(site_builder(&tree));
    // (request with its whole body in one write, status)
    let cases: &[(&str, u16)] = &[
        ("GET /notes.txt HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello", 200),
        ("GET /notes.txt HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 200),
        ("POST /form HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\n\r\nhi", 503),
    ];
    for &(req, status) in cases {
        let mut c = Client::connect(proxy.addr);
        c.send(req.as_bytes());
        let r = c.response();
        assert_eq!(r.status, status, "{}: {}", show(req.as_bytes()), show(&r.raw));
        assert_eq!(r.header("connection"), None, "{}: {}", show(req.as_bytes()), show(&r.raw));
        c.send(format!("GET /style.css HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes());
        let next = c.try_response(false);
        assert!(
            matches!(&next, Ok(n) if n.status == 200 && n.body == b"style.css"),
            "after {}: the connection did not serve a next request: {next:?}",
            show(req.as_bytes())
        );
    }
}
