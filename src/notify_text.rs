//! What a notification says: the events, and their bodies for Slack, Discord, PagerDuty
//! (Events API v2) and a generic JSON webhook modelled on Alertmanager's.
//!
//! Pure functions of an [`Event`]: no clock, no socket. Each body is one JSON document.

use std::fmt::Write as _;

use crate::answer::json_str;
use crate::httpdate::Rfc3339;

/// The events an operator can subscribe a sink to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Traffic left an upstream for another one.
    Failover,
    /// Traffic came back to the primary: the incident is over.
    Recovered,
    /// No upstream passes its checks.
    AllDown,
    /// An upstream passes its checks again after all were down.
    AllDownResolved,
    /// A backup fails its checks while it is not serving: the failover you would need next
    /// is broken.
    BackupUnhealthy,
    /// Several switches inside the coalescing window, sent as one message.
    Flapping,
    /// An operator set or cleared an override or a drain, or one expired.
    Override,
}

pub const EVENT_KINDS: [EventKind; 7] = [
    EventKind::Failover,
    EventKind::Recovered,
    EventKind::AllDown,
    EventKind::AllDownResolved,
    EventKind::BackupUnhealthy,
    EventKind::Flapping,
    EventKind::Override,
];

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Failover => "failover",
            EventKind::Recovered => "recovered",
            EventKind::AllDown => "all_down",
            EventKind::AllDownResolved => "all_down_resolved",
            EventKind::BackupUnhealthy => "backup_unhealthy",
            EventKind::Flapping => "flapping",
            EventKind::Override => "override",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        EVENT_KINDS.into_iter().find(|k| k.name() == name)
    }

    /// Its bit in a sink's event mask.
    pub fn bit(self) -> u32 {
        1 << self as u32
    }

    /// A move of traffic (these are what a flap is made of).
    pub fn is_switch(self) -> bool {
        !matches!(self, EventKind::BackupUnhealthy | EventKind::Flapping | EventKind::Override)
    }
}

/// How a sink wants its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Slack,
    Discord,
    PagerDuty,
    Json,
}

impl Format {
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "slack" => Some(Format::Slack),
            "discord" => Some(Format::Discord),
            "pagerduty" => Some(Format::PagerDuty),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Slack => "slack",
            Format::Discord => "discord",
            Format::PagerDuty => "pagerduty",
            Format::Json => "json",
        }
    }

    /// The format a webhook's host implies.
    pub fn guess(host: &str) -> Format {
        let host = host.to_ascii_lowercase();
        let under = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
        if under("hooks.slack.com") {
            Format::Slack
        } else if under("discord.com") || under("discordapp.com") {
            Format::Discord
        } else if under("events.pagerduty.com") {
            Format::PagerDuty
        } else {
            Format::Json
        }
    }
}

/// One notification, as the sender thread composed it from one or more switches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub at_ms: u64,
    /// Where traffic was and went (`none` while every upstream is down). For
    /// `backup_unhealthy`, `from` is the failing backup and `to` the one serving.
    pub from: String,
    pub from_url: String,
    pub to: String,
    pub to_url: String,
    pub reason: String,
    /// The incident this belongs to ("" for none): it opens when traffic leaves the primary
    /// and ends when it is back.
    pub incident_id: String,
    pub started_ms: u64,
    /// When the incident ended (None: still going).
    pub ended_ms: Option<u64>,
    /// Requests retried on a later upstream and rescued since the incident started.
    pub retried: u64,
    pub rescued: u64,
    /// `flapping`: how many switches, the route they took and the window.
    pub switches: u32,
    pub path: String,
    pub window_ms: u64,
    /// `flapping`: the kinds of the switches it stands for (a sink that wants any of them
    /// gets it).
    pub flap_kinds: u32,
}

impl Event {
    pub fn firing(&self) -> bool {
        self.ended_ms.is_none()
    }

    /// The incident's length so far (or in all).
    pub fn duration_ms(&self) -> u64 {
        if self.started_ms == 0 {
            return 0;
        }
        self.ended_ms.unwrap_or(self.at_ms).saturating_sub(self.started_ms)
    }

