//! Tar archives: the header codec, a forward-only reader, and the rules that pick the disk
//! out of an archive (an OVA / plain tarball, or a KubeVirt containerDisk layer).
//!
//! Nothing here extracts to a filesystem: entries are only ever streamed into the import
//! pipeline, and any entry that would land outside the tree makes the archive invalid.

pub mod header;
pub mod reader;
pub mod sparse;
#[cfg(test)]
pub(crate) mod testing;

pub use header::{EntryKind, SafePath};
pub use reader::{TarEntry, TarError, TarInput, TarReader};

/// File extensions in an OVA or tarball that are never the disk.
const NOT_DISK_EXTENSIONS: &[&str] = &[
    "ovf", "mf", "cert", "crt", "xml", "txt", "json", "nvram", "sha1", "sha256", "sha512", "md5",
    "sig", "asc", "md", "yaml", "yml", "pem",
];

/// Whether a tarball entry may be the disk: a regular file that is not a descriptor,
/// manifest or certificate (OVA keeps those next to the disk).
pub fn is_disk_candidate(entry: &TarEntry) -> bool {
    entry.kind == EntryKind::Regular && has_disk_name(&entry.path)
}

/// Whether a name may be a disk's (not hidden, a whiteout, or a descriptor's).
fn has_disk_name(path: &SafePath) -> bool {
    let name = path.file_name().to_ascii_lowercase();
    if name.starts_with(".wh.") || name.starts_with('.') {
        return false;
    }
    match name.rsplit_once('.') {
        Some((_, ext)) => !NOT_DISK_EXTENSIONS.contains(&ext),
        None => true,
    }
}

/// Walks an OVA or plain tarball to its disk: the first [`is_disk_candidate`] entry, with
/// its data checked to lie within the archive's `len` bytes when that is known. The one
/// walk for both the streamed and the seekable archive. A GNU sparse member that would
/// have been the disk is refused: its stored bytes are not the disk's.
pub fn next_disk_member<R: TarInput>(
    tar: &mut TarReader<R>,
    len: Option<u64>,
) -> Result<Option<TarEntry>, TarError> {
    while let Some(entry) = tar.next_entry()? {
        if entry.kind == EntryKind::Sparse && has_disk_name(&entry.path) {
            return Err(TarError::Sparse {
                path: entry.path.to_string(),
            });
        }
        if !is_disk_candidate(&entry) {
            continue;
        }
        if let Some(len) = len {
            entry.check_within(len)?;
        }
        return Ok(Some(entry));
    }
    Ok(None)
}

/// What a layer entry is under the OCI whiteout rules: the one statement of them, used by
/// the walk for `disk/` ([`classify_layer_entry`]) and for boot files (`oci::files`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// `dir/.wh.NAME`: hides `dir/NAME` below this layer.
    Whiteout(Vec<String>),
    /// `dir/.wh..wh..opq`: hides the lower content of `dir`.
    Opaque(Vec<String>),
    /// An ordinary entry at this path.
    Entry(Vec<String>),
}

impl Marker {
    pub fn of(path: &[String]) -> Marker {
        let Some((last, dir)) = path.split_last() else {
            return Marker::Entry(Vec::new());
        };
        if last == ".wh..wh..opq" {
            return Marker::Opaque(dir.to_vec());
        }
        match last.strip_prefix(".wh.") {
            Some(hidden) => {
                let mut p = dir.to_vec();
                p.push(hidden.to_string());
                Marker::Whiteout(p)
            }
            None => Marker::Entry(path.to_vec()),
        }
    }
}

/// How a containerDisk layer entry relates to `disk/` (KubeVirt reads the single entry of
/// the merged `/disk` directory; several entries are an error there, and so here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerEntry {
    /// Outside `disk/`, or `disk/` itself.
    Unrelated,
    /// A direct child of `disk/` with this name (file, directory or link).
    DiskChild(String),
    /// A whiteout hiding `disk/NAME` of lower layers.
    Whiteout(String),
    /// An opaque whiteout: lower layers' `disk/` content is hidden.
    Opaque,
    /// A whiteout of `disk` itself: everything below is hidden.
    WhiteoutDiskDir,
}

/// Classifies a layer entry for the containerDisk rules, from its [`Marker`].
pub fn classify_layer_entry(path: &SafePath) -> LayerEntry {
    let in_disk = |p: &[String]| p.len() >= 2 && p[0] == "disk";
    match Marker::of(path.components()) {
        // An opaque root hides lower layers' `disk/` as much as an opaque `disk/` does.
        Marker::Opaque(dir) if dir.is_empty() || dir == ["disk"] => LayerEntry::Opaque,
        Marker::Whiteout(p) if p == ["disk"] => LayerEntry::WhiteoutDiskDir,
        Marker::Whiteout(p) if p.len() == 2 && in_disk(&p) => LayerEntry::Whiteout(p[1].clone()),
        // Anything deeper is part of the child `disk/NAME` (which then is a directory).
        Marker::Whiteout(p) | Marker::Opaque(p) | Marker::Entry(p) if in_disk(&p) => {
            LayerEntry::DiskChild(p[1].clone())
        }
        _ => LayerEntry::Unrelated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, kind: EntryKind) -> TarEntry {
        TarEntry {
            path: SafePath::parse(path.as_bytes()).unwrap(),
            kind,
            size: 1,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            stored_size: 1,
            sparse: None,
            link_target: None,
            data_offset: 0,
        }
    }

    #[test]
    fn picks_disks() {
        assert!(!is_disk_candidate(&e("vm.ovf", EntryKind::Regular)));
        assert!(!is_disk_candidate(&e("vm.mf", EntryKind::Regular)));
        assert!(is_disk_candidate(&e("vm-disk1.vmdk", EntryKind::Regular)));
        assert!(is_disk_candidate(&e("disk.img", EntryKind::Regular)));
        assert!(!is_disk_candidate(&e("disk.img", EntryKind::Symlink)));
    }

    #[test]
    fn classifies_layers() {
        let p = |s: &str| SafePath::parse(s.as_bytes()).unwrap();
        assert_eq!(classify_layer_entry(&p("disk")), LayerEntry::Unrelated);
        assert_eq!(
            classify_layer_entry(&p("disk/disk.img")),
            LayerEntry::DiskChild("disk.img".into())
        );
        assert_eq!(
            classify_layer_entry(&p("disk/.wh.old.qcow2")),
            LayerEntry::Whiteout("old.qcow2".into())
        );
        assert_eq!(
            classify_layer_entry(&p("disk/.wh..wh..opq")),
            LayerEntry::Opaque
        );
        assert_eq!(classify_layer_entry(&p(".wh..wh..opq")), LayerEntry::Opaque);
        assert_eq!(
            classify_layer_entry(&p("disk/sub/.wh.x")),
            LayerEntry::DiskChild("sub".into())
        );
        assert_eq!(
            classify_layer_entry(&p(".wh.disk")),
            LayerEntry::WhiteoutDiskDir
        );
        assert_eq!(
            classify_layer_entry(&p("etc/passwd")),
            LayerEntry::Unrelated
        );
    }
}
