//! TLS both ways, as a user sees it. Upstream side: `https://` primaries and backups
//! verified against a CA file (or the webpki roots, or not at all with `--*-insecure`),
//! SNI and Host as the upstream receives them, path prefixes, a TLS failure treated as a
//! connect failure (the request goes to the backup at once), and pooled TLS connections
//! (counted in handshakes). Listener side: `--tls-cert`/`--tls-key` with ALPN and
//! `X-Forwarded-Proto: https`, `--listen-http` next to it, bad files refused at start,
//! and SIGHUP reloading the certificate without dropping connections.
//!
//! Certificates come from throwaway CAs made per test with rcgen; everything runs on
//! 127.0.0.1 (`localhost` resolves there).

#[path = "common/tls.rs"]
pub(crate) mod tls_kit;

use crate::common::*;
use std::time::Duration;
use tls_kit::*;

/// Probes every 60s: only the probes at start run during a test, so what a request meets
/// is its own outcome, not a probe's, and probe connections stay out of the counts.
const QUIET_CHECKS: &str = "60s";

/// Waits (3s) for `primary_last_error` in /__failover/state to contain every word of
/// `want`: a live failure may put a generic reason there until a probe names the cause.
fn assert_primary_error_names(proxy: &Proxy, want: &[&str]) {
    let mut err = String::new();
    let named = wait_until(Duration::from_secs(3), || {
        err = proxy.state().str_field("primary_last_error");
        want.iter().all(|w| err.to_lowercase().contains(w))
    });
    assert!(named, "primary_last_error should name {want:?}; last seen {err:?}");
}

/// The only request the TLS upstream got, with what came with it.
fn only_request(up: &TlsUpstream) -> TlsSeen {
    let seen = up.requests();
    assert_eq!(seen.len(), 1, "want exactly one request at the TLS upstream, got {seen:?}");
    seen[0].clone()
}

// ------------------------------------------------- https:// upstreams ----

/// A TLS primary ("tls-primary", with a `localhost` certificate from `ca`), a plain
/// backup, and a proxy builder for the primary's URL at `host` whose `--primary-ca` is
/// `trust` (its file lives as long as the returned TempDir).
fn tls_primary(ca: &Ca, host: &str, trust: &Ca) -> (TlsUpstream, Upstream, TempDir, ProxyBuilder) {
    let dir = TempDir::new("ca");
    let up = TlsUpstream::start("tls-primary", &ca.localhost());
    let backup = Upstream::named("backup");
    let builder = Proxy::builder(&up.url(host), &backup.url()).set("--primary-ca", &dir.write("ca.pem", &trust.pem()));
    (up, backup, dir, builder)
}

/// The usual setup: [`tls_primary`] with a fresh CA named `ca` that the proxy trusts.
fn trusted_primary(ca: &str, host: &str) -> (TlsUpstream, Upstream, TempDir, ProxyBuilder) {
    let ca = Ca::new(ca);
    tls_primary(&ca, host, &ca)
}

#[test]
fn https_primary_verified_with_primary_ca() {
    let (up, backup, _dir, builder) = trusted_primary("primary", "localhost");
    let proxy = builder.start();

    let r = get(proxy.addr, "/who");
    assert_eq!((r.status, r.text().as_str()), (200, "tls-primary"), "{}", show(&r.raw));
    assert_eq!(only_request(&up).target(), "/who");
    assert_eq!(backup.request_count(), 0);
}

#[test]
fn https_upstream_is_offered_alpn_http11() {
    let (up, _backup, _dir, builder) = trusted_primary("alpn", "localhost");
    let proxy = builder.start();

    assert_eq!(get(proxy.addr, "/who").text(), "tls-primary");
    let alpn = up.alpn();
    assert!(!alpn.is_empty() && alpn.iter().all(|p| p.as_deref() == Some("http/1.1")), "ALPN per handshake: {alpn:?}");
}

