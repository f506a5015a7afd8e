//! Detects a VHDX log that still needs replaying. A header with a zero log GUID has an
//! empty log; otherwise any entry carrying that GUID with a valid CRC-32C would be
//! replayed by a writer, so this read-only reader refuses the image instead of guessing.
//! Pure: works on the log bytes the caller read.

use super::crc::crc32c_skipping;
use super::meta::{guid_at, Guid};
use crate::fields::le32;

const ENTRY_ALIGN: usize = 4096;

/// True if `log` (the whole circular log region) holds a valid entry for `log_guid`.
pub fn has_replayable_entry(log: &[u8], log_guid: &Guid) -> bool {
    if log_guid.iter().all(|&b| b == 0) {
        return false;
    }
    (0..log.len())
        .step_by(ENTRY_ALIGN)
        .any(|at| entry_is_valid(log, at, log_guid))
}

fn entry_is_valid(log: &[u8], at: usize, log_guid: &Guid) -> bool {
    let Some(head) = log.get(at..) else {
        return false;
    };
    if !head.starts_with(b"loge") || guid_at(head, 32) != *log_guid {
        return false;
    }
    let len = le32(head, 8) as usize;
    if len < ENTRY_ALIGN || !len.is_multiple_of(ENTRY_ALIGN) || len > log.len() {
        return false;
    }
    // Entries wrap around the end of the circular log.
    let entry: Vec<u8> = log.iter().cycle().skip(at).take(len).copied().collect();
    le32(&entry, 4) == crc32c_skipping(&entry, 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vhdx::crc::crc32c;
    use proptest::prelude::*;

    fn log_with_entry(at: usize, guid: &Guid) -> Vec<u8> {
        let mut log = vec![0u8; 4 * ENTRY_ALIGN];
        let mut entry = vec![0u8; 2 * ENTRY_ALIGN];
        entry[..4].copy_from_slice(b"loge");
        entry[8..12].copy_from_slice(&(2 * ENTRY_ALIGN as u32).to_le_bytes());
        entry[32..48].copy_from_slice(guid);
        entry[5000] = 7;
        let c = crc32c(&entry);
        entry[4..8].copy_from_slice(&c.to_le_bytes());
        for (i, b) in entry.iter().enumerate() {
            log[(at + i) % (4 * ENTRY_ALIGN)] = *b;
        }
        log
    }

    #[test]
    fn finds_entries_including_wrapped_ones() {
        let g = [9u8; 16];
        assert!(has_replayable_entry(&log_with_entry(0, &g), &g));
        assert!(has_replayable_entry(
            &log_with_entry(3 * ENTRY_ALIGN, &g),
            &g
        ));
        assert!(!has_replayable_entry(&log_with_entry(0, &g), &[8u8; 16]));
        assert!(!has_replayable_entry(&log_with_entry(0, &g), &[0u8; 16]));
        let mut torn = log_with_entry(0, &g);
        torn[5000] = 8;
        assert!(!has_replayable_entry(&torn, &g));
    }

    proptest! {
        #[test]
        fn never_panics(log in proptest::collection::vec(any::<u8>(), 0..20_000), len in any::<u32>()) {
            let mut log = log;
            if log.len() >= 48 {
                log[..4].copy_from_slice(b"loge");
                log[8..12].copy_from_slice(&len.to_le_bytes());
                log[32..48].fill(1);
            }
            let _ = has_replayable_entry(&log, &[1u8; 16]);
        }
    }
}
