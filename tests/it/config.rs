//! Flags, the YAML file and their errors: `--help`, exit code 2 with one
//! line naming the key, units, flags winning over the file, `--json-logs`.

use crate::common::*;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

const EXIT_LIMIT: Duration = Duration::from_secs(3);

/// Valid flags (nothing listens on ports 1 and 2, and nothing needs to),
/// with `overrides` replacing the flag of the same name; `!--key` drops it.
fn args_with(overrides: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--primary=http://127.0.0.1:1".into(),
        "--backup=http://127.0.0.1:2".into(),
        format!("--listen=127.0.0.1:{}", free_port()),
        "--workers=1".into(),
    ];
    for o in overrides {
        if let Some(key) = o.strip_prefix('!') {
            args.retain(|a| a.split('=').next() != Some(key));
            continue;
        }
        let key = o.split('=').next().unwrap_or(o);
        args.retain(|a| a.split('=').next() != Some(key));
        args.push(o.to_string());
    }
    args
}

/// Runs with `args`, expects exit 2 and exactly one stderr line naming one
/// of `keys`; returns that line.
fn expect_usage_error(args: &[String], keys: &[&str]) -> String {
    let done = run_to_exit(args, EXIT_LIMIT);
    assert_eq!(done.code, Some(2), "failover {args:?} must exit 2 (None = still running); stderr: {:?}", done.stderr);
    let lines: Vec<&str> = done.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want ONE stderr line for {args:?}, got {:?}", done.stderr);
    assert!(keys.iter().any(|k| lines[0].contains(k)), "stderr line for {args:?} must name {keys:?}: {:?}", lines[0]);
    lines[0].to_string()
}

