//! A chain of upstreams (`--backup` given several times, or a YAML `backup:` list) as a
//! user sees it: traffic walks down the chain as upstreams die and back up as they return
//! (a `file://` directory as one link), `/__failover/state` lists every link, a retry or a
//! rescue goes to the next healthy upstream after the failed one, each at most once and
//! never back up the chain, a POST that may have reached an upstream is not sent on, "all
//! down" is a 503 with Retry-After, one routing change is one WARN line however many
//! workers, per-backup Host headers, and the one-line errors of a bad chain. The two-link
//! behaviour is in failover.rs and zero_error.rs; the directory's own serving rules are in
//! static_backup.rs.

use crate::common::*;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

/// Generous bound on a switch with `fast_checks` (2 x 100ms + 100ms), for a loaded machine.
const SWITCH_LIMIT: Duration = Duration::from_secs(3);
/// What the directory link of a chain serves at `/`.
const PAGE: &str = "<p>served from the directory</p>\n";
const EXIT_LIMIT: Duration = Duration::from_secs(3);

/// A temp directory holding `index.html` = [`PAGE`], removed on drop (also from where
/// a test moved it to).
struct Dir {
    path: PathBuf,
    aside: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let path = temp_path("site");
        fs::create_dir_all(&path).expect("create the site directory");
        fs::write(path.join("index.html"), PAGE).expect("write index.html");
        Dir { aside: path.with_extension("aside"), path }
    }

    fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }

    /// Makes the directory unreadable to the proxy (moved away) or readable again.
    fn set_present(&self, present: bool) {
        let (from, to) = if present { (&self.aside, &self.path) } else { (&self.path, &self.aside) };
        fs::rename(from, to).unwrap_or_else(|e| panic!("rename {from:?} -> {to:?}: {e}"));
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
        let _ = fs::remove_dir_all(&self.aside);
    }
}

/// Primary and backups in order, with `--backup` repeated.
fn chain(primary: &str, backups: &[&str]) -> ProxyBuilder {
    let mut b = Proxy::builder(primary, backups[0]);
    for url in &backups[1..] {
        b = b.add("--backup", url);
    }
    b
}

/// Answers 200 with body `name` except on `/busy*`, answered 503 `name busy`.
fn busy_on_busy_paths(name: &str) -> Upstream {
    let ok = reply(200, name.as_bytes());
    let busy = reply(503, format!("{name} busy").as_bytes());
    Upstream::with(move |s| Action::Reply(if s.target().starts_with("/busy") { busy.clone() } else { ok.clone() }))
}

/// Answers every request `name METHOD target len=N` with `status`.
fn echo(name: &str, status: u16) -> Upstream {
    let name = name.to_string();
    Upstream::with(move |s| {
        Action::Reply(reply(status, format!("{name} {} {} len={}", s.method(), s.target(), s.body.len()).as_bytes()))
    })
}

/// What `GET /` answers: the body of a 200, else `status NNN: body` or `error: ...`.
fn front(addr: SocketAddr) -> String {
    match try_get(addr, "/") {
        Ok(r) if r.status == 200 => r.text(),
        Ok(r) => format!("status {}: {}", r.status, r.text()),
        Err(e) => format!("error: {e}"),
    }
}

/// Polls `GET /` until it answers `want`; panics with every answer seen otherwise.
fn wait_for_front(addr: SocketAddr, want: &str) {
    let start = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let got = front(addr);
        if got == want {
            return;
        }
        if seen.last() != Some(&got) {
            seen.push(got);
        }
        assert!(start.elapsed() < SWITCH_LIMIT, "GET / never answered {want:?}; answers in order: {seen:?}");
        thread::sleep(ms(20));
    }
}

/// Polls the state until `cond` holds; returns it, or panics with the last one seen.
fn wait_state(proxy: &Proxy, what: &str, cond: impl Fn(&Json) -> bool) -> Json {
    let mut last = proxy.state();
    let held = wait_until(SWITCH_LIMIT, || {
        last = proxy.state();
        cond(&last)
    });
    assert!(held, "the state never showed {what} within {SWITCH_LIMIT:?}; last: {last:?}");
    last
}

fn upstreams(state: &Json) -> &[Json] {
    match state.get("upstreams") {
        Some(Json::Arr(items)) => items,
        _ => panic!("no \"upstreams\" array in {state:?}"),
    }
}

