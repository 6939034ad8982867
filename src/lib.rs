//! `failover`: a tiny, fast HTTP/1.1 reverse proxy that routes to a primary upstream,
//! health-checks it, fails over to a backup and fails back when the primary recovers.
//!
//! Data flows one way: listener → [`client`] state machine → route ([`health`]) →
//! [`upstream`] connection → back to the client. [`worker`] runs one event loop per core.

pub mod answer;
pub mod buffer;
pub mod client;
pub mod config;
pub mod framing;
pub mod health;
pub mod http1;
pub mod logging;
pub mod readiness;
pub mod server;
pub mod timer;
pub mod tls;
pub mod token;
pub mod transport;
pub mod upstream;
pub mod worker;
