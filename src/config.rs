//! The one place that knows flag names, YAML keys, defaults, units and validation.
//!
//! Flags and the YAML file (`--config FILE`) carry the same settings; a flag wins over the
//! file. Everything is checked here, once, at start: a bad value becomes one [`Error`] line
//! naming the key, and the process exits with code 2. Nothing past this file parses config.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use std::sync::Arc;

use crate::access_log;
use crate::buffer::BUF_SIZE;
use crate::chain::{self, Spec};
use crate::error::err;
pub use crate::error::Error;
use crate::http1::{Limits, MAX_HEADERS};
use crate::sinks::{self, Notify};
use crate::tls::ListenerTls;
use crate::units::{parse_duration, parse_size, show_duration};
use crate::upstream::Upstream;

/// Command-line flags. Every one is optional here so that the YAML file can supply it.
#[derive(Parser, Debug, Default)]
#[command(name = "failover", version, args_override_self = true, about = "A tiny, fast HTTP/1.1 reverse proxy that fails over to a backup and back.", long_about = None)]
pub struct Flags {
    /// Primary upstream URL, http://host[:port][/prefix] (required, here or in the config file)
    #[arg(long, value_name = "URL")]
    pub primary: Option<String>,
    /// Backup upstream URL: http[s]://host[:port][/prefix], or file:///dir (a directory the proxy
    /// serves itself). Repeat for a chain: the first healthy one in order serves (required, here
    /// or in the config file)
    #[arg(long, value_name = "URL")]
    pub backup: Vec<String>,
    /// Listen address [default: 0.0.0.0:8080]
    #[arg(long, value_name = "ADDRESS")]
    pub listen: Option<String>,
    /// Health check interval, e.g. 500ms, 2s, 1m [default: 2s]
    #[arg(long, value_name = "DURATION")]
    pub check_interval: Option<String>,
    /// Timeout of one health check [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub check_timeout: Option<String>,
    /// Path probed on each upstream (after the URL's prefix); 2xx or 3xx is healthy [default: /]
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
    /// Consecutive failed checks of the primary before traffic goes to the backup [default: 3]
    #[arg(long, value_name = "COUNT")]
    pub fail_threshold: Option<u32>,
    /// Consecutive good checks of the primary before traffic returns to it [default: 2]
    #[arg(long, value_name = "COUNT")]
    pub recover_threshold: Option<u32>,
    /// Largest request body accepted, e.g. 512KB, 10MB, 1GiB; larger gets 413 [default: 10MB]
    #[arg(long, value_name = "SIZE")]
    pub max_body: Option<String>,
    /// Timeout for connecting to an upstream [default: 2s]
    #[arg(long, value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// Time an upstream has to send its response headers; exceeded gives 504 [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub upstream_timeout: Option<String>,
    /// How long an idle client keep-alive connection is kept open [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// After an answer given before the request body arrived whole, how long the proxy keeps
    /// reading (and dropping) what the client still sends before it closes [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub linger_time: Option<String>,
    /// How long an upgraded connection (WebSocket) may be quiet in both directions before it is
    /// closed [default: 1h]
    #[arg(long, value_name = "DURATION")]
    pub tunnel_timeout: Option<String>,
    /// Longest pause while a client sends its request body; exceeded gives 408 [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub body_timeout: Option<String>,
    /// Time a client has to send a complete request head; exceeded gives 408 [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub header_timeout: Option<String>,
    /// On SIGTERM, how long the proxy keeps serving with /__failover/ready at 503 before it stops
    /// accepting (for load balancers to take it out) [default: 0s]
    #[arg(long, value_name = "DURATION")]
    pub shutdown_delay: Option<String>,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub shutdown_timeout: Option<String>,
    /// Largest request head; larger gets 431 (at most 32KB) [default: 32KB]
    #[arg(long, value_name = "SIZE")]
    pub max_header_bytes: Option<String>,
    /// Most header fields in a request; more gets 431 (at most 256) [default: 256]
    #[arg(long, value_name = "COUNT")]
    pub max_headers: Option<usize>,
    /// Longest request line; longer gets 414 [default: 8KB]
    #[arg(long, value_name = "SIZE")]
    pub max_request_line: Option<String>,
    /// Most client connections per process; past it new ones wait in the kernel backlog
    /// [default: what the open-file limit allows]
    #[arg(long, value_name = "COUNT")]
    pub max_connections: Option<usize>,
    /// How often upstream names are looked up again (also soon after a connect failure)
    /// [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub dns_refresh: Option<String>,
    /// Number of worker threads (event loops) [default: number of cores]
    #[arg(long, value_name = "COUNT")]
    pub workers: Option<usize>,
    /// Primary statuses that make a replayable request go to the backup instead [default: 502,503,504]
    #[arg(long, value_name = "LIST")]
    pub retry_on_status: Option<String>,
    /// Largest request body kept for a replay on the backup [default: 1MB]
    #[arg(long, value_name = "SIZE")]
    pub retry_buffer: Option<String>,
    /// Shortest time on the backup before failing back (hold-down against flapping) [default: 0s]
    #[arg(long, value_name = "DURATION")]
    pub min_backup_time: Option<String>,
    /// PEM CA bundle that replaces the default roots for an https:// primary
    #[arg(long, value_name = "FILE")]
    pub primary_ca: Option<String>,
    /// PEM CA bundle that replaces the default roots for the https:// backups
    #[arg(long, value_name = "FILE")]
    pub backup_ca: Option<String>,
    /// Do not verify the primary's certificate (logged as a warning)
    #[arg(long)]
    pub primary_insecure: bool,
    /// Do not verify the https:// backups' certificates (logged as a warning)
    #[arg(long)]
    pub backup_insecure: bool,
    /// TLS server name to send and verify for the primary [default: the URL's host]
    #[arg(long, value_name = "NAME")]
    pub primary_sni: Option<String>,
    /// TLS server name to send and verify for the https:// backups [default: the URL's host]
    #[arg(long, value_name = "NAME")]
    pub backup_sni: Option<String>,
    /// Host header for the primary: client, upstream or a literal [default: client for http://, upstream for https://]
    #[arg(long, value_name = "POLICY")]
    pub primary_host_header: Option<String>,
    /// Host header for the backups: client, upstream or a literal [default: client for http://, upstream for https://]
    #[arg(long, value_name = "POLICY")]
    pub backup_host_header: Option<String>,
    /// A file:// backup answers every request with this status and its sorry page (e.g. 503)
    /// instead of serving the directory
    #[arg(long, value_name = "STATUS")]
    pub backup_status: Option<u16>,
    /// The page a file:// backup with --backup-status serves [default: index.html in its directory]
    #[arg(long, value_name = "FILE")]
    pub sorry_page: Option<String>,
    /// PEM certificate chain: the listener speaks TLS (with --tls-key); reloaded on SIGHUP
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// PEM private key (PKCS#8, RSA or EC) for --tls-cert
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<String>,
    /// Also serve plain HTTP on this address (with --tls-cert), e.g. 0.0.0.0:80
    #[arg(long, value_name = "ADDRESS")]
    pub listen_http: Option<String>,
    /// Serve the admin endpoints (override, drain) here: ADDR or unix:/path (mode 0600) [default: off]
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// File holding the bearer token every admin request must carry (required when the admin
    /// listener is not loopback or a unix socket)
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<String>,
    /// Write one line per request to this file (`-`: standard output); SIGHUP reopens it [default: off]
    #[arg(long, value_name = "PATH")]
    pub access_log: Option<String>,
    /// Access log lines: json or combined [default: json]
    #[arg(long, value_name = "FORMAT")]
    pub access_log_format: Option<String>,
    /// Send failover events to this webhook (Slack, Discord, PagerDuty or JSON); repeatable
    #[arg(long, value_name = "URL")]
    pub notify: Vec<String>,
    /// Body format for --notify: slack, discord, pagerduty or json [default: from the URL's host, else json]
    #[arg(long, value_name = "FORMAT")]
    pub notify_format: Option<String>,
    /// Switches within this time of the first are sent as one message (a flap); 0 sends each at once [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub notify_coalesce: Option<String>,
    /// File holding the PagerDuty Events API v2 routing key (for a pagerduty --notify)
    #[arg(long, value_name = "FILE")]
    pub pagerduty_key_file: Option<String>,
    /// Name of this proxy in notifications [default: the host name]
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// Pin worker i to core i
    #[arg(long)]
    pub pin_cores: bool,
    /// Copy large bodies through user space instead of splice(2) between the sockets
    #[arg(long)]
    pub no_splice: bool,
    /// Log one JSON object per line
    #[arg(long)]
    pub json_logs: bool,
    /// YAML config file with the same keys in snake_case (flags win over the file)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check the configuration (flags, file, certificates, key files), print it with secrets
    /// masked, and exit: 0 when valid, 2 when not
    #[arg(long)]
    pub check_config: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Commands other than running the proxy.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// GET a URL and exit 0 on a 2xx or 3xx answer, 1 otherwise (a container health check
    /// without curl: `failover probe http://127.0.0.1:8080/__failover/live`)
    Probe {
        url: String,
        /// How long the whole request may take
        #[arg(long, value_name = "DURATION", default_value = "2s")]
        timeout: String,
    },
}

