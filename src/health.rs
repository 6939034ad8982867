//! Health: the consecutive-result counter of each upstream, and the routing decision that
//! follows from them — new requests go to the first healthy upstream of the chain.
//!
//! Results are counted once per process, in the [`Board`] every worker shares, locked only
//! when a check ends or the state is read — never per request. A count that changes what
//! workers must do returns one [`Change`] to the worker that reported it (so it is logged
//! and acted on exactly once) and bumps an epoch; every worker then copies the new
//! [`Route`] into its own field, which is all the data path reads. This file never touches
//! a socket and never wakes a thread: that is the caller's.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::holds::{Hold, Holds};
use crate::httpdate::Rfc3339;
use crate::upstream::{Upstream, MAX_UPSTREAMS};

/// Consecutive-result counter of one upstream (after Pingora's `observe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub healthy: bool,
    /// Consecutive failures while healthy.
    pub fails: u32,
    /// Consecutive successes while unhealthy.
    pub oks: u32,
    /// Why the last check failed ("" if none has).
    pub last_error: String,
    /// How long the last check took, and when it ended (unix seconds; 0: none yet).
    pub last_check_ms: u64,
    pub last_check_unix: u64,
    /// The last [`CHECKS_KEPT`] check results, oldest first (for the status page).
    pub recent: VecDeque<Check>,
    /// A check has ended (for readiness: the first round is done when every upstream has one).
    pub checked: bool,
}

/// How many check results per upstream, and how many transitions, the state keeps.
pub const CHECKS_KEPT: usize = 100;
pub const TRANSITIONS_KEPT: usize = 50;

/// One health-check result as the state shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// When it ended (unix milliseconds).
    pub at_ms: u64,
    pub ok: bool,
    pub took_us: u64,
    pub error: String,
}

/// One move of traffic as the state shows it: names, not positions (a reload may renumber).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub at_ms: u64,
    /// Upstream names; `none` while every upstream is down.
    pub from: String,
    pub to: String,
    pub reason: String,
}

impl Health {
    pub fn new() -> Health {
        Health {
            healthy: true,
            fails: 0,
            oks: 0,
            last_error: String::new(),
            last_check_ms: 0,
            last_check_unix: 0,
            recent: VecDeque::new(),
            checked: false,
        }
    }

    /// An upstream not checked yet counts as healthy, unless its name resolved to no
    /// address (the proxy starts and serves from the others).
    pub fn at_start(up: &Upstream) -> Health {
        let mut h = Health::new();
        if let Some(o) = up.origin().filter(|o| o.addrs.pick().0.is_empty()) {
            h.healthy = false;
            h.last_error = o.addrs.missing();
        }
        h
    }

    /// Counts one result; returns true when it flips `healthy`.
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

/// What workers copy into their own state when the epoch moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Route {
    /// Where new requests go (position in the chain).
    pub active: usize,
    /// Bit i: upstream i passes its checks.
    pub healthy: u32,
    /// Bit i: an operator drained upstream i (no new requests, nor retries, go there).
    pub drained: u32,
    /// An operator pinned new requests to `active`, healthy or not.
    pub pinned: bool,
}

impl Route {
    /// No upstream is healthy.
    pub fn all_down(&self) -> bool {
        self.healthy == 0
    }

    /// A route with no holds (tests).
    #[cfg(test)]
    pub const fn up(active: usize, healthy: u32) -> Route {
        Route { active, healthy, drained: 0, pinned: false }
    }

    /// Nowhere to send a request: answer at once instead of trying.
    pub fn nowhere(&self) -> bool {
        !self.pinned && self.healthy & !self.drained == 0
    }

    pub fn is_healthy(&self, i: usize) -> bool {
        i < MAX_UPSTREAMS && self.healthy & (1 << i) != 0
    }

    /// The first healthy upstream after `k` that is not in `tried` (bit i: upstream i was
    /// tried already): where a request that failed on `k` may go next. Never earlier in the
    /// chain, so a request cannot loop.
    pub fn next_after(&self, k: usize, tried: u32) -> Option<usize> {
        let later = !((2u32 << k.min(30)) - 1);
        let candidates = self.healthy & !self.drained & later & !tried;
        (candidates != 0).then(|| candidates.trailing_zeros() as usize)
    }
}

