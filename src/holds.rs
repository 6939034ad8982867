//! Holds an operator puts on routing through the admin listener: an override that pins new
//! requests to one upstream, and drains that keep new requests off some. Every hold has an
//! expiry (at most 24 h), so a forgotten one cannot pin traffic for months.
//!
//! Pure data and rules: [`crate::health::Book`] applies them when it decides the route.

use std::time::{Duration, Instant};

use crate::health::unix_ms;

/// The longest a hold may last, and how long one lasts when no `ttl` is given.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Position in the chain, and its URL (a reload follows the URL).
    pub target: usize,
    pub url: String,
    pub until: Instant,
    /// When it ends and when it was set (unix milliseconds).
    pub until_ms: u64,
    pub set_ms: u64,
    /// What the operator said (who and why).
    pub reason: String,
    /// Set with `"force": true` (the upstream was failing its checks, or it is the last one
    /// that could serve).
    pub forced: bool,
}

impl Hold {
    pub fn new(target: usize, url: &str, ttl: Duration, reason: &str, forced: bool) -> Hold {
        let ttl = ttl.min(MAX_TTL);
        let now = unix_ms();
        Hold {
            target,
            url: url.to_string(),
            until: Instant::now() + ttl,
            until_ms: now + ttl.as_millis() as u64,
            set_ms: now,
            reason: reason.to_string(),
            forced,
        }
    }

    pub fn expired(&self, now: Instant) -> bool {
        now >= self.until
    }
}

/// The override and the drains in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holds {
    pub pin: Option<Hold>,
    pub drains: Vec<Hold>,
}

impl Holds {
    /// Bit i: upstream i is drained.
    pub fn drained(&self) -> u32 {
        self.drains.iter().filter(|d| d.target < 32).fold(0, |m, d| m | 1 << d.target)
    }

    pub fn is_drained(&self, i: usize) -> bool {
        self.drains.iter().any(|d| d.target == i)
    }

    /// Removes what has expired; returns it (pin first).
    pub fn expire(&mut self, now: Instant) -> Vec<(&'static str, Hold)> {
        let mut gone = Vec::new();
        if self.pin.as_ref().is_some_and(|p| p.expired(now)) {
            gone.extend(self.pin.take().map(|p| ("override", p)));
        }
        let (old, kept): (Vec<Hold>, Vec<Hold>) =
            std::mem::take(&mut self.drains).into_iter().partition(|d| d.expired(now));
        self.drains = kept;
        gone.extend(old.into_iter().map(|d| ("drain", d)));
        gone
    }

    /// Follows a reloaded chain: each hold moves to where its URL now is; one whose URL is
    /// gone is dropped (and returned).
    pub fn follow(&mut self, urls: &[String]) -> Vec<Hold> {
        let mut dropped = Vec::new();
        let place = |h: &mut Hold| match urls.iter().position(|u| *u == h.url) {
            Some(i) => {
                h.target = i;
                true
            }
            None => false,
        };
        if let Some(mut p) = self.pin.take() {
            if place(&mut p) {
                self.pin = Some(p);
            } else {
                dropped.push(p);
            }
        }
        for mut d in std::mem::take(&mut self.drains) {
            if place(&mut d) {
                self.drains.push(d);
            } else {
                dropped.push(d);
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_expire_and_follow_their_url_across_a_reload() {
        let now = Instant::now();
        let mut h = Holds {
            pin: Some(Hold::new(1, "http://b", Duration::from_secs(60), "maintenance", false)),
            ..Holds::default()
        };
        h.drains.push(Hold::new(2, "http://c", Duration::ZERO, "bad deploy", false));
        h.drains.push(Hold::new(0, "http://a", Duration::from_secs(60), "", false));
        assert_eq!(h.drained(), 0b101);
        let gone = h.expire(now + Duration::from_secs(1));
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].0, gone[0].1.target), ("drain", 2));
        assert!(h.pin.is_some());
        let dropped = h.follow(&["http://x".into(), "http://a".into(), "http://b".into()]);
        assert!(dropped.is_empty());
        assert_eq!(h.pin.as_ref().map(|p| p.target), Some(2));
        assert_eq!(h.drained(), 0b010);
        let dropped = h.follow(&["http://a".into()]);
        assert_eq!(dropped.len(), 1, "the pinned URL left the chain");
        assert!(h.pin.is_none());
        let long = Hold::new(0, "u", Duration::from_secs(99 * 3600), "", false);
        assert_eq!(long.until_ms - long.set_ms, 24 * 3600 * 1000);
        assert_eq!(gone.len() + h.expire(now + MAX_TTL * 2).len(), 2);
    }
}
