//! TLS through rustls: client configurations for `https://` upstreams and the session
//! that sits between a socket and the plaintext the state machines see.
//!
//! This is the only file that names rustls types. It never parses HTTP and never decides
//! what a failure means: it reports what happened, with a message a user can act on.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::buffer::Buf;
use crate::readiness::{Readiness, SockResult, HUP, R, W};

/// Plaintext rustls may hold for sending before writes push back.
const SEND_LIMIT: usize = 64 * 1024;
/// The most plaintext one TLS record carries.
const RECORD: usize = 16 * 1024;
/// A head and body up to this size are joined in a buffer of this size.
const SMALL_JOIN: usize = 1024;

/// The socket as rustls reads it, noting whether the last read was short (the socket is
/// drained then).
struct Drained<'a> {
    sock: &'a mut TcpStream,
    short: bool,
}

impl Read for Drained<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        self.short = n > 0 && n < buf.len();
        Ok(n)
    }
}

/// How to reach one `https://` upstream.
#[derive(Debug)]
pub struct UpstreamTls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl UpstreamTls {
    /// Builds the client side for an upstream: roots from `ca_file` (PEM) or webpki-roots,
    /// or no verification at all when `insecure`; `server_name` is verified and sent as SNI.
    pub fn new(server_name: &str, ca_file: Option<&str>, insecure: bool) -> Result<UpstreamTls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?;
        let mut config = if insecure {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider))).with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            match ca_file {
                Some(path) => {
                    let certs = CertificateDer::pem_file_iter(path)
                        .map_err(|e| format!("cannot read CA bundle {path}: {e}"))?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("CA bundle {path} is not valid PEM: {e}"))?;
                    if certs.is_empty() {
                        return Err(format!("CA bundle {path} holds no certificate"));
                    }
                    for cert in certs {
                        roots.add(cert).map_err(|e| format!("CA bundle {path}: {e}"))?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|_| format!("{server_name:?} is not a valid TLS server name"))?;
        Ok(UpstreamTls { config: Arc::new(config), name })
    }

    /// A bare rustls client connection, for blocking use outside the event loops.
    pub fn client(&self) -> Result<ClientConnection, String> {
        ClientConnection::new(self.config.clone(), self.name.clone()).map_err(|e| format!("TLS setup failed: {e}"))
    }

    /// A new client session (the shared config keeps resumption state across sessions).
    pub fn session(&self) -> Result<Session, String> {
        let mut conn = ClientConnection::new(self.config.clone(), self.name.clone())
            .map_err(|e| format!("TLS session setup failed: {e}"))?;
        conn.set_buffer_limit(Some(SEND_LIMIT));
        Ok(Session { conn: conn.into(), error: None, eof: false })
    }
}

/// The listener's certificate and key, loaded once per configuration (a SIGHUP reload
/// builds a new one from the files).
pub struct ListenerTls {
    cert: String,
    key: String,
    config: Arc<ServerConfig>,
}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ListenerTls({}, {})", self.cert, self.key)
    }
}

impl ListenerTls {
    /// Loads the certificate chain and key (PEM). The error names the file at fault.
    pub fn load(cert: &str, key: &str) -> Result<ListenerTls, (&'static str, String)> {
        let config = server_config(cert, key)?;
        Ok(ListenerTls { cert: cert.to_string(), key: key.to_string(), config })
    }

    /// A server session for an accepted connection.
    pub fn session(&self) -> Result<Session, String> {
        let mut conn = rustls::ServerConnection::new(self.config.clone()).map_err(|e| format!("TLS: {e}"))?;
        conn.set_buffer_limit(Some(SEND_LIMIT));
        Ok(Session { conn: conn.into(), error: None, eof: false })
    }
}

fn server_config(cert: &str, key: &str) -> Result<Arc<ServerConfig>, (&'static str, String)> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ("tls-cert", format!("cannot read {cert}: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ("tls-cert", format!("{cert} is not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(("tls-cert", format!("{cert} holds no certificate")));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ("tls-key", format!("cannot read a private key from {key}: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("tls-cert", format!("TLS setup failed: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| ("tls-key", format!("{key} does not match {cert}: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Stateless session tickets: a client that reconnects resumes its session (no
    // certificate, no signature) whatever the number of clients, with no cache to hold.
    // The keys rotate every 6 hours; a reload starts new ones (clients then do one full
    // handshake). One ticket per handshake: a client reconnects one connection at a time.
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| ("tls-cert", format!("TLS session tickets: {e}")))?;
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// Accepts any certificate: `--primary-insecure` / `--backup-insecure`.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One TLS session over a non-blocking socket.
pub struct Session {
    conn: rustls::Connection,
    /// What broke the session, in words (set with `SockResult::Error`).
    pub error: Option<String>,
    eof: bool,
}