/// The YAML file: the same settings as the flags, in snake_case.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    primary: Option<String>,
    /// A URL, or a list of URLs and `{url, ca, sni, host_header, insecure, status, sorry_page}`.
    backup: Option<serde_yaml::Value>,
    listen: Option<String>,
    check_interval: Option<Scalar>,
    check_timeout: Option<Scalar>,
    health_path: Option<String>,
    fail_threshold: Option<u32>,
    recover_threshold: Option<u32>,
    max_body: Option<Scalar>,
    connect_timeout: Option<Scalar>,
    upstream_timeout: Option<Scalar>,
    idle_timeout: Option<Scalar>,
    tunnel_timeout: Option<Scalar>,
    linger_time: Option<Scalar>,
    dns_refresh: Option<Scalar>,
    header_timeout: Option<Scalar>,
    body_timeout: Option<Scalar>,
    shutdown_timeout: Option<Scalar>,
    shutdown_delay: Option<Scalar>,
    max_header_bytes: Option<Scalar>,
    max_headers: Option<usize>,
    max_request_line: Option<Scalar>,
    max_connections: Option<usize>,
    workers: Option<usize>,
    retry_on_status: Option<StatusList>,
    retry_buffer: Option<Scalar>,
    min_backup_time: Option<Scalar>,
    primary_ca: Option<String>,
    backup_ca: Option<String>,
    primary_insecure: Option<bool>,
    backup_insecure: Option<bool>,
    primary_sni: Option<String>,
    backup_sni: Option<String>,
    primary_host_header: Option<String>,
    backup_host_header: Option<String>,
    backup_status: Option<u16>,
    sorry_page: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    listen_http: Option<String>,
    access_log: Option<String>,
    access_log_format: Option<String>,
    admin_listen: Option<String>,
    admin_token_file: Option<String>,
    /// A list of URLs and `{url, format, events, ca}`.
    notify: Option<Vec<serde_yaml::Value>>,
    notify_format: Option<String>,
    notify_coalesce: Option<Scalar>,
    pagerduty_key_file: Option<String>,
    /// The routing key itself (prefer the file: it keeps the secret out of the config).
    pagerduty_key: Option<String>,
    instance: Option<String>,
    pin_cores: Option<bool>,
    no_splice: Option<bool>,
    json_logs: Option<bool>,
}

