//! Every integration test in one binary: one build and one link instead of one per file.
//! Each module is one behaviour, as the files were before; `common` is the shared harness.

mod access_log;
mod admin;
mod chain;
mod check_config;
mod common;
mod config;
mod dns;
mod failover;
mod headers;
mod keepalive;
mod limits;
mod metrics;
mod notify;
mod notify_https;
mod r#override;
mod probes;
mod rejects;
mod reload;
mod resilience;
mod routing;
mod shutdown;
mod smuggling;
mod splice;
mod splice_chunked;
mod static_backup;
mod tls;
mod zero_error;
