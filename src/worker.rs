//! One event loop: poll, dispatch by token, run timers, accept, attach and pool upstream
//! connections, run health probes, and apply routing decisions.
//!
//! The worker owns everything mutable of its thread: the poller, the slabs, the timers,
//! the buffer pool, the idle upstream pool and its copy of the route. It never parses
//! HTTP; clients and probes do, and tell it what they need.

use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::buffer::Pool;
use crate::client::{Client, Ctx, Signals, Step};
use crate::config::Config;
use crate::health::{connect_error, probe_request, Outcome, Probe, Route, Shared};
use crate::readiness::{Readiness, HUP, R};
use crate::timer::{Deadline, Timers};
use crate::tls::ServerSide;
use crate::token::{self, Kind};
use crate::transport::{Conn, SockResult};
use crate::upstream::{IdlePool, Target, UpState, Uplink, UpstreamUrl};

/// Idle upstream connections kept per target and worker.
const POOL_PER_TARGET: usize = 256;
/// How long an idle upstream connection is kept (below common upstream keep-alive timeouts).
const POOL_IDLE: Duration = Duration::from_secs(4);
/// Timer index of the fast probe of a suspect primary (index 0 is the regular tick).
const FAST_TICK: usize = 1;
/// How soon a worker that stopped accepting at `--max-connections` looks again.
const FULL_RETRY: Duration = Duration::from_millis(50);
/// Pause before accepting again after the process ran out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The context a client drives with, borrowed field by field so the slabs stay free.
macro_rules! ctx {
    ($w:expr) => {
        Ctx {
            cfg: &$w.cfg,
            pool: &mut $w.pool,
            shared: &$w.shared,
            route: $w.route,
            now: $w.now,
            signals: &mut $w.signals,
        }
    };
}

pub struct Worker {
    id: usize,
    workers: usize,
    poll: Poll,
    /// Listeners with whether they speak TLS; index = token index.
    listeners: Vec<(TcpListener, bool)>,
    /// The listener certificate as this worker uses it.
    tls_side: Option<ServerSide>,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    clients: Slab<Client>,
    uplinks: Slab<Uplink>,
    probes: Slab<Probe>,
    idle: IdlePool,
    pool: Pool,
    timers: Timers,
    route: Route,
    epoch: u64,
    gen: u32,
    now: Instant,
    /// Clients that used up their turn with work left: (key, generation).
    yielded: Vec<(usize, u32)>,
    probe_requests: [Vec<u8>; 2],
    next_tick: Instant,
    accept_paused: bool,
    /// Failures seen on live traffic since the last loop turn.
    signals: Signals,
    /// A fast probe of the suspect primary is scheduled.
    fast_armed: bool,
    /// Stopping: no more accepts; the loop ends when the last client is gone.
    draining: bool,
    /// Which reloaded configuration this worker runs.
    config_epoch: u64,
}

