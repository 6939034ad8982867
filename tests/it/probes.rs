//! Orchestrator probes and systemd: `/__failover/live`, `/__failover/ready` (not before the
//! first checks, 503 from SIGTERM on while `--shutdown-delay` keeps serving), the
//! `NOTIFY_SOCKET` messages and a listening socket passed with `LISTEN_FDS`.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Instant;

use crate::common::*;

#[test]
fn live_and_ready_answer_and_all_down_is_still_ready() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).fast_checks().start();
    assert!(wait_until(ms(3000), || get(proxy.addr, "/__failover/ready").status == 200));
    let live = get(proxy.addr, "/__failover/live");
    assert_eq!((live.status, live.text().as_str()), (200, "live\n"));
    // Everything down: the proxy still answers (503 with Retry-After), so it is ready.
    primary.stop();
    backup.stop();
    assert!(wait_until(ms(3000), || proxy.state().bool_field("all_down")));
    assert_eq!(get(proxy.addr, "/").status, 503);
    assert_eq!(get(proxy.addr, "/__failover/ready").status, 200);
    assert_eq!(get(proxy.addr, "/__failover/live").status, 200);
    assert_eq!(
        exchange(proxy.addr, b"POST /__failover/ready HTTP/1.1\r\nHost: p\r\nContent-Length: 0\r\n\r\n").status,
        405
    );
}

#[test]
fn ready_waits_for_the_first_round_of_checks() {
    let primary = Upstream::named("primary");
    primary.set_probe_hangs(true);
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).set("--check-timeout", "1500ms").start();
    let r = get(proxy.addr, "/__failover/ready");
    assert_eq!(r.status, 503, "the primary's first check is still running: {}", r.text());
    assert!(r.text().contains("first health checks"), "{}", r.text());
    assert_eq!(get(proxy.addr, "/__failover/live").status, 200);
    assert!(wait_until(ms(5000), || get(proxy.addr, "/__failover/ready").status == 200));
}

#[test]
fn sigterm_makes_ready_503_at_once_while_shutdown_delay_keeps_serving() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let mut proxy =
        Proxy::builder(&primary.url(), &backup.url()).fast_checks().set("--shutdown-delay", "1500ms").start();
    assert!(wait_until(ms(3000), || get(proxy.addr, "/__failover/ready").status == 200));
    let sent = Instant::now();
    proxy.signal(libc::SIGTERM);
    assert!(wait_until(ms(1000), || get(proxy.addr, "/__failover/ready").status == 503), "ready turns 503 first");
    assert_eq!(who(proxy.addr), "primary", "new connections are still served during the delay");
    assert!(sent.elapsed() < ms(1400), "checked inside the delay");
    let code = proxy.wait_exit(ms(6000));
    assert_eq!(code, Some(0));
    assert!(sent.elapsed() >= ms(1500), "the delay was kept: {:?}", sent.elapsed());
    assert!(try_get(proxy.addr, "/__failover/health").is_err(), "the listener is closed after");
}

/// Reads every datagram that arrives within `limit` or until `until` holds for one.
fn notes(sock: &UnixDatagram, limit: std::time::Duration, until: impl Fn(&str) -> bool) -> Vec<String> {
    let mut got = Vec::new();
    let end = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(ms(1)))).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = until(&m);
                got.push(m);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    got
}

#[test]
fn systemd_notify_messages_and_a_socket_passed_with_listen_fds() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let dir = temp_path("sd");
    std::fs::create_dir_all(&dir).unwrap();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    // The passed socket has no SO_REUSEPORT: had the proxy bound the port itself, its bind
    // would have failed and it would have exited. Serving proves it used the passed one.
    let passed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = passed.local_addr().unwrap();
    let fd = passed.as_raw_fd();
    let log = temp_path("sd-stderr");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_failover"))
        .args([
            format!("--listen={addr}"),
            format!("--primary={}", primary.url()),
            format!("--backup={}", backup.url()),
            "--check-interval=100ms".into(),
            "--workers=2".into(),
        ])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("LISTEN_FDS", "1")
        .env("WATCHDOG_USEC", "600000")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: between fork and exec only dup2 runs (async-signal-safe); it puts the
    // listening socket at descriptor 3, where LISTEN_FDS says systemd passes it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = || std::fs::read_to_string(&log).unwrap_or_default();

    let first = notes(&notify, ms(5000), |m| m.contains("READY=1"));
    assert!(first.iter().any(|m| m.starts_with("READY=1")), "got {first:?}; stderr: {}", stderr());
    assert_eq!(who(addr), "primary", "serves on the passed socket; stderr: {}", stderr());
    assert!(stderr().contains(&format!("listening on {addr}, a socket passed by systemd")), "{}", stderr());
    let pings = notes(&notify, ms(1500), |_| false);
    assert!(pings.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2, "pings every 300ms: {pings:?}");

    // SAFETY: kill sends a signal to the child this test started; no memory is involved.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let reload = notes(&notify, ms(3000), |m| m == "READY=1");
    let reloading = reload.iter().position(|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC="));
    let ready = reload.iter().rposition(|m| m == "READY=1");
    assert!(reloading.is_some() && ready > reloading, "RELOADING=1 then READY=1: {reload:?}");

    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stop = notes(&notify, ms(3000), |m| m == "STOPPING=1");
    assert!(stop.iter().any(|m| m == "STOPPING=1"), "{stop:?}");
    let deadline = Instant::now() + ms(5000);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        thread::sleep(ms(20));
    }
    let status = child.try_wait().ok().flatten();
    if status.is_none() {
        let _ = child.kill();
    }
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", stderr());
}
