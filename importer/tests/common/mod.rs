//! Shared helpers for the importer's integration tests: test images made by the real
//! qemu-img, byte comparison with `qemu-img compare`, a hand-written HTTP(S) server with
//! failure modes, a throw-away CA, and a docker-registry started on a random loopback port.
#![allow(dead_code)]

pub mod token;

use platter_importer::push::{PushExtent, PushVolume};
use platter_importer::{import, FileSink, ImportError, ImportOptions, ImportReport, NoProgress};
use sha2::Digest;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs a command, panicking with its stderr on failure.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell pipeline.
pub fn sh(script: &str) -> String {
    run("sh", &["-c", script])
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Options whose temp dir does not exist: creating any temporary file (a spool) fails.
pub fn no_temp(d: &Path) -> ImportOptions {
    ImportOptions {
        temp_dir: Some(d.join("no-such-temp-dir")),
        ..Default::default()
    }
}

/// `qemu-img convert` of a raw file to `fmt`, with extra arguments (`-o ...`, `-c`).
pub fn convert(raw: &Path, out: &Path, fmt: &str, opts: &[&str]) {
    let mut args = vec!["convert", "-f", "raw", "-O", fmt];
    args.extend_from_slice(opts);
    args.push(raw.to_str().unwrap());
    args.push(out.to_str().unwrap());
    run("qemu-img", &args);
}

/// `disk.raw` in `dir`: [`make_raw`]'s 6 MiB pattern grown (sparsely) to `size` bytes,
/// with 1 MiB of random data at `far`. Returns the path and the data bytes.
pub fn sparse_raw_at(dir: &Path, seed: u64, size: u64, far: u64) -> (PathBuf, u64) {
    let (raw, data) = make_raw(dir, "disk.raw", 6 << 20, seed);
    let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    f.set_len(size).unwrap();
    f.write_all_at(&random_bytes(seed + 100, 1 << 20), far)
        .unwrap();
    (raw, data + (1 << 20))
}

/// A raw test disk of `size` bytes: random data runs, holes, an explicitly written zero
/// run and an unaligned tail. Returns the path and the number of non-zero data bytes.
pub fn make_raw(dir: &Path, name: &str, size: u64, seed: u64) -> (PathBuf, u64) {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    let mut data = 0u64;
    let mut off = 0u64;
    let mut i = 0u64;
    while off < size {
        let len = ((i * 37 + 11) % 23 + 1) * 16 * 1024;
        let len = len.min(size - off);
        match i % 4 {
            0 | 2 => {
                f.write_all_at(&random_bytes(seed + i, len as usize), off)
                    .unwrap();
                data += len;
            }
            3 => f.write_all_at(&vec![0u8; len as usize], off).unwrap(), // allocated zeros
            _ => {}                                                      // hole
        }
        off += len + ((i * 13) % 7) * 64 * 1024;
        i += 1;
    }
    // A few bytes in the last sector, so tails are exercised.
    f.write_all_at(b"tail!", size - 5).unwrap();
    (path, data + 5)
}

/// Imports `source` into a new file `out`.
pub fn import_file(
    source: &str,
    out: &Path,
    opts: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let sink = FileSink::create(out)?;
    import(source, sink, opts, &NoProgress).map(|(r, _)| r)
}

/// `qemu-img compare` of a raw result against an image of format `fmt`.
pub fn assert_same(raw: &Path, image: &Path, fmt: &str) {
    let out = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", fmt])
        .arg(raw)
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img compare {} {}: {}{}",
        raw.display(),
        image.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bytes allocated on disk for a file.
pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Asserts a result is sparse: allocation close to the data size.
pub fn assert_sparse(path: &Path, data_bytes: u64) {
    let a = allocated(path);
    assert!(
        a <= data_bytes + data_bytes / 8 + (256 << 10),
        "{} allocates {a} bytes for {data_bytes} bytes of data",
        path.display()
    );
}

/// Nothing named like `base` (or its .partial) is left in `dir`.
pub fn assert_nothing_left(dir: &Path, base: &str) {
    for e in std::fs::read_dir(dir).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            !n.starts_with(base),
            "{n} was left behind in {}",
            dir.display()
        );
    }
}

// ---------------------------------------------------------------------------------------
// HTTP server

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

// ---------------------------------------------------------------------------------------
// A throw-away CA