/// A health result as a probe (or a refused connection) delivers it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub ok: bool,
    /// Why it failed (ignored when `ok`).
    pub why: &'a str,
    /// How long the check took, when it was a check (live failures are not).
    pub took: Option<Duration>,
}

/// What made the route change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A health-check result (or a refused connection).
    Health,
    /// An operator set or cleared an override or a drain.
    Operator,
    /// An override or a drain expired.
    Expired,
}

/// A change that workers must act on, returned once to the worker that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub cause: Cause,
    /// The upstream whose result (or hold) caused it.
    pub upstream: usize,
    /// Why, e.g. `primary unhealthy: connect refused (3/3)`.
    pub reason: String,
    pub from: Route,
    pub to: Route,
}

impl Change {
    /// Traffic moved to another upstream.
    pub fn moved(&self) -> bool {
        self.from.active != self.to.active
    }
}

/// How often traffic moved between two upstreams (None: nowhere, every upstream down),
/// and why, for `failover_transitions_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub from: Option<usize>,
    pub to: Option<usize>,
    /// `unhealthy`, `recovered`, `hold_elapsed` or `all_down`.
    pub reason: &'static str,
    pub count: u64,
}

/// The shared record of every upstream and the routing decision.
#[derive(Debug, Clone)]
pub struct Book {
    pub ups: Vec<Health>,
    /// Where new requests go.
    pub active: usize,
    /// When the active upstream became active (unix seconds).
    pub since_unix: u64,
    /// The same, for `--min-backup-time`.
    active_since: Instant,
    /// Why traffic last moved (or health last flipped).
    pub reason: String,
    /// The URLs counted here, by position (a reload keeps the counts of unchanged ones).
    urls: Vec<String>,
    /// Every kind of move so far, with its count.
    pub moves: Vec<Move>,
    /// The last [`TRANSITIONS_KEPT`] moves, oldest first.
    pub transitions: VecDeque<Transition>,
    /// The operator's override and drains.
    pub holds: Holds,
    /// Operator actions so far, by [`ACTIONS`] position.
    pub actions: [u64; ACTIONS.len()],
}

/// What `failover_admin_actions_total{action}` counts.
pub const ACTIONS: [&str; 6] =
    ["override_set", "override_cleared", "override_expired", "drain_set", "drain_cleared", "drain_expired"];

impl Book {
    pub fn new(cfg: &Config) -> Book {
        let ups: Vec<Health> = cfg.upstreams.iter().map(Health::at_start).collect();
        Book {
            active: ups.iter().position(|h| h.healthy).unwrap_or(0),
            ups,
            since_unix: unix_now(),
            active_since: Instant::now(),
            reason: String::new(),
            urls: cfg.upstreams.iter().map(|u| u.url.clone()).collect(),
            moves: Vec::new(),
            transitions: VecDeque::new(),
            holds: Holds::default(),
            actions: [0; ACTIONS.len()],
        }
    }

    pub fn route(&self) -> Route {
        let healthy = self.ups.iter().enumerate().filter(|(_, h)| h.healthy).fold(0, |m, (i, _)| m | 1 << i);
        Route { active: self.active, healthy, drained: self.holds.drained(), pinned: self.holds.pin.is_some() }
    }

    /// The first healthy upstream that is not drained (nor `also_drained`): where automatic
    /// routing sends new requests.
    pub fn first_serving(&self, also_drained: Option<usize>) -> Option<usize> {
        self.ups.iter().enumerate().position(|(i, h)| h.healthy && !self.holds.is_drained(i) && also_drained != Some(i))
    }

    /// Counts one result for upstream `i` and decides where traffic goes.
    pub fn observe(&mut self, cfg: &Config, i: usize, obs: Observation) -> Option<Change> {
        let from = self.route();
        let (Some(h), Some(up)) = (self.ups.get_mut(i), cfg.upstreams.get(i)) else { return None };
        if !obs.ok {
            h.last_error.clear();
            h.last_error.push_str(obs.why);
        }
        if let Some(took) = obs.took {
            h.checked = true;
            h.last_check_ms = took.as_millis() as u64;
            h.last_check_unix = unix_now();
            if h.recent.len() == CHECKS_KEPT {
                h.recent.pop_front();
            }
            let error = if obs.ok { String::new() } else { obs.why.to_string() };
            h.recent.push_back(Check { at_ms: unix_ms(), ok: obs.ok, took_us: took.as_micros() as u64, error });
        }
        let flipped = h.observe(obs.ok, cfg.fail_threshold, cfg.recover_threshold);
        let reason = match (flipped, h.healthy) {
            (false, _) => String::new(),
            (true, true) => format!("{} healthy again ({}/{})", up.name, cfg.recover_threshold, cfg.recover_threshold),
            (true, false) => {
                format!("{} unhealthy: {} ({}/{})", up.name, obs.why, cfg.fail_threshold, cfg.fail_threshold)
            }
        };
        self.settle(cfg, from, i, reason, None, flipped, Cause::Health)
    }