    /// One line that says it all, for chat and for PagerDuty's summary.
    pub fn summary(&self, instance: &str) -> String {
        let (from, to) = (&self.from, &self.to);
        let reason = &self.reason;
        let took = human(self.duration_ms());
        match self.kind {
            EventKind::Failover => {
                format!("failover on {instance}: traffic {from} -> {to} ({}): {reason}", self.to_url)
            }
            EventKind::Recovered => format!(
                "recovered on {instance}: traffic back on {to} after {took}; {} requests retried and {} rescued \
                 during the incident ({reason})",
                self.retried, self.rescued
            ),
            EventKind::AllDown => {
                format!("all upstreams down on {instance}: clients get 503 with Retry-After ({reason})")
            }
            EventKind::AllDownResolved if self.firing() => {
                format!("{to} is up again on {instance} after all upstreams were down; traffic -> {to} ({reason})")
            }
            EventKind::AllDownResolved => {
                format!(
                    "recovered on {instance}: traffic back on {to} after {took}, all upstreams were down ({reason})"
                )
            }
            EventKind::BackupUnhealthy => format!(
                "backup unhealthy on {instance}: {from} ({}) fails its checks ({reason}); traffic stays on {to}, \
                 but a failover to {from} would not work",
                self.from_url
            ),
            EventKind::Flapping => format!(
                "flapping on {instance}: traffic switched {} times in {} ({}); now on {to}",
                self.switches,
                human(self.window_ms),
                self.path
            ),
            EventKind::Override => format!("operator action on {instance}: {reason}; traffic on {to}"),
        }
    }
}

/// `850ms`, `12s`, `4m12s`, `2h03m`.
pub fn human(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

/// What a body needs besides the event.
pub struct Context<'a> {
    pub instance: &'a str,
    /// PagerDuty's integration key.
    pub routing_key: &'a str,
}

/// The body for `format`; None when the format has nothing to say about this event
/// (PagerDuty pages incidents, not a backup's health).
pub fn body(format: Format, e: &Event, cx: &Context) -> Option<String> {
    match format {
        Format::Slack => Some(slack(e, cx)),
        Format::Discord => Some(discord(e, cx)),
        Format::PagerDuty => pagerduty(e, cx),
        Format::Json => Some(generic(e, cx)),
    }
}

fn title(e: &Event) -> &'static str {
    match e.kind {
        EventKind::Failover => "Failover",
        EventKind::Recovered => "Recovered",
        EventKind::AllDown => "All upstreams down",
        EventKind::AllDownResolved if e.firing() => "An upstream is back",
        EventKind::AllDownResolved => "Recovered",
        EventKind::BackupUnhealthy => "Backup unhealthy",
        EventKind::Flapping => "Flapping",
        EventKind::Override => "Operator action",
    }
}

/// Slack incoming webhook: `text` (the notification's fallback) plus blocks.
fn slack(e: &Event, cx: &Context) -> String {
    let summary = e.summary(cx.instance);
    let mut context = format!("instance `{}` · {}", cx.instance, Rfc3339(e.at_ms));
    if !e.incident_id.is_empty() {
        let _ = write!(context, " · incident `{}` ({})", e.incident_id, human(e.duration_ms()));
    }
    format!(
        concat!(
            "{{\"text\":{},\"blocks\":[",
            "{{\"type\":\"header\",\"text\":{{\"type\":\"plain_text\",\"text\":{}}}}},",
            "{{\"type\":\"section\",\"text\":{{\"type\":\"mrkdwn\",\"text\":{}}},",
            "\"fields\":[{{\"type\":\"mrkdwn\",\"text\":{}}},{{\"type\":\"mrkdwn\",\"text\":{}}}]}},",
            "{{\"type\":\"context\",\"elements\":[{{\"type\":\"mrkdwn\",\"text\":{}}}]}}]}}"
        ),
        json_str(&summary),
        json_str(&format!("{} on {}", title(e), cx.instance)),
        json_str(&e.reason),
        json_str(&format!("*From*\n{} {}", e.from, e.from_url)),
        json_str(&format!("*To*\n{} {}", e.to, e.to_url)),
        json_str(&context),
    )
}

