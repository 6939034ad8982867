//! Relaying one exchange, as named steps: connect, send the request, read the response
//! head, forward the response; then the tunnel after a 101, and a response served from a
//! directory.
//!
//! Bytes move here and nowhere else; every failure goes to [`Exchange::failed`], which
//! decides between a retry and an answer. This file never parses a request head and never
//! creates or pools a connection.

use std::os::unix::fs::FileExt;
use std::time::SystemTime;

use crate::buffer::{Buf, Writer};
use crate::client_io::ClientIo;
use crate::exchange::{io_fail, retry_after, Ctx, Exchange, Flow, Mode, StepResult, DISCARD_MAX};
use crate::framing::{Body, ChunkError, Framing, Rewrite};
use crate::http1;
use crate::metrics::RetryReason;
use crate::readiness::R;
use crate::relay_splice::{splice_ok, unpipe_small_chunk};
use crate::retry::{self, Attempt, Decision, Failure};
use crate::splice;
use crate::transport::{self, SockResult};
use crate::uplink::{kind_text, UpState, Uplink};

impl Exchange {
    /// Moves the exchange as far as it can go without blocking.
    pub fn relay(&mut self, io: &mut ClientIo, cx: &mut Ctx, up: Option<&mut Uplink>) -> Flow {
        match (self.mode, up) {
            (Mode::File, _) => self.send_file(io, cx),
            (Mode::Tunnel, Some(up)) => self.tunnel(io, cx, up),
            (Mode::Tunnel, None) => Flow::Close,
            (Mode::Upstream, None) => Flow::Connect { target: self.target, fresh: false },
            (Mode::Upstream, Some(up)) => {
                let steps = [Self::connect, Self::send_request, Self::read_response_head, Self::forward_response];
                let mut moved = false;
                for step in steps {
                    match step(self, io, cx, up) {
                        Ok(m) => moved |= m,
                        Err(flow) => return flow,
                    }
                }
                self.finish(io).unwrap_or(if moved { Flow::Moved } else { Flow::Idle })
            }
        }
    }

    /// Finishes the non-blocking connect (and flushes TLS handshake records).
    fn connect(&mut self, io: &mut ClientIo, cx: &mut Ctx, up: &mut Uplink) -> StepResult {
        let mut moved = false;
        if up.state == UpState::Connecting {
            match up.connected(cx.registry) {
                Ok(done) => moved = done,
                Err(why) => return Err(self.failed(io, cx, Failure::connect(why), up.reused)),
            }
        }
        if up.state == UpState::Busy && up.sock.wants_flush() && up.ready.can_write() {
            if let SockResult::Error(k) = up.sock.flush(&mut up.ready) {
                let fail = io_fail(up, format!("send failed: {}", kind_text(k)));
                return Err(self.failed(io, cx, fail, up.reused));
            }
        }
        Ok(moved)
    }

