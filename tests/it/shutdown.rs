//! SIGTERM: stop accepting, finish what is in flight, close idle keep-alive connections,
//! exit 0, all within `--shutdown-timeout`.

use std::net::TcpStream;
use std::thread;
use std::time::Instant;

use crate::common::*;

const GET: &[u8] = b"GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n";

fn slow_upstream(delay_ms: u64) -> Upstream {
    Upstream::with(move |_| {
        thread::sleep(ms(delay_ms));
        Action::Reply(reply(200, b"slow done"))
    })
}

#[test]
fn in_flight_request_finishes_after_sigterm_and_exit_is_0() {
    let primary = slow_upstream(700);
    let backup = Upstream::named("backup");
    let mut proxy = Proxy::builder(&primary.url(), &backup.url()).fast_checks().start();
    let mut c = Client::connect(proxy.addr);
    c.send(GET);
    thread::sleep(ms(150));
    let t0 = Instant::now();
    proxy.signal(libc::SIGTERM);
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "slow done");
    assert!(r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")), "the last response says close");
    assert!(c.is_closed(ms(2000)), "the connection ends after the drained response");
    assert_eq!(proxy.wait_exit(ms(5000)), Some(0), "exit code 0 after draining");
    assert!(t0.elapsed() >= ms(400), "it waited for the request: {:?}", t0.elapsed());
    assert!(TcpStream::connect(proxy.addr).is_err(), "no longer accepting");
}

#[test]
fn idle_keep_alive_connection_is_closed_and_a_late_request_is_answered() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let mut proxy = Proxy::builder(&primary.url(), &backup.url()).fast_checks().start();
    let mut idle = Client::connect(proxy.addr);
    idle.send(GET);
    assert_eq!(idle.response().status, 200);
    let mut late = Client::connect(proxy.addr);
    late.send(GET);
    assert_eq!(late.response().status, 200);

    proxy.signal(libc::SIGTERM);
    thread::sleep(ms(50));
    // A request already on its way when the proxy starts stopping is still answered, and
    // told to close.
    late.send(GET);
    let r = late.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")));
    assert!(idle.is_closed(ms(3000)), "an idle keep-alive connection is closed");
    assert_eq!(proxy.wait_exit(ms(5000)), Some(0));
}

#[test]
fn shutdown_timeout_bounds_the_wait() {
    let primary = Upstream::black_hole();
    let backup = Upstream::black_hole();
    let mut proxy = Proxy::builder(&primary.url(), &backup.url())
        .set("--upstream-timeout", "30s")
        .set("--check-interval", "10s")
        .set("--shutdown-timeout", "300ms")
        .start();
    let mut c = Client::connect(proxy.addr);
    c.send(GET);
    thread::sleep(ms(100));
    let t0 = Instant::now();
    proxy.signal(libc::SIGTERM);
    assert_eq!(proxy.wait_exit(ms(5000)), Some(0), "exits once --shutdown-timeout passed");
    assert!(t0.elapsed() < ms(3000), "bounded by --shutdown-timeout: {:?}", t0.elapsed());
    assert!(proxy.log().contains("shutdown-timeout"), "says it gave up waiting:\n{}", proxy.log());
}

#[test]
fn a_second_process_on_the_same_address_warns_naming_the_first() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let first = Proxy::builder(&primary.url(), &backup.url()).start();
    let args = vec![
        format!("--primary={}", primary.url()),
        format!("--backup={}", backup.url()),
        format!("--listen={}", first.addr),
    ];
    // It starts (a rolling restart needs that), and says whom it now shares the port with.
    let second = run_to_exit(&args, ms(1500));
    assert_eq!(second.code, None, "the second process runs: {}", second.stderr);
    let warn = second.stderr.lines().find(|l| l.contains("already listens")).unwrap_or_default();
    assert!(warn.contains("WARN") && warn.contains(&first.addr.to_string()), "{}", second.stderr);
    assert!(warn.contains("pid ") && warn.contains("failover"), "the first one is named: {warn}");
}
