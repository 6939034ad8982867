//! One request and its response: made when a request head has been parsed, dropped when
//! the response is complete or the proxy answered instead. Everything per request lives
//! here — the head rewritten for the upstream, the body's framing, the replay chain, the
//! response as it arrives — so a connection between requests holds none of it.
//!
//! This file holds the exchange's life: start, timeouts, failures (the decision itself is
//! [`crate::retry`]'s), re-sends and rescues. Moving bytes is [`crate::relay`]'s. An
//! exchange never creates or pools an upstream connection: it returns a [`Flow`] and the
//! client and worker act on it.

use std::time::{Duration, Instant};

use crate::access_log::{AccessLog, Done, Head, Try};
use crate::answer::Answer;
use crate::buffer::{Buf, Pool, Writer};
use crate::client_io::ClientIo;
use crate::config::Config;
use crate::control::Control;
use crate::framing::{Body, Framing};
use crate::health::{Board, Route};
use crate::http1::{self, Addressing, Request, Response};
use crate::metrics::{RetryReason, WorkerMetrics};
use crate::retry::{self, Attempt, Decision, Failure, Replay};
use crate::splice::{Pipe, Pipes};
use crate::static_files::FileBody;
use crate::uplink::Uplink;
use crate::upstream::{Kind, Upstream, MAX_UPSTREAMS};

/// How long a client that sent `Expect: 100-continue` waits for the upstream's 100 before
/// the proxy sends one itself (curl waits as long before it sends the body anyway).
const EXPECT_WAIT: Duration = Duration::from_secs(1);
/// Ended exchanges kept per worker for the next requests (their memory is reused).
const SPARE: usize = 1024;
/// The most of an unread request body the client connection reads and drops to stay
/// open after an early answer; past it, it closes (lingering).
pub const DISCARD_MAX: u64 = 1 << 20;

/// What the client needs from the worker while it drives.
pub struct Ctx<'a> {
    pub cfg: &'a Config,
    /// Where connections are registered (a refused address is retried on the next one).
    pub registry: &'a mio::Registry,
    pub pool: &'a mut Pool,
    /// Pipes for bodies relayed with `splice`.
    pub pipes: &'a mut Pipes,
    /// Ended exchanges to reuse, so a request allocates nothing.
    pub spare: &'a mut Spare,
    /// This worker's counters, and every worker's (for the endpoints that sum them).
    pub metrics: &'a WorkerMetrics,
    pub all_metrics: &'a [WorkerMetrics],
    pub board: &'a Board,
    pub control: &'a Control,
    pub route: Route,
    pub now: Instant,
    /// Failures seen on live traffic, for the worker to act on after the drive.
    pub signals: &'a mut Signals,
    /// This worker's access log, when there is one.
    pub access: Option<&'a mut AccessLog>,
}

/// Ended exchanges, boxed: a box moves between a client and this list as a pointer, and
/// its memory outlives the request.
#[allow(clippy::vec_box)]
pub type Spare = Vec<Box<Exchange>>;

/// What live traffic told about the upstreams during one loop turn.
#[derive(Debug, Default)]
pub struct Signals {
    /// Bit i: something failed on upstream i: confirm with a probe.
    pub suspect: u32,
    /// Refused connections to upstream i: nothing listens, as plain as a failed check, so
    /// each counts like one.
    pub refused: [u32; MAX_UPSTREAMS],
}

/// A step either made progress (true) or not, or ended the pass with a [`Flow`].
pub(crate) type StepResult = Result<bool, Flow>;

/// An I/O failure on an upstream connection; a TLS handshake failure counts as a connect
/// failure (the request never reached the upstream).
pub(crate) fn io_fail(up: &Uplink, what: String) -> Failure {
    match up.sock.tls_error() {
        Some(tls) if up.sock.handshaking() => Failure::Connect(format!("TLS handshake failed: {tls}")),
        Some(tls) => Failure::Io(format!("TLS: {tls}")),
        None => Failure::Io(what),
    }
}