/// A YAML value that may be written as a string (`"2s"`) or a bare number (`2`).
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Number(u64),
}

/// `retry_on_status` in YAML: `"502,503"` or `[502, 503]`.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum StatusList {
    Text(String),
    List(Vec<u16>),
}

impl StatusList {
    fn into_text(self) -> String {
        match self {
            StatusList::Text(s) => s,
            StatusList::List(v) => v.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
        }
    }
}

impl Scalar {
    fn into_text(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Number(n) => n.to_string(),
        }
    }
}

/// The validated configuration every worker reads (shared as `Arc<Config>`, never mutated).
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The chain: the primary, then the backups in order of priority.
    pub upstreams: Vec<Upstream>,
    pub check_interval: Duration,
    pub check_timeout: Duration,
    pub health_path: String,
    pub fail_threshold: u32,
    pub recover_threshold: u32,
    pub max_body: u64,
    pub connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub idle_timeout: Duration,
    /// Quiet time after which an upgraded connection is closed.
    pub tunnel_timeout: Duration,
    /// How often upstream names are looked up again.
    pub dns_refresh: Duration,
    /// The longest lingering close.
    pub linger_time: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// On SIGTERM, serving on (not ready) before stopping to accept.
    pub shutdown_delay: Duration,
    pub limits: Limits,
    /// Client connections per process before accepting pauses.
    pub max_connections: usize,
    pub workers: usize,
    /// Statuses that send a replayable request on to the next upstream (sorted, deduplicated).
    pub retry_on_status: Vec<u16>,
    pub retry_buffer: u64,
    pub min_backup_time: Duration,
    pub pin_cores: bool,
    /// Large plain-TCP bodies are copied, not spliced.
    pub no_splice: bool,
    pub json_logs: bool,
    /// The listener speaks TLS with this certificate.
    pub tls: Option<Arc<ListenerTls>>,
    /// A second, plain-HTTP listener (only with `tls`).
    pub listen_http: Option<SocketAddr>,
    /// Where failover events are sent.
    pub notify: Arc<Notify>,
    /// Where each request is logged (None: nowhere).
    pub access_log: Option<access_log::Target>,
    /// The admin listener, and the token its requests need.
    pub admin_listen: Option<AdminAddr>,
    pub admin_token: Option<String>,
}

