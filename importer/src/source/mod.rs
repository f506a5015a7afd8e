//! Import sources: parsing of the SOURCE argument and opening each kind — a local file,
//! standard input, HTTP(S) (streamed with resume, or read by Range), an OCI registry and
//! OCI layouts (directory or archive).
//!
//! A source yields bytes; it never decodes them and never writes anywhere.

pub(crate) mod bridge;
pub(crate) mod file;
pub(crate) mod http;
pub(crate) mod stdin;
pub(crate) mod tls;

use crate::error::ImportError;
use std::path::PathBuf;

/// A parsed SOURCE (or push DEST) argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A local path.
    File(PathBuf),
    /// `-`: standard input.
    Stdin,
    /// `http://…` or `https://…`.
    Http(String),
    /// `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]` (the text after `docker://`).
    Docker(String),
    /// `oci:DIR[:TAG]`.
    OciDir { dir: PathBuf, tag: Option<String> },
    /// `oci-archive:FILE[:TAG]`.
    OciArchive { file: PathBuf, tag: Option<String> },
}

impl SourceSpec {
    /// Parses a SOURCE as in the CLI contract; anything without a known prefix is a path.
    pub fn parse(s: &str) -> Result<SourceSpec, ImportError> {
        let bad = |reason: &str| ImportError::InvalidSource {
            source_str: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty source"));
        }
        if s == "-" {
            return Ok(SourceSpec::Stdin);
        }
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return Ok(SourceSpec::Http(s.to_string()));
        }
        if let Some(rest) = s.strip_prefix("docker://") {
            if rest.is_empty() {
                return Err(bad("docker:// needs HOST/REPO[:TAG]"));
            }
            return Ok(SourceSpec::Docker(rest.to_string()));
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (file, tag) = split_path_tag(rest).map_err(bad)?;
            return Ok(SourceSpec::OciArchive { file, tag });
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = split_path_tag(rest).map_err(bad)?;
            return Ok(SourceSpec::OciDir { dir, tag });
        }
        if let Some(rest) = s.strip_prefix("file://") {
            return Ok(SourceSpec::File(PathBuf::from(rest)));
        }
        Ok(SourceSpec::File(PathBuf::from(s)))
    }
}

/// `PATH[:TAG]` as skopeo's oci transports split it (the path holds no colon).
fn split_path_tag(s: &str) -> Result<(PathBuf, Option<String>), &'static str> {
    let (path, tag) = match s.split_once(':') {
        Some((p, t)) => (p, Some(t)),
        None => (s, None),
    };
    if path.is_empty() {
        return Err("missing path");
    }
    if let Some(t) = tag {
        if t.is_empty()
            || t.len() > 128
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err("invalid tag (expected [A-Za-z0-9._-]{1,128})");
        }
    }
    Ok((PathBuf::from(path), tag.map(str::to_string)))
}

/// Removes `user:pass@` from a URL for messages.
pub(crate) fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let host_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..host_end].rfind('@') {
            return format!("{scheme}://***@{}", &rest[at + 1..]);
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(SourceSpec::parse("-").unwrap(), SourceSpec::Stdin);
        assert_eq!(
            SourceSpec::parse("disk.qcow2").unwrap(),
            SourceSpec::File("disk.qcow2".into())
        );
        assert_eq!(
            SourceSpec::parse("https://x/y.img").unwrap(),
            SourceSpec::Http("https://x/y.img".into())
        );
        assert_eq!(
            SourceSpec::parse("docker://127.0.0.1:5000/vm:1").unwrap(),
            SourceSpec::Docker("127.0.0.1:5000/vm:1".into())
        );
        assert_eq!(
            SourceSpec::parse("oci:/tmp/lay:v1").unwrap(),
            SourceSpec::OciDir {
                dir: "/tmp/lay".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            SourceSpec::parse("oci-archive:/tmp/a.tar").unwrap(),
            SourceSpec::OciArchive {
                file: "/tmp/a.tar".into(),
                tag: None
            }
        );
        assert!(SourceSpec::parse("oci::x").is_err());
        assert!(SourceSpec::parse("oci:/d:bad/tag").is_err());
        assert!(SourceSpec::parse("").is_err());
    }

    #[test]
    fn redacts() {
        assert_eq!(redact_url("http://u:p@h:1/a@b"), "http://***@h:1/a@b");
        assert_eq!(redact_url("http://h/a"), "http://h/a");
    }
}