    /// Decides where traffic goes after upstream `i` changed (`flipped`: its health did) or
    /// a hold did, from route `from`; a change that moves anything is returned (and counted).
    /// `public`: the reason as the state shows it, when the log's says more (an operator's words).
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &mut self,
        cfg: &Config,
        from: Route,
        i: usize,
        mut reason: String,
        public: Option<String>,
        flipped: bool,
        cause: Cause,
    ) -> Option<Change> {
        // An override serves whatever its upstream's health. Else the first healthy upstream
        // in order that is not drained serves, but moving back up the chain waits for
        // --min-backup-time after the last move, unless the current one failed (or an
        // operator moved traffic).
        let best = self.first_serving(None);
        let held = self.active_since.elapsed() < cfg.min_backup_time && cause == Cause::Health;
        let current_ok = self.ups.get(self.active).is_some_and(|h| h.healthy) && !self.holds.is_drained(self.active);
        let next = match (self.holds.pin.as_ref(), best) {
            (Some(p), _) => p.target,
            (None, None) => self.active,
            (None, Some(b)) if b < self.active && current_ok && held => {
                if flipped && b == i {
                    let name = cfg.name(self.active);
                    reason.push_str(&format!(", held on {name} for --min-backup-time ({:?})", cfg.min_backup_time));
                }
                self.active
            }
            (None, Some(b)) => b,
        };
        // Coming back from everything down is a move of traffic too, even to the same one.
        if next == self.active && from.all_down() && best.is_some() {
            self.since_unix = unix_now();
            self.active_since = Instant::now();
        }
        if next != self.active {
            if !flipped && cause == Cause::Health {
                reason =
                    format!("{} healthy and --min-backup-time ({:?}) elapsed", cfg.name(next), cfg.min_backup_time);
            }
            self.active = next;
            self.since_unix = unix_now();
            self.active_since = Instant::now();
        }
        let to = self.route();
        if reason.is_empty() && to == from {
            return None;
        }
        let counted = match cause {
            Cause::Health => None,
            Cause::Operator => Some("operator"),
            Cause::Expired => Some("expired"),
        };
        // `reason` says why traffic last moved: a backup failing while it is not serving
        // is news (it is logged and shown per upstream) but moves nothing.
        if to.active != from.active || to.all_down() != from.all_down() || to.nowhere() != from.nowhere() {
            let shown = public.unwrap_or_else(|| reason.clone());
            self.reason.clone_from(&shown);
            let why = match (counted, to.all_down(), flipped) {
                (Some(why), _, _) => why,
                (None, true, _) => "all_down",
                (None, false, true) if to.is_healthy(i) => "recovered",
                (None, false, true) => "unhealthy",
                (None, false, false) => "hold_elapsed",
            };
            self.count_move(from, to, why);
            if self.transitions.len() == TRANSITIONS_KEPT {
                self.transitions.pop_front();
            }
            let name = |r: Route| if r.nowhere() { "none".to_string() } else { cfg.name(r.active).to_string() };
            let at_ms = unix_ms();
            self.transitions.push_back(Transition { at_ms, from: name(from), to: name(to), reason: shown });
        }
        Some(Change { cause, upstream: i, reason, from, to })
    }

    /// Pins new requests to upstream `target` (replacing any override).
    pub fn set_pin(&mut self, cfg: &Config, hold: Hold) -> Option<Change> {
        let from = self.route();
        let target = hold.target;
        let public = format!("override: new requests pinned to {} until {}", cfg.name(target), Rfc3339(hold.until_ms));
        let reason = format!("{public} ({})", quoted(&hold.reason));
        self.holds.pin = Some(hold);
        self.actions[0] += 1;
        self.operator(cfg, from, target, reason, public, Cause::Operator)
    }

    /// Removes the override; None when there was none.
    pub fn clear_pin(&mut self, cfg: &Config) -> Option<Change> {
        let from = self.route();
        let old = self.holds.pin.take()?;
        self.actions[1] += 1;
        let reason = format!("override on {} cleared; automatic routing", cfg.name(old.target));
        self.operator(cfg, from, old.target, reason.clone(), reason, Cause::Operator)
    }

    /// Drains upstream `target` (replacing a drain of it).
    pub fn set_drain(&mut self, cfg: &Config, hold: Hold) -> Option<Change> {
        let from = self.route();
        let target = hold.target;
        let public = format!("drain: no new requests to {} until {}", cfg.name(target), Rfc3339(hold.until_ms));
        let reason = format!("{public} ({})", quoted(&hold.reason));
        self.holds.drains.retain(|d| d.target != target);
        self.holds.drains.push(hold);
        self.actions[3] += 1;
        self.operator(cfg, from, target, reason, public, Cause::Operator)
    }

    /// Ends the drain of `target` (every drain: None); None when there was none.
    pub fn clear_drain(&mut self, cfg: &Config, target: Option<usize>) -> Option<Change> {
        let from = self.route();
        let before = self.holds.drains.len();
        self.holds.drains.retain(|d| target.is_some_and(|t| d.target != t));
        let cleared = before - self.holds.drains.len();
        if cleared == 0 {
            return None;
        }
        self.actions[4] += cleared as u64;
        let (i, what) = match target {
            Some(t) => (t, format!("drain of {} ended", cfg.name(t))),
            None => (0, "every drain ended".to_string()),
        };
        self.operator(cfg, from, i, what.clone(), what, Cause::Operator)
    }

    /// Ends the holds whose time is up; the change, if any, for the caller to announce.
    pub fn expire(&mut self, cfg: &Config, now: Instant) -> Option<Change> {
        let from = self.route();
        let gone = self.holds.expire(now);
        let first = gone.first()?;
        let (mut reason, mut public) = (String::new(), String::new());
        for (kind, h) in &gone {
            self.actions[if *kind == "override" { 2 } else { 5 }] += 1;
            let sep = if reason.is_empty() { "" } else { "; " };
            let what = format!("{sep}{kind} on {} expired", cfg.name(h.target));
            reason.push_str(&format!("{what} (set for {})", quoted(&h.reason)));
            public.push_str(&what);
        }
        let i = first.1.target;
        self.operator(cfg, from, i, reason, public, Cause::Expired)
    }

    /// An operator's change (or its expiry): always news, even when traffic stays put.
    fn operator(
        &mut self,
        cfg: &Config,
        from: Route,
        i: usize,
        reason: String,
        public: String,
        cause: Cause,
    ) -> Option<Change> {
        let again = reason.clone();
        self.settle(cfg, from, i, reason, Some(public), false, cause)
            .or_else(|| Some(Change { cause, upstream: i, reason: again, from, to: self.route() }))
    }

    fn count_move(&mut self, from: Route, to: Route, reason: &'static str) {
        let at = |r: Route| (!r.nowhere()).then_some(r.active);
        let (from, to) = (at(from), at(to));
        match self.moves.iter_mut().find(|m| m.from == from && m.to == to && m.reason == reason) {
            Some(m) => m.count += 1,
            None => self.moves.push(Move { from, to, reason, count: 1 }),
        }
    }

    /// Follows a reloaded chain: counts of upstreams whose URL is unchanged at the same
    /// position are kept, the others start healthy.
    fn reconfigure(&mut self, cfg: &Config) {
        let urls: Vec<String> = cfg.upstreams.iter().map(|u| u.url.clone()).collect();
        let mut ups = Vec::with_capacity(urls.len());
        for (i, url) in urls.iter().enumerate() {
            match (self.urls.get(i), self.ups.get(i)) {
                (Some(old), Some(h)) if old == url => ups.push(h.clone()),
                _ => ups.push(Health::at_start(&cfg.upstreams[i])),
            }
        }
        self.ups = ups;
        for h in self.holds.follow(&urls) {
            log::warn!("SIGHUP: {} left the chain; its override or drain ({}) ends", h.url, quoted(&h.reason));
        }
        self.urls = urls;
        if let Some(p) = &self.holds.pin {
            self.active = p.target;
            return;
        }
        // The serving upstream left the chain (or is down): the first healthy one serves.
        if self.ups.get(self.active).is_none_or(|h| !h.healthy) {
            let next = self.ups.iter().position(|h| h.healthy).unwrap_or(0);
            if next != self.active {
                self.active = next;
                self.since_unix = unix_now();
                self.active_since = Instant::now();
            }
        }
    }
}

