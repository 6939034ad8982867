//! Connections to origin upstreams: opening one (with TLS for `https://`), finishing the
//! non-blocking connect, and the per-upstream pool of idle keep-alive connections. Requests
//! and health probes both connect through here.
//!
//! This file never reads or writes HTTP: a connection is a socket with readiness and
//! bookkeeping. What flows over it is the exchange's or the probe's business.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
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
    /// The address it connects to, and the rest of the answer it came from.
    dial: Dial,
    tok: Token,
}

impl Uplink {
    /// Finishes a non-blocking connect once the socket says so: `Ok(true)` when connected.
    /// A refused address is skipped for the next one of the answer before the connect
    /// counts as failed.
    pub fn connected(&mut self, registry: &Registry) -> Result<bool, String> {
        if self.state != UpState::Connecting {
            return Ok(true);
        }
        loop {
            match check_connect(&self.sock, &mut self.ready) {
                Ok(true) => {
                    self.state = UpState::Busy;
                    return Ok(true);
                }
                Ok(false) => return Ok(false),
                Err(why) if why == REFUSED => {
                    let Some(addr) = self.dial.next() else { return Err(why) };
                    log::debug!("{} refused; trying {addr}", self.dial.addr);
                    self.sock.sock = open(registry, addr, self.tok)?;
                    self.ready = Readiness::new();
                }
                Err(why) => return Err(why),
            }
        }
    }
}

/// Where a connection goes: the address, and the answer it was picked from.
pub struct Dial {
    pub addr: SocketAddr,
    /// The resolver's generation of the answer (a pooled connection to an address that
    /// left a newer answer is not reused).
    pub generation: u64,
    list: Arc<[SocketAddr]>,
    start: usize,
    tried: usize,
}

impl Dial {
    /// The next address of the answer not tried yet for this connection.
    fn next(&mut self) -> Option<SocketAddr> {
        if self.tried >= self.list.len() {
            return None;
        }
        self.addr = self.list[(self.start + self.tried) % self.list.len()];
        self.tried += 1;
        Some(self.addr)
    }
}

/// Starts a non-blocking connection to an origin (with a TLS session for `https://`),
/// registered under `tok` for both directions: to the next address in rotation, or the one
/// after it if that one refuses at once.
pub fn connect(registry: &Registry, origin: &Origin, tok: Token) -> Result<(Conn, Dial), String> {
    let generation = origin.addrs.generation();
    let (list, start) = origin.addrs.pick();
    if list.is_empty() {
        return Err(origin.addrs.missing());
    }
    let mut dial = Dial { addr: list[start], generation, list, start, tried: 0 };
    let mut refused = String::new();
    while let Some(addr) = dial.next() {
        match open(registry, addr, tok) {
            Ok(sock) => {
                let tls = match &origin.tls_client {
                    Some(t) => Some(Box::new(t.session()?)),
                    None => None,
                };
                return Ok((Conn { sock, tls }, dial));
            }
            Err(why) if why == REFUSED => refused = why,
            Err(why) => return Err(why),
        }
    }
    Err(refused)
}

fn open(registry: &Registry, addr: SocketAddr, tok: Token) -> Result<TcpStream, String> {
    let mut sock = TcpStream::connect(addr).map_err(|e| connect_error(&e))?;
    let _ = sock.set_nodelay(true);
    registry
        .register(&mut sock, tok, Interest::READABLE | Interest::WRITABLE)
        .map_err(|e| format!("cannot register a connection: {e}"))?;
    Ok(sock)
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
                let moved =
                    self.slab.get(u).is_some_and(|up| !origin.addrs.still_has(up.dial.addr, up.dial.generation));
                if !moved && self.idle_is_clean(u, pool) {
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
        let tok = token::make(Kind::Uplink, u, gen);
        let (sock, dial) = connect(registry, origin, tok)?;
        entry.insert(Uplink {
            sock,
            ready: Readiness::new(),
            upstream,
            state: UpState::Connecting,
            client: Some(client),
            reused: false,
            gen,
            deadline: Deadline::default(),
            dial,
            tok,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Origin;
    use mio::{Events, Poll};

    /// Polls until the connection `u` is made (or fails).
    fn finish(poll: &mut Poll, ups: &mut Uplinks, u: usize) -> Result<bool, String> {
        let mut events = Events::with_capacity(8);
        for _ in 0..100 {
            let up = ups.get_mut(u).expect("the connection");
            match up.connected(poll.registry()) {
                Ok(false) => {}
                done => return done,
            }
            poll.poll(&mut events, Some(Duration::from_millis(20))).expect("poll");
            for ev in events.iter() {
                if let Some(up) = ups.get_mut(u) {
                    up.ready.record(ev);
                }
            }
        }
        Ok(false)
    }

    #[test]
    fn a_refused_address_is_skipped_for_the_next_and_moved_addresses_are_not_reused() {
        let live = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let live_addr = live.local_addr().expect("addr");
        let dead_addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let origin = Origin::parse(&format!("http://{live_addr}")).expect("url");
        origin.addrs.set(&[dead_addr, live_addr]);
        let mut poll = Poll::new().expect("poll");
        let mut pool = Pool::new(4);
        let mut timers = Timers::new();
        let mut ups = Uplinks::new();
        // Whichever address the rotation starts at, the live one is reached.
        let mut accepted = Vec::new();
        for round in 0..2 {
            let u = ups.attach(poll.registry(), &origin, 0, 7, true, &mut pool).expect("a connection");
            assert_eq!(finish(&mut poll, &mut ups, u), Ok(true), "round {round}");
            assert_eq!(ups.get_mut(u).map(|up| up.dial.addr), Some(live_addr), "round {round}");
            accepted.push(live.accept().expect("the live upstream sees it"));
            ups.detach(u, true, Instant::now(), &mut timers, &mut pool);
        }
        let pooled = ups.attach(poll.registry(), &origin, 0, 7, false, &mut pool).expect("pooled");
        assert_eq!(ups.get_mut(pooled).map(|up| up.state), Some(UpState::Busy), "reused from the pool");
        ups.detach(pooled, true, Instant::now(), &mut timers, &mut pool);

        // The name moves away from the live address: the pooled connection is not reused.
        origin.addrs.set(&[dead_addr]);
        let u = ups.attach(poll.registry(), &origin, 0, 7, false, &mut pool);
        match u {
            Ok(u) => {
                assert_eq!(ups.get_mut(u).map(|up| up.state), Some(UpState::Connecting), "a new connection");
                assert_eq!(finish(&mut poll, &mut ups, u), Err(REFUSED.to_string()));
            }
            Err(why) => assert_eq!(why, REFUSED),
        }
    }
}
