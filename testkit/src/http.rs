//! A small HTTP/1.1 file server on 127.0.0.1 (plain, or HTTPS from a throw-away CA) with
//! failure modes, redirects, auth and required headers, that records every request.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ca::throwaway_ca;

/// From request number `after` on (counting from 0), the server serves `body` in place of
/// every file, with an ETag of its own: a resource that changes between requests.
#[derive(Clone)]
pub struct Change {
    pub after: usize,
    pub body: Vec<u8>,
}

/// How the test server misbehaves.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// The first `fail_times` responses are cut after this many body bytes.
    pub cut_after: Option<u64>,
    pub fail_times: usize,
    /// Stall (sleep) this long instead of cutting.
    pub stall: Option<Duration>,
    /// Answer with this status: always, or only the first `status_times` requests.
    pub status: Option<u16>,
    pub status_times: Option<usize>,
    /// Close the first `hangup_times` connections after reading the request, unanswered.
    pub hangup_times: usize,
    /// Require basic auth with these credentials.
    pub basic_auth: Option<(String, String)>,
    /// Require `Authorization: Bearer TOKEN`.
    pub bearer: Option<String>,
    /// Require these headers (name, value) on every request; 403 without them.
    pub require_headers: Vec<(String, String)>,
    /// Ignore Range headers (answer 200 with the whole body).
    pub no_ranges: bool,
    /// Sleep between 64 KiB chunks.
    pub slow: Option<Duration>,
    pub change: Option<Change>,
}

/// One request as the server read it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    /// `GET /path HTTP/1.1`.
    pub line: String,
    pub range: Option<String>,
}

#[derive(Default)]
struct ServerState {
    files: Mutex<HashMap<String, Vec<u8>>>,
    /// Path → (status, Location).
    redirects: Mutex<HashMap<String, (u16, String)>>,
    behaviour: Mutex<Behaviour>,
    seen: Mutex<Vec<Seen>>,
    cuts: AtomicUsize,
    statuses: AtomicUsize,
    hangups: AtomicUsize,
    /// Body bytes written, over all responses.
    bytes_sent: AtomicU64,
    stop: AtomicBool,
}

/// A small HTTP/1.1 file server on 127.0.0.1 (plain, or HTTPS from a throw-away CA) with
/// failure modes, redirects and auth, that records every request.
pub struct HttpServer {
    pub port: u16,
    /// With TLS: the directory holding the CA certificate (what `--cert-dir` takes).
    pub ca_dir: Option<PathBuf>,
    state: Arc<ServerState>,
    _tls_dir: Option<tempfile::TempDir>,
}

/// A connection the server answers on: plain TCP or TLS over it.
trait Conn: Read + Write {
    /// Closes the socket at once (a cut mid-body).
    fn hang_up(&mut self) -> std::io::Result<()>;
}

impl Conn for TcpStream {
    fn hang_up(&mut self) -> std::io::Result<()> {
        self.shutdown(std::net::Shutdown::Both)
    }
}

impl Conn for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn hang_up(&mut self) -> std::io::Result<()> {
        self.sock.shutdown(std::net::Shutdown::Both)
    }
}

impl HttpServer {
    /// Plain HTTP.
    pub fn start() -> HttpServer {
        HttpServer::start_with(None)
    }

