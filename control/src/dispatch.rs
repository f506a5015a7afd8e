//! The one dispatcher: a [`Request`] in, a [`Response`] (or a typed error) out, with
//! progress events along the way. Used in-process by the CLI when no server runs, and by
//! the control server when one does.
//!
//! Besides its JSON, a request comes with a [`Context`]: a cancel flag (Ctrl-C in the
//! CLI, or the client going away from the server) and where standard input is, for an
//! import from `-`; inside `platter serve` also the [`VmHost`] that the VM use cases
//! (`crate::vm`) need to define and boot VMs.

use std::fs::File;
use std::sync::Arc;

use platter_controller::vm::StateChange;
use platter_importer::CancelFlag;
use platter_snapshotter::Store;
use platter_types::Name;

use crate::api::{Event, Request, Response};
pub use crate::error::ControlError;
use crate::export::export;
use crate::vm::VmHost;

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
    /// Set by `platter serve`: VMs can be defined and booted (their disks are served).
    pub vm_host: Option<Arc<VmHost>>,
}

impl Context {
    /// The context of the CLI working on the store itself.
    pub fn in_process(cancel: CancelFlag) -> Context {
        Context {
            cancel,
            stdin: Stdin::Own,
            vm_host: None,
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
        Request::VolumeList { all } => Response::Volumes {
            items: store
                .list()?
                .into_iter()
                .filter(|v| {
                    let volume = v.name.split('@').next().unwrap_or_default();
                    all || !crate::vm::is_cache_name(volume)
                })
                .map(Into::into)
                .collect(),
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
            // A VM's disk goes with the VM (`vm delete`), never from under it.
            crate::vm::locked(ctx.vm_host.as_deref(), crate::vm::VOLUME_USES, || {
                crate::vm::check_volume_unused(store, &target)?;
                store.delete(&target).map_err(ControlError::from)
            })?;
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
        Request::Apply {
            file,
            text,
            dry_run,
        } => {
            if !dry_run {
                crate::objects::serving(ctx.vm_host.as_deref(), store)?;
            }
            let applied =
                crate::objects::apply(store, &file, &text, dry_run, crate::objects::now())?;
            if let Some(h) = &ctx.vm_host {
                h.runtime().wake();
            }
            Response::Applied(applied)
        }
        Request::ObjectGet {
            kind,
            name,
            namespace,
        } => Response::Objects {
            items: crate::objects::query(store, kind, name.as_deref(), namespace.as_deref())?,
        },
        Request::ObjectDelete {
            kind,
            name,
            namespace,
        } => {
            let host = crate::objects::serving(ctx.vm_host.as_deref(), store)?;
            let ns = namespace.as_deref().unwrap_or("default");
            let key = crate::objects::key(ns, &name);
            crate::objects::delete(store, kind, &key, crate::objects::now())?;
            host.runtime().wake();
            Response::ObjectDeleting { kind, name }
        }
        Request::Upload { name, namespace } => {
            let ns = namespace.unwrap_or_else(|| "default".into());
            crate::objects::upload(store, &ns, &name, ctx, events)?
        }
        req => return vm_request(store, req, ctx, events),
    })
}

/// The VM use cases (`crate::vm`).
fn vm_request(
    store: &Store,
    req: Request,
    ctx: Context,
    events: &mut dyn FnMut(Event),
) -> Result<Response, ControlError> {
    let host = ctx.vm_host.clone();
    let host = host.as_deref();
    match req {
        Request::VmCreate { params } => Ok(Response::VmInfo {
            vm: crate::vm::create(store, host, &params, ctx, events)?,
        }),
        Request::VmStart { name, connect } => {
            match declared_request(store, host, &name, StateChange::Start)? {
                Some(r) => Ok(r),
                None => crate::vm::start(store, host, &name, connect.as_deref()),
            }
        }
        Request::VmStop {
            name,
            timeout,
            connect,
        } => match declared_request(store, host, &name, StateChange::Stop)? {
            Some(r) => Ok(r),
            None => crate::vm::stop(store, &name, timeout, connect.as_deref()),
        },
        Request::VmRestart {
            name,
            timeout,
            connect,
        } => crate::vm::restart(store, &name, timeout, connect.as_deref()),
        Request::VmDelete { name, connect } => {
            crate::objects::check_not_declared(store, &name)?;
            crate::vm::delete(store, host, &name, connect.as_deref())
        }
        Request::VmStatus { connect } => crate::vm::status(store, connect.as_deref()),
        Request::VmConsole {
            name,
            connect,
            follow,
        } => crate::vm::console(store, &name, connect.as_deref(), follow),
        Request::ImageEnsure { source, registry } => {
            let cached =
                crate::vm::ensure_image(store, host, &source, &registry, ctx.cancel, events)?;
            Ok(Response::Image {
                base: cached.base,
                iso: cached.content == platter_launcher::probe::Content::Iso,
            })
        }
        other => Err(ControlError::Protocol {
            path: store.dir().to_path_buf(),
            detail: format!("request {other:?} reached the VM use cases"),
        }),
    }
}

/// `vm start/stop` of a VM that a VirtualMachine object makes: the object is told (as
/// `virtctl` tells KubeVirt) and the reconciler in `platter serve` acts; `None` for VMs
/// of `vm create`.
fn declared_request(
    store: &Store,
    host: Option<&VmHost>,
    name: &Name,
    change: StateChange,
) -> Result<Option<Response>, ControlError> {
    if !crate::objects::declares(store, name)? {
        return Ok(None);
    }
    crate::objects::serving(host, store)?;
    let message = crate::objects::request_state(store, name, change)?;
    if let Some(h) = host {
        h.runtime().wake();
    }
    Ok(message.map(|message| Response::VmRequested {
        name: name.to_string(),
        message,
    }))
}
