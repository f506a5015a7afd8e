//! `platter vm …`: VMs run by libvirt whose disks are exports of `platter serve`.
//!
//! Store changes (clones for throw-away disks, VM records) go through the control socket
//! of the running server; libvirt calls are made here. A VM needs `platter serve` running
//! on its store: that is what serves its disks.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use platter_control::{client, Request, Response};
use platter_launcher::cloudinit::build_seed_iso_from_file;
use platter_launcher::{
    AccelChoice, Boot, Launcher, Media, StopOutcome, VmDisk, VmRecord, VmSpec, VmState,
};
use platter_types::{format_size, Name, VolumeRef};

use crate::args::OutputFormat;
use crate::run::control_socket;

#[derive(Debug, Subcommand)]
pub enum VmCmd {
    /// Define a VM (and start it with --start).
    Create(Box<CreateArgs>),
    Start {
        name: Name,
    },
    /// ACPI shutdown, then power off after --timeout.
    Stop {
        name: Name,
        #[arg(long, default_value = "30")]
        timeout: u64,
    },
    Restart {
        name: Name,
        #[arg(long, default_value = "30")]
        timeout: u64,
    },
    /// Power off, undefine, and delete the VM's throw-away disks.
    Delete {
        name: Name,
    },
    List,
    /// Print the serial console log; --follow keeps printing while the VM runs.
    Console {
        name: Name,
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    pub name: Name,
    /// Boot from (and write to) this volume.
    #[arg(long, conflicts_with = "image")]
    pub volume: Option<Name>,
    /// Boot from a throw-away clone of this image (containerDisk semantics).
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
    /// libvirt URI.
    #[arg(long)]
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

    fn record(&self, name: &Name) -> Result<VmRecord> {
        match self.call(Request::VmGet { name: name.clone() })? {
            Response::Vm { record } => {
                serde_json::from_value(record).with_context(|| format!("vm {name}: record"))
            }
            other => bail!("unexpected reply {other:?}"),
        }
    }

    fn nbd_socket(&self) -> PathBuf {
        self.dir.join("run").join("nbd.sock")
    }
}

pub fn run(dir: &Path, cmd: VmCmd, output: OutputFormat) -> Result<()> {
    match cmd {
        VmCmd::Create(a) => create(dir, *a, output),
        VmCmd::Start { name } => {
            let (srv, l) = (Server::connect(dir)?, Launcher::new(None)?);
            let rec = srv.record(&name)?;
            l.ensure_defined(&rec)?;
            l.start(name.as_str())?;
            println!("started vm {name}");
            Ok(())
        }
        VmCmd::Stop { name, timeout } => {
            let outcome = Launcher::new(None)?.stop(name.as_str(), Duration::from_secs(timeout))?;
            let how = match outcome {
                StopOutcome::AlreadyStopped => "it was not running".to_string(),
                StopOutcome::Graceful => "shut down by the guest".to_string(),
                StopOutcome::Forced => format!("powered off after {timeout} s"),
            };
            println!("stopped vm {name} ({how})");
            Ok(())
        }
        VmCmd::Restart { name, timeout } => {
            Launcher::new(None)?.restart(name.as_str(), Duration::from_secs(timeout))?;
            println!("restarted vm {name}");
            Ok(())
        }
        VmCmd::Delete { name } => delete(dir, &name),
        VmCmd::List => list(dir, output),
        VmCmd::Console { name, follow } => console(dir, &name, follow),
    }
}

fn create(dir: &Path, a: CreateArgs, output: OutputFormat) -> Result<()> {
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
    let (volume, throwaway) = match (&a.volume, &a.image) {
        (Some(v), _) => (VolumeRef::volume(v.clone()), false),
        (None, Some(image)) => {
            let base = crate::image::ensure_cached(&srv.dir, image, &a.registry)?;
            let clone = Name::new(&format!("{}-disk", a.name))
                .with_context(|| format!("vm name {} is too long for its disk's name", a.name))?;
            srv.call(Request::VolumeClone {
                source: base,
                name: clone.clone(),
            })
            .with_context(|| format!("vm {}: making its throw-away disk {clone}", a.name))?;
            (VolumeRef::volume(clone), true)
        }
        (None, None) => bail!("vm create needs --volume or --image"),
    };
    let vm_dir = dir.join("vms");
    std::fs::create_dir_all(&vm_dir).with_context(|| format!("creating {}", vm_dir.display()))?;
    let mut spec = VmSpec::new(
        a.name.clone(),
        vec![VmDisk {
            volume: volume.clone(),
            throwaway,
            media: Media::Disk,
        }],
    );
    spec.memory_bytes = a.memory;
    spec.cpus = a.cpus;
    spec.accel = a.accel;
    if let Some(kernel) = a.kernel {
        spec.boot = Boot::Kernel {
            kernel: std::path::absolute(kernel)?,
            initrd: a.initrd.map(std::path::absolute).transpose()?,
            cmdline: a.cmdline,
        };
    }
    if let Some(ud) = &a.cloud_init_user_data {
        let seed = vm_dir.join(format!("{}.seed.iso", a.name));
        build_seed_iso_from_file(&a.name, ud, &seed)?;
        spec.cloud_init_seed = Some(seed);
    }
    let console_log = vm_dir.join(format!("{}.console.log", a.name));
    let created = launcher.create(&spec, &srv.nbd_socket(), &console_log);
    let record = match created {
        Ok(r) => r,
        Err(e) => {
            if throwaway {
                let _ = srv.call(Request::VolumeDelete { target: volume });
            }
            return Err(e.into());
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
            "created vm {} ({}, disk {}{}, accel {:?}: {}){}",
            a.name,
            format_size(record.memory_bytes),
            volume,
            if throwaway { " (throw-away clone)" } else { "" },
            record.accel.accel,
            record.accel.reason,
            if a.start { ", started" } else { "" }
        ),
    }
    Ok(())
}

fn delete(dir: &Path, name: &Name) -> Result<()> {
    let srv = Server::connect(dir)?;
    let rec = srv.record(name)?;
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
    let launcher = Launcher::new(None)?;
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

fn list(dir: &Path, output: OutputFormat) -> Result<()> {
    let records: Vec<VmRecord> =
        match crate::run::execute(dir, Request::VmList, OutputFormat::Table)? {
            Response::Vms { items } => items
                .into_iter()
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect(),
            other => bail!("unexpected reply {other:?}"),
        };
    let launcher = Launcher::new(None)?;
    let rows: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let state = launcher.state(r.name.as_str()).map(|s| s.to_string()).unwrap_or_else(|_| "undefined".into());
            serde_json::json!({
                "name": r.name, "state": state, "accel": format!("{:?}", r.accel.accel).to_lowercase(),
                "memory": r.memory_bytes, "cpus": r.cpus,
                "disks": r.disks.iter().map(|d| d.volume.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<12} {:<6} {:<8} {:<4} DISKS",
        "NAME", "STATE", "ACCEL", "MEMORY", "CPUS"
    );
    for r in rows {
        println!(
            "{:<20} {:<12} {:<6} {:<8} {:<4} {}",
            r["name"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            r["accel"].as_str().unwrap_or(""),
            format_size(r["memory"].as_u64().unwrap_or(0)),
            r["cpus"],
            r["disks"]
                .as_array()
                .map(|d| d
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn console(dir: &Path, name: &Name, follow: bool) -> Result<()> {
    let rec: VmRecord = match crate::run::execute(
        dir,
        Request::VmGet { name: name.clone() },
        OutputFormat::Table,
    )? {
        Response::Vm { record } => serde_json::from_value(record)?,
        other => bail!("unexpected reply {other:?}"),
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
    let launcher = if follow {
        Some(Launcher::new(None)?)
    } else {
        None
    };
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