fn active_index(state: &Json) -> u64 {
    state.get("active").map(|a| a.u64_field("index")).unwrap_or_else(|| panic!("no \"active\" in {state:?}"))
}

fn healthy(state: &Json, i: usize) -> bool {
    upstreams(state).get(i).unwrap_or_else(|| panic!("no upstream {i} in {state:?}")).bool_field("healthy")
}

/// One link as the state must list it.
struct Link<'a> {
    name: &'a str,
    url: &'a str,
    kind: &'a str,
}

/// The whole state of a chain: `active` and every link with its health, plus the
/// top-level fields kept for two-upstream monitors.
fn assert_chain(state: &Json, links: &[Link], active: usize, health: &[bool]) {
    let list = upstreams(state);
    assert_eq!(list.len(), links.len(), "upstreams: {state:?}");
    for (i, (up, link)) in list.iter().zip(links).enumerate() {
        let role = if i == 0 { "primary" } else { "backup" };
        assert_eq!(up.u64_field("index"), i as u64, "upstreams[{i}]: {up:?}");
        assert_eq!(up.str_field("name"), link.name, "upstreams[{i}]: {up:?}");
        assert_eq!(up.str_field("url"), link.url, "upstreams[{i}]: {up:?}");
        assert_eq!(up.str_field("role"), role, "upstreams[{i}]: {up:?}");
        assert_eq!(up.str_field("kind"), link.kind, "upstreams[{i}]: {up:?}");
        assert_eq!(up.bool_field("healthy"), health[i], "upstreams[{i}].healthy: {state:?}");
        up.u64_field("fail_count");
        up.u64_field("recover_count");
        up.u64_field("last_check_ms");
        up.u64_field("last_check_unix");
        let error = up.str_field("last_error");
        assert!(health[i] || !error.is_empty(), "upstreams[{i}] is down without a last_error: {up:?}");
    }
    let want = state.get("active").unwrap_or_else(|| panic!("no \"active\" in {state:?}"));
    assert_eq!(want.u64_field("index"), active as u64, "active: {state:?}");
    assert_eq!(want.str_field("name"), links[active].name, "active: {state:?}");
    assert_eq!(want.str_field("url"), links[active].url, "active: {state:?}");
    assert_eq!(state.bool_field("on_backup"), active != 0, "on_backup: {state:?}");
    assert!(!state.bool_field("all_down"), "{state:?}");
    assert_eq!(state.str_field("primary"), links[0].url, "{state:?}");
    assert_eq!(state.str_field("backup"), links[1].url, "{state:?}");
    assert_eq!(state.bool_field("primary_healthy"), health[0], "{state:?}");
    assert_eq!(state.bool_field("backup_healthy"), health[1], "{state:?}");
}

/// Sleeps until the unix second is past `t`, so a switch made now shows in `since_unix`.
fn after_second(t: u64) {
    while unix_now() <= t {
        thread::sleep(ms(20));
    }
}

/// One switch of a chain: `act` (made in a new unix second after `since`, the previous
/// switch) moves traffic to link `active`, whose `GET /` answers `answer`; the state then
/// lists `links` with `health`, and `since_unix` is the time of this switch. Returns it.
fn switch(proxy: &Proxy, since: u64, act: impl FnOnce(), answer: &str, links: &[Link], want: (usize, &[bool])) -> u64 {
    let (active, health) = want;
    after_second(since);
    let at = unix_now();
    act();
    wait_for_front(proxy.addr, answer);
    let state = wait_state(proxy, &format!("traffic on link {active}"), |s| active_index(s) == active as u64);
    assert_chain(&state, links, active, health);
    let now = state.u64_field("since_unix");
    assert!(
        now > since && now >= at && now <= unix_now(),
        "since_unix {now} must be the switch time (made at {at}; previous switch {since}): {state:?}"
    );
    for i in 0..5 {
        assert_eq!(front(proxy.addr), answer, "request {i} after the switch to link {active}");
    }
    now
}

// ------------------------------------------------------ down and up ----