/// What the exchange asks of the client after a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Moved,
    Idle,
    /// Attach a connection to upstream `target` (a pooled one unless `fresh`), dropping the
    /// one attached.
    Connect {
        target: usize,
        fresh: bool,
    },
    /// Drop the attached upstream connection (it must not be reused) and drive again.
    DropUpstream,
    /// The response is complete. `reuse`: the upstream connection may be pooled;
    /// `keep_alive`: the client connection carries the next request, once `discard` more
    /// bytes of this request's body (which nobody reads now) have been read and dropped.
    Done {
        reuse: bool,
        keep_alive: bool,
        discard: u64,
    },
    /// The proxy answered instead (its answer is in the client's out buffer); the
    /// connection closes after it.
    Answered,
    /// Close the client connection now.
    Close,
}

/// How the response reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Relayed from an origin.
    Upstream,
    /// Served from a directory upstream.
    File,
    /// After a 101: bytes both ways until both sides close.
    Tunnel,
}

pub struct Exchange {
    pub req: Request,
    /// Where this attempt goes (position in the chain).
    pub target: usize,
    /// Upstreams tried so far, bit i = upstream i.
    pub(crate) tried: u32,
    pub(crate) mode: Mode,
    pub(crate) req_body: Body,
    /// Validated request-body bytes at the front of the client's `cin`, ready to send.
    pub(crate) req_fwd: usize,
    /// The request head rewritten for the target, kept until the response head (a retry
    /// re-sends it).
    pub(crate) up_head: Option<Buf>,
    pub(crate) up_sent: usize,
    pub(crate) body_sent: u64,
    /// Bytes from the upstream or the file (response bodies, raw).
    pub(crate) uin: Option<Buf>,
    pub(crate) resp: Option<Response>,
    pub(crate) resp_body: Body,
    /// Validated response-body bytes at the front of `uin`, ready to send.
    pub(crate) resp_fwd: usize,
    pub(crate) up_eof: bool,
    pub(crate) up_shut: bool,
    /// Sending to the upstream failed before its response head: the failure, held until a
    /// read shows there is no answer waiting.
    pub(crate) send_failed: Option<Failure>,
    /// A fresh connection replaced a stale pooled one on this upstream already.
    pub(crate) refreshed: bool,
    /// `Expect: 100-continue` and nothing relayed back yet.
    pub(crate) expect_wait: bool,
    pub(crate) replay: Replay,
    /// What is left of the file being served, and whether the connection stays open after.
    pub(crate) file: Option<FileBody>,
    pub(crate) file_keep_alive: bool,
    /// When the request head was read, and the status of the response once decided (0:
    /// none yet), with whether the proxy made it.
    pub(crate) started: Instant,
    pub(crate) status: u16,
    pub(crate) by_proxy: bool,
    /// For the access log (with it on): the request's head, the attempts that failed, when
    /// the current attempt started and how long the response head took.
    pub(crate) log: Head,
    pub(crate) tries: Vec<Try>,
    pub(crate) attempt_started: Instant,
    pub(crate) ttfb: Option<Duration>,
    /// The pipe a large response body goes through, socket to socket, once it is past
    /// what was read with the head.
    pub(crate) pipe: Option<Pipe>,
    /// The pipe the rest of a large request body goes through, client to upstream, once it
    /// can no longer be replayed (so no copy of it is needed).
    pub(crate) req_pipe: Option<Pipe>,
}

impl Exchange {
    fn new(req: Request, target: usize, head: Buf, max_body: u64, replay_vec: Vec<Buf>, now: Instant) -> Exchange {
        let req_body = Body::start(req.framing, max_body);
        Exchange {
            req,
            target,
            tried: 1 << target,
            mode: Mode::Upstream,
            expect_wait: req.expect_continue && !req_body.is_done(),
            req_body,
            req_fwd: 0,
            up_head: Some(head),
            up_sent: 0,
            body_sent: 0,
            uin: None,
            resp: None,
            resp_body: Body::Done,
            resp_fwd: 0,
            up_eof: false,
            up_shut: false,
            send_failed: None,
            refreshed: false,
            replay: Replay::new(req.replay_ok, replay_vec),
            file: None,
            file_keep_alive: false,
            started: now,
            status: 0,
            by_proxy: false,
            log: Head::default(),
            tries: Vec::new(),
            attempt_started: now,
            ttfb: None,
            pipe: None,
            req_pipe: None,
        }
    }