/// Health shared by all workers of a process.
pub struct Board {
    book: Mutex<Book>,
    /// Bumped on every [`Change`]: a worker whose copy is older re-reads the route.
    epoch: AtomicU64,
    /// The configuration generation the book counts for (reports from probes of another
    /// generation are dropped, and a worker adopts routes of its own generation only).
    generation: AtomicU64,
    /// Extra (confirmation and fast) probes are rationed across workers: the earliest time,
    /// in ms after `base`, the next one may start, per upstream.
    extra_probe_at: [AtomicU64; MAX_UPSTREAMS],
    base: Instant,
}

impl Board {
    pub fn new(cfg: &Config) -> Board {
        Board {
            book: Mutex::new(Book::new(cfg)),
            epoch: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            extra_probe_at: std::array::from_fn(|_| AtomicU64::new(0)),
            base: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        // A worker that panicked while holding the lock left counters, not broken invariants.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Book {
        self.lock().clone()
    }

    /// The current route with its epoch and configuration generation.
    pub fn route(&self) -> (u64, Route, u64) {
        let book = self.lock();
        (self.epoch(), book.route(), self.generation.load(Ordering::Acquire))
    }

    /// Counts a result for upstream `i` of configuration generation `generation`.
    pub fn report(&self, cfg: &Config, generation: u64, i: usize, obs: Observation) -> Option<Change> {
        let mut book = self.lock();
        if generation != self.generation.load(Ordering::Acquire) {
            return None;
        }
        let change = book.observe(cfg, i, obs)?;
        self.epoch.fetch_add(1, Ordering::AcqRel);
        Some(change)
    }

    /// A reloaded configuration (generation `generation`) is about to be published.
    pub fn reconfigure(&self, cfg: &Config, generation: u64) {
        let mut book = self.lock();
        book.reconfigure(cfg);
        self.generation.store(generation, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Claims the right to start an extra probe of upstream `i` now: at most one per
    /// `every` across all workers, so the probe rate does not grow with the worker count.
    pub fn claim_extra_probe(&self, i: usize, now: Instant, every: Duration) -> bool {
        let Some(slot) = self.extra_probe_at.get(i) else { return false };
        let now_ms = now.saturating_duration_since(self.base).as_millis() as u64;
        let at = slot.load(Ordering::Acquire);
        now_ms >= at
            && slot.compare_exchange(at, now_ms + every.as_millis() as u64, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Applies an operator's action (`act` on the book) and publishes the change.
    pub fn hold(&self, act: impl FnOnce(&mut Book) -> Option<Change>) -> Option<Change> {
        let mut book = self.lock();
        let change = act(&mut book)?;
        self.epoch.fetch_add(1, Ordering::AcqRel);
        Some(change)
    }

    /// Ends the holds whose time is up (each worker asks once a second; one gets the change).
    pub fn expire(&self, cfg: &Config, generation: u64, now: Instant) -> Option<Change> {
        if generation != self.generation.load(Ordering::Acquire) {
            return None;
        }
        self.hold(|book| book.expire(cfg, now))
    }

    /// Every upstream has been checked once (the proxy routes on facts, not on defaults).
    pub fn first_round_done(&self) -> bool {
        self.lock().ups.iter().all(|h| h.checked)
    }

    /// Whether upstream `i` failed recently without being declared down yet: it is then
    /// probed at the fast interval.
    pub fn suspect(&self, i: usize) -> bool {
        self.lock().ups.get(i).is_some_and(|h| h.healthy && h.fails > 0)
    }
}

/// An operator's reason for the logs: quoted, or `no reason given`.
fn quoted(reason: &str) -> String {
    if reason.is_empty() {
        "no reason given".into()
    } else {
        format!("{reason:?}")
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::holds::Hold;

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
    fn next_after_skips_tried_and_unhealthy_and_never_goes_back() {
        let r = |healthy| Route::up(0, healthy);
        // (healthy mask, failed on, tried mask, want)
        let cases: &[(u32, usize, u32, Option<usize>)] = &[
            (0b111, 0, 0b001, Some(1)),
            (0b101, 0, 0b001, Some(2)), // a dead middle upstream is skipped
            (0b111, 0, 0b011, Some(2)), // tried already
            (0b111, 2, 0b100, None),    // nothing after the last
            (0b011, 1, 0b010, None),    // never back up the chain
            (0b000, 0, 0b001, None),
            (1 << 15 | 1, 0, 1, Some(15)),
            (1 << 15, 15, 1 << 15, None),
        ];
        for &(healthy, k, tried, want) in cases {
            assert_eq!(r(healthy).next_after(k, tried), want, "healthy={healthy:b} k={k} tried={tried:b}");
        }
    }

    fn cfg(upstreams: usize, extra: &[&str]) -> Config {
        let mut args = vec!["failover".to_string(), "--primary=http://127.0.0.1:1".to_string()];
        for i in 0..upstreams - 1 {
            args.push(format!("--backup=http://127.0.0.1:{}", i + 2));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Config::from_flags(clap::Parser::parse_from(args)).unwrap()
    }

    fn fail(why: &str) -> Observation<'_> {
        Observation { ok: false, why, took: None }
    }

    const OK: Observation = Observation { ok: true, why: "", took: None };

    #[test]
    fn traffic_goes_down_the_chain_and_back_up() {
        let cfg = cfg(3, &["--fail-threshold=2", "--recover-threshold=2"]);
        let mut b = Book::new(&cfg);
        assert_eq!(b.route(), Route::up(0, 0b111));
        assert_eq!(b.observe(&cfg, 0, fail("connect refused")), None, "one failure decides nothing");
        let c = b.observe(&cfg, 0, fail("connect refused")).expect("a change");
        assert_eq!(c.reason, "primary unhealthy: connect refused (2/2)");
        assert_eq!((c.moved(), c.to), (true, Route::up(1, 0b110)));
        b.observe(&cfg, 1, fail("status 503"));
        let c = b.observe(&cfg, 1, fail("status 503")).expect("a change");
        assert_eq!((c.to.active, c.reason.as_str()), (2, "backup unhealthy: status 503 (2/2)"));
        b.observe(&cfg, 2, fail("x"));
        let c = b.observe(&cfg, 2, fail("x")).expect("a change");
        assert!(c.to.all_down() && !c.moved(), "{c:?}");
        assert_eq!(b.observe(&cfg, 1, OK), None);
        let c = b.observe(&cfg, 1, OK).expect("a change");
        assert_eq!((c.to.active, c.reason.as_str()), (1, "backup healthy again (2/2)"));
        b.observe(&cfg, 0, OK);
        let c = b.observe(&cfg, 0, OK).expect("a change");
        assert_eq!(c.to, Route::up(0, 0b011));
    }

    #[test]
    fn a_backup_failing_while_not_serving_changes_the_mask_only() {
        let cfg = cfg(2, &["--fail-threshold=1", "--recover-threshold=1"]);
        let mut b = Book::new(&cfg);
        let c = b.observe(&cfg, 1, fail("connect refused")).expect("a change");
        assert!(!c.moved());
        assert_eq!(c.to, Route::up(0, 0b01));
        assert_eq!(b.reason, "", "last_transition is for moves of traffic");
        b.observe(&cfg, 0, fail("status 500"));
        assert_eq!(b.reason, "primary unhealthy: status 500 (1/1)");
        b.observe(&cfg, 1, OK);
        assert_eq!(b.reason, "backup healthy again (1/1)", "traffic moved off all-down to the backup");
    }

    #[test]
    fn min_backup_time_holds_failback() {
        let cfg = cfg(2, &["--fail-threshold=1", "--recover-threshold=1", "--min-backup-time=1h"]);
        let mut b = Book::new(&cfg);
        b.observe(&cfg, 0, fail("down"));
        let c = b.observe(&cfg, 0, OK).expect("health flipped");
        assert!(!c.moved(), "held on the backup: {c:?}");
        assert!(c.reason.contains("held on backup"), "{}", c.reason);
        // The serving upstream failing overrides the hold.
        let c = b.observe(&cfg, 1, fail("down")).expect("a change");
        assert_eq!(c.to.active, 0);
    }

    #[test]
    fn board_drops_reports_of_another_generation() {
        let cfg = cfg(2, &["--fail-threshold=1"]);
        let board = Board::new(&cfg);
        assert!(board.report(&cfg, 1, 0, fail("x")).is_none());
        assert_eq!(board.epoch(), 0);
        assert!(board.report(&cfg, 0, 0, fail("x")).is_some());
        assert_eq!((board.epoch(), board.route().1.active), (1, 1));
        board.reconfigure(&cfg, 1);
        assert_eq!(board.route().1.active, 1, "unchanged URLs keep their counts");
        assert!(board.report(&cfg, 1, 1, fail("x")).is_some());
    }

    #[test]
    fn the_state_keeps_the_last_checks_and_transitions_with_names() {
        let cfg = cfg(2, &["--fail-threshold=1", "--recover-threshold=1"]);
        let mut b = Book::new(&cfg);
        let check = |ok| Observation {
            ok,
            why: if ok { "" } else { "connect refused" },
            took: Some(Duration::from_micros(1500)),
        };
        for k in 0..CHECKS_KEPT + 5 {
            b.observe(&cfg, 1, check(k % 2 == 0));
        }
        let recent = &b.ups[1].recent;
        assert_eq!(recent.len(), CHECKS_KEPT, "bounded");
        assert!(recent.back().is_some_and(|c| c.ok && c.took_us == 1500 && c.error.is_empty()));
        assert!(recent.iter().rev().nth(1).is_some_and(|c| !c.ok && c.error == "connect refused"));
        assert!(b.ups[0].recent.is_empty(), "live failures (no `took`) are not checks");
        b.observe(&cfg, 0, fail("timeout"));
        b.observe(&cfg, 1, fail("timeout"));
        b.observe(&cfg, 0, OK);
        let seen: Vec<(&str, &str)> = b.transitions.iter().map(|t| (t.from.as_str(), t.to.as_str())).collect();
        assert_eq!(seen, [("primary", "backup"), ("backup", "none"), ("none", "primary")]);
        assert_eq!(b.transitions[0].reason, "primary unhealthy: timeout (1/1)");
        for _ in 0..TRANSITIONS_KEPT {
            b.observe(&cfg, 0, fail("x"));
            b.observe(&cfg, 0, OK);
        }
        assert_eq!(b.transitions.len(), TRANSITIONS_KEPT);
    }

    #[test]
    fn holds_route_new_requests_and_expire_back_to_automatic() {
        let cfg = cfg(3, &["--fail-threshold=1", "--recover-threshold=1", "--min-backup-time=1h"]);
        let mut b = Book::new(&cfg);
        let hold = |t: usize, secs: u64| {
            Hold::new(t, &format!("http://127.0.0.1:{}", t + 1), Duration::from_secs(secs), "why", false)
        };
        let c = b.set_pin(&cfg, hold(2, 60)).unwrap();
        assert_eq!((c.cause, c.to.active, c.to.pinned), (Cause::Operator, 2, true));
        // Health still counts while pinned, and moves nothing.
        let c = b.observe(&cfg, 0, fail("refused")).unwrap();
        assert_eq!((c.to.active, c.to.is_healthy(0)), (2, false));
        b.observe(&cfg, 0, OK);
        // Clearing goes back to the first healthy at once (--min-backup-time holds health moves only).
        let c = b.clear_pin(&cfg).unwrap();
        assert_eq!((c.to.active, c.to.pinned), (0, false));
        let c = b.set_drain(&cfg, hold(0, 60)).unwrap();
        assert_eq!((c.to.active, c.to.drained), (1, 0b001));
        assert_eq!(c.to.next_after(1, 0b010), Some(2));
        assert_eq!(Route { drained: 0b100, ..c.to }.next_after(1, 0b010), None, "never to a drained one");
        assert!(!c.to.nowhere());
        b.set_drain(&cfg, hold(1, 0));
        b.set_drain(&cfg, hold(2, 0));
        assert!(b.route().nowhere(), "everything drained");
        let c = b.expire(&cfg, Instant::now() + Duration::from_secs(1)).unwrap();
        assert_eq!((c.cause, c.to.active, c.to.drained), (Cause::Expired, 1, 0b001));
        assert!(c.reason.contains("drain on backup expired"), "{}", c.reason);
        assert!(b.expire(&cfg, Instant::now() + Duration::from_secs(1)).is_none());
        let c = b.expire(&cfg, Instant::now() + Duration::from_secs(61)).unwrap();
        assert_eq!(c.to.active, 0, "the primary's drain ended: automatic routing");
        assert_eq!(b.actions, [1, 1, 0, 3, 0, 3]);
    }
}