#[test]
fn https_backup_verified_with_backup_ca() {
    let ca = Ca::new("backup");
    let dir = TempDir::new("ca");
    let up = TlsUpstream::start("tls-backup", &ca.localhost());
    let proxy = Proxy::builder(&format!("http://{}", dead_addr()), &up.url("localhost"))
        .set("--backup-ca", &dir.write("ca.pem", &ca.pem()))
        .start();

    let r = get(proxy.addr, "/who");
    assert_eq!((r.status, r.text().as_str()), (200, "tls-backup"), "{}", show(&r.raw));
}

#[test]
fn wrong_ca_fails_over_to_plain_backup_at_once() {
    let (ca, other) = (Ca::new("real"), Ca::new("other"));
    let (up, _backup, _dir, builder) = tls_primary(&ca, "localhost", &other);
    let proxy = builder.set("--check-interval", QUIET_CHECKS).start();

    let r = get(proxy.addr, "/who");
    assert_eq!((r.status, r.text().as_str()), (200, "backup"), "{}", show(&r.raw));
    assert!(up.requests().is_empty(), "no request may reach a primary that failed verification");
    assert_primary_error_names(&proxy, &["certificate", "unknown authority"]);
}

#[test]
fn post_fails_over_on_tls_failure() {
    let (ca, other) = (Ca::new("real"), Ca::new("other"));
    let (_up, backup, _dir, builder) = tls_primary(&ca, "localhost", &other);
    let proxy = builder.set("--check-interval", QUIET_CHECKS).start();

    let r = exchange(
        proxy.addr,
        format!("POST /orders HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello").as_bytes(),
    );
    assert_eq!((r.status, r.text().as_str()), (200, "backup"), "{}", show(&r.raw));
    let seen = backup.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((seen[0].method(), seen[0].target(), seen[0].body.as_slice()), ("POST", "/orders", &b"hello"[..]));
}

#[test]
fn failover_from_https_primary_gives_backup_the_client_host() {
    let (ca, other) = (Ca::new("real"), Ca::new("other"));
    let (_up, backup, _dir, builder) = tls_primary(&ca, "localhost", &other);
    let proxy = builder.set("--check-interval", QUIET_CHECKS).start();

    assert_eq!(get(proxy.addr, "/who").text(), "backup");
    let seen = backup.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].head.get_all("host"), vec![HOST], "{}", show(&seen[0].raw_head));
    assert_eq!(seen[0].header("x-forwarded-host"), None, "{}", show(&seen[0].raw_head));
}

#[test]
fn default_roots_reject_a_private_ca() {
    let ca = Ca::new("private");
    let up = TlsUpstream::start("tls-primary", &ca.localhost());
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&up.url("localhost"), &backup.url()).set("--check-interval", QUIET_CHECKS).start();

    assert_eq!(get(proxy.addr, "/who").text(), "backup");
    assert!(up.requests().is_empty());
    assert_primary_error_names(&proxy, &["certificate"]);
}

#[test]
fn certificate_for_another_name_fails_over() {
    let ca = Ca::new("names");
    let dir = TempDir::new("ca");
    let up = TlsUpstream::start("tls-primary", &ca.issue(&["other.test"]));
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&up.url("localhost"), &backup.url())
        .set("--primary-ca", &dir.write("ca.pem", &ca.pem()))
        .set("--check-interval", QUIET_CHECKS)
        .start();

    assert_eq!(get(proxy.addr, "/who").text(), "backup");
    assert_primary_error_names(&proxy, &["certificate", "name"]);
}

#[test]
fn primary_insecure_accepts_an_untrusted_certificate() {
    let ca = Ca::new("untrusted");
    let up = TlsUpstream::start("tls-primary", &ca.issue(&["other.test"]));
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&up.url("127.0.0.1"), &backup.url()).flag("--primary-insecure").start();

    let r = get(proxy.addr, "/who");
    assert_eq!((r.status, r.text().as_str()), (200, "tls-primary"), "{}", show(&r.raw));
    let log = proxy.log();
    assert!(
        log.lines().any(|l| l.contains("WARN") && l.contains("insecure")),
        "want a WARN line about --primary-insecure at start:\n{log}"
    );
}