/// Where the admin endpoints listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAddr::Tcp(a) => write!(f, "{a}"),
            AdminAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Config {
    /// The name of upstream `i` (`?` for a position a reload removed).
    pub fn name(&self, i: usize) -> &str {
        self.upstreams.get(i).map_or("?", |u| u.name.as_str())
    }

    /// Probe period while the serving upstream is suspect: a quarter of the interval, at least 50ms.
    pub fn fast_interval(&self) -> Duration {
        (self.check_interval / 4).max(Duration::from_millis(50)).min(self.check_interval)
    }
}

impl Config {
    /// Builds the configuration from parsed flags, reading `--config` if given.
    pub fn from_flags(flags: Flags) -> Result<Config, Error> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        merge(flags, file)
    }
}

fn read_file(path: &PathBuf) -> Result<FileConfig, Error> {
    let text =
        std::fs::read_to_string(path).map_err(|e| err("config", format!("cannot read {}: {e}", path.display())))?;
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    let one_line = |e: serde_yaml::Error| e.to_string().replace('\n', " ");
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| err("config", format!("{}: {}", path.display(), one_line(e))))?;
    serde_yaml::from_value(value.clone()).map_err(|e| {
        // Name the key at fault: every field is optional, so try the keys one by one.
        let bad_key = value.as_mapping().and_then(|map| {
            map.iter().find_map(|(k, v)| {
                let mut one = serde_yaml::Mapping::new();
                one.insert(k.clone(), v.clone());
                let failed = serde_yaml::from_value::<FileConfig>(serde_yaml::Value::Mapping(one)).is_err();
                failed.then(|| k.as_str().unwrap_or("?").to_string())
            })
        });
        match bad_key {
            Some(k) => err("config", format!("{}: key {k}: {}", path.display(), one_line(e))),
            None => err("config", format!("{}: {}", path.display(), one_line(e))),
        }
    })
}

