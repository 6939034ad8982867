//! Retries: whether a request an upstream failed is sent again and where, what the client
//! gets when it is not, and the replay chain that makes a re-send possible (copies of the
//! request-body bytes sent so far, kept until the response head arrives).
//!
//! Every retry rule is decided in [`decide`]; every failure maps to its status here. This
//! file never does I/O and never counts health: it reads the route it is given.

use crate::buffer::{Buf, Pool};
use crate::health::Route;
use crate::metrics::RetryReason;
use crate::uplink;

/// Why an upstream exchange failed before a response head reached the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The connection was refused: nothing listens there.
    Refused,
    /// The connection could not be made otherwise (reset, unreachable, TLS handshake
    /// failed): nothing reached the upstream.
    Connect(String),
    /// The connect did not finish within `--connect-timeout` (nothing was sent).
    ConnectTimeout,
    /// No response head within `--upstream-timeout`.
    NoResponse,
    /// A reset or another error after the request (maybe) reached the upstream.
    Io(String),
    /// Closed without a response.
    Closed,
    /// An invalid response head.
    BadResponse(&'static str),
    /// A status listed in `--retry-on-status`.
    Status(u16),
}

impl Failure {
    /// A failed connect, as [`crate::uplink`] words it.
    pub fn connect(why: String) -> Failure {
        if why == uplink::REFUSED {
            Failure::Refused
        } else {
            Failure::Connect(why)
        }
    }

    /// How `failover_retries_total` names this failure.
    pub fn reason(&self) -> RetryReason {
        match self {
            Failure::Refused => RetryReason::Refused,
            Failure::Connect(_) => RetryReason::Connect,
            Failure::ConnectTimeout => RetryReason::ConnectTimeout,
            Failure::NoResponse => RetryReason::Timeout,
            Failure::Io(_) => RetryReason::Reset,
            Failure::Closed => RetryReason::Closed,
            Failure::BadResponse(_) => RetryReason::BadResponse,
            Failure::Status(_) => RetryReason::Status,
        }
    }

    /// Nothing reached the upstream: the request may go elsewhere whatever its method.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, Failure::Refused | Failure::Connect(_) | Failure::ConnectTimeout)
    }

    /// The status and text a client gets when this failure is the last word (`name`: the
    /// upstream's). A `Status` failure is never answered by the proxy: the upstream's own
    /// response is relayed.
    pub fn answer(&self, name: &str) -> (u16, String) {
        match self {
            Failure::Refused => (502, format!("{name}: {}", uplink::REFUSED)),
            Failure::Connect(why) => (502, format!("{name}: {why}")),
            Failure::ConnectTimeout => (504, format!("{name}: connect timed out")),
            Failure::NoResponse => (504, format!("{name}: no response in time")),
            Failure::Io(why) => (502, format!("{name}: {why}")),
            Failure::Closed => (502, format!("{name} closed the connection without a response")),
            Failure::BadResponse(why) => (502, format!("{name} sent an invalid response: {why}")),
            Failure::Status(s) => (*s, format!("{name} answered {s}")),
        }
    }

    /// Whether this failure counts toward `--fail-threshold` like a failed check. Only a
    /// refused connection does: it proves nothing listens. A timeout or a reset may be this
    /// one slow or broken URL while the rest of the upstream is fine (a long-poll past
    /// `--upstream-timeout`), so it only asks for a confirming probe, which counts.
    pub fn counts(&self) -> bool {
        matches!(self, Failure::Refused)
    }
}

/// Why a request that failed after it (maybe) reached an upstream was not sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not idempotent and no `Idempotency-Key`.
    Method,
    /// The body outgrew `--retry-buffer`, so it can no longer be replayed whole.
    BodyTooLarge,
}

impl Skip {
    /// The header telling the client why its failed request was not retried.
    pub fn header(self) -> &'static str {
        match self {
            Skip::Method => "X-Failover-Retry: skipped-method\r\n",
            Skip::BodyTooLarge => "X-Failover-Retry: skipped-body-too-large\r\n",
        }
    }
}

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send the request again, from the start, on a new connection to the same upstream:
    /// the pooled one it used had been closed by the upstream meanwhile.
    Fresh,
    /// Send the request again, from the start, to this upstream.
    Next(usize),
    /// No retry: the client gets the failure, with the header saying why when a later
    /// upstream was there to take it.
    GiveUp(Option<Skip>),
}

