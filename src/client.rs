//! The client-side state machine: read a request head, pick the upstream, relay the body
//! and the response, keep the connection alive, answer the next (pipelined) request.
//!
//! A client owns its buffers and the state of the exchange in flight. It drives the
//! upstream connection the worker attached to it, but never creates, pools or closes one:
//! `drive()` returns a [`Step`] and the worker acts on it. Every failure on the data path
//! becomes one status code here, in [`Client::upstream_failed`] or an [`http1::Reject`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::answer::Answer;
use crate::buffer::{Buf, Pool, Writer};
use crate::config::Config;
use crate::framing::{Body, ChunkError, Framing, Rewrite};
use crate::health::{connect_error, kind_text, Route, Shared};
use crate::http1::{self, Addressing, Admin, Forward, Request, Response};
use crate::readiness::{Readiness, W};
use crate::timer::Deadline;
use crate::transport::{Conn, SockResult};
use crate::upstream::{Target, UpState, Uplink};

/// Passes through the drive loop before yielding to other connections.
const ROUNDS: usize = 16;
/// How long a closing connection may keep sending before we stop reading it.
const LINGER: Duration = Duration::from_secs(2);
/// While stopping, how long an idle keep-alive connection may still send a request.
const DRAIN_IDLE: Duration = Duration::from_millis(500);
/// How much a closing connection may send before we stop reading it.
const LINGER_BYTES: usize = 1 << 20;
/// How long a client that sent `Expect: 100-continue` waits for the upstream's 100 before
/// the proxy sends one itself (curl waits as long before it sends the body anyway).
const EXPECT_WAIT: Duration = Duration::from_secs(1);

/// What the worker must do after a drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing more until the next event or timer.
    Wait,
    /// More work is pending: drive again on the next loop turn.
    Yield,
    /// Close the client (and drop any upstream connection).
    Close,
    /// Attach an upstream connection to `target` (a pooled one unless `fresh`), then drive
    /// again. Any connection already attached is dropped first.
    Connect { target: Target, fresh: bool },
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

/// What the client needs from the worker while it drives.
pub struct Ctx<'a> {
    pub cfg: &'a Config,
    pub pool: &'a mut Pool,
    pub shared: &'a Shared,
    pub route: Route,
    pub now: Instant,
    /// Failures seen on live traffic, for the worker to act on after the drive.
    pub signals: &'a mut Signals,
}

