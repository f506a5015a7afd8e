//! Talking to an OCI registry (`docker://`) through oci-client: choosing HTTPS or plain
//! HTTP (plain only for localhost/127.0.0.0/8 or with `--tls-verify=false`, as Docker
//! does), credentials from `--creds` or `--authfile`, manifests resolved by platform,
//! blobs streamed with resume, and — for push — a streamed chunked blob upload. With
//! credentials, the login (Basic, or a Bearer token fetched from the registry's token
//! service) happens before the first request, so a refused login says so.
//!
//! Digests are never trusted from the registry: callers verify every byte they read.

use crate::error::ImportError;
use crate::oci::auth_file::AuthFile;
use crate::oci::manifest::{
    parse_manifest, select_platform, Descriptor, ImageManifest, ManifestDoc, DOCKER_LIST,
    DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};
use crate::oci::pull::BlobSource;
use crate::options::{CancelFlag, Credentials, Platform, RegistryOptions};
use crate::progress::Throttle;
use crate::source::bridge::{self, BridgeReader, Item};
use crate::source::tls::{ca_files, is_pem, reqwest_certs};
use futures_util::StreamExt;
use oci_client::client::{
    BlobResponse, Certificate, CertificateEncoding, ClientConfig, ClientProtocol,
};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use std::io::Read;
use std::net::IpAddr;
use std::time::Duration;
use tokio::runtime::Handle;

/// An authenticated connection to one repository.
pub(crate) struct Registry {
    pub(crate) client: Client,
    pub(crate) reference: Reference,
    pub(crate) auth: RegistryAuth,
    /// `https` or `http`.
    pub(crate) scheme: &'static str,
    /// The user-facing `docker://…` string.
    pub(crate) display: String,
    pub(crate) handle: Handle,
    pub(crate) http: reqwest::Client,
    pub(crate) opts: RegistryOptions,
    /// Set by a cancelled import: blob downloads waiting on a silent registry give up.
    pub(crate) cancel: CancelFlag,
}

/// Whether plain HTTP may be tried for `registry` (`host[:port]`): only on loopback, as
/// Docker allows, or when the user turned verification off (`--tls-verify=false`).
/// Everywhere else [`choose_scheme`] never sends a plain-HTTP request.
pub(crate) fn plain_http_allowed(registry: &str, tls_verify: bool) -> bool {
    !tls_verify || is_local_registry(registry)
}

/// Whether `host[:port]` is loopback (where Docker allows plain HTTP without flags).
pub(crate) fn is_local_registry(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                registry
            }
        })
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn reg_err(display: &str, e: impl std::fmt::Display) -> ImportError {
    ImportError::Registry {
        reference: display.to_string(),
        detail: e.to_string(),
    }
}

/// An oci-client error, with a hint when the registry refused a request for want of
/// (valid) credentials.
fn client_err(display: &str, auth: &RegistryAuth, e: &OciDistributionError) -> ImportError {
    let mut detail = chain_err(e);
    if matches!(e, OciDistributionError::UnauthorizedError { .. }) {
        detail.push_str(match auth {
            RegistryAuth::Anonymous => "; no credentials were given (--creds or --authfile)",
            _ => "; the registry refused the credentials given",
        });
    }
    reg_err(display, detail)
}

