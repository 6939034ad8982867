//! Notifications, off the event loops. A worker that caused a routing [`Change`] pushes one
//! [`Switch`] into a bounded queue (never blocks; a full queue counts a drop), so each event
//! is sent once per process whatever the worker count. One sender thread per process turns
//! switches into events (with the incident they belong to), holds them for the coalescing
//! window so a flap becomes one message, and posts them to every sink that wants them, each
//! sink in order, retrying network errors, 408, 429 (after its `Retry-After`) and 5xx with
//! jittered backoff from 1 s to 60 s for up to 15 minutes.
//!
//! A slow or failing receiver delays only other messages, never a check or a switch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::health::{unix_ms, Cause, Change, Route};
use crate::metrics::{self, WorkerMetrics};
use crate::notify_text::{self, Context, Event, EventKind};
use crate::sinks::{Notify, Sink, MAX_SINKS};
use crate::webhook::Outcome;

/// Switches waiting for the sender thread.
const QUEUE: usize = 256;
/// One attempt's limit, and how long a message is tried in all.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const GIVE_UP_AFTER: Duration = Duration::from_secs(15 * 60);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// At exit, how long held messages may take in all (the process waits a little longer).
const EXIT_BUDGET: Duration = Duration::from_millis(4500);
/// A sustained flap widens the window up to this, so it stays one message per window.
const COALESCE_MAX: Duration = Duration::from_secs(300);

/// What happened, as the worker that caused it saw it (names as its configuration had them).
pub struct Switch {
    at_ms: u64,
    from: Route,
    to: Route,
    upstream: usize,
    upstream_name: String,
    upstream_url: String,
    from_name: String,
    from_url: String,
    to_name: String,
    to_url: String,
    reason: String,
    cause: Cause,
    notify: Arc<Notify>,
}

impl Switch {
    pub fn new(cfg: &Config, c: &Change) -> Switch {
        let name = |r: Route| if r.all_down() { "none".to_string() } else { cfg.name(r.active).to_string() };
        let url = |i: usize| cfg.upstreams.get(i).map_or(String::new(), |u| u.url.clone());
        let url_of = |r: Route| if r.all_down() { String::new() } else { url(r.active) };
        Switch {
            at_ms: unix_ms(),
            from: c.from,
            to: c.to,
            upstream: c.upstream,
            upstream_name: cfg.name(c.upstream).to_string(),
            upstream_url: url(c.upstream),
            from_name: name(c.from),
            from_url: url_of(c.from),
            to_name: name(c.to),
            to_url: url_of(c.to),
            reason: c.reason.clone(),
            cause: c.cause,
            notify: cfg.notify.clone(),
        }
    }
}

/// Delivery counts per sink slot, for `failover_notifications_total`.
#[derive(Default)]
pub struct NotifyStats {
    /// [sent, retried, failed] per sink position.
    pub sinks: [[AtomicU64; 3]; MAX_SINKS],
    pub dropped: AtomicU64,
}

/// `result` label values, in the order of [`NotifyStats::sinks`].
pub const RESULTS: [&str; 3] = ["sent", "retry", "failed"];

impl NotifyStats {
    fn count(&self, sink: usize, result: usize) {
        if let Some(slot) = self.sinks.get(sink) {
            slot[result].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The workers' end: pushes switches to the sender thread.
pub struct Notifier {
    tx: Mutex<Option<SyncSender<Switch>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<NotifyStats>,
}

impl Notifier {
    /// Starts the sender thread. `active`/`all_down` is where traffic is at start (a proxy
    /// that starts on a backup is in an incident already).
    pub fn start(
        cfg: &Config,
        start: Route,
        metrics: Arc<Vec<WorkerMetrics>>,
        stats: Arc<NotifyStats>,
    ) -> std::io::Result<Notifier> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let mut sender = Sender::new(cfg.notify.clone(), start, metrics, stats.clone());
        let thread = std::thread::Builder::new().name("notify".into()).spawn(move || sender.run(rx))?;
        Ok(Notifier { tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)), stats })
    }

    /// Queues the switch a change made; never blocks.
    pub fn push(&self, cfg: &Config, c: &Change) {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else { return };
        match tx.try_send(Switch::new(cfg, c)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                log::warn!(event = "notification_dropped"; "notification queue full: an event was dropped");
            }
        }
    }

    /// At exit: sends what is held and waits for the sender for at most `within`.
    pub fn finish(&self, within: Duration) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        let deadline = Instant::now() + within;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

