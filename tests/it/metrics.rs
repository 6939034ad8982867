//! `/__failover/metrics`: the Prometheus text format, and counts that move as requests,
//! retries, checks and switches happen. (verify.sh also reads it with the Python
//! `prometheus_client` parser.)

use crate::common::*;

/// The samples of a scrape: (name with its labels as written, value). Checks every line is
/// a comment of the two kinds or a sample, and every family is declared before its samples.
fn scrape(proxy: &Proxy) -> Vec<(String, f64)> {
    let r = get(proxy.addr, "/__failover/metrics");
    assert_eq!(r.status, 200, "{}", show(&r.raw));
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let mut declared = Vec::new();
    let mut samples = Vec::new();
    for line in r.text().lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("{line}"));
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            declared.push(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            declared.iter().any(|d| name == d || name.strip_prefix(d.as_str()).is_some_and(|s| s.starts_with('_'))),
            "{name} before its # TYPE"
        );
        assert!(
            name.starts_with("failover_") && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{line}"
        );
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        samples.push((series.to_string(), value));
    }
    samples
}

fn value(samples: &[(String, f64)], series: &str) -> f64 {
    samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v).unwrap_or_else(|| panic!("no {series}"))
}

/// A scrape once `ready` holds for it (within 3 s; else the last one). A worker counts a
/// response after its last byte went out and a connection after it closed it, so a scrape
/// right after the client read may come a moment before the count.
fn settled(proxy: &Proxy, ready: impl Fn(&[(String, f64)]) -> bool) -> Vec<(String, f64)> {
    let mut samples = scrape(proxy);
    let deadline = std::time::Instant::now() + ms(3000);
    while !ready(&samples) && std::time::Instant::now() < deadline {
        std::thread::sleep(ms(20));
        samples = scrape(proxy);
    }
    samples
}

#[test]
fn counts_move_with_requests_retries_checks_and_switches() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).fast_checks().start();
    let before = scrape(&proxy);
    assert_eq!(
        value(&before, "failover_active_upstream{upstream=\"primary\",role=\"primary\",host=\"127.0.0.1\"}"),
        1.0
    );
    for _ in 0..5 {
        assert_eq!(who(proxy.addr), "primary");
    }
    assert_eq!(get(proxy.addr, "/__failover/nope").status, 404);
    let primary_2xx = "failover_requests_total{upstream=\"primary\",code_class=\"2xx\"}";
    let after = settled(&proxy, |s| {
        value(s, primary_2xx) - value(&before, primary_2xx) >= 5.0 && value(s, "failover_client_connections") <= 1.0
    });
    assert_eq!(value(&after, primary_2xx) - value(&before, primary_2xx), 5.0);
    let count = "failover_request_duration_seconds_count";
    assert_eq!(value(&after, count) - value(&before, count), 5.0);
    assert!(value(&after, "failover_request_duration_seconds_bucket{le=\"+Inf\"}") >= 5.0);
    let proxy_answers = "failover_requests_total{upstream=\"none\",code_class=\"proxy\"}";
    assert!(value(&after, proxy_answers) >= 2.0, "the first scrape and the 404 were the proxy's own");
    assert!(value(&after, "failover_health_checks_total{upstream=\"primary\",result=\"pass\"}") >= 1.0);
    assert_eq!(value(&after, "failover_client_connections"), 1.0, "the scrape's own");

    // A refused primary: the request is retried on the backup, then traffic moves.
    primary.stop();
    assert_eq!(who(proxy.addr), "backup");
    wait_for_who(proxy.addr, "backup", ms(3000)).unwrap_or_else(|e| panic!("{e}"));
    assert!(wait_until(ms(3000), || proxy.state().bool_field("on_backup")));
    let moved = scrape(&proxy);
    assert!(value(&moved, "failover_retries_total{reason=\"refused\"}") >= 1.0);
    assert_eq!(value(&moved, "failover_transitions_total{from=\"primary\",to=\"backup\",reason=\"unhealthy\"}"), 1.0);
    assert_eq!(value(&moved, "failover_upstream_up{upstream=\"primary\",role=\"primary\",host=\"127.0.0.1\"}"), 0.0);
    assert_eq!(value(&moved, "failover_active_upstream{upstream=\"backup\",role=\"backup\",host=\"127.0.0.1\"}"), 1.0);
    let failed = "failover_health_checks_total{upstream=\"primary\",result=\"fail\"}";
    assert!(wait_until(ms(2000), || value(&scrape(&proxy), failed) >= 1.0), "no failed check counted");
    assert!(value(&moved, "failover_last_transition_timestamp_seconds") >= unix_now() as f64 - 10.0);
}

#[test]
fn counts_are_summed_over_workers() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).set("--workers", "4").start();
    // Fresh connections land on whatever worker the kernel picks; the sum is all of them.
    for _ in 0..40 {
        assert_eq!(who(proxy.addr), "primary");
    }
    let primary_2xx = "failover_requests_total{upstream=\"primary\",code_class=\"2xx\"}";
    let samples = settled(&proxy, |s| value(s, primary_2xx) >= 40.0);
    assert_eq!(value(&samples, primary_2xx), 40.0);
    assert_eq!(proxy.state().u64_field("retries"), 0);
}