    /// Reads and validates the request body, and sends the head and body (or the replay of
    /// a re-sent request), keeping copies for a replay while one is possible.
    fn send_request(&mut self, io: &mut ClientIo, cx: &mut Ctx, up: &mut Uplink) -> StepResult {
        let mut moved = false;
        if self.req_pipe.is_some() || self.may_splice_request(io, cx, up) {
            if self.req_pipe.is_none() {
                self.req_pipe = cx.pipes.take();
            }
            if self.req_pipe.is_some() {
                moved = self.splice_request(io, cx, up)?;
                // A chunked body's framing (and data read with it) goes the copy way.
                if self.req_fwd == 0 && !self.req_framing_next() {
                    return Ok(moved);
                }
            }
        }
        // With the body read, what comes now is the next request's head. With a pipe, only
        // a chunked body's framing is read here, in a bite, once the pipe is empty.
        let read = match self.req_pipe {
            None => io.read(cx.pool, self.req_body.is_done(), cx.now),
            Some(_) if self.req_framing_next() => io.read_upto(cx.pool, false, splice::CHUNK_BITE, cx.now),
            Some(_) => Ok(0),
        };
        moved |= read.map_err(|_| Flow::Close)? > 0;
        if !self.req_body.is_done() {
            if let Some(cin) = io.cin.as_mut() {
                // What reaches the upstream is re-serialized from what was parsed: one
                // framing, whatever extensions or spellings the client used.
                match take_body(&mut self.req_body, cin, self.req_fwd, Some(Rewrite::Canonical)) {
                    Ok(n) => {
                        self.req_fwd += n;
                        if n > 0 && self.req_pipe.is_some() {
                            unpipe_small_chunk(&self.req_body, &mut self.req_pipe, cx.pipes);
                        }
                    }
                    Err(ChunkError::TooLarge) => {
                        return Err(self.abort(io, cx, 413, "request body is larger than the limit"))
                    }
                    Err(e) => {
                        log::debug!("client={} invalid chunked body: {e:?}", io.peer);
                        return Err(self.abort(io, cx, 400, "invalid chunked request body"));
                    }
                }
            }
        }
        // Past the scan, what is held beyond `req_fwd` is a partial chunk-size line: with
        // the client gone, it will never be whole.
        if io.eof && !self.req_body.is_done() {
            log::debug!("client={} closed in the middle of its request body", io.peer);
            return Err(Flow::Close);
        }
        if up.state != UpState::Busy || !up.ready.can_write() || self.up_shut {
            return Ok(moved);
        }
        let head = self.up_head.as_ref().map_or(&[][..], |b| &b.bytes()[self.up_sent.min(b.len())..]);
        let replaying = self.replay.replaying();
        let body = if up.sock.handshaking() {
            // Body bytes stay in our buffers until the TLS handshake is done: if it
            // fails, the request goes elsewhere whole (the head is kept anyway).
            &[][..]
        } else if replaying {
            self.replay.pending().unwrap_or_default()
        } else {
            io.cin.as_ref().map_or(&[][..], |b| &b.bytes()[..self.req_fwd])
        };
        if head.is_empty() && body.is_empty() {
            return Ok(moved);
        }
        let head_len = head.len();
        let (n, res) = up.sock.write_two(&mut up.ready, head, body);
        let from_head = n.min(head_len);
        self.up_sent += from_head;
        let k = n - from_head;
        if k > 0 && replaying {
            self.replay.advance(k);
        } else if k > 0 {
            if let Some(cin) = io.cin.as_mut() {
                // Kept even on the last upstream: the chain must hold every byte sent, or a
                // re-send (a reload may add upstreams) would be a truncated request.
                self.replay.keep(&cin.bytes()[..k], cx.cfg.retry_buffer, cx.pool);
                cin.consume(k);
            }
            self.req_fwd -= k;
        }
        self.body_sent += k as u64;
        if n > 0 {
            moved = true;
            io.last_activity = cx.now;
        }
        if let SockResult::Error(k) = res {
            // The upstream stopped reading. It may have answered first and closed with our
            // body unread (a 405 to an upload): that answer can be waiting in our receive
            // buffer, so read before failing (the read after a reset says at once).
            self.up_shut = true;
            if self.resp.is_none() {
                self.send_failed = Some(io_fail(up, format!("send failed: {}", kind_text(k))));
                up.ready.event |= R;
            }
        }
        Ok(moved)
    }

