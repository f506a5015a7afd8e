//! Import and push requests: the importer's options built from the wire parameters, and
//! its progress turned into control events.

use std::sync::mpsc;

use platter_importer::oci::auth_file::AuthFile;
use platter_importer::push::{DiskFormat, LayerCompression};
use platter_importer::sink::StoreSink;
use platter_importer::{
    CancelFlag, Checksum, Credentials, Headers, ImportOptions, Platform, Progress, ProgressEvent,
    PushOptions, RegistryOptions, TlsOptions,
};
use platter_snapshotter::Store;
use platter_types::{Name, VolumeRef};

use crate::api::{Event, ImportParams, PushParams, RegistryParams, Response};
use crate::dispatch::{Context, ControlError, Stdin};

/// Bad parameters in an import or push request.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct ParamError {
    pub what: &'static str,
    pub detail: String,
}

fn param(what: &'static str) -> impl FnOnce(String) -> ParamError {
    move |detail| ParamError { what, detail }
}

pub fn registry_options(p: &RegistryParams) -> Result<(RegistryOptions, Platform), ParamError> {
    let creds = p
        .creds
        .as_deref()
        .map(Credentials::parse)
        .transpose()
        .map_err(param("--creds"))?;
    let platform = match &p.platform {
        Some(s) => Platform::parse(s).map_err(param("--platform"))?,
        None => Platform::default(),
    };
    let auth = match &p.auth_json {
        Some((name, text)) => Some(AuthFile::parse(text.as_bytes()).map_err(|e| ParamError {
            what: "imagePullSecret",
            detail: format!("{name}: {e}"),
        })?),
        None => None,
    };
    let opts = RegistryOptions {
        creds,
        authfile: p.authfile.clone(),
        auth,
        tls: TlsOptions {
            verify: p.tls_verify,
            cert_dir: p.cert_dir.clone(),
            extra_certs: p
                .ca_certs
                .iter()
                .map(|(name, pem)| (name.clone(), pem.clone().into_bytes()))
                .collect(),
        },
        headers: Headers::parse(&p.headers).map_err(param("header"))?,
        ..RegistryOptions::default()
    };
    Ok((opts, platform))
}

pub fn import_options(p: &ImportParams) -> Result<ImportOptions, ParamError> {
    let (registry, platform) = registry_options(&p.registry)?;
    let format = match p.format.as_deref() {
        None | Some("auto") => None,
        Some(f) => Some(f.parse().map_err(|_| ParamError {
            what: "--format",
            detail: format!("unknown format {f:?}"),
        })?),
    };
    let checksum = p
        .checksum
        .as_deref()
        .map(|c| {
            c.parse::<Checksum>().map_err(|e| ParamError {
                what: "--checksum",
                detail: e.to_string(),
            })
        })
        .transpose()?;
    Ok(ImportOptions {
        format,
        checksum,
        size: p.size,
        registry,
        platform,
        backing: p.backing.clone(),
        ..ImportOptions::default()
    })
}

pub fn push_options(p: &PushParams) -> Result<PushOptions, ParamError> {
    let (registry, platform) = registry_options(&p.registry)?;
    let disk_format = match p.disk_format.as_deref() {
        None | Some("qcow2") => DiskFormat::Qcow2,
        Some("raw") => DiskFormat::Raw,
        Some(f) => {
            return Err(ParamError {
                what: "--disk-format",
                detail: format!("{f:?} is not raw or qcow2"),
            })
        }
    };
    let compression = match p.compression.as_deref() {
        None | Some("gzip") => LayerCompression::Gzip,
        Some("zstd") => LayerCompression::Zstd,
        Some("none") => LayerCompression::None,
        Some(c) => {
            return Err(ParamError {
                what: "--compression",
                detail: format!("{c:?} is not gzip, zstd or none"),
            })
        }
    };
    Ok(PushOptions {
        disk_format,
        compression,
        registry,
        platform,
        ..PushOptions::default()
    })
}

