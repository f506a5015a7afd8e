//! Test-only tar builders that write any spelling real tools produce (and some they
//! should not): raw header fields, GNU long names, pax local and global headers. Unlike
//! [`super::header::build_header`] nothing here refuses a name.

use super::header::{padding, BLOCK};

/// The magic a header carries.
#[derive(Clone, Copy)]
pub enum Magic {
    /// POSIX ustar (`ustar\0` `00`), with the 155-byte prefix field.
    Ustar,
    /// GNU (`ustar  \0`).
    Gnu,
    /// Pre-POSIX v7: no magic at all.
    V7,
}

/// One header block; `name` beyond 100 bytes is cut (put it in a long name or pax record).
pub fn header(name: &[u8], typeflag: u8, size: u64, magic: Magic) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name[..n]);
    b[100..108].copy_from_slice(b"0000644\0");
    b[108..116].copy_from_slice(b"0000153\0"); // uid 107
    b[116..124].copy_from_slice(b"0000153\0");
    if size < 1 << 33 {
        b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        b[124] = 0x80; // GNU base-256
        b[128..136].copy_from_slice(&size.to_be_bytes());
    }
    b[136..148].copy_from_slice(b"15305351665\0");
    b[156] = typeflag;
    match magic {
        Magic::Ustar => b[257..265].copy_from_slice(b"ustar\x0000"),
        Magic::Gnu => b[257..265].copy_from_slice(b"ustar  \0"),
        Magic::V7 => {}
    }
    fix_checksum(&mut b);
    b
}

/// Recomputes the (unsigned) checksum after fields were edited.
pub fn fix_checksum(b: &mut [u8; BLOCK]) {
    b[148..156].copy_from_slice(b"        ");
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    b[148..156].copy_from_slice(format!("{:06o}\0 ", sum % 0o1000000).as_bytes());
}

/// A header followed by its data, padded to a block.
pub fn member(name: &[u8], typeflag: u8, data: &[u8], magic: Magic) -> Vec<u8> {
    let mut v = header(name, typeflag, data.len() as u64, magic).to_vec();
    push_data(&mut v, data);
    v
}

/// `data` padded to a whole number of blocks.
pub fn push_data(v: &mut Vec<u8>, data: &[u8]) {
    v.extend_from_slice(data);
    v.resize(v.len() + padding(data.len() as u64) as usize, 0);
}

/// A GNU long name (`L`) or long link (`K`) record, as GNU tar writes it: named
/// `././@LongLink`, the name NUL-terminated.
pub fn gnu_long(typeflag: u8, name: &[u8]) -> Vec<u8> {
    let mut data = name.to_vec();
    data.push(0);
    member(b"././@LongLink", typeflag, &data, Magic::Gnu)
}

/// A pax extended header (`x`, or `g` for a global one) with these records.
pub fn pax(typeflag: u8, records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in records {
        // LEN counts itself: find the length whose decimal digits make it consistent.
        let body = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} {k}=").as_bytes());
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    member(b"./PaxHeaders/x", typeflag, &data, Magic::Ustar)
}

/// The end-of-archive marker.
pub fn end() -> Vec<u8> {
    vec![0u8; 2 * BLOCK]
}
