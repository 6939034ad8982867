//! Start-up: bind one `SO_REUSEPORT` listener per worker, start the workers (pinned to a
//! core each with `--pin-cores`), and wait for them.
//!
//! All listeners are bound before any worker starts, so an unusable address is reported
//! once, at start, with the process exiting non-zero.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::access_log::AccessLog;
use crate::admin;
use crate::admin_api;
use crate::config::Config;
use crate::control::Control;
use crate::health::Board;
use crate::metrics::WorkerMetrics;
use crate::notify::Notifier;
use crate::resolve::{Addrs, Resolver};
use crate::systemd::{self, Systemd};
use crate::upstream::Kind;
use crate::worker::{Shared, Worker};

/// Binds a non-blocking listener that other listeners on the same address share.
pub fn bind(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(mio::net::TcpListener::from_std(sock.into()))
}

/// Runs the proxy until SIGTERM or SIGINT. On SIGHUP, `reload` builds the configuration
/// again (flags and file); a valid one is handed to the workers, an invalid one is logged
/// and ignored.
pub fn run(cfg: Config, reload: impl Fn() -> Result<Config, String>) -> io::Result<()> {
    // Workers inherit this mask: signals reach only the thread waiting for them below, which
    // also makes the proxy stop on SIGTERM when it runs as PID 1 in a container.
    let signals = block_signals();
    let mut cfg = Arc::new(cfg);
    let board = Arc::new(Board::new(&cfg));
    let control = Arc::new(Control::new());
    let metrics = Arc::new((0..cfg.workers).map(|_| WorkerMetrics::new()).collect::<Vec<_>>());
    let notifier = Notifier::start(&cfg, board.route().1, metrics.clone(), control.notifications.clone())?;
    let shared =
        Shared { board, control, metrics, resolver: Resolver::new(cfg.dns_refresh), notifier: Arc::new(notifier) };
    shared.resolver.watch(names(&cfg), cfg.dns_refresh);
    shared.resolver.spawn()?;
    let start = Instant::now();
    // Sockets passed by systemd (socket activation) serve their address; the others are
    // bound here, one SO_REUSEPORT socket per worker.
    let passed = systemd::listen_fds()?;
    let wanted: Vec<SocketAddr> = std::iter::once(cfg.listen).chain(cfg.listen_http).collect();
    let activated = |k: usize| -> Option<&std::net::TcpListener> {
        let addr = wanted[k];
        let same = |a: &SocketAddr| *a == addr || (addr.ip().is_unspecified() && a.port() == addr.port());
        passed.iter().find(|(a, _)| same(a)).or_else(|| passed.get(k)).map(|(_, l)| l)
    };
    for (addr, _) in &passed {
        log::info!("listening on {addr}, a socket passed by systemd");
    }
    let listen = |k: usize| -> io::Result<mio::net::TcpListener> {
        let addr = wanted[k];
        match activated(k) {
            Some(l) => Ok(mio::net::TcpListener::from_std(l.try_clone()?)),
            None => bind(addr).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))),
        }
    };
    for (k, &addr) in wanted.iter().enumerate() {
        if activated(k).is_some() {
            continue;
        }
        if let Some(who) = who_listens(addr) {
            log::warn!(
                "{addr}: {who} already listens here; with SO_REUSEPORT the two share the connections \
                 (right for a rolling restart, a mistake otherwise)"
            );
        }
    }
    if let Some(t) = &cfg.access_log {
        AccessLog::open(t)
            .map_err(|e| io::Error::new(e.kind(), format!("--access-log: cannot open {}: {e}", t.path)))?;
    }
    let admin_listener = match &cfg.admin_listen {
        Some(addr) => Some(
            admin_api::bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on --admin-listen {addr}: {e}")))?,
        ),
        None => None,
    };
    let mut per_worker = Vec::with_capacity(cfg.workers);
    for _ in 0..cfg.workers {
        let mut ls = vec![(listen(0)?, cfg.tls.is_some())];
        if cfg.listen_http.is_some() {
            ls.push((listen(1)?, false));
        }
        per_worker.push(ls);
    }
    for (i, up) in cfg.upstreams.iter().enumerate() {
        if let Some(first) = cfg.upstreams[..i].iter().find(|u| u.url == up.url) {
            log::warn!("{} {} is also {}: a failure of one is a failure of both", up.name, up.url, first.name);
        }
        if let Some(o) = up.origin().filter(|o| o.addrs.pick().0.is_empty()) {
            log::warn!("{} {}: {}; it counts as down until a lookup succeeds", up.name, up.url, o.addrs.missing());
        }
        if up.origin().is_some_and(|o| o.insecure) {
            let flag = if up.name == "primary" { "primary" } else { "backup" };
            log::warn!("{} {}: certificate verification is OFF (--{flag}-insecure)", up.name, up.url);
        }
    }
    let mut workers = Vec::with_capacity(cfg.workers);
    for (id, listeners) in per_worker.into_iter().enumerate() {
        workers.push(Worker::new(id, cfg.workers, listeners, cfg.clone(), shared.clone(), start)?);
    }
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    log::info!(
        "listening on {scheme}://{} workers={} {} check_interval={:?} fail_threshold={} recover_threshold={}",
        cfg.listen,
        cfg.workers,
        describe_chain(&cfg),
        cfg.check_interval,
        cfg.fail_threshold,
        cfg.recover_threshold
    );
    for sink in &cfg.notify.sinks {
        log::info!("notifications to the {} as instance {:?}", sink.label(), cfg.notify.instance);
    }
    if let (Some(l), Some(addr)) = (admin_listener, &cfg.admin_listen) {
        admin_api::spawn(l, cfg.clone(), shared.clone())?;
        let auth = if cfg.admin_token.is_some() { "bearer token required" } else { "no token" };
        log::info!("admin endpoints on {addr} ({auth})");
    }
    let mut handles = Vec::with_capacity(workers.len());
    for (id, mut w) in workers.into_iter().enumerate() {
        let pin = cfg.pin_cores;
        let h = std::thread::Builder::new().name(format!("worker-{id}")).spawn(move || {
            if pin {
                pin_to_core(id);
            }
            if let Err(e) = w.run() {
                log::error!(event = "worker_stopped", worker = id; "worker={id} stopped: {e}");
                std::process::exit(1);
            }
        })?;
        handles.push(h);
    }
    let mut sd = Systemd::from_env();
    let mut ready_told = false;
    loop {
        let Some(sig) = wait_signal(&signals, SIGNAL_TICK) else {
            // Between signals: tell systemd when the first checks are in, and ping its
            // watchdog while every loop turns.
            if sd.active() && !ready_told && shared.board.first_round_done() {
                sd.send("READY=1\nSTATUS=serving");
                ready_told = true;
            }
            if sd.watchdog_due() {
                match admin::stalled(&shared.control, &shared.metrics) {
                    None => sd.send("WATCHDOG=1"),
                    Some((worker, ms)) => log::error!(
                        "worker={worker} has not turned its loop for {ms} ms; not pinging the systemd watchdog"
                    ),
                }
            }
            continue;
        };
        match sig {
            libc::SIGHUP => {
                // Logs are reopened even when the new configuration is refused (logrotate).
                shared.control.reopen_logs();
                sd.reloading();
                let outcome = reload();
                if ready_told {
                    sd.send("READY=1");
                }
                match outcome {
                    Ok(mut new) => {
                        keep_fixed_settings(&cfg, &mut new);
                        cfg = Arc::new(new);
                        // The board counts for the new chain before any worker can report on it.
                        shared.board.reconfigure(&cfg, shared.control.next_generation());
                        shared.resolver.watch(names(&cfg), cfg.dns_refresh);
                        shared.control.publish_config(cfg.clone());
                        let chain = describe_chain(&cfg);
                        log::info!(event = "reload", signal = "SIGHUP"; "SIGHUP: configuration reloaded ({chain}); new requests use it");
                    }
                    Err(e) => {
                        let reason = e.as_str();
                        log::error!(event = "reload_failed", signal = "SIGHUP", reason; "SIGHUP: configuration not reloaded, keeping the old one: {e}")
                    }
                }
            }
            sig => {
                let signal = signal_name(sig);
                sd.send("STOPPING=1");
                shared.control.set_unready();
                if sig == libc::SIGTERM && !cfg.shutdown_delay.is_zero() {
                    log::info!(
                        event = "stopping", signal;
                        "SIGTERM received: /__failover/ready now says 503; serving on for --shutdown-delay ({:?})",
                        cfg.shutdown_delay
                    );
                    // A second SIGTERM or a SIGINT cuts the delay short.
                    let until = Instant::now() + cfg.shutdown_delay;
                    while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                        if matches!(wait_signal(&signals, left.min(SIGNAL_TICK)), Some(libc::SIGTERM | libc::SIGINT)) {
                            break;
                        }
                    }
                }
                log::info!(
                    event = "stop", signal;
                    "{signal} received: no longer accepting; finishing in-flight requests (up to {:?})",
                    cfg.shutdown_timeout
                );
                shared.control.stop();
                let deadline = Instant::now() + cfg.shutdown_timeout;
                while handles.iter().any(|h| !h.is_finished()) {
                    if Instant::now() >= deadline {
                        log::warn!("--shutdown-timeout reached with requests still in flight; exiting");
                        shared.notifier.finish(NOTIFY_AT_EXIT);
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                log::info!("all requests finished; exiting");
                shared.notifier.finish(NOTIFY_AT_EXIT);
                return Ok(());
            }
        }
    }
}