    /// Starts the exchange of `req` on `target`, with `head` the head rewritten for it,
    /// reusing an ended exchange's memory when there is one.
    pub fn start(req: Request, target: usize, head: Buf, cx: &mut Ctx) -> Box<Exchange> {
        match cx.spare.pop() {
            Some(mut ex) => {
                let vec = std::mem::take(&mut ex.replay).into_spare(cx.pool);
                let (log, mut tries) = (std::mem::take(&mut ex.log), std::mem::take(&mut ex.tries));
                tries.clear();
                *ex = Exchange::new(req, target, head, cx.cfg.max_body, vec, cx.now);
                (ex.log, ex.tries) = (log, tries);
                ex
            }
            None => Box::new(Exchange::new(req, target, head, cx.cfg.max_body, Vec::new(), cx.now)),
        }
    }

    /// Counts the response (if one went out), returns the buffers to the pool and the
    /// exchange to the spares.
    pub fn end(mut self: Box<Self>, cx: &mut Ctx, io: &ClientIo) {
        let took = cx.now.saturating_duration_since(self.started);
        if self.status != 0 {
            cx.metrics.request(self.target, self.status, self.by_proxy, Some(took));
        }
        if let Some(log) = cx.access.as_deref_mut() {
            // 499: the client went away before its response (nginx's word for it).
            let status = if self.status == 0 { 499 } else { self.status };
            let done = Done {
                head: Some(&self.log),
                status,
                duration: took,
                upstream: (!self.by_proxy && self.status != 0).then_some(self.target),
                upstream_status: if self.by_proxy { 0 } else { self.status },
                ttfb: self.ttfb,
                tries: &self.tries,
            };
            log.log(cx.cfg, io, done);
        }
        for slot in [&mut self.up_head, &mut self.uin] {
            if let Some(b) = slot.take() {
                cx.pool.put(b);
            }
        }
        self.replay.release(cx.pool);
        self.file = None;
        if self.resp.is_some_and(|r| r.framing == Framing::Chunked) {
            // Large if a chunk of it still had its pipe (small chunks give theirs back).
            cx.pipes.scored(self.target, self.pipe.is_some());
        }
        for p in [self.pipe.take(), self.req_pipe.take()].into_iter().flatten() {
            cx.pipes.put(p);
        }
        if cx.spare.len() < SPARE {
            cx.spare.push(self);
        }
    }

    /// Returns buffers that hold nothing (between passes).
    pub fn release_empty(&mut self, pool: &mut Pool) {
        pool.release_if_empty(&mut self.uin);
    }

    /// Sends the request to its target: asks for a connection to an origin, or serves it
    /// from a directory at once.
    pub(crate) fn attempt(&mut self, io: &mut ClientIo, cx: &mut Ctx, fresh: bool) -> Flow {
        let cfg = cx.cfg;
        match cfg.upstreams.get(self.target).map(|u| &u.kind) {
            Some(Kind::Origin(_)) => Flow::Connect { target: self.target, fresh },
            Some(Kind::Site(_)) => self.start_file(io, cx),
            // A reload shortened the chain while this request was on its way.
            None => {
                self.answer(io, cx, 502, "the upstream was removed by a configuration reload", "", true);
                Flow::Answered
            }
        }
    }

    /// The process is stopping: announce `Connection: close` if the response head is not
    /// written yet.
    pub fn drain(&mut self) {
        if self.resp.is_none() && self.mode == Mode::Upstream {
            self.req.keep_alive = false;
        }
    }

