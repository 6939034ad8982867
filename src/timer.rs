//! Deadlines for the loop: a min-heap of (instant, token) with lazy re-arm.
//!
//! Slots keep their own current deadline; the heap only has to fire no later than it.
//! When an entry fires, the owner compares it with its current deadline and re-arms if the
//! deadline moved later, so extending a deadline (every keep-alive request does) costs
//! nothing here. Stale entries for freed slots are ignored by generation.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use mio::Token;

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Timers {
    pub fn new() -> Timers {
        Timers { heap: BinaryHeap::with_capacity(1024) }
    }

    pub fn arm(&mut self, at: Instant, token: Token) {
        self.heap.push(Reverse((at, token.0)));
    }

    /// Pops the next entry due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Token> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, t))| Token(t)),
            _ => None,
        }
    }

    /// How long the poller may sleep.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        self.heap.peek().map(|Reverse((at, _))| at.saturating_duration_since(now))
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// A slot's deadline with lazy arming: `set` returns whether the heap needs a new entry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deadline {
    /// When the slot's current timeout expires (`None`: no timeout).
    pub at: Option<Instant>,
    /// The earliest entry this slot has in the heap.
    armed: Option<Instant>,
}

impl Deadline {
    /// Sets the deadline; returns `Some(at)` when a heap entry must be pushed.
    pub fn set(&mut self, at: Option<Instant>) -> Option<Instant> {
        self.at = at;
        let at = at?;
        match self.armed {
            Some(armed) if armed <= at => None,
            _ => {
                self.armed = Some(at);
                Some(at)
            }
        }
    }

    /// Called when a heap entry for this slot fires. Returns true if the deadline really
    /// expired; otherwise re-arms (the second value is a new heap entry, if one is due).
    pub fn fired(&mut self, now: Instant) -> (bool, Option<Instant>) {
        self.armed = None;
        match self.at {
            Some(at) if at <= now => (true, None),
            Some(at) => {
                self.armed = Some(at);
                (false, Some(at))
            }
            None => (false, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_orders_and_reports_timeout() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        assert_eq!(t.timeout(t0), None);
        t.arm(t0 + Duration::from_millis(30), Token(3));
        t.arm(t0 + Duration::from_millis(10), Token(1));
        assert_eq!(t.timeout(t0), Some(Duration::from_millis(10)));
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(t.pop_due(t0 + Duration::from_millis(10)), Some(Token(1)));
        assert_eq!(t.pop_due(t0 + Duration::from_millis(10)), None);
        assert_eq!(t.pop_due(t0 + Duration::from_secs(1)), Some(Token(3)));
        assert!(t.is_empty());
    }

    #[test]
    fn lazy_deadline() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Deadline::default();
        assert_eq!(d.set(Some(t0 + ms(100))), Some(t0 + ms(100)), "first deadline arms");
        assert_eq!(d.set(Some(t0 + ms(200))), None, "a later deadline rides the armed entry");
        assert_eq!(d.set(Some(t0 + ms(50))), Some(t0 + ms(50)), "an earlier one needs its own");
        assert_eq!(d.fired(t0 + ms(50)), (true, None));
        d.set(Some(t0 + ms(300)));
        let mut d2 = Deadline::default();
        d2.set(Some(t0 + ms(100)));
        d2.set(Some(t0 + ms(300)));
        assert_eq!(d2.fired(t0 + ms(100)), (false, Some(t0 + ms(300))), "moved later: re-arm");
        d2.set(None);
        assert_eq!(d2.fired(t0 + ms(300)), (false, None));
    }
}