fn merge(f: Flags, y: FileConfig) -> Result<Config, Error> {
    let text = |flag: Option<String>, file: Option<Scalar>| flag.or(file.map(Scalar::into_text));
    let primary = f.primary.or(y.primary).ok_or_else(|| err("primary", "is required (an http:// URL)"))?;
    let listen = f.listen.or(y.listen).unwrap_or_else(|| "0.0.0.0:8080".into());

    let duration = |key: &str, v: Option<String>, default: &str, min: Duration| {
        let v = v.unwrap_or_else(|| default.to_string());
        let d = parse_duration(&v).map_err(|e| err(key, format!("{v:?} {e}")))?;
        if d < min {
            return Err(err(key, format!("{v:?} must be at least {}", show_duration(min))));
        }
        Ok(d)
    };
    let ms = Duration::from_millis;
    let check_interval = duration("check-interval", text(f.check_interval, y.check_interval), "2s", ms(10))?;
    let check_timeout = duration("check-timeout", text(f.check_timeout, y.check_timeout), "1s", ms(1))?;
    let connect_timeout = duration("connect-timeout", text(f.connect_timeout, y.connect_timeout), "2s", ms(1))?;
    let upstream_timeout = duration("upstream-timeout", text(f.upstream_timeout, y.upstream_timeout), "30s", ms(1))?;
    let idle_timeout = duration("idle-timeout", text(f.idle_timeout, y.idle_timeout), "60s", ms(1))?;
    let tunnel_timeout = duration("tunnel-timeout", text(f.tunnel_timeout, y.tunnel_timeout), "1h", ms(1))?;
    let dns_refresh = duration("dns-refresh", text(f.dns_refresh, y.dns_refresh), "30s", ms(1000))?;
    let linger_time = duration("linger-time", text(f.linger_time, y.linger_time), "30s", ms(0))?;
    let header_timeout = duration("header-timeout", text(f.header_timeout, y.header_timeout), "10s", ms(1))?;

    let body_timeout = duration("body-timeout", text(f.body_timeout, y.body_timeout), "60s", ms(1))?;
    let shutdown_timeout = duration("shutdown-timeout", text(f.shutdown_timeout, y.shutdown_timeout), "10s", ms(0))?;
    let shutdown_delay = duration("shutdown-delay", text(f.shutdown_delay, y.shutdown_delay), "0s", ms(0))?;
    let size = |key: &str, v: Option<String>, default: &str, min: u64, max: u64| {
        let v = v.unwrap_or_else(|| default.to_string());
        let n = parse_size(&v).map_err(|e| err(key, format!("{v:?} {e}")))?;
        if n < min || n > max {
            return Err(err(key, format!("{v:?} must be between {min} and {max} bytes")));
        }
        Ok(n as usize)
    };
    let limits = Limits {
        head: size("max-header-bytes", text(f.max_header_bytes, y.max_header_bytes), "32KB", 1024, BUF_SIZE as u64)?,
        headers: match f.max_headers.or(y.max_headers).unwrap_or(MAX_HEADERS) {
            n @ 1..=MAX_HEADERS => n,
            n => return Err(err("max-headers", format!("{n} must be between 1 and {MAX_HEADERS}"))),
        },
        line: size("max-request-line", text(f.max_request_line, y.max_request_line), "8KB", 64, BUF_SIZE as u64)?,
    };
    let max_connections = match f.max_connections.or(y.max_connections) {
        Some(0) => return Err(err("max-connections", "must be at least 1")),
        Some(n) => n,
        None => default_max_connections(),
    };
    let min_backup_time = duration("min-backup-time", text(f.min_backup_time, y.min_backup_time), "0s", ms(0))?;
    let retry_buffer_text = text(f.retry_buffer, y.retry_buffer).unwrap_or_else(|| "1MB".into());
    let retry_buffer =
        parse_size(&retry_buffer_text).map_err(|e| err("retry-buffer", format!("{retry_buffer_text:?} {e}")))?;
    let statuses =
        f.retry_on_status.or(y.retry_on_status.map(StatusList::into_text)).unwrap_or_else(|| "502,503,504".into());
    let retry_on_status = parse_statuses(&statuses).map_err(|e| err("retry-on-status", format!("{statuses:?} {e}")))?;
    let max_body_text = text(f.max_body, y.max_body).unwrap_or_else(|| "10MB".into());
    let max_body = parse_size(&max_body_text).map_err(|e| err("max-body", format!("{max_body_text:?} {e}")))?;

    let count = |key: &str, v: Option<u32>, default: u32| match v.unwrap_or(default) {
        0 => Err(err(key, "must be at least 1")),
        n if n > 1000 => Err(err(key, format!("{n} is too large (at most 1000)"))),
        n => Ok(n),
    };
    let fail_threshold = count("fail-threshold", f.fail_threshold.or(y.fail_threshold), 3)?;
    let recover_threshold = count("recover-threshold", f.recover_threshold.or(y.recover_threshold), 2)?;

    let workers = match f.workers.or(y.workers) {
        Some(0) => return Err(err("workers", "must be at least 1")),
        Some(n) if n > 1024 => return Err(err("workers", format!("{n} is too many (at most 1024)"))),
        Some(n) => n,
        None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };

    let health_path = f.health_path.or(y.health_path).unwrap_or_else(|| "/".into());
    if !health_path.starts_with('/') || health_path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(err("health-path", format!("{health_path:?} must start with / and contain no spaces")));
    }

    let primary = Spec {
        url: primary,
        ca: f.primary_ca.or(y.primary_ca),
        insecure: f.primary_insecure || y.primary_insecure.unwrap_or(false),
        sni: f.primary_sni.or(y.primary_sni),
        host_header: f.primary_host_header.or(y.primary_host_header),
        status: None,
        sorry_page: None,
        item: None,
    };
    let all_backups = Spec {
        url: String::new(),
        ca: f.backup_ca.or(y.backup_ca),
        insecure: f.backup_insecure || y.backup_insecure.unwrap_or(false),
        sni: f.backup_sni.or(y.backup_sni),
        host_header: f.backup_host_header.or(y.backup_host_header),
        status: f.backup_status.or(y.backup_status),
        sorry_page: f.sorry_page.or(y.sorry_page),
        item: None,
    };
    let backups = if !f.backup.is_empty() {
        f.backup.into_iter().map(|url| Spec { url, ..Spec::default() }).collect()
    } else {
        match y.backup {
            Some(v) => chain::backup_specs(v)?,
            None => Vec::new(),
        }
    };
    let upstreams = chain::chain(primary, backups, all_backups)?;
    let access_log = match (f.access_log.or(y.access_log), f.access_log_format.or(y.access_log_format)) {
        (None, Some(_)) => return Err(err("access-log-format", "only applies with --access-log")),
        (None, None) => None,
        (Some(path), style) => {
            let style = match style.as_deref() {
                None => access_log::Style::Json,
                Some(v) => access_log::Style::parse(v)
                    .ok_or_else(|| err("access-log-format", format!("{v:?} must be json or combined")))?,
            };
            // Checked without creating the file (`--check-config` must leave no trace); the
            // proxy opens it at start.
            let file = std::path::Path::new(&path);
            let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            if path != "-" && !file.exists() && !dir.is_dir() {
                return Err(err("access-log", format!("cannot open {path}: {} is not a directory", dir.display())));
            }
            if path != "-" && file.is_dir() {
                return Err(err("access-log", format!("cannot open {path}: it is a directory")));
            }
            Some(access_log::Target { path, style })
        }
    };
    let admin_token = match f.admin_token_file.or(y.admin_token_file) {
        Some(path) => {
            let token = std::fs::read_to_string(&path)
                .map_err(|e| err("admin-token-file", format!("cannot read {path}: {e}")))?
                .trim()
                .to_string();
            if token.len() < 16 || token.bytes().any(|b| !b.is_ascii_graphic()) {
                return Err(err(
                    "admin-token-file",
                    format!("{path}: the token must be at least 16 visible characters"),
                ));
            }
            Some(token)
        }
        None => None,
    };
    let admin_listen = match f.admin_listen.or(y.admin_listen) {
        None => None,
        Some(v) => {
            Some(match v.strip_prefix("unix:") {
                Some(path) if path.starts_with('/') => AdminAddr::Unix(PathBuf::from(path)),
                Some(_) => return Err(err("admin-listen", format!("{v:?}: a unix socket needs an absolute path"))),
                None => {
                    let addr = parse_listen(&v).map_err(|e| Error(e.0.replacen("--listen", "--admin-listen", 1)))?;
                    if !addr.ip().is_loopback() && admin_token.is_none() {
                        return Err(err(
                        "admin-listen",
                        format!("{addr} is not loopback: set --admin-token-file, or listen on 127.0.0.1 or a unix socket"),
                    ));
                    }
                    AdminAddr::Tcp(addr)
                }
            })
        }
    };
    let notify = sinks::build(sinks::Settings {
        flag_urls: f.notify,
        file_items: y.notify.unwrap_or_default(),
        format: f.notify_format.or(y.notify_format),
        instance: f.instance.or(y.instance),
        coalesce: duration("notify-coalesce", text(f.notify_coalesce, y.notify_coalesce), "10s", ms(0))?,
        pagerduty_key_file: f.pagerduty_key_file.or(y.pagerduty_key_file),
        pagerduty_key: y.pagerduty_key,
    })?;
    let tls = match (f.tls_cert.or(y.tls_cert), f.tls_key.or(y.tls_key)) {
        (Some(cert), Some(key)) => Some(Arc::new(ListenerTls::load(&cert, &key).map_err(|(which, e)| err(which, e))?)),
        (Some(_), None) => return Err(err("tls-key", "is required with --tls-cert")),
        (None, Some(_)) => return Err(err("tls-cert", "is required with --tls-key")),
        (None, None) => None,
    };
    let listen_http = match f.listen_http.or(y.listen_http) {
        Some(_) if tls.is_none() => return Err(err("listen-http", "only applies with --tls-cert and --tls-key")),
        Some(a) => Some(parse_listen(&a).map_err(|e| Error(e.0.replacen("--listen", "--listen-http", 1)))?),
        None => None,
    };
    Ok(Config {
        tls,
        listen_http,
        notify: Arc::new(notify),
        access_log,
        admin_listen,
        admin_token,
        listen: parse_listen(&listen)?,
        upstreams,
        check_interval,
        check_timeout,
        health_path,
        fail_threshold,
        recover_threshold,
        max_body,
        connect_timeout,
        upstream_timeout,
        idle_timeout,
        tunnel_timeout,
        dns_refresh,
        linger_time,
        header_timeout,
        body_timeout,
        shutdown_timeout,
        shutdown_delay,
        limits,
        max_connections,
        workers,
        retry_on_status,
        retry_buffer,
        min_backup_time,
        pin_cores: f.pin_cores || y.pin_cores.unwrap_or(false),
        no_splice: f.no_splice || y.no_splice.unwrap_or(false),
        json_logs: f.json_logs || y.json_logs.unwrap_or(false),
    })
}