    /// The request body is incomplete and everything received that can be sent was sent
    /// (what may be held is a partial chunk-size line): the next move is the client's.
    fn awaiting_body(&self) -> bool {
        self.up_sent > 0 && !self.req_body.is_done() && self.req_fwd == 0 && !self.replay.replaying()
    }

    /// The client sent `Expect: 100-continue` and, as it may, waits for a 100 before its
    /// body; nothing has come back yet.
    fn awaiting_continue(&self, io: &ClientIo) -> bool {
        self.expect_wait && self.body_sent == 0 && self.awaiting_body() && io.cin_empty()
    }

    /// When the exchange times out, counted from the last activity.
    pub fn deadline(&self, io: &ClientIo, cfg: &Config) -> Instant {
        let wait = if self.mode == Mode::Tunnel {
            cfg.tunnel_timeout
        } else if self.mode == Mode::File || self.resp.is_some() {
            // A response in flight: bounded by the gap between bytes, not its length.
            cfg.idle_timeout
        } else if self.awaiting_continue(io) {
            EXPECT_WAIT
        } else if self.awaiting_body() {
            cfg.body_timeout
        } else if self.up_sent == 0 {
            cfg.connect_timeout
        } else {
            cfg.upstream_timeout
        };
        io.last_activity + wait
    }

    /// The deadline passed: decide what that means now.
    pub fn on_timeout(&mut self, io: &mut ClientIo, cx: &mut Ctx) -> Flow {
        if self.mode != Mode::Upstream || self.resp.is_some() {
            return Flow::Close;
        }
        if self.awaiting_continue(io) {
            // Each side may be waiting for the other: the client for a 100, the upstream
            // (which may not know Expect at all) for the body. Say 100 for it: a client
            // may send its body after a wait anyway, and more 1xx may follow.
            self.expect_wait = false;
            cx.pool.ensure(&mut io.cout).push(b"HTTP/1.1 100 Continue\r\n\r\n");
            io.last_activity = cx.now;
            return Flow::Idle;
        }
        if self.awaiting_body() {
            // The client stopped sending its body: its fault, not the upstream's.
            self.answer(io, cx, 408, "the request body stopped arriving", "", false);
            return Flow::Answered;
        }
        let fail = if self.up_sent == 0 { Failure::ConnectTimeout } else { Failure::NoResponse };
        self.failed(io, cx, fail, false)
    }

    /// The attempt on the target failed before its response head reached the client:
    /// retry where [`retry::decide`] says so, else answer with the failure's status.
    pub(crate) fn failed(&mut self, io: &mut ClientIo, cx: &mut Ctx, fail: Failure, reused: bool) -> Flow {
        if self.resp.is_some() {
            return Flow::Close;
        }
        let t = self.target;
        // Any failure asks for a confirming probe; only a refusal counts by itself.
        cx.signals.suspect |= 1 << t;
        if fail.counts() {
            cx.signals.refused[t] += 1;
        }
        let attempt = Attempt {
            on: t,
            tried: self.tried,
            reused,
            refreshed: self.refreshed,
            body_sent: self.body_sent,
            replay: self.replay.ok(),
        };
        let cfg = cx.cfg;
        let name = cfg.name(t);
        self.note_try(cx, 0, fail.reason().name());
        match retry::decide(&fail, attempt, cx.route) {
            Decision::Fresh => {
                log::debug!("client={} pooled connection to {name} was closed; retrying on a new one", io.peer);
                self.refreshed = true;
                cx.metrics.retry(RetryReason::StaleConnection);
                self.resend(io, cx, t, true)
            }
            Decision::Next(to) => {
                log::debug!("client={} {name} failed ({fail:?}); retrying on {}", io.peer, cfg.name(to));
                cx.metrics.retry(fail.reason());
                self.resend(io, cx, to, false)
            }
            Decision::GiveUp(skip) => {
                let (status, detail) = fail.answer(name);
                log::info!("client={} upstream={name} failed: {detail}", io.peer);
                self.answer(io, cx, status, &detail, skip.map_or("", |s| s.header()), true);
                Flow::Answered
            }
        }
    }

