//! Socket reads and writes that say what happened instead of returning `io::Result`, for
//! plain TCP and, through [`crate::tls`], TLS behind the same calls.
//!
//! Every call loops until it moves what it can or the socket says `WouldBlock`, and then
//! clears the matching readiness bit: that is the edge-triggered contract. This file knows
//! nothing of HTTP.

use std::io::{self, IoSlice, Read, Write};

use mio::net::TcpStream;

use crate::buffer::Buf;
pub use crate::readiness::SockResult;
use crate::readiness::{Readiness, HUP, R, W};
use crate::tls::Session;

/// A connection: a socket, and a TLS session when the peer speaks TLS.
pub struct Conn {
    pub sock: TcpStream,
    pub tls: Option<Box<Session>>,
}

impl Conn {
    pub fn read_into(&mut self, ready: &mut Readiness, buf: &mut Buf) -> (usize, SockResult) {
        match self.tls.as_mut() {
            Some(t) => t.read_into(&mut self.sock, ready, buf),
            None => read_into(&mut self.sock, ready, buf),
        }
    }

    pub fn write_two(&mut self, ready: &mut Readiness, a: &[u8], b: &[u8]) -> (usize, SockResult) {
        match self.tls.as_mut() {
            Some(t) => t.write_two(&mut self.sock, ready, a, b),
            None => write_two(&mut self.sock, ready, a, b),
        }
    }

    /// Sends what TLS still holds (nothing to do for plain TCP).
    pub fn flush(&mut self, ready: &mut Readiness) -> SockResult {
        match self.tls.as_mut() {
            Some(t) if t.wants_write() => t.flush(&mut self.sock, ready),
            _ => SockResult::Continue,
        }
    }

    /// TLS records wait to be sent.
    pub fn wants_flush(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Ends our sending side (close_notify first for TLS).
    pub fn shutdown_write(&mut self, ready: &mut Readiness) {
        if let Some(t) = self.tls.as_mut() {
            t.close(&mut self.sock, ready);
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
    }

    /// Why the TLS session failed, if it did.
    pub fn tls_error(&self) -> Option<&str> {
        self.tls.as_ref().and_then(|t| t.error.as_deref())
    }

    /// Still in the TLS handshake (a failure now means the request never left).
    pub fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }
}

/// Reads into the free space of `buf` until it is full or the socket would block.
pub fn read_into(sock: &mut TcpStream, ready: &mut Readiness, buf: &mut Buf) -> (usize, SockResult) {
    read_upto(sock, ready, buf, usize::MAX)
}

/// Reads as [`read_into`] does, but at most `max` bytes: what stays in the socket can go
/// on another way (a response body, with `splice`).
pub fn read_upto(sock: &mut TcpStream, ready: &mut Readiness, buf: &mut Buf, max: usize) -> (usize, SockResult) {
    let mut total = 0;
    // After a hang-up hint the zero-byte read must still happen, so no short-read shortcut.
    let hup = ready.event & HUP != 0;
    loop {
        let space = buf.space();
        let room = space.len().min(max - total);
        if room == 0 {
            return (total, SockResult::Continue);
        }
        let space = &mut space[..room];
        match sock.read(space) {
            Ok(0) => {
                ready.event &= !(R | HUP);
                return (total, SockResult::Closed);
            }
            Ok(n) => {
                let asked = space.len();
                buf.fill(n);
                total += n;
                if n < asked && !hup {
                    // A short read on a stream socket means it is drained (epoll(7)): the
                    // next edge will come, so skip the read that would say WouldBlock.
                    ready.event &= !(R | HUP);
                    return (total, SockResult::WouldBlock);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.event &= !(R | HUP);
                return (total, SockResult::WouldBlock);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (total, SockResult::Error(e.kind())),
        }
    }
}

/// Writes `a` then `b` (either may be empty) with vectored writes until both are sent or
/// the socket would block. Returns how many bytes left, counted across both.
pub fn write_two(sock: &mut TcpStream, ready: &mut Readiness, a: &[u8], b: &[u8]) -> (usize, SockResult) {
    let mut total = 0;
    loop {
        let (ra, rb) = if total < a.len() { (&a[total..], b) } else { (&[][..], &b[total - a.len()..]) };
        if ra.is_empty() && rb.is_empty() {
            return (total, SockResult::Continue);
        }
        let res = if ra.is_empty() {
            sock.write(rb)
        } else if rb.is_empty() {
            sock.write(ra)
        } else {
            sock.write_vectored(&[IoSlice::new(ra), IoSlice::new(rb)])
        };
        match res {
            Ok(0) => return (total, SockResult::Error(io::ErrorKind::WriteZero)),
            Ok(n) => {
                total += n;
                if n < ra.len() + rb.len() {
                    // Short write: the send buffer is full; an edge comes when it drains.
                    ready.event &= !W;
                    return (total, SockResult::WouldBlock);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.event &= !W;
                return (total, SockResult::WouldBlock);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (total, SockResult::Error(e.kind())),
        }
    }
}
