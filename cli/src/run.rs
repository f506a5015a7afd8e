//! Turns a parsed command line into a control request, executes it (through a running
//! server's control socket, or in-process on the store), and prints the response.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use platter_control::api::{Compression, ExportFormat};
use platter_control::{client, Context as RequestContext, Request, Response};
use platter_snapshotter::Store;

use crate::args::{Cli, Command, CompressArg, ExportFormatArg, OutputFormat, VolumeCmd};
use crate::interrupt::Interrupts;
use crate::output;
use crate::progress::Progress;
use crate::usage::Usage;

/// The store directory: `--store`, else `$PLATTER_STORE`, else the per-user default
/// (`/var/lib/platter` for root, else `$XDG_DATA_HOME/platter` or
/// `$HOME/.local/share/platter`); never a path relative to wherever the command runs.
pub fn store_dir(cli: &Cli) -> Result<PathBuf> {
    if let Some(d) = &cli.store {
        return Ok(d.clone());
    }
    if let Some(d) = std::env::var_os("PLATTER_STORE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if is_root() {
        return Ok(PathBuf::from("/var/lib/platter"));
    }
    let absolute = |d: std::ffi::OsString| Some(PathBuf::from(d)).filter(|p| p.is_absolute());
    let data = std::env::var_os("XDG_DATA_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".local/share"))
        });
    match data {
        Some(d) => Ok(d.join("platter")),
        None => Err(Usage(
            "no default store: neither XDG_DATA_HOME nor HOME is an absolute path; give --store DIR or set PLATTER_STORE".into(),
        )
        .into()),
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub fn control_socket(store: &Path) -> PathBuf {
    platter_types::StoreLayout::new(store).control_socket()
}

/// Executes one request on the store in `dir`.
pub fn execute(dir: &Path, req: Request, output: OutputFormat) -> Result<Response> {
    call(dir, req, output, None)
}

/// Executes long work (an import, a push) that Ctrl-C or SIGTERM cancels; `what` names
/// it in the message then (see `interrupt`).
pub fn execute_interruptible(
    dir: &Path,
    req: Request,
    output: OutputFormat,
    what: &'static str,
) -> Result<Response> {
    let interrupts = Interrupts::watch()?;
    let result = call(dir, req, output, Some(&interrupts));
    interrupts.outcome(result, what)
}

fn call(
    dir: &Path,
    req: Request,
    output: OutputFormat,
    interrupts: Option<&Interrupts>,
) -> Result<Response> {
    let mut progress = Progress::new(output);
    let sock = control_socket(dir);
    if let Some(stream) = client::connect(&sock) {
        if let Some(i) = interrupts {
            i.shutdown_on_signal(
                stream
                    .try_clone()
                    .with_context(|| format!("control socket {}", sock.display()))?,
            );
        }
        // An import from `-` reads this process's stdin: its descriptor goes along.
        let stdin = std::io::stdin();
        let fds = match &req {
            Request::Import { source, .. } if source == "-" => vec![stdin.as_fd()],
            _ => Vec::new(),
        };
        return client::call_with_fds(stream, &sock, &req, &fds, &mut |e| progress.event(e))
            .map_err(Into::into);
    }
    check_store_dir(dir, &req)?;
    let store = match (writable(dir), req.only_reads()) {
        (true, _) => Store::open(dir),
        (false, true) => Store::open_read_only(dir),
        (false, false) => bail!(
            "store {} cannot be written by this user, or its filesystem is read-only: only commands that read it work there (list, inspect, get, export, push)",
            dir.display()
        ),
    }
    .with_context(|| format!("opening store {}", dir.display()))?;
    let cancel = interrupts.map(Interrupts::cancel_flag).unwrap_or_default();
    platter_control::handle(&store, req, RequestContext::in_process(cancel), &mut |e| {
        progress.event(e)
    })
    .map_err(Into::into)
}

/// Whether this process may change the store in `dir` (its directory and its database):
/// not on a read-only mount, nor a store of another user. A store that does not exist
/// yet counts as writable (opening it makes it, or says why not).
fn writable(dir: &Path) -> bool {
    use rustix::fs::{access, Access};
    let db = platter_types::StoreLayout::new(dir).meta_db();
    let ok = |p: &Path| match access(p, Access::WRITE_OK) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::NOENT,
    };
    ok(dir) && ok(&db)
}