    /// Notes, for the access log, that the attempt on the target failed (with the status it
    /// answered, or else why).
    pub(crate) fn note_try(&mut self, cx: &Ctx, status: u16, error: &'static str) {
        if cx.access.is_some() {
            let ms = cx.now.saturating_duration_since(self.attempt_started).as_millis() as u32;
            self.tries.push(Try { upstream: self.target as u8, status, error, ms });
        }
    }

    /// Sends the request again, from the start, to upstream `to`.
    pub(crate) fn resend(&mut self, io: &mut ClientIo, cx: &mut Ctx, to: usize, fresh: bool) -> Flow {
        if to != self.target {
            let mut head = cx.pool.take();
            if let Some(old) = self.up_head.as_ref() {
                let cfg = cx.cfg;
                let addressing = |i: usize| cfg.upstreams.get(i).map_or(Addressing::NONE, Upstream::addressing);
                http1::retarget(
                    old.bytes(),
                    addressing(self.target),
                    addressing(to),
                    &mut Writer { buf: &mut head, overflow: false },
                );
            }
            if let Some(old) = self.up_head.replace(head) {
                cx.pool.put(old);
            }
            self.target = to;
            self.tried |= 1 << to;
            self.refreshed = false;
        }
        // A request body is spliced only once it cannot be replayed, and then a failure
        // gives up rather than re-sends: bytes in the pipe are never needed again.
        debug_assert!(self.req_pipe.as_ref().is_none_or(|p| p.held() == 0));
        self.up_sent = 0;
        self.body_sent = 0;
        self.attempt_started = cx.now;
        self.replay.rewind();
        self.up_eof = false;
        self.up_shut = false;
        self.send_failed = None;
        io.last_activity = cx.now;
        if let Some(b) = self.uin.as_mut() {
            b.clear();
        }
        self.attempt(io, cx, fresh)
    }

    /// Traffic just switched and this request still waits for a response head from an
    /// upstream that is now unhealthy: move it along the chain if it can be replayed.
    pub fn rescue(&mut self, io: &mut ClientIo, cx: &mut Ctx) -> Option<Flow> {
        if self.mode != Mode::Upstream || self.resp.is_some() || cx.route.is_healthy(self.target) {
            return None;
        }
        self.replay.ok().ok()?;
        let to = cx.route.next_after(self.target, self.tried)?;
        let cfg = cx.cfg;
        log::debug!("client={} rescued from {} to {}", io.peer, cfg.name(self.target), cfg.name(to));
        cx.metrics.rescue();
        Some(self.resend(io, cx, to, false))
    }

    /// The request itself turned out invalid mid-body.
    pub(crate) fn abort(&mut self, io: &mut ClientIo, cx: &mut Ctx, status: u16, why: &str) -> Flow {
        if self.resp.is_some() {
            return Flow::Close;
        }
        self.answer(io, cx, status, why, "", false);
        Flow::Answered
    }

    /// Queues the proxy's own error answer; nothing more is read or relayed for it.
    /// `as_asked`: in JSON when the client asked for it, headers only for HEAD.
    fn answer(&mut self, io: &mut ClientIo, cx: &mut Ctx, status: u16, detail: &str, extra: &str, as_asked: bool) {
        (self.status, self.by_proxy) = (status, true);
        let out = cx.pool.ensure(&mut io.cout);
        let (json, head) = if as_asked { (self.req.accepts_json, self.req.is_head) } else { (false, false) };
        Answer::error(status, detail, extra, json, head, out);
        if let Some(b) = io.cin.as_mut() {
            b.clear();
        }
        self.resp_fwd = 0;
        if let Some(b) = self.uin.as_mut() {
            b.clear();
        }
    }
}

/// `Retry-After` (seconds) for answers that say "come back later": about when the next
/// checks may have changed things.
pub fn retry_after(cfg: &Config) -> u32 {
    match cfg.check_interval.as_secs() {
        0 | 1 => 1,
        2..=5 => 5,
        _ => 30,
    }
}