fn chain_err(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

impl Registry {
    /// Parses `HOST[:PORT]/REPO[:TAG|@DIGEST]`, finds credentials, picks the scheme.
    pub(crate) fn connect(
        reference: &str,
        opts: &RegistryOptions,
        platform: Option<&Platform>,
        handle: Handle,
    ) -> Result<Registry, ImportError> {
        let display = format!("docker://{reference}");
        let parsed: Reference = reference.parse().map_err(|e| ImportError::InvalidSource {
            source_str: display.clone(),
            reason: format!("not a registry reference: {e}"),
        })?;
        let registry = parsed.resolve_registry().to_string();
        let creds = match (&opts.creds, &opts.auth) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(f)) => f.lookup(parsed.registry(), parsed.repository()).cloned(),
            (None, None) => match &opts.authfile {
                Some(path) => {
                    let bytes = std::fs::read(path).map_err(|e| ImportError::AuthFile {
                        path: path.display().to_string(),
                        detail: e.to_string(),
                    })?;
                    let f = AuthFile::parse(&bytes).map_err(|e| ImportError::AuthFile {
                        path: path.display().to_string(),
                        detail: e.to_string(),
                    })?;
                    f.lookup(parsed.registry(), parsed.repository()).cloned()
                }
                None => None,
            },
        };
        let auth = match creds {
            Some(Credentials::Basic { username, password }) => {
                RegistryAuth::Basic(username, password)
            }
            Some(Credentials::Bearer(t)) => RegistryAuth::Bearer(t),
            None => RegistryAuth::Anonymous,
        };
        let mut hb = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            .danger_accept_invalid_certs(!opts.tls.verify)
            .user_agent(concat!("platter/", env!("CARGO_PKG_VERSION")));
        // Read once: reqwest (for the scheme probe) and oci-client each take them.
        let ca = ca_files(&opts.tls)?;
        for c in reqwest_certs(&ca)? {
            hb = hb.add_root_certificate(c);
        }
        let http = hb.build().map_err(|e| reg_err(&display, chain_err(&e)))?;
        let scheme = handle.block_on(choose_scheme(
            &http,
            &registry,
            plain_http_allowed(&registry, opts.tls.verify),
            &display,
        ))?;
        let platform = platform.cloned().unwrap_or_default();
        let config = ClientConfig {
            protocol: if scheme == "https" {
                ClientProtocol::Https
            } else {
                ClientProtocol::Http
            },
            accept_invalid_certificates: !opts.tls.verify,
            extra_root_certificates: ca
                .into_iter()
                .map(|(_, data)| Certificate {
                    encoding: if is_pem(&data) {
                        CertificateEncoding::Pem
                    } else {
                        CertificateEncoding::Der
                    },
                    data,
                })
                .collect(),
            platform_resolver: Some(Box::new(move |entries| {
                entries
                    .iter()
                    .find(|e| {
                        e.platform.as_ref().is_some_and(|p| {
                            p.os.to_string().as_str() == platform.os.as_str()
                                && p.architecture.to_string().as_str()
                                    == platform.architecture.as_str()
                        })
                    })
                    .map(|e| e.digest.clone())
            })),
            read_timeout: Some(opts.read_timeout),
            connect_timeout: Some(opts.connect_timeout),
            ..Default::default()
        };
        Ok(Registry {
            client: Client::new(config),
            reference: parsed,
            auth,
            scheme,
            display,
            handle,
            http,
            opts: opts.clone(),
            cancel: CancelFlag::new(),
        })
    }

    /// Blob streams stop waiting for a silent registry once `cancel` is set.
    pub(crate) fn with_cancel(mut self, cancel: CancelFlag) -> Self {
        self.cancel = cancel;
        self
    }

    /// Fetches the image manifest, resolving an index by `platform`. Returns it with its
    /// digest (verified by oci-client against a pinned `@digest`).
    pub(crate) fn manifest(
        &self,
        platform: &Platform,
    ) -> Result<(ImageManifest, String), ImportError> {
        let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
        self.login(RegistryOperation::Pull)?;
        let (bytes, digest) = self
            .handle
            .block_on(
                self.client
                    .pull_manifest_raw(&self.reference, &self.auth, &accept),
            )
            .map_err(|e| self.manifest_err(&self.reference, &e))?;
        let doc = parse_manifest(&bytes, None).map_err(|source| ImportError::Manifest {
            what: format!("{} manifest", self.display),
            source,
        })?;
        match doc {
            ManifestDoc::Image(m) => Ok((m, digest)),
            ManifestDoc::Index(idx) => {
                let d = select_platform(&idx, platform).ok_or_else(|| ImportError::NoDisk {
                    what: self.display.clone(),
                    detail: format!("the image index has no {platform} manifest"),
                })?;
                let by_digest = self.reference.clone_with_digest(d.digest.clone());
                let (bytes, digest) = self
                    .handle
                    .block_on(
                        self.client
                            .pull_manifest_raw(&by_digest, &self.auth, &accept),
                    )
                    .map_err(|e| self.manifest_err(&by_digest, &e))?;
                if digest != d.digest {
                    return Err(ImportError::ChecksumMismatch {
                        what: format!("{} manifest for {platform}", self.display),
                        expected: d.digest.clone(),
                        actual: digest,
                    });
                }
                match parse_manifest(&bytes, Some(&d.media_type)).map_err(|source| {
                    ImportError::Manifest {
                        what: format!("{} manifest for {platform}", self.display),
                        source,
                    }
                })? {
                    ManifestDoc::Image(m) => Ok((m, digest)),
                    ManifestDoc::Index(_) => Err(reg_err(&self.display, "nested image index")),
                }
            }
        }
    }

    /// A failed manifest request for `reference`: a missing repository, tag or digest is
    /// said as such (as skopeo does), naming it; anything else as the registry said it.
    fn manifest_err(&self, reference: &Reference, e: &OciDistributionError) -> ImportError {
        let codes: Vec<&OciErrorCode> = match e {
            OciDistributionError::RegistryError { envelope, .. } => {
                envelope.errors.iter().map(|x| &x.code).collect()
            }
            OciDistributionError::ServerError { code: 404, .. } => vec![&OciErrorCode::NotFound],
            _ => return client_err(&self.display, &self.auth, e),
        };
        let has = |c: OciErrorCode| codes.contains(&&c);
        let manifest_missing = has(OciErrorCode::ManifestUnknown) || has(OciErrorCode::NotFound);
        if !manifest_missing && !has(OciErrorCode::NameUnknown) {
            return client_err(&self.display, &self.auth, e);
        }
        // docker-registry answers MANIFEST_UNKNOWN for a repository it has never heard of
        // too; its tag list tells the two apart (asked only on this error path).
        if has(OciErrorCode::NameUnknown) || self.repository_missing() {
            return ImportError::NotInRegistry {
                what: format!("repository {}", reference.repository()),
                place: format!("registry {}", reference.registry()),
            };
        }
        let what = match (reference.digest(), reference.tag()) {
            (Some(d), _) => format!("manifest {d}"),
            (None, Some(t)) => format!("tag {t}"),
            (None, None) => "tag latest".to_string(),
        };
        ImportError::NotInRegistry {
            what,
            place: format!("{}/{}", reference.registry(), reference.repository()),
        }
    }

    /// Whether the registry says the repository does not exist (`NAME_UNKNOWN` for its
    /// tag list). Any other answer, success or failure, is taken as "it exists".
    fn repository_missing(&self) -> bool {
        let r =
            self.handle.block_on(
                self.client
                    .list_tags(&self.reference, &self.auth, Some(1), None),
            );
        match r {
            Err(OciDistributionError::RegistryError { envelope, .. }) => envelope
                .errors
                .iter()
                .any(|x| x.code == OciErrorCode::NameUnknown),
            _ => false,
        }
    }

    /// Logs in for `op` when credentials were given: with a Bearer token service, fetches
    /// the token with them (oci-client caches it for the requests that follow). Done up
    /// front because oci-client's own fetch before each request drops a refusal, which
    /// then surfaces as a bare "Not authorized" instead of the token service's answer.
    fn login(&self, op: RegistryOperation) -> Result<Option<String>, ImportError> {
        if matches!(self.auth, RegistryAuth::Anonymous) {
            return Ok(None);
        }
        self.handle
            .block_on(self.client.auth(&self.reference, &self.auth, op))
            .map_err(|e| {
                let what = match op {
                    RegistryOperation::Pull => "pull",
                    RegistryOperation::Push => "push",
                };
                reg_err(
                    &self.display,
                    format!("logging in to {what}: {}", chain_err(&e)),
                )
            })
    }

    /// The `Authorization` header value for direct requests (chunked upload).
    pub(crate) fn auth_header(&self, op: RegistryOperation) -> Result<Option<String>, ImportError> {
        use base64::Engine;
        let token = match &self.auth {
            RegistryAuth::Anonymous => self
                .handle
                .block_on(self.client.auth(&self.reference, &self.auth, op))
                .map_err(|e| client_err(&self.display, &self.auth, &e))?,
            _ => self.login(op)?,
        };
        Ok(match (token, &self.auth) {
            (Some(t), _) => Some(format!("Bearer {t}")),
            (None, RegistryAuth::Basic(u, p)) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )),
            (None, RegistryAuth::Bearer(t)) => Some(format!("Bearer {t}")),
            (None, RegistryAuth::Anonymous) => None,
        })
    }

    /// `SCHEME://REGISTRY/v2/REPO`.
    pub(crate) fn repo_url(&self) -> String {
        format!(
            "{}://{}/v2/{}",
            self.scheme,
            self.reference.resolve_registry(),
            self.reference.repository()
        )
    }
}