/// The incident traffic is in (off the primary, or everything down).
#[derive(Debug, Clone)]
struct Incident {
    id: String,
    started_ms: u64,
    /// Retries and rescues counted when it started.
    counters: (u64, u64),
}

/// Turns switches into events and keeps the incident they belong to.
pub struct Tracker {
    open: Option<Incident>,
    /// The last incident that ended, and when: one that starts again inside the coalescing
    /// window is the same incident (a flap is one page, not two).
    closed: Option<(Incident, u64)>,
}

impl Tracker {
    pub fn new(start: Route, at_ms: u64) -> Tracker {
        let open = (start.all_down() || start.active != 0).then(|| Incident {
            id: at_ms.to_string(),
            started_ms: at_ms,
            counters: (0, 0),
        });
        Tracker { open, closed: None }
    }

    /// The event a switch makes, if any; `counters` are the retries and rescues so far.
    pub fn apply(&mut self, s: &Switch, counters: (u64, u64), window: Duration) -> Option<Event> {
        let (was_down, is_down) = (s.from.all_down(), s.to.all_down());
        let kind = if s.cause != Cause::Health {
            // An operator's doing: news, not an incident.
            EventKind::Override
        } else if is_down && !was_down {
            EventKind::AllDown
        } else if was_down && !is_down {
            EventKind::AllDownResolved
        } else if s.from.active != s.to.active {
            if s.to.active == 0 {
                EventKind::Recovered
            } else {
                EventKind::Failover
            }
        } else if !is_down && s.upstream > s.to.active && s.from.is_healthy(s.upstream) && !s.to.is_healthy(s.upstream)
        {
            EventKind::BackupUnhealthy
        } else {
            return None;
        };
        let mut e = Event {
            kind,
            at_ms: s.at_ms,
            from: s.from_name.clone(),
            from_url: s.from_url.clone(),
            to: s.to_name.clone(),
            to_url: s.to_url.clone(),
            reason: s.reason.clone(),
            incident_id: String::new(),
            started_ms: 0,
            ended_ms: None,
            retried: 0,
            rescued: 0,
            switches: 1,
            path: String::new(),
            window_ms: 0,
            flap_kinds: 0,
        };
        if kind == EventKind::Override {
            return Some(e);
        }
        if kind == EventKind::BackupUnhealthy {
            e.from = s.upstream_name.clone();
            e.from_url = s.upstream_url.clone();
            return Some(e);
        }
        let serving_primary = !is_down && s.to.active == 0;
        if !serving_primary && self.open.is_none() {
            self.open = Some(match self.closed.take() {
                Some((inc, ended)) if s.at_ms.saturating_sub(ended) <= window.as_millis() as u64 => inc,
                _ => Incident { id: s.at_ms.to_string(), started_ms: s.at_ms, counters },
            });
        }
        let incident = if serving_primary { self.open.take() } else { self.open.clone() };
        if let Some(inc) = incident {
            e.incident_id.clone_from(&inc.id);
            e.started_ms = inc.started_ms;
            e.retried = counters.0.saturating_sub(inc.counters.0);
            e.rescued = counters.1.saturating_sub(inc.counters.1);
            if serving_primary {
                e.ended_ms = Some(s.at_ms);
                self.closed = Some((inc, s.at_ms));
            }
        }
        Some(e)
    }
}

/// The events of one coalescing window as the messages to send: one switch as it is,
/// several as one `flapping` message; a backup's failures once per backup.
pub fn coalesce(batch: Vec<Event>, window: Duration) -> Vec<Event> {
    let (switches, others): (Vec<Event>, Vec<Event>) = batch.into_iter().partition(|e| e.kind.is_switch());
    let mut out = Vec::new();
    match switches.len() {
        0 => {}
        1 => out.extend(switches),
        n => {
            let (first, last) = (&switches[0], &switches[n - 1]);
            let mut path = first.from.clone();
            for e in &switches {
                path.push_str(" -> ");
                path.push_str(&e.to);
            }
            let mut e = last.clone();
            e.kind = EventKind::Flapping;
            e.flap_kinds = switches.iter().fold(0, |m, s| m | s.kind.bit());
            e.from.clone_from(&first.from);
            e.from_url.clone_from(&first.from_url);
            e.switches = n as u32;
            e.path = path;
            e.window_ms = window.as_millis() as u64;
            out.push(e);
        }
    }
    for e in others {
        // A backup failing again within the window is said once; operator actions each.
        if e.kind != EventKind::BackupUnhealthy || !out.iter().any(|o| o.kind == e.kind && o.from == e.from) {
            out.push(e);
        }
    }
    out
}

