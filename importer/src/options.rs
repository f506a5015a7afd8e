//! Options shared by import and push: credentials, TLS, platform, HTTP tuning, and the
//! import options struct the CLI fills from its flags.
//!
//! Pure data plus parsing of the flag syntaxes (`USER:PASS`, `linux/amd64`). Secrets are
//! never printed: `Debug` of [`Credentials`] redacts them.

use crate::checksum::Checksum;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `--creds`: HTTP basic credentials, or a bearer token.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic { username: String, password: String },
    Bearer(String),
}

impl Credentials {
    /// Parses `--creds USER:PASS`. An empty user (`:TOKEN`) means a bearer token.
    pub fn parse(s: &str) -> Result<Credentials, String> {
        let (u, p) = s.split_once(':').ok_or_else(|| {
            "credentials must be USER:PASSWORD (or :TOKEN for a bearer token)".to_string()
        })?;
        if u.is_empty() {
            if p.is_empty() {
                return Err("empty bearer token in credentials".into());
            }
            return Ok(Credentials::Bearer(p.to_string()));
        }
        Ok(Credentials::Basic {
            username: u.to_string(),
            password: p.to_string(),
        })
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}:***)"),
            Credentials::Bearer(_) => write!(f, "Bearer(***)"),
        }
    }
}

/// `--tls-verify` and `--cert-dir`.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// Verify certificates, and (outside localhost) refuse plain HTTP registries.
    pub verify: bool,
    /// Extra CA certificates: every `*.crt` / `*.pem` file in this directory.
    pub cert_dir: Option<PathBuf>,
    /// More CA certificates (PEM or DER), each with the name errors give it (e.g. a
    /// DataVolume's certConfigMap key).
    pub extra_certs: Vec<(String, Vec<u8>)>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            verify: true,
            cert_dir: None,
            extra_certs: Vec::new(),
        }
    }
}

/// `--platform OS/ARCH[/VARIANT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(format!(
                "invalid platform {s:?}: expected OS/ARCH[/VARIANT]"
            )),
        }
    }
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Registry and HTTP access: credentials, TLS and network tuning.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// `--creds`.
    pub creds: Option<Credentials>,
    /// `--authfile` (containers auth.json); consulted when `creds` is unset.
    pub authfile: Option<PathBuf>,
    /// An auth file's entries given in memory (a KubeVirt `imagePullSecret`); consulted
    /// when `creds` is unset, before `authfile`.
    pub auth: Option<crate::oci::auth_file::AuthFile>,
    pub tls: TlsOptions,
    /// How often a failed request or an interrupted download is retried.
    pub retries: u32,
    /// First retry delay; doubles each time up to 10 s.
    pub retry_delay: Duration,
    /// A download that delivers nothing for this long is treated as interrupted.
    pub read_timeout: Duration,
    pub connect_timeout: Duration,
    /// Headers sent with every request of an HTTP(S) source (not to registries).
    pub headers: Headers,
}

/// `Name: value` request headers; `Debug` shows the names only (values may be tokens).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// Parses `Name: value` lines ([`platter_types::parse_header`]).
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Result<Headers, String> {
        lines
            .iter()
            .map(|l| platter_types::parse_header(l.as_ref()))
            .collect::<Result<_, _>>()
            .map(Headers)
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| format!("{n}: ***")))
            .finish()
    }
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            creds: None,
            authfile: None,
            auth: None,
            tls: TlsOptions::default(),
            retries: 5,
            retry_delay: Duration::from_millis(500),
            read_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            headers: Headers::default(),
        }
    }
}

/// A disk format named by `--format` (None = detect by magic bytes).
pub use platter_formats::Format;

/// A flag the caller sets (e.g. on Ctrl-C, or when a control client goes away) to stop an
/// import or push; it then fails with [`ImportError::Cancelled`](crate::ImportError) and
/// leaves nothing behind (the sink is dropped unfinished, which removes what it wrote).
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn new() -> CancelFlag {
        CancelFlag::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything `platter import` takes besides SOURCE and the destination.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// `--format`; `None` detects.
    pub format: Option<Format>,
    /// `--checksum`: verified over the source bytes as downloaded.
    pub checksum: Option<Checksum>,
    /// `--size`: the disk size when the source does not say (raw streams), and the
    /// upper bound for decompressed data. A format's own virtual size wins; a larger
    /// `--size` grows the result.
    pub size: Option<u64>,
    pub registry: RegistryOptions,
    /// `--platform` for registry indexes (default linux/amd64).
    pub platform: Platform,
    /// Where spool files go when a random-access format arrives as a stream (default:
    /// the system temp dir). Spool files are unlinked at creation.
    pub temp_dir: Option<PathBuf>,
    pub cancel: CancelFlag,
    /// `--backing`: the image a qcow2 overlay's unallocated clusters read from (raw or
    /// qcow2, itself without a backing file), so the import yields the merged disk. An
    /// overlay imported without it is refused, naming its backing file.
    pub backing: Option<PathBuf>,
    /// What the source `-` reads: `None` is this process's standard input; a control
    /// server sets the file its client passed in its place (the client's stdin).
    pub stdin: Option<Arc<std::fs::File>>,
}