/// Where a request stands when its attempt on upstream `on` failed.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub on: usize,
    /// Upstreams already tried (bit i = upstream i), `on` included.
    pub tried: u32,
    /// The attempt used a pooled connection.
    pub reused: bool,
    /// A fresh connection was already tried once for a stale pooled one.
    pub refreshed: bool,
    /// Body bytes already sent on this attempt.
    pub body_sent: u64,
    /// Whether the whole request can be sent again (the replay chain is complete).
    pub replay: Result<(), Skip>,
}

/// The retry rules, in one place:
/// - a pooled connection the upstream closed meanwhile (a reset or close on reuse) is
///   retried once on a fresh connection to the same upstream;
/// - otherwise the request goes to the next healthy upstream after `on` that it has not
///   tried, never back up the chain — whatever its method if nothing reached the upstream,
///   else only if it may be replayed;
/// - else the failure is the answer.
pub fn decide(f: &Failure, a: Attempt, route: Route) -> Decision {
    let stale = a.reused && !a.refreshed && matches!(f, Failure::Closed | Failure::Io(_));
    if stale && (a.body_sent == 0 || a.replay.is_ok()) {
        return Decision::Fresh;
    }
    let Some(next) = route.next_after(a.on, a.tried) else {
        return Decision::GiveUp(None);
    };
    match a.replay {
        Ok(()) => Decision::Next(next),
        Err(_) if f.nothing_sent() => Decision::Next(next),
        Err(skip) => Decision::GiveUp(Some(skip)),
    }
}

/// The replay chain of one request: copies of the body bytes sent so far, taken from the
/// pool as needed, and where a re-send has got to.
#[derive(Default)]
pub struct Replay {
    chain: Vec<Buf>,
    len: u64,
    /// While re-sending: (buffer, offset) of the next byte to send.
    cursor: Option<(usize, usize)>,
    /// Why the chain cannot replay the request (None: it holds every body byte sent).
    pub skip: Option<Skip>,
}

impl Replay {
    /// A request's chain (empty); `chain` is a spare vector to reuse.
    pub fn new(replay_ok: bool, chain: Vec<Buf>) -> Replay {
        debug_assert!(chain.is_empty());
        Replay { chain, len: 0, cursor: None, skip: (!replay_ok).then_some(Skip::Method) }
    }

    pub fn ok(&self) -> Result<(), Skip> {
        self.skip.map_or(Ok(()), Err)
    }

    /// Keeps a copy of body bytes just sent, unless that would pass `limit` (then the
    /// chain is dropped: the request can no longer be replayed).
    pub fn keep(&mut self, mut src: &[u8], limit: u64, pool: &mut Pool) {
        if self.skip.is_some() || src.is_empty() {
            return;
        }
        if self.len + src.len() as u64 > limit {
            self.skip = Some(Skip::BodyTooLarge);
            self.release(pool);
            return;
        }
        self.len += src.len() as u64;
        while !src.is_empty() {
            if self.chain.last().is_none_or(Buf::is_full) {
                self.chain.push(pool.take());
            }
            if let Some(last) = self.chain.last_mut() {
                let n = last.push(src);
                src = &src[n..];
            }
        }
    }

    /// Starts sending the chain again from its first byte.
    pub fn rewind(&mut self) {
        self.cursor = (!self.chain.is_empty()).then_some((0, 0));
    }

    /// The next bytes to re-send, while a re-send is under way.
    pub fn pending(&self) -> Option<&[u8]> {
        let (i, off) = self.cursor?;
        self.chain.get(i).map(|b| &b.bytes()[off..])
    }

    /// `n` bytes of [`Replay::pending`] were sent.
    pub fn advance(&mut self, n: usize) {
        let Some((i, off)) = self.cursor else { return };
        let len = self.chain.get(i).map_or(0, Buf::len);
        self.cursor = if off + n < len {
            Some((i, off + n))
        } else if i + 1 < self.chain.len() {
            Some((i + 1, 0))
        } else {
            None
        };
    }

    pub fn replaying(&self) -> bool {
        self.cursor.is_some()
    }

    /// Returns the buffers to the pool (the response head arrived, or the request ended).
    pub fn release(&mut self, pool: &mut Pool) {
        for b in self.chain.drain(..) {
            pool.put(b);
        }
        self.len = 0;
        self.cursor = None;
    }