/// Before a store is opened in this process: `dir` must be a directory, and a request
/// that only reads or changes what a store holds needs it to exist (opening a store
/// creates it: a typo in `--store` would list an empty store and leave it behind). An
/// existing empty directory becomes a store, as `--store` asked.
fn check_store_dir(dir: &Path, req: &Request) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Usage(format!(
            "store {} is not a directory (give --store a directory)",
            dir.display()
        ))
        .into());
    }
    if !req.may_create_store() && !dir.exists() {
        bail!(
            "there is no store at {}: check --store or PLATTER_STORE (a store is made by the first command that writes: volume create, import, vm create, apply, serve)",
            dir.display()
        );
    }
    Ok(())
}

pub fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Completion { shell } => return crate::reference::completion(*shell),
        Command::Man { dir } => return crate::reference::man_pages(dir),
        _ => {}
    }
    let dir = store_dir(&cli)?;
    let object_command = matches!(
        cli.command,
        Command::Get(_) | Command::Describe(_) | Command::Apply(_) | Command::Wait(_)
    );
    if matches!(cli.output, OutputFormat::Yaml | OutputFormat::Wide) && !object_command {
        return Err(Usage(
            "-o yaml and -o wide are for get (and apply, describe, wait): use -o table or -o json"
                .into(),
        )
        .into());
    }
    let req = match cli.command {
        Command::Volume(v) => volume_request(v)?,
        Command::Serve(a) => return crate::serve::run(&dir, a),
        Command::Import(a) => return crate::image::import(&dir, a, cli.output),
        Command::Push(a) => return crate::image::push(&dir, a, cli.output),
        Command::Vm(v) => return crate::vm::run(&dir, v, cli.output),
        Command::Apply(a) => return crate::objects::apply(&dir, a, cli.output),
        Command::Get(a) => return crate::objects::get(&dir, a, cli.output),
        Command::Describe(a) => return crate::objects::describe(&dir, a),
        Command::Delete(a) => return crate::objects::delete(&dir, a, cli.output),
        Command::Wait(a) => return crate::objects::wait(&dir, a, cli.output),
        Command::Upload(a) => return crate::objects::upload(&dir, a, cli.output),
        Command::Completion { .. } | Command::Man { .. } => return Ok(()),
    };
    let resp = match req {
        req @ Request::VolumeExport { .. } => {
            execute_interruptible(&dir, req, cli.output, "export")?
        }
        req => execute(&dir, req, cli.output)?,
    };
    output::print(&resp, cli.output)
}

fn volume_request(cmd: VolumeCmd) -> Result<Request> {
    Ok(match cmd {
        VolumeCmd::Create { name, size } => Request::VolumeCreate { name, size },
        VolumeCmd::List { all } => Request::VolumeList { all },
        VolumeCmd::Inspect { target } => Request::VolumeInspect { target },
        VolumeCmd::Snapshot { target } => {
            let snapshot = target
                .require_snapshot()
                .map_err(|_| {
                    Usage(format!(
                        "volume snapshot takes NAME@SNAP, e.g. {}@s1",
                        target.volume
                    ))
                })?
                .clone();
            Request::VolumeSnapshot {
                volume: target.volume,
                snapshot,
            }
        }
        VolumeCmd::Clone { source, name } => Request::VolumeClone { source, name },
        VolumeCmd::Resize { name, size } => Request::VolumeResize { name, size },
        VolumeCmd::Delete { target } => Request::VolumeDelete { target },
        VolumeCmd::Export(a) => {
            let path = std::path::absolute(&a.file)
                .with_context(|| format!("export path {}", a.file.display()))?;
            Request::VolumeExport {
                target: a.target,
                path,
                format: match a.format {
                    ExportFormatArg::Raw => ExportFormat::Raw,
                    ExportFormatArg::Qcow2 => ExportFormat::Qcow2,
                },
                compression: a.compress.map(|c| match c {
                    CompressArg::Zlib => Compression::Zlib,
                    CompressArg::Zstd => Compression::Zstd,
                }),
            }
        }
        VolumeCmd::Gc => Request::VolumeGc,
    })
}