/// A message on its way to one sink.
struct Delivery {
    sink: usize,
    target: Sink,
    body: String,
    kind: EventKind,
    first: Instant,
    attempts: u32,
    next: Instant,
}

struct Sender {
    notify: Arc<Notify>,
    tracker: Tracker,
    metrics: Arc<Vec<WorkerMetrics>>,
    stats: Arc<NotifyStats>,
    batch: Vec<Event>,
    /// When the held batch is sent, and the window it was held for.
    batch_until: Option<Instant>,
    window: Duration,
    queue: VecDeque<Delivery>,
    rng: u64,
}

impl Sender {
    fn new(notify: Arc<Notify>, start: Route, metrics: Arc<Vec<WorkerMetrics>>, stats: Arc<NotifyStats>) -> Sender {
        let window = notify.coalesce;
        Sender {
            tracker: Tracker::new(start, unix_ms()),
            notify,
            metrics,
            stats,
            batch: Vec::new(),
            batch_until: None,
            window,
            queue: VecDeque::new(),
            rng: unix_ms() | 1,
        }
    }

    fn run(&mut self, rx: Receiver<Switch>) {
        let mut open = true;
        while open || !self.batch.is_empty() || !self.queue.is_empty() {
            let now = Instant::now();
            let wake = self.batch_until.into_iter().chain(self.queue.iter().map(|d| d.next)).min();
            if open {
                let got = match wake {
                    Some(at) => rx.recv_timeout(at.saturating_duration_since(now)),
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                match got {
                    Ok(s) => self.take(s),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        // Exiting: send what is held now, one attempt each.
                        open = false;
                        self.batch_until = Some(Instant::now());
                    }
                }
            }
            if self.batch_until.is_some_and(|at| at <= Instant::now()) {
                self.flush_batch();
            }
            if open {
                self.deliver_due();
            } else {
                self.deliver_at_exit();
            }
        }
    }

    fn take(&mut self, s: Switch) {
        self.notify = s.notify.clone();
        let counters = metrics::retries_and_rescues(&self.metrics);
        let Some(event) = self.tracker.apply(&s, counters, self.window) else { return };
        log::debug!("notification event {} ({})", event.kind.name(), event.reason);
        self.batch.push(event);
        if self.batch_until.is_none() {
            self.batch_until = Some(Instant::now() + self.window);
        }
    }

    fn flush_batch(&mut self) {
        let window = self.window;
        self.batch_until = None;
        let batch = std::mem::take(&mut self.batch);
        let switches = batch.iter().filter(|e| e.kind.is_switch()).count();
        // A flap widens the next window (up to 5 min) so it stays one message per window;
        // a quiet window brings it back.
        self.window = if switches > 1 { (window * 2).min(COALESCE_MAX) } else { self.notify.coalesce };
        for event in coalesce(batch, window) {
            self.enqueue(&event);
        }
    }

    fn enqueue(&mut self, e: &Event) {
        let notify = self.notify.clone();
        let cx = Context { instance: &notify.instance, routing_key: &notify.pagerduty_key };
        let now = Instant::now();
        for (i, sink) in notify.sinks.iter().enumerate().filter(|(_, s)| s.wants(e)) {
            let Some(body) = notify_text::body(sink.format, e, &cx) else { continue };
            self.queue.push_back(Delivery {
                sink: i,
                target: sink.clone(),
                body,
                kind: e.kind,
                first: now,
                attempts: 0,
                next: now,
            });
        }
    }