/// How often the signal loop looks at readiness and the systemd watchdog.
const SIGNAL_TICK: Duration = Duration::from_millis(250);

/// How long an exiting process waits for notifications still held or being sent.
const NOTIFY_AT_EXIT: Duration = Duration::from_secs(5);

/// The addresses the resolver keeps current.
fn names(cfg: &Config) -> Vec<Arc<Addrs>> {
    cfg.upstreams.iter().filter_map(|u| u.origin()).map(|o| o.addrs.clone()).collect()
}

/// The chain in one log phrase: `primary=URL backup=URL backup2=URL`.
fn describe_chain(cfg: &Config) -> String {
    let mut out = String::new();
    for up in &cfg.upstreams {
        let kind = match &up.kind {
            Kind::Origin(_) => "",
            Kind::Site(s) if s.status.is_some() => " (sorry page)",
            Kind::Site(_) => " (served from disk)",
        };
        out.push_str(&format!("{}{}={}{kind}", if out.is_empty() { "" } else { " " }, up.name, up.url));
    }
    out
}

/// Settings a running process cannot change (its sockets and threads exist already): the
/// old values stay, with a warning if the new configuration asked for others.
fn keep_fixed_settings(old: &Config, new: &mut Config) {
    let changed = |what: &str, differs: bool| {
        if differs {
            log::warn!("SIGHUP: {what} cannot change without a restart; keeping the old value");
        }
    };
    changed("listen", old.listen != new.listen);
    changed("listen_http", old.listen_http != new.listen_http);
    changed("workers", old.workers != new.workers);
    changed("admin_listen", old.admin_listen != new.admin_listen);
    new.admin_listen = old.admin_listen.clone();
    changed("tls_cert/tls_key (on or off)", old.tls.is_some() != new.tls.is_some());
    new.listen = old.listen;
    new.listen_http = old.listen_http;
    new.workers = old.workers;
    new.pin_cores = old.pin_cores;
    new.json_logs = old.json_logs;
    if new.tls.is_some() != old.tls.is_some() {
        new.tls = old.tls.clone();
    }
}

