//! Upstream names and their addresses: every address a name resolves to, looked up again
//! every `--dns-refresh` and soon after a connect failure, by one resolver thread —
//! `getaddrinfo` blocks, so it never runs on an event loop. A failed lookup keeps the last
//! good answer; a name that has never resolved has no address, and connecting to it fails
//! with the lookup's error (the upstream is unhealthy, not the proxy).
//!
//! Loops read the current answer when they open a connection (a read lock, not per
//! request) and rotate over it. This file never opens a connection.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Lookups asked for by connect failures wait at least this long after the last one.
const NUDGE_GAP: Duration = Duration::from_secs(1);

/// The addresses of one upstream host.
#[derive(Debug)]
pub struct Addrs {
    host: String,
    port: u16,
    /// An IP literal: nothing to look up, ever.
    literal: bool,
    current: RwLock<Arc<[SocketAddr]>>,
    /// Bumped whenever `current` changes.
    generation: AtomicU64,
    /// Where the next connection starts in `current`.
    next: AtomicUsize,
    /// Why the last lookup failed ("" after a good one).
    error: Mutex<String>,
}

impl Addrs {
    /// The addresses of `host:port`, looked up now (at start, off the loops). A failed
    /// lookup is not an error here: the upstream starts without addresses.
    pub fn new(host: &str, port: u16) -> Addrs {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let literal = bare.parse::<IpAddr>().ok();
        let addrs = Addrs {
            host: bare.to_string(),
            port,
            literal: literal.is_some(),
            current: RwLock::new(Arc::from(literal.map(|ip| SocketAddr::new(ip, port)).as_slice())),
            generation: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            error: Mutex::new(String::new()),
        };
        if !addrs.literal {
            addrs.refresh();
        }
        addrs
    }

    /// Looks the name up again (blocking). Keeps the last good answer on failure.
    pub fn refresh(&self) {
        if self.literal {
            return;
        }
        let looked = (self.host.as_str(), self.port).to_socket_addrs();
        let mut error = self.error.lock().unwrap_or_else(|p| p.into_inner());
        match looked {
            Ok(found) => {
                let mut found: Vec<SocketAddr> = found.collect();
                found.dedup();
                if found.is_empty() {
                    *error = format!("{:?} resolves to no address", self.host);
                    return;
                }
                error.clear();
                let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
                if current[..] != found[..] {
                    if !current.is_empty() {
                        log::info!("{} now resolves to {}", self.host, show(&found));
                    }
                    *current = Arc::from(found);
                    self.generation.fetch_add(1, Ordering::AcqRel);
                }
            }
            Err(e) => {
                let text = format!("cannot resolve {:?}: {e}", self.host);
                if *error != text {
                    log::warn!("{text}; keeping the last good addresses");
                }
                *error = text;
            }
        }
    }

    /// The current answer, starting at the next address in rotation: (addresses, index of
    /// the first to try). Empty when the name never resolved.
    pub fn pick(&self) -> (Arc<[SocketAddr]>, usize) {
        let list = self.current.read().unwrap_or_else(|p| p.into_inner()).clone();
        let start = if list.len() > 1 { self.next.fetch_add(1, Ordering::Relaxed) % list.len() } else { 0 };
        (list, start)
    }