macro_rules! bad_flag {
    ($(#[$attr:meta])* $name:ident, [$($arg:expr),*], $key:expr) => {
        #[test]
        $(#[$attr])*
        fn $name() {
            expect_usage_error(&args_with(&[$($arg),*]), &[$key]);
        }
    };
}

bad_flag!(check_interval_not_a_duration, ["--check-interval=abc"], "check-interval");
bad_flag!(check_interval_zero, ["--check-interval=0s"], "check-interval");
bad_flag!(check_timeout_bad_unit, ["--check-timeout=5x"], "check-timeout");
bad_flag!(upstream_timeout_negative, ["--upstream-timeout=-1s"], "upstream-timeout");
bad_flag!(max_body_not_a_size, ["--max-body=lots"], "max-body");
bad_flag!(max_body_bad_unit, ["--max-body=10XB"], "max-body");
bad_flag!(fail_threshold_not_a_number, ["--fail-threshold=abc"], "fail-threshold");
bad_flag!(fail_threshold_negative, ["--fail-threshold=-1"], "fail-threshold");
bad_flag!(fail_threshold_zero, ["--fail-threshold=0"], "fail-threshold");
bad_flag!(recover_threshold_not_a_number, ["--recover-threshold=many"], "recover-threshold");
bad_flag!(listen_not_an_address, ["--listen=nowhere"], "listen");
bad_flag!(primary_not_http, ["--primary=ftp://127.0.0.1:1"], "primary");
bad_flag!(backup_not_a_url, ["--backup=not a url"], "backup");
bad_flag!(workers_not_a_number, ["--workers=abc"], "workers");
bad_flag!(missing_backup, ["!--backup"], "backup");
bad_flag!(missing_primary, ["!--primary"], "primary");
bad_flag!(unknown_flag, ["--no-such-flag=1"], "no-such-flag");
bad_flag!(retry_on_status_not_a_list, ["--retry-on-status=abc"], "retry-on-status");
bad_flag!(retry_on_status_bad_separator, ["--retry-on-status=502;503"], "retry-on-status");
bad_flag!(retry_buffer_not_a_size, ["--retry-buffer=lots"], "retry-buffer");
bad_flag!(retry_buffer_bad_unit, ["--retry-buffer=1XB"], "retry-buffer");
bad_flag!(min_backup_time_not_a_duration, ["--min-backup-time=soon"], "min-backup-time");
bad_flag!(min_backup_time_negative, ["--min-backup-time=-1s"], "min-backup-time");

#[test]
fn tls_options_on_a_plain_upstream_or_bad_tls_files_are_refused() {
    let cases: &[(&[&str], &str)] = &[
        (&["--primary-insecure"], "primary-insecure"),
        (&["--backup-ca=/etc/hostname"], "backup-ca"),
        (&["--primary=https://127.0.0.1:1", "--primary-ca=/nonexistent/ca.pem"], "primary-ca"),
        (&["--primary-host-header=two words"], "primary-host-header"),
        (&["--tls-cert=/nonexistent/cert.pem"], "tls-key"),
        (&["--tls-cert=/nonexistent/cert.pem", "--tls-key=/nonexistent/key.pem"], "tls-cert"),
        (&["--listen-http=127.0.0.1:1"], "listen-http"),
    ];
    for (extra, key) in cases {
        expect_usage_error(&args_with(extra), &[key]);
    }
}

#[test]
fn help_lists_every_flag_with_defaults_and_exits_0() {
    let done = run_to_exit(&["--help".to_string()], EXIT_LIMIT);
    assert_eq!(done.code, Some(0), "stderr: {}", done.stderr);
    let help = format!("{}{}", done.stdout, done.stderr);
    for flag in [
        "--primary",
        "--backup",
        "--listen",
        "--check-interval",
        "--check-timeout",
        "--health-path",
        "--fail-threshold",
        "--recover-threshold",
        "--max-body",
        "--connect-timeout",
        "--upstream-timeout",
        "--idle-timeout",
        "--header-timeout",
        "--workers",
        "--pin-cores",
        "--json-logs",
        "--config",
        "--retry-on-status",
        "--retry-buffer",
        "--min-backup-time",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}:\n{help}");
    }
    for default in ["0.0.0.0:8080", "2s", "1s", "10MB", "30s", "60s", "10s", "502,503,504", "1MB", "0s"] {
        assert!(help.contains(default), "--help does not show the default {default}:\n{help}");
    }
}

fn write_config(text: &str) -> PathBuf {
    let path = temp_path("config.yaml");
    fs::write(&path, text).expect("write config");
    path
}

struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn post_with_length(addr: SocketAddr, len: usize) -> Response {
    let mut req = format!("POST /sized HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    req.extend(vec![b'z'; len]);
    let mut c = Client::connect(addr);
    let _ = c.try_send(&req);
    c.response()
}

#[test]
fn config_file_is_loaded() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let path = write_config(&format!(
        "# snake_case keys, as in the README\n\
         listen: \"{addr}\"\n\
         primary: \"{}\"\n\
         backup: \"{}\"\n\
         check_interval: \"100ms\"\n\
         check_timeout: \"100ms\"\n\
         fail_threshold: 2\n\
         recover_threshold: 2\n\
         health_path: \"{PROBE_PATH}\"\n\
         max_body: \"1KB\"\n\
         json_logs: false\n\
         workers: 1\n",
        primary.url(),
        backup.url()
    ));
    let _cleanup = Removed(path.clone());
    let proxy =
        ProxyBuilder::bare().set("--config", path.to_str().expect("utf-8 temp path")).listen_from_config(addr).start();
    assert_eq!(who(proxy.addr), "primary");
    let state = proxy.state();
    assert_eq!(state.str_field("primary"), primary.url());
    assert_eq!(state.str_field("backup"), backup.url());
    assert_eq!(post_with_length(proxy.addr, 1024).status, 200, "max_body 1KB allows 1024 bytes");
    assert_eq!(post_with_length(proxy.addr, 1025).status, 413, "max_body from the file not applied");
    // With the defaults (2s x 3) this would take over 6s.
    primary.stop();
    wait_for_who(proxy.addr, "backup", Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("check timings from the file not applied: {e}"));
}

#[test]
fn flags_win_over_the_file() {
    let wrong = Upstream::named("from-file");
    let right = Upstream::named("from-flag");
    let backup = Upstream::named("backup");
    let file_listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let path = write_config(&format!(
        "listen: \"{file_listen}\"\nprimary: \"{}\"\nbackup: \"{}\"\nmax_body: \"1KB\"\nhealth_path: \"{PROBE_PATH}\"\n",
        wrong.url(),
        backup.url()
    ));
    let _cleanup = Removed(path.clone());
    let proxy = ProxyBuilder::bare()
        .set("--config", path.to_str().expect("utf-8 temp path"))
        .set("--primary", &right.url())
        .set("--max-body", "4KB")
        .set("--workers", "1")
        .start();
    assert_eq!(who(proxy.addr), "from-flag");
    assert_eq!(post_with_length(proxy.addr, 2048).status, 200, "--max-body must win over max_body");
    assert!(
        TcpStream::connect_timeout(&file_listen, ms(500)).is_err(),
        "--listen must win over listen: the file's address is in use"
    );
    assert_eq!(wrong.request_count(), 0);
}

#[test]
fn unknown_yaml_key_is_refused() {
    let path = write_config("primary: \"http://127.0.0.1:1\"\nbackup: \"http://127.0.0.1:2\"\nbogus_key: 1\n");
    let _cleanup = Removed(path.clone());
    let config = format!("--config={}", path.display());
    expect_usage_error(&args_with(&["!--primary", "!--backup", &config]), &["bogus_key"]);
}

#[test]
fn bad_yaml_value_is_refused_naming_the_key() {
    let path =
        write_config("primary: \"http://127.0.0.1:1\"\nbackup: \"http://127.0.0.1:2\"\ncheck_interval: \"soon\"\n");
    let _cleanup = Removed(path.clone());
    let config = format!("--config={}", path.display());
    expect_usage_error(&args_with(&["!--primary", "!--backup", &config]), &["check_interval", "check-interval"]);
}

#[test]
fn bad_retry_keys_in_yaml_are_refused_naming_the_key() {
    for (line, keys) in [
        ("retry_on_status: \"soon\"", ["retry_on_status", "retry-on-status"]),
        ("retry_on_status: [200]", ["retry_on_status", "retry-on-status"]),
        ("retry_buffer: \"lots\"", ["retry_buffer", "retry-buffer"]),
        ("min_backup_time: \"soon\"", ["min_backup_time", "min-backup-time"]),
    ] {
        expect_yaml_error(line, &keys);
    }
}

#[test]
fn wrongly_typed_retry_keys_in_yaml_are_refused_naming_the_key() {
    for (line, keys) in [
        ("retry_on_status: [\"x\"]", ["retry_on_status", "retry-on-status"]),
        ("retry_buffer: [1]", ["retry_buffer", "retry-buffer"]),
    ] {
        expect_yaml_error(line, &keys);
    }
}

/// A config file with valid upstreams plus `line` must be refused naming one of `keys`.
fn expect_yaml_error(line: &str, keys: &[&str]) {
    let path = write_config(&format!("primary: \"http://127.0.0.1:1\"\nbackup: \"http://127.0.0.1:2\"\n{line}\n"));
    let _cleanup = Removed(path.clone());
    let config = format!("--config={}", path.display());
    expect_usage_error(&args_with(&["!--primary", "!--backup", &config]), keys);
}

/// A primary answering `GET /NNN` with status NNN.
fn status_by_path() -> Upstream {
    Upstream::with(|s| {
        let status: u16 = s.target().trim_start_matches('/').parse().unwrap_or(200);
        Action::Reply(reply(status, format!("primary says {status}").as_bytes()))
    })
}

#[test]
fn retry_keys_are_read_from_the_file() {
    let primary = status_by_path();
    let backup = Upstream::named("backup");
    for statuses in ["\"500\"", "[500]", "\"500, 501\""] {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let path = write_config(&format!(
            "listen: \"{addr}\"\nprimary: \"{}\"\nbackup: \"{}\"\nhealth_path: \"{PROBE_PATH}\"\nworkers: 1\n\
             retry_on_status: {statuses}\nretry_buffer: \"2KB\"\nmin_backup_time: \"1s\"\n",
            primary.url(),
            backup.url()
        ));
        let _cleanup = Removed(path.clone());
        let proxy = ProxyBuilder::bare()
            .set("--config", path.to_str().expect("utf-8 temp path"))
            .listen_from_config(addr)
            .start();
        assert_eq!(get(proxy.addr, "/500").text(), "backup", "retry_on_status: {statuses} must retry a 500");
        let resp = get(proxy.addr, "/503");
        assert_eq!(resp.status, 503, "retry_on_status: {statuses} replaces the default set: {}", show(&resp.raw));
    }
}

#[test]
fn retry_flags_win_over_the_file() {
    let primary = status_by_path();
    let backup = Upstream::named("backup");
    let path = write_config(&format!(
        "primary: \"{}\"\nbackup: \"{}\"\nhealth_path: \"{PROBE_PATH}\"\nretry_on_status: [500]\n",
        primary.url(),
        backup.url()
    ));
    let _cleanup = Removed(path.clone());
    let proxy = ProxyBuilder::bare()
        .set("--config", path.to_str().expect("utf-8 temp path"))
        .set("--retry-on-status", "404")
        .set("--workers", "1")
        .start();
    assert_eq!(get(proxy.addr, "/404").text(), "backup");
    assert_eq!(get(proxy.addr, "/500").status, 500, "--retry-on-status must win over retry_on_status");
}

#[test]
fn missing_config_file_is_refused() {
    let path = temp_path("does-not-exist.yaml");
    let config = format!("--config={}", path.display());
    expect_usage_error(&args_with(&[&config]), &["config", &path.display().to_string()]);
}

#[test]
fn duration_and_size_units_are_accepted() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url())
        .set("--check-interval", "1s")
        .set("--check-timeout", "250ms")
        .set("--connect-timeout", "2s")
        .set("--upstream-timeout", "1m")
        .set("--idle-timeout", "1h")
        .set("--header-timeout", "10s")
        .set("--max-body", "1GiB")
        .set("--retry-buffer", "64KiB")
        .set("--min-backup-time", "1m")
        .set("--retry-on-status", "500,502, 503")
        .start();
    assert_eq!(who(proxy.addr), "primary");
}