#[test]
fn three_link_chain_fails_down_and_back_up_one_link_at_a_time() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let dir = Dir::new();
    let proxy = chain(&primary.url(), &[&backup.url(), &dir.url()]).fast_checks().start();
    let links = [
        Link { name: "primary", url: &primary.url(), kind: "http" },
        Link { name: "backup", url: &backup.url(), kind: "http" },
        Link { name: "backup2", url: &dir.url(), kind: "directory" },
    ];
    let state = wait_state(&proxy, "every link checked", |s| {
        upstreams(s).iter().all(|u| u.get("last_check_unix").and_then(Json::as_f64).is_some_and(|t| t > 0.0))
    });
    assert_chain(&state, &links, 0, &[true, true, true]);
    let since = state.u64_field("since_unix");
    assert_eq!(front(proxy.addr), "primary");

    // Primary dies: the backup serves.
    let since = switch(&proxy, since, || primary.stop(), "backup", &links, (1, &[false, true, true]));

    // The directory going away while the backup serves is a health change, not a switch.
    after_second(since);
    dir.set_present(false);
    let state = wait_state(&proxy, "the directory unhealthy", |s| !healthy(s, 2));
    assert_chain(&state, &links, 1, &[false, true, false]);
    assert_eq!(state.u64_field("since_unix"), since, "since_unix moved without a switch: {state:?}");
    dir.set_present(true);
    let state = wait_state(&proxy, "the directory healthy again", |s| healthy(s, 2));
    assert_chain(&state, &links, 1, &[false, true, true]);
    assert_eq!(state.u64_field("since_unix"), since, "since_unix moved without a switch: {state:?}");
    assert_eq!(front(proxy.addr), "backup");

    // The backup dies too: the directory's page answers.
    let since = switch(&proxy, since, || backup.stop(), PAGE, &links, (2, &[false, false, true]));
    // The backup returns: traffic goes up one link, not to the (still dead) primary.
    let since = switch(&proxy, since, || backup.restart(), "backup", &links, (1, &[false, true, true]));
    // The primary returns: traffic is home.
    switch(&proxy, since, || primary.restart(), "primary", &links, (0, &[true, true, true]));

    // Each change was logged once, at WARN, saying where traffic went.
    let log = proxy.log();
    // (the change, what the same line says about traffic); a live request may have been
    // the failure that tipped the count, so the words between may vary.
    let once = [
        ("primary unhealthy: connect refused", format!("(2/2); traffic -> backup ({})", backup.url())),
        ("backup2 unhealthy: ", "(2/2); traffic stays on backup".to_string()),
        ("backup2 healthy again (2/2)", "; traffic stays on backup".to_string()),
        ("backup unhealthy: connect refused", format!("(2/2); traffic -> backup2 ({})", dir.url())),
        ("backup healthy again (2/2)", format!("; traffic -> backup ({})", backup.url())),
        ("primary healthy again (2/2)", format!("; traffic -> primary ({})", primary.url())),
    ];
    for (change, traffic) in &once {
        let found = lines_with(&log, change);
        assert_eq!(found.len(), 1, "want one line with {change:?}:\n{log}");
        assert!(found[0].contains("WARN"), "not at WARN: {}", found[0]);
        assert!(found[0].ends_with(traffic.as_str()), "want {traffic:?} at the end of: {}", found[0]);
    }
    assert_eq!(lines_with(&log, "traffic ->").len(), 4, "four switches, four lines:\n{log}");
}

// ------------------------------------------------------------ retries ----

#[test]
fn retry_skips_a_middle_upstream_marked_unhealthy() {
    let primary = busy_on_busy_paths("primary");
    let backup = Upstream::named("backup");
    let backup2 = Upstream::named("backup2");
    let proxy = chain(&primary.url(), &[&backup.url(), &backup2.url()]).fast_checks().start();
    // Its checks fail, though it would answer traffic: a request sent to it would show.
    backup.set_healthy(false);
    let state = wait_state(&proxy, "the backup unhealthy", |s| !healthy(s, 1));
    assert_eq!(active_index(&state), 0, "a backup going down does not move traffic: {state:?}");
    let retries = state.u64_field("retries");

    let resp = get(proxy.addr, "/busy/1");
    assert_eq!(resp.status, 200, "the primary's 503 must be retried on backup2: {}", show(&resp.raw));
    assert_eq!(resp.text(), "backup2", "{}", show(&resp.raw));
    assert!(resp.header("x-failover-retry").is_none(), "{}", show(&resp.raw));
    assert_eq!(primary.requests().iter().filter(|s| s.target() == "/busy/1").count(), 1);
    assert_eq!(backup.request_count(), 0, "the unhealthy backup must be skipped, not tried");
    assert_eq!(backup2.requests().iter().map(|s| s.target().to_string()).collect::<Vec<_>>(), ["/busy/1"]);
    let state = proxy.state();
    assert_eq!(state.u64_field("retries"), retries + 1, "one re-send, primary -> backup2: {state:?}");

    // Stopped as well (connects refused): still skipped, so still one re-send.
    backup.stop();
    let resp = get(proxy.addr, "/busy/2");
    assert_eq!(resp.text(), "backup2", "{}", show(&resp.raw));
    let state = proxy.state();
    assert_eq!(state.u64_field("retries"), retries + 2, "a skipped upstream is not a retry: {state:?}");
    assert_eq!(backup2.request_count(), 2);
}