#[test]
fn https_ip_url_defaults_host_to_upstream_authority() {
    let (up, _backup, _dir, builder) = trusted_primary("ip", "127.0.0.1");
    let proxy = builder.start();

    assert_eq!(get(proxy.addr, "/who").text(), "tls-primary");
    let seen = only_request(&up);
    assert_eq!(seen.head.get_all("host"), vec![format!("127.0.0.1:{}", up.port())]);
    assert_eq!(seen.header("x-forwarded-host"), Some(HOST));
    // RFC 6066: an IP address is never sent as SNI.
    assert_eq!(seen.sni, None);
}

#[test]
fn https_name_url_defaults_sni_and_host_to_the_url_host() {
    let (up, _backup, _dir, builder) = trusted_primary("name", "localhost");
    let proxy = builder.start();

    assert_eq!(get(proxy.addr, "/who").text(), "tls-primary");
    let seen = only_request(&up);
    assert_eq!(seen.sni.as_deref(), Some("localhost"));
    assert_eq!(seen.head.get_all("host"), vec![format!("localhost:{}", up.port())]);
    assert_eq!(seen.header("x-forwarded-host"), Some(HOST));
}

#[test]
fn primary_host_header_client_passes_the_client_host() {
    let (up, _backup, _dir, builder) = trusted_primary("client-host", "localhost");
    let proxy = builder.set("--primary-host-header", "client").start();

    assert_eq!(get(proxy.addr, "/who").text(), "tls-primary");
    let seen = only_request(&up);
    assert_eq!(seen.head.get_all("host"), vec![HOST]);
    assert_eq!(seen.header("x-forwarded-host"), None);
    assert_eq!(seen.sni.as_deref(), Some("localhost"), "SNI still follows the URL");
}

#[test]
fn primary_host_header_literal_is_sent() {
    let (up, _backup, _dir, builder) = trusted_primary("literal-host", "localhost");
    let proxy = builder.set("--primary-host-header", "api.example").start();

    assert_eq!(get(proxy.addr, "/who").text(), "tls-primary");
    let seen = only_request(&up);
    assert_eq!(seen.head.get_all("host"), vec!["api.example"]);
    assert_eq!(seen.header("x-forwarded-host"), Some(HOST));
}

#[test]
fn primary_sni_names_an_ip_url() {
    let ca = Ca::new("sni");
    let dir = TempDir::new("ca");
    // No IP SAN: verification can only pass against the --primary-sni name.
    let up = TlsUpstream::start("tls-primary", &ca.issue(&["localhost"]));
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&up.url("127.0.0.1"), &backup.url())
        .set("--primary-ca", &dir.write("ca.pem", &ca.pem()))
        .set("--primary-sni", "localhost")
        .start();

    let r = get(proxy.addr, "/who");
    assert_eq!((r.status, r.text().as_str()), (200, "tls-primary"), "{}", show(&r.raw));
    let seen = only_request(&up);
    assert_eq!(seen.sni.as_deref(), Some("localhost"));
    assert_eq!(seen.head.get_all("host"), vec![format!("127.0.0.1:{}", up.port())]);
}

#[test]
fn https_url_prefix_is_prepended() {
    let ca = Ca::new("prefix");
    let dir = TempDir::new("ca");
    let up = TlsUpstream::start("tls-primary", &ca.localhost());
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&format!("{}/base", up.url("localhost")), &backup.url())
        .set("--primary-ca", &dir.write("ca.pem", &ca.pem()))
        .start();

    assert_eq!(get(proxy.addr, "/a/b?x=1").text(), "tls-primary");
    assert_eq!(only_request(&up).target(), "/base/a/b?x=1");
}