#[test]
fn size_units_are_powers_of_1024() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    for (size, limit) in [("1KB", 1024), ("2KiB", 2048), ("1MB", 1 << 20), ("100", 100)] {
        let proxy = Proxy::builder(&primary.url(), &backup.url()).set("--max-body", size).start();
        assert_eq!(post_with_length(proxy.addr, limit).status, 200, "--max-body={size} must allow {limit} bytes");
        let mut c = Client::connect(proxy.addr);
        c.send(format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n", limit + 1).as_bytes());
        assert_eq!(c.response().status, 413, "--max-body={size} must refuse {} bytes", limit + 1);
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy =
        Proxy::builder(&primary.url(), &backup.url()).fast_checks().flag("--json-logs").set("--workers", "1").start();
    primary.stop();
    let is_failover_line = |line: &str| {
        Json::parse(line).is_ok_and(|j| {
            j.get("level").and_then(Json::as_str) == Some("WARN")
                && j.get("msg").and_then(Json::as_str).is_some_and(|m| m.contains("traffic -> backup"))
        })
    };
    assert!(
        wait_until(Duration::from_secs(3), || proxy.log().lines().any(is_failover_line)),
        "no JSON WARN line for the failover in stderr:\n{}",
        proxy.log()
    );
    for line in proxy.log().lines().filter(|l| !l.trim().is_empty()) {
        let j = Json::parse(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["ts", "level", "target", "msg"] {
            assert!(j.get(key).and_then(Json::as_str).is_some(), "no string {key:?} in {line}");
        }
    }
    // The switch is an event with fields a log pipeline can select on, not only words.
    let log = proxy.log();
    let line = log.lines().find(|l| is_failover_line(l)).unwrap_or_default();
    let j = Json::parse(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(j.str_field("event"), "failover", "{line}");
    assert_eq!(j.str_field("upstream"), "primary", "{line}");
    assert_eq!(j.str_field("to"), "backup", "{line}");
    assert!(j.str_field("reason").starts_with("primary unhealthy: "), "{line}");
    // Signals by name.
    proxy.signal(libc::SIGTERM);
    assert!(proxy.wait_for_log("SIGTERM received", Duration::from_secs(3)), "{}", proxy.log());
    let log = proxy.log();
    let stop = log.lines().find(|l| l.contains("SIGTERM received")).unwrap_or_default();
    let j = Json::parse(stop).unwrap_or_else(|e| panic!("{e}: {stop}"));
    assert_eq!((j.str_field("event"), j.str_field("signal")), ("stop".to_string(), "SIGTERM".to_string()), "{stop}");
}

#[test]
fn the_readme_config_file_with_the_defaults_is_valid() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let section = &readme[readme.find("## Config file").expect("a Config file section")..];
    let start = section.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let block = &section[start..start + section[start..].find("```").expect("the block's end")];
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    // Only loopback is ever a target: the example's addresses become the test's upstreams.
    let yaml = block.replace("http://10.0.0.10:3000", &primary.url()).replace("http://10.0.1.10:3000", &backup.url());
    assert!(!yaml.contains("10.0."), "an address this test does not know: {yaml}");
    let path = temp_path("readme.yaml");
    std::fs::write(&path, yaml).unwrap();
    let proxy = ProxyBuilder::bare().set("--config", path.to_str().unwrap()).start();
    assert_eq!(who(proxy.addr), "primary");
    let _ = std::fs::remove_file(&path);
}
