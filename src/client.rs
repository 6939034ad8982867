//! The client connection's state machine: read a request head, hand the request to an
//! [`Exchange`] (or answer it itself: its own endpoints, errors, every upstream down), keep
//! the connection alive for the next (pipelined) request, close it gently.
//!
//! A client never creates, pools or closes an upstream connection: `drive()` returns a
//! [`Step`] and the worker acts on it. Between requests it holds a socket, a deadline and a
//! few flags; the exchange, with everything per request, exists only while one is in
//! flight.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::access_log::Done;
use crate::admin;
use crate::answer::Answer;
use crate::buffer::{Buf, Writer};
use crate::client_io::ClientIo;
use crate::config::Config;
use crate::exchange::{retry_after, Exchange, Flow};
use crate::http1::{self, Addressing, Forward};
use crate::metrics::NO_UPSTREAM;
use crate::timer::Deadline;
use crate::transport::{Conn, SockResult};
use crate::uplink::Uplink;
use crate::upstream::Upstream;

pub use crate::exchange::Ctx;

/// Passes through the drive loop before yielding to other connections.
const ROUNDS: usize = 16;
/// Lingering close (RFC 9112 9.6, nginx's `lingering_close`): after our last response a
/// client may still be sending; closing while its bytes arrive makes the kernel reset the
/// connection and can destroy the response before the client read it. So we half-close and
/// read and drop what comes, until the client stops: at most `--linger-time` after the
/// response, and this long between two reads.
const LINGER_GAP: Duration = Duration::from_secs(5);
/// While stopping, how long an idle keep-alive connection may still send a request.
const DRAIN_IDLE: Duration = Duration::from_millis(500);

/// What the worker must do after a drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing more until the next event or timer.
    Wait,
    /// More work is pending: drive again on the next loop turn.
    Yield,
    /// Close the client (and drop any upstream connection).
    Close,
    /// Attach a connection to upstream `target` (a pooled one unless `fresh`), then drive
    /// again. Any connection already attached is dropped first.
    Connect { target: usize, fresh: bool },
    /// Drop the attached upstream connection (it must not be reused), then drive again.
    DropUpstream,
    /// The exchange is over: pool the upstream connection if `reuse`, else drop it; then
    /// drive again.
    Finished { reuse: bool },
}

/// What one pass of a phase achieved.
enum Pass {
    Moved,
    Idle,
    Do(Step),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (more of) a request head; idle keep-alive when nothing is buffered.
    Head,
    /// A request is in flight: the exchange moves it.
    Exchange,
    /// Writing a response the proxy made itself.
    Answer { close: bool },
    /// Reading and dropping the rest of a request body nobody will read (its response
    /// went out already), then the next request.
    Discard { left: u64 },
    /// Our side is shut; discarding what the client still sends so it reads our answer.
    Linger,
}

pub struct Client {
    pub io: ClientIo,
    pub gen: u32,
    pub deadline: Deadline,
    /// The upstream connection attached to the exchange in flight (a slab key of the
    /// worker's), kept here so the worker can detach it after the exchange ended.
    pub uplink: Option<u32>,
    phase: Phase,
    ex: Option<Box<Exchange>>,
    /// When the first byte of the request head now being read arrived; while lingering,
    /// when the lingering began.
    head_started: Instant,
    /// How far `cin` was searched for the end of a request head without finding it.
    head_scan: u32,
    /// The process is stopping: close after the exchange in flight.
    draining: bool,
}

impl Client {
    pub fn new(sock: Conn, peer: SocketAddr, gen: u32, now: Instant) -> Client {
        Client {
            io: ClientIo::new(sock, peer, now),
            gen,
            deadline: Deadline::default(),
            uplink: None,
            phase: Phase::Head,
            ex: None,
            head_started: now,
            head_scan: 0,
            draining: false,
        }
    }