#[test]
fn tls_upstream_connection_reused_across_requests() {
    let (up, _backup, _dir, builder) = trusted_primary("pool", "localhost");
    let proxy = builder.set("--check-interval", QUIET_CHECKS).start();

    let mut c = Client::connect(proxy.addr);
    for i in 0..5 {
        c.send(format!("GET /r{i} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!((r.status, r.text().as_str()), (200, "tls-primary"), "request {i}: {}", show(&r.raw));
    }
    assert_eq!(up.requests().len(), 5);
    assert_eq!(up.traffic_handshakes(), 1, "5 requests should share one TLS connection: {:?}", up.requests());
}

#[test]
fn tls_upstream_pool_serves_later_client_connections() {
    let (up, _backup, _dir, builder) = trusted_primary("pool2", "localhost");
    let proxy = builder.set("--check-interval", QUIET_CHECKS).set("--workers", "1").start();

    for i in 0..4 {
        let r = get(proxy.addr, &format!("/c{i}"));
        assert_eq!((r.status, r.text().as_str()), (200, "tls-primary"), "connection {i}: {}", show(&r.raw));
    }
    assert_eq!(up.traffic_handshakes(), 1, "one worker, 4 client connections in turn: {:?}", up.requests());
}

// ------------------------------------------------------ TLS listener ----

fn listener_proxy(primary: &Upstream, backup: &Upstream, dir: &TempDir, leaf: &Leaf) -> ProxyBuilder {
    let (cert, key) = dir.write_leaf("listener", leaf);
    Proxy::builder(&primary.url(), &backup.url()).set("--tls-cert", &cert).set("--tls-key", &key)
}

#[test]
fn tls_listener_forwards_with_forwarded_proto_https() {
    let ca = Ca::new("listener");
    let dir = TempDir::new("listener");
    let (primary, backup) = (Upstream::named("primary"), Upstream::named("backup"));
    let proxy = TlsProxy::start(listener_proxy(&primary, &backup, &dir, &ca.localhost()), &ca, false);

    let mut c = TlsClient::connect(proxy.addr, &ca, "localhost").expect("TLS handshake with the listener");
    c.send(format!("GET /x HTTP/1.1\r\nHost: {HOST}\r\nX-Forwarded-Proto: http\r\n\r\n").as_bytes()).unwrap();
    let r = c.response().expect("response over TLS");
    assert_eq!((r.status, r.text().as_str()), (200, "primary"), "{}", show(&r.raw));
    let seen = primary.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].head.get_all("x-forwarded-proto"), vec!["https"], "{}", show(&seen[0].raw_head));
    assert_eq!(seen[0].head.get_all("host"), vec![HOST], "http:// upstream: client Host passes");
}

#[test]
fn tls_listener_negotiates_alpn_http11() {
    let ca = Ca::new("alpn-listener");
    let dir = TempDir::new("listener");
    let (primary, backup) = (Upstream::named("primary"), Upstream::named("backup"));
    let proxy = TlsProxy::start(listener_proxy(&primary, &backup, &dir, &ca.localhost()), &ca, false);

    let c = TlsClient::connect(proxy.addr, &ca, "localhost").expect("TLS handshake with the listener");
    assert_eq!(c.alpn().as_deref(), Some("http/1.1"));
}

