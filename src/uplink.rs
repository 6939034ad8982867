//! Connections to origin upstreams: opening one (with TLS for `https://`), finishing the
//! non-blocking connect, and the per-upstream pool of idle keep-alive connections. Requests
//! and health probes both connect through here.
//!
//! This file never reads or writes HTTP: a connection is a socket with readiness and
//! bookkeeping. What flows over it is the exchange's or the probe's business.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::buffer::Pool;
use crate::readiness::{Readiness, HUP, R, W};
use crate::timer::{Deadline, Timers};
use crate::token::{self, Kind};
use crate::transport::{Conn, SockResult};
use crate::upstream::{Origin, MAX_UPSTREAMS};

/// Idle upstream connections kept per upstream and worker.
const POOL_PER_UPSTREAM: usize = 256;
/// How long an idle upstream connection is kept (below common upstream keep-alive timeouts).
const POOL_IDLE: Duration = Duration::from_secs(4);

/// What an upstream connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpState {
    /// Non-blocking connect in progress.
    Connecting,
    /// Attached to a client exchange.
    Busy,
    /// In the idle pool, waiting for reuse.
    Idle,
}

/// One connection to an origin.
pub struct Uplink {
    pub sock: Conn,
    pub ready: Readiness,
    /// Position of its upstream in the chain.
    pub upstream: usize,
    pub state: UpState,
    /// Slab key of the client using it, while `Busy` or `Connecting`.
    pub client: Option<usize>,
    /// True once it carried a complete exchange (a reused connection may have been closed
    /// by the upstream meanwhile, so a failure on it is retried on a fresh one).
    pub reused: bool,
    pub gen: u32,
    /// Expiry while idle in the pool.
    deadline: Deadline,
}

impl Uplink {
    /// Finishes a non-blocking connect once the socket says so: `Ok(true)` when connected.
    pub fn connected(&mut self) -> Result<bool, String> {
        if self.state != UpState::Connecting {
            return Ok(true);
        }
        let done = check_connect(&self.sock, &mut self.ready)?;
        if done {
            self.state = UpState::Busy;
        }
        Ok(done)
    }
}

/// Starts a non-blocking connection to an origin (with a TLS session for `https://`),
/// registered under `tok` for both directions.
pub fn connect(registry: &Registry, origin: &Origin, tok: Token) -> Result<Conn, String> {
    let mut sock = TcpStream::connect(origin.addr).map_err(|e| connect_error(&e))?;
    let _ = sock.set_nodelay(true);
    registry
        .register(&mut sock, tok, Interest::READABLE | Interest::WRITABLE)
        .map_err(|e| format!("cannot register a connection: {e}"))?;
    let tls = match &origin.tls_client {
        Some(t) => Some(Box::new(t.session()?)),
        None => None,
    };
    Ok(Conn { sock, tls })
}

/// Checks a non-blocking connect (mio's contract: writable, then `take_error`, then
/// `peer_addr`): `Ok(true)` connected, `Ok(false)` not yet.
pub fn check_connect(conn: &Conn, ready: &mut Readiness) -> Result<bool, String> {
    if ready.event & (W | HUP) == 0 {
        return Ok(false);
    }
    match conn.sock.take_error() {
        Ok(Some(e)) | Err(e) => return Err(connect_error(&e)),
        Ok(None) => {}
    }
    match conn.sock.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => {
            ready.event &= !W;
            Ok(false)
        }
        Err(e) => Err(connect_error(&e)),
    }
}

/// How a refused connect is worded (a refusal counts toward the thresholds).
pub const REFUSED: &str = "connect refused";

pub fn connect_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => REFUSED.into(),
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

/// The upstream connections of one worker: the ones in use and the idle pools.
pub struct Uplinks {
    slab: Slab<Uplink>,
    /// Idle connections per upstream, most recently used last.
    idle: [Vec<usize>; MAX_UPSTREAMS],
    gen: u32,
}