    /// The process is stopping: the connection closes after the exchange in flight
    /// (announced with `Connection: close` when the response head is not written yet). An
    /// idle one gets [`DRAIN_IDLE`] to send one more request, answered the same way: closing
    /// it at once would race with a request already on its way.
    pub fn drain(&mut self, now: Instant) {
        self.draining = true;
        if self.phase == Phase::Head && self.io.cin_empty() {
            self.io.last_activity = now;
        }
        if let Some(ex) = self.ex.as_mut() {
            ex.drain();
        }
    }

    /// Returns every buffer to the pool (the client is being closed).
    pub fn release(&mut self, cx: &mut Ctx) {
        if let Some(ex) = self.ex.take() {
            ex.end(cx, &self.io);
        }
        self.io.release(cx.pool);
    }

    /// Moves the connection as far as it can go without blocking.
    pub fn drive(&mut self, cx: &mut Ctx, mut up: Option<&mut Uplink>) -> Step {
        for _ in 0..ROUNDS {
            // TLS records (handshake flights, close_notify) may wait for a writable socket.
            if self.io.sock.wants_flush() && self.io.ready.can_write() {
                if let SockResult::Error(_) = self.io.sock.flush(&mut self.io.ready) {
                    return Step::Close;
                }
            }
            let pass = match self.phase {
                Phase::Head => self.on_head(cx),
                Phase::Exchange => self.on_exchange(cx, up.as_deref_mut()),
                Phase::Answer { close } => self.on_answer(cx, close),
                Phase::Discard { left } => self.on_discard(cx, left),
                Phase::Linger => self.on_linger(cx),
            };
            match pass {
                Pass::Moved => continue,
                Pass::Idle => {
                    self.release_empty(cx);
                    return Step::Wait;
                }
                Pass::Do(step) => {
                    if step != Step::Close {
                        self.release_empty(cx);
                    }
                    return step;
                }
            }
        }
        Step::Yield
    }

    fn release_empty(&mut self, cx: &mut Ctx) {
        self.io.release_empty(cx.pool);
        if let Some(ex) = self.ex.as_mut() {
            ex.release_empty(cx.pool);
        }
    }

    /// When the current phase times out.
    pub fn next_deadline(&self, cfg: &Config) -> Option<Instant> {
        let io = &self.io;
        Some(match (self.phase, self.ex.as_ref()) {
            (Phase::Head, _) if io.cin_empty() => {
                io.last_activity + if self.draining { DRAIN_IDLE } else { cfg.idle_timeout }
            }
            (Phase::Head, _) => self.head_started + cfg.header_timeout,
            (Phase::Exchange, Some(ex)) => ex.deadline(io, cfg),
            (Phase::Linger, _) => {
                // Stopping: lingering must not hold the process for long either.
                let gap = if self.draining { DRAIN_IDLE } else { LINGER_GAP };
                (io.last_activity + gap).min(self.head_started + cfg.linger_time)
            }
            (Phase::Discard { .. }, _) => io.last_activity + cfg.body_timeout,
            (Phase::Exchange, None) | (Phase::Answer { .. }, _) => io.last_activity + cfg.idle_timeout,
        })
    }

    /// The deadline passed: decide what that means in the current phase.
    pub fn on_timeout(&mut self, cx: &mut Ctx) -> Step {
        match self.phase {
            Phase::Head if self.io.cin_empty() => Step::Close,
            Phase::Head => {
                self.answer_error(cx, 408, "the request head did not arrive in time");
                Step::Wait
            }
            Phase::Exchange => match self.ex.as_mut() {
                Some(ex) => {
                    let flow = ex.on_timeout(&mut self.io, cx);
                    match self.follow(flow, cx) {
                        Pass::Do(step) => step,
                        Pass::Moved | Pass::Idle => Step::Wait,
                    }
                }
                None => Step::Close,
            },
            _ => Step::Close,
        }
    }

    /// The worker could not even start connecting to the upstream.
    pub fn connect_error(&mut self, cx: &mut Ctx, why: String) -> Step {
        let Some(ex) = self.ex.as_mut() else { return Step::Close };
        let flow = ex.failed(&mut self.io, cx, crate::retry::Failure::connect(why), false);
        match self.follow(flow, cx) {
            Pass::Do(step) => step,
            Pass::Moved | Pass::Idle => Step::Wait,
        }
    }

