//! Fixed-size byte buffers and the per-worker pool they come from.
//!
//! A buffer is taken when a connection has bytes to hold and returned as soon as it is
//! empty, so an idle keep-alive connection holds none. A full buffer is backpressure, with
//! one exception: a request head starts in a small buffer, moved to a full-size one only if
//! it fills ([`Pool::grow_if_full`]). This file never touches a socket.

/// Size of every buffer: room for a full request head and a good share of a body.
pub const BUF_SIZE: usize = 32 * 1024;

/// Size of the buffer a request head starts in. Most heads fit in one; a client trickling
/// a head (slowloris) holds this much, not [`BUF_SIZE`].
pub const HEAD_BUF_SIZE: usize = 4 * 1024;

/// Bytes `data[start..end]` are held; `data[end..]` is free space. Offsets are `u32` (a
/// buffer is at most [`BUF_SIZE`]): an idle connection's two empty slots stay small.
pub struct Buf {
    data: Box<[u8]>,
    start: u32,
    end: u32,
}

impl Buf {
    /// A small buffer outside the pool (for probes, which are not per request).
    pub fn small(size: usize) -> Buf {
        Buf { data: vec![0u8; size.min(u32::MAX as usize)].into_boxed_slice(), start: 0, end: 0 }
    }

    fn range(&self) -> (usize, usize) {
        (self.start as usize, self.end as usize)
    }

    /// The bytes held.
    pub fn bytes(&self) -> &[u8] {
        let (s, e) = self.range();
        &self.data[s..e]
    }

    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn is_full(&self) -> bool {
        self.len() == self.data.len()
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n as u32;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free space after the held bytes, moving them to the front first if that makes room.
    pub fn space(&mut self) -> &mut [u8] {
        let (s, e) = self.range();
        if s > 0 && e == self.data.len() {
            self.data.copy_within(s..e, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let e = self.end as usize;
        &mut self.data[e..]
    }

    /// Marks `n` bytes of [`Buf::space`] as filled.
    pub fn fill(&mut self, n: usize) {
        debug_assert!(self.end as usize + n <= self.data.len());
        self.end += n as u32;
    }

    /// Appends as much of `src` as fits; returns how much did.
    pub fn push(&mut self, src: &[u8]) -> usize {
        let space = self.space();
        let n = src.len().min(space.len());
        space[..n].copy_from_slice(&src[..n]);
        self.fill(n);
        n
    }

    /// Keeps only the first `len` held bytes (drops what was appended after them).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.end = self.start + len as u32;
        }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let (s, e) = self.range();
        &mut self.data[s..e]
    }

    /// Removes held bytes `from..to` (offsets into [`Buf::bytes`]), closing the gap.
    pub fn cut(&mut self, from: usize, to: usize) {
        debug_assert!(from <= to && to <= self.len());
        if from == to {
            return;
        }
        let (s, e) = self.range();
        self.data.copy_within(s + to..e, s + from);
        self.end -= (to - from) as u32;
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }
}

/// A `Buf` used as an output sink for head rewriting: writes that do not fit set `overflow`
/// instead of failing, so a caller checks once at the end.
pub struct Writer<'a> {
    pub buf: &'a mut Buf,
    pub overflow: bool,
}

impl Writer<'_> {
    pub fn put(&mut self, bytes: &[u8]) {
        if self.buf.push(bytes) < bytes.len() {
            self.overflow = true;
        }
    }
}

/// Free buffers of each size [`Pool::trim`] always keeps (2 MiB of full-size ones).
const RESERVE: usize = 64;

/// Free buffers of one worker: full-size ones and head-size ones, at most `max_free` of
/// each. Buffers no request needed for a whole [`Pool::trim`] period go back to the
/// allocator, so the memory of a burst (or an attack) is returned once it is over.
pub struct Pool {
    free: Vec<Box<[u8]>>,
    free_small: Vec<Box<[u8]>>,
    max_free: usize,
    /// The fewest free buffers of each size since the last trim: that many sat unused.
    low: usize,
    low_small: usize,
}

