//! The client's side of a connection as the state machine and the exchange in flight use
//! it: the socket, the bytes read from it and not yet used, the bytes the proxy wrote for
//! it (response heads, its own answers), and when anything last moved.
//!
//! Reads and writes here follow the edge-triggered contract of [`crate::transport`]; this
//! file never parses HTTP.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use crate::buffer::{Buf, Pool};
use crate::readiness::Readiness;
use crate::transport::{self, Conn, SockResult};

pub struct ClientIo {
    pub sock: Conn,
    pub ready: Readiness,
    pub peer: Peer,
    /// Bytes from the client (request heads and bodies, raw).
    pub cin: Option<Buf>,
    /// Bytes to the client that the proxy wrote: response heads and its own answers.
    pub cout: Option<Buf>,
    /// The client closed its sending side.
    pub eof: bool,
    pub last_activity: Instant,
    /// Bytes written to the client so far, wrapping at 4 GiB (for the access log).
    pub sent: u32,
}

/// The client's address, packed: 20 bytes where a `SocketAddr` takes 32 (an idle
/// connection keeps it for logs, X-Forwarded-For and the access log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    ip: [u8; 16],
    port: u16,
    v6: bool,
}

impl Peer {
    pub fn ip(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.ip))
        } else {
            IpAddr::V4(Ipv4Addr::new(self.ip[0], self.ip[1], self.ip[2], self.ip[3]))
        }
    }
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Peer {
        let mut ip = [0u8; 16];
        let v6 = match a.ip() {
            IpAddr::V4(v4) => {
                ip[..4].copy_from_slice(&v4.octets());
                false
            }
            IpAddr::V6(v6) => {
                ip = v6.octets();
                true
            }
        };
        Peer { ip, port: a.port(), v6 }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SocketAddr::new(self.ip(), self.port).fmt(f)
    }
}

/// The socket failed: the connection is over.
#[derive(Debug)]
pub struct Broken;

impl ClientIo {
    pub fn new(sock: Conn, peer: SocketAddr, now: Instant) -> ClientIo {
        let peer = Peer::from(peer);
        ClientIo { sock, ready: Readiness::new(), peer, cin: None, cout: None, eof: false, last_activity: now, sent: 0 }
    }

    /// Nothing from the client is waiting to be used.
    pub fn cin_empty(&self) -> bool {
        self.cin.as_ref().is_none_or(Buf::is_empty)
    }

    pub fn cout_empty(&self) -> bool {
        self.cout.as_ref().is_none_or(Buf::is_empty)
    }

    /// Reads what the client sent into `cin`. A request head starts in a small buffer (a
    /// slow client holds little), moved to a full one only if it fills; a body goes into a
    /// full one at once, with what a small one held (`head`: what is read now is a head).
    pub fn read(&mut self, pool: &mut Pool, head: bool, now: Instant) -> Result<usize, Broken> {
        self.read_upto(pool, head, usize::MAX, now)
    }

    /// Reads as [`ClientIo::read`] does, but at most `max` bytes (plain TCP only, unless
    /// `max` is `usize::MAX`): what stays in the socket can go on another way (the data of
    /// a chunk, with `splice`).
    #[inline]
    pub fn read_upto(&mut self, pool: &mut Pool, head: bool, max: usize, now: Instant) -> Result<usize, Broken> {
        if self.eof || !self.ready.can_read() {
            return Ok(0);
        }
        let buf = if head {
            pool.grow_if_full(&mut self.cin);
            pool.ensure_small(&mut self.cin)
        } else {
            pool.grow(&mut self.cin);
            pool.ensure(&mut self.cin)
        };
        if buf.is_full() {
            return Ok(0);
        }
        let (n, res) = if max == usize::MAX {
            self.sock.read_into(&mut self.ready, buf)
        } else {
            debug_assert!(self.sock.tls.is_none());
            transport::read_upto(&mut self.sock.sock, &mut self.ready, buf, max)
        };
        if n > 0 {
            self.last_activity = now;
        }
        match res {
            SockResult::Closed => self.eof = true,
            SockResult::Error(_) => return Err(Broken),
            _ => {}
        }
        Ok(n)
    }

    /// Writes `cout`, then the first `*body_len` bytes of `body` (response-body bytes from
    /// an upstream or a file), in one vectored write where the socket takes it.
    pub fn write(&mut self, body: Option<&mut Buf>, body_len: &mut usize, now: Instant) -> Result<usize, Broken> {
        let head = self.cout.as_ref().map_or(&[][..], Buf::bytes);
        let data = body.as_ref().map_or(&[][..], |b| &b.bytes()[..*body_len]);
        if (head.is_empty() && data.is_empty()) || !self.ready.can_write() {
            return Ok(0);
        }
        let head_len = head.len();
        let (n, res) = self.sock.write_two(&mut self.ready, head, data);
        let from_head = n.min(head_len);
        if let Some(b) = self.cout.as_mut() {
            b.consume(from_head);
        }
        if n > from_head {
            if let Some(b) = body {
                b.consume(n - from_head);
            }
            *body_len -= n - from_head;
        }
        if n > 0 {
            self.last_activity = now;
            self.sent = self.sent.wrapping_add(n as u32);
        }
        match res {
            SockResult::Error(_) => Err(Broken),
            _ => Ok(n),
        }
    }

    /// Returns empty buffers to the pool: an idle connection holds none.
    pub fn release_empty(&mut self, pool: &mut Pool) {
        pool.release_if_empty(&mut self.cin);
        pool.release_if_empty(&mut self.cout);
    }

    /// Returns every buffer to the pool (the connection is being closed).
    pub fn release(&mut self, pool: &mut Pool) {
        for slot in [&mut self.cin, &mut self.cout] {
            if let Some(b) = slot.take() {
                pool.put(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_peer_is_the_address_it_was() {
        for a in ["127.0.0.1:8080", "[::1]:443", "[2001:db8::7]:65535", "10.1.2.3:0"] {
            let addr: SocketAddr = a.parse().unwrap();
            let p = Peer::from(addr);
            assert_eq!((p.ip(), p.to_string()), (addr.ip(), addr.to_string()));
        }
        assert_eq!(std::mem::size_of::<Peer>(), 20);
    }
}
