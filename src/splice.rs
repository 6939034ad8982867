//! Zero-copy body relaying: bytes go from one socket to another through a kernel pipe with
//! `splice(2)`, never through user space (HAProxy's `splice-auto`, sozu's splice feature).
//!
//! A [`Pipe`] belongs to one exchange while it holds bytes; each worker keeps the empty
//! ones in [`Pipes`] for the next. Calls follow the edge-triggered contract of
//! [`crate::transport`]: they move what they can and clear a readiness bit only when the
//! socket, not the pipe, is what would block. This file knows nothing of HTTP, and is the
//! only one that calls `splice`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::buffer::BUF_SIZE;
use crate::readiness::{Readiness, SockResult, HUP, R, W};
use crate::upstream::MAX_UPSTREAMS;

/// What a pipe is asked to hold. A large pipe moves a large body in fewer calls; its pages
/// are the socket buffers' own, held only while a slow client reads.
const PIPE_SIZE: usize = 256 * 1024;
/// Pipes one worker keeps open for reuse; past this, a finished pipe is closed.
const KEEP: usize = 64;
/// Pipes one worker has at once; past this, bodies go through user space.
const MAX_OPEN: usize = 4096;
/// Bodies shorter than this are copied: two `splice` calls cost more than two copies.
pub const MIN_BODY: u64 = 16 * 1024;
/// How much of a response is read through user space for its head (and the start of its
/// body) when the rest is likely to be spliced: most heads are a few hundred bytes.
pub const HEAD_BITE: usize = 4 * 1024;
/// How much of a chunked body is read through user space after a chunk's data went through
/// a pipe: the line end and the next size line, and the first bytes of its data (which
/// tell a small chunk from a large one).
pub const CHUNK_BITE: usize = 512;
/// A body at least this long is "large" for [`Pipes::bite`]: past a full buffer, where
/// the copy path takes several reads anyway.
const LARGE: u64 = BUF_SIZE as u64;
/// [`Pipes::bite`]'s score: large answers push it up to `SCORE_MAX`, others down to 0.
const SCORE_MAX: u8 = 8;
const SCORE_BITE: u8 = 4;

/// A pipe and how many bytes sit in it.
pub struct Pipe {
    rd: OwnedFd,
    wr: OwnedFd,
    cap: u32,
    held: u32,
}

/// A worker's pipes: the empty ones kept for reuse, and how many are out.
pub struct Pipes {
    free: Vec<Pipe>,
    open: usize,
    /// The kernel refused a pipe for a reason other than a shortage: copy from now on.
    off: bool,
    /// Per upstream: how many of its recent answers had large bodies (see [`Pipes::bite`]).
    score: [u8; MAX_UPSTREAMS],
}

impl Default for Pipes {
    fn default() -> Pipes {
        Pipes { free: Vec::with_capacity(KEEP), open: 0, off: false, score: [0; MAX_UPSTREAMS] }
    }
}

impl Pipes {
    /// Whether to read only a small bite for the next response head from `upstream`, so
    /// that its body stays in the kernel for `splice`. A bite costs a second read when the
    /// body is of middling size, so it is taken only while most of the upstream's recent
    /// answers were large (HAProxy's splice-auto decides from recent transfers too).
    pub fn bite(&self, upstream: usize) -> bool {
        self.score.get(upstream).is_some_and(|&s| s >= SCORE_BITE)
    }

    /// Counts an answer from `upstream` whose body is `len` bytes (`None`: unknown).
    pub fn saw(&mut self, upstream: usize, len: Option<u64>) {
        self.scored(upstream, len.is_some_and(|n| n >= LARGE));
    }

    /// Counts an answer from `upstream` that was `large` (a chunked one is, when one of
    /// its chunks went through a pipe).
    pub fn scored(&mut self, upstream: usize, large: bool) {
        if let Some(s) = self.score.get_mut(upstream) {
            *s = if large { (*s + 1).min(SCORE_MAX) } else { s.saturating_sub(1) };
        }
    }

    /// Pipes can be had (the kernel has not refused one).
    pub fn usable(&self) -> bool {
        !self.off
    }

    /// Whether a failed `splice` means the kernel (or a seccomp filter) does not allow it
    /// here rather than that the connection broke; then splicing is off for this worker,
    /// from now on.
    pub fn refused(&mut self, kind: io::ErrorKind) -> bool {
        let refused =
            matches!(kind, io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported | io::ErrorKind::InvalidInput);
        if refused && !self.off {
            self.turn_off(format_args!("refused by the kernel ({kind})"));
        }
        refused
    }

    /// Splicing is off for this worker from now on, said once.
    fn turn_off(&mut self, why: std::fmt::Arguments) {
        log::warn!("splice: {why}; relaying bodies through user space");
        self.off = true;
    }

    /// An empty pipe, or `None` when none can be had (bodies are copied then).
    pub fn take(&mut self) -> Option<Pipe> {
        if let Some(p) = self.free.pop() {
            return Some(p);
        }
        if self.off || self.open >= MAX_OPEN {
            return None;
        }
        match Pipe::open() {
            Ok(p) => {
                self.open += 1;
                Some(p)
            }
            // Out of descriptors or memory for now: this body is copied, the next may not be.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)) => None,
            Err(e) => {
                self.turn_off(format_args!("cannot open a pipe ({e})"));
                None
            }
        }
    }

    /// Takes a pipe back: kept if it is empty, closed if it still holds bytes nobody will
    /// read (the connection ended in the middle of a body).
    pub fn put(&mut self, p: Pipe) {
        if p.held == 0 && self.free.len() < KEEP {
            self.free.push(p);
        } else {
            self.open -= 1;
        }
    }
}

