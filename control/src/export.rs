//! `volume export`: a volume or snapshot written out as a sparse raw file or a qcow2 image.
//!
//! The output is written to `FILE.partial` and renamed into place only when complete, so
//! a failed export never leaves a half-written file under the requested name. Holes and
//! zero blocks are skipped (block status first, then a zero check of data blocks).

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use platter_importer::CancelFlag;
use platter_snapshotter::{BlockKind, StoreError, Volume};

use crate::api::{Compression, Event, ExportFormat};

const CHUNK: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export to {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("export of {volume}: {source}")]
    Store { volume: String, source: StoreError },
    #[error("export to {path}: {detail}")]
    Format { path: PathBuf, detail: String },
    /// Stopped by its cancel flag (Ctrl-C, or the client went away); nothing was left.
    #[error("export cancelled")]
    Cancelled,
    /// The output's directory is missing or is not a directory.
    #[error("export to {path}: {}", dir_problem(.dir))]
    NoDirectory { path: PathBuf, dir: PathBuf },
}

fn dir_problem(dir: &Path) -> String {
    match dir.exists() {
        true => format!("{} is not a directory", dir.display()),
        false => format!("directory {} does not exist", dir.display()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportReport {
    pub bytes_written: u64,
    pub allocated: u64,
}

/// Where exported bytes go: a sparse raw file or an image writer.
pub(crate) trait Sink {
    /// `data` is one whole chunk at `offset`; all-zero chunks never reach the sink.
    fn put(&mut self, offset: u64, data: &[u8]) -> Result<(), ExportError>;
    fn finish(self: Box<Self>) -> Result<(), ExportError>;
}

struct RawSink {
    file: File,
    path: PathBuf,
}

impl Sink for RawSink {
    fn put(&mut self, offset: u64, data: &[u8]) -> Result<(), ExportError> {
        self.file
            .write_all_at(data, offset)
            .map_err(|source| ExportError::Io {
                path: self.path.clone(),
                source,
            })
    }
    fn finish(self: Box<Self>) -> Result<(), ExportError> {
        self.file.sync_all().map_err(|source| ExportError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

pub fn export(
    vol: &Volume,
    path: &Path,
    format: ExportFormat,
    compression: Option<Compression>,
    cancel: &CancelFlag,
    events: &mut dyn FnMut(Event),
) -> Result<ExportReport, ExportError> {
    let tmp = partial_path(path);
    let io = |source| ExportError::Io {
        path: tmp.clone(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(ExportError::NoDirectory {
            path: path.to_path_buf(),
            dir,
        });
    }
    let file = File::create(&tmp).map_err(io)?;
    let size = vol.size();
    let result = (|| {
        let sink: Box<dyn Sink> = match format {
            ExportFormat::Raw => {
                if compression.is_some() {
                    return Err(ExportError::Format {
                        path: path.to_path_buf(),
                        detail: "--compress needs --format qcow2".into(),
                    });
                }
                file.set_len(size).map_err(io)?;
                Box::new(RawSink {
                    file: file.try_clone().map_err(io)?,
                    path: tmp.clone(),
                })
            }
            ExportFormat::Qcow2 => {
                crate::export_qcow2::sink(file.try_clone().map_err(io)?, &tmp, size, compression)?
            }
        };
        let written = copy_data(vol, sink, cancel, events)?;
        std::fs::rename(&tmp, path).map_err(|source| ExportError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let allocated = std::fs::metadata(path)
            .map(|m| m.blocks() * 512)
            .unwrap_or(0);
        Ok(ExportReport {
            bytes_written: written,
            allocated,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Streams every data chunk of the volume into the sink; returns the bytes passed on.
fn copy_data(
    vol: &Volume,
    mut sink: Box<dyn Sink>,
    cancel: &CancelFlag,
    events: &mut dyn FnMut(Event),
) -> Result<u64, ExportError> {
    let size = vol.size();
    let store_err = |source| ExportError::Store {
        volume: vol.label().to_string(),
        source,
    };
    let mut buf = vec![0u8; CHUNK as usize];
    let mut written = 0;
    let mut pos = 0;
    while pos < size {
        let span = (size - pos).min(1 << 30);
        for e in vol.block_status(pos, span).map_err(store_err)? {
            if e.kind != BlockKind::Data {
                continue;
            }
            let mut at = e.offset;
            while at < e.offset + e.len {
                if cancel.is_cancelled() {
                    return Err(ExportError::Cancelled);
                }
                let n = (e.offset + e.len - at).min(CHUNK) as usize;
                vol.read_at(&mut buf[..n], at).map_err(store_err)?;
                put_nonzero(&mut *sink, at, &buf[..n])?;
                written += n as u64;
                at += n as u64;
            }
        }
        pos += span;
        events(Event::Progress {
            done: pos,
            total: Some(size),
        });
    }
    sink.finish()?;
    Ok(written)
}

/// Passes on the 64 KiB pieces of a chunk that hold anything but zeros.
fn put_nonzero(sink: &mut dyn Sink, offset: u64, data: &[u8]) -> Result<(), ExportError> {
    const PIECE: usize = 64 << 10;
    let mut start = None;
    for (i, piece) in data.chunks(PIECE).enumerate() {
        let zero = piece.iter().all(|&b| b == 0);
        match (zero, start) {
            (false, None) => start = Some(i * PIECE),
            (true, Some(s)) => {
                sink.put(offset + s as u64, &data[s..i * PIECE])?;
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        sink.put(offset + s as u64, &data[s..])?;
    }
    Ok(())
}