/// A CA made for one test, and a server certificate from it for 127.0.0.1 (and
/// `localhost`).
pub struct TestCa {
    /// Holds only `ca.crt`: what `--cert-dir` takes.
    pub ca_dir: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Makes a [`TestCa`] in `dir` with the `openssl` command.
pub fn throwaway_ca(dir: &Path) -> TestCa {
    let script = format!(
        "cd {d} && \
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=platter-test-ca 2>/dev/null && \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key -out srv.csr -subj /CN=127.0.0.1 2>/dev/null && \
         printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nbasicConstraints=CA:FALSE\\nkeyUsage=digitalSignature\\nextendedKeyUsage=serverAuth\\n' > ext && \
         openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt -days 2 -extfile ext 2>/dev/null && \
         mkdir certs && cp ca.crt certs/",
        d = dir.display()
    );
    sh(&script);
    TestCa {
        ca_dir: dir.join("certs"),
        server_cert: dir.join("srv.crt"),
        server_key: dir.join("srv.key"),
    }
}

// ---------------------------------------------------------------------------------------
// Registry

/// A docker-registry process on 127.0.0.1, killed on drop.
pub struct Registry {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
    pub ca: Option<PathBuf>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// Plain HTTP, no auth.
    pub fn start_plain() -> Registry {
        Registry::start(false)
    }

    /// TLS from a throw-away CA, htpasswd auth `user`/`secret`.
    pub fn start_tls_auth() -> Registry {
        Registry::start(true)
    }

    fn start(secure: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = free_port();
        let mut extra = String::new();
        let mut ca = None;
        let mut tls = String::new();
        if secure {
            let tca = throwaway_ca(d);
            sh(&format!(
                "htpasswd -Bbn user secret > {}",
                d.join("htpasswd").display()
            ));
            extra = format!(
                "auth:\n  htpasswd:\n    realm: platter\n    path: {d}/htpasswd\n",
                d = d.display()
            );
            tls = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                tca.server_cert.display(),
                tca.server_key.display()
            );
            ca = Some(tca.ca_dir);
        }
        Registry::launch(dir, port, &tls, &extra, ca)
    }

    /// Starts docker-registry with its config and data in `dir`, listening on 127.0.0.1:`port`,
    /// with `tls` (lines under `http:`) and `extra` (top-level sections such as `auth:`), and
    /// waits until it accepts connections.
    fn launch(
        dir: tempfile::TempDir,
        port: u16,
        tls: &str,
        extra: &str,
        ca: Option<PathBuf>,
    ) -> Registry {
        let d = dir.path();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{tls}{extra}",
            d = d.display()
        );
        std::fs::write(d.join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            port,
            child,
            dir,
            ca,
        }
    }

    pub fn reference(&self, repo_tag: &str) -> String {
        format!("127.0.0.1:{}/{repo_tag}", self.port)
    }
}

// ---------------------------------------------------------------------------------------
// A file as a volume to push

/// A raw file as a [`PushVolume`]; zero 64 KiB runs are reported as holes.
pub struct FileVolume(pub std::fs::File, pub u64);

impl FileVolume {
    pub fn open(p: &Path) -> FileVolume {
        let f = std::fs::File::open(p).unwrap();
        let len = f.metadata().unwrap().len();
        FileVolume(f, len)
    }
}

impl PushVolume for FileVolume {
    fn size(&self) -> u64 {
        self.1
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn block_status(&self, offset: u64, len: u64) -> std::io::Result<Vec<PushExtent>> {
        let mut out: Vec<PushExtent> = Vec::new();
        let mut pos = offset;
        let end = offset + len.min(16 << 20);
        let mut buf = vec![0u8; 64 << 10];
        while pos < end {
            let n = (end - pos).min(buf.len() as u64) as usize;
            self.0.read_exact_at(&mut buf[..n], pos)?;
            let data = buf[..n].iter().any(|&b| b != 0);
            match out.last_mut() {
                Some(l) if l.data == data => l.len += n as u64,
                _ => out.push(PushExtent {
                    offset: pos,
                    len: n as u64,
                    data,
                }),
            }
            pos += n as u64;
        }
        Ok(out)
    }
}

/// Reads a whole file.
pub fn read(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::open(p).unwrap().read_to_end(&mut v).unwrap();
    v
}

/// Writes an OCI layout with one uncompressed layer holding `layer_tar`.
pub fn layout_with_layer(dir: &Path, layer_tar: &[u8]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let hex = hex::encode(sha2::Sha256::digest(data));
        std::fs::write(blobs.join(&hex), data).unwrap();
        (format!("sha256:{hex}"), data.len())
    };
    let (ld, ls) = put(layer_tar);
    let (cd, cs) =
        put(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cs}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{ld}","size":{ls}}}]}}"#
    );
    let (md, ms) = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{ms},"annotations":{{"org.opencontainers.image.ref.name":"t"}}}}]}}"#
        ),
    )
    .unwrap();
}
