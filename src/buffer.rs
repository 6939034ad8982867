//! Fixed-size byte buffers and the per-worker pool they come from.
//!
//! A buffer is taken when a connection has bytes to hold and returned as soon as it is
//! empty, so an idle keep-alive connection holds none. Buffers are never resized: a full
//! buffer is backpressure. This file never touches a socket.

/// Size of every buffer: room for a full request head and a good share of a body.
pub const BUF_SIZE: usize = 32 * 1024;

/// Bytes `data[start..end]` are held; `data[end..]` is free space.
pub struct Buf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buf {
    /// A small buffer outside the pool (for probes, which are not per request).
    pub fn small(size: usize) -> Buf {
        Buf { data: vec![0u8; size].into_boxed_slice(), start: 0, end: 0 }
    }

    /// The bytes held.
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
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
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free space after the held bytes, moving them to the front first if that makes room.
    pub fn space(&mut self) -> &mut [u8] {
        if self.start > 0 && self.end == self.data.len() {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.data[self.end..]
    }

    /// Marks `n` bytes of [`Buf::space`] as filled.
    pub fn fill(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.data.len());
        self.end += n;
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
            self.end = self.start + len;
        }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    /// Removes held bytes `from..to` (offsets into [`Buf::bytes`]), closing the gap.
    pub fn cut(&mut self, from: usize, to: usize) {
        debug_assert!(from <= to && to <= self.len());
        if from == to {
            return;
        }
        self.data.copy_within(self.start + to..self.end, self.start + from);
        self.end -= to - from;
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

/// Free buffers of one worker.
pub struct Pool {
    free: Vec<Box<[u8]>>,
    max_free: usize,
}

impl Pool {
    pub fn new(max_free: usize) -> Pool {
        Pool { free: Vec::new(), max_free }
    }

    pub fn take(&mut self) -> Buf {
        let data = self.free.pop().unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice());
        Buf { data, start: 0, end: 0 }
    }

    pub fn put(&mut self, buf: Buf) {
        if self.free.len() < self.max_free {
            self.free.push(buf.data);
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
