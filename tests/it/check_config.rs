//! `failover --check-config` prints the effective configuration with secrets masked and
//! exits 0, or 2 with one line for each class of error; `failover probe URL` is the
//! container health check.

use std::fs;

use crate::common::*;

fn check(args: &[&str]) -> Finished {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.push("--check-config".into());
    run_to_exit(&all, ms(5000))
}

#[test]
fn the_effective_configuration_is_printed_masked_and_reads_back_the_same() {
    let key = temp_path("pd.key");
    fs::write(&key, "R0UT1NGK3Y-secret\n").unwrap();
    let key_arg = format!("--pagerduty-key-file={}", key.display());
    let done = check(&[
        "--primary=http://127.0.0.1:1/api",
        "--backup=http://127.0.0.1:2",
        "--backup=file://./examples/sorry",
        "--notify=https://hooks.slack.com/services/T000/B000/SECRETPATH",
        "--notify=https://events.pagerduty.com/v2/enqueue",
        &key_arg,
        "--fail-threshold=5",
        "--shutdown-delay=5s",
        "--instance=edge-1",
    ]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let out = &done.stdout;
    for want in [
        "primary: \"http://127.0.0.1:1/api\"",
        "fail_threshold: 5",
        "shutdown_delay: \"5s\"",
        "instance: \"edge-1\"",
        "url: \"https://hooks.slack.com/****\"",
        "format: pagerduty",
        "pagerduty_key: \"****\"",
    ] {
        assert!(out.contains(want), "{want:?} missing in:\n{out}");
    }
    assert!(!out.contains("SECRETPATH") && !out.contains("R0UT1NGK3Y"), "secrets printed:\n{out}");
    // What it prints is a config file the proxy reads back to the same configuration.
    let file = temp_path("effective.yaml");
    fs::write(&file, out).unwrap();
    let again = check(&[&format!("--config={}", file.display())]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(&again.stdout, out);
}

#[test]
fn each_class_of_error_exits_2_with_one_line_naming_the_setting() {
    let missing = "/nonexistent/failover-test-file";
    let yaml = temp_path("bad.yaml");
    fs::write(&yaml, "primary: http://127.0.0.1:1\nbackup: http://127.0.0.1:2\nchek_interval: 2s\n").unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--backup=http://127.0.0.1:2"], "--primary: is required"),
        (&["--primary=ftp://x", "--backup=http://127.0.0.1:2"], "--primary"),
        (&["--primary=http://127.0.0.1:1", "--backup=http://127.0.0.1:2", "--check-interval=0s"], "--check-interval"),
        (&["--primary=http://127.0.0.1:1", "--backup=file:///nonexistent/dir"], "--backup"),
        (
            &[
                "--primary=http://127.0.0.1:1",
                "--backup=http://127.0.0.1:2",
                "--tls-cert",
                missing,
                "--tls-key",
                missing,
            ],
            "--tls-",
        ),
        (&["--primary=https://127.0.0.1:1", "--backup=http://127.0.0.1:2", "--primary-ca", missing], "--primary"),
        (
            &[
                "--primary=http://127.0.0.1:1",
                "--backup=http://127.0.0.1:2",
                "--notify=http://127.0.0.1:3/",
                "--notify-format=pagerduty",
            ],
            "--pagerduty-key-file",
        ),
        (
            &["--primary=http://127.0.0.1:1", "--backup=http://127.0.0.1:2", "--access-log", "/nonexistent/a.log"],
            "--access-log",
        ),
    ];
    for (args, key) in cases {
        let done = check(args);
        assert_eq!(done.code, Some(2), "{args:?}: {}{}", done.stdout, done.stderr);
        assert_eq!(done.stderr.trim().lines().count(), 1, "{args:?}: one line: {}", done.stderr);
        assert!(done.stderr.contains(key), "{args:?}: {key:?} not named in {}", done.stderr);
        assert!(done.stdout.is_empty(), "{args:?}: nothing printed when invalid");
    }
    let done = check(&[&format!("--config={}", yaml.display())]);
    assert_eq!(done.code, Some(2));
    assert!(done.stderr.contains("chek_interval"), "{}", done.stderr);
}

#[test]
fn probe_exits_0_on_a_good_answer_and_1_otherwise() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).start();
    let run = |url: String| run_to_exit(&["probe".to_string(), url], ms(5000));
    let ok = run(format!("http://{}/__failover/live", proxy.addr));
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
    assert!(ok.stdout.contains(": 200"), "{}", ok.stdout);
    let not_found = run(format!("http://{}/__failover/nope", proxy.addr));
    assert_eq!(not_found.code, Some(1));
    assert!(not_found.stderr.contains("HTTP 404"), "{}", not_found.stderr);
    let refused = run(format!("http://{}/", dead_addr()));
    assert_eq!(refused.code, Some(1));
    assert!(refused.stderr.contains("refused"), "{}", refused.stderr);
}