/// A response head and the start of its body go out as one record, joined in a small buffer
/// for a small answer and in a record-sized one otherwise: every size on both sides of
/// those bounds must arrive whole and in order, over one connection.
#[test]
fn tls_listener_relays_every_body_size_exactly() {
    let ca = Ca::new("sizes");
    let dir = TempDir::new("listener");
    let pattern = |n: usize| (0..n).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>();
    let primary = Upstream::with(move |s| {
        let n = s.target().trim_start_matches("/n/").parse().unwrap_or(0);
        Action::Reply(reply(200, &pattern(n)))
    });
    let backup = Upstream::named("backup");
    let proxy = TlsProxy::start(listener_proxy(&primary, &backup, &dir, &ca.localhost()), &ca, false);

    let mut c = TlsClient::connect(proxy.addr, &ca, "localhost").expect("TLS handshake with the listener");
    for n in [0, 1, 700, 850, 900, 1023, 1024, 2000, 16_000, 16_384, 16_500, 40_000, 200_000] {
        let r = c.get(&format!("/n/{n}")).expect("response over TLS");
        assert_eq!(r.status, 200, "{n} bytes: {}", show(&r.raw));
        assert_eq!(r.header("content-length"), Some(n.to_string().as_str()), "{n} bytes");
        assert!(r.body == pattern(n), "{n} bytes: the body differs from what the upstream sent");
    }
}

#[test]
fn listen_http_serves_plain_http_with_the_same_routing() {
    let ca = Ca::new("both");
    let dir = TempDir::new("listener");
    let (primary, backup) = (Upstream::echo_target(), Upstream::named("backup"));
    let (cert, key) = dir.write_leaf("listener", &ca.localhost());
    let builder = Proxy::builder(&format!("{}/pfx", primary.url()), &backup.url())
        .set("--tls-cert", &cert)
        .set("--tls-key", &key);
    let proxy = TlsProxy::start(builder, &ca, true);
    let http_addr = proxy.http_addr.expect("plain listener");

    let plain = get(http_addr, "/plain");
    let tls = tls_get(proxy.addr, &ca, "/tls").expect("GET over TLS");
    assert_eq!((plain.status, plain.text().as_str()), (200, "/pfx/plain"), "{}", show(&plain.raw));
    assert_eq!((tls.status, tls.text().as_str()), (200, "/pfx/tls"), "{}", show(&tls.raw));
    let protos: Vec<(String, Vec<String>)> = primary
        .requests()
        .iter()
        .map(|s| (s.target().to_string(), s.head.get_all("x-forwarded-proto").iter().map(|v| v.to_string()).collect()))
        .collect();
    let want = |t: &str, p: &str| (t.to_string(), vec![p.to_string()]);
    assert_eq!(protos, vec![want("/pfx/plain", "http"), want("/pfx/tls", "https")]);
}

#[test]
fn plain_http_on_the_tls_port_is_not_forwarded() {
    let ca = Ca::new("no-plain");
    let dir = TempDir::new("listener");
    let (primary, backup) = (Upstream::named("primary"), Upstream::named("backup"));
    let proxy = TlsProxy::start(listener_proxy(&primary, &backup, &dir, &ca.localhost()), &ca, false);

    let got = try_get(proxy.addr, "/plain");
    assert!(!matches!(&got, Ok(r) if r.status == 200), "plain HTTP on the TLS port answered: {got:?}");
    std::thread::sleep(ms(200));
    assert_eq!(primary.request_count() + backup.request_count(), 0);
}