/// HTTPS unless `allow_http` and the registry only speaks plain HTTP. A TLS failure is
/// reported as such (never silently downgraded on a verified registry).
async fn choose_scheme(
    http: &reqwest::Client,
    registry: &str,
    allow_http: bool,
    display: &str,
) -> Result<&'static str, ImportError> {
    if !allow_http {
        return Ok("https");
    }
    let https_err = match http.get(format!("https://{registry}/v2/")).send().await {
        Ok(_) => return Ok("https"),
        Err(e) => chain_err(&e),
    };
    match http.get(format!("http://{registry}/v2/")).send().await {
        Ok(r) if r.status().is_success() || r.status().as_u16() == 401 => Ok("http"),
        Ok(r) => Err(reg_err(
            display,
            format!(
                "HTTPS failed ({https_err}); plain HTTP answered {}",
                r.status()
            ),
        )),
        Err(_) => Err(reg_err(display, https_err)),
    }
}

impl BlobSource for Registry {
    fn name(&self) -> String {
        self.display.clone()
    }

    fn open_blob<'a>(
        &'a self,
        desc: &Descriptor,
        progress: &'a Throttle<'a>,
    ) -> Result<Box<dyn Read + Send + 'a>, ImportError> {
        let (tx, rx) = bridge::channel();
        let client = self.client.clone();
        let reference = self.reference.clone();
        let digest = desc.digest.clone();
        let display = self.display.clone();
        let retries = self.opts.retries;
        let delay = self.opts.retry_delay;
        self.handle.spawn(async move {
            pump_blob(client, reference, digest, display, retries, delay, tx).await;
        });
        Ok(Box::new(
            BridgeReader::new(rx, Some(progress))
                .with_cancel(self.handle.clone(), self.cancel.clone()),
        ))
    }
}

