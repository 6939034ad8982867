//! The admin listener: an override pins new requests to an upstream and expires on its
//! own, a drain moves new requests while old ones finish, a token guards it all, the public
//! listener accepts none of it, and a SIGHUP keeps what an operator set.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Instant;

use crate::common::*;

const TOKEN: &str = "s3cret-admin-token-0123456789";

fn admin_request(admin: SocketAddr, method: &str, path: &str, body: &str, token: Option<&str>) -> Response {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(admin, raw.as_bytes())
}

struct Setup {
    primary: Upstream,
    backup: Upstream,
    proxy: Proxy,
    admin: SocketAddr,
}

fn setup(extra: &[(&str, &str)]) -> Setup {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut b = Proxy::builder(&primary.url(), &backup.url()).fast_checks().set("--admin-listen", &admin.to_string());
    for (k, v) in extra {
        b = b.set(k, v);
    }
    let proxy = b.start();
    assert!(wait_until(ms(3000), || get(proxy.addr, "/__failover/ready").status == 200));
    Setup { primary, backup, proxy, admin }
}

#[test]
fn an_override_pins_new_requests_and_expires_on_its_own() {
    let s = setup(&[]);
    assert_eq!(who(s.proxy.addr), "primary");
    let r = admin_request(
        s.admin,
        "POST",
        "/__failover/override",
        r#"{"target": "backup", "ttl": "1500ms", "reason": "db maintenance"}"#,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let set_at = Instant::now();
    assert!(
        r.text().contains("\"name\":\"backup\"") && r.text().contains("\"reason\":\"db maintenance\""),
        "{}",
        r.text()
    );
    for _ in 0..5 {
        assert_eq!(who(s.proxy.addr), "backup", "pinned while the primary is healthy");
    }
    let state = s.proxy.state();
    assert_eq!(state.get("override").map(|o| o.str_field("name")), Some("backup".into()));
    assert!(state.get("override").is_some_and(|o| o.get("reason").is_none()), "the public state keeps reasons private");
    let public = get(s.proxy.addr, "/__failover/state").text();
    assert!(!public.contains("db maintenance"), "no operator words on the public listener: {public}");
    assert!(public.contains("override: new requests pinned to backup until"), "{public}");
    let private = admin_request(s.admin, "GET", "/__failover/state", "", None);
    assert!(private.text().contains("\"reason\":\"db maintenance\""), "{}", private.text());
    assert!(s.proxy.log().contains("override: new requests pinned to backup"), "{}", s.proxy.log());
    // Health checks keep running while pinned.
    let checked = s.primary.probes().len();
    assert!(wait_until(ms(1000), || s.primary.probes().len() > checked), "the primary is still checked");
    wait_for_who(s.proxy.addr, "primary", ms(4000)).unwrap_or_else(|e| panic!("{e}"));
    let took = set_at.elapsed();
    assert!(took >= ms(1400), "expired early: {took:?}");
    assert!(s.proxy.state().get("override") == Some(&Json::Null));
    assert!(s.proxy.wait_for_log("override on backup expired", ms(1000)), "{}", s.proxy.log());
    let metrics = get(s.proxy.addr, "/__failover/metrics").text();
    assert!(metrics.contains("failover_admin_actions_total{action=\"override_set\"} 1"), "{metrics}");
    assert!(metrics.contains("failover_admin_actions_total{action=\"override_expired\"} 1"), "{metrics}");
    assert!(
        metrics.contains("failover_transitions_total{from=\"primary\",to=\"backup\",reason=\"operator\"} 1"),
        "{metrics}"
    );
}

#[test]
fn delete_ends_an_override_and_pinning_a_failing_upstream_needs_force() {
    let s = setup(&[]);
    s.backup.set_healthy(false);
    assert!(wait_until(ms(3000), || !s.proxy.state().get("upstreams").is_some_and(|u| match u {
        Json::Arr(a) => a.get(1).is_some_and(|b| b.bool_field("healthy")),
        _ => true,
    })));
    let refused = admin_request(s.admin, "POST", "/__failover/override", r#"{"target": 1}"#, None);
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert!(refused.text().contains("\"error\":") && refused.text().contains("force"), "{}", refused.text());
    assert_eq!(who(s.proxy.addr), "primary");
    let forced =
        admin_request(s.admin, "POST", "/__failover/override", r#"{"target": 1, "force": true, "ttl": "10m"}"#, None);
    assert_eq!(forced.status, 200, "{}", forced.text());
    assert!(forced.text().contains("\"forced\":true"));
    let r = admin_request(s.admin, "POST", "/__failover/drain", r#"{"target": 1, "force": true}"#, None);
    assert_eq!(r.status, 409, "no drain of the pinned upstream: {}", r.text());
    // The backup fails its checks but answers requests: forced means forced.
    assert_eq!(who(s.proxy.addr), "backup");
    let cleared = admin_request(s.admin, "DELETE", "/__failover/override", "", None);
    assert_eq!(cleared.status, 200, "{}", cleared.text());
    assert_eq!(who(s.proxy.addr), "primary");
    assert_eq!(admin_request(s.admin, "DELETE", "/__failover/override", "", None).status, 404);
    for (body, want) in [
        (r#"{"target": "nope"}"#, "no upstream"),
        (r#"{"target": 0, "ttl": "25h"}"#, "at most 24h"),
        (r#"{"target": 0, "ttl": "soon"}"#, "ttl"),
        (r#"{"targte": 0}"#, "unknown field"),
        ("not json", "override"),
    ] {
        let r = admin_request(s.admin, "POST", "/__failover/override", body, None);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(want), "{body}: {}", r.text());
    }
}

#[test]
fn a_token_is_required_and_a_wrong_one_gets_401() {
    let file = temp_path("admin.token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let s = setup(&[("--admin-token-file", file.to_str().unwrap_or_default())]);
    let body = r#"{"target": "backup", "ttl": "1m"}"#;
    for token in [None, Some("wrong"), Some(&TOKEN[..TOKEN.len() - 1]), Some(&format!("{TOKEN}x")[..])] {
        let r = admin_request(s.admin, "POST", "/__failover/override", body, token);
        assert_eq!(r.status, 401, "{token:?}: {}", r.text());
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    assert_eq!(admin_request(s.admin, "GET", "/__failover/state", "", None).status, 401, "reads need it too");
    assert_eq!(who(s.proxy.addr), "primary", "nothing changed");
    let ok = admin_request(s.admin, "POST", "/__failover/override", body, Some(TOKEN));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(who(s.proxy.addr), "backup");
}

#[test]
fn the_public_listener_accepts_no_admin_write() {
    let s = setup(&[]);
    for (method, path) in [
        ("POST", "/__failover/override"),
        ("DELETE", "/__failover/override"),
        ("POST", "/__failover/drain"),
        ("DELETE", "/__failover/drain"),
    ] {
        let r = admin_request(s.proxy.addr, method, path, r#"{"target": "backup"}"#, None);
        assert_eq!(r.status, 404, "{method} {path} on the public listener: {}", r.text());
    }
    thread::sleep(ms(100));
    assert_eq!(s.primary.request_count(), 0, "not forwarded either");
    assert_eq!(who(s.proxy.addr), "primary");
}

#[test]
fn a_drain_moves_new_requests_and_lets_old_ones_finish() {
    let primary = Upstream::with(|seen| {
        if seen.target() == "/slow" {
            thread::sleep(ms(800));
        }
        Action::Reply(reply(200, b"primary"))
    });
    let backup = Upstream::named("backup");
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy =
        Proxy::builder(&primary.url(), &backup.url()).fast_checks().set("--admin-listen", &admin.to_string()).start();
    assert!(wait_until(ms(3000), || get(proxy.addr, "/__failover/ready").status == 200));
    let addr = proxy.addr;
    let slow = thread::spawn(move || get(addr, "/slow"));
    thread::sleep(ms(200));
    let r = admin_request(
        admin,
        "POST",
        "/__failover/drain",
        r#"{"target": "primary", "ttl": "5m", "reason": "bad deploy"}"#,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(who(proxy.addr), "backup", "new requests leave the drained primary");
    let old = slow.join().unwrap();
    assert_eq!((old.status, old.text().as_str()), (200, "primary"), "the request in flight finished on the primary");
    // One hold per upstream at a time: no pin to a drained upstream.
    let r = admin_request(admin, "POST", "/__failover/override", r#"{"target": "primary"}"#, None);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("drained"), "{}", r.text());
    // An idle admin connection holds up no other.
    let idle = std::net::TcpStream::connect(admin).unwrap();
    let asked = Instant::now();
    assert_eq!(admin_request(admin, "GET", "/__failover/state", "", None).status, 200);
    assert!(asked.elapsed() < ms(3000), "waited for the idle connection: {:?}", asked.elapsed());
    drop(idle);
    // Draining the only healthy upstream left is refused unless forced.
    let r = admin_request(admin, "POST", "/__failover/drain", r#"{"target": "backup"}"#, None);
    assert_eq!(r.status, 409, "{}", r.text());
    let state = proxy.state();
    assert!(matches!(state.get("drains"), Some(Json::Arr(d)) if d.len() == 1));
    let r = admin_request(admin, "DELETE", "/__failover/drain", r#"{"target": "primary"}"#, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(who(proxy.addr), "primary");
}

#[test]
fn an_override_survives_a_sighup_reload() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let file = temp_path("override.yaml");
    let yaml = |threshold: u32| {
        format!(
            "primary: {}\nbackup: {}\ncheck_interval: 100ms\nfail_threshold: {threshold}\nadmin_listen: \"{admin}\"\n",
            primary.url(),
            backup.url()
        )
    };
    std::fs::write(&file, yaml(2)).unwrap();
    let proxy = ProxyBuilder::bare().set("--config", file.to_str().unwrap_or_default()).start();
    let r = admin_request(admin, "POST", "/__failover/override", r#"{"target": "backup", "ttl": "10m"}"#, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(who(proxy.addr), "backup");
    std::fs::write(&file, yaml(4)).unwrap();
    proxy.signal(libc::SIGHUP);
    assert!(proxy.wait_for_log("configuration reloaded", ms(3000)), "{}", proxy.log());
    for _ in 0..5 {
        assert_eq!(who(proxy.addr), "backup", "still pinned after the reload");
    }
    assert_eq!(proxy.state().get("override").map(|o| o.str_field("name")), Some("backup".into()));
    // The admin listener survived the reload too.
    assert_eq!(admin_request(admin, "DELETE", "/__failover/override", "", None).status, 200);
    assert_eq!(who(proxy.addr), "primary");
}

#[test]
fn a_unix_socket_admin_listener_is_private_to_its_user() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let dir = temp_path("admin-sock");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("admin.sock");
    let proxy = Proxy::builder(&primary.url(), &backup.url())
        .set("--admin-listen", &format!("unix:{}", path.display()))
        .start();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut sock = UnixStream::connect(&path).unwrap();
    let body = r#"{"target": "backup", "ttl": "1m"}"#;
    write!(sock, "POST /__failover/override HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert_eq!(who(proxy.addr), "backup");
}

#[test]
fn a_non_loopback_admin_listener_without_a_token_is_refused() {
    let args = ProxyBuilder::bare()
        .set("--primary", "http://127.0.0.1:1")
        .set("--backup", "http://127.0.0.1:2")
        .set("--admin-listen", "0.0.0.0:9180")
        .flag("--check-config")
        .arg_list();
    let done = run_to_exit(&args, ms(5000));
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("--admin-listen: 0.0.0.0:9180 is not loopback"), "{}", done.stderr);
    let short = temp_path("short.token");
    std::fs::write(&short, "abc\n").unwrap();
    let args = ProxyBuilder::bare()
        .set("--primary", "http://127.0.0.1:1")
        .set("--backup", "http://127.0.0.1:2")
        .set("--admin-token-file", short.to_str().unwrap_or_default())
        .flag("--check-config")
        .arg_list();
    let done = run_to_exit(&args, ms(5000));
    assert_eq!(done.code, Some(2));
    assert!(done.stderr.contains("--admin-token-file"), "{}", done.stderr);
}
