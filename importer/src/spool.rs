//! Spooling, the last resort for an image that needs random access and arrives as a
//! stream (stdin, a compressed wrapper, a registry layer) but cannot be decoded in one
//! pass (tables behind the data or past the read-ahead, a VHDX log to replay, ...): its
//! bytes are copied to an unlinked temporary file, then decoded from there. The usual
//! layouts of every format stream without it (`pipeline/qcow2_stream.rs`,
//! `pipeline/vmdk_stream.rs`, `pipeline/map_stream.rs`).
//!
//! The spool is sparse (all-zero blocks are not written) and bounded by the image's
//! declared size, so a compression bomb can fill neither memory nor disk. The file has no
//! name from the start, so nothing is left behind whatever happens to the process.

use crate::error::{from_io, ImportError};
use crate::options::CancelFlag;
use crate::stream::{check_cancel, is_zero, read_full, CHUNK, ZERO_BLOCK};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Copies `reader` to a new unlinked temporary file in `dir` (or the system temp dir).
/// Fails with `TooLarge` past `limit`. Returns the file and its length.
pub(crate) fn spool(
    reader: &mut dyn Read,
    dir: Option<&Path>,
    limit: Option<(u64, String)>,
    what: &str,
    cancel: &CancelFlag,
) -> Result<(File, u64), ImportError> {
    let tmp = match dir {
        Some(d) => tempfile::tempfile_in(d),
        None => tempfile::tempfile(),
    }
    .map_err(|e| ImportError::io("creating a spool file", e))?;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    loop {
        check_cancel(cancel)?;
        let n = read_full(reader, &mut buf).map_err(|e| from_io(format!("reading {what}"), e))?;
        if n == 0 {
            break;
        }
        if let Some((max, why)) = &limit {
            if pos + n as u64 > *max {
                return Err(ImportError::TooLarge {
                    what: what.to_string(),
                    limit: *max,
                    why: why.clone(),
                });
            }
        }
        let data = &buf[..n];
        let mut off = 0;
        while off < n {
            let end = (off + ZERO_BLOCK).min(n);
            // Extend the run of non-zero blocks as far as it goes, then write it at once.
            if is_zero(&data[off..end]) {
                off = end;
                continue;
            }
            let mut run_end = end;
            while run_end < n {
                let next = (run_end + ZERO_BLOCK).min(n);
                if is_zero(&data[run_end..next]) {
                    break;
                }
                run_end = next;
            }
            tmp.write_all_at(&data[off..run_end], pos + off as u64)
                .map_err(|e| ImportError::io("writing the spool file", e))?;
            off = run_end;
        }
        pos += n as u64;
    }
    tmp.set_len(pos)
        .map_err(|e| ImportError::io("sizing the spool file", e))?;
    Ok((tmp, pos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use platter_formats::ReadAt;

    #[test]
    fn spools_sparse_and_exact() {
        let mut data = vec![0u8; 3 * CHUNK + 123];
        data[5] = 1;
        data[2 * CHUNK + 77] = 9;
        let (f, len) = spool(&mut &data[..], None, None, "test", &CancelFlag::new()).unwrap();
        assert_eq!(len, data.len() as u64);
        let mut back = vec![0u8; data.len()];
        ReadAt::read_exact_at(&f, &mut back, 0).unwrap();
        assert_eq!(back, data);
        let r = spool(
            &mut &data[..],
            None,
            Some((CHUNK as u64, "bound".into())),
            "test",
            &CancelFlag::new(),
        );
        assert!(matches!(r, Err(ImportError::TooLarge { .. })));
    }
}
