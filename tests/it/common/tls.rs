//! TLS pieces for `tls.rs`: throwaway certificate authorities made with rcgen
//! (`Ca`, `Leaf`), PEM files in a temp dir (`TempDir`), a small blocking HTTPS upstream
//! that records SNI, ALPN, handshakes and requests (`TlsUpstream`), a blocking HTTPS
//! client (`TlsClient`), and a guard for a proxy whose listener speaks TLS (`TlsProxy`;
//! `common::Proxy` waits for readiness in plain HTTP, which a TLS listener never
//! answers). Loopback only, every socket has a timeout.
//!
//! `tls.rs` includes it with `#[path]`; this file uses `crate::common`.
#![allow(dead_code)]

use std::cell::Cell;
use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use crate::common::{free_port, ms, read_response, reply, retrying, temp_path, Head, ProxyBuilder, Response};
use crate::common::{Proxy, Seen, Wire};
use crate::common::{HOST, IO_TIMEOUT, PROBE_PATH};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ----------------------------------------------------------------- pki ----

/// A certificate authority that exists for one test.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A server certificate (ECDSA P-256, key in PKCS#8) issued by a [`Ca`].
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A leaf for `names` (an IP literal becomes an IP SAN).
    pub fn issue(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A leaf for `localhost` and `127.0.0.1`.
    pub fn localhost(&self) -> Leaf {
        self.issue(&["localhost", "127.0.0.1"])
    }
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// A temp directory for PEM files, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = temp_path(tag);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// Writes `contents` to `name` in the directory; returns the path as a flag value.
    pub fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path.to_string_lossy().into_owned()
    }

    /// Writes a leaf as `<stem>.crt` and `<stem>.key`; returns (cert path, key path).
    pub fn write_leaf(&self, stem: &str, leaf: &Leaf) -> (String, String) {
        (self.write(&format!("{stem}.crt"), &leaf.cert_pem), self.write(&format!("{stem}.key"), &leaf.key_pem))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn content_length(head: &Head) -> usize {
    head.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0)
}

// ------------------------------------------------------------ upstream ----

/// A request as the HTTPS upstream received it: what the plain [`Upstream`] records,
/// and the SNI.
#[derive(Clone, Debug)]
pub struct TlsSeen {
    /// The SNI the client sent (none for an IP address).
    pub sni: Option<String>,
    pub seen: Seen,
}

impl std::ops::Deref for TlsSeen {
    type Target = Seen;

    fn deref(&self) -> &Seen {
        &self.seen
    }
}

#[derive(Default)]
struct TlsBook {
    requests: Vec<TlsSeen>,
    probes: Vec<TlsSeen>,
    /// Completed handshakes: (connection, ALPN protocol chosen).
    handshakes: Vec<(usize, Option<Vec<u8>>)>,
    handshake_errors: Vec<String>,
}