    /// Whether `addr` is still in the answer (a pooled connection to an address that left
    /// it is not reused). `generation` is the one the connection was made under: while it
    /// is current, nothing needs checking.
    pub fn still_has(&self, addr: SocketAddr, generation: u64) -> bool {
        generation == self.generation() || self.current.read().unwrap_or_else(|p| p.into_inner()).contains(&addr)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Why there is no address to connect to.
    pub fn missing(&self) -> String {
        let error = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if error.is_empty() {
            format!("{:?} has no address", self.host)
        } else {
            error.clone()
        }
    }
}

#[cfg(test)]
impl Addrs {
    /// An answer as a lookup would give it (tests have no DNS of their own).
    pub fn set(&self, list: &[SocketAddr]) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::from(list);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

fn show(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ")
}

/// The resolver thread's work list and its alarm clock.
pub struct Resolver {
    names: Mutex<Vec<Arc<Addrs>>>,
    nudged: AtomicBool,
    wake: Condvar,
    lock: Mutex<()>,
    every: Mutex<Duration>,
}

impl Resolver {
    pub fn new(every: Duration) -> Arc<Resolver> {
        Arc::new(Resolver {
            names: Mutex::new(Vec::new()),
            nudged: AtomicBool::new(false),
            wake: Condvar::new(),
            lock: Mutex::new(()),
            every: Mutex::new(every),
        })
    }

    /// What to look up from now on (at start and after a reload), and how often.
    pub fn watch(&self, names: Vec<Arc<Addrs>>, every: Duration) {
        let names: Vec<Arc<Addrs>> = names.into_iter().filter(|a| !a.literal).collect();
        *self.names.lock().unwrap_or_else(|p| p.into_inner()) = names;
        *self.every.lock().unwrap_or_else(|p| p.into_inner()) = every;
    }

    /// A connection failed: look the names up again soon (a moved address shows at once).
    pub fn nudge(&self) {
        if !self.nudged.load(Ordering::Acquire) {
            // Under the lock, so the thread cannot miss it between its check and its sleep.
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.nudged.store(true, Ordering::Release);
            self.wake.notify_one();
        }
    }

    /// Starts the resolver thread.
    pub fn spawn(self: &Arc<Resolver>) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new().name("resolver".into()).spawn(move || me.run())?;
        Ok(())
    }

    fn run(&self) {
        let mut last = Instant::now();
        loop {
            let every = *self.every.lock().unwrap_or_else(|p| p.into_inner());
            {
                let guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
                let wait = every.saturating_sub(last.elapsed());
                let _ = self.wake.wait_timeout_while(guard, wait, |_| !self.nudged.load(Ordering::Acquire));
            }
            if self.nudged.swap(false, Ordering::AcqRel) {
                // Failures come in bursts: one lookup per burst is enough.
                std::thread::sleep(NUDGE_GAP.saturating_sub(last.elapsed()));
            }
            let names = self.names.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for a in &names {
                a.refresh();
            }
            last = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_never_look_up_and_names_keep_the_last_good_answer() {
        let a = Addrs::new("127.0.0.1", 80);
        assert!(a.literal);
        assert_eq!(&a.pick().0[..], &["127.0.0.1:80".parse::<SocketAddr>().unwrap()]);
        let v6 = Addrs::new("[::1]", 81);
        assert_eq!(&v6.pick().0[..], &["[::1]:81".parse::<SocketAddr>().unwrap()]);

        let local = Addrs::new("localhost", 8080);
        assert!(!local.pick().0.is_empty(), "localhost resolves");
        let generation = local.generation();
        local.refresh();
        assert_eq!(local.generation(), generation, "the same answer is no change");

        let nowhere = Addrs::new("no-such-host.invalid", 80);
        assert!(nowhere.pick().0.is_empty());
        assert!(nowhere.missing().contains("no-such-host.invalid"), "{}", nowhere.missing());
    }

    #[test]
    fn connections_rotate_over_every_address() {
        let a = Addrs::new("127.0.0.1", 80);
        let old = a.generation();
        a.set(&["127.0.0.1:1".parse().unwrap(), "127.0.0.2:1".parse().unwrap()]);
        let starts: Vec<usize> = (0..4).map(|_| a.pick().1).collect();
        assert_eq!(starts, [0, 1, 0, 1]);
        let gone: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(a.still_has(gone, a.generation()), "made under the current answer: nothing to check");
        assert!(!a.still_has(gone, old), "an address that left the answer");
        assert!(a.still_has("127.0.0.2:1".parse().unwrap(), old), "an address still in it");
    }
}
