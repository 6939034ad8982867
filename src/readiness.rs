//! Event/interest bookkeeping per socket, after sozu's `Readiness`.
//!
//! Sockets are registered once for both directions, edge-triggered. Edges from epoll are
//! OR'ed into `event`; an `event` bit is cleared only when an operation returns
//! `WouldBlock`. The state machines change only `interest`. A side is worth touching when
//! its bit is in both. [`SockResult`] is what an operation ended on, for the same
//! bookkeeping. This file never does I/O.

use std::io;

/// Readable bit.
pub const R: u8 = 1;
/// Writable bit.
pub const W: u8 = 2;
/// Hang-up or error reported by the poller (a hint: the real answer comes from I/O).
pub const HUP: u8 = 4;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    pub event: u8,
    pub interest: u8,
}

impl Readiness {
    /// A freshly registered socket: assume both directions may be ready, so the first drive
    /// tries them (a spurious `WouldBlock` costs one syscall; a missed edge costs a hang).
    pub fn new() -> Readiness {
        Readiness { event: R | W, interest: R | W }
    }

    pub fn can_read(&self) -> bool {
        self.interest & R != 0 && self.event & (R | HUP) != 0
    }

    pub fn can_write(&self) -> bool {
        self.event & self.interest & W != 0
    }

    pub fn record(&mut self, ev: &mio::event::Event) {
        if ev.is_readable() || ev.is_read_closed() {
            self.event |= R;
        }
        if ev.is_writable() || ev.is_write_closed() {
            self.event |= W;
        }
        if ev.is_error() || ev.is_read_closed() {
            self.event |= HUP | R;
        }
    }
}

/// What a read or write ended on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockResult {
    /// Moved what there was; the socket may have more (buffer full / nothing left to send).
    Continue,
    /// The socket has nothing more for now.
    WouldBlock,
    /// The peer closed its sending side (read returned 0).
    Closed,
    /// Reset or another socket error.
    Error(io::ErrorKind),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_event_and_interest() {
        let mut r = Readiness { event: 0, interest: R | W };
        assert!(!r.can_read() && !r.can_write());
        r.event = R;
        assert!(r.can_read() && !r.can_write());
        r.interest = W;
        assert!(!r.can_read(), "interest off stops reads even with an event");
        r.event = W;
        assert!(r.can_write());
        r.event = HUP;
        r.interest = R;
        assert!(r.can_read(), "a hang-up is read to find out what happened");
    }
}
