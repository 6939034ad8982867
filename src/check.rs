//! `failover --check-config`: the configuration the proxy would run with, after flags, the
//! YAML file and defaults, printed as YAML with secrets masked (what `haproxy -c` and
//! `nginx -t` give their users). And `failover probe URL`: one GET for container health
//! checks, so a slim image needs no curl.

use std::fmt::Write as _;
use std::time::Duration;

use crate::access_log::Style;
use crate::config::Config;
use crate::units::show_duration;
use crate::upstream::{HostPolicy, Kind};
use crate::webhook::{Outcome, Target};

/// The effective configuration as YAML, in the keys of the config file.
pub fn effective(cfg: &Config) -> String {
    let mut out = String::with_capacity(2048);
    let d = |v: Duration| show_duration(v);
    let q = |v: &str| crate::answer::json_str(v);
    let _ = writeln!(out, "# failover {}: configuration OK", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "listen: {}", q(&cfg.listen.to_string()));
    if let Some(a) = cfg.listen_http {
        let _ = writeln!(out, "listen_http: {}", q(&a.to_string()));
    }
    if cfg.tls.is_some() {
        out.push_str("# tls: on (tls_cert and tls_key loaded)\n");
    }
    for (i, up) in cfg.upstreams.iter().enumerate() {
        let (head, indent, prefix) = match i {
            0 => (format!("primary: {}\n", q(&up.url)), "", "primary_"),
            1 => (format!("backup:\n  - url: {}\n", q(&up.url)), "    ", ""),
            _ => (format!("  - url: {}\n", q(&up.url)), "    ", ""),
        };
        out.push_str(&head);
        match &up.kind {
            Kind::Origin(o) => {
                let host = match &o.host_header {
                    HostPolicy::Client => "client".to_string(),
                    HostPolicy::Upstream => "upstream".to_string(),
                    HostPolicy::Literal(v) => v.clone(),
                };
                let _ = writeln!(out, "{indent}{prefix}host_header: {}", q(&host));
                if o.tls {
                    let _ = writeln!(out, "{indent}{prefix}insecure: {}", o.insecure);
                }
            }
            Kind::Site(s) => {
                if let Some(status) = s.status {
                    let _ = writeln!(out, "{indent}status: {status}");
                }
                if let Some(page) = &s.page {
                    let _ = writeln!(out, "{indent}sorry_page: {}", q(&page.display().to_string()));
                }
            }
        }
    }
    // Durations and lists are strings; counts and sizes in bytes are numbers.
    let lines: [(&str, String); 22] = [
        ("check_interval", d(cfg.check_interval)),
        ("check_timeout", d(cfg.check_timeout)),
        ("health_path", cfg.health_path.clone()),
        ("fail_threshold", cfg.fail_threshold.to_string()),
        ("recover_threshold", cfg.recover_threshold.to_string()),
        ("min_backup_time", d(cfg.min_backup_time)),
        ("max_body", cfg.max_body.to_string()),
        ("retry_buffer", cfg.retry_buffer.to_string()),
        ("retry_on_status", cfg.retry_on_status.iter().map(u16::to_string).collect::<Vec<_>>().join(",")),
        ("connect_timeout", d(cfg.connect_timeout)),
        ("upstream_timeout", d(cfg.upstream_timeout)),
        ("idle_timeout", d(cfg.idle_timeout)),
        ("tunnel_timeout", d(cfg.tunnel_timeout)),
        ("linger_time", d(cfg.linger_time)),
        ("header_timeout", d(cfg.header_timeout)),
        ("body_timeout", d(cfg.body_timeout)),
        ("shutdown_delay", d(cfg.shutdown_delay)),
        ("shutdown_timeout", d(cfg.shutdown_timeout)),
        ("dns_refresh", d(cfg.dns_refresh)),
        ("max_header_bytes", cfg.limits.head.to_string()),
        ("max_headers", cfg.limits.headers.to_string()),
        ("max_request_line", cfg.limits.line.to_string()),
    ];
    for (k, v) in lines {
        let number = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
        let _ = writeln!(out, "{k}: {}", if number { v } else { q(&v) });
    }
    let _ = writeln!(out, "max_connections: {}", cfg.max_connections);
    let _ = writeln!(out, "workers: {}", cfg.workers);
    let _ = writeln!(out, "pin_cores: {}\nno_splice: {}", cfg.pin_cores, cfg.no_splice);
    let _ = writeln!(out, "json_logs: {}", cfg.json_logs);
    match &cfg.access_log {
        Some(t) => {
            let style = if t.style == Style::Json { "json" } else { "combined" };
            let _ = writeln!(out, "access_log: {}\naccess_log_format: {style}", q(&t.path));
        }
        None => out.push_str("access_log: null\n"),
    }
    let n = &cfg.notify;
    let _ = writeln!(out, "instance: {}\nnotify_coalesce: {}", q(&n.instance), q(&d(n.coalesce)));
    if n.sinks.is_empty() {
        out.push_str("notify: []\n");
    } else {
        out.push_str("notify:\n");
        for s in &n.sinks {
            let _ = writeln!(out, "  - url: {}\n    format: {}", q(&mask_url(&s.url)), s.format.name());
        }
    }
    if !n.pagerduty_key.is_empty() {
        out.push_str("pagerduty_key: \"****\"\n");
    }
    out
}

/// A webhook URL with its path hidden (Slack's and Discord's paths are their secret).
fn mask_url(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find(['/', '?']) {
        Some(i) if after_scheme + i + 1 < url.len() => format!("{}/****", &url[..after_scheme + i]),
        _ => url.to_string(),
    }
}

/// `failover probe URL`: GET it; Ok(status) for 2xx/3xx, else what went wrong.
pub fn probe(url: &str, timeout: Duration) -> Result<u16, String> {
    let target = Target::parse(url, None)?;
    match target.get(timeout) {
        Outcome::Sent(status) => Ok(status),
        Outcome::Retry(why, _) | Outcome::Failed(why) => Err(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_paths_are_masked() {
        assert_eq!(mask_url("https://hooks.slack.com/services/T0/B0/XYZ"), "https://hooks.slack.com/****");
        assert_eq!(mask_url("http://127.0.0.1:9/"), "http://127.0.0.1:9/");
        assert_eq!(mask_url("http://h"), "http://h");
        assert_eq!(mask_url("https://h/x?token=1"), "https://h/****");
    }
}