/// What already listens on `addr` (the same port on the same or a wildcard address), from
/// /proc: "pid 1234 (failover ...)" or "a socket of another user". None when nothing does
/// (or /proc cannot tell).
fn who_listens(addr: SocketAddr) -> Option<String> {
    const LISTEN: &str = "0A";
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st ... inode: fields 1, 3 and 9. No allocation per
            // line: the table also lists every connection of the machine.
            let mut f = line.split_whitespace();
            let (Some(local), Some(state), Some(inode)) = (f.nth(1), f.nth(1), f.nth(5)) else { continue };
            let Some((ip, port)) = local.split_once(':') else { continue };
            let wildcard = ip.bytes().all(|b| b == b'0');
            let same_ip = wildcard || addr.ip().is_unspecified() || hex_ip(ip) == Some(addr.ip());
            if state == LISTEN && u16::from_str_radix(port, 16) == Ok(addr.port()) && same_ip {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let me = std::process::id().to_string();
    for proc_dir in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = proc_dir.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str())) {
                let cmd = std::fs::read(proc_dir.path().join("cmdline")).unwrap_or_default();
                let cmd: String = String::from_utf8_lossy(&cmd).replace('\0', " ").trim().chars().take(120).collect();
                return Some(format!("pid {pid} ({cmd})"));
            }
        }
    }
    Some("a process this one cannot see".to_string())
}

