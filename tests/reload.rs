//! SIGHUP re-reads the config file: new requests use the new upstreams and thresholds;
//! an invalid file is logged and the old configuration stays.

mod common;

use std::fs;

use common::*;

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
