//! The qcow2 side of `volume export`: gathers the exported data into whole clusters and
//! hands them, in order, to the qcow2 writer of `platter-formats`.

use std::fs::File;
use std::path::{Path, PathBuf};

use platter_formats::qcow2::{Compression as QCompression, Qcow2Writer, WriterOptions};

use crate::api::Compression;
use crate::export::{ExportError, Sink};

const CLUSTER: u64 = 64 << 10;

struct Qcow2Sink {
    writer: Qcow2Writer<File>,
    path: PathBuf,
    /// The cluster being gathered: its index and bytes.
    current: Option<(u64, Vec<u8>)>,
}

pub(crate) fn sink(
    file: File,
    path: &Path,
    size: u64,
    compression: Option<Compression>,
) -> Result<Box<dyn Sink>, ExportError> {
    let compression = match compression {
        None => QCompression::None,
        Some(Compression::Zlib) => QCompression::Zlib,
        Some(Compression::Zstd) => QCompression::Zstd,
    };
    let writer = Qcow2Writer::new(
        file,
        size,
        WriterOptions {
            cluster_size: CLUSTER,
            compression,
        },
    )
    .map_err(|e| ExportError::Format {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok(Box::new(Qcow2Sink {
        writer,
        path: path.to_path_buf(),
        current: None,
    }))
}

impl Qcow2Sink {
    fn emit(&mut self) -> Result<(), ExportError> {
        if let Some((index, data)) = self.current.take() {
            self.writer
                .write_cluster(index, &data)
                .map_err(|e| ExportError::Format {
                    path: self.path.clone(),
                    detail: e.to_string(),
                })?;
        }
        Ok(())
    }
}

impl Sink for Qcow2Sink {
    fn put(&mut self, offset: u64, data: &[u8]) -> Result<(), ExportError> {
        let mut pos = 0usize;
        while pos < data.len() {
            let at = offset + pos as u64;
            let index = at / CLUSTER;
            if self.current.as_ref().is_some_and(|(i, _)| *i != index) {
                self.emit()?;
            }
            let (_, buf) = self
                .current
                .get_or_insert_with(|| (index, vec![0u8; CLUSTER as usize]));
            let in_cluster = (at % CLUSTER) as usize;
            let n = (CLUSTER as usize - in_cluster).min(data.len() - pos);
            buf[in_cluster..in_cluster + n].copy_from_slice(&data[pos..pos + n]);
            pos += n;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        self.emit()?;
        let file = self.writer.finish().map_err(|e| ExportError::Format {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        file.sync_all().map_err(|source| ExportError::Io {
            path: self.path.clone(),
            source,
        })
    }
}
