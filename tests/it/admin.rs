//! The proxy's own endpoints under /__failover/: answered by the proxy,
//! never forwarded.

use crate::common::*;
use std::thread;

#[test]
fn health_endpoint_answers_ok() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).start();
    let resp = get(proxy.addr, "/__failover/health");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text().trim_end(), "ok");
    thread::sleep(ms(100));
    assert_eq!(primary.request_count(), 0, "admin requests are never forwarded");
    assert_eq!(backup.request_count(), 0);
}

#[test]
fn state_endpoint_describes_the_setup() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let before = unix_now();
    let proxy = Proxy::builder(&primary.url(), &backup.url()).start();
    let resp = get(proxy.addr, "/__failover/state");
    assert_eq!(resp.status, 200);
    let ctype = resp.header("content-type").unwrap_or("");
    assert!(ctype.starts_with("application/json"), "Content-Type {ctype:?}");
    let state = Json::parse(&resp.text()).unwrap_or_else(|e| panic!("{e}: {}", resp.text()));
    assert!(!state.bool_field("on_backup"));
    let since = state.u64_field("since_unix");
    assert!(since + 2 >= before && since <= unix_now() + 1, "since_unix {since} is not the process start (~{before})");
    assert_eq!(state.str_field("primary"), primary.url());
    assert_eq!(state.str_field("backup"), backup.url());
    assert!(wait_until(ms(3000), || {
        let s = proxy.state();
        s.bool_field("primary_healthy") && s.bool_field("backup_healthy")
    }));
    let state = proxy.state();
    assert_eq!(state.u64_field("fail_count"), 0);
    assert_eq!(state.u64_field("recover_count"), 0);
    assert_eq!(primary.request_count(), 0, "admin requests are never forwarded");
}

#[test]
fn unknown_admin_path_is_404_and_not_forwarded() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).start();
    for path in ["/__failover/nope", "/__failover/status/x", "/__failover/health/x"] {
        let resp = get(proxy.addr, path);
        assert_eq!(resp.status, 404, "{path}: {}", show(&resp.raw));
    }
    thread::sleep(ms(100));
    assert_eq!(primary.request_count(), 0);
}

#[test]
fn the_status_page_is_one_self_contained_html_file_served_by_the_proxy() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).start();
    for path in ["/__failover/", "/__failover/status"] {
        let resp = get(proxy.addr, path);
        assert_eq!(resp.status, 200, "{path}: {}", show(&resp.raw));
        assert_eq!(resp.header("content-type"), Some("text/html; charset=utf-8"));
        let csp = resp.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
        let page = resp.text();
        assert!(page.len() < 30 * 1024, "{} bytes", page.len());
        assert!(page.contains("/__failover/state"), "the page polls the state");
        assert!(!page.contains("src=\"http") && !page.contains("href=\"http"), "no external assets");
    }
    thread::sleep(ms(100));
    assert_eq!(primary.request_count(), 0);
}

#[test]
fn paths_that_only_look_like_admin_are_forwarded() {
    let primary = Upstream::echo_target();
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).start();
    for path in ["/__failoverx", "/app/__failover/health", "/__FAILOVER/health"] {
        let resp = get(proxy.addr, path);
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.text(), path, "{path} must reach the primary");
    }
}
