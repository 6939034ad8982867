//! Failover and failback as a user sees them: which upstream answers, how
//! fast traffic moves, what /__failover/state says, the errors a client
//! gets when an upstream misbehaves, and the WARN lines in the log. The
//! per-request retry rules themselves are in zero_error.rs.

use crate::common::*;
use std::thread;
use std::time::{Duration, Instant};

/// Generous bound on detection: fail-threshold 2 x interval 100ms + timeout
/// 100ms = 300ms, times ten for a loaded CI machine.
const SWITCH_LIMIT: Duration = Duration::from_secs(3);

fn fast(primary: &Upstream, backup: &Upstream, workers: &str) -> Proxy {
    Proxy::builder(&primary.url(), &backup.url()).fast_checks().set("--workers", workers).start()
}

fn steady(primary: &str, backup: &str) -> ProxyBuilder {
    Proxy::builder(primary, backup).steady()
}

fn post(addr: std::net::SocketAddr, path: &str) -> Response {
    exchange(addr, format!("POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 2\r\n\r\nhi").as_bytes())
}

/// Polls /__failover/state until traffic is on the backup.
fn wait_for_backup_state(proxy: &Proxy) {
    assert!(
        wait_until(SWITCH_LIMIT, || proxy.state().bool_field("on_backup")),
        "on_backup never went true: {:?}",
        proxy.state()
    );
}

fn assert_short_text(resp: &Response) {
    let ctype = resp.header("content-type").unwrap_or("");
    assert!(ctype.starts_with("text/plain"), "Content-Type {ctype:?}: {}", show(&resp.raw));
    assert!(!resp.body.is_empty() && resp.body.len() < 512, "want a short text body: {}", show(&resp.raw));
}

/// Every one of `n` requests is answered by `want`.
fn assert_all_from(addr: std::net::SocketAddr, want: &str, n: usize) {
    for i in 0..n {
        assert_eq!(who(addr), want, "request {i} of {n}");
    }
}

#[test]
fn killed_primary_moves_traffic_to_backup_and_back() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = fast(&primary, &backup, "2");
    assert_all_from(proxy.addr, "primary", 4);

    let killed = Instant::now();
    primary.stop();
    // A refused connect goes to the backup at once, before the switch.
    assert_all_from(proxy.addr, "backup", 3);
    wait_for_backup_state(&proxy);
    let took = killed.elapsed();
    eprintln!("failover took {took:?} (contract: <= 300ms)");
    // Every worker has had time to see the failures by now.
    thread::sleep(ms(500));
    assert_all_from(proxy.addr, "backup", 10);

    primary.restart();
    let took = wait_for_who(proxy.addr, "primary", SWITCH_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("failback took {took:?} (contract: <= 200ms)");
    thread::sleep(ms(500));
    assert_all_from(proxy.addr, "primary", 10);
}

#[test]
fn state_reports_the_switch_and_since_unix_stays_put() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = fast(&primary, &backup, "1");
    let state = proxy.state();
    assert!(!state.bool_field("on_backup"));
    let started = state.u64_field("since_unix");

    thread::sleep(ms(1100));
    assert_eq!(proxy.state().u64_field("since_unix"), started, "since_unix must not move while nothing changes");

    let killed_at = unix_now();
    primary.stop();
    wait_for_backup_state(&proxy);
    let first = proxy.state();
    assert!(first.bool_field("on_backup"), "{first:?}");
    assert!(!first.bool_field("primary_healthy"), "{first:?}");
    let since = first.u64_field("since_unix");
    assert!(
        since >= killed_at && since <= unix_now(),
        "since_unix {since} is not the failover time (primary killed at {killed_at})"
    );
    thread::sleep(ms(1100));
    let second = proxy.state();
    assert!(second.bool_field("on_backup"));
    assert_eq!(second.u64_field("since_unix"), since, "since_unix moved without a switch");

    let back_at = unix_now();
    primary.restart();
    wait_for_who(proxy.addr, "primary", SWITCH_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let third = proxy.state();
    assert!(!third.bool_field("on_backup"), "{third:?}");
    assert!(third.bool_field("primary_healthy"), "{third:?}");
    assert!(third.u64_field("since_unix") >= back_at);
}

