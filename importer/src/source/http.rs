//! HTTP(S) sources: a streamed download that resumes with a Range request after an
//! interruption, and a random-access [`ReadAt`] over Range requests with a block cache (so
//! qcow2/vmdk/vhd over HTTP need no scratch copy).
//!
//! Requests retry transient failures (connection errors, 5xx, 408, 429) with exponential
//! backoff; other statuses fail at once with the URL and status. Resumes and Range reads
//! check the resource did not change (ETag / Last-Modified, If-Range). A `--checksum` is
//! computed over the one streamed download the image is decoded from (the import never
//! hashes a second download). Redirects are followed, proxies come from the environment
//! (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, upper or lower case).
//! Credentials never appear in messages.

use super::bridge::{self, BridgeReader, Item};
use super::{redact_url, tls};
use crate::error::ImportError;
use crate::options::{CancelFlag, Credentials, RegistryOptions};
use crate::progress::Throttle;
use bytes::Bytes;
use parking_lot::Mutex;
use platter_formats::ReadAt;
use reqwest::header::{HeaderMap, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use reqwest::{Response, StatusCode};
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// Range reads fetch and cache whole blocks of this size.
const BLOCK: u64 = 1 << 20;
/// Cached blocks (48 MiB).
const CACHE_BLOCKS: usize = 48;
/// Blocks fetched ahead on a miss (guest data is mostly laid out in order).
const READ_AHEAD: u64 = 4;

/// A configured HTTP client (TLS, proxies from the environment, credentials, retries).
pub(crate) struct HttpClient {
    client: reqwest::Client,
    creds: Option<Credentials>,
    opts: RegistryOptions,
    pub(crate) handle: Handle,
    /// Set by a cancelled import: downloads waiting on a silent server give up.
    cancel: CancelFlag,
}

fn net_err(url: &str, e: &reqwest::Error) -> ImportError {
    // reqwest's Display omits the cause chain, which holds the useful part (TLS, DNS).
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    ImportError::Network {
        url: redact_url(url),
        detail,
    }
}

fn status_err(url: &str, status: StatusCode) -> ImportError {
    let detail = match status.as_u16() {
        401 => "authentication required or refused (check --creds)".to_string(),
        403 => "access forbidden".to_string(),
        404 => "not found".to_string(),
        416 => "requested range not satisfiable".to_string(),
        _ => status.canonical_reason().unwrap_or("").to_string(),
    };
    ImportError::HttpStatus {
        url: redact_url(url),
        status: status.as_u16(),
        detail,
    }
}

/// Says in a transient error that the retries are spent, so it does not read as a first try.
fn gave_up(mut err: ImportError, attempts: u32) -> ImportError {
    if let ImportError::HttpStatus { detail, .. } | ImportError::Network { detail, .. } = &mut err {
        let sep = if detail.is_empty() { "" } else { " " };
        detail.push_str(&format!("{sep}(gave up after {attempts} attempts)"));
    }
    err
}

fn transient(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

impl HttpClient {
    pub(crate) fn new(opts: &RegistryOptions, handle: Handle) -> Result<HttpClient, ImportError> {
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("platter/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            .redirect(reqwest::redirect::Policy::limited(10))
            .danger_accept_invalid_certs(!opts.tls.verify);
        for c in tls::reqwest_certs(&tls::ca_files(&opts.tls)?)? {
            b = b.add_root_certificate(c);
        }
        let client = b.build().map_err(|e| net_err("(client setup)", &e))?;
        Ok(HttpClient {
            client,
            creds: opts.creds.clone(),
            opts: opts.clone(),
            handle,
            cancel: CancelFlag::new(),
        })
    }

    /// Streams of this client stop waiting for a silent server once `cancel` is set.
    pub(crate) fn with_cancel(mut self, cancel: CancelFlag) -> Self {
        self.cancel = cancel;
        self
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.opts.retry_delay.as_millis() as u64;
        Duration::from_millis(base.saturating_mul(1 << attempt.min(10)).min(10_000))
    }

    /// One GET with optional range and If-Range, retried while transient.
    async fn get(
        &self,
        url: &str,
        range: Option<(u64, Option<u64>)>,
        if_range: Option<&str>,
    ) -> Result<Response, ImportError> {
        let mut attempt = 0;
        loop {
            let mut req = self.client.get(url);
            if let Some((start, end)) = range {
                let v = match end {
                    Some(e) => format!("bytes={start}-{e}"),
                    None => format!("bytes={start}-"),
                };
                req = req.header(RANGE, v);
                if let Some(v) = if_range {
                    req = req.header(IF_RANGE, v);
                }
            }
            for (name, value) in &self.opts.headers.0 {
                req = req.header(name.as_str(), value.as_str());
            }
            req = match &self.creds {
                Some(Credentials::Basic { username, password }) => {
                    req.basic_auth(username, Some(password))
                }
                Some(Credentials::Bearer(t)) => req.bearer_auth(t),
                None => req,
            };
            let err = match req.send().await {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) if transient(r.status()) => status_err(url, r.status()),
                Ok(r) => return Err(status_err(url, r.status())),
                Err(e) => net_err(url, &e),
            };
            if attempt >= self.opts.retries {
                return Err(gave_up(err, attempt + 1));
            }
            tokio::time::sleep(self.backoff(attempt)).await;
            attempt += 1;
        }
    }
}

/// What the first response told us about a resource.
#[derive(Debug, Clone)]
pub(crate) struct HttpResource {
    pub url: String,
    pub len: Option<u64>,
    /// The server honours byte ranges.
    pub ranges: bool,
    /// ETag (strong) or Last-Modified, for If-Range on resume.
    pub validator: Option<String>,
}

fn validator(h: &HeaderMap) -> Option<String> {
    if let Some(e) = h.get(ETAG).and_then(|v| v.to_str().ok()) {
        if !e.starts_with("W/") {
            return Some(e.to_string());
        }
    }
    h.get(LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`).
pub(crate) fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (s, e) = range.split_once('-')?;
    let s: u64 = s.trim().parse().ok()?;
    let e: u64 = e.trim().parse().ok()?;
    if e < s {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    if total.is_some_and(|t| e >= t) {
        return None;
    }
    Some((s, e, total))
}

fn content_range(r: &Response) -> Option<(u64, u64, Option<u64>)> {
    r.headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_content_range)
}

/// Opens `url`: one GET with `Range: bytes=0-` (a 206 proves range support). Returns the
/// resource description and a stream of its bytes from offset 0.
pub(crate) fn open<'a>(
    client: Arc<HttpClient>,
    url: &str,
    progress: Option<&'a Throttle<'a>>,
) -> Result<(HttpResource, HttpStream<'a>), ImportError> {
    let handle = client.handle.clone();
    let resp = handle.block_on(client.get(url, Some((0, None)), None))?;
    let (ranges, len) = if resp.status() == StatusCode::PARTIAL_CONTENT {
        match content_range(&resp) {
            Some((0, _, total)) => (true, total),
            _ => {
                return Err(ImportError::Network {
                    url: redact_url(url),
                    detail: "bad Content-Range in a 206 response".into(),
                })
            }
        }
    } else {
        (false, resp.content_length())
    };
    let res = HttpResource {
        url: url.to_string(),
        len,
        ranges,
        validator: validator(resp.headers()),
    };
    let stream = start_stream(client, res.clone(), resp, progress);
    Ok((res, stream))
}

/// A download as a blocking `Read`, fed by a task on the network runtime that resumes
/// interrupted transfers.
pub(crate) type HttpStream<'a> = BridgeReader<'a>;

fn start_stream<'a>(
    client: Arc<HttpClient>,
    res: HttpResource,
    resp: Response,
    progress: Option<&'a Throttle<'a>>,
) -> HttpStream<'a> {
    let (tx, rx) = bridge::channel();
    let handle = client.handle.clone();
    let cancel = client.cancel.clone();
    handle.spawn(pump(client, res, resp, 0, tx));
    BridgeReader::new(rx, progress).with_cancel(handle, cancel)
}

/// Moves body chunks into the channel; on an interruption re-requests from the current
/// offset (Range + If-Range), up to `retries` times without progress.
async fn pump(
    client: Arc<HttpClient>,
    res: HttpResource,
    mut resp: Response,
    mut pos: u64,
    tx: mpsc::Sender<Item>,
) {
    let mut failures = 0u32;
    // Bytes to drop after a restart from 0 on a server without ranges.
    let mut skip = 0u64;
    loop {
        let err = match resp.chunk().await {
            Ok(Some(mut b)) => {
                failures = 0;
                if skip > 0 {
                    let k = skip.min(b.len() as u64);
                    let _ = b.split_to(k as usize);
                    skip -= k;
                    if b.is_empty() {
                        continue;
                    }
                }
                pos += b.len() as u64;
                if res.len.is_some_and(|l| pos > l) {
                    let _ = tx
                        .send(Item::Failed(ImportError::Network {
                            url: redact_url(&res.url),
                            detail: "server sent more bytes than announced".into(),
                        }))
                        .await;
                    return;
                }
                if tx.send(Item::Data(b)).await.is_err() {
                    return; // the reader is gone
                }
                continue;
            }
            Ok(None) => match res.len {
                Some(l) if pos < l => ImportError::Network {
                    url: redact_url(&res.url),
                    detail: format!("connection closed at byte {pos} of {l}"),
                },
                _ => return, // complete
            },
            Err(e) => net_err(&res.url, &e),
        };
        failures += 1;
        if failures > client.opts.retries {
            let _ = tx.send(Item::Failed(gave_up(err, failures))).await;
            return;
        }
        let note = format!(
            "download of {} interrupted at byte {pos} ({err}); resuming (attempt {failures} of {})",
            redact_url(&res.url),
            client.opts.retries
        );
        if tx.send(Item::Note(note)).await.is_err() {
            return;
        }
        tokio::time::sleep(client.backoff(failures - 1)).await;
        if tx.is_closed() {
            return; // the import ended during the backoff: nothing would read a resume
        }
        let next = if res.ranges {
            client
                .get(&res.url, Some((pos, None)), res.validator.as_deref())
                .await
        } else {
            client.get(&res.url, None, None).await
        };
        // If-Range asks the server to refuse a changed object, but one that ignores it
        // (or a server without ranges, restarted from 0) would splice two objects.
        if let (Ok(r), Some(v)) = (&next, &res.validator) {
            if validator(r.headers()).is_some_and(|now| now != *v) {
                let _ = tx
                    .send(Item::Failed(ImportError::SourceChanged {
                        url: redact_url(&res.url),
                    }))
                    .await;
                return;
            }
        }
        match next {
            Ok(r) if r.status() == StatusCode::PARTIAL_CONTENT => match content_range(&r) {
                Some((s, _, _)) if s == pos => resp = r,
                _ => {
                    let _ = tx
                        .send(Item::Failed(ImportError::Network {
                            url: redact_url(&res.url),
                            detail: format!("resume at byte {pos} got a different range"),
                        }))
                        .await;
                    return;
                }
            },
            Ok(r) => {
                if res.ranges && pos > 0 {
                    // We asked for a range with If-Range: a full body means it changed.
                    let _ = tx
                        .send(Item::Failed(ImportError::SourceChanged {
                            url: redact_url(&res.url),
                        }))
                        .await;
                    return;
                }
                // No range support: start over and drop what was already delivered
                // (`pos` stays the count of delivered bytes).
                skip = pos;
                resp = r;
            }
            Err(e) => {
                let _ = tx.send(Item::Failed(e)).await;
                return;
            }
        }
    }
}

struct BlockCache {
    blocks: VecDeque<(u64, Bytes)>,
}

impl BlockCache {
    fn get(&mut self, idx: u64) -> Option<Bytes> {
        let i = self.blocks.iter().position(|(b, _)| *b == idx)?;
        let e = self.blocks.remove(i)?;
        let data = e.1.clone();
        self.blocks.push_back(e);
        Some(data)
    }

    fn put(&mut self, idx: u64, data: Bytes) {
        if self.blocks.iter().any(|(b, _)| *b == idx) {
            return;
        }
        if self.blocks.len() >= CACHE_BLOCKS {
            self.blocks.pop_front();
        }
        self.blocks.push_back((idx, data));
    }
}

/// Random access over HTTP Range requests, 1 MiB blocks, LRU-cached, with read-ahead.
pub(crate) struct HttpReadAt {
    client: Arc<HttpClient>,
    res: HttpResource,
    len: u64,
    cache: Mutex<BlockCache>,
}

impl HttpReadAt {
    /// Needs a server that honours ranges and a known length.
    pub(crate) fn new(client: Arc<HttpClient>, res: HttpResource) -> Option<HttpReadAt> {
        let len = res.len?;
        if !res.ranges {
            return None;
        }
        Some(HttpReadAt {
            client,
            res,
            len,
            cache: Mutex::new(BlockCache {
                blocks: VecDeque::new(),
            }),
        })
    }

    /// Fetches blocks `first..=last` in one request; returns them.
    fn fetch(&self, first: u64, last: u64) -> Result<Vec<Bytes>, ImportError> {
        let start = first * BLOCK;
        let end = ((last + 1) * BLOCK).min(self.len) - 1;
        let want = end - start + 1;
        let url = self.res.url.clone();
        let body = self.client.handle.block_on(async {
            let mut attempt = 0u32;
            loop {
                let r = self
                    .client
                    .get(&url, Some((start, Some(end))), None)
                    .await?;
                if r.status() != StatusCode::PARTIAL_CONTENT {
                    return Err(ImportError::Network {
                        url: redact_url(&url),
                        detail: "server stopped honouring Range requests".into(),
                    });
                }
                if let (Some(v), Some(now)) = (&self.res.validator, validator(r.headers())) {
                    if *v != now {
                        return Err(ImportError::SourceChanged {
                            url: redact_url(&url),
                        });
                    }
                }
                match content_range(&r) {
                    Some((s, e, _)) if s == start && e == end => {}
                    _ => {
                        return Err(ImportError::Network {
                            url: redact_url(&url),
                            detail: format!("asked for bytes {start}-{end}, got a different range"),
                        })
                    }
                }
                match read_body(r, want).await {
                    Ok(b) => return Ok(b),
                    Err(e) if attempt < self.client.opts.retries => {
                        tracing::debug!("range read failed, retrying: {e}");
                        tokio::time::sleep(self.client.backoff(attempt)).await;
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        })?;
        let body = Bytes::from(body);
        let mut out = Vec::new();
        let mut off = 0usize;
        while off < body.len() {
            let n = (BLOCK as usize).min(body.len() - off);
            out.push(body.slice(off..off + n));
            off += n;
        }
        Ok(out)
    }
}

async fn read_body(mut r: Response, want: u64) -> Result<Vec<u8>, ImportError> {
    let url = r.url().to_string();
    let mut body = Vec::with_capacity(want as usize);
    while let Some(c) = r.chunk().await.map_err(|e| net_err(&url, &e))? {
        if body.len() as u64 + c.len() as u64 > want {
            return Err(ImportError::Network {
                url: redact_url(&url),
                detail: "range response longer than requested".into(),
            });
        }
        body.extend_from_slice(&c);
    }
    if body.len() as u64 != want {
        return Err(ImportError::Network {
            url: redact_url(&url),
            detail: format!("range response has {} of {want} bytes", body.len()),
        });
    }
    Ok(body)
}

impl ReadAt for HttpReadAt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {} bytes at {offset} past the end ({})",
                        buf.len(),
                        self.len
                    ),
                )
            })?;
        if buf.is_empty() {
            return Ok(());
        }
        let first = offset / BLOCK;
        let last = (end - 1) / BLOCK;
        let last_block = (self.len - 1) / BLOCK;
        let mut idx = first;
        while idx <= last {
            let cached = self.cache.lock().get(idx);
            let data = match cached {
                Some(d) => d,
                None => {
                    // Fetch this block and the following missing ones (read-ahead).
                    let mut upto = idx;
                    let limit = (last.max(idx + READ_AHEAD - 1)).min(last_block);
                    while upto < limit && self.cache.lock().get(upto + 1).is_none() {
                        upto += 1;
                    }
                    let blocks = self.fetch(idx, upto).map_err(crate::error::to_io)?;
                    let mut cache = self.cache.lock();
                    let mut firstb = None;
                    for (i, b) in blocks.into_iter().enumerate() {
                        if i == 0 {
                            firstb = Some(b.clone());
                        }
                        cache.put(idx + i as u64, b);
                    }
                    firstb.ok_or_else(|| io::Error::other("empty range response"))?
                }
            };
            let block_start = idx * BLOCK;
            let from = offset.max(block_start);
            let to = end.min(block_start + data.len() as u64);
            if to <= from {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short block"));
            }
            let src = &data[(from - block_start) as usize..(to - block_start) as usize];
            buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
            idx += 1;
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 0-99/100"),
            Some((0, 99, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes 9-5/100"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}