/// Forwards importer progress (from any thread) into a channel.
pub struct ChannelProgress(
    pub std::sync::Mutex<mpsc::Sender<Event>>,
    /// The current phase's total, [`UNKNOWN_TOTAL`] for a stream of unknown length.
    std::sync::atomic::AtomicU64,
);

const UNKNOWN_TOTAL: u64 = u64::MAX;

impl ChannelProgress {
    pub fn new(tx: mpsc::Sender<Event>) -> Self {
        ChannelProgress(
            std::sync::Mutex::new(tx),
            std::sync::atomic::AtomicU64::new(UNKNOWN_TOTAL),
        )
    }
}

impl Progress for ChannelProgress {
    fn event(&self, e: ProgressEvent) {
        use std::sync::atomic::Ordering;
        let ev = match e {
            ProgressEvent::Started { total } => {
                self.1
                    .store(total.unwrap_or(UNKNOWN_TOTAL), Ordering::Relaxed);
                return;
            }
            ProgressEvent::Bytes { done } => Event::Progress {
                done,
                total: Some(self.1.load(Ordering::Relaxed))
                    .filter(|&t| t != UNKNOWN_TOTAL)
                    .map(|t| t.max(done)),
            },
            ProgressEvent::Message { text } => Event::Message {
                text,
                detail: false,
            },
            ProgressEvent::Detail { text } => Event::Message { text, detail: true },
            ProgressEvent::Finished => Event::Finished,
        };
        if let Ok(tx) = self.0.lock() {
            let _ = tx.send(ev);
        }
    }
}

/// Runs `work` on its own thread while relaying its events to `events` here.
pub fn with_events<T: Send>(
    events: &mut dyn FnMut(Event),
    work: impl FnOnce(&ChannelProgress) -> T + Send,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        let handle = s.spawn(move || {
            let p = ChannelProgress::new(tx);
            work(&p)
        });
        for e in rx {
            events(e);
        }
        match handle.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

pub fn import(
    store: &Store,
    source: &str,
    name: &Name,
    params: &ImportParams,
    ctx: Context,
    events: &mut dyn FnMut(Event),
) -> Result<Response, ControlError> {
    let mut opts = import_options(params)?;
    opts.cancel = ctx.cancel;
    if source == "-" {
        match ctx.stdin {
            Stdin::Own => {}
            Stdin::Passed(f) => opts.stdin = Some(std::sync::Arc::new(f)),
            Stdin::Absent => {
                return Err(ParamError {
                    what: "import from -",
                    detail: "the client's standard input did not come with the request \
                             (it is passed as SCM_RIGHTS ancillary data)"
                        .into(),
                }
                .into())
            }
        }
    }
    let sink = StoreSink::new(store, name).map_err(|e| match e {
        // The only destination StoreSink refuses is a name that is taken.
        e @ platter_importer::ImportError::InvalidDestination { .. } => {
            ControlError::ImportNameTaken {
                name: name.to_string(),
                inner: e,
            }
        }
        e => e.into(),
    })?;
    let (report, _) = with_events(events, |p| platter_importer::import(source, sink, &opts, p))?;
    let volume = store.inspect(&VolumeRef::volume(name.clone()))?.into();
    Ok(Response::Imported {
        report: serde_json::to_value(&report).unwrap_or_default(),
        volume,
    })
}

pub fn push(
    store: &Store,
    target: &VolumeRef,
    dest: &str,
    params: &PushParams,
    cancel: CancelFlag,
    events: &mut dyn FnMut(Event),
) -> Result<Response, ControlError> {
    let mut opts = push_options(params)?;
    opts.cancel = cancel;
    let vol = store.open_volume(target)?;
    let report = with_events(events, |p| platter_importer::push(&vol, dest, &opts, p))?;
    Ok(Response::Pushed {
        report: serde_json::to_value(&report).unwrap_or_default(),
    })
}