/// A blocking HTTPS/1.1 server on 127.0.0.1, one thread per connection. Requests to
/// `PROBE_PATH` are health probes (200 `ok`, recorded apart); every other request is
/// recorded and answered 200 with the server's name as body. Offers ALPN http/1.1.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    book: Arc<Mutex<TlsBook>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl TlsUpstream {
    pub fn start(name: &str, leaf: &Leaf) -> TlsUpstream {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.cert_der.clone()], leaf.key())
            .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind TLS upstream");
        let addr = listener.local_addr().expect("TLS upstream addr");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let book = Arc::new(Mutex::new(TlsBook::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (book2, stop2, name) = (book.clone(), stop.clone(), name.to_string());
        let acceptor = thread::spawn(move || {
            let next = AtomicUsize::new(0);
            while !stop2.load(SeqCst) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let id = next.fetch_add(1, SeqCst);
                        let (config, book, name) = (config.clone(), book2.clone(), name.clone());
                        thread::spawn(move || serve_tls(sock, id, config, &book, &name));
                    }
                    Err(_) => thread::sleep(ms(2)),
                }
            }
        });
        TlsUpstream { addr, book, stop, acceptor: Some(acceptor) }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://HOST:PORT` for this server (`host` must resolve to 127.0.0.1).
    pub fn url(&self, host: &str) -> String {
        format!("https://{host}:{}", self.port())
    }

    /// Non-probe requests received so far.
    pub fn requests(&self) -> Vec<TlsSeen> {
        self.book.lock().unwrap().requests.clone()
    }

    pub fn probes(&self) -> Vec<TlsSeen> {
        self.book.lock().unwrap().probes.clone()
    }

    /// Completed handshakes of any kind (probes included).
    pub fn handshakes(&self) -> usize {
        self.book.lock().unwrap().handshakes.len()
    }

    /// Completed handshakes on connections that carried at least one non-probe request
    /// (one per connection: TLS 1.3 has no renegotiation).
    pub fn traffic_handshakes(&self) -> usize {
        let b = self.book.lock().unwrap();
        let traffic: HashSet<usize> = b.requests.iter().map(|s| s.conn).collect();
        b.handshakes.iter().filter(|(conn, _)| traffic.contains(conn)).count()
    }

    /// The ALPN protocol chosen on each completed handshake.
    pub fn alpn(&self) -> Vec<Option<String>> {
        let b = self.book.lock().unwrap();
        b.handshakes.iter().map(|(_, p)| p.as_ref().map(|p| String::from_utf8_lossy(p).into_owned())).collect()
    }

    /// Why handshakes failed, as rustls said it on this side.
    pub fn handshake_errors(&self) -> Vec<String> {
        self.book.lock().unwrap().handshake_errors.clone()
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn serve_tls(mut sock: TcpStream, id: usize, config: Arc<ServerConfig>, book: &Mutex<TlsBook>, name: &str) {
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_nodelay(true);
    let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = sock.set_write_timeout(Some(Duration::from_secs(10)));
    let mut conn = match ServerConnection::new(config) {
        Ok(c) => c,
        Err(e) => return book.lock().unwrap().handshake_errors.push(e.to_string()),
    };
    while conn.is_handshaking() {
        if let Err(e) = retrying(|| conn.complete_io(&mut sock)) {
            return book.lock().unwrap().handshake_errors.push(e.to_string());
        }
    }
    let sni = conn.server_name().map(str::to_string);
    book.lock().unwrap().handshakes.push((id, conn.alpn_protocol().map(<[u8]>::to_vec)));
    let mut wire = Wire::new(StreamOwned::new(conn, sock));
    loop {
        let raw_head = match wire.read_head() {
            Ok(Some(h)) => h,
            _ => return,
        };
        let head = Head::parse(&raw_head);
        let body = match wire.read_n(content_length(&head)) {
            Ok(b) => b,
            Err(_) => return,
        };
        let close = head.has_token("connection", "close");
        let seen = Seen { conn: id, raw_head, head, raw_body: body.clone(), body };
        let seen = TlsSeen { sni: sni.clone(), seen };
        let answer = if seen.target().ends_with(PROBE_PATH) {
            book.lock().unwrap().probes.push(seen);
            reply(200, b"ok")
        } else {
            book.lock().unwrap().requests.push(seen);
            reply(200, name.as_bytes())
        };
        let tls = &mut wire.stream;
        if tls.write_all(&answer).and_then(|_| retrying(|| tls.flush())).is_err() {
            return;
        }
        if close {
            tls.conn.send_close_notify();
            let _ = retrying(|| tls.flush());
            return;
        }
    }
}

// -------------------------------------------------------------- client ----

/// A blocking HTTPS/1.1 client over one connection, trusting one CA, offering ALPN
/// http/1.1.
pub struct TlsClient {
    wire: Wire<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// Connects and completes the handshake, verifying the server as `name`.
    pub fn connect(addr: SocketAddr, trust: &Ca, name: &str) -> io::Result<TlsClient> {
        TlsClient::connect_with(addr, TlsClient::config(trust)?, name)
    }

    /// A client configuration trusting `trust`; connections made with one configuration
    /// share its session store (a second connection may resume the first one's session).
    pub fn config(trust: &Ca) -> io::Result<Arc<ClientConfig>> {
        let mut roots = RootCertStore::empty();
        roots.add(trust.der()).map_err(|e| io::Error::other(e.to_string()))?;
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| io::Error::other(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    pub fn connect_with(addr: SocketAddr, config: Arc<ClientConfig>, name: &str) -> io::Result<TlsClient> {
        let server_name = ServerName::try_from(name.to_string()).map_err(|e| io::Error::other(e.to_string()))?;
        let mut conn = ClientConnection::new(config, server_name).map_err(|e| io::Error::other(e.to_string()))?;
        let mut sock = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        sock.set_read_timeout(Some(IO_TIMEOUT))?;
        sock.set_write_timeout(Some(IO_TIMEOUT))?;
        sock.set_nodelay(true)?;
        while conn.is_handshaking() {
            retrying(|| conn.complete_io(&mut sock))?;
        }
        Ok(TlsClient { wire: Wire::new(StreamOwned::new(conn, sock)) })
    }

    /// The certificate the server presented (first of its chain).
    pub fn peer_cert(&self) -> Option<CertificateDer<'static>> {
        self.wire.stream.conn.peer_certificates().and_then(|c| c.first().cloned())
    }

    /// Whether the handshake was a full one or resumed a session.
    pub fn resumed(&self) -> bool {
        self.wire.stream.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    pub fn alpn(&self) -> Option<String> {
        self.wire.stream.conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned())
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let tls = &mut self.wire.stream;
        tls.write_all(bytes)?;
        retrying(|| tls.flush())
    }

    /// The next response.
    pub fn response(&mut self) -> io::Result<Response> {
        read_response(&mut self.wire, false)
    }

    /// A keep-alive GET with `Host: app.test`.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())?;
        self.response()
    }
}

/// One GET on a new TLS connection; errors (handshake included) are returned.
pub fn tls_get(addr: SocketAddr, trust: &Ca, path: &str) -> io::Result<Response> {
    TlsClient::connect(addr, trust, "localhost")?.get(path)
}

// --------------------------------------------------------------- proxy ----

/// The real binary with `--tls-cert`/`--tls-key` (given in the builder), listening with
/// TLS on `addr` and, when asked, in plain HTTP on `http_addr`. Killed on drop.
pub struct TlsProxy {
    pub proxy: Proxy,
    pub http_addr: Option<SocketAddr>,
}

impl TlsProxy {
    /// Starts the proxy and waits until `GET /__failover/health` answers over TLS, with
    /// the listener's certificate verified against `trust` for `localhost`.
    pub fn start(builder: ProxyBuilder, trust: &Ca, plain_too: bool) -> TlsProxy {
        let http_addr = Cell::new(None);
        let per_try = || {
            http_addr.set(plain_too.then(|| SocketAddr::from(([127, 0, 0, 1], free_port()))));
            http_addr.get().map(|h| format!("--listen-http={h}")).into_iter().collect()
        };
        let ready = |addr| matches!(tls_get(addr, trust, "/__failover/health"), Ok(r) if r.status == 200);
        let proxy = builder.start_when(per_try, ready);
        TlsProxy { proxy, http_addr: http_addr.get() }
    }
}

impl std::ops::Deref for TlsProxy {
    type Target = Proxy;

    fn deref(&self) -> &Proxy {
        &self.proxy
    }
}

impl std::ops::DerefMut for TlsProxy {
    fn deref_mut(&mut self) -> &mut Proxy {
        &mut self.proxy
    }
}