impl Session {
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Reads plaintext into `buf`: drains what rustls holds, then pulls records from the
    /// socket until it would block (the edge-triggered contract) or `buf` is full.
    pub fn read_into(&mut self, sock: &mut TcpStream, ready: &mut Readiness, buf: &mut Buf) -> (usize, SockResult) {
        let mut total = 0;
        // As for plain TCP: after a short read the socket is drained and the next edge will
        // come, so the read that would say WouldBlock is skipped (not after a hang-up hint).
        let hup = ready.event & HUP != 0;
        let mut sock = Drained { sock, short: false };
        loop {
            let space = buf.space();
            if space.is_empty() {
                return (total, SockResult::Continue);
            }
            match self.conn.reader().read(space) {
                Ok(0) => return (total, SockResult::Closed),
                Ok(n) => {
                    buf.fill(n);
                    total += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed TCP without close_notify: common, and the framing above
                // tells a truncated message from a complete one.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return (total, SockResult::Closed),
                Err(e) => return (total, SockResult::Error(e.kind())),
            }
            if self.eof {
                return (total, SockResult::Closed);
            }
            if sock.short && !hup {
                ready.event &= !(R | HUP);
                return (total, SockResult::WouldBlock);
            }
            match self.conn.read_tls(&mut sock) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready.event &= !(R | HUP);
                    return (total, SockResult::WouldBlock);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (total, SockResult::Error(e.kind())),
            }
            if let Err(e) = self.conn.process_new_packets() {
                self.error = Some(describe(&e));
                // Tell the peer why (the alert is queued by rustls); best effort.
                let _ = self.conn.write_tls(sock.sock);
                return (total, SockResult::Error(io::ErrorKind::InvalidData));
            }
            if self.conn.wants_write() && self.flush(sock.sock, ready) == SockResult::Error(io::ErrorKind::Other) {
                return (total, SockResult::Error(io::ErrorKind::Other));
            }
        }
    }

    /// Encrypts `a` then `b` (as much as rustls accepts) and sends what it can.
    pub fn write_two(
        &mut self,
        sock: &mut TcpStream,
        ready: &mut Readiness,
        a: &[u8],
        b: &[u8],
    ) -> (usize, SockResult) {
        let mut total = 0;
        // A head and its body go out as one record, not two (one seal, one record header
        // less, and the peer decrypts once): up to a record's worth is copied together.
        let (a, b) = if !a.is_empty() && !b.is_empty() && a.len() < RECORD {
            let k = b.len().min(RECORD - a.len());
            // A small answer is joined in a small buffer: zeroing a record's worth of
            // stack for a few hundred bytes cost more than the copy.
            let mut writer = self.conn.writer();
            let wrote = if a.len() + k <= SMALL_JOIN {
                write_joined::<SMALL_JOIN>(&mut writer, a, &b[..k])
            } else {
                write_joined::<RECORD>(&mut writer, a, &b[..k])
            };
            match wrote {
                Ok(n) if n == a.len() + k => {
                    total = n;
                    (&[][..], &b[k..])
                }
                Ok(n) => return self.after_write(sock, ready, n, false),
                Err(e) => return (0, SockResult::Error(e.kind())),
            }
        } else {
            (a, b)
        };
        for part in [a, b] {
            if part.is_empty() {
                continue;
            }
            match self.conn.writer().write(part) {
                Ok(n) => {
                    total += n;
                    if n < part.len() {
                        break;
                    }
                }
                Err(e) => return (total, SockResult::Error(e.kind())),
            }
        }
        let asked = !(a.is_empty() && b.is_empty());
        self.after_write(sock, ready, total, asked)
    }

    /// Sends what a write queued; `asked`: plaintext was offered and none taken.
    fn after_write(
        &mut self,
        sock: &mut TcpStream,
        ready: &mut Readiness,
        total: usize,
        asked: bool,
    ) -> (usize, SockResult) {
        let res = self.flush(sock, ready);
        if total == 0 && res == SockResult::Continue && asked {
            // rustls holds a full buffer and the socket took it all: try again next pass.
            return (0, SockResult::Continue);
        }
        (total, res)
    }

    /// Sends queued records until done or the socket would block.
    pub fn flush(&mut self, sock: &mut TcpStream, ready: &mut Readiness) -> SockResult {
        while self.conn.wants_write() {
            match self.conn.write_tls(sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready.event &= !W;
                    return SockResult::WouldBlock;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return SockResult::Error(e.kind()),
            }
        }
        SockResult::Continue
    }

    /// Queues close_notify and sends it if the socket takes it.
    pub fn close(&mut self, sock: &mut TcpStream, ready: &mut Readiness) {
        self.conn.send_close_notify();
        let _ = self.flush(sock, ready);
    }
}

/// A rustls error in words an operator can act on.
fn describe(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::NotValidForName) => {
            "certificate not valid for the server name".into()
        }
        Error::InvalidCertificate(CertificateError::NotValidForNameContext { expected, .. }) => {
            format!("certificate not valid for name {:?}", expected.to_str())
        }
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "certificate signed by an unknown authority".into()
        }
        Error::InvalidCertificate(CertificateError::Expired) => "certificate expired".into(),
        Error::InvalidCertificate(c) => format!("invalid certificate: {c:?}"),
        Error::AlertReceived(a) => format!("peer sent TLS alert {a:?}"),
        other => format!("TLS error: {other}"),
    }
}

/// Offers `a` and `b` to rustls as one piece of plaintext (so one record), joined in a
/// stack buffer of `N` bytes, which must hold both.
fn write_joined<const N: usize>(writer: &mut rustls::Writer<'_>, a: &[u8], b: &[u8]) -> io::Result<usize> {
    let mut joined = [0u8; N];
    let n = a.len() + b.len();
    joined[..a.len()].copy_from_slice(a);
    joined[a.len()..n].copy_from_slice(b);
    writer.write(&joined[..n])
}
