//! Running under systemd: the readiness protocol (`NOTIFY_SOCKET`: `READY=1`,
//! `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1`) and socket activation (`LISTEN_FDS`), both
//! spoken directly (sd_notify(3), sd_listen_fds(3)); without systemd, both are no-ops.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::FromRawFd;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// The service manager's notification socket, if there is one.
pub struct Systemd {
    sock: Option<(UnixDatagram, UnixAddr)>,
    /// `WATCHDOG_USEC`: the manager restarts us when pings stop; we ping at half of it.
    watchdog: Option<Duration>,
    last_ping: Instant,
}

impl Systemd {
    pub fn from_env() -> Systemd {
        let sock = std::env::var("NOTIFY_SOCKET").ok().and_then(|path| match connect(&path) {
            Ok(s) => Some(s),
            Err(e) => {
                log::warn!("NOTIFY_SOCKET={path}: {e}; not telling systemd about readiness");
                None
            }
        });
        let ours = std::env::var("WATCHDOG_PID").map_or(true, |p| p.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&us| us > 0 && ours && sock.is_some())
            .map(|us| Duration::from_micros(us / 2));
        Systemd { sock, watchdog, last_ping: Instant::now() }
    }

    pub fn active(&self) -> bool {
        self.sock.is_some()
    }

    /// Sends one notification (`KEY=VALUE` lines); a failure is logged, never fatal.
    pub fn send(&self, message: &str) {
        let Some((sock, addr)) = &self.sock else { return };
        if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
            log::warn!("cannot notify systemd ({}): {e}", message.replace('\n', " "));
        }
    }

    /// `RELOADING=1` with the monotonic time systemd wants with it.
    pub fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    /// A watchdog ping is due (half of `WATCHDOG_USEC` since the last one).
    pub fn watchdog_due(&mut self) -> bool {
        match self.watchdog {
            Some(every) if self.last_ping.elapsed() >= every => {
                self.last_ping = Instant::now();
                true
            }
            _ => false,
        }
    }
}

fn connect(path: &str) -> io::Result<(UnixDatagram, UnixAddr)> {
    let addr = match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            UnixAddr::from_abstract_name(name.as_bytes())?
        }
        None if path.starts_with('/') => UnixAddr::from_pathname(path)?,
        None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "not an absolute path or @name")),
    };
    Ok((UnixDatagram::unbound()?, addr))
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes only into `ts`, a valid timespec owned by this frame.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// The listening sockets systemd passed to this process (`LISTEN_PID` is ours), with their
/// addresses. Descriptors that are not listening TCP sockets are refused with an error.
pub fn listen_fds() -> io::Result<Vec<(SocketAddr, TcpListener)>> {
    let pid_ok = std::env::var("LISTEN_PID").is_ok_and(|p| p.trim() == std::process::id().to_string());
    let n: i32 = match std::env::var("LISTEN_FDS") {
        Ok(v) if pid_ok => v.trim().parse().map_err(|_| bad(format!("LISTEN_FDS={v:?} is not a number")))?,
        _ => return Ok(Vec::new()),
    };
    let mut out = Vec::with_capacity(n.max(0) as usize);
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + n {
        // SAFETY: systemd hands descriptors 3..3+LISTEN_FDS to this process (LISTEN_PID says
        // so) and nothing else in it owns them; each is wrapped exactly once.
        let listener = unsafe { TcpListener::from_raw_fd(fd) };
        let sock = socket2::SockRef::from(&listener);
        if !sock.is_listener().unwrap_or(false) {
            return Err(bad(format!("descriptor {fd} passed by systemd is not a listening socket")));
        }
        let addr = listener.local_addr().map_err(|e| bad(format!("descriptor {fd} passed by systemd: {e}")))?;
        listener.set_nonblocking(true)?;
        out.push((addr, listener));
    }
    Ok(out)
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}
