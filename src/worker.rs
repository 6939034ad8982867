//! One event loop: poll, dispatch by token, run timers, accept, act on what clients ask
//! (attach, pool or drop upstream connections), run the health checks of its turn, and
//! follow routing decisions.
//!
//! The worker owns everything mutable of its thread: the poller, the slabs, the timers,
//! the buffer pool, the upstream connections and its copy of the route. It never parses
//! HTTP and never decides a retry; clients and probes do, and tell it what they need.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::access_log::AccessLog;
use crate::buffer::Pool;
use crate::client::{Client, Ctx, Step};
use crate::config::Config;
use crate::control::Control;
use crate::exchange::{Signals, Spare};
use crate::health::{Board, Cause, Change, Observation, Route};
use crate::metrics::WorkerMetrics;
use crate::notify::Notifier;
use crate::probe::{self, Outcome, Probe};
use crate::resolve::Resolver;
use crate::splice::Pipes;
use crate::timer::Timers;
use crate::token::{self, Kind};
use crate::transport::Conn;
use crate::uplink::{self, Uplinks};
use crate::upstream::Kind as UpKind;

/// Timer index of the fast probe of a suspect upstream (index 0 is the regular tick).
const FAST_TICK: usize = 1;
/// Timer index of the memory trim, and its period: buffers unused for a whole period go
/// back to the system.
const TRIM_TICK: usize = 2;
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// Timer index of the heartbeat (for `/__failover/live` and the systemd watchdog), and its period.
const HEARTBEAT_TICK: usize = 3;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How soon a worker that stopped accepting at `--max-connections` looks again.
const FULL_RETRY: Duration = Duration::from_millis(50);
/// Pause before accepting again after the process ran out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a worker shares with the rest of the process.
#[derive(Clone)]
pub struct Shared {
    pub board: Arc<Board>,
    pub control: Arc<Control>,
    /// One block of counters per worker, by worker id.
    pub metrics: Arc<Vec<WorkerMetrics>>,
    pub resolver: Arc<Resolver>,
    pub notifier: Arc<Notifier>,
}

/// The context a client drives with, borrowed field by field so the slabs stay free.
macro_rules! ctx {
    ($w:expr) => {
        Ctx {
            cfg: &$w.cfg,
            registry: $w.poll.registry(),
            pool: &mut $w.pool,
            pipes: &mut $w.pipes,
            spare: &mut $w.spare,
            metrics: &$w.shared.metrics[$w.id],
            all_metrics: &$w.shared.metrics,
            board: &$w.shared.board,
            control: &$w.shared.control,
            route: $w.route,
            now: $w.now,
            signals: &mut $w.signals,
            access: $w.access.as_mut(),
        }
    };
}

pub struct Worker {
    id: usize,
    workers: usize,
    poll: Poll,
    /// Listeners with whether they speak TLS; index = token index.
    listeners: Vec<(TcpListener, bool)>,
    cfg: Arc<Config>,
    /// Which published configuration `cfg` is (0: the one the process started with).
    generation: u64,
    shared: Shared,
    clients: Slab<Client>,
    uplinks: Uplinks,
    probes: Slab<Probe>,
    /// The probe request of each upstream, by position.
    probe_requests: Vec<Vec<u8>>,
    pool: Pool,
    pipes: Pipes,
    spare: Spare,
    timers: Timers,
    route: Route,
    epoch: u64,
    gen: u32,
    now: Instant,
    /// Clients that used up their turn with work left: (key, generation).
    yielded: Vec<(usize, u32)>,
    next_tick: Instant,
    accept_paused: bool,
    /// Failures seen on live traffic since the last loop turn.
    signals: Signals,
    /// A fast probe of the suspect active upstream is scheduled.
    fast_armed: bool,
    /// Stopping: no more accepts; the loop ends when the last client is gone.
    draining: bool,
    /// The access log, flushed once per loop turn, and the reopen request it last followed.
    access: Option<AccessLog>,
    log_epoch: u64,
}

