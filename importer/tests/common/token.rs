//! The Docker/distribution token flow for tests: a docker-registry configured with
//! `auth: token` (realm, service, issuer, rootcertbundle) and a small token service on
//! 127.0.0.1 that checks Basic credentials and issues RS256 JWTs signed by `openssl dgst`
//! with a throw-away key, its self-signed certificate in the JWT header's `x5c` and in the
//! registry's `rootcertbundle`. The registry verifies every token itself: nothing here
//! stands between the client and the registry.

use super::{free_port, sh, Registry};
use base64::Engine;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// The `service` the registry names in its challenge and expects as the token audience.
pub const SERVICE: &str = "platter-test-registry";
/// The issuer the registry trusts.
const ISSUER: &str = "platter-test-token-issuer";

/// One request the token service answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The Basic credentials matched.
    pub authorized: bool,
    /// The `service` query parameter.
    pub service: Option<String>,
    /// The `scope` query parameters (`repository:NAME:ACTIONS`).
    pub scopes: Vec<String>,
}

/// A token service on 127.0.0.1; stops on drop.
pub struct TokenServer {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<TokenRequest>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// What the service needs to sign a token.
struct Signer {
    key: PathBuf,
    /// The certificate, base64 DER, for `x5c`.
    cert_b64: String,
    user: String,
    password: String,
    serial: AtomicU64,
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

impl Signer {
    /// A JWT granting what `scopes` ask for (the registry checks each request against it).
    fn token(&self, scopes: &[String]) -> String {
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                // repository:NAME:ACTIONS; NAME may hold ':' only with a port, which a
                // repository name cannot, so split at the first and the last colon.
                let (kind, rest) = s.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                Some(serde_json::json!({
                    "type": kind,
                    "name": name,
                    "actions": actions.split(',').collect::<Vec<_>>(),
                }))
            })
            .collect();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.cert_b64]});
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": self.user,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("t{}", self.serial.fetch_add(1, Ordering::Relaxed)),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        // RS256 is SHA-256 with PKCS#1 v1.5: exactly what `openssl dgst -sign` writes.
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-binary", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "openssl dgst -sign failed");
        format!("{input}.{}", b64url(&out.stdout))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve(conn: TcpStream, signer: &Signer, log: &Mutex<Vec<TokenRequest>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut scopes = Vec::new();
    let mut service = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "scope" => scopes.extend(percent_decode(v).split(' ').map(str::to_string)),
            "service" => service = Some(percent_decode(v)),
            _ => {}
        }
    }
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", signer.user, signer.password))
    );
    let authorized = headers.get("authorization") == Some(&want);
    log.lock().unwrap().push(TokenRequest {
        authorized,
        service: service.clone(),
        scopes: scopes.clone(),
    });
    let (status, body) = if path != "/token" {
        (
            "404 Not Found",
            "{\"details\":\"no such endpoint\"}".to_string(),
        )
    } else if !authorized || service.as_deref() != Some(SERVICE) {
        (
            "401 Unauthorized",
            "{\"details\":\"invalid username or password\"}".to_string(),
        )
    } else {
        let t = signer.token(&scopes);
        (
            "200 OK",
            serde_json::json!({"token": t, "access_token": t, "expires_in": 300}).to_string(),
        )
    };
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

/// Starts a token service accepting `user`/`password` and a docker-registry that trusts
/// only its tokens (plain HTTP on loopback). Returns both; each stops on drop.
pub fn start_token_registry(user: &str, password: &str) -> (Registry, TokenServer) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(&format!(
        "cd {d} && openssl req -x509 -newkey rsa:2048 -nodes -keyout token.key -out token.crt \
         -days 2 -subj /CN=platter-test-token-signer 2>/dev/null",
        d = d.display()
    ));
    let cert_b64 = cert_der_b64(&d.join("token.crt"));
    let signer = Arc::new(Signer {
        key: d.join("token.key"),
        cert_b64,
        user: user.to_string(),
        password: password.to_string(),
        serial: AtomicU64::new(1),
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tport = listener.local_addr().unwrap().port();
    let requests: Arc<Mutex<Vec<TokenRequest>>> = Arc::default();
    let stop: Arc<AtomicBool> = Arc::default();
    {
        let (requests, stop) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (signer, requests) = (signer.clone(), requests.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &signer, &requests);
                });
            }
        });
    }

    let auth = format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{tport}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {d}/token.crt\n",
        d = d.display()
    );
    (
        Registry::launch(dir, "", &auth, None),
        TokenServer {
            port: tport,
            requests,
            stop,
        },
    )
}

/// The base64 body of a PEM certificate is the DER in standard base64: what `x5c` holds.
fn cert_der_b64(pem: &Path) -> String {
    std::fs::read_to_string(pem)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect()
}
