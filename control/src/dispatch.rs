//! The one dispatcher: a [`Request`] in, a [`Response`] (or a typed error) out, with
//! progress events along the way. Used in-process by the CLI when no server runs, and by
//! the control server when one does.
//!
//! Besides its JSON, a request comes with a [`Context`]: a cancel flag (Ctrl-C in the
//! CLI, or the client going away from the server) and where standard input is, for an
//! import from `-`.

use std::fs::File;

use platter_importer::CancelFlag;
use platter_snapshotter::Store;

use crate::api::{Event, Request, Response};
pub use crate::error::ControlError;
use crate::export::export;

/// Where an import from `-` reads.
#[derive(Debug, Default)]
pub enum Stdin {
    /// This process's own standard input (the CLI working in-process).
    Own,
    /// A file the client passed with the request (its stdin, over the control socket).
    Passed(File),
    /// None: an import from `-` is refused (a server never reads its own stdin).
    #[default]
    Absent,
}

/// What a request brings besides its JSON line.
#[derive(Debug, Default)]
pub struct Context {
    /// Set to stop long work: an import or push then fails with `cancelled`, having
    /// removed what it wrote. Quick requests ignore it.
    pub cancel: CancelFlag,
    pub stdin: Stdin,
}

impl Context {
    /// The context of the CLI working on the store itself.
    pub fn in_process(cancel: CancelFlag) -> Context {
        Context {
            cancel,
            stdin: Stdin::Own,
        }
    }
}

pub fn handle(
    store: &Store,
    req: Request,
    ctx: Context,
    events: &mut dyn FnMut(Event),
) -> Result<Response, ControlError> {
    Ok(match req {
        Request::VolumeCreate { name, size } => {
            Response::Volume(store.create_volume(&name, size)?.into())
        }
        Request::VolumeList => Response::Volumes {
            items: store.list()?.into_iter().map(Into::into).collect(),
        },
        Request::VolumeInspect { target } => Response::Volume(store.inspect(&target)?.into()),
        Request::VolumeSnapshot { volume, snapshot } => {
            Response::Volume(store.snapshot(&volume, &snapshot)?.into())
        }
        Request::VolumeClone { source, name } => {
            Response::Volume(store.clone_volume(&source, &name)?.into())
        }
        Request::VolumeResize { name, size } => Response::Volume(store.resize(&name, size)?.into()),
        Request::VolumeDelete { target } => {
            store.delete(&target)?;
            Response::Deleted {
                target: target.to_string(),
            }
        }
        Request::VolumeExport {
            target,
            path,
            format,
            compression,
        } => {
            let vol = store.open_volume(&target)?;
            let report = export(&vol, &path, format, compression, &ctx.cancel, events)?;
            Response::Exported {
                target: target.to_string(),
                path,
                bytes_written: report.bytes_written,
                allocated: report.allocated,
            }
        }
        Request::VolumeGc => Response::Gc(store.gc()?.into()),
        Request::Ping => Response::Pong {
            pid: std::process::id(),
        },
        Request::Import {
            source,
            name,
            params,
        } => crate::transfer::import(store, &source, &name, &params, ctx, events)?,
        Request::Push {
            target,
            dest,
            params,
        } => crate::transfer::push(store, &target, &dest, &params, ctx.cancel, events)?,
        Request::VmPut { name, record } => {
            crate::vms::put(store, &name, &record)?;
            Response::Vm { record }
        }
        Request::VmGet { name } => Response::Vm {
            record: crate::vms::get(store, &name)?,
        },
        Request::VmList => Response::Vms {
            items: crate::vms::list(store)?,
        },
        Request::VmRemove { name } => {
            crate::vms::remove(store, &name)?;
            Response::VmRemoved {
                name: name.to_string(),
            }
        }
    })
}
