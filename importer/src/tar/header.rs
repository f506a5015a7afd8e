//! Parsing and building of tar headers (v7, ustar, GNU long names and base-256 numbers,
//! pax `path`/`linkpath`/`size`/`uid`/`gid`/`mtime` records), and the path rules that keep
//! an entry inside the tree.
//!
//! What is accepted follows Go's archive/tar, which containerd (so KubeVirt) and umoci
//! use: signed or unsigned checksums, no size for header-only kinds, the archive root as
//! `.`/`./`. Pure: works on byte slices only. Every field from the archive is untrusted:
//! numbers are range-checked, names must be UTF-8, and nothing here panics on any input.

use super::sparse::old_gnu_entries;
use std::fmt;

/// Size of one tar block.
pub const BLOCK: usize = 512;
/// Largest GNU long name / pax header we accept; real ones are a few hundred bytes.
pub const MAX_META_LEN: u64 = 1 << 20;

/// What a tar header describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Regular,
    HardLink,
    Symlink,
    Directory,
    /// Character/block devices and FIFOs: never a disk.
    Special,
    /// A GNU sparse file (`S`, or a pax header with `GNU.sparse.*` records): its data is
    /// a map plus the non-hole bytes, which this reader does not expand.
    Sparse,
    /// GNU `L`: the next header's long name.
    GnuLongName,
    /// GNU `K`: the next header's long link name.
    GnuLongLink,
    /// pax `x`: records for the next header.
    PaxLocal,
    /// pax `g`: global records (ignored).
    PaxGlobal,
    /// Anything else we do not understand; skipped like data.
    Other(u8),
}

/// One parsed 512-byte header, before long-name/pax records are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHeader {
    pub name: Vec<u8>,
    pub link_name: Vec<u8>,
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// An old GNU sparse header (`S`) followed by extension blocks of its sparse map,
    /// which are not counted in `size`.
    pub sparse_extended: bool,
    /// An old GNU sparse header's map entries `(offset, len)` and the file's real size.
    pub sparse_runs: Vec<(u64, u64)>,
    pub real_size: u64,
}

/// In an old GNU sparse extension block, the byte saying another block follows.
pub const SPARSE_EXT_FLAG: usize = 504;

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("bad tar header checksum (stored {stored}, computed {computed})")]
    Checksum { stored: u64, computed: u64 },
    #[error("bad number in tar header field {field}")]
    Number { field: &'static str },
    #[error("bad pax extended header: {0}")]
    Pax(&'static str),
    #[error("bad GNU sparse map: {0}")]
    Sparse(&'static str),
}

/// Parses one header block. `Ok(None)` means an all-zero block (end of archive marker).
pub fn parse_header(block: &[u8; BLOCK]) -> Result<Option<RawHeader>, HeaderError> {
    if block.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let stored = parse_number(&block[148..156], "chksum")?;
    let computed: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    // Some old tars summed signed bytes; Go's archive/tar accepts either sum.
    let signed: i64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(b as i8)
            }
        })
        .sum();
    if stored != computed && i64::try_from(stored).ok() != Some(signed) {
        return Err(HeaderError::Checksum { stored, computed });
    }
    let kind = match block[156] {
        b'0' | 0 | b'7' => EntryKind::Regular,
        b'1' => EntryKind::HardLink,
        b'2' => EntryKind::Symlink,
        b'5' => EntryKind::Directory,
        b'3' | b'4' | b'6' => EntryKind::Special,
        b'S' => EntryKind::Sparse,
        b'L' => EntryKind::GnuLongName,
        b'K' => EntryKind::GnuLongLink,
        b'x' => EntryKind::PaxLocal,
        b'g' => EntryKind::PaxGlobal,
        other => EntryKind::Other(other),
    };
    let mut name = cstr(&block[0..100]).to_vec();
    // ustar (magic "ustar\0") has a 155-byte prefix; GNU ("ustar  \0") uses that space
    // for other fields.
    if &block[257..263] == b"ustar\0" {
        let prefix = cstr(&block[345..500]);
        if !prefix.is_empty() {
            let mut full = prefix.to_vec();
            full.push(b'/');
            full.extend_from_slice(&name);
            name = full;
        }
    }
    let mut sparse_runs = Vec::new();
    let mut real_size = 0;
    if kind == EntryKind::Sparse {
        old_gnu_entries(&block[386..482], 4, parse_number, &mut sparse_runs)?;
        real_size = parse_number(&block[483..495], "sparse realsize")?;
    }
    Ok(Some(RawHeader {
        name,
        link_name: cstr(&block[157..257]).to_vec(),
        kind,
        size: parse_number(&block[124..136], "size")?,
        mode: u32::try_from(parse_number(&block[100..108], "mode")? & 0o7777)
            .map_err(|_| HeaderError::Number { field: "mode" })?,
        uid: parse_number(&block[108..116], "uid")?,
        gid: parse_number(&block[116..124], "gid")?,
        mtime: parse_number(&block[136..148], "mtime")?,
        sparse_extended: kind == EntryKind::Sparse && block[482] != 0,
        sparse_runs,
        real_size,
    }))
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Octal (space/NUL padded) or GNU base-256 (high bit set) numbers.
pub(super) fn parse_number(field: &[u8], name: &'static str) -> Result<u64, HeaderError> {
    let err = HeaderError::Number { field: name };
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            if first & 0x40 != 0 {
                return Err(err); // negative
            }
            let mut v: u64 = u64::from(first & 0x3f);
            for &b in &field[1..] {
                v = v.checked_mul(256).ok_or(err.clone())? | u64::from(b);
            }
            return Ok(v);
        }
    }
    let s: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if s.is_empty() {
        return Ok(0);
    }
    let mut v: u64 = 0;
    for b in s {
        if !(b'0'..=b'7').contains(&b) {
            return Err(err);
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(err.clone())?;
    }
    Ok(v)
}

