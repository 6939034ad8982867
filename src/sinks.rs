//! Where notifications go: `--notify URL` (repeatable) or YAML `notify:` (a list of URLs
//! and `{url, format, events, ca}`), each with its format and the events it wants, plus
//! the instance name every message carries. Checked once at start, like all config.

use std::time::Duration;

use serde::Deserialize;

use crate::error::{err, Error};
use crate::notify_text::{Event, EventKind, Format, EVENT_KINDS};
use crate::webhook::Target;

/// Most sinks a process sends to (their counters are fixed slots).
pub const MAX_SINKS: usize = 16;

#[derive(Debug, Clone)]
pub struct Sink {
    pub url: String,
    pub format: Format,
    /// Bits of [`EventKind::bit`].
    pub events: u32,
    pub target: Target,
}

impl Sink {
    /// Whether this sink subscribed to the event (a flap counts as the switches it is made of).
    pub fn wants(&self, e: &Event) -> bool {
        self.events & (e.kind.bit() | e.flap_kinds) != 0
    }

    /// How logs name it: format and host, never the path (a webhook's path is its secret).
    pub fn label(&self) -> String {
        format!("{} webhook at {}", self.format.name(), self.target.host)
    }
}

/// The notification settings.
#[derive(Debug, Clone, Default)]
pub struct Notify {
    pub sinks: Vec<Sink>,
    /// Goes into every message (default: the host name).
    pub instance: String,
    /// Switches inside this window after the first are sent as one message.
    pub coalesce: Duration,
    /// PagerDuty's integration (routing) key.
    pub pagerduty_key: String,
}

/// A YAML `notify:` item written as a mapping.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct FullItem {
    url: String,
    format: Option<String>,
    events: Option<Vec<String>>,
    /// A PEM CA bundle that replaces the default roots (an https:// receiver with a private CA).
    ca: Option<String>,
}

/// What flags and YAML say, merged (flags win).
pub struct Settings {
    pub flag_urls: Vec<String>,
    /// YAML `notify:` items: URLs or `{url, format, events, ca}`.
    pub file_items: Vec<serde_yaml::Value>,
    pub format: Option<String>,
    pub instance: Option<String>,
    pub coalesce: Duration,
    pub pagerduty_key_file: Option<String>,
    pub pagerduty_key: Option<String>,
}

pub fn build(s: Settings) -> Result<Notify, Error> {
    let default_format = match &s.format {
        Some(f) => Some(
            Format::parse(f)
                .ok_or_else(|| err("notify-format", format!("{f:?} must be one of slack, discord, pagerduty, json")))?,
        ),
        None => None,
    };
    let items: Vec<FullItem> = if !s.flag_urls.is_empty() {
        s.flag_urls.into_iter().map(|url| FullItem { url, format: None, events: None, ca: None }).collect()
    } else {
        let mut items = Vec::with_capacity(s.file_items.len());
        for (i, v) in s.file_items.into_iter().enumerate() {
            items.push(match v {
                serde_yaml::Value::String(url) => FullItem { url, format: None, events: None, ca: None },
                v @ serde_yaml::Value::Mapping(_) => serde_yaml::from_value(v)
                    .map_err(|e| err("notify", format!("item {}: {}", i + 1, e.to_string().replace('\n', " "))))?,
                _ => return Err(err("notify", format!("item {} must be a URL or {{url, format, events, ca}}", i + 1))),
            });
        }
        items
    };
    if items.len() > MAX_SINKS {
        return Err(err("notify", format!("{} sinks; at most {MAX_SINKS}", items.len())));
    }
    let mut sinks = Vec::with_capacity(items.len());
    for item in items {
        let target = Target::parse(item.url.trim(), item.ca.as_deref()).map_err(|e| err("notify", e))?;
        let format = match &item.format {
            Some(f) => Format::parse(f).ok_or_else(|| {
                err("notify", format!("{}: format {f:?} must be one of slack, discord, pagerduty, json", item.url))
            })?,
            None => default_format.unwrap_or_else(|| Format::guess(&target.host)),
        };
        let events = match &item.events {
            None => EVENT_KINDS.iter().fold(0, |m, k| m | k.bit()),
            Some(names) => {
                let mut mask = 0;
                for n in names {
                    let kind = EventKind::parse(n).ok_or_else(|| {
                        let all: Vec<&str> = EVENT_KINDS.iter().map(|k| k.name()).collect();
                        err("notify", format!("{}: event {n:?} must be one of {}", item.url, all.join(", ")))
                    })?;
                    mask |= kind.bit();
                }
                mask
            }
        };
        sinks.push(Sink { url: item.url.trim().to_string(), format, events, target });
    }
    let pagerduty_key = match (s.pagerduty_key_file, s.pagerduty_key) {
        (Some(path), _) => std::fs::read_to_string(&path)
            .map_err(|e| err("pagerduty-key-file", format!("cannot read {path}: {e}")))?
            .trim()
            .to_string(),
        (None, Some(key)) => key.trim().to_string(),
        (None, None) => String::new(),
    };
    if pagerduty_key.is_empty() && sinks.iter().any(|s| s.format == Format::PagerDuty) {
        return Err(err("pagerduty-key-file", "is required by a pagerduty notify sink (or pagerduty_key in YAML)"));
    }
    if pagerduty_key.bytes().any(|b| b < b' ' || b == b'"' || b == b'\\') {
        return Err(err("pagerduty-key-file", "the key has characters a routing key cannot have"));
    }
    let instance = match s.instance {
        Some(name) if name.trim().is_empty() => return Err(err("instance", "must not be empty")),
        Some(name) => name.trim().to_string(),
        None => hostname(),
    };
    Ok(Notify { sinks, instance, coalesce: s.coalesce, pagerduty_key })
}

/// The host name (what `hostname` prints), or `failover` when it cannot be read.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "failover".into())
}