impl Worker {
    /// Sets up a worker around listeners bound by the caller (each with whether it speaks
    /// TLS). `start` is the instant the probe schedule counts from (the same for every worker).
    pub fn new(
        id: usize,
        workers: usize,
        listeners: Vec<(TcpListener, bool)>,
        cfg: Arc<Config>,
        shared: Arc<Shared>,
        start: Instant,
    ) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let mut listeners = listeners;
        for (i, (l, _)) in listeners.iter_mut().enumerate() {
            poll.registry().register(l, token::make(Kind::Listener, i, 0), Interest::READABLE)?;
        }
        let tls_side = cfg.tls.as_ref().map(|t| t.side());
        let waker = Arc::new(Waker::new(poll.registry(), token::make(Kind::Waker, 0, 0))?);
        shared.add_waker(waker);
        let (epoch, route) = shared.route();
        let probe_requests = [probe_request(&cfg, Target::Primary), probe_request(&cfg, Target::Backup)];
        let mut w = Worker {
            id,
            workers,
            poll,
            listeners,
            tls_side,
            cfg,
            shared,
            clients: Slab::with_capacity(1024),
            uplinks: Slab::with_capacity(256),
            probes: Slab::with_capacity(4),
            idle: IdlePool::new(POOL_PER_TARGET),
            // Free buffers kept for reuse (16 MiB at 32 KiB each); past that they go back to
            // the allocator, so a burst of connections does not pin its memory for good.
            pool: Pool::new(512),
            timers: Timers::new(),
            route,
            epoch,
            gen: 0,
            now: Instant::now(),
            yielded: Vec::new(),
            probe_requests,
            next_tick: start,
            accept_paused: false,
            signals: Signals::default(),
            fast_armed: false,
            draining: false,
            config_epoch: 0,
        };
        w.next_tick = start + w.cfg.check_interval * id as u32;
        w.timers.arm(w.next_tick, token::make(Kind::Tick, 0, 0));
        Ok(w)
    }

    fn next_gen(&mut self) -> u32 {
        self.gen = token::next_gen(self.gen);
        self.gen
    }

    /// Runs the loop forever (until the process exits).
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
                    Kind::Waker => {
                        if let Some((epoch, cfg)) = self.shared.config_since(self.config_epoch) {
                            self.config_epoch = epoch;
                            self.apply_config(cfg);
                        }
                        if self.shared.stopping() && !self.draining {
                            self.begin_drain();
                        }
                        self.sync_route();
                    }
                    Kind::Client => {
                        if let Some(c) = self.clients.get_mut(index).filter(|c| c.gen == gen) {
                            c.ready.record(ev);
                            self.drive_client(index);
                        }
                    }
                    Kind::Uplink => {
                        if let Some(u) = self.uplinks.get_mut(index).filter(|u| u.gen == gen) {
                            u.ready.record(ev);
                            match u.client {
                                Some(c) => self.drive_client(c),
                                None => self.check_idle(index),
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
            if self.signals.suspect != [false; 2] {
                self.confirm_signals();
            }
            if self.draining && self.clients.is_empty() {
                log::debug!("worker={} drained", self.id);
                return Ok(());
            }
        }
    }

    fn accept(&mut self, which: usize) {
        if self.accept_paused {
            return;
        }
        let Some(&(_, tls)) = self.listeners.get(which) else { return };
        if let (Some(t), Some(side)) = (self.cfg.tls.as_ref(), self.tls_side.as_mut()) {
            t.refresh(side);
        }
        loop {
            if self.shared.connections.load(Ordering::Relaxed) >= self.cfg.max_connections {
                // Full: leave new connections in the kernel backlog rather than accept and
                // starve them; look again when one closes or a moment later.
                self.accept_paused = true;
                self.timers.arm(self.now + FULL_RETRY, token::make(Kind::Listener, 0, 0));
                return;
            }
            match self.listeners[which].0.accept() {
                Ok((mut sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    let session = match (tls, self.tls_side.as_ref()) {
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
                    let entry = self.clients.vacant_entry();
                    let key = entry.key();
                    let tok = token::make(Kind::Client, key, gen);
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
                    self.shared.connections.fetch_add(1, Ordering::Relaxed);
                    entry.insert(c);
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
    /// pooled connections to an upstream whose URL changed are closed; requests in flight
    /// finish on the connections they have.
    fn apply_config(&mut self, cfg: Arc<Config>) {
        for target in [Target::Primary, Target::Backup] {
            let (old, new) = (self.cfg.upstream(target), cfg.upstream(target));
            if old.url != new.url || old.addr != new.addr {
                while let Some(u) = self.idle.take(target) {
                    self.uplinks.remove(u);
                }
            }
        }
        self.probe_requests = [probe_request(&cfg, Target::Primary), probe_request(&cfg, Target::Backup)];
        self.tls_side = cfg.tls.as_ref().map(|t| t.side());
        self.cfg = cfg;
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
                let up = c.uplink.and_then(|u| self.uplinks.get_mut(u));
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
            c.release(&mut self.pool);
            self.shared.connections.fetch_sub(1, Ordering::Relaxed);
            if self.accept_paused && !self.draining {
                self.accept_paused = false;
                for i in 0..self.listeners.len() {
                    self.accept(i);
                }
            }
        }
    }

    /// Gives the client a connection to `target`: a pooled one if there is a clean one
    /// (unless `fresh`), else a new one. Returns true if the client should be driven.
    fn attach_uplink(&mut self, key: usize, target: Target, fresh: bool) -> bool {
        if !fresh {
            while let Some(u) = self.idle.take(target) {
                if self.idle_is_clean(u) {
                    let up = &mut self.uplinks[u];
                    up.state = UpState::Busy;
                    up.client = Some(key);
                    up.deadline.set(None);
                    self.clients[key].uplink = Some(u);
                    return true;
                }
                self.uplinks.remove(u);
            }
        }
        let gen = self.next_gen();
        let entry = self.uplinks.vacant_entry();
        let u = entry.key();
        let tok = token::make(Kind::Uplink, u, gen);
        match connect(&self.poll, self.cfg.upstream(target), tok) {
            Ok(sock) => {
                entry.insert(Uplink {
                    sock,
                    ready: Readiness::new(),
                    target,
                    state: UpState::Connecting,
                    client: Some(key),
                    reused: false,
                    gen,
                    idle_since: self.now,
                    deadline: Deadline::default(),
                });
                self.clients[key].uplink = Some(u);
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
        let Some(u) = self.clients.get_mut(key).and_then(|c| c.uplink.take()) else { return };
        let Some(up) = self.uplinks.get_mut(u) else { return };
        up.client = None;
        if reuse && up.state == UpState::Busy {
            up.state = UpState::Idle;
            up.reused = true;
            up.idle_since = self.now;
            let target = up.target;
            if let Some(at) = up.deadline.set(Some(self.now + POOL_IDLE)) {
                self.timers.arm(at, token::make(Kind::Uplink, u, up.gen));
            }
            if self.idle_is_clean(u) && self.idle.put(target, u) {
                return;
            }
        }
        self.uplinks.remove(u);
    }

    /// An idle pooled connection must have nothing to read: data or EOF means the
    /// upstream closed it or broke framing. Checks, clearing a stale readable bit.
    fn idle_is_clean(&mut self, u: usize) -> bool {
        let Some(up) = self.uplinks.get_mut(u) else { return false };
        if up.ready.event & (R | HUP) == 0 {
            return true;
        }
        if up.sock.tls.is_some() {
            // TLS may carry records that are not data (session tickets): let the session
            // read them; only plaintext, a close or an error make the connection unusable.
            let mut scratch = self.pool.take();
            let (n, res) = up.sock.read_into(&mut up.ready, &mut scratch);
            self.pool.put(scratch);
            return n == 0 && res == SockResult::WouldBlock;
        }
        let mut byte = [0u8; 1];
        match up.sock.sock.read(&mut byte) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                up.ready.event &= !(R | HUP);
                true
            }
            _ => false,
        }
    }

    /// An event on an idle pooled connection: drop it if the upstream closed it.
    fn check_idle(&mut self, u: usize) {
        if !self.idle_is_clean(u) {
            if let Some(up) = self.uplinks.get(u) {
                let target = up.target;
                self.idle.remove(target, u);
                self.uplinks.remove(u);
            }
        }
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
            Kind::Uplink => {
                let Some(up) = self.uplinks.get_mut(index).filter(|u| u.gen == gen) else { return };
                let (expired, rearm) = up.deadline.fired(self.now);
                if let Some(at) = rearm {
                    self.timers.arm(at, tok);
                }
                if expired && up.state == UpState::Idle {
                    let target = up.target;
                    self.idle.remove(target, index);
                    self.uplinks.remove(index);
                }
            }
            Kind::Probe => {
                if self.probes.get(index).is_some_and(|p| p.gen == gen) {
                    let p = self.probes.remove(index);
                    self.finish_probe(p.target, Outcome::Unhealthy("check timed out".into()));
                }
            }
            Kind::Tick if index == FAST_TICK => {
                self.fast_armed = false;
                if self.route.active == Target::Primary && self.shared.primary_suspect() {
                    if self.shared.claim_extra_probe(Target::Primary, self.now, self.cfg.fast_interval()) {
                        self.start_probe(Target::Primary);
                    } else {
                        self.arm_fast_probe();
                    }
                }
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

    /// This worker's turn in the probe schedule: probe both upstreams.
    fn tick(&mut self) {
        for target in [Target::Primary, Target::Backup] {
            self.start_probe(target);
        }
        let period = self.cfg.check_interval * self.workers as u32;
        self.next_tick += period;
        if self.next_tick < self.now {
            // The loop stalled past a whole period: skip the missed turns.
            self.next_tick = self.now + period;
        }
        self.timers.arm(self.next_tick, token::make(Kind::Tick, 0, 0));
    }

    fn start_probe(&mut self, target: Target) {
        let gen = self.next_gen();
        let entry = self.probes.vacant_entry();
        let tok = token::make(Kind::Probe, entry.key(), gen);
        let deadline = self.now + self.cfg.check_timeout;
        match connect(&self.poll, self.cfg.upstream(target), tok) {
            Ok(conn) => {
                entry.insert(Probe::new(conn, target, gen, deadline));
                self.timers.arm(deadline, tok);
            }
            Err(why) => self.finish_probe(target, Outcome::Unhealthy(why)),
        }
    }

    fn drive_probe(&mut self, index: usize) {
        let p = &mut self.probes[index];
        let outcome = p.drive(&self.probe_requests[p.target.index()]);
        if !matches!(outcome, Outcome::Pending) {
            let p = self.probes.remove(index);
            self.finish_probe(p.target, outcome);
        }
    }

    fn finish_probe(&mut self, target: Target, outcome: Outcome) {
        match outcome {
            Outcome::Pending => return,
            Outcome::Healthy => self.shared.report(&self.cfg, target, true, ""),
            Outcome::Unhealthy(why) => {
                log::debug!("worker={} {} check failed: {why}", self.id, target.name());
                self.shared.report(&self.cfg, target, false, &why);
                self.arm_fast_probe();
            }
        }
        self.sync_route();
    }

    /// Live traffic saw upstream failures: confirm with a probe now rather than at the
    /// next interval (at most one per fast interval and target).
    fn confirm_signals(&mut self) {
        let signals = std::mem::take(&mut self.signals);
        for target in [Target::Primary, Target::Backup] {
            if !signals.suspect[target.index()] {
                continue;
            }
            let why = signals.why[target.index()].as_deref().unwrap_or("live request failed");
            for _ in 0..signals.failures[target.index()] {
                self.shared.report(&self.cfg, target, false, why);
            }
            if self.shared.claim_extra_probe(target, self.now, self.cfg.fast_interval()) {
                self.start_probe(target);
            }
        }
        self.arm_fast_probe();
        self.sync_route();
    }

    /// While the primary is suspect, probe it at the fast interval: the threshold still
    /// decides, it just gets its samples sooner.
    fn arm_fast_probe(&mut self) {
        if !self.fast_armed && self.route.active == Target::Primary && self.shared.primary_suspect() {
            self.fast_armed = true;
            self.timers.arm(self.now + self.cfg.fast_interval(), token::make(Kind::Tick, FAST_TICK, 0));
        }
    }

    /// Copies a newer routing decision into this loop.
    fn sync_route(&mut self) {
        if self.shared.epoch() == self.epoch {
            return;
        }
        for (_, reason, after) in self.shared.transitions_since(self.epoch) {
            let down = if after.both_down { "; both upstreams are down" } else { "" };
            log::warn!("worker={} {reason}; traffic -> {}{down}", self.id, after.active.name());
        }
        let (epoch, route) = self.shared.route();
        self.epoch = epoch;
        let rescue = self.route.active == Target::Primary && route.active == Target::Backup;
        self.route = route;
        if rescue {
            self.rescue_all();
        }
    }

    /// Moves every replayable request still waiting on the primary to the backup.
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

/// Starts a non-blocking connection to an upstream (with a TLS session for `https://`),
/// registered under `tok`.
fn connect(poll: &Poll, up: &UpstreamUrl, tok: Token) -> Result<Conn, String> {
    let mut sock = TcpStream::connect(up.addr).map_err(|e| connect_error(&e))?;
    let _ = sock.set_nodelay(true);
    poll.registry()
        .register(&mut sock, tok, Interest::READABLE | Interest::WRITABLE)
        .map_err(|e| format!("cannot register a connection: {e}"))?;
    let tls = match &up.tls_client {
        Some(t) => Some(Box::new(t.session()?)),
        None => None,
    };
    Ok(Conn { sock, tls })
}