    /// Traffic switched: a request still waiting on an upstream that is now unhealthy
    /// moves along the chain if it can.
    pub fn rescue(&mut self, cx: &mut Ctx) -> Option<Step> {
        if self.phase != Phase::Exchange {
            return None;
        }
        let flow = self.ex.as_mut()?.rescue(&mut self.io, cx)?;
        match self.follow(flow, cx) {
            Pass::Do(step) => Some(step),
            Pass::Moved | Pass::Idle => None,
        }
    }

    fn on_head(&mut self, cx: &mut Ctx) -> Pass {
        let was_empty = self.io.cin_empty();
        let read = match self.io.read(cx.pool, true, cx.now) {
            Ok(n) => n,
            Err(_) => return Pass::Do(Step::Close),
        };
        if was_empty && read > 0 {
            self.head_started = cx.now;
        }
        if self.io.cin_empty() {
            return match (self.io.eof, read) {
                (true, _) => Pass::Do(Step::Close),
                (false, 0) => Pass::Idle,
                (false, _) => Pass::Moved,
            };
        }
        // Parse only once the head can be complete (or is already too long to be valid):
        // a head trickling in byte by byte is searched once, not parsed on every read.
        if let Some(cin) = self.io.cin.as_ref() {
            let bytes = cin.bytes();
            let from = (self.head_scan as usize).saturating_sub(3).min(bytes.len());
            let ended = bytes[from..].windows(2).any(|w| w == b"\n\n" || w == b"\n\r");
            let limits = cx.cfg.limits;
            // Past --max-request-line bytes, the parse that would say 414 is needed only
            // while the request line itself has not ended.
            let line_ok = bytes.len() <= limits.line || bytes[..=limits.line].contains(&b'\n');
            if !ended && line_ok && bytes.len() < limits.head && !self.io.eof {
                self.head_scan = bytes.len() as u32;
                return if read > 0 { Pass::Moved } else { Pass::Idle };
            }
        }
        let target = cx.route.active;
        // The route always names an upstream of this worker's configuration (see
        // `Worker::sync_route`).
        debug_assert!(target < cx.cfg.upstreams.len());
        let addressing = cx.cfg.upstreams.get(target).map_or(Addressing::NONE, Upstream::addressing);
        // With the access log on, a request without an X-Request-Id gets one.
        let mut id = [0u8; 20];
        let id_len = cx.access.as_deref_mut().map_or(0, |log| log.next_id(&mut id));
        let fwd = Forward {
            prefix: addressing.prefix,
            client_ip: self.io.peer.ip(),
            proto: if self.io.sock.tls.is_some() { "https" } else { "http" },
            host: addressing.host,
            request_id: (id_len > 0).then_some(&id[..id_len]),
            max_body: cx.cfg.max_body,
            limits: cx.cfg.limits,
        };
        let mut head = cx.pool.take();
        let cin = self.io.cin.as_ref().map_or(&[][..], Buf::bytes);
        let parsed = http1::parse_request(cin, &fwd, &mut Writer { buf: &mut head, overflow: false });
        if let (Some(log), Ok(Some(req))) = (cx.access.as_deref_mut(), &parsed) {
            log.head.capture(cin, &req.marks, &id[..id_len], req.minor, target);
            log.head.sent_before = self.io.sent;
        }
        let req = match parsed {
            Ok(Some(req)) => req,
            Ok(None) | Err(_) => {
                cx.pool.put(head);
                return match parsed {
                    Ok(None) if self.io.eof => Pass::Do(Step::Close),
                    Ok(None) => {
                        if read > 0 {
                            Pass::Moved
                        } else {
                            Pass::Idle
                        }
                    }
                    Err(rej) => {
                        log::debug!("client={} rejected: {} {}", self.io.peer, rej.status(), rej.reason());
                        self.answer_error(cx, rej.status(), rej.reason());
                        Pass::Moved
                    }
                    Ok(Some(_)) => Pass::Moved,
                };
            }
        };
        if let Some(b) = self.io.cin.as_mut() {
            b.consume(req.head_len);
        }
        self.head_scan = 0;
        let mut req = req;
        req.keep_alive &= !self.draining;
        if let Some(kind) = req.admin {
            cx.pool.put(head);
            let out = cx.pool.ensure(&mut self.io.cout);
            let from = admin::Sources {
                cfg: cx.cfg,
                board: cx.board,
                control: cx.control,
                metrics: cx.all_metrics,
                private: false,
            };
            let (status, close) = admin::answer(kind, &req, from, out);
            cx.metrics.request(NO_UPSTREAM, status, true, None);
            self.log_answer(cx, status);
            self.phase = Phase::Answer { close };
            return Pass::Moved;
        }
        if cx.route.nowhere() {
            cx.pool.put(head);
            let retry_after = match retry_after(cx.cfg) {
                1 => "Retry-After: 1\r\n",
                5 => "Retry-After: 5\r\n",
                _ => "Retry-After: 30\r\n",
            };
            let detail = match cx.cfg.upstreams.len() {
                2 => "both the primary and the backup are down".to_string(),
                n => format!("all {n} upstreams are down"),
            };
            let out = cx.pool.ensure(&mut self.io.cout);
            Answer::error(503, &detail, retry_after, req.accepts_json, req.is_head, out);
            cx.metrics.request(NO_UPSTREAM, 503, true, None);
            self.log_answer(cx, 503);
            self.phase = Phase::Answer { close: true };
            return Pass::Moved;
        }
        log::debug!("client={} request to {}", self.io.peer, cx.cfg.name(target));
        self.io.last_activity = cx.now;
        let ex = self.ex.insert(Exchange::start(req, target, head, cx));
        if let Some(log) = cx.access.as_deref_mut() {
            std::mem::swap(&mut ex.log, &mut log.head);
        }
        self.phase = Phase::Exchange;
        let flow = ex.attempt(&mut self.io, cx, false);
        self.follow(flow, cx)
    }

