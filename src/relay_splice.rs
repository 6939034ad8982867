//! The zero-copy side of relaying: when a body may go socket to socket through a kernel
//! pipe instead of through user space, and moving it there, both ways. [`crate::relay`]
//! calls in here at its steps; the pipes and `splice(2)` themselves are
//! [`crate::splice`]'s. Nothing here parses HTTP, and nothing here keeps a byte a retry
//! could need: a request body is piped only once it can no longer be replayed.

use std::os::fd::{AsRawFd, RawFd};

use crate::buffer::Buf;
use crate::client_io::ClientIo;
use crate::exchange::{io_fail, Ctx, Exchange, Flow, StepResult};
use crate::framing::Body;
use crate::readiness::{Readiness, R};
use crate::splice::{self, Pipe, Pipes};
use crate::transport::SockResult;
use crate::uplink::{kind_text, UpState, Uplink};

impl Exchange {
    /// The rest of a large request body (or of a large chunk of one) may go socket to
    /// socket: its length is known, it can no longer be replayed (a method that is never
    /// re-sent, or past the retry buffer), and some of it has been sent already, so that a
    /// failure from now on gives up instead of re-sending (the bytes in a pipe are gone
    /// once sent).
    pub(crate) fn may_splice_request(&self, io: &ClientIo, cx: &Ctx, up: &Uplink) -> bool {
        self.req_body.unframed_left() >= splice::MIN_BODY
            && self.body_sent > 0
            && self.replay.ok().is_err()
            && !self.replay.replaying()
            && self.req_fwd == 0
            && io.cin_empty()
            && up.state == UpState::Busy
            && self.resp.is_none()
            && !self.up_shut
            && !self.expect_wait
            && splice_ok(io, cx, up)
    }

    /// A request body goes through a pipe and what comes next is chunked framing, to be
    /// read through user space: the pipe is empty (all of it sent) and the chunk's data is
    /// all seen.
    pub(crate) fn req_framing_next(&self) -> bool {
        self.req_pipe.as_ref().is_some_and(|p| p.held() == 0)
            && self.req_body.unframed_left() == 0
            && !self.req_body.is_done()
    }

    /// Moves request-body bytes client → pipe → upstream, as [`Self::send_request`] does
    /// through `cin`, with the same failures.
    #[inline(never)]
    pub(crate) fn splice_request(&mut self, io: &mut ClientIo, cx: &mut Ctx, up: &mut Uplink) -> StepResult {
        let Some(pipe) = self.req_pipe.as_mut() else { return Ok(false) };
        let mut moved = 0;
        if self.req_body.unframed_left() > 0 && !io.eof && io.ready.can_read() {
            let Some((n, res)) = fill(pipe, io.sock.sock.as_raw_fd(), &mut io.ready, &mut self.req_body, cx.pipes)
            else {
                // Nothing moved: the rest of the body goes the copy way.
                if let Some(p) = self.req_pipe.take() {
                    cx.pipes.put(p);
                }
                return Ok(true);
            };
            moved += n;
            match res {
                SockResult::Closed => io.eof = true,
                SockResult::Error(_) => return Err(Flow::Close),
                _ => {}
            }
        }
        if io.eof && !self.req_body.is_done() {
            log::debug!("client={} closed in the middle of its request body", io.peer);
            return Err(Flow::Close);
        }
        // What the copy way holds to send (framing read with a bite) goes before the pipe.
        if pipe.held() > 0 && up.ready.can_write() && !self.up_shut && self.req_fwd == 0 {
            let (n, res) = pipe.drain(up.sock.sock.as_raw_fd(), &mut up.ready);
            moved += n;
            cx.metrics.spliced(true, n);
            self.body_sent += n as u64;
            if let SockResult::Error(k) = res {
                // As in send_request: the upstream may have answered first; read that.
                self.up_shut = true;
                if self.resp.is_none() {
                    self.send_failed = Some(io_fail(up, format!("send failed: {}", kind_text(k))));
                    up.ready.event |= R;
                }
            }
        }
        if moved > 0 {
            io.last_activity = cx.now;
        }
        Ok(moved > 0)
    }