/// Streams a blob; after an interruption continues with a partial (Range) request.
async fn pump_blob(
    client: Client,
    reference: Reference,
    digest: String,
    display: String,
    retries: u32,
    delay: Duration,
    tx: tokio::sync::mpsc::Sender<Item>,
) {
    let mut pos = 0u64;
    let mut failures = 0u32;
    let mut skip = 0u64;
    loop {
        let stream = if pos == 0 {
            client
                .pull_blob_stream(&reference, digest.as_str())
                .await
                .map(|s| (s, false))
        } else {
            match client
                .pull_blob_stream_partial(&reference, digest.as_str(), pos, None)
                .await
            {
                Ok(BlobResponse::Partial(s)) => Ok((s, false)),
                Ok(BlobResponse::Full(s)) => Ok((s, true)),
                Err(e) => Err(e),
            }
        };
        let err = match stream {
            Ok((mut s, restarted)) => {
                if restarted {
                    skip = pos;
                }
                let mut err = None;
                while let Some(item) = s.stream.next().await {
                    match item {
                        Ok(mut b) => {
                            failures = 0;
                            if skip > 0 {
                                let k = skip.min(b.len() as u64) as usize;
                                let _ = b.split_to(k);
                                skip -= k as u64;
                                if b.is_empty() {
                                    continue;
                                }
                            }
                            pos += b.len() as u64;
                            if tx.send(Item::Data(b)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            err = Some(e.to_string());
                            break;
                        }
                    }
                }
                match err {
                    None => return,
                    Some(e) => e,
                }
            }
            Err(e) => chain_err(&e),
        };
        failures += 1;
        // A digest verification failure at the end of a full stream is final.
        if failures > retries || err.contains("digest") {
            let _ = tx
                .send(Item::Failed(ImportError::Registry {
                    reference: display,
                    detail: format!("blob {digest}: {err}"),
                }))
                .await;
            return;
        }
        let note = format!("{display}: blob {digest} interrupted at byte {pos} ({err}); resuming");
        if tx.send(Item::Note(note)).await.is_err() {
            return;
        }
        tokio::time::sleep(delay.saturating_mul(1 << (failures - 1).min(5))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn local_registries() {
        assert!(is_local_registry("localhost:5000"));
        assert!(is_local_registry("127.0.0.1:5000"));
        assert!(is_local_registry("127.1.2.3"));
        assert!(is_local_registry("[::1]:5000"));
        assert!(!is_local_registry("registry.example.com:5000"));
        assert!(!is_local_registry("10.0.0.1:5000"));
    }

    #[test]
    fn plain_http_only_on_loopback_unless_verification_is_off() {
        for local in [
            "127.0.0.5",
            "127.0.0.5:5000",
            "127.255.255.254:1",
            "localhost",
            "LocalHost:5000",
            "[::1]",
            "[::1]:5000",
        ] {
            assert!(plain_http_allowed(local, true), "{local}");
        }
        for remote in [
            "10.0.0.1",
            "10.0.0.1:5000",
            "example.com",
            "example.com:5000",
            "localhost.example.com",
            "127.0.0.1.example.com:5000",
            "128.0.0.1",
            "0.0.0.0:5000",
            "[::ffff:10.0.0.1]:5000",
            "[fe80::1]:5000",
            "[::]",
        ] {
            assert!(!plain_http_allowed(remote, true), "{remote}");
            // --tls-verify=false is the user's explicit opt-in, as in skopeo.
            assert!(plain_http_allowed(remote, false), "{remote}");
        }
    }

    /// A plain-HTTP server on 127.0.0.1 that answers 200 to everything and counts the
    /// connections made to it.
    fn counting_http_server() -> (String, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                n2.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                );
            }
        });
        (addr, n)
    }

    #[test]
    fn choose_scheme_sends_nothing_unless_plain_http_is_allowed() {
        let handle = crate::runtime::handle().unwrap();
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let (addr, conns) = counting_http_server();
        // Not allowed: HTTPS without probing, so not even a TLS hello reaches the server.
        let s = handle
            .block_on(choose_scheme(&http, &addr, false, "test"))
            .unwrap();
        assert_eq!(s, "https");
        assert_eq!(conns.load(Ordering::SeqCst), 0);
        // Allowed: HTTPS is tried first, then plain HTTP is taken as the server speaks it.
        let s = handle
            .block_on(choose_scheme(&http, &addr, true, "test"))
            .unwrap();
        assert_eq!(s, "http");
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }
}
