//! SIGHUP re-reads the config file: new requests use the new upstreams and thresholds;
//! an invalid file is logged and the old configuration stays.

use std::fs;

use crate::common::*;

#[test]
fn sighup_applies_a_new_config_file_and_ignores_a_broken_one() {
    let a = Upstream::named("A");
    let b = Upstream::named("B");
    let backup = Upstream::named("backup");
    let path = temp_path("reload.yaml");
    let write = |primary: &str, extra: &str| {
        fs::write(&path, format!("primary: \"{primary}\"\nbackup: \"{}\"\n{extra}", backup.url())).unwrap()
    };
    write(&a.url(), "");
    let mut proxy = ProxyBuilder::bare().set("--config", path.to_str().unwrap()).set("--workers", "2").start();
    assert_eq!(get(proxy.addr, "/").text(), "A");

    // A keep-alive connection opened before the reload keeps working across it.
    let mut kept = Client::connect(proxy.addr);
    kept.send(b"GET /k HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(kept.response().text(), "A");

    write(&b.url(), "fail_threshold: 7\n");
    proxy.signal(libc::SIGHUP);
    assert!(proxy.wait_for_log("configuration reloaded", ms(3000)), "{}", proxy.log());
    assert!(wait_until(ms(2000), || get(proxy.addr, "/").text() == "B"), "new requests go to the new primary");
    let state = proxy.state();
    assert_eq!(state.get("primary").and_then(|v| v.as_str()), Some(b.url().as_str()), "state shows the new URL");
    kept.send(b"GET /k2 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(kept.response().status, 200, "an existing connection survives the reload");

    fs::write(&path, "primary: [not, a, url]\nunknown_key: 1\n").unwrap();
    proxy.signal(libc::SIGHUP);
    assert!(proxy.wait_for_log("configuration not reloaded", ms(3000)), "{}", proxy.log());
    assert!(proxy.is_running(), "a broken file does not stop the proxy");
    assert_eq!(get(proxy.addr, "/").text(), "B", "the old configuration stays");
    let _ = fs::remove_file(&path);
}

fn upstream_count(proxy: &Proxy) -> usize {
    match proxy.state().get("upstreams") {
        Some(Json::Arr(items)) => items.len(),
        other => panic!("no upstreams list: {other:?}"),
    }
}

#[test]
fn sighup_grows_and_shrinks_the_chain_keeping_what_health_checks_learned() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let backup2 = Upstream::named("backup2");
    let path = temp_path("chain.yaml");
    let timings =
        "check_interval: 100ms\ncheck_timeout: 100ms\nfail_threshold: 2\nrecover_threshold: 2\nhealth_path: /__probe\n";
    let write = |backups: &[&Upstream]| {
        let list: Vec<String> = backups.iter().map(|u| format!("  - \"{}\"\n", u.url())).collect();
        fs::write(&path, format!("primary: \"{}\"\nbackup:\n{}{timings}", primary.url(), list.concat())).unwrap()
    };
    write(&[&backup]);
    let mut proxy = ProxyBuilder::bare().set("--config", path.to_str().unwrap()).set("--workers", "2").start();
    primary.set_healthy(false);
    wait_for_who(proxy.addr, "backup", ms(3000)).unwrap_or_else(|e| panic!("{e}"));
    let since = proxy.state().u64_field("since_unix");

    write(&[&backup, &backup2]);
    proxy.signal(libc::SIGHUP);
    assert!(proxy.wait_for_log("configuration reloaded", ms(3000)), "{}", proxy.log());
    assert!(wait_until(ms(2000), || upstream_count(&proxy) == 3), "{:?}", proxy.state());
    let state = proxy.state();
    assert!(!state.bool_field("primary_healthy"), "the primary's verdict survives the reload: {state:?}");
    assert_eq!(state.u64_field("since_unix"), since, "no switch happened: {state:?}");
    assert_eq!(who(proxy.addr), "backup");

    backup.set_healthy(false);
    wait_for_who(proxy.addr, "backup2", ms(3000)).unwrap_or_else(|e| panic!("{e}"));

    // Dropping the serving upstream from the chain leaves what is left: both down, so 503
    // at once, until one recovers.
    write(&[&backup]);
    proxy.signal(libc::SIGHUP);
    assert!(wait_until(ms(3000), || upstream_count(&proxy) == 2), "{:?}", proxy.state());
    assert!(wait_until(ms(2000), || get(proxy.addr, "/").status == 503), "{:?}", proxy.state());
    assert!(proxy.state().bool_field("all_down"));
    backup.set_healthy(true);
    wait_for_who(proxy.addr, "backup", ms(3000)).unwrap_or_else(|e| panic!("{e}"));
    primary.set_healthy(true);
    wait_for_who(proxy.addr, "primary", ms(3000)).unwrap_or_else(|e| panic!("{e}"));
    assert!(proxy.is_running());
    let _ = fs::remove_file(&path);
}
