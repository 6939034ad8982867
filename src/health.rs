//! Health: probes as ordinary connections in the loop, consecutive-result counters, and
//! the decision to route to the primary or the backup.
//!
//! Every worker runs probes on its own turn of a shared schedule (tick k belongs to worker
//! k mod N), so each upstream is probed once per interval whatever the worker count. The
//! results are counted once, in the shared [`Book`], which is locked only when a probe
//! ends or the state is read by `/__failover/state` — never per request. A decision that
//! changes routing bumps an epoch and wakes every worker, which copies it into its own
//! field; the data path reads only that field.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::buffer::Buf;
use crate::config::Config;
use crate::readiness::{Readiness, W};
use crate::transport::{Conn, SockResult};
use crate::upstream::Target;

/// Consecutive-result counter of one upstream (after Pingora's `observe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub healthy: bool,
    /// Consecutive failures while healthy.
    pub fails: u32,
    /// Consecutive successes while unhealthy.
    pub oks: u32,
    /// Why the last probe failed ("" if it has not).
    pub last_error: String,
}

impl Health {
    pub fn new() -> Health {
        Health { healthy: true, fails: 0, oks: 0, last_error: String::new() }
    }

    /// Counts one probe result; returns true when it flips `healthy`.
    pub fn observe(&mut self, ok: bool, fail_threshold: u32, recover_threshold: u32) -> bool {
        match (self.healthy, ok) {
            (true, true) => self.fails = 0,
            (false, false) => self.oks = 0,
            (true, false) => {
                self.fails += 1;
                if self.fails >= fail_threshold {
                    self.healthy = false;
                    self.fails = 0;
                    return true;
                }
            }
            (false, true) => {
                self.oks += 1;
                if self.oks >= recover_threshold {
                    self.healthy = true;
                    self.oks = 0;
                    return true;
                }
            }
        }
        false
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

/// The shared record of both upstreams and the routing decision.
#[derive(Debug, Clone)]
pub struct Book {
    pub primary: Health,
    pub backup: Health,
    pub on_backup: bool,
    /// When the current target became active (unix seconds).
    pub since_unix: u64,
    /// When traffic last moved to the backup (for `--min-backup-time`).
    pub backup_since: Instant,
    /// Why the last transition happened.
    pub reason: String,
    /// Recent transitions as (epoch, reason, route after it), so a worker that wakes late
    /// still logs each one.
    pub history: Vec<(u64, String, Route)>,
}

/// What workers copy into their own state when the epoch moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub active: Target,
    /// Neither upstream is healthy: answer at once instead of trying.
    pub both_down: bool,
}

/// Health shared by all workers of a process.
pub struct Shared {
    book: Mutex<Book>,
    epoch: AtomicU64,
    /// Requests re-sent to the backup after the primary failed them.
    pub retries: AtomicU64,
    /// Requests moved to the backup, while waiting on the primary, when traffic switched.
    pub rescues: AtomicU64,
    /// Extra (confirmation and fast) probes are rationed across workers: the earliest time,
    /// in ms after `base`, the next one may start, per target.
    extra_probe_at: [AtomicU64; 2],
    base: Instant,
    /// SIGTERM/SIGINT: workers stop accepting and drain.
    stopping: std::sync::atomic::AtomicBool,
    /// Client connections open in the process (for `--max-connections`).
    pub connections: std::sync::atomic::AtomicUsize,
    /// The configuration published by SIGHUP, and how many times it changed.
    config: Mutex<Option<Arc<Config>>>,
    config_epoch: AtomicU64,
    wakers: Mutex<Vec<Arc<mio::Waker>>>,
}

/// Transitions kept for workers that wake late.
const HISTORY: usize = 16;

fn route_of(book: &Book) -> Route {
    Route {
        active: if book.on_backup { Target::Backup } else { Target::Primary },
        both_down: !book.primary.healthy && !book.backup.healthy,
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            book: Mutex::new(Book {
                primary: Health::new(),
                backup: Health::new(),
                on_backup: false,
                since_unix: unix_now(),
                backup_since: Instant::now(),
                reason: String::new(),
                history: Vec::new(),
            }),
            epoch: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            rescues: AtomicU64::new(0),
            extra_probe_at: [AtomicU64::new(0), AtomicU64::new(0)],
            base: Instant::now(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            connections: std::sync::atomic::AtomicUsize::new(0),
            config: Mutex::new(None),
            config_epoch: AtomicU64::new(0),
            wakers: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        // A worker that panicked while holding the lock left counters, not broken invariants.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_waker(&self, w: Arc<mio::Waker>) {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner()).push(w);
    }

    /// Hands a reloaded configuration to every worker.
    pub fn publish_config(&self, cfg: Arc<Config>) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = Some(cfg);
        self.config_epoch.fetch_add(1, Ordering::AcqRel);
        self.wake_all();
    }

    /// The newest reloaded configuration if it is newer than `seen` (with its epoch).
    pub fn config_since(&self, seen: u64) -> Option<(u64, Arc<Config>)> {
        let epoch = self.config_epoch.load(Ordering::Acquire);
        if epoch == seen {
            return None;
        }
        let cfg = self.config.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        Some((epoch, cfg))
    }

    /// Asks every worker to stop accepting and drain.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake_all();
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn wake_all(&self) {
        for w in self.wakers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Err(e) = w.wake() {
                log::error!("cannot wake a worker: {e}");
            }
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Book {
        self.lock().clone()
    }

    /// The current route and epoch.
    pub fn route(&self) -> (u64, Route) {
        let book = self.lock();
        (self.epoch(), route_of(&book))
    }

    /// Transitions after epoch `since`, oldest first.
    pub fn transitions_since(&self, since: u64) -> Vec<(u64, String, Route)> {
        self.lock().history.iter().filter(|(e, _, _)| *e > since).cloned().collect()
    }

    /// Claims the right to start an extra probe of `target` now: at most one per `every`
    /// across all workers, so the probe rate does not grow with the worker count.
    pub fn claim_extra_probe(&self, target: Target, now: Instant, every: std::time::Duration) -> bool {
        let now_ms = now.saturating_duration_since(self.base).as_millis() as u64;
        let slot = &self.extra_probe_at[target.index()];
        let at = slot.load(Ordering::Acquire);
        now_ms >= at
            && slot.compare_exchange(at, now_ms + every.as_millis() as u64, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Whether the primary has failed recently without being declared down yet: probes
    /// then run at the fast interval.
    pub fn primary_suspect(&self) -> bool {
        let b = self.lock();
        b.primary.healthy && b.primary.fails > 0
    }

    /// Counts a probe result. When it changes what workers must do, bumps the epoch and
    /// wakes every worker (the caller's own loop included; it checks the epoch anyway).
    pub fn report(&self, cfg: &Config, target: Target, ok: bool, why: &str) {
        let changed = {
            let mut book = self.lock();
            let h = match target {
                Target::Primary => &mut book.primary,
                Target::Backup => &mut book.backup,
            };
            if !ok {
                h.last_error.clear();
                h.last_error.push_str(why);
            }
            let flipped = h.observe(ok, cfg.fail_threshold, cfg.recover_threshold);
            let mut reason = if !flipped {
                String::new()
            } else if h.healthy {
                format!("{} healthy again ({}/{})", target.name(), cfg.recover_threshold, cfg.recover_threshold)
            } else {
                format!("{} unhealthy: {} ({}/{})", target.name(), why, cfg.fail_threshold, cfg.fail_threshold)
            };
            // Route to the backup while the primary is unhealthy, and keep it there for at
            // least --min-backup-time once it moved.
            let held = book.on_backup && book.backup_since.elapsed() < cfg.min_backup_time;
            let on_backup = !book.primary.healthy || held;
            if on_backup != book.on_backup {
                book.on_backup = on_backup;
                book.since_unix = unix_now();
                if on_backup {
                    book.backup_since = Instant::now();
                } else if !flipped {
                    reason = format!("primary healthy and --min-backup-time ({:?}) elapsed", cfg.min_backup_time);
                }
            } else if flipped && held && target == Target::Primary {
                reason.push_str(&format!(", held on backup for --min-backup-time ({:?})", cfg.min_backup_time));
            }
            let changed = flipped || !reason.is_empty();
            if changed {
                let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
                let route = route_of(&book);
                if book.history.len() == HISTORY {
                    book.history.remove(0);
                }
                book.history.push((epoch, reason.clone(), route));
                book.reason = reason;
            }
            changed
        };
        if changed {
            self.wake_all();
        }
    }

    /// The `/__failover/state` document.
    pub fn state_json(&self, cfg: &Config) -> String {
        let b = self.snapshot();
        let counters = if b.on_backup { (0, b.primary.oks) } else { (b.primary.fails, 0) };
        format!(
            concat!(
                "{{\"on_backup\":{},\"since_unix\":{},\"primary\":{},\"backup\":{},",
                "\"primary_healthy\":{},\"backup_healthy\":{},\"fail_count\":{},\"recover_count\":{},",
                "\"primary_last_error\":{},\"backup_last_error\":{},\"last_transition\":{},",
                "\"retries\":{},\"rescues\":{}}}\n"
            ),
            b.on_backup,
            b.since_unix,
            json_str(&cfg.primary.url),
            json_str(&cfg.backup.url),
            b.primary.healthy,
            b.backup.healthy,
            counters.0,
            counters.1,
            json_str(&b.primary.last_error),
            json_str(&b.backup.last_error),
            json_str(&b.reason),
            self.retries.load(Ordering::Relaxed),
            self.rescues.load(Ordering::Relaxed),
        )
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One health check: connect, send `GET <path>`, read the status line, close.
pub struct Probe {
    pub conn: Conn,
    pub ready: Readiness,
    pub target: Target,
    pub gen: u32,
    pub deadline: Instant,
    connected: bool,
    sent: usize,
    got: Buf,
}

/// How a probe ended.
pub enum Outcome {
    Pending,
    Healthy,
    Unhealthy(String),
}

impl Probe {
    pub fn new(conn: Conn, target: Target, gen: u32, deadline: Instant) -> Probe {
        Probe { conn, ready: Readiness::new(), target, gen, deadline, connected: false, sent: 0, got: Buf::small(16) }
    }

    /// Moves the probe along; `request` is the probe's request bytes.
    pub fn drive(&mut self, request: &[u8]) -> Outcome {
        if !self.connected {
            if self.ready.event & W == 0 {
                return Outcome::Pending;
            }
            match self.conn.sock.take_error() {
                Ok(Some(e)) | Err(e) => return Outcome::Unhealthy(connect_error(&e)),
                Ok(None) => {}
            }
            match self.conn.sock.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    self.ready.event &= !W;
                    return Outcome::Pending;
                }
                Err(e) => return Outcome::Unhealthy(connect_error(&e)),
            }
        }
        if self.sent < request.len() && self.ready.can_write() {
            let (n, res) = self.conn.write_two(&mut self.ready, &request[self.sent..], &[]);
            self.sent += n;
            if let SockResult::Error(k) = res {
                return Outcome::Unhealthy(self.failure("send failed", k));
            }
        }
        if self.conn.wants_flush() && self.ready.can_write() {
            if let SockResult::Error(k) = self.conn.flush(&mut self.ready) {
                return Outcome::Unhealthy(self.failure("send failed", k));
            }
        }
        if !self.ready.can_read() {
            return Outcome::Pending;
        }
        let (_, res) = self.conn.read_into(&mut self.ready, &mut self.got);
        match res {
            SockResult::Error(k) => Outcome::Unhealthy(self.failure("read failed", k)),
            SockResult::WouldBlock if self.got.len() < 12 => Outcome::Pending,
            _ => judge(self.got.bytes()),
        }
    }

    fn failure(&self, what: &str, k: io::ErrorKind) -> String {
        match self.conn.tls_error() {
            Some(tls) => format!("TLS handshake failed: {tls}"),
            None => format!("{what}: {}", kind_text(k)),
        }
    }
}

/// Judges the first bytes of a probe response: 2xx and 3xx are healthy.
pub fn judge(got: &[u8]) -> Outcome {
    if got.is_empty() {
        return Outcome::Unhealthy("closed without a response".into());
    }
    let status = (got.len() >= 12 && got.starts_with(b"HTTP/1.") && got[8] == b' ')
        .then(|| std::str::from_utf8(&got[9..12]).ok()?.parse::<u16>().ok())
        .flatten();
    match status {
        Some(s @ 200..=399) => {
            let _ = s;
            Outcome::Healthy
        }
        Some(s) => Outcome::Unhealthy(format!("status {s}")),
        None => Outcome::Unhealthy("invalid response".into()),
    }
}

pub fn connect_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connect refused".into(),
        k => format!("connect failed: {}", kind_text(k)),
    }
}

pub fn kind_text(k: io::ErrorKind) -> String {
    match k {
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::BrokenPipe => "broken pipe".into(),
        io::ErrorKind::TimedOut => "timed out".into(),
        k => format!("{k}").to_lowercase(),
    }
}

/// The probe request for an upstream.
pub fn probe_request(cfg: &Config, target: Target) -> Vec<u8> {
    let up = match target {
        Target::Primary => &cfg.primary,
        Target::Backup => &cfg.backup,
    };
    format!(
        "GET {}{} HTTP/1.1\r\nHost: {}\r\nUser-Agent: failover-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        up.prefix, cfg.health_path, up.authority
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_flips_at_thresholds_and_resets() {
        let mut h = Health::new();
        // (observation, expect flip, healthy after)
        let steps = [
            (false, false, true),
            (true, false, true), // an agreeing result resets the failure count
            (false, false, true),
            (false, false, true),
            (false, true, false), // third consecutive failure flips
            (true, false, false),
            (false, false, false), // resets the recovery count
            (true, false, false),
            (true, true, true), // second consecutive success flips back
        ];
        for (i, (ok, flip, healthy)) in steps.into_iter().enumerate() {
            assert_eq!(h.observe(ok, 3, 2), flip, "step {i}");
            assert_eq!(h.healthy, healthy, "step {i}");
        }
    }

    #[test]
    fn judges_status_lines() {
        let healthy = |b: &[u8]| matches!(judge(b), Outcome::Healthy);
        assert!(healthy(b"HTTP/1.1 200 OK\r\n"));
        assert!(healthy(b"HTTP/1.0 301 Moved"));
        assert!(healthy(b"HTTP/1.1 204 No"));
        assert!(!healthy(b"HTTP/1.1 404 Not"));
        assert!(!healthy(b"HTTP/1.1 503 Unavailable"));
        assert!(!healthy(b"HTTP/1.1 199 x"));
        assert!(!healthy(b""));
        assert!(!healthy(b"SSH-2.0-OpenSSH"));
        assert!(!healthy(b"HTTP/1.1 2"));
    }

    #[test]
    fn reports_change_route_and_state() {
        let cfg = crate::config::Config::from_flags(clap::Parser::parse_from([
            "failover",
            "--primary=http://127.0.0.1:1",
            "--backup=http://127.0.0.1:2",
            "--fail-threshold=2",
        ]))
        .unwrap();
        let s = Shared::new();
        assert_eq!(s.route().1, Route { active: Target::Primary, both_down: false });
        s.report(&cfg, Target::Primary, false, "connect refused");
        assert_eq!(s.epoch(), 0);
        s.report(&cfg, Target::Primary, false, "connect refused");
        assert_eq!(s.epoch(), 1);
        let (_, route) = s.route();
        assert_eq!(route.active, Target::Backup);
        let log = s.transitions_since(0);
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].1, "primary unhealthy: connect refused (2/2)");
        let json = s.state_json(&cfg);
        assert!(json.contains("\"on_backup\":true"), "{json}");
        assert!(json.contains("\"primary\":\"http://127.0.0.1:1\""), "{json}");
        s.report(&cfg, Target::Backup, false, "status 503");
        s.report(&cfg, Target::Backup, false, "status 503");
        assert!(s.route().1.both_down);
    }
}