    /// The process is exiting: every held message gets one attempt, the sinks side by side
    /// (a slow one must not cost the others theirs), all within [`EXIT_BUDGET`].
    fn deliver_at_exit(&mut self) {
        let deadline = Instant::now() + EXIT_BUDGET;
        let queue = std::mem::take(&mut self.queue);
        let mut urls: Vec<&str> = Vec::new();
        for d in &queue {
            if !urls.contains(&d.target.url.as_str()) {
                urls.push(&d.target.url);
            }
        }
        let stats = &self.stats;
        std::thread::scope(|scope| {
            for url in urls {
                let queue = &queue;
                scope.spawn(move || {
                    for d in queue.iter().filter(|d| d.target.url == url) {
                        let (label, kind) = (d.target.label(), d.kind.name());
                        let left = deadline.saturating_duration_since(Instant::now());
                        let outcome = if left.is_zero() {
                            Outcome::Failed("no time left".into())
                        } else {
                            d.target.target.post(&d.body, left.min(ATTEMPT_TIMEOUT))
                        };
                        match outcome {
                            Outcome::Sent(status) => {
                                stats.count(d.sink, 0);
                                log::info!(event = "notified", sink = label.as_str(), kind; "notification {kind} sent to {label} (HTTP {status})");
                            }
                            Outcome::Retry(why, _) | Outcome::Failed(why) => {
                                stats.count(d.sink, 2);
                                log::error!(event = "notify_failed", sink = label.as_str(), kind, reason = why.as_str(); "notification {kind} to {label} not sent before exit ({why})");
                            }
                        }
                    }
                });
            }
        });
    }

    /// Makes every attempt that is due, oldest first and in order per sink.
    fn deliver_due(&mut self) {
        let mut busy: Vec<String> = Vec::new();
        let mut i = 0;
        while i < self.queue.len() {
            let d = &self.queue[i];
            if busy.contains(&d.target.url) || d.next > Instant::now() {
                busy.push(d.target.url.clone());
                i += 1;
                continue;
            }
            let outcome = d.target.target.post(&d.body, ATTEMPT_TIMEOUT);
            let d = &mut self.queue[i];
            d.attempts += 1;
            let (sink, url, kind) = (d.sink, d.target.label(), d.kind.name());
            match outcome {
                Outcome::Sent(status) => {
                    self.stats.count(sink, 0);
                    log::info!(event = "notified", sink = url.as_str(), kind; "notification {kind} sent to {url} (HTTP {status})");
                    self.queue.remove(i);
                }
                Outcome::Retry(why, after) if d.first.elapsed() < GIVE_UP_AFTER => {
                    self.stats.count(sink, 1);
                    // A receiver's `Retry-After: 0` still waits the shortest backoff.
                    let wait = after.map_or_else(|| backoff(d.attempts, &mut self.rng), |a| a.max(BACKOFF_MIN));
                    d.next = Instant::now() + wait;
                    log::warn!(event = "notify_retry", sink = url.as_str(), kind, reason = why.as_str(); "notification {kind} to {url} failed ({why}); trying again in {wait:?}");
                    busy.push(d.target.url.clone());
                    i += 1;
                }
                Outcome::Retry(why, _) | Outcome::Failed(why) => {
                    self.stats.count(sink, 2);
                    log::error!(event = "notify_failed", sink = url.as_str(), kind, reason = why.as_str(); "notification {kind} to {url} failed ({why}); giving up");
                    self.queue.remove(i);
                }
            }
        }
    }
}

