//! `platter vm …`: VMs run by libvirt whose disks are exports of `platter serve`.
//!
//! Store changes (clones for throw-away disks, VM records) go through the control socket
//! of the running server; libvirt calls are made here. A VM needs `platter serve` running
//! on its store: that is what serves its disks.
//!
//! Every subcommand takes `--connect URI`; without it a VM is reached through the URI it
//! was created with (kept in its record), else `qemu:///system`. An `--image` that is an
//! ISO 9660 image becomes a read-only CD-ROM (the cached image's `@base` snapshot, shared,
//! never cloned); any other image a throw-away clone booted as a disk.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use platter_control::{client, Request, Response};
use platter_launcher::cloudinit::build_seed_iso_from_file;
use platter_launcher::probe::{export_content, Content};
use platter_launcher::{
    AccelChoice, Boot, Launcher, Media, StopOutcome, VmDisk, VmRecord, VmSpec, VmState, DEFAULT_URI,
};
use platter_types::{format_size, Name, VolumeRef};

use crate::args::OutputFormat;
use crate::run::control_socket;
use crate::usage::Usage;

#[derive(Debug, Subcommand)]
pub enum VmCmd {
    /// Define a VM (and start it with --start).
    Create(Box<CreateArgs>),
    Start {
        name: Name,
        #[command(flatten)]
        libvirt: Connect,
    },
    /// ACPI shutdown, then power off after --timeout.
    Stop {
        name: Name,
        #[arg(long, default_value = "30")]
        timeout: u64,
        #[command(flatten)]
        libvirt: Connect,
    },
    Restart {
        name: Name,
        #[arg(long, default_value = "30")]
        timeout: u64,
        #[command(flatten)]
        libvirt: Connect,
    },
    /// Power off, undefine, and delete the VM's throw-away disks.
    Delete {
        name: Name,
        #[command(flatten)]
        libvirt: Connect,
    },
    List {
        #[command(flatten)]
        libvirt: Connect,
    },
    /// Print the serial console log; --follow keeps printing while the VM runs.
    Console {
        name: Name,
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        libvirt: Connect,
    },
}

/// `--connect URI`, shared by every `vm` subcommand.
#[derive(Debug, Args, Default)]
pub struct Connect {
    /// libvirt URI [default: the one the VM was created with, else qemu:///system].
    #[arg(long, value_name = "URI")]
    pub connect: Option<String>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    pub name: Name,
    /// Boot from (and write to) this volume. With --image ISO: the volume is the disk and
    /// the ISO a CD-ROM next to it.
    #[arg(long)]
    pub volume: Option<Name>,
    /// Boot from a throw-away clone of this image (containerDisk semantics); an ISO image
    /// is attached as a read-only CD-ROM instead.
    #[arg(long, required_unless_present = "volume")]
    pub image: Option<String>,
    #[arg(long, default_value = "512M", value_parser = parse_size)]
    pub memory: u64,
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    #[arg(long, requires = "kernel")]
    pub initrd: Option<PathBuf>,
    #[arg(long, requires = "kernel")]
    pub cmdline: Option<String>,
    #[arg(long)]
    pub cloud_init_user_data: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    pub accel: AccelChoice,
    /// libvirt URI [default: qemu:///system]; kept in the VM's record for later commands.
    #[arg(long, value_name = "URI")]
    pub connect: Option<String>,
    #[arg(long)]
    pub start: bool,
    #[command(flatten)]
    pub registry: crate::args::RegistryArgs,
}

fn parse_size(s: &str) -> Result<u64, String> {
    platter_types::parse_size(s).map_err(|e| e.to_string())
}

/// A connection to the running server of this store, or a clear error.
struct Server {
    dir: PathBuf,
}

impl Server {
    fn connect(dir: &Path) -> Result<Server> {
        let sock = control_socket(dir);
        if client::connect(&sock).is_none() {
            bail!("platter serve is not running for store {}: VMs need it to serve their disks (start `platter --store {} serve`)", dir.display(), dir.display());
        }
        Ok(Server {
            dir: dir.to_path_buf(),
        })
    }