    fn on_exchange(&mut self, cx: &mut Ctx, up: Option<&mut Uplink>) -> Pass {
        let Some(ex) = self.ex.as_mut() else { return Pass::Do(Step::Close) };
        let flow = ex.relay(&mut self.io, cx, up);
        self.follow(flow, cx)
    }

    /// Acts on what the exchange asked for; an exchange that ended is dropped here.
    fn follow(&mut self, flow: Flow, cx: &mut Ctx) -> Pass {
        match flow {
            Flow::Moved => Pass::Moved,
            Flow::Idle => Pass::Idle,
            Flow::Connect { target, fresh } => Pass::Do(Step::Connect { target, fresh }),
            Flow::DropUpstream => Pass::Do(Step::DropUpstream),
            Flow::Close => Pass::Do(Step::Close),
            Flow::Answered => {
                self.end_exchange(cx);
                self.phase = Phase::Answer { close: true };
                Pass::Do(Step::DropUpstream)
            }
            Flow::Done { reuse, keep_alive, discard } => {
                self.end_exchange(cx);
                self.phase = if keep_alive && !self.draining {
                    if discard > 0 {
                        Phase::Discard { left: discard }
                    } else {
                        Phase::Head
                    }
                } else {
                    self.shut_client(cx.now);
                    Phase::Linger
                };
                Pass::Do(Step::Finished { reuse })
            }
        }
    }

    fn end_exchange(&mut self, cx: &mut Ctx) {
        if let Some(ex) = self.ex.take() {
            ex.end(cx, &self.io);
        }
    }

    /// Logs an answer the proxy made without an exchange (the head is in the log's own slot).
    fn log_answer(&mut self, cx: &mut Ctx, status: u16) {
        let Some(log) = cx.access.as_deref_mut() else { return };
        let duration = cx.now.saturating_duration_since(self.head_started);
        let done = Done { head: None, status, duration, upstream: None, upstream_status: 0, ttfb: None, tries: &[] };
        log.log(cx.cfg, &self.io, done);
    }