impl Uplinks {
    pub fn new() -> Uplinks {
        Uplinks { slab: Slab::with_capacity(256), idle: std::array::from_fn(|_| Vec::new()), gen: 0 }
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut Uplink> {
        self.slab.get_mut(key)
    }

    /// The connection behind an event, if the event is not stale.
    pub fn live(&mut self, key: usize, gen: u32) -> Option<&mut Uplink> {
        self.slab.get_mut(key).filter(|u| u.gen == gen)
    }

    /// A connection to `upstream` for client `client`: a clean pooled one unless `fresh`,
    /// else a new one (still connecting).
    pub fn attach(
        &mut self,
        registry: &Registry,
        origin: &Origin,
        upstream: usize,
        client: usize,
        fresh: bool,
        pool: &mut Pool,
    ) -> Result<usize, String> {
        if !fresh {
            while let Some(u) = self.idle[upstream].pop() {
                if self.idle_is_clean(u, pool) {
                    let up = &mut self.slab[u];
                    up.state = UpState::Busy;
                    up.client = Some(client);
                    up.deadline.set(None);
                    return Ok(u);
                }
                self.slab.remove(u);
            }
        }
        self.gen = token::next_gen(self.gen);
        let gen = self.gen;
        let entry = self.slab.vacant_entry();
        let u = entry.key();
        let sock = connect(registry, origin, token::make(Kind::Uplink, u, gen))?;
        entry.insert(Uplink {
            sock,
            ready: Readiness::new(),
            upstream,
            state: UpState::Connecting,
            client: Some(client),
            reused: false,
            gen,
            deadline: Deadline::default(),
        });
        Ok(u)
    }

    /// A client is done with connection `u`: into the pool if `reuse` (and it is clean),
    /// else closed.
    pub fn detach(&mut self, u: usize, reuse: bool, now: Instant, timers: &mut Timers, pool: &mut Pool) {
        let Some(up) = self.slab.get_mut(u) else { return };
        up.client = None;
        if reuse && up.state == UpState::Busy && self.idle[up.upstream].len() < POOL_PER_UPSTREAM {
            up.state = UpState::Idle;
            up.reused = true;
            if let Some(at) = up.deadline.set(Some(now + POOL_IDLE)) {
                timers.arm(at, token::make(Kind::Uplink, u, up.gen));
            }
            let upstream = up.upstream;
            if self.idle_is_clean(u, pool) {
                self.idle[upstream].push(u);
                return;
            }
        }
        self.slab.remove(u);
    }

    /// An event on an idle pooled connection: drop it if the upstream closed it.
    pub fn check_idle(&mut self, u: usize, pool: &mut Pool) {
        if !self.idle_is_clean(u, pool) {
            self.forget_idle(u);
        }
    }

    /// A timer of connection `u` fired: an idle one past its time is closed.
    pub fn on_timer(&mut self, u: usize, gen: u32, now: Instant, timers: &mut Timers) {
        let Some(up) = self.live(u, gen) else { return };
        let (expired, rearm) = up.deadline.fired(now);
        if let Some(at) = rearm {
            timers.arm(at, token::make(Kind::Uplink, u, gen));
        }
        if expired && up.state == UpState::Idle {
            self.forget_idle(u);
        }
    }

    /// Closes every idle connection to `upstream` (its address changed on reload).
    pub fn close_idle(&mut self, upstream: usize) {
        for u in std::mem::take(&mut self.idle[upstream]) {
            self.slab.remove(u);
        }
    }

    fn forget_idle(&mut self, u: usize) {
        let Some(up) = self.slab.get(u) else { return };
        let list = &mut self.idle[up.upstream];
        if let Some(i) = list.iter().position(|&k| k == u) {
            list.remove(i);
        }
        self.slab.remove(u);
    }

    /// An idle pooled connection must have nothing to read: data or EOF means the
    /// upstream closed it or broke framing. Checks, clearing a stale readable bit.
    fn idle_is_clean(&mut self, u: usize, pool: &mut Pool) -> bool {
        let Some(up) = self.slab.get_mut(u) else { return false };
        if up.ready.event & (R | HUP) == 0 {
            return true;
        }
        if up.sock.tls.is_some() {
            // TLS may carry records that are not data (session tickets): let the session
            // read them; only plaintext, a close or an error make the connection unusable.
            let mut scratch = pool.take();
            let (n, res) = up.sock.read_into(&mut up.ready, &mut scratch);
            pool.put(scratch);
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
}

impl Default for Uplinks {
    fn default() -> Self {
        Self::new()
    }
}