    fn call(&self, req: Request) -> Result<Response> {
        crate::run::execute(&self.dir, req, OutputFormat::Table)
    }

    /// Whether the store has a record of VM `name`.
    fn has_record(&self, name: &Name) -> Result<bool> {
        match self.call(Request::VmList)? {
            Response::Vms { items } => Ok(items
                .iter()
                .any(|r| r.get("name").and_then(|n| n.as_str()) == Some(name.as_str()))),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    fn nbd_socket(&self) -> PathBuf {
        self.dir.join("run").join("nbd.sock")
    }
}

/// The record of VM `name`, through the running server or from the store itself: a VM
/// that does not exist is reported as such whether or not `platter serve` runs.
fn record(dir: &Path, name: &Name) -> Result<VmRecord> {
    // Looking must not create a store (opening one in-process would).
    if !dir.exists() {
        bail!(
            "vm {name} does not exist: there is no store at {}",
            dir.display()
        );
    }
    match crate::run::execute(
        dir,
        Request::VmGet { name: name.clone() },
        OutputFormat::Table,
    )? {
        Response::Vm { record } => {
            serde_json::from_value(record).with_context(|| format!("vm {name}: record"))
        }
        other => bail!("unexpected reply {other:?}"),
    }
}

/// What `vm create` can refuse before it needs a server: resources out of range (a usage
/// error) and files that are not there.
fn check_create_args(a: &CreateArgs) -> Result<()> {
    let placeholder = VmDisk {
        volume: VolumeRef::volume(a.name.clone()),
        throwaway: false,
        media: Media::Disk,
    };
    let mut spec = VmSpec::new(a.name.clone(), vec![placeholder]);
    spec.memory_bytes = a.memory;
    spec.cpus = a.cpus;
    if let Err(reason) = spec.validate() {
        let e = platter_launcher::LauncherError::InvalidSpec {
            name: a.name.to_string(),
            reason,
        };
        return Err(Usage(e.to_string()).into());
    }
    let files = [
        ("--kernel", &a.kernel),
        ("--initrd", &a.initrd),
        ("--cloud-init-user-data", &a.cloud_init_user_data),
    ];
    for (opt, path) in files {
        let Some(path) = path else { continue };
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => bail!("{opt} {}: not a file", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("{opt} {}: no such file", path.display())
            }
            Err(e) => return Err(e).with_context(|| format!("{opt} {}", path.display())),
        }
    }
    Ok(())
}

/// The libvirt URI for VM `name` when the caller may have no record at hand (stop,
/// restart): `--connect`, else the record's, else the default. A missing record is not an
/// error here: libvirt then says whether the VM exists.
fn uri_for(dir: &Path, name: &Name, connect: Option<&str>) -> String {
    if let Some(uri) = connect {
        return uri.to_string();
    }
    match crate::run::execute(
        dir,
        Request::VmGet { name: name.clone() },
        OutputFormat::Table,
    ) {
        Ok(Response::Vm { record }) => match serde_json::from_value::<VmRecord>(record) {
            Ok(r) => r.uri_or(None).to_string(),
            Err(e) => {
                tracing::debug!(vm = %name, error = %e, "unreadable vm record; default URI");
                DEFAULT_URI.to_string()
            }
        },
        other => {
            tracing::debug!(vm = %name, ?other, "no vm record; default URI");
            DEFAULT_URI.to_string()
        }
    }
}

pub fn run(dir: &Path, cmd: VmCmd, output: OutputFormat) -> Result<()> {
    match cmd {
        VmCmd::Create(a) => create(dir, *a, output),
        VmCmd::Start { name, libvirt } => {
            let rec = record(dir, &name)?;
            Server::connect(dir)?;
            let l = Launcher::new(Some(rec.uri_or(libvirt.connect.as_deref())))?;
            l.ensure_defined(&rec)?;
            l.start(name.as_str())?;
            println!("started vm {name}");
            Ok(())
        }
        VmCmd::Stop {
            name,
            timeout,
            libvirt,
        } => {
            let uri = uri_for(dir, &name, libvirt.connect.as_deref());
            let outcome =
                Launcher::new(Some(&uri))?.stop(name.as_str(), Duration::from_secs(timeout))?;
            let how = match outcome {
                StopOutcome::AlreadyStopped => "it was not running".to_string(),
                StopOutcome::Graceful => "shut down by the guest".to_string(),
                StopOutcome::Forced => format!("powered off after {timeout} s"),
            };
            println!("stopped vm {name} ({how})");
            Ok(())
        }
        VmCmd::Restart {
            name,
            timeout,
            libvirt,
        } => {
            let uri = uri_for(dir, &name, libvirt.connect.as_deref());
            Launcher::new(Some(&uri))?.restart(name.as_str(), Duration::from_secs(timeout))?;
            println!("restarted vm {name}");
            Ok(())
        }
        VmCmd::Delete { name, libvirt } => delete(dir, &name, libvirt.connect.as_deref()),
        VmCmd::List { libvirt } => list(dir, output, libvirt.connect.as_deref()),
        VmCmd::Console {
            name,
            follow,
            libvirt,
        } => console(dir, &name, follow, libvirt.connect.as_deref()),
    }
}

/// The disks of a new VM from `--volume` and `--image`: a throw-away clone of a disk
/// image, or an ISO image's cached snapshot as a CD-ROM (after the volume, if any, so a
/// blank volume falls through to the CD under BIOS boot).
fn create_disks(srv: &Server, a: &CreateArgs) -> Result<Vec<VmDisk>> {
    let volume = a.volume.as_ref().map(|v| VmDisk {
        volume: VolumeRef::volume(v.clone()),
        throwaway: false,
        media: Media::Disk,
    });
    let Some(image) = &a.image else {
        return match volume {
            Some(v) => Ok(vec![v]),
            None => bail!("vm create needs --volume or --image"),
        };
    };
    let base = crate::image::ensure_cached(&srv.dir, image, &a.registry)?;
    let content = export_content(&srv.nbd_socket(), &base.to_string())
        .with_context(|| format!("vm {}: image {image}", a.name))?;
    match (content, volume) {
        (Content::Iso, volume) => {
            let cd = VmDisk {
                volume: base,
                throwaway: false,
                media: Media::Cdrom,
            };
            Ok(volume.into_iter().chain([cd]).collect())
        }
        (Content::Disk, Some(_)) => bail!(
            "vm {}: image {image} is a disk image, not an ISO: --volume with --image attaches an ISO as a CD-ROM next to the volume; boot a disk image with --image alone",
            a.name
        ),
        (Content::Disk, None) => {
            let clone = Name::new(&format!("{}-disk", a.name))
                .with_context(|| format!("vm name {} is too long for its disk's name", a.name))?;
            srv.call(Request::VolumeClone {
                source: base,
                name: clone.clone(),
            })
            .with_context(|| format!("vm {}: making its throw-away disk {clone}", a.name))?;
            Ok(vec![VmDisk {
                volume: VolumeRef::volume(clone),
                throwaway: true,
                media: Media::Disk,
            }])
        }
    }
}

/// `vda`, `img-…@base (CD-ROM)`, `vm-disk (throw-away clone)`, joined.
fn describe_disks(disks: &[VmDisk]) -> String {
    disks
        .iter()
        .map(|d| match (d.media, d.throwaway) {
            (Media::Cdrom, _) => format!("{} (CD-ROM)", d.volume),
            (Media::Disk, true) => format!("{} (throw-away clone)", d.volume),
            (Media::Disk, false) => d.volume.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn create(dir: &Path, a: CreateArgs, output: OutputFormat) -> Result<()> {
    check_create_args(&a)?;
    let srv = Server::connect(dir)?;
    let launcher = Launcher::new(a.connect.as_deref())?;
    // Checked before anything is made: a second create must not touch the first VM's disk.
    if srv.has_record(&a.name)? {
        bail!(
            "vm {} already exists in store {}; delete it first (`platter vm delete {}`) or pick another name",
            a.name,
            dir.display(),
            a.name
        );
    }
    let disks = create_disks(&srv, &a)?;
    let throwaway: Vec<VolumeRef> = disks
        .iter()
        .filter(|d| d.throwaway)
        .map(|d| d.volume.clone())
        .collect();
    let record = match define(dir, &srv, &launcher, &a, disks) {
        Ok(r) => r,
        Err(e) => {
            // Nothing of a VM that was never defined stays behind.
            for v in throwaway {
                let _ = srv.call(Request::VolumeDelete { target: v });
            }
            return Err(e);
        }
    };
    srv.call(Request::VmPut {
        name: a.name.clone(),
        record: serde_json::to_value(&record)?,
    })?;
    if a.start {
        launcher.start(a.name.as_str())?;
    }
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&record)?),
        OutputFormat::Table => println!(
            "created vm {} ({}, {}, accel {:?}: {}, libvirt {}){}",
            a.name,
            format_size(record.memory_bytes),
            describe_disks(&record.disks),
            record.accel.accel,
            record.accel.reason,
            launcher.uri(),
            if a.start { ", started" } else { "" }
        ),
    }
    Ok(())
}

/// The spec from the arguments, the cloud-init seed, and the libvirt domain.
fn define(
    dir: &Path,
    srv: &Server,
    launcher: &Launcher,
    a: &CreateArgs,
    disks: Vec<VmDisk>,
) -> Result<VmRecord> {
    let vm_dir = dir.join("vms");
    std::fs::create_dir_all(&vm_dir).with_context(|| format!("creating {}", vm_dir.display()))?;
    let mut spec = VmSpec::new(a.name.clone(), disks);
    spec.memory_bytes = a.memory;
    spec.cpus = a.cpus;
    spec.accel = a.accel;
    if let Some(kernel) = &a.kernel {
        spec.boot = Boot::Kernel {
            kernel: std::path::absolute(kernel)?,
            initrd: a.initrd.as_ref().map(std::path::absolute).transpose()?,
            cmdline: a.cmdline.clone(),
        };
    }
    if let Some(ud) = &a.cloud_init_user_data {
        let seed = vm_dir.join(format!("{}.seed.iso", a.name));
        build_seed_iso_from_file(&a.name, ud, &seed)?;
        spec.cloud_init_seed = Some(seed);
    }
    let console_log = vm_dir.join(format!("{}.console.log", a.name));
    let created = launcher.create(&spec, &srv.nbd_socket(), &console_log);
    if created.is_err() {
        if let Some(seed) = &spec.cloud_init_seed {
            let _ = std::fs::remove_file(seed);
        }
    }
    Ok(created?)
}

fn delete(dir: &Path, name: &Name, connect: Option<&str>) -> Result<()> {
    let rec = record(dir, name)?;
    let srv = Server::connect(dir)?;
    // Refused before anything is touched: a throw-away disk that was snapshotted and
    // cloned cannot go while its clones need it.
    let volumes = match srv.call(Request::VolumeList)? {
        Response::Volumes { items } => items,
        other => bail!("unexpected reply {other:?}"),
    };
    for disk in rec.throwaway_volumes() {
        let disk = disk.volume.as_str();
        let dependants: Vec<&str> = volumes
            .iter()
            .filter(|v| {
                v.origin.as_deref().is_some_and(|o| {
                    o == disk || o.strip_prefix(disk).is_some_and(|r| r.starts_with('@'))
                })
            })
            .map(|v| v.name.as_str())
            .collect();
        if !dependants.is_empty() {
            bail!(
                "cannot delete vm {name}: its throw-away disk {disk} has clones that depend on it ({}); delete them first",
                dependants.join(", ")
            );
        }
    }
    let launcher = Launcher::new(Some(rec.uri_or(connect)))?;
    match launcher.delete(name.as_str()) {
        Ok(()) | Err(platter_launcher::LauncherError::NoSuchVm { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    for v in rec.throwaway_volumes() {
        srv.call(Request::VolumeDelete { target: v.clone() })?;
    }
    for f in [Some(rec.console_log.clone()), rec.cloud_init_seed.clone()]
        .into_iter()
        .flatten()
    {
        let _ = std::fs::remove_file(f);
    }
    srv.call(Request::VmRemove { name: name.clone() })?;
    println!("deleted vm {name}");
    Ok(())
}

fn list(dir: &Path, output: OutputFormat, connect: Option<&str>) -> Result<()> {
    let records: Vec<VmRecord> =
        match crate::run::execute(dir, Request::VmList, OutputFormat::Table)? {
            Response::Vms { items } => items
                .into_iter()
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect(),
            other => bail!("unexpected reply {other:?}"),
        };
    // One connection per URI, made when first needed (an explicit --connect at once, so
    // that a bad URI is reported even with no VMs).
    let mut launchers: Vec<(String, Launcher)> = Vec::new();
    if let Some(uri) = connect {
        launchers.push((uri.to_string(), Launcher::new(Some(uri))?));
    }
    let mut rows = Vec::new();
    for r in &records {
        let uri = r.uri_or(connect);
        let i = match launchers.iter().position(|(u, _)| u == uri) {
            Some(i) => i,
            None => {
                launchers.push((uri.to_string(), Launcher::new(Some(uri))?));
                launchers.len() - 1
            }
        };
        let state = launchers[i]
            .1
            .state(r.name.as_str())
            .map(|s| s.to_string())
            .unwrap_or_else(|_| "undefined".into());
        rows.push(serde_json::json!({
            "name": r.name, "state": state, "accel": format!("{:?}", r.accel.accel).to_lowercase(),
            "memory": r.memory_bytes, "cpus": r.cpus, "uri": uri,
            "disks": r.disks.iter().filter(|d| d.media == Media::Disk).map(|d| d.volume.to_string()).collect::<Vec<_>>(),
            "cdroms": r.disks.iter().filter(|d| d.media == Media::Cdrom).map(|d| d.volume.to_string()).collect::<Vec<_>>(),
        }));
    }
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<12} {:<6} {:<8} {:<4} DISKS",
        "NAME", "STATE", "ACCEL", "MEMORY", "CPUS"
    );
    let names = |v: &serde_json::Value, suffix: &str| -> Vec<String> {
        v.as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|x| x.as_str())
                    .map(|x| format!("{x}{suffix}"))
                    .collect()
            })
            .unwrap_or_default()
    };
    for r in rows {
        let mut disks = names(&r["disks"], "");
        disks.extend(names(&r["cdroms"], "(cdrom)"));
        println!(
            "{:<20} {:<12} {:<6} {:<8} {:<4} {}",
            r["name"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            r["accel"].as_str().unwrap_or(""),
            format_size(r["memory"].as_u64().unwrap_or(0)),
            r["cpus"],
            disks.join(",")
        );
    }
    Ok(())
}