    /// Reads from the upstream and parses response heads (relaying 1xx, acting on
    /// `--retry-on-status`) until the final one.
    fn read_response_head(&mut self, io: &mut ClientIo, cx: &mut Ctx, up: &mut Uplink) -> StepResult {
        let mut moved = false;
        let complete = self.resp.is_some() && self.resp_body.is_done();
        // With a pipe, the body goes socket to socket ([`Self::splice_body`]). Only the
        // framing of a chunked body is read here, once the pipe is empty (so what is read
        // comes after all that was piped), in a small bite: the next chunk's data stays in
        // the kernel.
        let piped = self.pipe.as_ref().is_some_and(|p| p.held() > 0 || self.resp_body.unframed_left() > 0);
        if up.state == UpState::Busy && !self.up_eof && up.ready.can_read() && !complete && !piped {
            let buf = cx.pool.ensure(&mut self.uin);
            if !buf.is_full() {
                let handshaking = up.sock.handshaking();
                // Where a large body could be spliced, a head is read in a small bite: the
                // body behind it then stays in the kernel.
                let (n, res) = if self.pipe.is_some() {
                    transport::read_upto(&mut up.sock.sock, &mut up.ready, buf, splice::CHUNK_BITE)
                } else if self.resp.is_none() && cx.pipes.bite(self.target) && splice_ok(io, cx, up) {
                    transport::read_upto(&mut up.sock.sock, &mut up.ready, buf, splice::HEAD_BITE)
                } else {
                    up.sock.read_into(&mut up.ready, buf)
                };
                // The handshake finishing unblocks the request body: go round again.
                moved |= handshaking && !up.sock.handshaking();
                if n > 0 {
                    moved = true;
                    io.last_activity = cx.now;
                }
                match res {
                    SockResult::Closed => self.up_eof = true,
                    SockResult::Error(k) if self.resp.is_none() => {
                        let fail = self.send_failed.take().unwrap_or_else(|| io_fail(up, kind_text(k)));
                        return Err(self.failed(io, cx, fail, up.reused));
                    }
                    SockResult::Error(_) => return Err(Flow::Close),
                    _ => {}
                }
            }
        }
        while self.resp.is_none() && self.uin.as_ref().is_some_and(|b| !b.is_empty()) {
            let uin = self.uin.as_ref().map_or(&[][..], Buf::bytes);
            let out = cx.pool.ensure(&mut io.cout);
            let mark = out.len();
            let mut parsed = http1::parse_response(uin, &self.req, b"", &mut Writer { buf: out, overflow: false });
            if let Ok(Some(resp)) = parsed {
                if cx.cfg.retry_on_status.contains(&resp.status) {
                    out.truncate(mark);
                    cx.signals.suspect |= 1 << self.target;
                    let attempt = Attempt {
                        on: self.target,
                        tried: self.tried,
                        reused: up.reused,
                        refreshed: self.refreshed,
                        body_sent: self.body_sent,
                        replay: self.replay.ok(),
                    };
                    let extra = match retry::decide(&Failure::Status(resp.status), attempt, cx.route) {
                        Decision::Next(to) => {
                            let cfg = cx.cfg;
                            let name = cfg.name(self.target);
                            log::debug!(
                                "client={} {name} answered {}; retrying on the next upstream",
                                io.peer,
                                resp.status
                            );
                            cx.metrics.retry(RetryReason::Status);
                            self.note_try(cx, resp.status, "status");
                            return Err(self.resend(io, cx, to, false));
                        }
                        Decision::GiveUp(Some(skip)) => skip.header().as_bytes(),
                        Decision::GiveUp(None) | Decision::Fresh => b"",
                    };
                    parsed = http1::parse_response(uin, &self.req, extra, &mut Writer { buf: out, overflow: false });
                }
            }
            match parsed {
                Ok(None) if self.uin.as_ref().is_some_and(Buf::is_full) => {
                    return Err(self.failed(io, cx, Failure::BadResponse("response head too large"), false))
                }
                Ok(None) => break,
                Err(bad) => return Err(self.failed(io, cx, Failure::BadResponse(bad.0), false)),
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
                    self.status = resp.status;
                    self.ttfb = Some(cx.now.saturating_duration_since(self.started));
                    self.resp_body = Body::start(resp.framing, u64::MAX);
                    // A chunked answer is counted at its end ([`Exchange::end`]).
                    match resp.framing {
                        Framing::Chunked => {}
                        Framing::Length(n) => cx.pipes.saw(self.target, Some(n)),
                        _ => cx.pipes.saw(self.target, None),
                    }
                    // Nothing is re-sent once a response head is relayed.
                    self.replay.release(cx.pool);
                    if let Some(b) = self.up_head.take() {
                        cx.pool.put(b);
                    }
                }
            }
        }
        if self.resp.is_none() && self.up_eof {
            let fail = self.send_failed.take().unwrap_or(Failure::Closed);
            return Err(self.failed(io, cx, fail, up.reused));
        }
        Ok(moved)
    }

    /// Validates the response body as it arrives and writes it to the client after the
    /// response head.
    fn forward_response(&mut self, io: &mut ClientIo, cx: &mut Ctx, up: &mut Uplink) -> StepResult {
        if let (Some(resp), Some(uin)) = (self.resp, self.uin.as_mut()) {
            if !self.resp_body.is_done() {
                // A chunked response is re-framed as a request is: canonical size lines, and
                // no trailer field that must not be one. Other bodies are only counted.
                let how = match resp.framing {
                    _ if resp.dechunk => Some(Rewrite::Decode),
                    Framing::Chunked => Some(Rewrite::Canonical),
                    _ => None,
                };
                match take_body(&mut self.resp_body, uin, self.resp_fwd, how) {
                    Ok(n) => {
                        self.resp_fwd += n;
                        if n > 0 && self.pipe.is_some() {
                            unpipe_small_chunk(&self.resp_body, &mut self.pipe, cx.pipes);
                        }
                    }
                    Err(e) => {
                        log::debug!("client={} upstream sent an invalid chunked body: {e:?}", io.peer);
                        return Err(Flow::Close);
                    }
                }
            }
        }
        let mut moved = io.write(self.uin.as_mut(), &mut self.resp_fwd, cx.now).map_err(|_| Flow::Close)? > 0;
        if self.pipe.is_some() || self.resp_body.unframed_left() >= splice::MIN_BODY {
            moved |= self.splice_body(io, cx, up)?;
        }
        // The upstream closed: a body that runs to the close is whole; any other is cut,
        // and the client's connection closes once what came (here or in a pipe) went out.
        if self.up_eof && self.resp.is_some() && !self.resp_body.is_done() {
            if matches!(self.resp_body, Body::UntilClose) {
                self.resp_body = Body::Done;
            } else if self.resp_fwd == 0 && self.pipe.as_ref().is_none_or(|p| p.held() == 0) {
                log::debug!("client={} upstream closed in the middle of the response body", io.peer);
                return Err(Flow::Close);
            }
        }
        Ok(moved)
    }

    /// The response went out whole: a tunnel after a 101, else the exchange is done.
    fn finish(&mut self, io: &mut ClientIo) -> Option<Flow> {
        let resp = self.resp?;
        let piped = self.pipe.as_ref().is_some_and(|p| p.held() > 0);
        if !io.cout_empty() || self.resp_fwd > 0 || !self.resp_body.is_done() || piped {
            return None;
        }
        if resp.status == 101 {
            self.mode = Mode::Tunnel;
            return Some(Flow::Moved);
        }
        let extra = self.uin.as_ref().is_some_and(|b| !b.is_empty());
        // Everything of the request is read from the client; and sent on, too.
        let req_read = self.req_body.is_done() && self.req_fwd == 0;
        let req_done = req_read && self.req_pipe.as_ref().is_none_or(|p| p.held() == 0);
        let reuse = resp.reusable && !self.up_eof && !extra && req_done && !self.up_shut;
        let keep_alive = resp.keep_alive && !io.eof;
        // The upstream answered before the whole request body arrived (say 405 to an
        // upload). The rest is for nobody, but if it is of known length and small, reading
        // it keeps the client connection; else the connection closes (lingering).
        let discard = match self.req_body {
            _ if req_read => 0,
            Body::Length(left) if keep_alive && left + self.req_fwd as u64 <= DISCARD_MAX => {
                if let Some(cin) = io.cin.as_mut() {
                    cin.consume(self.req_fwd);
                }
                self.req_fwd = 0;
                left
            }
            _ => return Some(Flow::Done { reuse, keep_alive: false, discard: 0 }),
        };
        Some(Flow::Done { reuse, keep_alive, discard })
    }

    /// After a 101: bytes both ways until the upstream is done.
    fn tunnel(&mut self, io: &mut ClientIo, cx: &mut Ctx, up: &mut Uplink) -> Flow {
        let mut moved = match io.read(cx.pool, false, cx.now) {
            Ok(n) => n > 0,
            Err(_) => return Flow::Close,
        };
        if let Some(cin) = io.cin.as_mut().filter(|b| !b.is_empty()) {
            if up.ready.can_write() {
                let (n, res) = up.sock.write_two(&mut up.ready, cin.bytes(), &[]);
                cin.consume(n);
                moved |= n > 0;
                if let SockResult::Error(_) = res {
                    return Flow::Close;
                }
            }
        }
        if io.eof && io.cin_empty() && !self.up_shut {
            up.sock.shutdown_write(&mut up.ready);
            self.up_shut = true;
        }
        if !self.up_eof && up.ready.can_read() {
            let buf = cx.pool.ensure(&mut self.uin);
            if !buf.is_full() {
                let (n, res) = up.sock.read_into(&mut up.ready, buf);
                moved |= n > 0;
                match res {
                    SockResult::Closed => self.up_eof = true,
                    SockResult::Error(_) => return Flow::Close,
                    _ => {}
                }
            }
        }
        self.resp_fwd = self.uin.as_ref().map_or(0, Buf::len);
        match io.write(self.uin.as_mut(), &mut self.resp_fwd, cx.now) {
            Ok(n) => moved |= n > 0,
            Err(_) => return Flow::Close,
        }
        if moved {
            io.last_activity = cx.now;
        }
        if self.up_eof && self.resp_fwd == 0 {
            // The upstream is done and everything it sent was delivered.
            return Flow::Close;
        }
        if moved {
            Flow::Moved
        } else {
            Flow::Idle
        }
    }

    /// The target is a directory: answer from it. The head goes out at once; a file body
    /// follows in [`Exchange::send_file`].
    pub(crate) fn start_file(&mut self, io: &mut ClientIo, cx: &mut Ctx) -> Flow {
        let cfg = cx.cfg;
        let Some(site) = cfg.upstreams.get(self.target).and_then(|u| u.site()) else { return Flow::Close };
        self.mode = Mode::File;
        self.expect_wait = false;
        // A request body is not for a directory: the connection stays open only if all of
        // it arrived already (it is dropped), else it closes after the answer.
        if let Some(cin) = io.cin.as_ref().filter(|_| !self.req_body.is_done()) {
            if let Ok(n) = self.req_body.scan(&cin.bytes()[self.req_fwd..]) {
                self.req_fwd += n;
            }
        }
        let body_here = self.req_body.is_done();
        if body_here {
            if let Some(cin) = io.cin.as_mut() {
                cin.consume(self.req_fwd);
            }
            self.req_fwd = 0;
        }
        let keep_alive = self.req.keep_alive && body_here;
        let extra = match (keep_alive, self.req.minor) {
            (false, _) => "Connection: close\r\n",
            (true, 0) => "Connection: keep-alive\r\n",
            (true, _) => "",
        };
        let head = self.up_head.take();
        let out = cx.pool.ensure(&mut io.cout);
        let served = site.serve(
            head.as_ref().map_or(&[][..], Buf::bytes),
            extra,
            retry_after(cfg),
            SystemTime::now(),
            &mut Writer { buf: out, overflow: false },
        );
        log::debug!("client={} {} from {}", io.peer, served.status, cfg.name(self.target));
        if let Some(b) = head {
            cx.pool.put(b);
        }
        self.replay.release(cx.pool);
        self.file = served.body;
        self.file_keep_alive = keep_alive;
        self.status = served.status;
        self.ttfb = Some(cx.now.saturating_duration_since(self.started));
        Flow::DropUpstream
    }

    /// Streams the file being served: one buffer at a time, read only when the last one
    /// went out (backpressure from the client's socket).
    fn send_file(&mut self, io: &mut ClientIo, cx: &mut Ctx) -> Flow {
        let mut moved = false;
        if self.resp_fwd == 0 {
            if let Some(f) = self.file.as_mut().filter(|f| f.len > 0) {
                let buf = cx.pool.ensure(&mut self.uin);
                buf.clear();
                let space = buf.space();
                let want = space.len().min(usize::try_from(f.len).unwrap_or(usize::MAX));
                match f.file.read_at(&mut space[..want], f.offset) {
                    Ok(0) => {
                        log::warn!("client={} file shrank while being served; closing", io.peer);
                        return Flow::Close;
                    }
                    Ok(n) => {
                        buf.fill(n);
                        f.offset += n as u64;
                        f.len -= n as u64;
                        self.resp_fwd = n;
                        moved = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Flow::Moved,
                    Err(e) => {
                        log::warn!("client={} cannot read the file being served: {e}; closing", io.peer);
                        return Flow::Close;
                    }
                }
            }
        }
        match io.write(self.uin.as_mut(), &mut self.resp_fwd, cx.now) {
            Ok(n) => moved |= n > 0,
            Err(_) => return Flow::Close,
        }
        let file_done = self.file.as_ref().is_none_or(|f| f.len == 0);
        if file_done && self.resp_fwd == 0 && io.cout_empty() {
            return Flow::Done { reuse: false, keep_alive: self.file_keep_alive && !io.eof, discard: 0 };
        }
        if moved {
            Flow::Moved
        } else {
            Flow::Idle
        }
    }
}

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
