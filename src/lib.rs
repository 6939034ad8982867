//! `failover`: a tiny, fast HTTP/1.1 reverse proxy that routes to the first healthy
//! upstream of a chain (a primary, then backups: origins or a directory it serves itself),
//! health-checks them all, fails over down the chain and back up when they recover.
//!
//! Data flows one way: listener → [`client`] state machine → [`exchange`] (one request) →
//! [`relay`] to an upstream connection ([`uplink`]) or a file ([`static_files`]) → back to
//! the client. [`retry`] decides re-sends, [`health`] counts checks and routes, and
//! [`worker`] runs one event loop per core.

mod access_log;
mod admin;
mod admin_api;
mod answer;
pub mod buffer;
mod chain;
mod check;
mod client;
mod client_io;
pub mod config;
mod control;
mod error;
mod exchange;
pub mod framing;
mod health;
mod holds;
pub mod http1;
mod httpdate;
mod logging;
mod metrics;
mod notify;
mod notify_text;
mod probe;
mod readiness;
mod relay;
mod relay_splice;
mod resolve;
mod retry;
mod server;
mod sinks;
mod splice;
mod static_files;
mod systemd;
mod timer;
mod tls;
mod token;
mod transport;
mod units;
mod uplink;
mod upstream;
mod webhook;
mod worker;

pub use check::{effective as effective_config, probe};
pub use config::{Command, Config, Flags};
pub use logging::init as init_logging;
pub use server::{raise_nofile_limit, run};
pub use units::parse_duration;