impl Pool {
    pub fn new(max_free: usize) -> Pool {
        Pool { free: Vec::new(), free_small: Vec::new(), max_free, low: 0, low_small: 0 }
    }

    /// A full-size buffer.
    pub fn take(&mut self) -> Buf {
        let data = self.free.pop().unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice());
        self.low = self.low.min(self.free.len());
        Buf { data, start: 0, end: 0 }
    }

    /// A head-size buffer.
    pub fn take_small(&mut self) -> Buf {
        let data = self.free_small.pop().unwrap_or_else(|| vec![0u8; HEAD_BUF_SIZE].into_boxed_slice());
        self.low_small = self.low_small.min(self.free_small.len());
        Buf { data, start: 0, end: 0 }
    }

    /// Frees the buffers that stayed unused since the last call (called every few
    /// seconds); returns how many bytes went back to the allocator.
    pub fn trim(&mut self) -> usize {
        // A reserve stays, so steady traffic that varies a little never frees a buffer it
        // takes again a moment later (the hot path allocates nothing).
        let big = self.low.min(self.free.len().saturating_sub(RESERVE));
        let small = self.low_small.min(self.free_small.len().saturating_sub(RESERVE));
        if big > 0 {
            self.free.truncate(self.free.len() - big);
            self.free.shrink_to(self.free.len().max(RESERVE));
        }
        if small > 0 {
            self.free_small.truncate(self.free_small.len() - small);
            self.free_small.shrink_to(self.free_small.len().max(RESERVE));
        }
        self.low = self.free.len();
        self.low_small = self.free_small.len();
        big * BUF_SIZE + small * HEAD_BUF_SIZE
    }

    pub fn put(&mut self, buf: Buf) {
        let free = match buf.data.len() {
            BUF_SIZE => &mut self.free,
            HEAD_BUF_SIZE => &mut self.free_small,
            _ => return,
        };
        if free.len() < self.max_free {
            free.push(buf.data);
        }
    }

    /// The buffer in `slot`, taking a head-size one from the pool if there is none.
    pub fn ensure_small<'a>(&mut self, slot: &'a mut Option<Buf>) -> &'a mut Buf {
        slot.get_or_insert_with(|| self.take_small())
    }

    /// If `slot` holds a full head-size buffer, moves its bytes to a full-size one.
    pub fn grow_if_full(&mut self, slot: &mut Option<Buf>) {
        if slot.as_ref().is_some_and(Buf::is_full) {
            self.grow(slot);
        }
    }

    /// If `slot` holds a head-size buffer, moves its bytes to a full-size one (a body is
    /// coming: streamed through 4 KB, it would take eight times the system calls).
    pub fn grow(&mut self, slot: &mut Option<Buf>) {
        if slot.as_ref().is_some_and(|b| b.data.len() < BUF_SIZE) {
            if let Some(small) = slot.take() {
                let mut big = self.take();
                big.push(small.bytes());
                self.put(small);
                *slot = Some(big);
            }
        }
    }

    /// Returns `slot`'s buffer to the pool if it holds nothing.
    pub fn release_if_empty(&mut self, slot: &mut Option<Buf>) {
        if slot.as_ref().is_some_and(Buf::is_empty) {
            if let Some(b) = slot.take() {
                self.put(b);
            }
        }
    }

    /// The buffer in `slot`, taking one from the pool if there is none.
    pub fn ensure<'a>(&mut self, slot: &'a mut Option<Buf>) -> &'a mut Buf {
        slot.get_or_insert_with(|| self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_buffer_grows_for_a_body_whatever_it_holds() {
        // A body after a head streams through a full-size buffer: left in the 4 KB one, a
        // 256 KB upload took 64 reads and 64 sends (572 µs of proxy CPU against 108).
        let mut pool = Pool::new(4);
        let mut slot = None;
        pool.ensure_small(&mut slot).push(b"body start");
        pool.grow(&mut slot);
        let b = slot.as_mut().expect("a buffer");
        let room = b.space().len();
        assert_eq!((b.bytes(), room), (&b"body start"[..], BUF_SIZE - 10));
        let mut empty = Some(pool.take_small());
        pool.grow(&mut empty);
        assert_eq!(empty.as_mut().map(|b| b.space().len()), Some(BUF_SIZE), "an empty one too");
        pool.grow(&mut slot);
        assert_eq!(slot.as_ref().map(Buf::len), Some(10), "a full-size one stays as it is");
    }

    #[test]
    fn a_full_head_buffer_grows_with_its_bytes() {
        let mut pool = Pool::new(4);
        let mut slot = None;
        let b = pool.ensure_small(&mut slot);
        assert_eq!(b.space().len(), HEAD_BUF_SIZE);
        b.push(b"x");
        pool.grow_if_full(&mut slot);
        assert_eq!(slot.as_mut().map(|b| b.space().len()), Some(HEAD_BUF_SIZE - 1), "not full: kept");
        let rest: Vec<u8> = (0..HEAD_BUF_SIZE - 1).map(|i| i as u8).collect();
        if let Some(b) = slot.as_mut() {
            b.push(&rest);
        }
        assert!(slot.as_ref().is_some_and(Buf::is_full));
        pool.grow_if_full(&mut slot);
        let b = slot.as_mut().expect("a buffer");
        assert_eq!(b.bytes(), [&b"x"[..], &rest].concat(), "the bytes move, in order");
        assert_eq!(b.space().len(), BUF_SIZE - HEAD_BUF_SIZE);
        // Both sizes come back to their own list; other sizes are dropped.
        pool.put(Buf::small(16));
        assert_eq!((pool.free.len(), pool.free_small.len()), (0, 1));
        let mut big = Some(pool.take());
        pool.release_if_empty(&mut big);
        assert_eq!((pool.free.len(), pool.free_small.len()), (1, 1));
    }

    #[test]
    fn trim_frees_only_what_sat_unused_for_a_whole_period_above_a_reserve() {
        let mut pool = Pool::new(1024);
        let held: Vec<Buf> = (0..RESERVE + 10).map(|_| pool.take()).collect();
        for b in held {
            pool.put(b);
        }
        assert_eq!(pool.trim(), 0, "the first period ends: all were just in use");
        let busy: Vec<Buf> = (0..3).map(|_| pool.take()).collect();
        assert_eq!(pool.trim(), 7 * BUF_SIZE, "seven sat unused a whole period; the reserve stays");
        for b in busy {
            pool.put(b);
        }
        assert_eq!(pool.free.len(), RESERVE + 3);
        assert_eq!(pool.trim(), 3 * BUF_SIZE, "down to the reserve");
        assert_eq!(pool.trim(), 0, "never below it");
    }

    #[test]
    fn fill_consume_compact() {
        let mut pool = Pool::new(4);
        let mut b = pool.take();
        assert!(b.is_empty());
        assert_eq!(b.push(b"hello world"), 11);
        b.consume(6);
        assert_eq!(b.bytes(), b"world");
        let big = vec![7u8; BUF_SIZE];
        let n = b.push(&big);
        assert_eq!(n, BUF_SIZE - 11, "fills the tail first");
        assert_eq!(b.push(&big), 6, "then moves the held bytes to the front to make room");
        assert!(b.is_full());
        assert_eq!(&b.bytes()[..5], b"world");
        b.consume(b.len());
        assert!(b.is_empty());
        let mut slot = Some(b);
        pool.release_if_empty(&mut slot);
        assert!(slot.is_none());
        assert_eq!(pool.free.len(), 1);
    }

    #[test]
    fn writer_flags_overflow() {
        let mut pool = Pool::new(1);
        let mut b = pool.take();
        let mut w = Writer { buf: &mut b, overflow: false };
        w.put(&vec![1u8; BUF_SIZE - 1]);
        assert!(!w.overflow);
        w.put(b"ab");
        assert!(w.overflow);
    }
}