#[test]
fn refused_connects_walk_the_chain_trying_each_upstream_once() {
    let backup2 = echo("backup2", 200);
    // Nothing listens on the first two, but no threshold is reached: both are still
    // believed healthy, so each request tries them, once each.
    let proxy = chain(&format!("http://{}", dead_addr()), &[&format!("http://{}", dead_addr()), &backup2.url()])
        .set("--workers", "1")
        .steady()
        .start();
    let state = proxy.state();
    assert!(healthy(&state, 0) && healthy(&state, 1), "{state:?}");
    assert_eq!(state.u64_field("retries"), 0);
    for i in 1..=3u64 {
        let resp = get(proxy.addr, &format!("/walk?i={i}"));
        assert_eq!(resp.status, 200, "request {i}: {}", show(&resp.raw));
        assert_eq!(resp.text(), format!("backup2 GET /walk?i={i} len=0"), "{}", show(&resp.raw));
        let state = proxy.state();
        assert_eq!(state.u64_field("retries"), 2 * i, "each request re-sent twice (primary, backup): {state:?}");
        assert_eq!(active_index(&state), 0, "{state:?}");
    }
    assert_eq!(backup2.request_count(), 3);
}

#[test]
fn every_link_answering_503_gives_one_503_and_each_sees_the_request_once() {
    let names = ["primary", "backup", "backup2", "backup3"];
    let ups: Vec<Upstream> = names.iter().map(|n| busy_on_busy_paths(n)).collect();
    let urls: Vec<String> = ups.iter().map(Upstream::url).collect();
    let backups: Vec<&str> = urls[1..].iter().map(String::as_str).collect();
    let proxy = chain(&urls[0], &backups).set("--workers", "1").steady().start();

    let resp = get(proxy.addr, "/busy");
    assert_eq!(resp.status, 503, "{}", show(&resp.raw));
    assert_eq!(resp.text(), "backup3 busy", "the last link's own 503 is relayed: {}", show(&resp.raw));
    assert!(resp.header("x-failover-retry").is_none(), "nothing was skipped: {}", show(&resp.raw));
    for (up, name) in ups.iter().zip(names) {
        let seen: Vec<String> = up.requests().iter().map(|s| format!("{} {}", s.method(), s.target())).collect();
        assert_eq!(seen, ["GET /busy"], "{name} must see the request exactly once");
    }
    let state = proxy.state();
    assert_eq!(state.u64_field("retries"), 3, "{state:?}");
    // The next request starts at the primary again.
    assert_eq!(front(proxy.addr), "primary");
}

#[test]
fn retry_never_goes_back_up_the_chain_to_a_healthy_primary() {
    let primary = Upstream::named("primary");
    let backup = busy_on_busy_paths("backup");
    let backup2 = Upstream::named("backup2");
    let proxy =
        chain(&primary.url(), &[&backup.url(), &backup2.url()]).fast_checks().set("--min-backup-time", "60s").start();
    primary.set_healthy(false);
    wait_state(&proxy, "traffic on the backup", |s| active_index(s) == 1);
    // Healthy again, but held on the backup by --min-backup-time.
    primary.set_healthy(true);
    let state = wait_state(&proxy, "the primary healthy again", |s| healthy(s, 0));
    assert_eq!(active_index(&state), 1, "held on the backup: {state:?}");
    assert_eq!(front(proxy.addr), "backup");

    let resp = get(proxy.addr, "/busy");
    assert_eq!(resp.status, 200, "the backup's 503 goes on to backup2: {}", show(&resp.raw));
    assert_eq!(resp.text(), "backup2", "{}", show(&resp.raw));
    assert_eq!(primary.request_count(), 0, "a retry must never go back up the chain");
    assert_eq!(backup.request_count(), 2, "GET / and GET /busy");
}

// ---------------------------------------------------- non-replayable ----