    /// HTTPS with a certificate for 127.0.0.1 from a throw-away CA (see `ca_dir`).
    pub fn start_tls() -> HttpServer {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let dir = tempfile::tempdir().unwrap();
        let ca = throwaway_ca(dir.path());
        let certs = CertificateDer::pem_file_iter(&ca.server_cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&ca.server_key).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let mut s = HttpServer::start_with(Some(Arc::new(config)));
        s.ca_dir = Some(ca.ca_dir);
        s._tls_dir = Some(dir);
        s
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ServerState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, tls) = (st.clone(), tls.clone());
                std::thread::spawn(move || {
                    let _ = match tls {
                        Some(cfg) => rustls::ServerConnection::new(cfg)
                            .map_err(std::io::Error::other)
                            .and_then(|c| serve(rustls::StreamOwned::new(c, conn), &st)),
                        None => serve(conn, &st),
                    };
                });
            }
        });
        HttpServer {
            port,
            ca_dir: None,
            state,
            _tls_dir: None,
        }
    }

    pub fn url(&self, name: &str) -> String {
        let scheme = if self.ca_dir.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}/{name}", self.port)
    }

    pub fn add(&self, name: &str, data: Vec<u8>) {
        self.state
            .files
            .lock()
            .unwrap()
            .insert(name.to_string(), data);
    }

    /// Answers requests for `name` with `status` and `Location: location` (as given:
    /// absolute or relative).
    pub fn redirect(&self, name: &str, status: u16, location: &str) {
        self.state
            .redirects
            .lock()
            .unwrap()
            .insert(name.to_string(), (status, location.to_string()));
    }

    /// Sets the behaviour and forgets the requests seen so far.
    pub fn set(&self, b: Behaviour) {
        let s = &self.state;
        *s.behaviour.lock().unwrap() = b;
        for c in [&s.cuts, &s.statuses, &s.hangups] {
            c.store(0, Ordering::SeqCst);
        }
        s.bytes_sent.store(0, Ordering::SeqCst);
        s.seen.lock().unwrap().clear();
    }

    /// Every request since the last [`set`](Self::set), in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Every request's Range header (None when absent).
    pub fn ranges(&self) -> Vec<Option<String>> {
        self.seen().into_iter().map(|s| s.range).collect()
    }

    /// Body bytes sent since the last [`set`](Self::set).
    pub fn bytes_sent(&self) -> u64 {
        self.state.bytes_sent.load(Ordering::SeqCst)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A strong ETag from the whole content, so any change shows.
fn etag_of(data: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    format!("\"{}-{:016x}\"", data.len(), h.finish())
}

/// Takes one of `limit` failures from `counter`; false once they are used up.
fn take(counter: &AtomicUsize, limit: usize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

fn serve<C: Conn>(conn: C, st: &ServerState) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end().to_string();
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    // GET requests have no body: nothing is buffered past the head.
    let mut w = reader.into_inner();
    let b = st.behaviour.lock().unwrap().clone();
    let index = {
        let mut seen = st.seen.lock().unwrap();
        seen.push(Seen {
            at: Instant::now(),
            line: line.clone(),
            range: headers.get("range").cloned(),
        });
        seen.len() - 1
    };
    let respond = |w: &mut C, status: &str, extra: &str, body: &[u8]| -> std::io::Result<()> {
        write!(
            w,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        )?;
        w.write_all(body)?;
        w.flush()
    };
    if take(&st.hangups, b.hangup_times) {
        return w.hang_up();
    }
    if let Some(s) = b.status {
        if take(&st.statuses, b.status_times.unwrap_or(usize::MAX)) {
            return respond(&mut w, &format!("{s} Test"), "", b"test failure\n");
        }
    }
    if let Some((u, p)) = &b.basic_auth {
        use base64::Engine;
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        );
        if headers.get("authorization") != Some(&want) {
            return respond(
                &mut w,
                "401 Unauthorized",
                "WWW-Authenticate: Basic realm=\"t\"\r\n",
                b"",
            );
        }
    }
    if let Some(t) = &b.bearer {
        if headers.get("authorization") != Some(&format!("Bearer {t}")) {
            return respond(
                &mut w,
                "401 Unauthorized",
                "WWW-Authenticate: Bearer realm=\"t\"\r\n",
                b"",
            );
        }
    }
    for (name, value) in &b.require_headers {
        if headers.get(&name.to_ascii_lowercase()) != Some(value) {
            let body = format!("header {name}: {value} is required\n");
            return respond(&mut w, "403 Forbidden", "", body.as_bytes());
        }
    }
    let redirect = st.redirects.lock().unwrap().get(&path).cloned();
    if let Some((status, location)) = redirect {
        return respond(
            &mut w,
            &format!("{status} Redirect"),
            &format!("Location: {location}\r\n"),
            b"",
        );
    }
    let data = match &b.change {
        Some(c) if index >= c.after && st.files.lock().unwrap().contains_key(&path) => {
            c.body.clone()
        }
        _ => match st.files.lock().unwrap().get(&path).cloned() {
            Some(d) => d,
            None => return respond(&mut w, "404 Not Found", "", b"no such file\n"),
        },
    };
    let etag = etag_of(&data);
    let mut start = 0u64;
    let mut end = data.len() as u64; // exclusive
    let mut partial = false;
    if let (Some(r), false) = (headers.get("range"), b.no_ranges) {
        let if_range_ok = headers.get("if-range").is_none_or(|v| *v == etag);
        if let Some(spec) = r.strip_prefix("bytes=") {
            if if_range_ok {
                let (a, z) = spec.split_once('-').unwrap();
                start = a.parse().unwrap();
                if !z.is_empty() {
                    end = (z.parse::<u64>().unwrap() + 1).min(end);
                }
                partial = true;
            }
        }
    }
    let body = &data[start as usize..end as usize];
    let status = if partial {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    let mut extra = format!("ETag: {etag}\r\nContent-Type: application/octet-stream\r\n");
    if !b.no_ranges {
        extra.push_str("Accept-Ranges: bytes\r\n");
    }
    if partial {
        extra.push_str(&format!(
            "Content-Range: bytes {start}-{}/{}\r\n",
            end - 1,
            data.len()
        ));
    }
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    )?;
    let cut = match b.cut_after {
        Some(n) if (body.len() as u64) > n && take(&st.cuts, b.fail_times) => Some(n as usize),
        _ => None,
    };
    let mut sent = 0usize;
    for chunk in body.chunks(64 << 10) {
        if let Some(c) = cut {
            if sent + chunk.len() > c {
                w.write_all(&chunk[..c - sent])?;
                st.bytes_sent.fetch_add((c - sent) as u64, Ordering::SeqCst);
                w.flush()?;
                if let Some(d) = b.stall {
                    std::thread::sleep(d);
                }
                return w.hang_up();
            }
        }
        w.write_all(chunk)?;
        sent += chunk.len();
        st.bytes_sent
            .fetch_add(chunk.len() as u64, Ordering::SeqCst);
        if let Some(d) = b.slow {
            std::thread::sleep(d);
        }
    }
    w.flush()
}
