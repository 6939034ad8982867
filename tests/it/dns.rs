//! Upstream names: looked up off the event loops, every address used, and a name that does
//! not resolve is an unhealthy upstream, not a proxy that will not start. (Moving addresses
//! and the pool that follows them are unit-tested in `resolve.rs` and `uplink.rs`: a test
//! here has no DNS of its own to change.)

use crate::common::*;

/// A name under `.invalid` never resolves (RFC 6761), and fails at once.
const NOWHERE: &str = "http://failover-test.invalid:8080";

fn upstream_entry(state: &Json, index: usize) -> Json {
    match state.get("upstreams") {
        Some(Json::Arr(items)) => items[index].clone(),
        other => panic!("no upstreams list: {other:?}"),
    }
}

#[test]
fn a_backup_whose_name_does_not_resolve_is_unhealthy_and_the_primary_serves() {
    let primary = Upstream::named("primary");
    let proxy = Proxy::builder(&primary.url(), NOWHERE).fast_checks().start();
    assert_eq!(who(proxy.addr), "primary");
    let state = proxy.state();
    let backup = upstream_entry(&state, 1);
    assert!(!backup.bool_field("healthy"), "unresolvable from the start: {state:?}");
    let error = backup.str_field("last_error");
    assert!(error.contains("cannot resolve") && error.contains("failover-test.invalid"), "{error}");
    assert!(!state.bool_field("on_backup"), "{state:?}");
}

#[test]
fn a_primary_whose_name_does_not_resolve_sends_traffic_to_the_backup_at_once() {
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(NOWHERE, &backup.url()).fast_checks().start();
    for i in 0..3 {
        assert_eq!(who(proxy.addr), "backup", "request {i}");
    }
    let state = proxy.state();
    assert!(state.bool_field("on_backup"), "{state:?}");
    assert!(state.str_field("primary_last_error").contains("cannot resolve"), "{state:?}");
    assert!(proxy.log().contains("failover-test.invalid"), "{}", proxy.log());
}

#[test]
fn names_are_looked_up_and_used() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let by_name = format!("http://localhost:{}", primary.addr.port());
    let proxy = Proxy::builder(&by_name, &backup.url()).fast_checks().set("--dns-refresh", "1s").start();
    for i in 0..5 {
        assert_eq!(who(proxy.addr), "primary", "request {i}");
    }
    // Probes go on through the refreshes.
    std::thread::sleep(ms(1500));
    assert_eq!(who(proxy.addr), "primary");
    assert!(proxy.state().bool_field("primary_healthy"));
}

#[test]
fn dns_refresh_is_a_setting_with_checked_values() {
    for (args, key) in [
        (vec!["--dns-refresh=soon".to_string()], "--dns-refresh"),
        (vec!["--dns-refresh=10ms".to_string()], "--dns-refresh"),
    ] {
        let mut all = vec!["--primary=http://127.0.0.1:9".to_string(), "--backup=http://127.0.0.1:10".to_string()];
        all.extend(args);
        let done = run_to_exit(&all, ms(5000));
        assert_eq!(done.code, Some(2), "{all:?}: {}", done.stderr);
        let lines: Vec<&str> = done.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{:?}", done.stderr);
        assert!(lines[0].contains(key), "{}", lines[0]);
    }
}