#[test]
fn bad_listener_files_exit_2_naming_the_flag() {
    let ca = Ca::new("files");
    let dir = TempDir::new("bad-files");
    let (leaf, stranger) = (ca.localhost(), ca.localhost());
    let cert = dir.write("good.crt", &leaf.cert_pem);
    let key = dir.write("good.key", &leaf.key_pem);
    let missing = dir.0.join("missing.pem").to_string_lossy().into_owned();
    let empty = dir.write("empty.pem", "");
    let text = dir.write("text.pem", "not a certificate\n");
    let other_key = dir.write("other.key", &stranger.key_pem);
    let cases: &[(&str, &str, &str, &[&str])] = &[
        ("missing cert file", &missing, &key, &["--tls-cert"]),
        ("empty cert file", &empty, &key, &["--tls-cert"]),
        ("cert file without PEM", &text, &key, &["--tls-cert"]),
        ("key given as cert", &key, &key, &["--tls-cert"]),
        ("missing key file", &cert, &missing, &["--tls-key"]),
        ("empty key file", &cert, &empty, &["--tls-key"]),
        ("cert given as key", &cert, &cert, &["--tls-key"]),
        ("key of another certificate", &cert, &other_key, &["--tls-key", "--tls-cert"]),
    ];
    for (what, cert, key, names) in cases {
        let args: Vec<String> = vec![
            "--primary=http://127.0.0.1:9".into(),
            "--backup=http://127.0.0.1:9".into(),
            format!("--listen=127.0.0.1:{}", free_port()),
            format!("--tls-cert={cert}"),
            format!("--tls-key={key}"),
        ];
        let done = run_to_exit(&args, Duration::from_secs(5));
        let lines: Vec<&str> = done.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(done.code, Some(2), "{what}: exit code; stderr: {:?}", done.stderr);
        assert_eq!(lines.len(), 1, "{what}: want one stderr line, got {lines:?}");
        assert!(names.iter().any(|n| lines[0].contains(n)), "{what}: want {names:?} named in {:?}", lines[0]);
    }
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    let (ca_a, ca_b) = (Ca::new("A"), Ca::new("B"));
    let (leaf_a, leaf_b) = (ca_a.localhost(), ca_b.localhost());
    let dir = TempDir::new("reload");
    let (primary, backup) = (Upstream::named("primary"), Upstream::named("backup"));
    let proxy = TlsProxy::start(listener_proxy(&primary, &backup, &dir, &leaf_a), &ca_a, false);

    let mut old = TlsClient::connect(proxy.addr, &ca_a, "localhost").expect("handshake with cert A");
    assert_eq!(old.get("/before").expect("GET before reload").text(), "primary");
    assert_eq!(old.peer_cert(), Some(leaf_a.cert_der.clone()));

    dir.write_leaf("listener", &leaf_b);
    proxy.signal(libc::SIGHUP);
    let reloaded = wait_until(Duration::from_secs(5), || {
        TlsClient::connect(proxy.addr, &ca_b, "localhost").is_ok_and(|c| c.peer_cert() == Some(leaf_b.cert_der.clone()))
    });
    assert!(reloaded, "no new connection saw certificate B within 5s of SIGHUP");

    let mut fresh = TlsClient::connect(proxy.addr, &ca_b, "localhost").expect("handshake with cert B");
    assert_eq!(fresh.peer_cert(), Some(leaf_b.cert_der.clone()));
    assert_eq!(fresh.get("/after").expect("GET on a new connection").text(), "primary");
    assert!(TlsClient::connect(proxy.addr, &ca_a, "localhost").is_err(), "a client trusting only CA A still got in");

    let r = old.get("/old-after").expect("the connection opened before SIGHUP must still work");
    assert_eq!((r.status, r.text().as_str()), (200, "primary"), "{}", show(&r.raw));
}

#[test]
fn sighup_with_broken_files_keeps_the_old_certificate() {
    let (ca_a, ca_b) = (Ca::new("A"), Ca::new("B"));
    let (leaf_a, leaf_b) = (ca_a.localhost(), ca_b.localhost());
    let dir = TempDir::new("reload-bad");
    let (primary, backup) = (Upstream::named("primary"), Upstream::named("backup"));
    let mut proxy = TlsProxy::start(listener_proxy(&primary, &backup, &dir, &leaf_a), &ca_a, false);

    let cert_path = dir.write("listener.crt", "not a certificate\n");
    proxy.signal(libc::SIGHUP);
    let logged = wait_until(Duration::from_secs(5), || {
        let log = proxy.log();
        log.contains("--tls-cert") || log.contains(&cert_path)
    });
    assert!(logged, "want an error naming --tls-cert or {cert_path} after SIGHUP:\n{}", proxy.log());
    assert!(proxy.is_running(), "a failed reload must not stop the proxy");
    let c = TlsClient::connect(proxy.addr, &ca_a, "localhost").expect("cert A still served after a failed reload");
    assert_eq!(c.peer_cert(), Some(leaf_a.cert_der.clone()));
    assert_eq!(tls_get(proxy.addr, &ca_a, "/still").expect("GET after a failed reload").text(), "primary");

    // Good files again: the next SIGHUP takes them.
    dir.write_leaf("listener", &leaf_b);
    proxy.signal(libc::SIGHUP);
    let reloaded = wait_until(Duration::from_secs(5), || TlsClient::connect(proxy.addr, &ca_b, "localhost").is_ok());
    assert!(reloaded, "certificate B not served within 5s of the second SIGHUP");
}