impl Worker {
    /// Sets up a worker around listeners bound by the caller (each with whether it speaks
    /// TLS). `start` is the instant the probe schedule counts from (the same for every worker).
    pub fn new(
        id: usize,
        workers: usize,
        listeners: Vec<(TcpListener, bool)>,
        cfg: Arc<Config>,
        shared: Shared,
        start: Instant,
    ) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let mut listeners = listeners;
        for (i, (l, _)) in listeners.iter_mut().enumerate() {
            poll.registry().register(l, token::make(Kind::Listener, i, 0), Interest::READABLE)?;
        }
        let waker = Arc::new(Waker::new(poll.registry(), token::make(Kind::Waker, 0, 0))?);
        shared.control.add_waker(waker);
        let (epoch, route, _) = shared.board.route();
        let mut w = Worker {
            id,
            workers,
            poll,
            listeners,
            probe_requests: probe::requests(&cfg),
            cfg,
            generation: 0,
            shared,
            clients: Slab::with_capacity(1024),
            uplinks: Uplinks::new(),
            probes: Slab::with_capacity(4),
            // Free buffers kept for reuse (16 MiB at 32 KiB each); past that they go back to
            // the allocator, so a burst of connections does not pin its memory for good.
            pool: Pool::new(512),
            pipes: Pipes::default(),
            spare: Vec::new(),
            timers: Timers::new(),
            route,
            epoch,
            gen: 0,
            now: Instant::now(),
            yielded: Vec::new(),
            next_tick: start,
            accept_paused: false,
            signals: Signals::default(),
            fast_armed: false,
            draining: false,
            access: None,
            log_epoch: 0,
        };
        w.log_epoch = w.shared.control.log_epoch();
        w.sync_access_log(false);
        w.next_tick = start + w.cfg.check_interval * id as u32;
        w.timers.arm(w.next_tick, token::make(Kind::Tick, 0, 0));
        w.timers.arm(w.now + TRIM_EVERY, token::make(Kind::Tick, TRIM_TICK, 0));
        w.shared.metrics[id].beat(w.shared.control.now_ms());
        w.timers.arm(w.now + HEARTBEAT_EVERY, token::make(Kind::Tick, HEARTBEAT_TICK, 0));
        Ok(w)
    }

    fn next_gen(&mut self) -> u32 {
        self.gen = token::next_gen(self.gen);
        self.gen
    }

    /// Runs the loop until the process stops and the last client is gone.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            self.now = Instant::now();
            let timeout = if self.yielded.is_empty() { self.timers.timeout(self.now) } else { Some(Duration::ZERO) };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = Instant::now();
            for ev in events.iter() {
                let (kind, index, gen) = token::split(ev.token());
                match kind {
                    Kind::Listener => self.accept(index),
                    Kind::Waker => self.on_wake(),
                    Kind::Client => {
                        if let Some(c) = self.clients.get_mut(index).filter(|c| c.gen == gen) {
                            c.io.ready.record(ev);
                            self.drive_client(index);
                        }
                    }
                    Kind::Uplink => {
                        if let Some(u) = self.uplinks.live(index, gen) {
                            u.ready.record(ev);
                            match u.client {
                                Some(c) => self.drive_client(c),
                                None => self.uplinks.check_idle(index, &mut self.pool),
                            }
                        }
                    }
                    Kind::Probe => {
                        if let Some(p) = self.probes.get_mut(index).filter(|p| p.gen == gen) {
                            p.ready.record(ev);
                            self.drive_probe(index);
                        }
                    }
                    Kind::Tick => {}
                }
            }
            for (key, gen) in std::mem::take(&mut self.yielded) {
                if self.clients.get(key).is_some_and(|c| c.gen == gen) {
                    self.drive_client(key);
                }
            }
            while let Some(tok) = self.timers.pop_due(self.now) {
                self.on_timer(tok);
            }
            if self.signals.suspect != 0 {
                self.confirm_signals();
            }
            if let Some(log) = self.access.as_mut() {
                log.flush();
            }
            if self.draining && self.clients.is_empty() {
                log::debug!("worker={} drained", self.id);
                return Ok(());
            }
        }
    }

    /// Another thread changed something this loop must follow: the configuration, the stop
    /// flag, the route.
    fn on_wake(&mut self) {
        if let Some((generation, cfg)) = self.shared.control.config_since(self.generation) {
            self.generation = generation;
            self.apply_config(cfg);
        }
        let log_epoch = self.shared.control.log_epoch();
        if log_epoch != self.log_epoch {
            self.log_epoch = log_epoch;
            self.sync_access_log(true);
        }
        if self.shared.control.stopping() && !self.draining {
            self.begin_drain();
        }
        self.sync_route();
    }

    /// Opens, closes or (`reopen`: after SIGHUP, for logrotate) reopens the access log the
    /// configuration names.
    fn sync_access_log(&mut self, reopen: bool) {
        match (self.access.as_mut(), &self.cfg.access_log) {
            (Some(log), Some(target)) if reopen || log.target() != target => log.reopen(target),
            (Some(_), Some(_)) => {}
            (Some(log), None) => {
                log.flush();
                self.access = None;
            }
            (None, Some(target)) => match AccessLog::open(target) {
                Ok(mut log) => {
                    log.ids_for(self.id);
                    self.access = Some(log);
                }
                Err(e) => log::error!("access log {}: cannot open: {e}", target.path),
            },
            (None, None) => {}
        }
    }

    fn accept(&mut self, which: usize) {
        if self.accept_paused {
            return;
        }
        let Some(&(_, tls)) = self.listeners.get(which) else { return };
        loop {
            if self.shared.control.connections.load(Ordering::Relaxed) >= self.cfg.max_connections {
                // Full: leave new connections in the kernel backlog rather than accept and
                // starve them; look again when one closes or a moment later.
                self.accept_paused = true;
                self.timers.arm(self.now + FULL_RETRY, token::make(Kind::Listener, 0, 0));
                return;
            }
            match self.listeners[which].0.accept() {
                Ok((mut sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    let session = match (tls, self.cfg.tls.as_ref()) {
                        (true, Some(side)) => match side.session() {
                            Ok(s) => Some(Box::new(s)),
                            Err(e) => {
                                log::error!("worker={} {e}", self.id);
                                continue;
                            }
                        },
                        _ => None,
                    };
                    let gen = self.next_gen();
                    let capacity = self.clients.capacity();
                    let entry = self.clients.vacant_entry();
                    let tok = token::make(Kind::Client, entry.key(), gen);
                    if let Err(e) =
                        self.poll.registry().register(&mut sock, tok, Interest::READABLE | Interest::WRITABLE)
                    {
                        log::error!("worker={} cannot register a client: {e}", self.id);
                        continue;
                    }
                    let mut c = Client::new(Conn { sock, tls: session }, peer, gen, self.now);
                    if let Some(at) = c.deadline.set(c.next_deadline(&self.cfg)) {
                        self.timers.arm(at, tok);
                    }
                    self.shared.control.connections.fetch_add(1, Ordering::Relaxed);
                    entry.insert(c);
                    if self.clients.capacity() != capacity {
                        // The slab doubled: its old copy is free but still resident (glibc
                        // keeps it in the heap), about as much again as every connection
                        // holds. Give those pages back now; this happens log2(N) times.
                        release_free_memory();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of file descriptors or memory: stop accepting for a moment rather than spin.
                    log::warn!("worker={} accept failed: {e}; pausing accepts for {:?}", self.id, ACCEPT_BACKOFF);
                    self.accept_paused = true;
                    self.timers.arm(self.now + ACCEPT_BACKOFF, token::make(Kind::Listener, 0, 0));
                    return;
                }
            }
        }
    }

    /// Switches to a reloaded configuration: new requests, probes and timeouts use it; idle
    /// pooled connections are closed (the reload looked every name up afresh, and a
    /// position may now be another upstream); requests in flight finish on the connections
    /// they have.
    fn apply_config(&mut self, cfg: Arc<Config>) {
        for i in 0..self.cfg.upstreams.len() {
            self.uplinks.close_idle(i);
        }
        self.probe_requests = probe::requests(&cfg);
        self.cfg = cfg;
        self.sync_access_log(false);
    }

    /// Stops accepting (a new process may take the port over with SO_REUSEPORT), closes
    /// idle keep-alive connections, and lets the others finish their exchange.
    fn begin_drain(&mut self) {
        // Take what already waits in the accept queues: closing a listener resets those.
        for i in 0..self.listeners.len() {
            self.accept(i);
        }
        self.draining = true;
        for (mut l, _) in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.clients[key].drain(self.now);
            self.update_deadline(key);
        }
        log::debug!("worker={} draining {} connections", self.id, self.clients.len());
    }

    fn drive_client(&mut self, key: usize) {
        loop {
            let step = {
                let Some(c) = self.clients.get_mut(key) else { return };
                let up = c.uplink.and_then(|u| self.uplinks.get_mut(u as usize));
                c.drive(&mut ctx!(self), up)
            };
            if !self.apply(key, step) {
                return;
            }
        }
    }

    /// Acts on a client's step. Returns true if the client should be driven again.
    fn apply(&mut self, key: usize, step: Step) -> bool {
        match step {
            Step::Wait | Step::Yield => {
                if step == Step::Yield {
                    if let Some(c) = self.clients.get(key) {
                        self.yielded.push((key, c.gen));
                    }
                }
                self.update_deadline(key);
                false
            }
            Step::Close => {
                self.close_client(key);
                false
            }
            Step::Connect { target, fresh } => {
                self.detach_uplink(key, false);
                self.attach_uplink(key, target, fresh)
            }
            Step::DropUpstream => {
                self.detach_uplink(key, false);
                true
            }
            Step::Finished { reuse } => {
                self.detach_uplink(key, reuse);
                true
            }
        }
    }

    fn update_deadline(&mut self, key: usize) {
        if let Some(c) = self.clients.get_mut(key) {
            let at = c.next_deadline(&self.cfg);
            if let Some(at) = c.deadline.set(at) {
                self.timers.arm(at, token::make(Kind::Client, key, c.gen));
            }
        }
    }

    fn close_client(&mut self, key: usize) {
        self.detach_uplink(key, false);
        if self.clients.contains(key) {
            let mut c = self.clients.remove(key);
            c.release(&mut ctx!(self));
            self.shared.control.connections.fetch_sub(1, Ordering::Relaxed);
            if self.accept_paused && !self.draining {
                self.accept_paused = false;
                for i in 0..self.listeners.len() {
                    self.accept(i);
                }
            }
        }
    }

    /// Gives the client a connection to upstream `target`. Returns true if the client
    /// should be driven.
    fn attach_uplink(&mut self, key: usize, target: usize, fresh: bool) -> bool {
        let origin = self.cfg.upstreams.get(target).and_then(|u| u.origin());
        let attached = match origin {
            Some(o) => self.uplinks.attach(self.poll.registry(), o, target, key, fresh, &mut self.pool),
            None => Err("not an HTTP upstream".to_string()),
        };
        match attached {
            Ok(u) => {
                if let Some(c) = self.clients.get_mut(key) {
                    c.uplink = Some(u as u32);
                }
                true
            }
            Err(why) => {
                let step = match self.clients.get_mut(key) {
                    Some(c) => c.connect_error(&mut ctx!(self), why),
                    None => Step::Close,
                };
                self.apply(key, step)
            }
        }
    }

    /// Detaches the client's upstream connection: into the pool if `reuse`, else closed.
    fn detach_uplink(&mut self, key: usize, reuse: bool) {
        let Some(u) = self.clients.get_mut(key).and_then(|c| c.uplink.take()).map(|u| u as usize) else { return };
        self.uplinks.detach(u, reuse, self.now, &mut self.timers, &mut self.pool);
    }

    fn on_timer(&mut self, tok: Token) {
        let (kind, index, gen) = token::split(tok);
        match kind {
            Kind::Client => {
                let Some(c) = self.clients.get_mut(index).filter(|c| c.gen == gen) else { return };
                let (expired, rearm) = c.deadline.fired(self.now);
                if let Some(at) = rearm {
                    self.timers.arm(at, tok);
                }
                if expired {
                    let step = { self.clients[index].on_timeout(&mut ctx!(self)) };
                    if self.apply(index, step) || step == Step::Wait {
                        self.drive_client(index);
                    }
                }
            }
            Kind::Uplink => self.uplinks.on_timer(index, gen, self.now, &mut self.timers),
            Kind::Probe => {
                if self.probes.get(index).is_some_and(|p| p.gen == gen) {
                    let p = self.probes.remove(index);
                    self.finish_probe(p.upstream, Outcome::Unhealthy("check timed out".into()), p.started);
                }
            }
            Kind::Tick if index == FAST_TICK => {
                self.fast_armed = false;
                let active = self.route.active;
                if self.shared.board.suspect(active) {
                    if self.shared.board.claim_extra_probe(active, self.now, self.cfg.fast_interval()) {
                        self.start_probe(active);
                    } else {
                        self.arm_fast_probe();
                    }
                }
            }
            Kind::Tick if index == HEARTBEAT_TICK => {
                self.shared.metrics[self.id].beat(self.shared.control.now_ms());
                // An override or drain whose time is up ends here (one worker gets the change).
                if let Some(change) = self.shared.board.expire(&self.cfg, self.generation, Instant::now()) {
                    announce(&self.cfg, &self.shared, &change);
                    self.sync_route();
                }
                self.timers.arm(self.now + HEARTBEAT_EVERY, tok);
            }
            Kind::Tick if index == TRIM_TICK => {
                if self.pool.trim() > 0 {
                    release_free_memory();
                }
                self.timers.arm(self.now + TRIM_EVERY, tok);
            }
            Kind::Tick => self.tick(),
            Kind::Listener => {
                self.accept_paused = false;
                for i in 0..self.listeners.len() {
                    self.accept(i);
                }
            }
            Kind::Waker => {}
        }
    }

    /// This worker's turn in the probe schedule (tick k belongs to worker k mod N, so each
    /// upstream is checked once per interval whatever the worker count): check them all.
    fn tick(&mut self) {
        for i in 0..self.cfg.upstreams.len() {
            self.start_probe(i);
        }
        let period = self.cfg.check_interval * self.workers as u32;
        self.next_tick += period;
        if self.next_tick < self.now {
            // The loop stalled past a whole period: skip the missed turns.
            self.next_tick = self.now + period;
        }
        self.timers.arm(self.next_tick, token::make(Kind::Tick, 0, 0));
    }

    fn start_probe(&mut self, i: usize) {
        let cfg = self.cfg.clone();
        let Some(up) = cfg.upstreams.get(i) else { return };
        let origin = match &up.kind {
            UpKind::Origin(o) => o,
            UpKind::Site(site) => {
                // A directory is as healthy as it is readable: checked here, at once.
                let outcome = match site.check() {
                    Ok(()) => Outcome::Healthy,
                    Err(why) => Outcome::Unhealthy(why),
                };
                self.finish_probe(i, outcome, self.now);
                return;
            }
        };
        let gen = self.next_gen();
        let entry = self.probes.vacant_entry();
        let tok = token::make(Kind::Probe, entry.key(), gen);
        match uplink::connect(self.poll.registry(), origin, tok) {
            Ok((conn, _)) => {
                entry.insert(Probe::new(conn, i, gen, self.now));
                self.timers.arm(self.now + self.cfg.check_timeout, tok);
            }
            Err(why) => {
                self.shared.resolver.nudge();
                self.finish_probe(i, Outcome::Unhealthy(why), self.now);
            }
        }
    }

    fn drive_probe(&mut self, index: usize) {
        let p = &mut self.probes[index];
        let outcome = match self.probe_requests.get(p.upstream) {
            Some(request) => p.drive(request),
            None => Outcome::Unhealthy("upstream removed by a reload".into()),
        };
        if outcome != Outcome::Pending {
            let p = self.probes.remove(index);
            self.finish_probe(p.upstream, outcome, p.started);
        }
    }

    fn finish_probe(&mut self, i: usize, outcome: Outcome, started: Instant) {
        let took = Instant::now().saturating_duration_since(started);
        if outcome != Outcome::Pending {
            self.shared.metrics[self.id].check(i, outcome == Outcome::Healthy, took);
        }
        let took = Some(took);
        match outcome {
            Outcome::Pending => return,
            Outcome::Healthy => self.report(i, Observation { ok: true, why: "", took }),
            Outcome::Unhealthy(why) => {
                let (worker, upstream) = (self.id, self.cfg.name(i));
                log::debug!(event = "check_failed", worker, upstream, reason = why.as_str(); "worker={worker} {upstream} check failed: {why}");
                self.report(i, Observation { ok: false, why: &why, took });
                self.arm_fast_probe();
            }
        }
        self.sync_route();
    }

    /// Counts a result on the shared board. A change is this process's one event for it:
    /// logged here, once, and every worker is woken to follow it.
    fn report(&mut self, i: usize, obs: Observation) {
        let Some(change) = self.shared.board.report(&self.cfg, self.generation, i, obs) else { return };
        announce(&self.cfg, &self.shared, &change);
    }

    /// Live traffic saw upstream failures: count the refusals, and confirm the rest with a
    /// probe now rather than at the next interval (at most one per fast interval and
    /// upstream); the probe's result counts, the live failure does not.
    fn confirm_signals(&mut self) {
        let signals = std::mem::take(&mut self.signals);
        if signals.refused.iter().any(|&n| n > 0) {
            // An address that refuses may have moved: look the names up again soon.
            self.shared.resolver.nudge();
        }
        for i in 0..self.cfg.upstreams.len().min(32) {
            if signals.suspect & (1 << i) == 0 {
                continue;
            }
            for _ in 0..signals.refused[i] {
                self.report(i, Observation { ok: false, why: "connect refused (live request)", took: None });
            }
            if self.shared.board.claim_extra_probe(i, self.now, self.cfg.fast_interval()) {
                self.start_probe(i);
            }
        }
        self.arm_fast_probe();
        self.sync_route();
    }

    /// While the active upstream is suspect, probe it at the fast interval: the threshold
    /// still decides, it just gets its samples sooner.
    fn arm_fast_probe(&mut self) {
        if !self.fast_armed && self.shared.board.suspect(self.route.active) {
            self.fast_armed = true;
            self.timers.arm(self.now + self.cfg.fast_interval(), token::make(Kind::Tick, FAST_TICK, 0));
        }
    }

    /// Copies a newer routing decision into this loop; requests waiting on an upstream
    /// that just went unhealthy are rescued.
    fn sync_route(&mut self) {
        if self.shared.board.epoch() == self.epoch {
            return;
        }
        let (epoch, route, generation) = self.shared.board.route();
        if generation != self.generation {
            // The board already counts for a reloaded chain this loop has not seen yet:
            // the waker brings the configuration, and this again.
            return;
        }
        self.epoch = epoch;
        let lost = self.route.healthy & !route.healthy;
        self.route = route;
        if lost != 0 {
            self.rescue_all();
        }
    }

    /// Moves every replayable request still waiting on an unhealthy upstream along the
    /// chain.
    fn rescue_all(&mut self) {
        let keys: Vec<usize> = self.clients.iter().filter(|(_, c)| c.uplink.is_some()).map(|(k, _)| k).collect();
        for key in keys {
            let step = match self.clients.get_mut(key) {
                Some(c) => c.rescue(&mut ctx!(self)),
                None => None,
            };
            if let Some(step) = step {
                if self.apply(key, step) {
                    self.drive_client(key);
                }
            }
        }
    }
}

