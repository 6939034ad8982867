//! Token layout: what a slot is, its slab index, and a generation, packed in one `usize`.
//!
//! Tokens go to mio and into the timer heap. The generation lets a timer or event that
//! outlived its slot be recognised and ignored after the slot was reused.

use mio::Token;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Listener,
    Waker,
    Client,
    Uplink,
    Probe,
    /// A timer-only token: the health tick of this worker.
    Tick,
}

const KIND_BITS: u32 = 3;
const INDEX_BITS: u32 = 29;

pub fn make(kind: Kind, index: usize, gen: u32) -> Token {
    debug_assert!(index < (1 << INDEX_BITS));
    let kind = kind as usize;
    Token(((gen as usize) << (KIND_BITS + INDEX_BITS)) | (index << KIND_BITS) | kind)
}

/// Splits a token into (kind, index, generation).
pub fn split(t: Token) -> (Kind, usize, u32) {
    let kind = match t.0 & ((1 << KIND_BITS) - 1) {
        0 => Kind::Listener,
        1 => Kind::Waker,
        2 => Kind::Client,
        3 => Kind::Uplink,
        4 => Kind::Probe,
        _ => Kind::Tick,
    };
    let index = (t.0 >> KIND_BITS) & ((1 << INDEX_BITS) - 1);
    let gen = (t.0 >> (KIND_BITS + INDEX_BITS)) as u32;
    (kind, index, gen)
}

/// Generations fit in what is left of a 64-bit token.
pub fn next_gen(gen: u32) -> u32 {
    gen.wrapping_add(1) & 0x7fff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for (kind, index, gen) in [
            (Kind::Client, 0, 0),
            (Kind::Uplink, 12345, 7),
            (Kind::Probe, (1 << 29) - 1, 0x7fff_ffff),
            (Kind::Tick, 1, 1),
            (Kind::Listener, 0, 0),
            (Kind::Waker, 0, 0),
        ] {
            assert_eq!(split(make(kind, index, gen)), (kind, index, gen));
        }
        assert_eq!(next_gen(0x7fff_ffff), 0);
    }
}