#[test]
fn a_client_that_reconnects_resumes_its_session_on_any_worker_among_many_clients() {
    let ca = Ca::new("resume");
    let dir = TempDir::new("listener");
    let (primary, backup) = (Upstream::named("primary"), Upstream::named("backup"));
    let proxy =
        TlsProxy::start(listener_proxy(&primary, &backup, &dir, &ca.localhost()).set("--workers", "2"), &ca, false);
    let visit = |config: &std::sync::Arc<rustls::ClientConfig>, i: usize| {
        let mut c = TlsClient::connect_with(proxy.addr, config.clone(), "localhost").expect("handshake");
        c.send(format!("GET /{i} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes()).unwrap();
        let r = c.response().expect("response over TLS");
        assert_eq!((r.status, r.text().as_str()), (200, "primary"));
        c.resumed()
    };
    // 300 clients, each with its own session store, connect once: every one a full
    // handshake. Then each of the first ones comes back: it resumes (no certificate, no
    // signature), however many clients came since, whichever worker (SO_REUSEPORT) takes
    // it. A server-side session cache would have forgotten them; tickets do not.
    let configs: Vec<_> = (0..300).map(|_| TlsClient::config(&ca).unwrap()).collect();
    for (i, config) in configs.iter().enumerate() {
        assert!(!visit(config, i), "client {i}'s first connection cannot resume");
    }
    let again: Vec<bool> = configs.iter().take(8).enumerate().map(|(i, c)| visit(c, i)).collect();
    assert_eq!(again, [true; 8], "returning clients resume");
}

#[test]
fn large_bodies_cross_the_tls_listener_whole_both_ways() {
    let ca = Ca::new("large");
    let dir = TempDir::new("listener");
    let down: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let d = down.clone();
    let primary = Upstream::with(move |s| {
        if s.method() == "POST" {
            // Echoes the body's length and a checksum, so the test sees it arrived whole.
            let sum: u64 = s.body.iter().enumerate().map(|(i, &b)| (i as u64 + 1) * b as u64).sum();
            Action::Reply(reply(200, format!("{} {sum}", s.body.len()).as_bytes()))
        } else {
            Action::Reply(reply(200, &d))
        }
    });
    let backup = Upstream::named("backup");
    let proxy = TlsProxy::start(listener_proxy(&primary, &backup, &dir, &ca.localhost()), &ca, false);
    let mut c = TlsClient::connect(proxy.addr, &ca, "localhost").expect("handshake");
    c.send(format!("GET /big HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes()).unwrap();
    let r = c.response().expect("response over TLS");
    assert_eq!(r.status, 200);
    assert!(r.body == down, "3 MB download: {} bytes came", r.body.len());
    let up: Vec<u8> = (0..1_500_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let sum: u64 = up.iter().enumerate().map(|(i, &b)| (i as u64 + 1) * b as u64).sum();
    let mut req = format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n", up.len()).into_bytes();
    req.extend_from_slice(&up);
    c.send(&req).unwrap();
    let r = c.response().expect("response over TLS");
    assert_eq!((r.status, r.text()), (200, format!("{} {sum}", up.len())));
}