/// The records of a pax extended header that matter to us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaxRecords {
    pub path: Option<Vec<u8>>,
    pub link_path: Option<Vec<u8>>,
    pub size: Option<u64>,
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    /// Whole seconds of `mtime` (`SECONDS[.FRACTION]`, possibly negative).
    pub mtime: Option<i64>,
    /// Any `GNU.sparse.*` record: the entry is a sparse file.
    pub sparse: bool,
    /// `GNU.sparse.major` and `GNU.sparse.minor`: the pax sparse format (1.0 is read).
    pub sparse_version: (Option<u64>, Option<u64>),
    /// `GNU.sparse.realsize` (1.0) or `GNU.sparse.size` (0.x): the file's real size.
    pub sparse_real_size: Option<u64>,
    /// `GNU.sparse.name`: the sparse file's real name (pax sparse 0.1 and 1.0).
    pub sparse_name: Option<Vec<u8>>,
}

/// Parses pax records: `LEN KEY=VALUE\n` repeated. LEN counts the whole record, so values
/// may hold `=`, spaces and newlines.
pub fn parse_pax(mut data: &[u8]) -> Result<PaxRecords, HeaderError> {
    let mut out = PaxRecords::default();
    while !data.is_empty() {
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let sp = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or(HeaderError::Pax("record without length"))?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or(HeaderError::Pax("bad record length"))?;
        if len <= sp + 1 || len > data.len() {
            return Err(HeaderError::Pax("record length out of range"));
        }
        let record = &data[sp + 1..len];
        let record = record
            .strip_suffix(b"\n")
            .ok_or(HeaderError::Pax("record not terminated by newline"))?;
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or(HeaderError::Pax("record without '='"))?;
        out.apply(&record[..eq], &record[eq + 1..])?;
        data = &data[len..];
    }
    Ok(out)
}

impl PaxRecords {
    fn apply(&mut self, key: &[u8], value: &[u8]) -> Result<(), HeaderError> {
        match key {
            b"path" => self.path = Some(value.to_vec()),
            b"linkpath" => self.link_path = Some(value.to_vec()),
            b"size" => self.size = Some(pax_number(value, "bad size")?),
            b"uid" => self.uid = Some(pax_number(value, "bad uid")?),
            b"gid" => self.gid = Some(pax_number(value, "bad gid")?),
            // Informational only: a malformed time is not worth refusing an image for.
            b"mtime" => self.mtime = pax_seconds(value),
            b"GNU.sparse.name" => {
                self.sparse = true;
                self.sparse_name = Some(value.to_vec());
            }
            b"GNU.sparse.major" => {
                self.sparse = true;
                self.sparse_version.0 = Some(pax_number(value, "bad GNU.sparse.major")?);
            }
            b"GNU.sparse.minor" => {
                self.sparse = true;
                self.sparse_version.1 = Some(pax_number(value, "bad GNU.sparse.minor")?);
            }
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => {
                self.sparse = true;
                self.sparse_real_size = Some(pax_number(value, "bad GNU.sparse size")?);
            }
            k if k.starts_with(b"GNU.sparse.") => self.sparse = true,
            _ => {}
        }
        Ok(())
    }
}

