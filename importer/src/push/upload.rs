//! Registry upload of a layer generated on the fly: `POST` opens an upload session, one
//! streamed `PATCH` carries the bytes as they are produced, `PUT ?digest=` closes it once
//! the digest is known (the Docker client's own flow, which every registry accepts).
//! Small blobs (config) and the manifest go through oci-client.
//!
//! Nothing is staged on disk; an aborted upload sends a body error so the registry drops
//! the partial blob.

use crate::checksum::sha256_digest;
use crate::error::ImportError;
use crate::oci::registry::Registry;
use bytes::Bytes;
use oci_client::RegistryOperation;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};
use std::io::{self, Write};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bytes buffered before a chunk is handed to the upload.
const SEND_CHUNK: usize = 1 << 20;

fn up_err(reg: &Registry, detail: impl Into<String>) -> ImportError {
    ImportError::Registry {
        reference: reg.display.clone(),
        detail: detail.into(),
    }
}

async fn response_detail(r: reqwest::Response) -> String {
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    format!("HTTP {status}: {}", body.trim())
}

/// A streamed blob upload in progress; write the blob's bytes into it.
pub(crate) struct BlobUpload {
    tx: Option<mpsc::Sender<Result<Bytes, io::Error>>>,
    buf: Vec<u8>,
    task: Option<JoinHandle<Result<String, String>>>,
    auth: Option<String>,
    handle: tokio::runtime::Handle,
}

impl BlobUpload {
    /// Opens an upload session and starts the streamed PATCH.
    pub(crate) fn start(reg: &Registry) -> Result<BlobUpload, ImportError> {
        let auth = reg.auth_header(RegistryOperation::Push)?;
        let base =
            Url::parse(&format!("{}/", reg.repo_url())).map_err(|e| up_err(reg, e.to_string()))?;
        let http = reg.http.clone();
        let auth2 = auth.clone();
        let location = reg.handle.block_on(async {
            let mut req = http.post(format!("{}/blobs/uploads/", reg.repo_url()));
            if let Some(a) = &auth2 {
                req = req.header(AUTHORIZATION, a);
            }
            let r = req
                .header(CONTENT_LENGTH, "0")
                .send()
                .await
                .map_err(|e| up_err(reg, format!("starting blob upload: {e}")))?;
            if r.status() != StatusCode::ACCEPTED {
                return Err(up_err(
                    reg,
                    format!("starting blob upload: {}", response_detail(r).await),
                ));
            }
            location_of(&r, &base).map_err(|e| up_err(reg, e))
        })?;
        let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(4);
        let body =
            reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            }));
        let auth3 = auth.clone();
        let task = reg.handle.spawn(async move {
            let mut req = http
                .patch(location.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(body);
            if let Some(a) = &auth3 {
                req = req.header(AUTHORIZATION, a);
            }
            let r = req
                .send()
                .await
                .map_err(|e| format!("uploading layer: {e}"))?;
            if r.status() != StatusCode::ACCEPTED && r.status() != StatusCode::NO_CONTENT {
                return Err(format!("uploading layer: {}", response_detail(r).await));
            }
            match Url::parse(&location) {
                Ok(base) => location_of(&r, &base).or(Ok(location)),
                Err(_) => Ok(location),
            }
        });
        Ok(BlobUpload {
            tx: Some(tx),
            buf: Vec::with_capacity(SEND_CHUNK),
            task: Some(task),
            auth,
            handle: reg.handle.clone(),
        })
    }

    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(SEND_CHUNK),
        ));
        match &self.tx {
            Some(tx) => tx
                .blocking_send(Ok(chunk))
                .map_err(|_| io::Error::other("the registry upload stopped")),
            None => Err(io::Error::other("upload already finished")),
        }
    }

    /// If the upload task already failed, its error (the root cause of a write error).
    pub(crate) fn failure(&mut self, reg: &Registry) -> Option<ImportError> {
        self.tx.take();
        let task = self.task.take()?;
        match self.handle.block_on(task) {
            Ok(Err(e)) => Some(up_err(reg, e)),
            _ => None,
        }
    }

    /// Ends the body and commits the blob under `digest`.
    pub(crate) fn finish(mut self, reg: &Registry, digest: &str) -> Result<(), ImportError> {
        self.send_buf().map_err(|e| {
            self.failure(reg)
                .unwrap_or_else(|| ImportError::io("uploading layer", e))
        })?;
        self.tx.take();
        let task = self
            .task
            .take()
            .ok_or_else(|| up_err(reg, "upload already finished"))?;
        let location = self
            .handle
            .block_on(task)
            .map_err(|e| up_err(reg, format!("upload task: {e}")))?
            .map_err(|e| up_err(reg, e))?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        let http = reg.http.clone();
        let auth = self.auth.clone();
        reg.handle.block_on(async {
            let mut req = http.put(url).header(CONTENT_LENGTH, "0");
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a);
            }
            let r = req
                .send()
                .await
                .map_err(|e| up_err(reg, format!("committing layer {digest}: {e}")))?;
            if r.status() != StatusCode::CREATED {
                return Err(up_err(
                    reg,
                    format!("committing layer {digest}: {}", response_detail(r).await),
                ));
            }
            Ok(())
        })
    }
}

impl Write for BlobUpload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= SEND_CHUNK {
            self.send_buf()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BlobUpload {
    fn drop(&mut self) {
        // Unfinished: make the request fail so the registry discards the partial blob.
        if let Some(tx) = self.tx.take() {
            let _ = tx.try_send(Err(io::Error::other("push aborted")));
        }
    }
}

fn location_of(r: &reqwest::Response, base: &Url) -> Result<String, String> {
    let loc = r
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("registry sent no upload Location")?;
    base.join(loc)
        .map(|u| u.to_string())
        .map_err(|e| format!("bad upload Location {loc:?}: {e}"))
}

/// Uploads a small blob (the config).
pub(crate) fn push_blob(reg: &Registry, data: &[u8], digest: &str) -> Result<(), ImportError> {
    reg.handle.block_on(async {
        reg.client
            .store_auth_if_needed(reg.reference.resolve_registry(), &reg.auth)
            .await;
        reg.client
            .push_blob(&reg.reference, data, digest)
            .await
            .map(|_| ())
            .map_err(|e| up_err(reg, format!("pushing blob {digest}: {e}")))
    })
}

/// Uploads the manifest under the reference's tag; returns its digest.
pub(crate) fn push_manifest(reg: &Registry, manifest: Vec<u8>) -> Result<String, ImportError> {
    let digest = sha256_digest(&manifest);
    reg.handle.block_on(async {
        reg.client
            .push_manifest_raw(
                &reg.reference,
                manifest,
                HeaderValue::from_static(super::MANIFEST_MEDIA_TYPE),
            )
            .await
            .map_err(|e| up_err(reg, format!("pushing manifest: {e}")))
    })?;
    Ok(digest)
}