/// What live traffic told about the upstreams during one loop turn.
#[derive(Debug, Default, Clone)]
pub struct Signals {
    /// Something failed on this target (indexed by [`Target::index`]): confirm with a probe.
    pub suspect: [bool; 2],
    /// Unambiguous failures (connect refused or timed out, no response head in time): each
    /// counts toward `--fail-threshold` like a failed probe.
    pub failures: [u32; 2],
    /// What the last counted failure of each target was, in words.
    pub why: [Option<String>; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (more of) a request head; idle keep-alive when nothing is buffered.
    Head,
    /// A request is being relayed to an upstream and its response back.
    Relay,
    /// After a 101: bytes both ways until both sides close.
    Tunnel,
    /// Writing a response the proxy made itself.
    Answer { close: bool },
    /// Our side is shut; discarding what the client still sends so it reads our answer.
    Linger,
}

/// Why an upstream exchange failed before the response head.
#[derive(Debug)]
pub enum Fail {
    Connect(String),
    /// The connect did not finish in time (nothing was sent).
    ConnectTimeout,
    Timeout(&'static str),
    Io(String),
    Closed,
    BadResponse(&'static str),
}

pub struct Client {
    pub sock: Conn,
    pub ready: Readiness,
    pub peer: SocketAddr,
    pub gen: u32,
    pub deadline: Deadline,
    pub uplink: Option<usize>,
    phase: Phase,
    /// Bytes from the client (request heads and bodies, raw).
    cin: Option<Buf>,
    /// Bytes to the client that the proxy wrote: response heads and its own answers.
    cout: Option<Buf>,
    /// The rewritten request head, kept until the response head arrives (for a retry).
    up_head: Option<Buf>,
    /// Bytes from the upstream (response bodies, raw).
    uin: Option<Buf>,
    req: Request,
    target: Target,
    req_body: Body,
    /// Validated request-body bytes at the front of `cin`, ready to send.
    req_fwd: usize,
    up_sent: usize,
    body_sent: u64,
    resp: Option<Response>,
    resp_body: Body,
    /// Validated response-body bytes at the front of `uin`, ready to send.
    resp_fwd: usize,
    client_eof: bool,
    up_eof: bool,
    up_shut: bool,
    retried: bool,
    head_started: Instant,
    last_activity: Instant,
    lingered: usize,
    /// Copies of the request-body bytes sent to the primary, kept for a replay on the
    /// backup until the response head arrives (at most `--retry-buffer`).
    replay: Vec<Buf>,
    replay_len: u64,
    /// While re-sending: where in the replay chain the next byte to send is, as (buffer,
    /// offset); None when not re-sending.
    replaying: Option<(usize, usize)>,
    /// Why this request may not be re-sent once it reached an upstream (None: it may).
    skip: Option<&'static str>,
    /// Already moved from the primary to the backup once.
    failed_over: bool,
    /// The process is stopping: close after the exchange in flight.
    draining: bool,
    /// How far `cin` was searched for the end of a request head without finding it.
    head_scan: usize,
    /// The request has `Expect: 100-continue` and no interim or final response has been
    /// relayed for it yet.
    expect_wait: bool,
}

const NO_REQUEST: Request = Request {
    head_len: 0,
    minor: 1,
    is_head: false,
    framing: Framing::None,
    keep_alive: false,
    upgrade: false,
    expect_continue: false,
    replay_ok: false,
    accepts_json: false,
    admin: None,
};

impl Client {
    pub fn new(sock: Conn, peer: SocketAddr, gen: u32, now: Instant) -> Client {
        Client {
            sock,
            ready: Readiness::new(),
            peer,
            gen,
            deadline: Deadline::default(),
            uplink: None,
            phase: Phase::Head,
            cin: None,
            cout: None,
            up_head: None,
            uin: None,
            req: NO_REQUEST,
            target: Target::Primary,
            req_body: Body::Done,
            req_fwd: 0,
            up_sent: 0,
            body_sent: 0,
            resp: None,
            resp_body: Body::Done,
            resp_fwd: 0,
            client_eof: false,
            up_eof: false,
            up_shut: false,
            retried: false,
            head_started: now,
            last_activity: now,
            lingered: 0,
            replay: Vec::new(),
            replay_len: 0,
            replaying: None,
            skip: None,
            failed_over: false,
            draining: false,
            head_scan: 0,
            expect_wait: false,
        }
    }

    /// The process is stopping: the connection closes after the exchange in flight
    /// (announced with `Connection: close` when the response head is not written yet). An
    /// idle one gets [`DRAIN_IDLE`] to send one more request, answered the same way: closing
    /// it at once would race with a request already on its way.
    pub fn drain(&mut self, now: Instant) {
        self.draining = true;
        if self.phase == Phase::Head && self.cin.as_ref().is_none_or(Buf::is_empty) {
            self.last_activity = now;
        }
        if self.resp.is_none() {
            self.req.keep_alive = false;
        }
    }

    /// Returns every buffer to the pool (the client is being closed).
    pub fn release(&mut self, pool: &mut Pool) {
        for slot in [&mut self.cin, &mut self.cout, &mut self.up_head, &mut self.uin] {
            if let Some(b) = slot.take() {
                pool.put(b);
            }
        }
        self.drop_replay(pool);
    }

    fn drop_replay(&mut self, pool: &mut Pool) {
        for b in self.replay.drain(..) {
            pool.put(b);
        }
        self.replay_len = 0;
        self.replaying = None;
    }

    /// Moves the connection as far as it can go without blocking.
    pub fn drive(&mut self, cx: &mut Ctx, mut up: Option<&mut Uplink>) -> Step {
        for _ in 0..ROUNDS {
            // TLS records (handshake flights, close_notify) may wait for a writable socket.
            if self.sock.wants_flush() && self.ready.can_write() {
                if let SockResult::Error(_) = self.sock.flush(&mut self.ready) {
                    return Step::Close;
                }
            }
            let pass = match self.phase {
                Phase::Head => self.on_head(cx),
                Phase::Relay => match up.as_deref_mut() {
                    Some(up) => self.on_relay(cx, up),
                    None => Pass::Do(Step::Connect { target: self.target, fresh: false }),
                },
                Phase::Tunnel => match up.as_deref_mut() {
                    Some(up) => self.on_tunnel(cx, up),
                    None => Pass::Do(Step::Close),
                },
                Phase::Answer { close } => self.on_answer(cx, close),
                Phase::Linger => self.on_linger(cx),
            };
            match pass {
                Pass::Moved => continue,
                Pass::Idle => {
                    self.release_empty(cx.pool);
                    return Step::Wait;
                }
                Pass::Do(step) => {
                    if step != Step::Close {
                        self.release_empty(cx.pool);
                    }
                    return step;
                }
            }
        }
        Step::Yield
    }

    fn release_empty(&mut self, pool: &mut Pool) {
        pool.release_if_empty(&mut self.cin);
        pool.release_if_empty(&mut self.cout);
        pool.release_if_empty(&mut self.uin);
        if self.phase != Phase::Relay || self.resp.is_some() {
            if let Some(b) = self.up_head.as_mut() {
                b.clear();
            }
            pool.release_if_empty(&mut self.up_head);
            if !self.replay.is_empty() {
                self.drop_replay(pool);
            }
        }
    }

    /// The request body is incomplete and everything received that can be sent was sent
    /// (what may be held is a partial chunk-size line): the next move is the client's.
    fn awaiting_body(&self) -> bool {
        self.up_sent > 0 && !self.req_body.is_done() && self.req_fwd == 0 && self.replaying.is_none()
    }

    /// The client sent `Expect: 100-continue` and, as it may, waits for a 100 before its
    /// body; nothing has come back yet.
    fn awaiting_continue(&self) -> bool {
        self.expect_wait && self.body_sent == 0 && self.awaiting_body() && self.cin.as_ref().is_none_or(Buf::is_empty)
    }

    /// When the current phase times out.
    pub fn next_deadline(&self, cfg: &Config) -> Option<Instant> {
        Some(match self.phase {
            Phase::Head if self.cin.as_ref().is_none_or(Buf::is_empty) => {
                self.last_activity + if self.draining { DRAIN_IDLE } else { cfg.idle_timeout }
            }
            Phase::Head => self.head_started + cfg.header_timeout,
            Phase::Relay if self.resp.is_none() && self.awaiting_continue() => self.last_activity + EXPECT_WAIT,
            Phase::Relay if self.resp.is_none() && self.awaiting_body() => self.last_activity + cfg.body_timeout,
            Phase::Relay if self.resp.is_none() => {
                self.last_activity + if self.up_sent == 0 { cfg.connect_timeout } else { cfg.upstream_timeout }
            }
            Phase::Relay | Phase::Tunnel | Phase::Answer { .. } => self.last_activity + cfg.idle_timeout,
            Phase::Linger => self.last_activity + LINGER,
        })
    }

    /// The deadline passed: decide what that means in the current phase.
    pub fn on_timeout(&mut self, cx: &mut Ctx) -> Step {
        match self.phase {
            Phase::Head if self.cin.as_ref().is_none_or(Buf::is_empty) => Step::Close,
            Phase::Head => {
                self.answer_error(cx, 408, "the request head did not arrive in time");
                Step::Wait
            }
            Phase::Relay if self.resp.is_none() && self.awaiting_continue() => {
                // Each side may be waiting for the other: the client for a 100, the upstream
                // (which may not know Expect at all) for the body. Say 100 for it: a client
                // may send its body after a wait anyway, and more 1xx may follow.
                self.expect_wait = false;
                cx.pool.ensure(&mut self.cout).push(b"HTTP/1.1 100 Continue\r\n\r\n");
                self.last_activity = cx.now;
                Step::Wait
            }
            Phase::Relay if self.resp.is_none() && self.awaiting_body() => {
                // The client stopped sending its body: its fault, not the upstream's.
                self.answer_error(cx, 408, "the request body stopped arriving");
                Step::DropUpstream
            }
            Phase::Relay if self.resp.is_none() => {
                let fail = if self.up_sent == 0 { Fail::ConnectTimeout } else { Fail::Timeout("no response in time") };
                match self.upstream_failed(cx, fail, false) {
                    Pass::Do(step) => step,
                    _ => Step::Wait,
                }
            }
            _ => Step::Close,
        }
    }

    fn read_client(&mut self, cx: &mut Ctx) -> Result<usize, Step> {
        if self.client_eof || !self.ready.can_read() {
            return Ok(0);
        }
        // A head starts in a small buffer (a slow client holds little), a body in a full one.
        cx.pool.grow_if_full(&mut self.cin);
        let buf =
            if self.phase == Phase::Head { cx.pool.ensure_small(&mut self.cin) } else { cx.pool.ensure(&mut self.cin) };
        if buf.is_full() {
            return Ok(0);
        }
        let was_empty = buf.is_empty();
        let (n, res) = self.sock.read_into(&mut self.ready, buf);
        if n > 0 {
            self.last_activity = cx.now;
            if was_empty {
                self.head_started = cx.now;
            }
        }
        match res {
            SockResult::Closed => self.client_eof = true,
            SockResult::Error(_) => return Err(Step::Close),
            _ => {}
        }
        Ok(n)
    }

    /// Writes `cout` then the forwardable part of `uin` to the client.
    fn write_client(&mut self, cx: &mut Ctx) -> Result<usize, Step> {
        let head = self.cout.as_ref().map_or(&[][..], Buf::bytes);
        let body = self.uin.as_ref().map_or(&[][..], |b| &b.bytes()[..self.resp_fwd]);
        if (head.is_empty() && body.is_empty()) || !self.ready.can_write() {
            return Ok(0);
        }
        let head_len = head.len();
        let (n, res) = self.sock.write_two(&mut self.ready, head, body);
        let from_head = n.min(head_len);
        if let Some(b) = self.cout.as_mut() {
            b.consume(from_head);
        }
        if n > from_head {
            if let Some(b) = self.uin.as_mut() {
                b.consume(n - from_head);
            }
            self.resp_fwd -= n - from_head;
        }
        if n > 0 {
            self.last_activity = cx.now;
        }
        match res {
            SockResult::Error(_) => Err(Step::Close),
            _ => Ok(n),
        }
    }

    fn on_head(&mut self, cx: &mut Ctx) -> Pass {
        let read = match self.read_client(cx) {
            Ok(n) => n,
            Err(step) => return Pass::Do(step),
        };
        if self.cin.as_ref().is_none_or(Buf::is_empty) {
            return match (self.client_eof, read) {
                (true, _) => Pass::Do(Step::Close),
                (false, 0) => Pass::Idle,
                (false, _) => Pass::Moved,
            };
        }
        // Parse only once the head can be complete (or is already too long to be valid):
        // a head trickling in byte by byte is searched once, not parsed on every read.
        if let Some(cin) = self.cin.as_ref() {
            let bytes = cin.bytes();
            let from = self.head_scan.saturating_sub(3).min(bytes.len());
            let ended = bytes[from..].windows(2).any(|w| w == b"\n\n" || w == b"\n\r");
            let limits = cx.cfg.limits;
            // Past --max-request-line bytes, the parse that would say 414 is needed only
            // while the request line itself has not ended.
            let line_ok = bytes.len() <= limits.line || bytes[..=limits.line].contains(&b'\n');
            if !ended && line_ok && bytes.len() < limits.head && !self.client_eof {
                self.head_scan = bytes.len();
                return if read > 0 { Pass::Moved } else { Pass::Idle };
            }
        }
        let upstream = match cx.route.active {
            Target::Primary => &cx.cfg.primary,
            Target::Backup => &cx.cfg.backup,
        };
        let fwd = Forward {
            prefix: &upstream.prefix,
            client_ip: self.peer.ip(),
            proto: if self.sock.tls.is_some() { "https" } else { "http" },
            host: upstream.host_override(),
            max_body: cx.cfg.max_body,
            limits: cx.cfg.limits,
        };
        let out = cx.pool.ensure(&mut self.up_head);
        out.clear();
        let cin = self.cin.as_ref().map_or(&[][..], Buf::bytes);
        let parsed = http1::parse_request(cin, &fwd, &mut Writer { buf: out, overflow: false });
        let req = match parsed {
            Ok(Some(req)) => req,
            Ok(None) if self.client_eof => return Pass::Do(Step::Close),
            Ok(None) => return if read > 0 { Pass::Moved } else { Pass::Idle },
            Err(rej) => {
                log::debug!("client={} rejected: {} {}", self.peer, rej.status(), rej.reason());
                self.answer_error(cx, rej.status(), rej.reason());
                return Pass::Moved;
            }
        };
        if let Some(b) = self.cin.as_mut() {
            b.consume(req.head_len);
        }
        self.head_scan = 0;
        let mut req = req;
        req.keep_alive &= !self.draining;
        if let Some(admin) = req.admin {
            self.answer_admin(cx, admin, &req);
            return Pass::Moved;
        }
        if cx.route.both_down {
            self.req = req;
            let retry_after = match cx.cfg.check_interval.as_secs() {
                0 | 1 => "Retry-After: 1\r\n",
                2..=5 => "Retry-After: 5\r\n",
                _ => "Retry-After: 30\r\n",
            };
            let out = cx.pool.ensure(&mut self.cout);
            let detail = "both the primary and the backup are down";
            Answer::error(503, detail, retry_after, req.accepts_json, req.is_head, out);
            self.phase = Phase::Answer { close: true };
            return Pass::Moved;
        }
        self.req = req;
        self.target = cx.route.active;
        self.req_body = Body::start(req.framing, cx.cfg.max_body);
        self.expect_wait = req.expect_continue && !self.req_body.is_done();
        self.req_fwd = 0;
        self.up_sent = 0;
        self.body_sent = 0;
        self.resp = None;
        self.resp_body = Body::Done;
        self.resp_fwd = 0;
        self.up_eof = false;
        self.up_shut = false;
        self.retried = false;
        self.failed_over = false;
        self.drop_replay(cx.pool);
        self.skip = if req.replay_ok { None } else { Some("method") };
        self.last_activity = cx.now;
        self.phase = Phase::Relay;
        log::debug!("client={} request to {}", self.peer, self.target.name());
        Pass::Do(Step::Connect { target: self.target, fresh: false })
    }

    fn on_relay(&mut self, cx: &mut Ctx, up: &mut Uplink) -> Pass {
        let mut moved = false;
        if up.state == UpState::Connecting {
            match check_connect(up) {
                Ok(false) => {}
                Ok(true) => {
                    up.state = UpState::Busy;
                    moved = true;
                }
                Err(why) => return self.upstream_failed(cx, Fail::Connect(why), up.reused),
            }
        }
        if up.state == UpState::Busy && up.sock.wants_flush() && up.ready.can_write() {
            if let SockResult::Error(k) = up.sock.flush(&mut up.ready) {
                let fail = io_fail(up, format!("send failed: {}", kind_text(k)));
                return self.upstream_failed(cx, fail, up.reused);
            }
        }

        // Request body: read, validate, send.
        match self.read_client(cx) {
            Ok(n) => moved |= n > 0,
            Err(step) => return Pass::Do(step),
        }
        if !self.req_body.is_done() {
            if let Some(cin) = self.cin.as_mut() {
                // What reaches the upstream is re-serialized from what was parsed: one
                // framing, whatever extensions or spellings the client used.
                match take_body(&mut self.req_body, cin, self.req_fwd, Some(Rewrite::Canonical)) {
                    Ok(n) => self.req_fwd += n,
                    Err(ChunkError::TooLarge) => {
                        return self.abort_request(cx, 413, "request body is larger than the limit")
                    }
                    Err(e) => {
                        log::debug!("client={} invalid chunked body: {e:?}", self.peer);
                        return self.abort_request(cx, 400, "invalid chunked request body");
                    }
                }
            }
        }
        // Past the scan, what is held beyond `req_fwd` is a partial chunk-size line: with
        // the client gone, it will never be whole.
        if self.client_eof && !self.req_body.is_done() {
            log::debug!("client={} closed in the middle of its request body", self.peer);
            return Pass::Do(Step::Close);
        }
        if up.state == UpState::Busy && up.ready.can_write() && !self.up_shut {
            let head = self.up_head.as_ref().map_or(&[][..], |b| &b.bytes()[self.up_sent.min(b.len())..]);
            let replaying = self.replaying;
            let body = if up.sock.handshaking() {
                // Body bytes stay in our buffers until the TLS handshake is done: if it
                // fails, the request goes to the backup whole (the head is kept anyway).
                &[][..]
            } else if let Some((i, off)) = replaying {
                &self.replay[i].bytes()[off..]
            } else {
                self.cin.as_ref().map_or(&[][..], |b| &b.bytes()[..self.req_fwd])
            };
            if !head.is_empty() || !body.is_empty() {
                let head_len = head.len();
                let (n, res) = up.sock.write_two(&mut up.ready, head, body);
                let from_head = n.min(head_len);
                self.up_sent += from_head;
                let k = n - from_head;
                if let (true, Some((i, off))) = (k > 0, replaying) {
                    // The chain stays whole until the response head: a replay can fail too.
                    self.replaying = if off + k < self.replay[i].len() {
                        Some((i, off + k))
                    } else if i + 1 < self.replay.len() {
                        Some((i + 1, 0))
                    } else {
                        None
                    };
                    if self.replaying.is_none() && self.failed_over {
                        self.drop_replay(cx.pool);
                    }
                } else if k > 0 {
                    if let Some(b) = self.cin.as_mut() {
                        if self.target == Target::Primary && !self.failed_over && self.skip.is_none() {
                            if self.replay_len + k as u64 > cx.cfg.retry_buffer {
                                self.skip = Some("body-too-large");
                                for r in self.replay.drain(..) {
                                    cx.pool.put(r);
                                }
                                self.replay_len = 0;
                            } else {
                                keep(&mut self.replay, cx.pool, &b.bytes()[..k]);
                                self.replay_len += k as u64;
                            }
                        }
                        b.consume(k);
                    }
                    self.req_fwd -= k;
                }
                self.body_sent += k as u64;
                if n > 0 {
                    moved = true;
                    self.last_activity = cx.now;
                }
                if let SockResult::Error(k) = res {
                    if self.resp.is_none() {
                        let fail = io_fail(up, format!("send failed: {}", kind_text(k)));
                        return self.upstream_failed(cx, fail, up.reused);
                    }
                    // The upstream answered already and stopped reading: finish relaying.
                    self.up_shut = true;
                }
            }
        }

        // Response: read, parse the head, validate the body, send.
        if up.state == UpState::Busy && !self.up_eof && up.ready.can_read() && !self.resp_complete() {
            let buf = cx.pool.ensure(&mut self.uin);
            if !buf.is_full() {
                let handshaking = up.sock.handshaking();
                let (n, res) = up.sock.read_into(&mut up.ready, buf);
                // The handshake finishing unblocks the request body: go round again.
                moved |= handshaking && !up.sock.handshaking();
                if n > 0 {
                    moved = true;
                    self.last_activity = cx.now;
                }
                match res {
                    SockResult::Closed => self.up_eof = true,
                    SockResult::Error(k) if self.resp.is_none() => {
                        let fail = io_fail(up, kind_text(k));
                        return self.upstream_failed(cx, fail, up.reused);
                    }
                    SockResult::Error(_) => return Pass::Do(Step::Close),
                    _ => {}
                }
            }
        }
        while self.resp.is_none() && self.uin.as_ref().is_some_and(|b| !b.is_empty()) {
            let uin = self.uin.as_ref().map_or(&[][..], Buf::bytes);
            let out = cx.pool.ensure(&mut self.cout);
            let mark = out.len();
            let mut parsed = http1::parse_response(uin, &self.req, b"", &mut Writer { buf: out, overflow: false });
            if let Ok(Some(resp)) = parsed {
                if self.target == Target::Primary && cx.cfg.retry_on_status.contains(&resp.status) {
                    cx.signals.suspect[Target::Primary.index()] = true;
                    out.truncate(mark);
                    match can_replay(self.failed_over, self.skip) {
                        Ok(()) => {
                            log::debug!(
                                "client={} primary answered {}; retrying on the backup",
                                self.peer,
                                resp.status
                            );
                            cx.shared.retries.fetch_add(1, Ordering::Relaxed);
                            return self.fail_over(cx);
                        }
                        Err(why) => {
                            let extra = skip_header(why).as_bytes();
                            parsed =
                                http1::parse_response(uin, &self.req, extra, &mut Writer { buf: out, overflow: false });
                        }
                    }
                }
            }
            match parsed {
                Ok(None) if self.uin.as_ref().is_some_and(Buf::is_full) => {
                    return self.upstream_failed(cx, Fail::BadResponse("response head too large"), false)
                }
                Ok(None) => break,
                Err(bad) => return self.upstream_failed(cx, Fail::BadResponse(bad.0), false),
                Ok(Some(resp)) => {
                    if let Some(b) = self.uin.as_mut() {
                        b.consume(resp.head_len);
                    }
                    moved = true;
                    self.expect_wait = false;
                    if (100..200).contains(&resp.status) && resp.status != 101 {
                        continue;
                    }
                    self.resp = Some(resp);
                    self.resp_body = Body::start(resp.framing, u64::MAX);
                }
            }
        }
        if self.resp.is_none() && self.up_eof {
            return self.upstream_failed(cx, Fail::Closed, up.reused);
        }
        if let (Some(resp), Some(uin)) = (self.resp, self.uin.as_mut()) {
            if !self.resp_body.is_done() {
                let how = resp.dechunk.then_some(Rewrite::Decode);
                match take_body(&mut self.resp_body, uin, self.resp_fwd, how) {
                    Ok(n) => self.resp_fwd += n,
                    Err(e) => {
                        log::debug!("client={} upstream sent an invalid chunked body: {e:?}", self.peer);
                        return Pass::Do(Step::Close);
                    }
                }
            }
        }
        if self.up_eof && self.resp.is_some() && !self.resp_body.is_done() {
            if matches!(self.resp_body, Body::UntilClose) {
                self.resp_body = Body::Done;
            } else if self.resp_fwd == 0 {
                log::debug!("client={} upstream closed in the middle of the response body", self.peer);
                return Pass::Do(Step::Close);
            }
        }
        match self.write_client(cx) {
            Ok(n) => moved |= n > 0,
            Err(step) => return Pass::Do(step),
        }

        let flushed = self.cout.as_ref().is_none_or(Buf::is_empty) && self.resp_fwd == 0;
        if let Some(resp) = self.resp.filter(|_| flushed && self.resp_body.is_done()) {
            if resp.status == 101 {
                self.phase = Phase::Tunnel;
                return Pass::Moved;
            }
            let extra = self.uin.as_ref().is_some_and(|b| !b.is_empty());
            let req_done = self.req_body.is_done() && self.req_fwd == 0;
            let reuse = resp.reusable && !self.up_eof && !extra && req_done && !self.up_shut;
            self.phase = if resp.keep_alive && req_done && !self.client_eof && !self.draining {
                Phase::Head
            } else {
                self.shut_client(cx.now);
                Phase::Linger
            };
            self.resp = None;
            if let Some(b) = self.uin.as_mut() {
                b.clear();
            }
            return Pass::Do(Step::Finished { reuse });
        }
        if moved {
            Pass::Moved
        } else {
            Pass::Idle
        }
    }

    fn resp_complete(&self) -> bool {
        self.resp.is_some() && self.resp_body.is_done()
    }

    /// The request itself turned out invalid mid-body.
    fn abort_request(&mut self, cx: &mut Ctx, status: u16, why: &str) -> Pass {
        if self.resp.is_some() {
            return Pass::Do(Step::Close);
        }
        self.answer_error(cx, status, why);
        Pass::Do(Step::DropUpstream)
    }

    /// Whether the request may be sent again after it (maybe) reached the primary.
    fn can_replay(&self) -> Result<(), &'static str> {
        can_replay(self.failed_over, self.skip)
    }

    /// Sends the request again, from the start, on a connection to `target`.
    fn resend(&mut self, cx: &mut Ctx, target: Target, fresh: bool) -> Pass {
        if target != self.target {
            let mut head = cx.pool.take();
            if let Some(old) = self.up_head.as_ref() {
                let (from, to) = (cx.cfg.upstream(self.target), cx.cfg.upstream(target));
                let from = Addressing { prefix: &from.prefix, host: from.host_override() };
                let to = Addressing { prefix: &to.prefix, host: to.host_override() };
                http1::retarget(old.bytes(), from, to, &mut Writer { buf: &mut head, overflow: false });
            }
            if let Some(old) = self.up_head.replace(head) {
                cx.pool.put(old);
            }
            self.target = target;
        }
        self.up_sent = 0;
        self.body_sent = 0;
        self.replaying = (!self.replay.is_empty()).then_some((0, 0));
        self.up_eof = false;
        self.up_shut = false;
        self.last_activity = cx.now;
        if let Some(b) = self.uin.as_mut() {
            b.clear();
        }
        Pass::Do(Step::Connect { target, fresh })
    }

    /// Moves the request from the primary to the backup.
    fn fail_over(&mut self, cx: &mut Ctx) -> Pass {
        self.failed_over = true;
        self.retried = false;
        self.resend(cx, Target::Backup, false)
    }

    /// Traffic just moved to the backup: a request still waiting on the primary for its
    /// response head moves with it if it can be replayed.
    pub fn rescue(&mut self, cx: &mut Ctx) -> Option<Step> {
        if self.phase != Phase::Relay || self.target != Target::Primary || self.resp.is_some() {
            return None;
        }
        self.can_replay().ok()?;
        log::debug!("client={} rescued from the primary to the backup", self.peer);
        cx.shared.rescues.fetch_add(1, Ordering::Relaxed);
        match self.fail_over(cx) {
            Pass::Do(step) => Some(step),
            _ => None,
        }
    }

    /// The upstream failed before a response head reached the client: retry where that is
    /// safe, else answer 502/504.
    fn upstream_failed(&mut self, cx: &mut Ctx, fail: Fail, reused: bool) -> Pass {
        if self.resp.is_some() {
            return Pass::Do(Step::Close);
        }
        cx.signals.suspect[self.target.index()] = true;
        if matches!(fail, Fail::Connect(_) | Fail::ConnectTimeout | Fail::Timeout(_)) {
            cx.signals.failures[self.target.index()] += 1;
            let why = match &fail {
                Fail::Connect(why) => why.clone(),
                Fail::ConnectTimeout => "connect timed out".to_string(),
                _ => "no response head in time".to_string(),
            };
            cx.signals.why[self.target.index()] = Some(format!("{why} (live request)"));
        }
        // A pooled connection the upstream closed meanwhile: replay once on a fresh one.
        let stale = reused && !self.retried && matches!(fail, Fail::Closed | Fail::Io(_));
        if stale && (self.body_sent == 0 || self.can_replay().is_ok()) {
            self.retried = true;
            log::debug!(
                "client={} pooled connection to {} was closed; retrying on a new one",
                self.peer,
                self.target.name()
            );
            return self.resend(cx, self.target, true);
        }
        let nothing_sent = matches!(fail, Fail::Connect(_) | Fail::ConnectTimeout);
        let mut extra = "";
        if self.target == Target::Primary {
            match self.can_replay() {
                Ok(()) => {}
                Err(_) if nothing_sent && !self.failed_over => {}
                Err(why) => extra = skip_header(why),
            }
            if extra.is_empty() {
                log::debug!("client={} primary failed ({fail:?}); retrying on the backup", self.peer);
                cx.shared.retries.fetch_add(1, Ordering::Relaxed);
                return self.fail_over(cx);
            }
        }
        let name = self.target.name();
        let (status, detail) = match &fail {
            Fail::Connect(why) => (502, format!("{name}: {why}")),
            Fail::ConnectTimeout => (504, format!("{name}: connect timed out")),
            Fail::Timeout(why) => (504, format!("{name}: {why}")),
            Fail::Io(why) => (502, format!("{name}: {why}")),
            Fail::Closed => (502, format!("{name} closed the connection without a response")),
            Fail::BadResponse(why) => (502, format!("{name} sent an invalid response: {why}")),
        };
        log::info!("client={} upstream={name} failed: {detail}", self.peer);
        let out = cx.pool.ensure(&mut self.cout);
        Answer::error(status, &detail, extra, self.req.accepts_json, self.req.is_head, out);
        self.answer_cleanup();
        Pass::Do(Step::DropUpstream)
    }

    fn on_tunnel(&mut self, cx: &mut Ctx, up: &mut Uplink) -> Pass {
        let mut moved = false;
        // Client to upstream.
        match self.read_client(cx) {
            Ok(n) => moved |= n > 0,
            Err(step) => return Pass::Do(step),
        }
        if let Some(cin) = self.cin.as_mut().filter(|b| !b.is_empty()) {
            if up.ready.can_write() {
                let (n, res) = up.sock.write_two(&mut up.ready, cin.bytes(), &[]);
                cin.consume(n);
                moved |= n > 0;
                if let SockResult::Error(_) = res {
                    return Pass::Do(Step::Close);
                }
            }
        }
        if self.client_eof && self.cin.as_ref().is_none_or(Buf::is_empty) && !self.up_shut {
            up.sock.shutdown_write(&mut up.ready);
            self.up_shut = true;
        }
        // Upstream to client.
        if !self.up_eof && up.ready.can_read() {
            let buf = cx.pool.ensure(&mut self.uin);
            if !buf.is_full() {
                let (n, res) = up.sock.read_into(&mut up.ready, buf);
                moved |= n > 0;
                match res {
                    SockResult::Closed => self.up_eof = true,
                    SockResult::Error(_) => return Pass::Do(Step::Close),
                    _ => {}
                }
            }
        }
        self.resp_fwd = self.uin.as_ref().map_or(0, Buf::len);
        match self.write_client(cx) {
            Ok(n) => moved |= n > 0,
            Err(step) => return Pass::Do(step),
        }
        if moved {
            self.last_activity = cx.now;
        }
        if self.up_eof && self.resp_fwd == 0 {
            // Upstream is done and everything it sent was delivered.
            return Pass::Do(Step::Close);
        }
        if moved {
            Pass::Moved
        } else {
            Pass::Idle
        }
    }

    fn on_answer(&mut self, cx: &mut Ctx, close: bool) -> Pass {
        let n = match self.write_client(cx) {
            Ok(n) => n,
            Err(step) => return Pass::Do(step),
        };
        if self.cout.as_ref().is_some_and(|b| !b.is_empty()) {
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

    /// Half-closes toward the client; what it still sends is read and dropped for a while,
    /// so its kernel does not reset the connection before it read our last response.
    fn shut_client(&mut self, now: Instant) {
        self.sock.shutdown_write(&mut self.ready);
        self.last_activity = now;
        self.lingered = 0;
    }

    fn on_linger(&mut self, cx: &mut Ctx) -> Pass {
        if self.client_eof {
            return Pass::Do(Step::Close);
        }
        let buf = cx.pool.ensure(&mut self.cin);
        buf.clear();
        let (n, res) = self.sock.read_into(&mut self.ready, buf);
        buf.clear();
        self.lingered += n;
        match res {
            SockResult::Closed | SockResult::Error(_) => Pass::Do(Step::Close),
            _ if self.lingered > LINGER_BYTES => Pass::Do(Step::Close),
            SockResult::Continue => Pass::Moved,
            SockResult::WouldBlock => Pass::Idle,
        }
    }

    /// The worker could not even start connecting to the upstream.
    pub fn connect_error(&mut self, cx: &mut Ctx, why: String) -> Step {
        match self.upstream_failed(cx, Fail::Connect(why), false) {
            Pass::Do(step) => step,
            _ => Step::Wait,
        }
    }

    /// Queues an error answer; the connection closes after it.
    fn answer_error(&mut self, cx: &mut Ctx, status: u16, detail: &str) {
        let out = cx.pool.ensure(&mut self.cout);
        Answer::error(status, detail, "", false, false, out);
        self.answer_cleanup();
    }

    /// After an error answer: nothing more is read or relayed on this connection.
    fn answer_cleanup(&mut self) {
        if let Some(b) = self.cin.as_mut() {
            b.clear();
        }
        self.resp_fwd = 0;
        if let Some(b) = self.uin.as_mut() {
            b.clear();
        }
        self.phase = Phase::Answer { close: true };
    }

    fn answer_admin(&mut self, cx: &mut Ctx, admin: Admin, req: &Request) {
        let close = !req.keep_alive;
        let out = cx.pool.ensure(&mut self.cout);
        let extra = match (close, req.minor) {
            (false, 0) => "Connection: keep-alive\r\n",
            _ => "",
        };
        let state;
        let (status, content_type, body): (u16, &str, &[u8]) = match admin {
            Admin::Health => (200, "text/plain; charset=utf-8", b"ok\n"),
            Admin::State => {
                state = cx.shared.state_json(cx.cfg);
                (200, "application/json", state.as_bytes())
            }
            Admin::NotFound => (404, "text/plain; charset=utf-8", b"Not Found: no such failover endpoint\n"),
            Admin::MethodNotAllowed => (405, "text/plain; charset=utf-8", b"Method Not Allowed: use GET\n"),
        };
        let extra = if admin == Admin::MethodNotAllowed { "Allow: GET, HEAD\r\n" } else { extra };
        Answer { status, content_type, body, close, head_only: req.is_head, extra }.write(out);
        self.phase = Phase::Answer { close };
    }
}

/// Whether a request may be sent again after it (maybe) reached the primary: the replay
/// chain holds every body byte sent so far unless `skip` says why not.
fn can_replay(failed_over: bool, skip: Option<&'static str>) -> Result<(), &'static str> {
    if failed_over {
        return Err("already-retried");
    }
    match skip {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// Appends `src` to the replay chain, taking buffers from the pool as needed.
fn keep(chain: &mut Vec<Buf>, pool: &mut Pool, mut src: &[u8]) {
    while !src.is_empty() {
        if chain.last().is_none_or(Buf::is_full) {
            chain.push(pool.take());
        }
        if let Some(last) = chain.last_mut() {
            let n = last.push(src);
            src = &src[n..];
        }
    }
}

/// The header telling a client why its failed request was not retried on the backup.
/// Scans the body bytes held in `buf` past `at` (already taken), rewriting them in place
/// if `how` says so; returns how many bytes after `at` are now ready to forward.
fn take_body(body: &mut Body, buf: &mut Buf, at: usize, how: Option<Rewrite>) -> Result<usize, ChunkError> {
    let Some(how) = how else {
        return body.scan(&buf.bytes()[at..]);
    };
    let (used, kept) = body.rewrite_in_place(&mut buf.bytes_mut()[at..], how)?;
    buf.cut(at + kept, at + used);
    Ok(kept)
}

fn skip_header(why: &str) -> &'static str {
    match why {
        "method" => "X-Failover-Retry: skipped-method\r\n",
        "body-too-large" => "X-Failover-Retry: skipped-body-too-large\r\n",
        "already-retried" => "X-Failover-Retry: skipped-already-retried\r\n",
        _ => "X-Failover-Retry: skipped\r\n",
    }
}

/// An I/O failure on an upstream connection; a TLS handshake failure counts as a connect
/// failure (the request never reached the upstream).
fn io_fail(up: &Uplink, what: String) -> Fail {
    match up.sock.tls_error() {
        Some(tls) if up.sock.handshaking() => Fail::Connect(format!("TLS handshake failed: {tls}")),
        Some(tls) => Fail::Io(format!("TLS: {tls}")),
        None => Fail::Io(what),
    }
}

/// Checks a non-blocking connect: Ok(true) connected, Ok(false) not yet.
fn check_connect(up: &mut Uplink) -> Result<bool, String> {
    if up.ready.event & W == 0 && up.ready.event & crate::readiness::HUP == 0 {
        return Ok(false);
    }
    match up.sock.sock.take_error() {
        Ok(Some(e)) | Err(e) => return Err(connect_error(&e)),
        Ok(None) => {}
    }
    match up.sock.sock.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => {
            up.ready.event &= !W;
            Ok(false)
        }
        Err(e) => Err(connect_error(&e)),
    }
}
