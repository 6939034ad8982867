//! The proxy's own endpoints under `/__failover/`: `health`, the `state` document and
//! `metrics`.
//!
//! Requests for them are recognised by [`crate::http1`] and never forwarded; this file only
//! renders answers from what the health board and the counters say. It never changes
//! routing.

use std::fmt::Write as _;

use crate::answer::{json_str, Answer};
use crate::buffer::Buf;
use crate::config::Config;
use crate::control::Control;
use crate::health::{unix_ms, Board};
use crate::http1::{Admin, Request};
use crate::metrics::{self, WorkerMetrics};
use crate::upstream::Kind;

/// Writes the answer to an admin request into `out`; returns whether the connection
/// closes after it.
/// What the endpoints read: the configuration, the health board, process control and every
/// worker's counters.
pub struct Sources<'a> {
    pub cfg: &'a Config,
    pub board: &'a Board,
    pub control: &'a Control,
    pub metrics: &'a [WorkerMetrics],
    /// Asked on the admin listener: the state shows the reasons operators gave.
    pub private: bool,
}

/// The status page (`/__failover/` and `/__failover/status`): self-contained, it polls
/// `/__failover/state`.
const STATUS_PAGE: &[u8] = include_bytes!("status.html");
const STATUS_CSP: &str = "Content-Security-Policy: default-src 'none'; connect-src 'self'; \
    style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\r\n";

/// A worker whose loop has not turned for this long makes `/__failover/live` fail.
const STALLED_MS: u64 = 5000;

/// Writes the endpoint's answer into `out`; returns its status and whether the connection
/// closes after it.
pub fn answer(admin: Admin, req: &Request, from: Sources, out: &mut Buf) -> (u16, bool) {
    let close = !req.keep_alive;
    let keep_alive = if !close && req.minor == 0 { "Connection: keep-alive\r\n" } else { "" };
    let extra = match admin {
        Admin::MethodNotAllowed => "Allow: GET, HEAD\r\n".to_string(),
        // The page is one file with its CSS and JS inline; it may only call back home.
        Admin::Status => format!("{STATUS_CSP}{keep_alive}"),
        _ => keep_alive.to_string(),
    };
    let text;
    let (status, content_type, body): (u16, &str, &[u8]) = match admin {
        Admin::Health => (200, "text/plain; charset=utf-8", b"ok\n"),
        Admin::Status => (200, "text/html; charset=utf-8", STATUS_PAGE),
        Admin::State => {
            text = state_json(from.cfg, from.board, from.metrics, from.private);
            (200, "application/json", text.as_bytes())
        }
        Admin::Metrics => {
            text = metrics::render(from.cfg, from.board, from.control, from.metrics);
            (200, "text/plain; version=0.0.4; charset=utf-8", text.as_bytes())
        }
        Admin::Live => match stalled(from.control, from.metrics) {
            None => (200, "text/plain; charset=utf-8", &b"live\n"[..]),
            Some((worker, ms)) => {
                text = format!("stalled: worker {worker} has not turned its loop for {ms} ms\n");
                (503, "text/plain; charset=utf-8", text.as_bytes())
            }
        },
        Admin::Ready if from.control.unready() => (503, "text/plain; charset=utf-8", b"not ready: shutting down\n"),
        Admin::Ready if !from.board.first_round_done() => {
            (503, "text/plain; charset=utf-8", b"not ready: the first health checks are not done\n")
        }
        Admin::Ready => (200, "text/plain; charset=utf-8", b"ready\n"),
        Admin::NotFound => (404, "text/plain; charset=utf-8", b"Not Found: no such failover endpoint\n"),
        Admin::MethodNotAllowed => (405, "text/plain; charset=utf-8", b"Method Not Allowed: use GET\n"),
    };
    Answer { status, content_type, body, close, head_only: req.is_head, extra: &extra }.write(out);
    (status, close)
}

/// The worker whose heartbeat is oldest, if it is older than [`STALLED_MS`], and its age.
pub fn stalled(control: &Control, metrics: &[WorkerMetrics]) -> Option<(usize, u64)> {
    let now = control.now_ms();
    metrics
        .iter()
        .map(|m| now.saturating_sub(m.last_beat()))
        .enumerate()
        .max_by_key(|&(_, age)| age)
        .filter(|&(_, age)| age > STALLED_MS)
}