/// A decimal number as pax writes it (digits only, no sign or spaces).
fn pax_number(value: &[u8], what: &'static str) -> Result<u64, HeaderError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(HeaderError::Pax(what));
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(HeaderError::Pax(what))
}

/// `[-]SECONDS[.FRACTION]` to whole seconds; `None` when malformed.
fn pax_seconds(value: &[u8]) -> Option<i64> {
    let (neg, rest) = match value.strip_prefix(b"-") {
        Some(r) => (true, r),
        None => (false, value),
    };
    let (secs, frac) = match rest.iter().position(|&b| b == b'.') {
        Some(dot) => (&rest[..dot], &rest[dot + 1..]),
        None => (rest, &b""[..]),
    };
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let s = i64::try_from(pax_number(secs, "").ok()?).ok()?;
    Some(if neg { -s } else { s })
}

/// A path inside an archive after normalisation: relative, no `.`/`..`, no empty parts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SafePath(Vec<String>);

/// Why an entry path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("absolute path {0:?} in archive")]
    Absolute(String),
    #[error("path {0:?} in archive leaves the tree with '..'")]
    DotDot(String),
    #[error("path in archive is not UTF-8")]
    NotUtf8,
    #[error("empty path in archive")]
    Empty,
    #[error("the archive root {0:?} is a {1}, not a directory")]
    RootNotDirectory(String, &'static str),
}

impl SafePath {
    /// Normalises an entry name; refuses absolute paths, any `..` component, and names
    /// of the archive root itself (see [`SafePath::parse_entry`]).
    pub fn parse(raw: &[u8]) -> Result<SafePath, PathError> {
        SafePath::parse_entry(raw)?.ok_or(PathError::Empty)
    }

    /// Like [`SafePath::parse`], but a non-empty name of the archive root (`.`, `./`,
    /// `.//.`, as `tar -C dir .` and umoci write) is `Ok(None)`, not an error.
    pub fn parse_entry(raw: &[u8]) -> Result<Option<SafePath>, PathError> {
        if raw.is_empty() {
            return Err(PathError::Empty);
        }
        let s = std::str::from_utf8(raw).map_err(|_| PathError::NotUtf8)?;
        if s.starts_with('/') {
            return Err(PathError::Absolute(s.chars().take(200).collect()));
        }
        let mut parts = Vec::new();
        for part in s.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(PathError::DotDot(s.chars().take(200).collect())),
                p => parts.push(p.to_string()),
            }
        }
        Ok((!parts.is_empty()).then_some(SafePath(parts)))
    }

    pub fn components(&self) -> &[String] {
        &self.0
    }

    /// The file name (last component).
    pub fn file_name(&self) -> &str {
        self.0.last().map(String::as_str).unwrap_or("")
    }

    /// Whether a link stored at `self` with target `target` stays inside the tree.
    pub fn link_target_stays_inside(&self, target: &[u8], hard: bool) -> bool {
        let Ok(t) = std::str::from_utf8(target) else {
            return false;
        };
        if t.starts_with('/') {
            return false;
        }
        // Hard link targets are relative to the archive root, symlinks to the link's dir.
        let mut depth: Vec<&str> = if hard {
            Vec::new()
        } else {
            self.0[..self.0.len().saturating_sub(1)]
                .iter()
                .map(String::as_str)
                .collect()
        };
        for part in t.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if depth.pop().is_none() {
                        return false;
                    }
                }
                p => depth.push(p),
            }
        }
        true
    }
}

impl fmt::Display for SafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

/// Fields for a header we write (push): ustar with numbers that fit octal fields.
#[derive(Debug, Clone)]
pub struct NewHeader<'a> {
    pub name: &'a str,
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
}