/// Hands memory the allocator holds free back to the system (glibc keeps freed blocks of
/// this size in its heaps otherwise, and the RSS of an attack would stay for good).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; no pointer of ours is
    // involved, and it is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A change is this process's one event for it: logged, sent as a notification, and every
/// worker woken to follow it.
pub fn announce(cfg: &Config, shared: &Shared, change: &Change) {
    log_change(cfg, change);
    shared.notifier.push(cfg, change);
    shared.control.wake_all();
}

/// The one log line of a routing change, with its event as fields for JSON logs.
fn log_change(cfg: &Config, c: &Change) {
    let name = |i: usize| cfg.name(i);
    let url = |i: usize| cfg.upstreams.get(i).map_or("?", |u| u.url.as_str());
    let (upstream, reason) = (name(c.upstream), c.reason.as_str());
    let (to, to_url) = (name(c.to.active), url(c.to.active));
    if c.cause != Cause::Health {
        let event = if c.cause == Cause::Expired { "hold_expired" } else { "operator" };
        log::warn!(event, upstream, reason, to, to_url; "{reason}; traffic -> {to} ({to_url})");
    } else if c.to.all_down() {
        log::warn!(event = "all_down", upstream, reason; "{reason}; every upstream is down");
    } else if c.moved() || c.from.all_down() {
        let event = if c.to.active < c.from.active || c.from.all_down() { "failback" } else { "failover" };
        log::warn!(event, upstream, reason, to, to_url; "{reason}; traffic -> {to} ({to_url})");
    } else {
        let event = if c.to.is_healthy(c.upstream) { "recovered" } else { "unhealthy" };
        log::warn!(event, upstream, reason, to; "{reason}; traffic stays on {to}");
    }
}