/// Full-jitter exponential backoff: a random wait up to 1 s × 2^(attempt-1), at least 1 s,
/// at most 60 s.
fn backoff(attempt: u32, rng: &mut u64) -> Duration {
    let cap = BACKOFF_MIN.saturating_mul(1 << attempt.saturating_sub(1).min(6)).min(BACKOFF_MAX);
    // xorshift64: jitter needs no quality, only spread.
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let ms = cap.as_millis() as u64;
    Duration::from_millis((*rng % ms.max(1)).max(BACKOFF_MIN.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(active: usize, healthy: u32) -> Route {
        Route::up(active, healthy)
    }

    fn switch(at_ms: u64, from: Route, to: Route, upstream: usize) -> Switch {
        let name = |r: Route| {
            if r.all_down() {
                "none".to_string()
            } else {
                ["primary", "backup", "backup2"][r.active].to_string()
            }
        };
        Switch {
            at_ms,
            from,
            to,
            upstream,
            upstream_name: ["primary", "backup", "backup2"][upstream].into(),
            upstream_url: format!("http://u{upstream}"),
            from_name: name(from),
            from_url: String::new(),
            to_name: name(to),
            to_url: String::new(),
            reason: format!("r{at_ms}"),
            cause: Cause::Health,
            notify: Arc::new(Notify::default()),
        }
    }

    #[test]
    fn switches_become_events_within_incidents() {
        let w = Duration::from_secs(10);
        let mut t = Tracker::new(route(0, 0b111), 0);
        // A backup failing while the primary serves: news, no incident.
        let e = t.apply(&switch(1_000, route(0, 0b111), route(0, 0b101), 1), (0, 0), w).unwrap();
        assert_eq!(
            (e.kind, e.from.as_str(), e.to.as_str(), e.incident_id.as_str()),
            (EventKind::BackupUnhealthy, "backup", "primary", "")
        );
        // The backup coming back moves nothing and says nothing.
        assert!(t.apply(&switch(2_000, route(0, 0b101), route(0, 0b111), 1), (0, 0), w).is_none());
        let e = t.apply(&switch(100_000, route(0, 0b111), route(1, 0b110), 0), (5, 1), w).unwrap();
        assert_eq!((e.kind, e.incident_id.as_str(), e.firing()), (EventKind::Failover, "100000", true));
        let e = t.apply(&switch(110_000, route(1, 0b110), route(1, 0b000), 1), (9, 1), w).unwrap();
        assert_eq!(
            (e.kind, e.to.as_str(), e.incident_id.as_str(), e.retried),
            (EventKind::AllDown, "none", "100000", 4)
        );
        let e = t.apply(&switch(120_000, route(1, 0b000), route(2, 0b100), 2), (9, 1), w).unwrap();
        assert_eq!((e.kind, e.firing()), (EventKind::AllDownResolved, true), "on backup2: still an incident");
        let e = t.apply(&switch(160_000, route(2, 0b100), route(0, 0b101), 0), (12, 3), w).unwrap();
        assert_eq!((e.kind, e.ended_ms, e.duration_ms()), (EventKind::Recovered, Some(160_000), 60_000));
        assert_eq!((e.retried, e.rescued, e.incident_id.as_str()), (7, 2, "100000"));
        // Down again within the window: the same incident (one page, not two).
        let e = t.apply(&switch(165_000, route(0, 0b101), route(2, 0b100), 0), (12, 3), w).unwrap();
        assert_eq!((e.incident_id.as_str(), e.started_ms), ("100000", 100_000));
        let e = t.apply(&switch(170_000, route(2, 0b100), route(0, 0b101), 0), (12, 3), w).unwrap();
        assert!(!e.firing());
        let e = t.apply(&switch(500_000, route(0, 0b101), route(2, 0b100), 0), (12, 3), w).unwrap();
        assert_eq!(e.incident_id, "500000", "later: a new incident");
    }

    #[test]
    fn a_proxy_that_starts_on_a_backup_is_in_an_incident() {
        let mut t = Tracker::new(route(1, 0b10), 7);
        let e = t.apply(&switch(1_000, route(1, 0b10), route(0, 0b11), 0), (0, 0), Duration::ZERO).unwrap();
        assert_eq!((e.kind, e.incident_id.as_str(), e.ended_ms), (EventKind::Recovered, "7", Some(1_000)));
    }

    #[test]
    fn a_window_of_switches_is_one_flapping_message() {
        let w = Duration::from_secs(10);
        let mut t = Tracker::new(route(0, 0b11), 0);
        let mut batch = Vec::new();
        for (at, from, to, up) in [
            (1, route(0, 0b11), route(1, 0b10), 0),
            (2, route(1, 0b10), route(0, 0b11), 0),
            (3, route(0, 0b11), route(1, 0b10), 0),
        ] {
            batch.extend(t.apply(&switch(at, from, to, up), (0, 0), w));
        }
        batch.extend(t.apply(&switch(4, route(1, 0b10), route(1, 0b00), 1), (0, 0), w));
        let out = coalesce(batch, w);
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert_eq!((e.kind, e.switches, e.to.as_str(), e.firing()), (EventKind::Flapping, 4, "none", true));
        assert_eq!(e.path, "primary -> backup -> primary -> backup -> none");
        let one = coalesce(vec![t.apply(&switch(9, route(1, 0b00), route(0, 0b01), 0), (0, 0), w).unwrap()], w);
        assert_eq!(one[0].kind, EventKind::AllDownResolved, "one switch is sent as itself");
    }

    #[test]
    fn backoff_is_jittered_between_1s_and_60s() {
        let mut rng = 12345;
        for attempt in 1..40 {
            let d = backoff(attempt, &mut rng);
            assert!(d >= BACKOFF_MIN && d <= BACKOFF_MAX, "{attempt}: {d:?}");
        }
        let spread: std::collections::HashSet<_> = (0..20).map(|_| backoff(10, &mut rng)).collect();
        assert!(spread.len() > 10);
    }
}
