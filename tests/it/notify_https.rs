//! Notifications over HTTPS: the webhook's certificate is verified (here against a test CA
//! given as the sink's `ca`), and a receiver whose certificate does not verify gets nothing.

use crate::common::*;
use crate::tls::tls_kit::{Ca, TempDir, TlsUpstream};

#[test]
fn an_https_webhook_gets_the_message_only_when_its_certificate_verifies() {
    let ca = Ca::new("notify-test-ca");
    let receiver = TlsUpstream::start("hook", &ca.localhost());
    let dir = TempDir::new("notify-https");
    let ca_file = dir.write("ca.pem", &ca.pem());
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let port = receiver.port();
    let yaml = format!(
        "notify:\n  - {{url: \"https://127.0.0.1:{port}/verified\", format: json, ca: \"{ca_file}\"}}\n  \
         - {{url: \"https://localhost:{port}/default-roots\", format: json}}\nnotify_coalesce: 0s\ninstance: tls-test\n"
    );
    let config = dir.write("config.yaml", &yaml);
    let proxy = Proxy::builder(&primary.url(), &backup.url()).fast_checks().set("--config", &config).start();
    primary.stop();
    assert!(wait_until(ms(5000), || receiver.requests().iter().any(|r| r.target() == "/verified")), "{}", proxy.log());
    let got = receiver.requests();
    let hook = got.iter().find(|r| r.target() == "/verified").unwrap_or_else(|| panic!("{got:?}"));
    assert_eq!(hook.method(), "POST");
    assert_eq!(hook.sni.as_deref(), None, "an IP address is not sent as SNI");
    let body = Json::parse(&String::from_utf8_lossy(&hook.body)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((body.str_field("event").as_str(), body.str_field("instance").as_str()), ("failover", "tls-test"));
    // The same receiver under the default (webpki) roots: the test CA is unknown there.
    assert!(proxy.wait_for_log("json webhook at localhost failed", ms(5000)), "{}", proxy.log());
    assert!(!got.iter().any(|r| r.target() == "/default-roots"), "an unverified receiver got the message");
    let metrics = get(proxy.addr, "/__failover/metrics").text();
    assert!(
        metrics
            .contains("failover_notifications_total{sink=\"0\",host=\"127.0.0.1\",format=\"json\",result=\"sent\"} 1"),
        "{metrics}"
    );
    let retries = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "failover_notifications_total{sink=\"1\",host=\"localhost\",format=\"json\",result=\"retry\"} ",
            )
        })
        .and_then(|n| n.parse::<u64>().ok());
    assert!(retries.is_some_and(|n| n >= 1), "{metrics}");
}