/// Builds one ustar header block. Sizes of 8 GiB and more use GNU base-256, which GNU tar,
/// Go's archive/tar (containerd, KubeVirt) and umoci all read.
pub fn build_header(h: &NewHeader<'_>) -> Result<[u8; BLOCK], &'static str> {
    let mut b = [0u8; BLOCK];
    let name = h.name.as_bytes();
    if name.len() > 100 {
        return Err("name longer than 100 bytes");
    }
    b[..name.len()].copy_from_slice(name);
    put_octal(&mut b[100..108], u64::from(h.mode))?;
    put_octal(&mut b[108..116], u64::from(h.uid))?;
    put_octal(&mut b[116..124], u64::from(h.gid))?;
    if h.size < (1u64 << 33) {
        put_octal(&mut b[124..136], h.size)?;
    } else {
        b[124] = 0x80;
        b[128..136].copy_from_slice(&h.size.to_be_bytes());
    }
    put_octal(&mut b[136..148], h.mtime)?;
    b[156] = match h.kind {
        EntryKind::Regular => b'0',
        EntryKind::Directory => b'5',
        EntryKind::Symlink => b'2',
        EntryKind::HardLink => b'1',
        _ => return Err("unsupported entry kind"),
    };
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[148..156].copy_from_slice(b"        ");
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    // Checksum: six octal digits, NUL, space.
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
    Ok(b)
}

fn put_octal(field: &mut [u8], v: u64) -> Result<(), &'static str> {
    let width = field.len() - 1;
    let s = format!("{v:0width$o}");
    if s.len() > width {
        return Err("number does not fit a tar header field");
    }
    field[..width].copy_from_slice(s.as_bytes());
    field[width] = 0;
    Ok(())
}

/// Bytes of padding after `size` bytes of data to reach a block boundary.
pub fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_a_header() {
        let h = NewHeader {
            name: "disk/disk.img",
            kind: EntryKind::Regular,
            size: 12345,
            mode: 0o444,
            uid: 107,
            gid: 107,
            mtime: 0,
        };
        let b = build_header(&h).unwrap();
        let p = parse_header(&b).unwrap().unwrap();
        assert_eq!(p.name, b"disk/disk.img");
        assert_eq!(p.size, 12345);
        assert_eq!(p.mode, 0o444);
        assert_eq!((p.uid, p.gid), (107, 107));
        assert_eq!(p.kind, EntryKind::Regular);
        let big = NewHeader {
            size: 20 << 30,
            ..h
        };
        let p = parse_header(&build_header(&big).unwrap()).unwrap().unwrap();
        assert_eq!(p.size, 20 << 30);
    }

    #[test]
    fn path_rules() {
        assert!(SafePath::parse(b"/etc/passwd").is_err());
        assert!(SafePath::parse(b"disk/../../x").is_err());
        assert_eq!(
            SafePath::parse(b"./disk//disk.img").unwrap().to_string(),
            "disk/disk.img"
        );
        let p = SafePath::parse(b"disk/link").unwrap();
        assert!(p.link_target_stays_inside(b"disk.img", false));
        assert!(p.link_target_stays_inside(b"../other", false));
        assert!(!p.link_target_stays_inside(b"../../etc/shadow", false));
        assert!(!p.link_target_stays_inside(b"/etc/shadow", false));
        assert!(!p.link_target_stays_inside(b"../x", true));
    }

    #[test]
    fn pax_records() {
        let rec = b"32 path=disk/very/long/name.img\n14 size=12345\n";
        let p = parse_pax(rec).unwrap();
        assert_eq!(p.path.as_deref(), Some(&b"disk/very/long/name.img"[..]));
        assert_eq!(p.size, Some(12345));
        assert!(parse_pax(b"99 path=x\n").is_err());
    }

    proptest! {
        #[test]
        fn header_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), BLOCK)) {
            let mut block = [0u8; BLOCK];
            block.copy_from_slice(&bytes);
            let _ = parse_header(&block);
            // Also with a valid checksum, so the field parsers are reached.
            block[148..156].copy_from_slice(b"        ");
            let sum: u64 = block.iter().map(|&x| u64::from(x)).sum();
            let s = format!("{:06o}\0 ", sum % 0o1000000);
            block[148..156].copy_from_slice(s.as_bytes());
            let _ = parse_header(&block);
        }

        #[test]
        fn pax_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_pax(&bytes);
        }

        #[test]
        fn safe_paths_never_escape(s in "[a-z./]{0,40}") {
            if let Ok(p) = SafePath::parse(s.as_bytes()) {
                prop_assert!(p.components().iter().all(|c| c != ".." && c != "." && !c.is_empty()));
            }
        }
    }
}