#[test]
fn post_closed_on_after_sending_is_502_skipped_and_goes_no_further() {
    let primary = Upstream::closes_after_head();
    let backup = echo("backup", 200);
    let backup2 = echo("backup2", 200);
    let proxy = chain(&primary.url(), &[&backup.url(), &backup2.url()]).set("--workers", "1").steady().start();
    let resp = exchange(
        proxy.addr,
        format!("POST /pay HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 9\r\n\r\namount=10").as_bytes(),
    );
    assert_eq!(resp.status, 502, "{}", show(&resp.raw));
    assert_eq!(resp.header("x-failover-retry"), Some("skipped-method"), "{}", show(&resp.raw));
    assert_eq!(primary.request_count(), 1, "the POST reached the primary");
    assert_eq!(backup.request_count(), 0, "a POST that may have reached the primary must not be replayed");
    assert_eq!(backup2.request_count(), 0, "a POST that may have reached the primary must not be replayed");
    assert_eq!(proxy.state().u64_field("retries"), 0);
}

#[test]
fn post_unanswered_by_a_black_hole_is_504_skipped_and_goes_no_further() {
    let primary = Upstream::black_hole();
    let backup = echo("backup", 200);
    let backup2 = echo("backup2", 200);
    let proxy = chain(&primary.url(), &[&backup.url(), &backup2.url()])
        .set("--workers", "1")
        .set("--upstream-timeout", "1s")
        .steady()
        .start();
    let resp =
        exchange(proxy.addr, format!("POST /pay HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 2\r\n\r\nhi").as_bytes());
    assert_eq!(resp.status, 504, "{}", show(&resp.raw));
    assert_eq!(resp.header("x-failover-retry"), Some("skipped-method"), "{}", show(&resp.raw));
    assert_eq!(primary.request_count(), 1, "the POST reached the primary");
    assert_eq!(backup.request_count() + backup2.request_count(), 0, "no later upstream may see the POST");
}