    fn on_answer(&mut self, cx: &mut Ctx, close: bool) -> Pass {
        let n = match self.io.write(None, &mut 0, cx.now) {
            Ok(n) => n,
            Err(_) => return Pass::Do(Step::Close),
        };
        if !self.io.cout_empty() {
            return if n > 0 { Pass::Moved } else { Pass::Idle };
        }
        if close {
            self.shut_client(cx.now);
            self.phase = Phase::Linger;
        } else {
            self.phase = Phase::Head;
        }
        Pass::Moved
    }

    fn on_discard(&mut self, cx: &mut Ctx, mut left: u64) -> Pass {
        if let Some(cin) = self.io.cin.as_mut() {
            let n = cin.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            cin.consume(n);
            left -= n as u64;
        }
        if left == 0 {
            // What follows in `cin` is the next (pipelined) request.
            self.phase = Phase::Head;
            return Pass::Moved;
        }
        self.phase = Phase::Discard { left };
        match self.io.read(cx.pool, false, cx.now) {
            Err(_) => Pass::Do(Step::Close),
            Ok(0) if self.io.eof => Pass::Do(Step::Close),
            Ok(0) => Pass::Idle,
            Ok(_) => Pass::Moved,
        }
    }

    /// Half-closes toward the client; what it still sends is read and dropped (see
    /// [`LINGER_GAP`]), so its kernel does not reset the connection before it read our
    /// last response.
    fn shut_client(&mut self, now: Instant) {
        self.io.sock.shutdown_write(&mut self.io.ready);
        self.io.last_activity = now;
        self.head_started = now;
    }

    fn on_linger(&mut self, cx: &mut Ctx) -> Pass {
        if self.io.eof {
            return Pass::Do(Step::Close);
        }
        // A pooled buffer for the read only: an empty one goes back after the pass.
        let buf = cx.pool.ensure(&mut self.io.cin);
        buf.clear();
        let (n, res) = self.io.sock.read_into(&mut self.io.ready, buf);
        buf.clear();
        if n > 0 {
            self.io.last_activity = cx.now;
        }
        match res {
            SockResult::Closed | SockResult::Error(_) => Pass::Do(Step::Close),
            SockResult::Continue => Pass::Moved,
            SockResult::WouldBlock => Pass::Idle,
        }
    }

    /// Queues an error answer; the connection closes after it.
    fn answer_error(&mut self, cx: &mut Ctx, status: u16, detail: &str) {
        match self.ex.as_mut() {
            // Counted and logged when the exchange ends.
            Some(ex) => (ex.status, ex.by_proxy) = (status, true),
            None => cx.metrics.request(NO_UPSTREAM, status, true, None),
        }
        let out = cx.pool.ensure(&mut self.io.cout);
        Answer::error(status, detail, "", false, false, out);
        if let Some(b) = self.io.cin.as_mut() {
            b.clear();
        }
        if self.ex.is_none() {
            // A request that did not parse: logged without its parts.
            if let Some(log) = cx.access.as_deref_mut() {
                log.head.clear(cx.route.active);
                log.head.sent_before = self.io.sent;
            }
            self.log_answer(cx, status);
        }
        self.end_exchange(cx);
        self.phase = Phase::Answer { close: true };
    }
}

#[cfg(test)]
mod tests {
    /// An idle keep-alive connection is this struct in a slab: everything per request lives
    /// in the exchange, which exists only while a request is in flight.
    #[test]
    fn an_idle_connection_holds_no_per_request_state() {
        use std::mem::size_of;
        let (client, exchange) = (size_of::<super::Client>(), size_of::<crate::exchange::Exchange>());
        // mio keeps a selector id in each socket in debug builds: 8 bytes more there.
        let limit = if cfg!(debug_assertions) { 216 } else { 208 };
        assert!(client <= limit, "Client is {client} bytes");
        assert!(exchange > client, "the per-request part ({exchange} bytes) is not in the connection");
    }
}
