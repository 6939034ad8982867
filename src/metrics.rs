//! Counters for `/__failover/metrics` (Prometheus text format 0.0.4) and the counters of
//! `/__failover/state`.
//!
//! Each worker counts into its own block, which only it writes: a count is a plain load and
//! store on the worker's own cache lines, no lock and no read-modify-write shared between
//! cores. A scrape sums the blocks and adds what the process knows at that moment (health,
//! transitions, connections). This file never decides anything.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::Config;
use crate::control::Control;
use crate::health::{Board, Book, ACTIONS};
use crate::notify::{self, NotifyStats};
use crate::upstream::{Kind, MAX_UPSTREAMS};

/// Status classes of `failover_requests_total`; `proxy` is an answer the proxy made itself.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "proxy"];
pub const PROXY: usize = 5;
/// Requests the proxy answered without sending them anywhere (its endpoints, bad requests,
/// everything down): counted under `upstream="none"`.
pub const NO_UPSTREAM: usize = MAX_UPSTREAMS;
/// Histogram bounds in seconds, for requests and health checks alike.
const BOUNDS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Why a request was sent on to another upstream (`failover_retries_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    Refused,
    Connect,
    ConnectTimeout,
    Timeout,
    Reset,
    Closed,
    BadResponse,
    Status,
    StaleConnection,
}

impl RetryReason {
    pub fn name(self) -> &'static str {
        REASONS[self as usize]
    }
}

const REASONS: [&str; 9] = [
    "refused",
    "connect",
    "connect_timeout",
    "timeout",
    "reset",
    "closed",
    "bad_response",
    "status",
    "stale_connection",
];

/// A histogram: a count per bound (not cumulative; the scrape accumulates), the rest, the sum.
struct Histogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)), sum_us: AtomicU64::new(0) }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BOUNDS.iter().position(|&b| secs <= b).unwrap_or(BOUNDS.len());
        bump(&self.buckets[i], 1);
        bump(&self.sum_us, d.as_micros() as u64);
    }
}

/// One worker's counts. Aligned so that two workers' blocks never share a cache line.
#[repr(align(128))]
pub struct WorkerMetrics {
    requests: [[AtomicU64; CLASSES.len()]; MAX_UPSTREAMS + 1],
    durations: Histogram,
    retries: [AtomicU64; REASONS.len()],
    rescues: AtomicU64,
    /// Body bytes moved socket to socket with splice: [responses, requests].
    spliced: [AtomicU64; 2],
    /// Health checks per upstream: [passed, failed].
    checks: [[AtomicU64; 2]; MAX_UPSTREAMS],
    check_durations: Histogram,
    /// When the worker's loop last turned at its heartbeat tick (ms on [`Control::now_ms`]'s clock).
    heartbeat_ms: AtomicU64,
}

/// Adds to a counter only this thread writes: a plain load and store, which other threads
/// may read at any time.
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

fn read(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl WorkerMetrics {
    pub fn new() -> WorkerMetrics {
        WorkerMetrics {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            durations: Histogram::new(),
            retries: std::array::from_fn(|_| AtomicU64::new(0)),
            rescues: AtomicU64::new(0),
            spliced: [AtomicU64::new(0), AtomicU64::new(0)],
            checks: std::array::from_fn(|_| [AtomicU64::new(0), AtomicU64::new(0)]),
            check_durations: Histogram::new(),
            heartbeat_ms: AtomicU64::new(0),
        }
    }

    /// The worker's loop turned (its heartbeat tick) at `ms`.
    pub fn beat(&self, ms: u64) {
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    pub fn last_beat(&self) -> u64 {
        read(&self.heartbeat_ms)
    }

    /// A response went out: `upstream` (or [`NO_UPSTREAM`]) and its status, `by_proxy` when
    /// the proxy made the answer; `took` from the request head to the response's end.
    pub fn request(&self, upstream: usize, status: u16, by_proxy: bool, took: Option<Duration>) {
        let class = if by_proxy { PROXY } else { (usize::from(status / 100)).clamp(1, 5) - 1 };
        bump(&self.requests[upstream.min(NO_UPSTREAM)][class], 1);
        if let Some(took) = took {
            self.durations.observe(took);
        }
    }

    pub fn retry(&self, why: RetryReason) {
        bump(&self.retries[why as usize], 1);
    }

    pub fn rescue(&self) {
        bump(&self.rescues, 1);
    }

    /// `n` body bytes went socket to socket through a pipe (`request`: client to upstream).
    pub fn spliced(&self, request: bool, n: usize) {
        bump(&self.spliced[usize::from(request)], n as u64);
    }

    pub fn check(&self, upstream: usize, ok: bool, took: Duration) {
        if let Some(c) = self.checks.get(upstream) {
            bump(&c[usize::from(!ok)], 1);
        }
        self.check_durations.observe(took);
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What the state document shows: (retries, rescues) summed over the workers.
pub fn retries_and_rescues(blocks: &[WorkerMetrics]) -> (u64, u64) {
    let retries = blocks.iter().flat_map(|b| b.retries.iter()).map(read).sum();
    let rescues = blocks.iter().map(|b| read(&b.rescues)).sum();
    (retries, rescues)
}

/// The `/__failover/metrics` document.
pub fn render(cfg: &Config, board: &Board, control: &Control, blocks: &[WorkerMetrics]) -> String {
    let book = board.snapshot();
    let mut out = String::with_capacity(8192);
    head(&mut out, "failover_info", "gauge", "The running version.");
    let _ = writeln!(out, "failover_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    upstream_gauges(&mut out, cfg, &book);
    transitions(&mut out, cfg, &book);
    let sum = |f: &dyn Fn(&WorkerMetrics) -> u64| blocks.iter().map(f).sum::<u64>();

    head(&mut out, "failover_health_checks_total", "counter", "Health checks by upstream and result.");
    for (i, up) in cfg.upstreams.iter().enumerate() {
        for (r, result) in ["pass", "fail"].iter().enumerate() {
            let n = sum(&|b| read(&b.checks[i][r]));
            let _ = writeln!(out, "failover_health_checks_total{{upstream=\"{}\",result=\"{result}\"}} {n}", up.name);
        }
    }
    histogram(&mut out, "failover_health_check_duration_seconds", "How long health checks took.", blocks, |b| {
        &b.check_durations
    });

    head(
        &mut out,
        "failover_requests_total",
        "counter",
        "Responses by upstream and status class (proxy: made by the proxy).",
    );
    for i in (0..cfg.upstreams.len()).chain([NO_UPSTREAM]) {
        let name = if i == NO_UPSTREAM { "none" } else { cfg.name(i) };
        for (c, class) in CLASSES.iter().enumerate() {
            let n = sum(&|b| read(&b.requests[i][c]));
            if n > 0 || c == 1 {
                let _ = writeln!(out, "failover_requests_total{{upstream=\"{name}\",code_class=\"{class}\"}} {n}");
            }
        }
    }
    histogram(
        &mut out,
        "failover_request_duration_seconds",
        "From the request head to the end of the response, for requests sent to an upstream.",
        blocks,
        |b| &b.durations,
    );

    head(&mut out, "failover_retries_total", "counter", "Requests sent on to another upstream, by why.");
    for (r, reason) in REASONS.iter().enumerate() {
        let _ = writeln!(out, "failover_retries_total{{reason=\"{reason}\"}} {}", sum(&|b| read(&b.retries[r])));
    }
    head(
        &mut out,
        "failover_rescues_total",
        "counter",
        "Requests moved off an upstream that went down while they waited.",
    );
    let _ = writeln!(out, "failover_rescues_total {}", sum(&|b| read(&b.rescues)));
    head(
        &mut out,
        "failover_spliced_bytes_total",
        "counter",
        "Body bytes moved socket to socket with splice(2), never through user space.",
    );
    for (i, direction) in ["response", "request"].iter().enumerate() {
        let n = sum(&|b| read(&b.spliced[i]));
        let _ = writeln!(out, "failover_spliced_bytes_total{{direction=\"{direction}\"}} {n}");
    }
    head(&mut out, "failover_client_connections", "gauge", "Open client connections.");
    let _ = writeln!(out, "failover_client_connections {}", control.connections.load(Ordering::Relaxed));
    notifications(&mut out, cfg, &control.notifications);
    out
}

fn notifications(out: &mut String, cfg: &Config, stats: &NotifyStats) {
    head(out, "failover_notifications_total", "counter", "Notification attempts by sink and result.");
    for (i, sink) in cfg.notify.sinks.iter().enumerate() {
        let Some(counts) = stats.sinks.get(i) else { break };
        for (result, n) in notify::RESULTS.iter().zip(counts) {
            let _ = writeln!(
                out,
                "failover_notifications_total{{sink=\"{i}\",host=\"{}\",format=\"{}\",result=\"{result}\"}} {}",
                escape(&sink.target.host),
                sink.format.name(),
                read(n)
            );
        }
    }
    head(out, "failover_notifications_dropped_total", "counter", "Events dropped because the queue was full.");
    let _ = writeln!(out, "failover_notifications_dropped_total {}", read(&stats.dropped));
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Label values that identify an upstream: its name (its position) and host.
fn labels(cfg: &Config, i: usize) -> String {
    let Some(up) = cfg.upstreams.get(i) else { return String::new() };
    let (role, host) = match &up.kind {
        Kind::Origin(o) => (if i == 0 { "primary" } else { "backup" }, o.host.as_str()),
        Kind::Site(_) => ("backup", "file"),
    };
    format!("upstream=\"{}\",role=\"{role}\",host=\"{}\"", up.name, escape(host))
}

fn upstream_gauges(out: &mut String, cfg: &Config, book: &Book) {
    let route = book.route();
    head(out, "failover_active_upstream", "gauge", "1 for the upstream new requests go to.");
    for i in 0..cfg.upstreams.len() {
        let active = u8::from(i == book.active && !route.all_down());
        let _ = writeln!(out, "failover_active_upstream{{{}}} {active}", labels(cfg, i));
    }
    head(out, "failover_upstream_up", "gauge", "1 while the upstream passes its health checks.");
    for i in 0..cfg.upstreams.len() {
        let _ = writeln!(out, "failover_upstream_up{{{}}} {}", labels(cfg, i), u8::from(route.is_healthy(i)));
    }
}

fn transitions(out: &mut String, cfg: &Config, book: &Book) {
    head(out, "failover_transitions_total", "counter", "Moves of traffic, by from, to and why.");
    for t in &book.moves {
        let name = |i: Option<usize>| i.map_or("none", |i| cfg.name(i));
        let _ = writeln!(
            out,
            "failover_transitions_total{{from=\"{}\",to=\"{}\",reason=\"{}\"}} {}",
            name(t.from),
            name(t.to),
            t.reason,
            t.count
        );
    }
    head(out, "failover_last_transition_timestamp_seconds", "gauge", "When traffic last moved (unix seconds).");
    let _ = writeln!(out, "failover_last_transition_timestamp_seconds {}", book.since_unix);
    head(out, "failover_admin_actions_total", "counter", "Overrides and drains set, cleared and expired.");
    for (action, n) in ACTIONS.iter().zip(book.actions) {
        let _ = writeln!(out, "failover_admin_actions_total{{action=\"{action}\"}} {n}");
    }
    head(out, "failover_override_active", "gauge", "1 for the upstream an operator pinned new requests to.");
    let pinned = book.holds.pin.as_ref().map(|p| p.target);
    for i in 0..cfg.upstreams.len() {
        let _ = writeln!(out, "failover_override_active{{{}}} {}", labels(cfg, i), u8::from(pinned == Some(i)));
    }
    head(out, "failover_drained", "gauge", "1 for each upstream an operator drained.");
    for i in 0..cfg.upstreams.len() {
        let _ = writeln!(out, "failover_drained{{{}}} {}", labels(cfg, i), u8::from(book.holds.is_drained(i)));
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    blocks: &[WorkerMetrics],
    of: impl Fn(&WorkerMetrics) -> &Histogram,
) {
    head(out, name, "histogram", help);
    let mut cumulative = 0;
    for (i, bound) in BOUNDS.iter().map(|b| b.to_string()).chain(["+Inf".to_string()]).enumerate() {
        cumulative += blocks.iter().map(|b| read(&of(b).buckets[i])).sum::<u64>();
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let sum_us: u64 = blocks.iter().map(|b| read(&of(b).sum_us)).sum();
    let _ = writeln!(out, "{name}_sum {}\n{name}_count {cumulative}", sum_us as f64 / 1e6);
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_per_worker_and_summed() {
        let blocks = [WorkerMetrics::new(), WorkerMetrics::new()];
        blocks[0].request(0, 200, false, Some(Duration::from_millis(3)));
        blocks[1].request(0, 204, false, Some(Duration::from_secs(20)));
        blocks[1].request(NO_UPSTREAM, 400, true, None);
        blocks[0].retry(RetryReason::Refused);
        blocks[1].rescue();
        assert_eq!(retries_and_rescues(&blocks), (1, 1));
        assert_eq!(read(&blocks[0].requests[0][1]) + read(&blocks[1].requests[0][1]), 2);
        assert_eq!(read(&blocks[1].requests[NO_UPSTREAM][PROXY]), 1);
        assert_eq!(read(&blocks[0].durations.buckets[2]), 1, "3ms is in the 5ms bucket");
        assert_eq!(read(&blocks[1].durations.buckets[BOUNDS.len()]), 1, "20s is past every bound");
        assert_eq!(std::mem::align_of::<WorkerMetrics>(), 128);
    }
}
