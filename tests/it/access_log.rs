//! `--access-log`: one line per request, JSON or combined, with the upstream that answered,
//! the attempts before it and a request id that the upstream sees too; SIGHUP reopens the
//! file after a rotation.

use std::path::Path;

use crate::common::*;

/// The log's lines once `n` are there (workers write once per loop turn), without the
/// harness's own `/__failover/health` polls.
fn lines(path: &Path, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    wait_until(ms(5000), || {
        got = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains("/__failover/health"))
            .map(str::to_string)
            .collect();
        got.len() >= n
    });
    assert!(got.len() >= n, "wanted {n} lines in {}, got {got:?}", path.display());
    got
}

fn json(line: &str) -> Json {
    Json::parse(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn each_request_is_one_json_line_with_its_upstream_attempts_and_request_id() {
    let primary = Upstream::with(|s| {
        if s.target() == "/fails" {
            Action::Reply(reply(503, b"primary busy"))
        } else {
            Action::Reply(reply(200, b"primary"))
        }
    });
    let backup = Upstream::with(|s| Action::Reply(reply(200, s.header("x-request-id").unwrap_or("none").as_bytes())));
    let log = temp_path("access.json");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).steady().set("--access-log", path_str(&log)).start();

    let mut c = Client::connect(proxy.addr);
    c.send(b"GET /hello?x=1 HTTP/1.1\r\nHost: app\r\nUser-Agent: t/1\r\nX-Request-Id: given-42\r\n\r\n");
    assert_eq!(c.response().status, 200);
    // A 503 from the primary is retried on the backup, which sees the generated id.
    c.send(b"GET /fails HTTP/1.1\r\nHost: app\r\n\r\n");
    let retried = c.response();
    assert_eq!(retried.status, 200);
    let seen_id = retried.text();
    assert_eq!(seen_id.len(), 20, "a generated id reached the backup: {seen_id}");
    assert!(primary.requests().iter().any(|r| r.target() == "/fails" && r.header("x-request-id") == Some(&seen_id)));
    assert_eq!(get(proxy.addr, "/__failover/nope").status, 404);

    // Workers write their own lines: order is per connection, not across them.
    let got = lines(&log, 3);
    let find = |path: &str| {
        let line = got
            .iter()
            .find(|l| l.contains(&format!("\"path\":\"{path}\"")))
            .unwrap_or_else(|| panic!("no {path} in {got:?}"));
        (line.clone(), json(line))
    };
    let (_, first) = find("/hello?x=1");
    assert_eq!(first.str_field("method"), "GET");
    assert_eq!(first.str_field("path"), "/hello?x=1");
    assert_eq!(first.u64_field("status"), 200);
    assert_eq!(first.str_field("upstream"), "primary");
    assert_eq!(first.u64_field("upstream_status"), 200);
    assert_eq!(first.str_field("route"), "primary");
    assert_eq!(first.str_field("request_id"), "given-42", "the client's id is kept");
    assert_eq!(first.str_field("client"), "127.0.0.1");
    assert!(first.u64_field("bytes") > "primary".len() as u64, "head and body");
    assert!(first.get("duration_s").and_then(Json::as_f64).is_some_and(|d| d >= 0.0));
    assert!(first.get("ttfb_s").and_then(Json::as_f64).is_some());
    assert!(first.str_field("ts").ends_with('Z'));

    let (second_line, second) = find("/fails");
    assert_eq!(second.str_field("upstream"), "backup");
    assert_eq!(second.str_field("request_id"), seen_id, "the logged id is the one sent upstream");
    let attempts = match second.get("attempts") {
        Some(Json::Arr(a)) => a.clone(),
        other => panic!("attempts: {other:?} in {second_line}"),
    };
    assert_eq!(attempts.len(), 1, "{second_line}");
    assert_eq!(attempts[0].str_field("upstream"), "primary");
    assert_eq!(attempts[0].u64_field("status"), 503);

    let (_, third) = find("/__failover/nope");
    assert_eq!((third.str_field("path").as_str(), third.u64_field("status")), ("/__failover/nope", 404));
    assert_eq!(third.get("upstream"), Some(&Json::Null), "the proxy answered");
}

#[test]
fn combined_format_and_a_bad_request_are_logged() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let log = temp_path("access.combined");
    let proxy = Proxy::builder(&primary.url(), &backup.url())
        .steady()
        .set("--access-log", path_str(&log))
        .set("--access-log-format", "combined")
        .start();
    let mut c = Client::connect(proxy.addr);
    c.send(b"GET /who HTTP/1.1\r\nHost: app\r\nReferer: http://ref/\r\nUser-Agent: agent \"q\"\r\n\r\n");
    assert_eq!(c.response().status, 200);
    let mut bad = Client::connect(proxy.addr);
    bad.send(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_eq!(bad.response().status, 400);

    let got = lines(&log, 2);
    let line = got.iter().find(|l| l.contains("/who")).unwrap_or_else(|| panic!("{got:?}"));
    let want_start = "127.0.0.1 - - [";
    assert!(line.starts_with(want_start), "{line}");
    assert!(line.contains("] \"GET /who HTTP/1.1\" 200 "), "{line}");
    assert!(line.contains(" \"http://ref/\" \"agent \\x22q\\x22\" primary "), "quotes escaped: {line}");
    let bad_line = got.iter().find(|l| l.contains(" 400 ")).unwrap_or_else(|| panic!("no 400 in {got:?}"));
    assert!(bad_line.contains("\"- - HTTP/1.1\" 400"), "an unparsed request has no method or path: {bad_line}");
}

#[test]
fn sighup_reopens_the_log_after_a_rotation() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let log = temp_path("access.rotate");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).steady().set("--access-log", path_str(&log)).start();
    assert_eq!(get(proxy.addr, "/before").status, 200);
    lines(&log, 1);
    let rotated = log.with_extension("1");
    std::fs::rename(&log, &rotated).unwrap();
    proxy.signal(libc::SIGHUP);
    assert!(wait_until(ms(3000), || log.exists()), "SIGHUP creates the file again");
    assert_eq!(get(proxy.addr, "/after").status, 200);
    let now = lines(&log, 1);
    assert!(now[0].contains("\"/after\""), "{now:?}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("\"/before\"") && !old.contains("/after"), "{old}");
}

#[test]
fn an_unwritable_access_log_is_a_config_error() {
    let args = ProxyBuilder::bare()
        .set("--primary", "http://127.0.0.1:1")
        .set("--backup", "http://127.0.0.1:2")
        .set("--access-log", "/nonexistent-dir/access.log")
        .arg_list();
    let done = run_to_exit(&args, ms(5000));
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("--access-log: cannot open /nonexistent-dir/access.log"), "{}", done.stderr);
    let args = ProxyBuilder::bare()
        .set("--primary", "http://127.0.0.1:1")
        .set("--backup", "http://127.0.0.1:2")
        .set("--access-log", "-")
        .set("--access-log-format", "apache")
        .arg_list();
    let done = run_to_exit(&args, ms(5000));
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("--access-log-format: \"apache\" must be json or combined"), "{}", done.stderr);
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or_else(|| panic!("not UTF-8: {}", p.display()))
}
