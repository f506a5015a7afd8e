//! Local file sources: opened read-only, read by offset (`pread`), never modified.

use crate::error::ImportError;
use std::fs::File;
use std::path::Path;

/// Opens a local image file; refuses directories.
pub(crate) fn open(path: &Path) -> Result<(File, u64), ImportError> {
    let f =
        File::open(path).map_err(|e| ImportError::io(format!("opening {}", path.display()), e))?;
    let md = f
        .metadata()
        .map_err(|e| ImportError::io(format!("inspecting {}", path.display()), e))?;
    if md.is_dir() {
        return Err(ImportError::InvalidSource {
            source_str: path.display().to_string(),
            reason: "is a directory (use oci:DIR for an OCI layout)".into(),
        });
    }
    let len = if md.is_file() {
        md.len()
    } else {
        // A block device: its size is where the end is.
        use std::io::{Seek, SeekFrom};
        let mut g = &f;
        g.seek(SeekFrom::End(0))
            .map_err(|e| ImportError::io(format!("sizing {}", path.display()), e))?
    };
    Ok((f, len))
}
