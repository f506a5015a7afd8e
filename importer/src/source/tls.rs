//! `--cert-dir`: extra CA certificates (every `*.crt` and `*.pem` in the directory, as
//! containers' certs.d uses them), and certificates given in memory (a DataVolume's
//! certConfigMap), for HTTPS sources and registries.
//!
//! Reads only the named directory; never installs anything system-wide.

use crate::error::ImportError;
use crate::options::TlsOptions;
use std::path::Path;

/// Certificates larger than this are refused (a CA bundle is a few hundred KiB).
const MAX_CERT_FILE: u64 = 4 << 20;

/// PEM (or DER) contents of the CA files in `dir`, sorted by file name.
pub(crate) fn load_cert_dir(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, ImportError> {
    let what = || format!("reading certificate directory {}", dir.display());
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| ImportError::io(what(), e))?;
    let mut paths: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext != "crt" && ext != "pem" {
            continue;
        }
        let md = std::fs::metadata(&p).map_err(|e| ImportError::io(what(), e))?;
        if md.len() > MAX_CERT_FILE {
            return Err(ImportError::TooLarge {
                what: p.display().to_string(),
                limit: MAX_CERT_FILE,
                why: "certificate files are small".into(),
            });
        }
        let data = std::fs::read(&p)
            .map_err(|e| ImportError::io(format!("reading {}", p.display()), e))?;
        out.push((p.display().to_string(), data));
    }
    Ok(out)
}

/// Every extra CA certificate file `tls` names: the `cert_dir` files, then `extra_certs`.
pub(crate) fn ca_files(tls: &TlsOptions) -> Result<Vec<(String, Vec<u8>)>, ImportError> {
    let mut files = match &tls.cert_dir {
        Some(dir) => load_cert_dir(dir)?,
        None => Vec::new(),
    };
    files.extend(tls.extra_certs.iter().cloned());
    Ok(files)
}

/// PEM (a bundle of one or more certificates), else DER.
pub(crate) fn is_pem(data: &[u8]) -> bool {
    data.starts_with(b"-----") || data.windows(11).any(|w| w == b"-----BEGIN ")
}

/// The certificates of one CA file: a PEM bundle of one or more, else one DER
/// certificate. The reason, when it holds none the importer can use.
fn parse_certs(data: &[u8]) -> Result<Vec<reqwest::Certificate>, String> {
    let unusable = |e: reqwest::Error| format!("not a usable CA certificate: {e}");
    if !is_pem(data) {
        return Ok(vec![reqwest::Certificate::from_der(data).map_err(unusable)?]);
    }
    let certs = reqwest::Certificate::from_pem_bundle(data).map_err(unusable)?;
    match certs.is_empty() {
        true => Err("holds no PEM certificate".into()),
        false => Ok(certs),
    }
}

/// `files` (from [`ca_files`]) as reqwest root certificates.
pub(crate) fn reqwest_certs(
    files: &[(String, Vec<u8>)],
) -> Result<Vec<reqwest::Certificate>, ImportError> {
    let mut out = Vec::new();
    for (name, data) in files {
        let certs = parse_certs(data).map_err(|reason| ImportError::InvalidSource {
            source_str: name.clone(),
            reason,
        })?;
        out.extend(certs);
    }
    Ok(out)
}

/// Whether `data` is PEM holding one or more CA certificates the importer can read: what
/// a DataVolume's certConfigMap (PEM, as CDI takes it) is checked with before an import
/// uses it. The reason, when not.
pub fn check_ca_certificate(data: &[u8]) -> Result<(), String> {
    if !is_pem(data) {
        return Err("not a PEM certificate (no -----BEGIN CERTIFICATE----- block)".into());
    }
    parse_certs(data).map(|_| ())
}