/// An address as /proc/net/tcp writes it: the address's bytes read as native 32-bit
/// words, each printed in hex.
fn hex_ip(hex: &str) -> Option<std::net::IpAddr> {
    let mut bytes = [0u8; 16];
    let words = hex.len() / 8;
    if !(words == 1 || words == 4) || hex.len() % 8 != 0 {
        return None;
    }
    for i in 0..words {
        let word = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    Some(match words {
        1 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into(),
        _ => std::net::Ipv6Addr::from(bytes).into(),
    })
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and the threads it starts).
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame; a null old-mask pointer is allowed.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

/// Waits up to `limit` for one of the blocked signals; None when none came.
fn wait_signal(set: &libc::sigset_t, limit: Duration) -> Option<i32> {
    let ts = libc::timespec { tv_sec: limit.as_secs() as libc::time_t, tv_nsec: limit.subsec_nanos() as libc::c_long };
    // SAFETY: `set` was filled by `block_signals`; a null siginfo pointer is allowed and `ts`
    // is a valid timespec owned by this frame.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

/// Raises the soft open-file limit to the hard one: each proxied connection needs two
/// descriptors, and the usual soft limit of 1024 is far below what a proxy should hold.
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write `lim`, a valid rlimit owned by this frame.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Pins the calling thread to core `id` (modulo the cores this process may use).
#[cfg(target_os = "linux")]
fn pin_to_core(id: usize) {
    // SAFETY: `set` is a plain bitset owned by this frame; CPU_ZERO/CPU_SET only write inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let core = id % cores;
    // SAFETY: `core` is below CPU_SETSIZE for any machine `available_parallelism` reports.
    unsafe {
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(core, &mut set);
    }
    // SAFETY: pid 0 means the calling thread; the size and pointer describe `set`.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        log::warn!("worker={id} cannot pin to core {core}: {}", io::Error::last_os_error());
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_to_core(id: usize) {
    log::warn!("worker={id} --pin-cores is only supported on Linux");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_addresses() {
        // What this machine's kernel writes for the loopback addresses.
        let v4: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let v4_hex = format!("{:08X}", u32::from_ne_bytes([127, 0, 0, 1]));
        assert_eq!(hex_ip(&v4_hex), Some(v4));
        let v6: std::net::IpAddr = "::1".parse().unwrap();
        let v6_hex = format!("{}{:08X}", "0".repeat(24), u32::from_ne_bytes([0, 0, 0, 1]));
        assert_eq!(hex_ip(&v6_hex), Some(v6));
        assert_eq!(hex_ip("xyz"), None);
    }

    #[test]
    fn a_listener_already_on_the_port_is_named() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // This process is skipped as the owner, so the socket is reported unnamed.
        assert!(who_listens(addr).is_some(), "{addr} is listened on");
        drop(l);
        assert_eq!(who_listens(addr), None);
    }
}
