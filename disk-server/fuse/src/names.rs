//! File names of the mount and the inode numbers behind them: `NAME.img` is volume `NAME`,
//! `NAME@SNAP.img` is its snapshot `SNAP`. Pure logic, no IO.
//!
//! Inode numbers are handed out the first time a name is seen and kept for the life of the
//! mount, so a volume deleted and created again under the same name gets the same inode
//! (the kernel revalidates its attributes through `getattr`). Nothing here may panic on a
//! name a process passes to `open(2)`: bad names simply do not exist.

use std::collections::HashMap;
use std::ffi::OsStr;

use platter_types::VolumeRef;

/// Inode of the mount's root directory (fixed by FUSE).
pub const ROOT_INO: u64 = 1;
/// Suffix of every file in the mount.
pub const SUFFIX: &str = ".img";

/// The file name under which `r` appears.
pub fn file_name(r: &VolumeRef) -> String {
    format!("{r}{SUFFIX}")
}

/// The volume or snapshot a file name stands for, if it names one.
pub fn parse_file_name(name: &OsStr) -> Option<VolumeRef> {
    let name = name.to_str()?;
    let stem = name.strip_suffix(SUFFIX)?;
    VolumeRef::parse(stem).ok()
}

/// Inode numbers of the files seen so far.
#[derive(Debug)]
pub struct Inodes {
    by_ref: HashMap<VolumeRef, u64>,
    by_ino: HashMap<u64, VolumeRef>,
    next: u64,
}

impl Default for Inodes {
    fn default() -> Self {
        Inodes {
            by_ref: HashMap::new(),
            by_ino: HashMap::new(),
            next: ROOT_INO + 1,
        }
    }
}

impl Inodes {
    /// The inode of `r`, assigning a new one the first time.
    pub fn ino(&mut self, r: &VolumeRef) -> u64 {
        if let Some(&ino) = self.by_ref.get(r) {
            return ino;
        }
        let ino = self.next;
        // 2^64 distinct names cannot be seen in one mount; saturate rather than wrap.
        self.next = self.next.saturating_add(1);
        self.by_ref.insert(r.clone(), ino);
        self.by_ino.insert(ino, r.clone());
        ino
    }

    /// The volume or snapshot behind an inode number.
    pub fn get(&self, ino: u64) -> Option<&VolumeRef> {
        self.by_ino.get(&ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn round_trip() {
        for s in ["disk", "disk@snap1", "a.b-c_d@x.y"] {
            let r = VolumeRef::parse(s).unwrap();
            let f = file_name(&r);
            assert_eq!(f, format!("{s}.img"));
            assert_eq!(parse_file_name(OsStr::new(&f)), Some(r));
        }
    }

    #[test]
    fn rejects_other_names() {
        for s in [
            "disk",
            "disk.raw",
            ".img",
            "Disk.img",
            "a@b@c.img",
            "a@.img",
            "../x.img",
            "x/y.img",
        ] {
            assert_eq!(parse_file_name(OsStr::new(s)), None, "{s}");
        }
        assert_eq!(parse_file_name(OsStr::from_bytes(b"\xff.img")), None);
    }

    #[test]
    fn inodes_are_stable() {
        let mut t = Inodes::default();
        let a = VolumeRef::parse("a").unwrap();
        let b = VolumeRef::parse("a@s").unwrap();
        let ia = t.ino(&a);
        let ib = t.ino(&b);
        assert!(ia > ROOT_INO && ib > ROOT_INO && ia != ib);
        assert_eq!(t.ino(&a), ia);
        assert_eq!(t.get(ib), Some(&b));
        assert_eq!(t.get(ROOT_INO), None);
    }

    proptest! {
        #[test]
        fn arbitrary_names_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some(r) = parse_file_name(OsStr::from_bytes(&bytes)) {
                let name = file_name(&r);
                prop_assert_eq!(name.as_bytes(), &bytes[..]);
            }
        }
    }
}