/// Each proxied connection needs two descriptors (client and upstream), plus some for
/// listeners, probes and logs: what the open-file limit allows, at most a million.
fn default_max_connections() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into `lim`, a valid rlimit owned by this frame.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let files = if rc == 0 { lim.rlim_cur as usize } else { 1024 };
    (files.saturating_sub(128) / 2).clamp(16, 1_000_000)
}

/// Parses `502,503,504` (empty: retry on no status).
fn parse_statuses(v: &str) -> Result<Vec<u16>, &'static str> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u16>() {
            Ok(s @ 400..=599) => out.push(s),
            _ => return Err("must be a comma-separated list of 4xx/5xx status codes"),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn parse_listen(v: &str) -> Result<SocketAddr, Error> {
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Ok(a);
    }
    match v.to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| err("listen", format!("{v:?} resolves to no address"))),
        Err(_) => Err(err("listen", format!("{v:?} is not an address like 0.0.0.0:8080"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut all = vec!["failover"];
        all.extend_from_slice(args);
        Flags::try_parse_from(all).expect("flags parse")
    }

    #[test]
    fn defaults() {
        let c =
            Config::from_flags(flags(&["--primary=http://127.0.0.1:1", "--backup=http://127.0.0.1:2"])).expect("valid");
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.check_interval, Duration::from_secs(2));
        assert_eq!(c.check_timeout, Duration::from_secs(1));
        assert_eq!((c.fail_threshold, c.recover_threshold), (3, 2));
        assert_eq!(c.max_body, 10 << 20);
        assert_eq!(c.health_path, "/");
        assert_eq!(c.upstream_timeout, Duration::from_secs(30));
        assert!(c.workers >= 1);
        assert_eq!(c.retry_on_status, vec![502, 503, 504]);
        assert_eq!(c.retry_buffer, 1 << 20);
        assert_eq!(c.min_backup_time, Duration::ZERO);
    }

    #[test]
    fn errors_name_the_key() {
        let base = ["--primary=http://127.0.0.1:1", "--backup=http://127.0.0.1:2"];
        let cases: &[(&[&str], &str)] = &[
            (&["--check-interval=0s"], "--check-interval"),
            (&["--check-interval=fast"], "--check-interval"),
            (&["--max-body=lots"], "--max-body"),
            (&["--fail-threshold=0"], "--fail-threshold"),
            (&["--recover-threshold=0"], "--recover-threshold"),
            (&["--workers=0"], "--workers"),
            (&["--listen=nowhere"], "--listen"),
            (&["--health-path=healthz"], "--health-path"),
            (&["--primary=gopher://example.com"], "--primary"),
            (&["--primary-host-header=a b"], "--primary-host-header"),
            (&["--backup-ca=/nonexistent.pem", "--backup=https://127.0.0.1:3"], "--backup-ca"),
            (&["--backup-ca=/nonexistent.pem"], "--backup-ca"),
            (&["--backup=file:///nonexistent-dir"], "--backup"),
            (&["--backup-status=503"], "--backup-status"),
            (&["--primary=file:///tmp"], "--primary"),
            (&["--backup=ftp://x"], "--backup"),
            (&["--retry-on-status=200"], "--retry-on-status"),
            (&["--retry-on-status=5xx"], "--retry-on-status"),
            (&["--retry-buffer=big"], "--retry-buffer"),
            (&["--min-backup-time=soon"], "--min-backup-time"),
        ];
        for (extra, key) in cases {
            let mut args: Vec<&str> = base.to_vec();
            args.extend_from_slice(extra);
            let e = Config::from_flags(flags(&args)).expect_err("must fail");
            assert!(e.0.starts_with(key), "{extra:?}: {e}");
            assert!(!e.0.contains('\n'), "one line: {e}");
        }
        let e = Config::from_flags(flags(&["--backup=http://127.0.0.1:2"])).expect_err("missing");
        assert!(e.0.starts_with("--primary"), "{e}");
    }

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("failover-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(
            &path,
            "primary: \"http://127.0.0.1:1\"\nbackup: http://127.0.0.1:2/b\ncheck_interval: 500ms\nfail_threshold: 5\nmax_body: 1MB\njson_logs: true\nworkers: 1\nretry_on_status: [503, 502]\nmin_backup_time: 30s\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = Config::from_flags(flags(&["--config", p, "--fail-threshold=4"])).expect("valid");
        assert_eq!(c.check_interval, Duration::from_millis(500));
        assert_eq!(c.fail_threshold, 4, "flag wins over file");
        assert_eq!(c.max_body, 1 << 20);
        assert!(c.json_logs);
        assert_eq!(c.upstreams[1].origin().map(|o| o.prefix.as_str()), Some("/b"));
        assert_eq!(c.retry_on_status, vec![502, 503]);
        assert_eq!(c.min_backup_time, Duration::from_secs(30));

        std::fs::write(&path, "primary: http://127.0.0.1:1\nbackup: http://127.0.0.1:2\nchek_interval: 1s\n").unwrap();
        let e = Config::from_flags(flags(&["--config", p])).expect_err("unknown key");
        assert!(e.0.contains("chek_interval"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