/// The `/__failover/state` document: the chain with each upstream's checks, where traffic
/// goes, and (for monitors written against the two-upstream proxy) the same facts for the
/// primary and the first backup as top-level fields.
pub fn state_json(cfg: &Config, board: &Board, blocks: &[WorkerMetrics], private: bool) -> String {
    let (retries, rescues) = metrics::retries_and_rescues(blocks);
    let b = board.snapshot();
    let now_ms = unix_ms();
    let route = b.route();
    let on_backup = b.active != 0 || route.all_down();
    let health = |i: usize| b.ups.get(i).cloned().unwrap_or_default();
    let (primary, backup) = (health(0), health(1));
    let counters = if on_backup { (0, primary.oks) } else { (primary.fails, 0) };
    let url = |i: usize| cfg.upstreams.get(i).map_or("", |u| u.url.as_str());
    let mut out = String::with_capacity(512 + 256 * cfg.upstreams.len());
    let _ = write!(
        out,
        concat!(
            "{{\"on_backup\":{},\"since_unix\":{},\"primary\":{},\"backup\":{},",
            "\"primary_healthy\":{},\"backup_healthy\":{},\"fail_count\":{},\"recover_count\":{},",
            "\"primary_last_error\":{},\"backup_last_error\":{},\"last_transition\":{},",
            "\"retries\":{},\"rescues\":{},\"all_down\":{},",
            "\"active\":{{\"index\":{},\"name\":{},\"url\":{}}},",
            "\"now_ms\":{},\"fail_threshold\":{},\"recover_threshold\":{},{},\"upstreams\":["
        ),
        on_backup,
        b.since_unix,
        json_str(url(0)),
        json_str(url(1)),
        primary.healthy,
        backup.healthy,
        counters.0,
        counters.1,
        json_str(&primary.last_error),
        json_str(&backup.last_error),
        json_str(&b.reason),
        retries,
        rescues,
        route.all_down(),
        b.active,
        json_str(cfg.upstreams.get(b.active).map_or("", |u| u.name.as_str())),
        json_str(url(b.active)),
        now_ms,
        cfg.fail_threshold,
        cfg.recover_threshold,
        crate::admin_api::holds_json(cfg, &b, private),
    );
    for (i, up) in cfg.upstreams.iter().enumerate() {
        let h = health(i);
        let kind = match up.kind {
            Kind::Origin(_) => "http",
            Kind::Site(_) => "directory",
        };
        let _ = write!(
            out,
            concat!(
                "{}{{\"index\":{},\"name\":{},\"url\":{},\"role\":\"{}\",\"kind\":\"{}\",\"healthy\":{},",
                "\"fail_count\":{},\"recover_count\":{},\"last_error\":{},\"last_check_ms\":{},\"last_check_unix\":{},",
                "\"checks\":["
            ),
            if i == 0 { "" } else { "," },
            i,
            json_str(&up.name),
            json_str(&up.url),
            if i == 0 { "primary" } else { "backup" },
            kind,
            h.healthy,
            h.fails,
            h.oks,
            json_str(&h.last_error),
            h.last_check_ms,
            h.last_check_unix,
        );
        for (k, c) in h.recent.iter().enumerate() {
            let _ = write!(
                out,
                "{}{{\"t_ms\":{},\"ok\":{},\"ms\":{:.3},\"error\":{}}}",
                if k == 0 { "" } else { "," },
                c.at_ms,
                c.ok,
                c.took_us as f64 / 1000.0,
                json_str(&c.error)
            );
        }
        out.push_str("]}");
    }
    // Each transition lasted until the next one; the newest is still in force.
    out.push_str("],\"transitions\":[");
    for (k, t) in b.transitions.iter().enumerate() {
        let until = b.transitions.get(k + 1).map_or(now_ms, |n| n.at_ms);
        let _ = write!(
            out,
            "{}{{\"t_ms\":{},\"from\":{},\"to\":{},\"reason\":{},\"duration_s\":{:.3},\"current\":{}}}",
            if k == 0 { "" } else { "," },
            t.at_ms,
            json_str(&t.from),
            json_str(&t.to),
            json_str(&t.reason),
            until.saturating_sub(t.at_ms) as f64 / 1000.0,
            k + 1 == b.transitions.len()
        );
    }
    out.push_str("]}\n");
    out
}