fn console(dir: &Path, name: &Name, follow: bool, connect: Option<&str>) -> Result<()> {
    let rec = record(dir, name)?;
    // Only --follow needs libvirt (to see the VM stop); an explicit --connect is checked
    // either way, so a wrong URI is never silently ignored.
    let launcher = if follow || connect.is_some() {
        Some(Launcher::new(Some(rec.uri_or(connect)))?)
    } else {
        None
    };
    let path = &rec.console_log;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        // libvirt makes the log when the VM first starts.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("vm {name} has no console output yet: it has never been started (`platter vm start {name}`)")
        }
        Err(e) => {
            return Err(e).with_context(|| format!("vm {name}: console log {}", path.display()))
        }
    };
    let mut out = std::io::stdout();
    let mut pos = 0u64;
    let launcher = launcher.filter(|_| follow);
    loop {
        // A restart truncates the log: start again from its beginning.
        if f.metadata().map(|m| m.len() < pos).unwrap_or(false) {
            pos = 0;
        }
        f.seek(SeekFrom::Start(pos))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        pos += buf.len() as u64;
        out.write_all(&buf)?;
        out.flush()?;
        let Some(l) = &launcher else { return Ok(()) };
        if buf.is_empty()
            && !matches!(
                l.state(name.as_str()),
                Ok(VmState::Running | VmState::Blocked | VmState::Paused)
            )
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
