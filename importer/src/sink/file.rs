//! `--to-file PATH`: a sparse raw file. Written as `PATH.partial`, renamed over `PATH`
//! only in `finish` (after fsync); removed if dropped unfinished.
//!
//! Zero ranges are never written: the file is created empty and grown with `set_len`, so
//! skipped ranges stay holes.

use super::{kick_writeback, Sink, WritebackSpan};
use crate::error::ImportError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// See the module doc.
pub struct FileSink {
    path: PathBuf,
    partial: PathBuf,
    file: Option<File>,
    size: u64,
    writeback: WritebackSpan,
}

impl FileSink {
    /// Creates `PATH.partial` (replacing a stale one). `PATH` itself is untouched until
    /// `finish`.
    pub fn create(path: &Path) -> Result<FileSink, ImportError> {
        let mut name = path
            .file_name()
            .ok_or_else(|| ImportError::InvalidDestination {
                dest: path.display().to_string(),
                reason: "not a file path".into(),
            })?
            .to_os_string();
        name.push(".partial");
        let partial = path.with_file_name(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(|e| ImportError::io(format!("creating {}", partial.display()), e))?;
        Ok(FileSink {
            path: path.to_path_buf(),
            partial,
            file: Some(file),
            size: 0,
            writeback: WritebackSpan::default(),
        })
    }

    fn file(&self) -> Result<&File, ImportError> {
        self.file.as_ref().ok_or_else(|| ImportError::Sink {
            target: self.path.display().to_string(),
            detail: "already finished".into(),
        })
    }
}

impl Sink for FileSink {
    type Output = PathBuf;

    fn set_size(&mut self, size: u64) -> Result<(), ImportError> {
        self.file()?
            .set_len(size)
            .map_err(|e| ImportError::io(format!("resizing {}", self.partial.display()), e))?;
        self.size = size;
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), ImportError> {
        self.file()?.write_all_at(buf, offset).map_err(|e| {
            ImportError::io(format!("writing {} at {offset}", self.partial.display()), e)
        })?;
        if let Some(span) = self.writeback.note(offset, buf.len() as u64) {
            kick_writeback(self.file()?, span);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<PathBuf, ImportError> {
        let file = self.file.take().ok_or_else(|| ImportError::Sink {
            target: self.path.display().to_string(),
            detail: "already finished".into(),
        })?;
        let what = |w: &str| format!("{w} {}", self.partial.display());
        file.sync_all()
            .map_err(|e| ImportError::io(what("syncing"), e))?;
        drop(file);
        std::fs::rename(&self.partial, &self.path).map_err(|e| {
            ImportError::io(
                format!(
                    "renaming {} to {}",
                    self.partial.display(),
                    self.path.display()
                ),
                e,
            )
        })?;
        // The rename is durable once the directory is synced.
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(self.path.clone())
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