#[test]
fn failing_health_status_counts_as_failure() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = fast(&primary, &backup, "2");
    assert_eq!(who(proxy.addr), "primary");

    primary.set_healthy(false); // probes get 503, traffic would still work
    wait_for_who(proxy.addr, "backup", SWITCH_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    thread::sleep(ms(500));
    assert_all_from(proxy.addr, "backup", 5);

    primary.set_healthy(true);
    wait_for_who(proxy.addr, "primary", SWITCH_LIMIT).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn failover_waits_for_fail_threshold_failures() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url())
        .fast_checks()
        .set("--fail-threshold", "10")
        .set("--workers", "1")
        .start();
    // Only the probes fail, and no request goes to the primary meanwhile
    // (live failures would count too): the state shows the count climbing.
    primary.set_healthy(false);
    let start = Instant::now();
    let mut highest = 0;
    let switched = loop {
        let s = proxy.state();
        if s.bool_field("on_backup") {
            break start.elapsed();
        }
        highest = highest.max(s.u64_field("fail_count"));
        assert!(start.elapsed() < Duration::from_secs(5), "never switched; fail_count reached {highest} of 10");
        thread::sleep(ms(5));
    };
    assert!(highest >= 7, "switched after {switched:?} with fail_count at most {highest} of 10");
    // A suspect primary is probed every 50ms (100ms / 4, at least 50ms):
    // ten failures take well over 200ms.
    assert!(switched >= ms(200), "10 failed probes in {switched:?}");
    wait_for_who(proxy.addr, "backup", Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn failback_waits_for_recover_threshold_successes() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url())
        .fast_checks()
        .set("--recover-threshold", "10")
        .set("--workers", "1")
        .start();
    primary.set_healthy(false);
    wait_for_who(proxy.addr, "backup", SWITCH_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    primary.set_healthy(true);
    let start = Instant::now();
    while start.elapsed() < ms(500) {
        assert_eq!(who(proxy.addr), "backup", "switched back after {:?}", start.elapsed());
        thread::sleep(ms(20));
    }
    wait_for_who(proxy.addr, "primary", Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn both_down_is_503_saying_so() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = fast(&primary, &backup, "1");
    primary.stop();
    backup.stop();
    assert!(
        wait_until(SWITCH_LIMIT, || {
            let s = proxy.state();
            !s.bool_field("primary_healthy") && !s.bool_field("backup_healthy")
        }),
        "the state never showed both upstreams unhealthy"
    );
    // Within one more probe round the answer must say so.
    let mut resp = get(proxy.addr, "/who");
    wait_until(ms(500), || {
        resp = get(proxy.addr, "/who");
        resp.status == 503 && resp.text().to_ascii_lowercase().contains("down")
    });
    assert_eq!(resp.status, 503, "{}", show(&resp.raw));
    assert!(
        resp.text().to_ascii_lowercase().contains("down"),
        "want a body saying both upstreams are down: {}",
        show(&resp.raw)
    );
    assert_short_text(&resp);
    let retry_after = resp.header("retry-after").unwrap_or("");
    assert!(retry_after.parse::<u32>().is_ok(), "want Retry-After in seconds: {}", show(&resp.raw));

    backup.restart();
    wait_for_who(proxy.addr, "backup", SWITCH_LIMIT).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn connect_refused_primary_is_answered_by_backup() {
    let backup = Upstream::named("backup");
    let proxy = steady(&format!("http://{}", dead_addr()), &backup.url()).start();
    for _ in 0..3 {
        assert_eq!(who(proxy.addr), "backup");
        let resp = post(proxy.addr, "/x");
        assert_eq!(resp.text(), "backup", "a POST that never reached the primary goes to the backup too");
    }
    assert_eq!(backup.request_count(), 6);
    assert!(!proxy.state().bool_field("on_backup"), "no switch: each request moved on its own");
}

#[test]
fn connect_refused_on_both_is_502() {
    let proxy = steady(&format!("http://{}", dead_addr()), &format!("http://{}", dead_addr())).start();
    for _ in 0..3 {
        let resp = get(proxy.addr, "/x");
        assert_eq!(resp.status, 502, "{}", show(&resp.raw));
        assert_short_text(&resp);
        let resp = post(proxy.addr, "/x");
        assert_eq!(resp.status, 502, "{}", show(&resp.raw));
    }
}

#[test]
fn both_silent_is_504_after_upstream_timeouts() {
    let primary = Upstream::black_hole();
    let backup = Upstream::black_hole();
    let proxy = steady(&primary.url(), &backup.url()).set("--upstream-timeout", "300ms").start();
    for i in 0..2 {
        let start = Instant::now();
        let resp = get(proxy.addr, "/slow");
        let took = start.elapsed();
        assert_eq!(resp.status, 504, "request {i}: {}", show(&resp.raw));
        assert_short_text(&resp);
        // The primary's 300ms, then the backup's.
        assert!(took >= ms(500) && took < Duration::from_secs(3), "504 after {took:?}, want about 600ms");
    }
    assert_eq!(primary.request_count(), 2);
    assert_eq!(backup.request_count(), 2);
}

#[test]
fn silent_primary_post_is_504_after_upstream_timeout() {
    let primary = Upstream::black_hole();
    let backup = Upstream::named("backup");
    let proxy = steady(&primary.url(), &backup.url()).set("--upstream-timeout", "300ms").start();
    let start = Instant::now();
    let resp = post(proxy.addr, "/slow");
    let took = start.elapsed();
    assert_eq!(resp.status, 504, "{}", show(&resp.raw));
    assert_eq!(resp.header("x-failover-retry"), Some("skipped-method"), "{}", show(&resp.raw));
    assert_short_text(&resp);
    assert!(took >= ms(250) && took < Duration::from_secs(3), "504 after {took:?}, want about 300ms");
    assert_eq!(backup.request_count(), 0);
}

#[test]
fn garbage_response_get_goes_to_backup_post_is_502() {
    let primary = Upstream::garbage();
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).start();
    let resp = get(proxy.addr, "/g");
    assert_eq!(resp.text(), "backup", "{}", show(&resp.raw));
    let resp = post(proxy.addr, "/g");
    assert_eq!(resp.status, 502, "{}", show(&resp.raw));
    assert_eq!(resp.header("x-failover-retry"), Some("skipped-method"), "{}", show(&resp.raw));
    assert_short_text(&resp);
    assert!(find(&resp.raw, b"SSH-2.0").is_none(), "upstream garbage leaked to the client");
}

#[test]
fn upstream_closing_without_a_response_get_goes_to_backup_post_is_502() {
    let primary = Upstream::closes_after_head();
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).start();
    let resp = get(proxy.addr, "/c");
    assert_eq!(resp.text(), "backup", "{}", show(&resp.raw));
    let resp = post(proxy.addr, "/c");
    assert_eq!(resp.status, 502, "{}", show(&resp.raw));
    assert_eq!(resp.header("x-failover-retry"), Some("skipped-method"), "{}", show(&resp.raw));
    assert_short_text(&resp);
}

