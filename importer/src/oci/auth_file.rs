//! The containers/docker `auth.json` format (`--authfile`): `{"auths": {KEY: {"auth":
//! base64(USER:PASS)}}}` where KEY is `host[:port]`, `host[:port]/repo/path` or a URL.
//!
//! Pure: parses bytes and looks credentials up; never reads the file itself, never logs
//! secrets (the Debug of [`Credentials`] hides them).

use crate::options::Credentials;
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeMap;

/// auth.json files larger than this are refused.
pub const MAX_AUTH_FILE_LEN: usize = 1 << 20;

/// Why an auth file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFileError {
    #[error("auth file is {0} bytes, more than 1 MiB")]
    TooLarge(usize),
    #[error("auth file is not valid JSON: {0}")]
    Json(String),
    #[error("auth file entry {key:?}: {reason}")]
    Entry { key: String, reason: &'static str },
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// A parsed auth file.
#[derive(Debug, Default, Clone)]
pub struct AuthFile {
    entries: Vec<(String, Credentials)>,
}

impl AuthFile {
    pub fn parse(bytes: &[u8]) -> Result<AuthFile, AuthFileError> {
        if bytes.len() > MAX_AUTH_FILE_LEN {
            return Err(AuthFileError::TooLarge(bytes.len()));
        }
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| AuthFileError::Json(e.to_string()))?;
        if !v.is_object() {
            return Err(AuthFileError::Json("the top level is not an object".into()));
        }
        let f: File = serde_json::from_value(v).map_err(|e| AuthFileError::Json(e.to_string()))?;
        let mut entries = Vec::new();
        for (key, e) in f.auths {
            let err = |reason| AuthFileError::Entry {
                key: key.chars().take(200).collect(),
                reason,
            };
            let creds = if let Some(token) = e.identitytoken.filter(|t| !t.is_empty()) {
                Credentials::Bearer(token)
            } else if let Some(auth) = e.auth.filter(|a| !a.is_empty()) {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| err("\"auth\" is not base64"))?;
                let s = String::from_utf8(raw).map_err(|_| err("\"auth\" is not UTF-8"))?;
                let (u, p) = s
                    .split_once(':')
                    .ok_or_else(|| err("\"auth\" is not USER:PASSWORD"))?;
                Credentials::Basic {
                    username: u.to_string(),
                    password: p.to_string(),
                }
            } else if let (Some(u), Some(p)) = (e.username, e.password) {
                Credentials::Basic {
                    username: u,
                    password: p,
                }
            } else {
                continue;
            };
            entries.push((normalize_key(&key), creds));
        }
        Ok(AuthFile { entries })
    }

    /// Credentials for `registry` (`host[:port]`) and `repository`: the most specific key
    /// wins (`host/ns/repo` over `host/ns` over `host`), as in containers-auth.json(5).
    pub fn lookup(&self, registry: &str, repository: &str) -> Option<&Credentials> {
        let full = format!("{registry}/{repository}");
        let mut best: Option<(usize, &Credentials)> = None;
        for (key, creds) in &self.entries {
            let matches = key == registry
                || (full.starts_with(key.as_str())
                    && full.as_bytes().get(key.len()) == Some(&b'/'))
                || key == &full;
            // Docker Hub's legacy key.
            let hub = key == "index.docker.io/v1" && registry == "docker.io";
            if (matches || hub) && best.is_none_or(|(l, _)| key.len() > l) {
                best = Some((key.len(), creds));
            }
        }
        best.map(|(_, c)| c)
    }
}

/// `https://host:port/v1/` -> `host:port/v1`; `host/` -> `host`.
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn looks_up_most_specific() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let json = format!(
            r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{}"}},"127.0.0.1:5000/team/vm":{{"auth":"{}"}},"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#,
            b64("a:1"),
            b64("b:2"),
            b64("c:3")
        );
        let f = AuthFile::parse(json.as_bytes()).unwrap();
        let user = |c: Option<&Credentials>| match c {
            Some(Credentials::Basic { username, .. }) => username.clone(),
            _ => String::new(),
        };
        assert_eq!(user(f.lookup("127.0.0.1:5000", "other")), "a");
        assert_eq!(user(f.lookup("127.0.0.1:5000", "team/vm")), "b");
        assert_eq!(user(f.lookup("127.0.0.1:5000", "team/vmx")), "a");
        assert_eq!(user(f.lookup("docker.io", "library/busybox")), "c");
        assert!(f.lookup("127.0.0.1:5001", "x").is_none());
    }

    #[test]
    fn refuses_bad_entries() {
        assert!(AuthFile::parse(br#"{"auths":{"x":{"auth":"!!!"}}}"#).is_err());
        assert!(AuthFile::parse(br#"{"auths":{"x":{"auth":"bm9jb2xvbg=="}}}"#).is_err());
        assert!(AuthFile::parse(b"[]").is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = AuthFile::parse(&bytes);
        }

        #[test]
        fn parser_never_panics_on_json_like(key in ".{0,20}", auth in "[A-Za-z0-9+/=:]{0,40}") {
            let json = serde_json::json!({"auths": {key: {"auth": auth}}}).to_string();
            if let Ok(f) = AuthFile::parse(json.as_bytes()) {
                let _ = f.lookup("127.0.0.1:5000", "a/b");
            }
        }
    }
}