#[test]
fn post_refused_at_connect_goes_down_the_chain() {
    let body = "order=42&qty=3";
    let post = format!("POST /orders HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let names = ["primary", "backup", "backup2"];
    // The first `dead` links refuse connections (nothing reached them): the next one takes
    // the POST, body and all, and the links after it see nothing.
    for dead in [1, 2] {
        let ups: Vec<Upstream> = names[dead..].iter().map(|n| echo(n, 201)).collect();
        let mut urls: Vec<String> = (0..dead).map(|_| format!("http://{}", dead_addr())).collect();
        urls.extend(ups.iter().map(Upstream::url));
        let backups: Vec<&str> = urls[1..].iter().map(String::as_str).collect();
        let proxy = chain(&urls[0], &backups).set("--workers", "1").steady().start();
        let resp = exchange(proxy.addr, post.as_bytes());
        assert_eq!(resp.status, 201, "{dead} dead: {}", show(&resp.raw));
        let want = format!("{} POST /orders len={}", names[dead], body.len());
        assert_eq!(resp.text(), want, "{dead} dead: {}", show(&resp.raw));
        assert_eq!(ups[0].requests()[0].body, body.as_bytes());
        assert!(ups[1..].iter().all(|u| u.request_count() == 0), "{dead} dead: a later link saw the POST");
    }
}

// ----------------------------------------------------------- all down ----

#[test]
fn all_down_is_503_with_retry_after_until_the_last_link_returns() {
    let ups = [Upstream::named("primary"), Upstream::named("backup"), Upstream::named("backup2")];
    let proxy = chain(&ups[0].url(), &[&ups[1].url(), &ups[2].url()]).fast_checks().start();
    assert_eq!(who(proxy.addr), "primary");
    for up in &ups {
        up.stop();
    }
    let state = wait_state(&proxy, "all_down", |s| s.bool_field("all_down"));
    assert!(upstreams(&state).iter().all(|u| !u.bool_field("healthy")), "{state:?}");
    assert!(upstreams(&state).iter().all(|u| !u.str_field("last_error").is_empty()), "{state:?}");
    assert!(state.bool_field("on_backup"), "{state:?}");

    // Every worker has the news within a probe round; from then on the answer is at once.
    let mut resp = get(proxy.addr, "/x");
    wait_until(ms(1000), || {
        resp = get(proxy.addr, "/x");
        resp.status == 503 && resp.header("retry-after").is_some()
    });
    for i in 0..3 {
        if i > 0 {
            resp = get(proxy.addr, "/x");
        }
        assert_eq!(resp.status, 503, "request {i}: {}", show(&resp.raw));
        let retry_after = resp.header("retry-after").unwrap_or_else(|| panic!("no Retry-After: {}", show(&resp.raw)));
        assert!(retry_after.parse::<u32>().is_ok_and(|s| s >= 1), "Retry-After {retry_after:?}: {}", show(&resp.raw));
        assert!(resp.text().to_ascii_lowercase().contains("down"), "the body must say so: {}", show(&resp.raw));
    }
    let log = proxy.log();
    assert_eq!(lines_with(&log, "; every upstream is down").len(), 1, "want one all-down line:\n{log}");

    // The last link alone comes back: it serves.
    ups[2].restart();
    wait_for_who(proxy.addr, "backup2", SWITCH_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let state = proxy.state();
    assert!(!state.bool_field("all_down"), "{state:?}");
    assert_eq!(active_index(&state), 2, "{state:?}");
    assert!(healthy(&state, 2) && !healthy(&state, 0) && !healthy(&state, 1), "{state:?}");
    let line = format!("traffic -> backup2 ({})", ups[2].url());
    assert!(proxy.wait_for_log(&line, SWITCH_LIMIT), "no {line:?} line:\n{}", proxy.log());
}

// ------------------------------------------------------------------ log ----

/// Lines of the log that contain `needle`.
fn lines_with(log: &str, needle: &str) -> Vec<String> {
    log.lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
}

/// Waits for `who` to answer `name`, keeps asking through several probe rounds on every
/// worker, then expects exactly one WARN line saying traffic went to `name` at `url`,
/// because of `why`.
fn expect_switch_logged_once(proxy: &Proxy, name: &str, url: &str, why: &str) {
    wait_for_who(proxy.addr, name, SWITCH_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..10 {
        assert_eq!(who(proxy.addr), name);
        thread::sleep(ms(60));
    }
    let log = proxy.log();
    let found = lines_with(&log, &format!("traffic -> {name} ({url})"));
    assert_eq!(found.len(), 1, "one switch to {name} must be logged once, not per worker:\n{log}");
    assert!(found[0].contains("WARN") && found[0].contains(why), "want WARN and {why:?}: {}", found[0]);
}

#[test]
fn one_switch_is_one_warn_line_with_four_workers() {
    let primary = Upstream::named("primary");
    let backup = Upstream::named("backup");
    let proxy = Proxy::builder(&primary.url(), &backup.url()).fast_checks().set("--workers", "4").start();
    assert_eq!(who(proxy.addr), "primary");

    primary.stop();
    expect_switch_logged_once(&proxy, "backup", &backup.url(), "primary unhealthy");
    primary.restart();
    expect_switch_logged_once(&proxy, "primary", &primary.url(), "primary healthy again");
    let log = proxy.log();
    assert_eq!(lines_with(&log, "traffic ->").len(), 2, "two switches, two lines:\n{log}");
}

// ---------------------------------------------------------- Host header ----

/// (Host, X-Forwarded-Host) of every request `up` received for `target`.
fn hosts(up: &Upstream, target: &str) -> Vec<(String, Option<String>)> {
    up.requests()
        .iter()
        .filter(|s| s.target() == target)
        .map(|s| (s.header("host").unwrap_or("").to_string(), s.header("x-forwarded-host").map(str::to_string)))
        .collect()
}

fn with_xfh(host: &str) -> (String, Option<String>) {
    (host.to_string(), Some(HOST.to_string()))
}

#[test]
fn yaml_backup_list_gives_each_backup_its_own_host_header() {
    let primary = busy_on_busy_paths("primary");
    let backup = busy_on_busy_paths("backup");
    let backup2 = busy_on_busy_paths("backup2");
    let config = temp_path("chain.yaml");
    fs::write(
        &config,
        format!(
            "backup:\n  - url: {}\n    host_header: one.example\n  - {{url: \"{}\", host_header: upstream}}\n",
            backup.url(),
            backup2.url()
        ),
    )
    .expect("write the config file");
    let proxy = Proxy::builder(&primary.url(), "")
        .unset("--backup")
        .set("--config", config.to_str().expect("utf-8 temp path"))
        .fast_checks()
        .start();
    let _ = fs::remove_file(&config);
    let state = proxy.state();
    assert_eq!(upstreams(&state).len(), 3, "{state:?}");
    let b2 = backup2.addr.to_string();

    // One request walking the whole chain (503, 503, 200): each link gets its own Host.
    let resp = get(proxy.addr, "/busy");
    assert_eq!(resp.status, 503, "{}", show(&resp.raw));
    assert_eq!(hosts(&primary, "/busy"), [(HOST.to_string(), None)], "the primary keeps the client's Host");
    assert_eq!(hosts(&backup, "/busy"), [with_xfh("one.example")]);
    assert_eq!(hosts(&backup2, "/busy"), [with_xfh(&b2)]);

    // Traffic sent to each backup directly.
    primary.set_healthy(false);
    wait_for_front(proxy.addr, "backup");
    assert!(hosts(&backup, "/").iter().all(|h| *h == with_xfh("one.example")), "{:?}", hosts(&backup, "/"));
    backup.set_healthy(false);
    wait_for_front(proxy.addr, "backup2");
    assert!(hosts(&backup2, "/").iter().all(|h| *h == with_xfh(&b2)), "{:?}", hosts(&backup2, "/"));
}

#[test]
fn backup_host_header_flag_given_once_applies_to_every_http_backup() {
    let primary = busy_on_busy_paths("primary");
    let backup = busy_on_busy_paths("backup");
    let backup2 = busy_on_busy_paths("backup2");
    // A directory at the end of the chain, which takes no Host policy, is no error.
    let proxy = chain(&primary.url(), &[&backup.url(), &backup2.url(), "file://./examples/sorry"])
        .set("--backup-host-header", "x.example")
        .set("--workers", "1")
        .steady()
        .start();
    let resp = get(proxy.addr, "/busy");
    // backup2's 503 goes on to the directory, which serves no /busy.
    assert_eq!(resp.status, 404, "{}", show(&resp.raw));
    assert_eq!(hosts(&primary, "/busy"), [(HOST.to_string(), None)]);
    assert_eq!(hosts(&backup, "/busy"), [with_xfh("x.example")]);
    assert_eq!(hosts(&backup2, "/busy"), [with_xfh("x.example")]);
    let state = proxy.state();
    assert_eq!(upstreams(&state)[3].str_field("kind"), "directory", "{state:?}");
}

// -------------------------------------------------------- config errors ----

/// Runs the binary with `args` plus a listen address; expects exit 2 and exactly one
/// stderr line, starting `failover: ` and containing every one of `want`.
fn expect_one_error_line(args: &[String], want: &[&str]) {
    let mut args = args.to_vec();
    args.push(format!("--listen=127.0.0.1:{}", free_port()));
    args.push("--workers=1".to_string());
    let done = run_to_exit(&args, EXIT_LIMIT);
    assert_eq!(done.code, Some(2), "failover {args:?} must exit 2 (None = still running); stderr: {:?}", done.stderr);
    let lines: Vec<&str> = done.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want ONE stderr line for {args:?}, got {:?}", done.stderr);
    assert!(lines[0].starts_with("failover: "), "{:?}", lines[0]);
    for w in want {
        assert!(lines[0].contains(w), "the error for {args:?} must contain {w:?}: {:?}", lines[0]);
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn bad_chains_exit_2_with_one_line_naming_the_key() {
    let (p, b, b2) = ("--primary=http://127.0.0.1:1", "--backup=http://127.0.0.1:2", "--backup=http://127.0.0.1:3");
    let cases: &[(&[&str], &[&str])] = &[
        (&[p, b, b2, "--backup-status=503"], &["--backup-status", "file://"]),
        (&[p, b, b2, "--backup-ca=/etc/hostname"], &["--backup-ca", "https://"]),
        (&[p, b, b2, "--backup-sni=x.example"], &["--backup-sni"]),
        (&["--primary=file:///tmp", b], &["--primary", "file://"]),
        (&[p, b, "--backup=file:///nonexistent/failover-test-dir"], &["--backup", "backup2", "nonexistent"]),
        (&[p, "--backup=file:///nonexistent/failover-test-dir"], &["--backup", "nonexistent"]),
        (&[p], &["--backup"]),
    ];
    for (args, want) in cases {
        expect_one_error_line(&strings(args), want);
    }
}

#[test]
fn bad_yaml_backup_items_exit_2_with_one_line_naming_item_and_key() {
    let dir = Dir::new();
    let cases: &[(&str, &[&str])] = &[
        (
            "backup:\n  - http://127.0.0.1:2\n  - {url: \"http://127.0.0.1:3\", colour: red}\n",
            &["--config", "backup item 2", "colour"],
        ),
        ("backup:\n  - host_header: one.example\n", &["--config", "backup item 1", "url"]),
        (
            "backup:\n  - http://127.0.0.1:2\n  - {url: \"http://127.0.0.1:3\", ca: /etc/hostname}\n",
            &["--config", "backup item 2", "ca", "https://"],
        ),
        ("backup:\n  - {url: \"http://127.0.0.1:2\", status: 503}\n", &["--config", "backup item 1", "status"]),
        ("backup:\n  - {url: \"file:///nonexistent/failover-test-dir\"}\n", &["backup item 1", "nonexistent"]),
        (
            &format!("backup:\n  - http://127.0.0.1:2\n  - {{url: \"{}\", host_header: x.example}}\n", dir.url()),
            &["backup item 2", "host_header"],
        ),
    ];
    for (yaml, want) in cases {
        let path = temp_path("bad.yaml");
        fs::write(&path, yaml).expect("write the config file");
        let args = vec!["--primary=http://127.0.0.1:1".to_string(), format!("--config={}", path.display())];
        expect_one_error_line(&args, want);
        let _ = fs::remove_file(&path);
    }
}

// -------------------------------------------------------------- rescue ----

/// Sends `raw` from a thread; the response (or error) and when it came.
fn in_flight(addr: SocketAddr, raw: String) -> thread::JoinHandle<(Result<Response, String>, Instant)> {
    thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.set_read_timeout(Duration::from_secs(40));
        c.send(raw.as_bytes());
        let r = c.try_response(false).map_err(|e| e.to_string());
        (r, Instant::now())
    })
}

/// A GET stuck on a black-holed primary (30s upstream timeout) whose probes start failing:
/// the client's answer, how long after the probes broke it came, and the rescues count.
fn rescue_from_frozen_primary(primary: &Upstream, proxy: &Proxy) -> (Response, Duration, u64) {
    let before = proxy.state().u64_field("rescues");
    let pending = in_flight(proxy.addr, format!("GET /stuck HTTP/1.1\r\nHost: {HOST}\r\n\r\n"));
    assert!(wait_until(SWITCH_LIMIT, || primary.request_count() == 1), "the GET never reached the primary");
    let broke = Instant::now();
    primary.set_healthy(false);
    let (resp, at) = pending.join().expect("client thread");
    let resp = resp.unwrap_or_else(|e| panic!("no answer for the GET stuck on the primary: {e}"));
    let rescues = proxy.state().u64_field("rescues");
    assert!(rescues > before, "rescues must rise ({before} -> {rescues})");
    (resp, at - broke, rescues)
}

#[test]
fn get_stuck_on_a_frozen_primary_is_rescued_by_the_backup() {
    let primary = Upstream::black_hole();
    let backup = echo("backup", 200);
    let dir = Dir::new();
    let proxy =
        chain(&primary.url(), &[&backup.url(), &dir.url()]).fast_checks().set("--upstream-timeout", "30s").start();
    let (resp, took, _) = rescue_from_frozen_primary(&primary, &proxy);
    assert_eq!(resp.status, 200, "{}", show(&resp.raw));
    assert_eq!(resp.text(), "backup GET /stuck len=0", "{}", show(&resp.raw));
    eprintln!("rescued {took:?} after the primary's probes started failing");
    assert!(took < Duration::from_secs(10), "rescued after {took:?}: that is the timeout, not the switch");
    assert_eq!(active_index(&proxy.state()), 1);
}

#[test]
fn rescue_skips_a_backup_marked_unhealthy() {
    let primary = Upstream::black_hole();
    let backup = echo("backup", 200);
    let backup2 = echo("backup2", 200);
    let proxy =
        chain(&primary.url(), &[&backup.url(), &backup2.url()]).fast_checks().set("--upstream-timeout", "30s").start();
    backup.set_healthy(false);
    wait_state(&proxy, "the backup unhealthy", |s| !healthy(s, 1));
    let (resp, took, _) = rescue_from_frozen_primary(&primary, &proxy);
    assert_eq!(resp.text(), "backup2 GET /stuck len=0", "{}", show(&resp.raw));
    assert!(took < Duration::from_secs(10), "rescued after {took:?}: that is the timeout, not the switch");
    assert_eq!(backup.request_count(), 0, "the rescue must skip the unhealthy backup");
    assert_eq!(active_index(&proxy.state()), 2);
}