    /// Past what was read with the head, a large body of plain length (or up to the close),
    /// or the data of a large chunk, goes from the upstream's socket to the client's
    /// through a pipe, never through user space: nothing re-frames data and, with its head
    /// relayed, nothing replays it. A chunked body's framing is read between its chunks'
    /// data by [`Exchange::read_response_head`], in a bite, once the pipe is empty.
    #[inline(never)]
    pub(crate) fn splice_body(&mut self, io: &mut ClientIo, cx: &mut Ctx, up: &mut Uplink) -> StepResult {
        // What the client is still to get through user space comes before what is piped.
        let caught_up = io.cout_empty() && self.uin.as_ref().is_none_or(Buf::is_empty);
        if self.pipe.is_none() {
            if !caught_up || self.resp.is_none() || self.up_eof || !splice_ok(io, cx, up) {
                return Ok(false);
            }
            self.pipe = cx.pipes.take();
        }
        let Some(pipe) = self.pipe.as_mut() else { return Ok(false) };
        let mut moved = 0;
        if self.resp_body.unframed_left() > 0 && !self.up_eof && up.ready.can_read() {
            let Some((n, res)) = fill(pipe, up.sock.sock.as_raw_fd(), &mut up.ready, &mut self.resp_body, cx.pipes)
            else {
                // Nothing moved: the rest of the body goes the copy way.
                if let Some(p) = self.pipe.take() {
                    cx.pipes.put(p);
                }
                return Ok(true);
            };
            moved += n;
            match res {
                SockResult::Closed => self.up_eof = true,
                SockResult::Error(_) => return Err(Flow::Close),
                _ => {}
            }
        }
        if pipe.held() > 0 && io.ready.can_write() && caught_up {
            let (n, res) = pipe.drain(io.sock.sock.as_raw_fd(), &mut io.ready);
            moved += n;
            cx.metrics.spliced(false, n);
            io.sent = io.sent.wrapping_add(n as u32);
            if let SockResult::Error(_) = res {
                return Err(Flow::Close);
            }
        }
        if moved > 0 {
            io.last_activity = cx.now;
        }
        Ok(moved > 0)
    }
}

/// A chunk's data that a bite of framing showed to be small goes the copy way, and so do
/// the chunks after it, read in full buffers again: a pipe pays for large chunks only.
/// (Called after body bytes were read through user space while `pipe` was held.)
pub(crate) fn unpipe_small_chunk(body: &Body, pipe: &mut Option<Pipe>, pipes: &mut Pipes) {
    let left = body.unframed_left();
    let chunked = matches!(body, Body::Chunked(_));
    if chunked && left > 0 && left < splice::MIN_BODY && pipe.as_ref().is_some_and(|p| p.held() == 0) {
        if let Some(p) = pipe.take() {
            pipes.put(p);
        }
    }
}

/// Fills `pipe` from socket `from` with at most what is left of `body`, and counts the
/// bytes off it. `None`: the kernel refused `splice` before a byte moved (the body goes the
/// copy way instead).
fn fill(
    pipe: &mut Pipe,
    from: RawFd,
    ready: &mut Readiness,
    body: &mut Body,
    pipes: &mut Pipes,
) -> Option<(usize, SockResult)> {
    let (n, res) = pipe.fill(from, ready, body.unframed_left());
    if let SockResult::Error(k) = res {
        if n == 0 && pipe.held() == 0 && pipes.refused(k) {
            return None;
        }
    }
    body.took(n as u64);
    Some((n, res))
}

/// Both sides are plain TCP and splicing is on: a body may go through a pipe.
pub(crate) fn splice_ok(io: &ClientIo, cx: &Ctx, up: &Uplink) -> bool {
    io.sock.tls.is_none() && up.sock.tls.is_none() && !cx.cfg.no_splice && cx.pipes.usable()
}