    /// Gives back the (emptied) vector for the next request to reuse.
    pub fn into_spare(mut self, pool: &mut Pool) -> Vec<Buf> {
        self.release(pool);
        self.chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Route = Route::up(0, 0b111);

    fn attempt(on: usize, replay: Result<(), Skip>) -> Attempt {
        Attempt { on, tried: 1 << on, reused: false, refreshed: false, body_sent: 0, replay }
    }

    #[test]
    fn decisions() {
        let no = Err(Skip::Method);
        let big = Err(Skip::BodyTooLarge);
        let io = Failure::Io("connection reset".into());
        let refused = Failure::Refused;
        let one_down = Route::up(0, 0b101);
        let stale = Attempt { reused: true, ..attempt(0, no) };
        // (failure, attempt, route, want)
        let cases: Vec<(Failure, Attempt, Route, Decision)> = vec![
            (refused.clone(), attempt(0, no), ALL, Decision::Next(1)),
            (refused.clone(), attempt(0, no), one_down, Decision::Next(2)),
            (refused.clone(), attempt(2, Ok(())), ALL, Decision::GiveUp(None)),
            (Failure::ConnectTimeout, attempt(1, big), ALL, Decision::Next(2)),
            (io.clone(), attempt(0, Ok(())), ALL, Decision::Next(1)),
            (io.clone(), attempt(0, no), ALL, Decision::GiveUp(Some(Skip::Method))),
            (io.clone(), attempt(0, big), ALL, Decision::GiveUp(Some(Skip::BodyTooLarge))),
            (io.clone(), attempt(1, no), Route::up(1, 0b011), Decision::GiveUp(None)),
            (Failure::Status(503), attempt(0, Ok(())), ALL, Decision::Next(1)),
            (Failure::Status(503), attempt(0, no), ALL, Decision::GiveUp(Some(Skip::Method))),
            (Failure::NoResponse, attempt(0, Ok(())), Route::up(0, 0), Decision::GiveUp(None)),
            (Failure::Closed, stale, ALL, Decision::Fresh),
            (io.clone(), stale, ALL, Decision::Fresh),
            (Failure::Closed, Attempt { body_sent: 5, ..stale }, ALL, Decision::GiveUp(Some(Skip::Method))),
            (Failure::Closed, Attempt { refreshed: true, ..stale }, ALL, Decision::GiveUp(Some(Skip::Method))),
            (Failure::NoResponse, stale, ALL, Decision::GiveUp(Some(Skip::Method))),
            (io, Attempt { tried: 0b011, ..attempt(0, Ok(())) }, ALL, Decision::Next(2)),
        ];
        for (i, (f, a, route, want)) in cases.into_iter().enumerate() {
            assert_eq!(decide(&f, a, route), want, "case {i}: {f:?} {a:?}");
        }
    }

    #[test]
    fn statuses() {
        let cases = [
            (Failure::Refused, 502),
            (Failure::Connect("connect failed: network unreachable".into()), 502),
            (Failure::ConnectTimeout, 504),
            (Failure::NoResponse, 504),
            (Failure::Io("x".into()), 502),
            (Failure::Closed, 502),
            (Failure::BadResponse("x"), 502),
        ];
        for (f, status) in cases {
            assert_eq!(f.answer("primary").0, status, "{f:?}");
            assert_eq!(f.counts(), f == Failure::Refused, "{f:?}: only a refusal counts like a failed check");
        }
        assert_eq!(
            Failure::connect(uplink::connect_error(&std::io::ErrorKind::ConnectionRefused.into())),
            Failure::Refused
        );
    }

    #[test]
    fn chain_keeps_replays_and_gives_up_past_the_limit() {
        let mut pool = Pool::new(8);
        let mut r = Replay::new(true, Vec::new());
        let data: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        r.keep(&data[..30_000], 100_000, &mut pool);
        r.keep(&data[30_000..], 100_000, &mut pool);
        r.rewind();
        let mut again = Vec::new();
        while let Some(p) = r.pending() {
            let n = p.len().min(7_000);
            again.extend_from_slice(&p[..n]);
            r.advance(n);
        }
        assert_eq!(again, data, "the re-send is the bytes sent, in order");
        assert!(!r.replaying());
        r.keep(&data, 50_000, &mut pool);
        assert_eq!(r.ok(), Err(Skip::BodyTooLarge));
        assert!(r.pending().is_none());
        assert_eq!(Replay::new(false, Vec::new()).ok(), Err(Skip::Method));
    }
}