/// Discord webhook: `content` plus one embed, coloured by event.
fn discord(e: &Event, cx: &Context) -> String {
    let color = match e.kind {
        EventKind::Failover => 0xE67E22,
        EventKind::AllDown => 0xE74C3C,
        EventKind::BackupUnhealthy => 0xF1C40F,
        EventKind::Flapping => 0x9B59B6,
        EventKind::Override => 0x3498DB,
        _ if e.firing() => 0xE67E22,
        _ => 0x2ECC71,
    };
    let field = |name: &str, value: &str| {
        format!(
            "{{\"name\":{},\"value\":{},\"inline\":true}}",
            json_str(name),
            json_str(if value.is_empty() { "-" } else { value })
        )
    };
    let fields = [
        field("From", &format!("{} {}", e.from, e.from_url)),
        field("To", &format!("{} {}", e.to, e.to_url)),
        field("Instance", cx.instance),
        field("Incident", &e.incident_id),
    ];
    format!(
        concat!(
            "{{\"content\":{},\"embeds\":[{{\"title\":{},\"description\":{},\"color\":{},",
            "\"fields\":[{}],\"timestamp\":\"{}\"}}]}}"
        ),
        json_str(&e.summary(cx.instance)),
        json_str(&format!("{} on {}", title(e), cx.instance)),
        json_str(&e.reason),
        color,
        fields.join(","),
        Rfc3339(e.at_ms)
    )
}

/// PagerDuty Events API v2: `trigger` while an incident is open, `resolve` when it ends,
/// one `dedup_key` per incident.
fn pagerduty(e: &Event, cx: &Context) -> Option<String> {
    if matches!(e.kind, EventKind::BackupUnhealthy | EventKind::Override) || e.incident_id.is_empty() {
        return None;
    }
    let dedup_key = json_str(&format!("failover/{}/{}", cx.instance, e.incident_id));
    if !e.firing() {
        return Some(format!(
            "{{\"routing_key\":{},\"event_action\":\"resolve\",\"dedup_key\":{dedup_key}}}",
            json_str(cx.routing_key)
        ));
    }
    let severity = if e.kind == EventKind::AllDown || e.to == "none" { "critical" } else { "error" };
    let mut summary = e.summary(cx.instance);
    if summary.len() > 1024 {
        let mut cut = 1021;
        while !summary.is_char_boundary(cut) {
            cut -= 1;
        }
        summary.truncate(cut);
        summary.push_str("...");
    }
    Some(format!(
        concat!(
            "{{\"routing_key\":{},\"event_action\":\"trigger\",\"dedup_key\":{},",
            "\"payload\":{{\"summary\":{},\"source\":{},\"severity\":\"{}\",\"timestamp\":\"{}\",",
            "\"component\":{},\"group\":\"failover\",\"class\":\"{}\",",
            "\"custom_details\":{{\"from\":{},\"from_url\":{},\"to\":{},\"to_url\":{},\"reason\":{},",
            "\"incident_id\":{},\"started_at\":\"{}\",\"retried\":{},\"rescued\":{}}}}}}}"
        ),
        json_str(cx.routing_key),
        dedup_key,
        json_str(&summary),
        json_str(cx.instance),
        severity,
        Rfc3339(e.at_ms),
        json_str(&e.to),
        e.kind.name(),
        json_str(&e.from),
        json_str(&e.from_url),
        json_str(&e.to),
        json_str(&e.to_url),
        json_str(&e.reason),
        json_str(&e.incident_id),
        Rfc3339(e.started_ms),
        e.retried,
        e.rescued,
    ))
}

/// Generic JSON, after Alertmanager's webhook: `status` firing or resolved, `startsAt`,
/// `endsAt` (null while firing).
fn generic(e: &Event, cx: &Context) -> String {
    let starts = if e.started_ms == 0 { e.at_ms } else { e.started_ms };
    let ends = match e.ended_ms {
        Some(ms) => format!("\"{}\"", Rfc3339(ms)),
        None => "null".into(),
    };
    format!(
        concat!(
            "{{\"version\":\"1\",\"event\":\"{}\",\"status\":\"{}\",\"instance\":{},\"incident_id\":{},",
            "\"startsAt\":\"{}\",\"endsAt\":{},\"at\":\"{}\",\"duration_seconds\":{:.3},",
            "\"from\":{},\"from_url\":{},\"to\":{},\"to_url\":{},\"reason\":{},\"summary\":{},",
            "\"retried\":{},\"rescued\":{},\"switches\":{}}}"
        ),
        e.kind.name(),
        if e.firing() { "firing" } else { "resolved" },
        json_str(cx.instance),
        json_str(&e.incident_id),
        Rfc3339(starts),
        ends,
        Rfc3339(e.at_ms),
        e.duration_ms() as f64 / 1000.0,
        json_str(&e.from),
        json_str(&e.from_url),
        json_str(&e.to),
        json_str(&e.to_url),
        json_str(&e.reason),
        json_str(&e.summary(cx.instance)),
        e.retried,
        e.rescued,
        e.switches,
    )
}