#[test]
fn transitions_are_logged_at_warn() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = fast(&primary, &backup, "1");
    primary.stop();
    assert!(proxy.wait_for_log("traffic -> backup", SWITCH_LIMIT), "no failover line in stderr:\n{}", proxy.log());
    primary.restart();
    assert!(proxy.wait_for_log("traffic -> primary", SWITCH_LIMIT), "no failback line in stderr:\n{}", proxy.log());
    let log = proxy.log();
    let down = log.lines().find(|l| l.contains("traffic -> backup")).unwrap_or_default();
    assert!(down.contains("WARN"), "not at WARN: {down}");
    assert!(down.contains("primary unhealthy"), "{down}");
    let up = log.lines().find(|l| l.contains("traffic -> primary")).unwrap_or_default();
    assert!(up.contains("WARN"), "not at WARN: {up}");
    assert!(up.contains("primary healthy again"), "{up}");
}

#[test]
fn backup_down_keeps_traffic_on_primary() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = fast(&primary, &backup, "1");
    backup.stop();
    assert!(
        wait_until(SWITCH_LIMIT, || !proxy.state().bool_field("backup_healthy")),
        "backup_healthy never went false"
    );
    let s = proxy.state();
    assert!(!s.bool_field("on_backup"));
    assert!(s.bool_field("primary_healthy"));
    assert_all_from(proxy.addr, "primary", 5);
}

#[test]
fn probe_timeout_counts_as_failure() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = fast(&primary, &backup, "1");
    primary.set_probe_hangs(true); // probes never answered, traffic still works
    wait_for_who(proxy.addr, "backup", SWITCH_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    primary.set_probe_hangs(false);
    wait_for_who(proxy.addr, "primary", SWITCH_LIMIT).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn open_client_connection_follows_the_failover() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = fast(&primary, &backup, "1");
    let mut c = Client::connect(proxy.addr);
    let ask = format!("GET /who HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    c.send(ask.as_bytes());
    assert_eq!(c.response().text(), "primary");
    primary.set_healthy(false);
    wait_for_who(proxy.addr, "backup", SWITCH_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    c.send(ask.as_bytes());
    let resp = c.response();
    assert_eq!(resp.text(), "backup", "the next request on a kept-alive connection goes to the backup");
}
