//! The VMDK text descriptor (embedded in a sparse extent or a file of its own): the
//! `createType`, any parent link, and the extent lines `ACCESS SECTORS TYPE "FILE"
//! [OFFSET]`. Pure and bounded: parses at most [`MAX_DESCRIPTOR_LEN`] bytes, stops at
//! the first NUL (the padding of an embedded descriptor), never does IO.

use super::header::FORMAT;
use crate::FormatError;

/// Largest descriptor accepted (real ones are a few hundred bytes).
pub const MAX_DESCRIPTOR_LEN: usize = 1 << 20;
/// Most extent lines accepted.
const MAX_EXTENTS: usize = 1024;
/// `parentCID` of an image without a parent.
const NO_PARENT_CID: &str = "ffffffff";

/// One extent line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    pub access: String,
    pub sectors: u64,
    pub kind: String,
    pub file: Option<String>,
}

/// What the reader needs from a descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Descriptor {
    pub create_type: Option<String>,
    pub parent_cid: Option<String>,
    pub parent_file_name_hint: Option<String>,
    pub extents: Vec<ExtentLine>,
}

impl Descriptor {
    /// True if the descriptor links to a parent (a delta/differencing disk).
    pub fn has_parent(&self) -> bool {
        self.parent_file_name_hint.is_some()
            || self
                .parent_cid
                .as_deref()
                .is_some_and(|c| !c.eq_ignore_ascii_case(NO_PARENT_CID))
    }
}

fn corrupt(detail: impl Into<String>) -> FormatError {
    FormatError::corrupt(FORMAT, detail)
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v)
}

/// Parses descriptor text.
pub fn parse_descriptor(bytes: &[u8]) -> Result<Descriptor, FormatError> {
    if bytes.len() > MAX_DESCRIPTOR_LEN {
        return Err(FormatError::TooLarge {
            format: FORMAT,
            what: "descriptor".into(),
            value: bytes.len() as u64,
            limit: MAX_DESCRIPTOR_LEN as u64,
        });
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = String::from_utf8_lossy(&bytes[..end]);
    let mut d = Descriptor::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(extent) = parse_extent_line(line, n + 1)? {
            if d.extents.len() >= MAX_EXTENTS {
                return Err(corrupt(format!("more than {MAX_EXTENTS} extent lines")));
            }
            d.extents.push(extent);
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = Some(unquote(value).to_string());
        match key.trim() {
            "createType" => d.create_type = value,
            "parentCID" => d.parent_cid = value,
            "parentFileNameHint" => d.parent_file_name_hint = value,
            _ => {}
        }
    }
    Ok(d)
}

/// Splits off the first whitespace-separated word of `s`.
fn next_word(s: &str) -> (Option<&str>, &str) {
    let s = s.trim_start();
    if s.is_empty() {
        return (None, s);
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    let (word, rest) = s.split_at(end);
    (Some(word), rest)
}

/// Parses `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`; `None` if the line is no extent line.
fn parse_extent_line(line: &str, n: usize) -> Result<Option<ExtentLine>, FormatError> {
    let (access, rest) = next_word(line);
    let Some(access) = access.filter(|a| matches!(*a, "RW" | "RDONLY" | "NOACCESS")) else {
        return Ok(None);
    };
    let bad = |what: &str| corrupt(format!("descriptor line {n}: {what} in extent line"));
    let (sectors, rest) = next_word(rest);
    let sectors = sectors
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| bad("bad size"))?;
    let (kind, rest) = next_word(rest);
    let kind = kind.ok_or_else(|| bad("no extent type"))?.to_string();
    // The file name is quoted and may contain spaces; an offset may follow it.
    let rest = rest.trim();
    let file = match rest.strip_prefix('"') {
        Some(r) => {
            let (name, _) = r
                .split_once('"')
                .ok_or_else(|| bad("unterminated file name"))?;
            Some(name.to_string())
        }
        None if rest.is_empty() => None,
        None => return Err(bad("unquoted file name")),
    };
    Ok(Some(ExtentLine {
        access: access.to_string(),
        sectors,
        kind,
        file,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const QEMU: &str = "# Disk DescriptorFile\nversion=1\nCID=a5cd23e8\nparentCID=ffffffff\n\
        createType=\"streamOptimized\"\n\n# Extent description\nRW 8192 SPARSE \"my disk.vmdk\"\n\n\
        # The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\n";

    #[test]
    fn parses_a_qemu_descriptor() {
        let mut bytes = QEMU.as_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 100]);
        bytes.extend_from_slice(b"createType=\"junk after NUL\"");
        let d = parse_descriptor(&bytes).unwrap();
        assert_eq!(d.create_type.as_deref(), Some("streamOptimized"));
        assert!(!d.has_parent());
        assert_eq!(
            d.extents,
            vec![ExtentLine {
                access: "RW".into(),
                sectors: 8192,
                kind: "SPARSE".into(),
                file: Some("my disk.vmdk".into()),
            }]
        );
    }

    #[test]
    fn parent_and_bad_lines() {
        let d =
            parse_descriptor(b"parentCID=12345678\nparentFileNameHint=\"base.vmdk\"\nRW 1 ZERO\n")
                .unwrap();
        assert!(d.has_parent());
        assert_eq!(d.extents[0].file, None);
        assert!(parse_descriptor(b"RW lots SPARSE \"x\"").is_err());
        assert!(parse_descriptor(b"RW 10 SPARSE \"x").is_err());
        assert!(parse_descriptor(b"RW 10 SPARSE x").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = parse_descriptor(&bytes);
        }

        #[test]
        fn never_panics_on_extent_like_text(s in "(RW|RDONLY|NOACCESS)[ \t]{0,2}[0-9a-z ]{0,12}[ \"A-Z\u{e9}]{0,20}") {
            let _ = parse_descriptor(s.as_bytes());
        }
    }
}
