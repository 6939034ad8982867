//! Process control shared by the workers: the stop flag, the configuration a reload
//! published, the wakers that make every loop look at both, and the count of open client
//! connections (for `--max-connections`).
//!
//! This file never counts health and never touches a connection.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::Config;
use crate::notify::NotifyStats;

pub struct Control {
    /// SIGTERM/SIGINT: workers stop accepting and drain.
    stopping: AtomicBool,
    /// SIGTERM arrived: `/__failover/ready` says 503 (the proxy may serve on for
    /// `--shutdown-delay` while load balancers take it out).
    unready: AtomicBool,
    /// The clock heartbeats are measured on.
    base: Instant,
    /// Client connections open in the process.
    pub connections: AtomicUsize,
    /// The configuration published by SIGHUP, and how many times it changed.
    config: Mutex<Option<Arc<Config>>>,
    config_epoch: AtomicU64,
    wakers: Mutex<Vec<Arc<mio::Waker>>>,
    /// Bumped by SIGHUP: workers reopen their access log (after logrotate moved it).
    log_epoch: AtomicU64,
    /// What the notification thread delivered (for the metrics).
    pub notifications: Arc<NotifyStats>,
}

impl Control {
    pub fn new() -> Control {
        Control {
            stopping: AtomicBool::new(false),
            unready: AtomicBool::new(false),
            base: Instant::now(),
            connections: AtomicUsize::new(0),
            config: Mutex::new(None),
            config_epoch: AtomicU64::new(0),
            wakers: Mutex::new(Vec::new()),
            log_epoch: AtomicU64::new(0),
            notifications: Arc::new(NotifyStats::default()),
        }
    }

    /// Milliseconds since the process started (for heartbeats).
    pub fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// From now on `/__failover/ready` answers 503.
    pub fn set_unready(&self) {
        self.unready.store(true, Ordering::Release);
    }

    pub fn unready(&self) -> bool {
        self.unready.load(Ordering::Acquire)
    }

    pub fn add_waker(&self, w: Arc<mio::Waker>) {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner()).push(w);
    }

    /// Hands a reloaded configuration to every worker; returns its generation.
    pub fn publish_config(&self, cfg: Arc<Config>) -> u64 {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = Some(cfg);
        let generation = self.config_epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake_all();
        generation
    }

    /// The generation the next published configuration will have.
    pub fn next_generation(&self) -> u64 {
        self.config_epoch.load(Ordering::Acquire) + 1
    }

    /// The newest reloaded configuration if it is newer than `seen` (with its generation).
    pub fn config_since(&self, seen: u64) -> Option<(u64, Arc<Config>)> {
        let epoch = self.config_epoch.load(Ordering::Acquire);
        if epoch == seen {
            return None;
        }
        let cfg = self.config.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        Some((epoch, cfg))
    }

    /// Asks every worker to reopen its access log.
    pub fn reopen_logs(&self) {
        self.log_epoch.fetch_add(1, Ordering::AcqRel);
        self.wake_all();
    }

    pub fn log_epoch(&self) -> u64 {
        self.log_epoch.load(Ordering::Acquire)
    }

    /// Asks every worker to stop accepting and drain.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake_all();
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Makes every worker's loop turn (to see a new route, configuration or stop).
    pub fn wake_all(&self) {
        for w in self.wakers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Err(e) = w.wake() {
                log::error!("cannot wake a worker: {e}");
            }
        }
    }
}