impl Pipe {
    fn open() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid array of two descriptors for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours alone.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ takes an int and touches no memory of ours. A refusal (over
        // /proc/sys/fs/pipe-max-size) leaves the default size, which F_GETPIPE_SZ reports.
        let cap = unsafe {
            libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int);
            libc::fcntl(wr.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        if cap <= 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Pipe { rd, wr, cap: cap as u32, held: 0 })
    }

    /// Bytes in the pipe, not yet sent on.
    pub fn held(&self) -> usize {
        self.held as usize
    }

    /// Moves at most `max` bytes from socket `from` into the pipe. `Closed` is the peer's
    /// end of stream.
    ///
    /// A full pipe also says `EAGAIN`, and it can fill before `cap` bytes (each socket
    /// buffer takes a slot): so `EAGAIN` clears the read bit only when the pipe was empty,
    /// where the socket is the only thing that can have blocked. Otherwise the caller
    /// drains the pipe and asks again.
    pub fn fill(&mut self, from: RawFd, ready: &mut Readiness, max: u64) -> (usize, SockResult) {
        let mut total = 0;
        loop {
            let room = (self.cap - self.held) as u64;
            let want = room.min(max - total as u64) as usize;
            if want == 0 {
                return (total, SockResult::Continue);
            }
            match splice(from, self.wr.as_raw_fd(), want) {
                Ok(0) => {
                    ready.event &= !(R | HUP);
                    return (total, SockResult::Closed);
                }
                Ok(n) => {
                    self.held += n as u32;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.held == 0 {
                        ready.event &= !(R | HUP);
                        return (total, SockResult::WouldBlock);
                    }
                    return (total, SockResult::Continue);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (total, SockResult::Error(e.kind())),
            }
        }
    }

    /// Sends what the pipe holds to socket `to` until it is empty or the socket is full.
    pub fn drain(&mut self, to: RawFd, ready: &mut Readiness) -> (usize, SockResult) {
        let mut total = 0;
        while self.held > 0 {
            match splice(self.rd.as_raw_fd(), to, self.held as usize) {
                // The pipe is not empty, so nothing but an error ends a write early.
                Ok(0) => return (total, SockResult::Error(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.held -= n as u32;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready.event &= !W;
                    return (total, SockResult::WouldBlock);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (total, SockResult::Error(e.kind())),
            }
        }
        (total, SockResult::Continue)
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: both descriptors are open for the call (the caller holds the sockets and the
    // pipe); null offsets are what splice takes for sockets and pipes; no memory of ours
    // is read or written.
    let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn bytes_cross_whole_and_in_order_and_the_end_is_seen() {
        let (mut src_w, src_r) = pair();
        let (dst_w, mut dst_r) = pair();
        src_r.set_nonblocking(true).unwrap();
        dst_w.set_nonblocking(true).unwrap();
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = body.clone();
        let writer = std::thread::spawn(move || {
            src_w.write_all(&sent).unwrap();
        });
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            dst_r.read_to_end(&mut got).unwrap();
            got
        });
        let mut pipes = Pipes::default();
        let mut p = pipes.take().unwrap();
        let (mut rin, mut rout) = (Readiness::new(), Readiness::new());
        let mut moved = 0u64;
        while moved < body.len() as u64 {
            rin.event |= R;
            rout.event |= W;
            let (_, res) = p.fill(src_r.as_raw_fd(), &mut rin, body.len() as u64 - moved - p.held() as u64);
            assert!(!matches!(res, SockResult::Error(_) | SockResult::Closed), "{res:?}");
            let (n, res) = p.drain(dst_w.as_raw_fd(), &mut rout);
            assert!(!matches!(res, SockResult::Error(_)), "{res:?}");
            moved += n as u64;
        }
        writer.join().unwrap();
        rin.event |= R;
        loop {
            match p.fill(src_r.as_raw_fd(), &mut rin, 1).1 {
                SockResult::Closed => break,
                _ => rin.event |= R,
            }
        }
        drop(dst_w);
        assert!(reader.join().unwrap() == body);
        assert_eq!(p.held(), 0);
        pipes.put(p);
        assert_eq!((pipes.free.len(), pipes.open), (1, 1));
    }

    #[test]
    fn a_descriptor_splice_cannot_read_is_a_refusal_not_a_broken_connection() {
        // SAFETY: eventfd takes two ints and returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(1, libc::EFD_NONBLOCK) };
        assert!(fd >= 0);
        // SAFETY: the descriptor was just created and is owned here alone.
        let ev = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut pipes = Pipes::default();
        let mut p = pipes.take().unwrap();
        let mut r = Readiness::new();
        let (n, res) = p.fill(ev.as_raw_fd(), &mut r, 100);
        let SockResult::Error(kind) = res else { panic!("{res:?}") };
        assert_eq!(n, 0);
        assert!(pipes.refused(kind), "{kind:?}");
        assert!(!pipes.usable());
        assert!(!pipes.refused(io::ErrorKind::ConnectionReset), "a reset is the connection's");
    }

    #[test]
    fn a_pipe_put_back_with_bytes_in_it_is_closed() {
        let (mut a, b) = pair();
        b.set_nonblocking(true).unwrap();
        a.write_all(b"abc").unwrap();
        let mut pipes = Pipes::default();
        let mut p = pipes.take().unwrap();
        let mut r = Readiness::new();
        while p.held() < 3 {
            p.fill(b.as_raw_fd(), &mut r, 3);
            r.event |= R;
        }
        pipes.put(p);
        assert_eq!((pipes.free.len(), pipes.open), (0, 0));
    }
}
