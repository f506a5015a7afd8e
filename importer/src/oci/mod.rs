//! OCI images: manifest and index documents, `auth.json`, registries, layouts, and the
//! containerDisk rules for pulling a disk out of an image's layers.

pub mod auth_file;
pub mod files;
pub mod layout;
pub mod manifest;
pub(crate) mod pull;
pub(crate) mod registry;

/// A digest as people read it, as skopeo shortens them: `sha256:` and 12 hex digits
/// (errors and reports that need the whole digest give it in full).
pub(crate) fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algo, hex)) if hex.len() > 12 => format!("{algo}:{}", &hex[..12]),
        _ => digest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn digests_are_shortened_as_skopeo_does() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(super::short_digest(&d), "sha256:abababababab");
        assert_eq!(super::short_digest("sha256:abc"), "sha256:abc");
        assert_eq!(super::short_digest("nodigest"), "nodigest");
    }
}
