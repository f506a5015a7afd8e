//! CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every VHDX
//! header, region table and log entry. Table-driven; only used on metadata (a few KiB per
//! open), so no SIMD path. Pure: no IO.

const POLY: u32 = 0x82f6_3b78;

const fn make_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static TABLE: [u32; 256] = make_table();

/// Continues a CRC-32C over `data` from a running (already inverted) state.
fn update(mut state: u32, data: &[u8]) -> u32 {
    for &b in data {
        state = TABLE[((state ^ u32::from(b)) & 0xff) as usize] ^ (state >> 8);
    }
    state
}

/// CRC-32C of `data` with the 4 bytes at `zero_at` treated as zero (the field that
/// stores the checksum itself).
pub fn crc32c_skipping(data: &[u8], zero_at: usize) -> u32 {
    let (head, rest) = data.split_at(zero_at.min(data.len()));
    let tail = rest.get(4..).unwrap_or(&[]);
    let zeros = &[0u8; 4][..rest.len().min(4)];
    !update(update(update(!0, head), zeros), tail)
}

/// CRC-32C of `data`.
#[cfg(test)]
pub fn crc32c(data: &[u8]) -> u32 {
    !update(!0, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        let mut d = *b"abcdWXYZefgh";
        let skipped = crc32c_skipping(&d, 4);
        d[4..8].fill(0);
        assert_eq!(skipped, crc32c(&d));
    }
}
