//! `platter vm …`: arguments → VM requests of the control API → output.
//!
//! The use cases (checks, the image cache, disks, libvirt, records) are in
//! `platter_control::vm`, run by `platter serve` (which serves the disks); only reading the
//! console log file is done here. Every subcommand takes `--connect URI`; without it a VM
//! is reached through the URI it was created with (kept in its record), else
//! `qemu:///system`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use platter_control::api::{VmCreateParams, VmInfo};
use platter_control::{ControlError, Request, Response};
use platter_launcher::{AccelChoice, StopOutcome};
use platter_types::{format_size, Name};

use crate::args::OutputFormat;
use crate::run::{execute, execute_interruptible};

#[derive(Debug, Subcommand)]
pub enum VmCmd {
    /// Define a VM (and start it with --start).
    Create(Box<CreateArgs>),
    /// Start a defined VM.
    Start {
        /// The VM.
        name: Name,
        #[command(flatten)]
        libvirt: Connect,
    },
    /// ACPI shutdown, then power off after --timeout.
    Stop {
        /// The VM.
        name: Name,
        /// Seconds to wait for the guest to power off before it is forced off.
        #[arg(long, default_value = "30")]
        timeout: u64,
        #[command(flatten)]
        libvirt: Connect,
    },
    /// Stop (as `vm stop`), then start.
    Restart {
        /// The VM.
        name: Name,
        /// Seconds to wait for the guest to power off before it is forced off.
        #[arg(long, default_value = "30")]
        timeout: u64,
        #[command(flatten)]
        libvirt: Connect,
    },
    /// Power off, undefine, and delete the VM's throw-away disks.
    Delete {
        /// The VM (one made by `vm create`; a declarative one goes with `platter delete`).
        name: Name,
        #[command(flatten)]
        libvirt: Connect,
    },
    /// Every VM of the store with its state.
    List {
        #[command(flatten)]
        libvirt: Connect,
    },
    /// Print the serial console log; --follow keeps printing while the VM runs.
    Console {
        /// The VM.
        name: Name,
        /// Keep printing what the guest writes while it runs.
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
    /// The VM's name (also its libvirt domain's).
    pub name: Name,
    /// Boot from (and write to) this volume. With --image ISO: the volume is the disk and
    /// the ISO a CD-ROM next to it.
    #[arg(long)]
    pub volume: Option<Name>,
    /// Boot from a throw-away clone of this image (containerDisk semantics); an ISO image
    /// is attached as a read-only CD-ROM instead.
    #[arg(long, required_unless_present = "volume")]
    pub image: Option<String>,
    /// Guest memory, as sizes are written (at least 32M).
    #[arg(long, default_value = "512M", value_parser = parse_size)]
    pub memory: u64,
    /// Virtual CPUs (1 to 255).
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Boot this kernel directly (with --initrd and --cmdline) instead of the disk's boot loader.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// The initrd for --kernel.
    #[arg(long, requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line for --kernel.
    #[arg(long, requires = "kernel")]
    pub cmdline: Option<String>,
    /// A cloud-init user-data file, given to the guest on a NoCloud seed CD-ROM.
    #[arg(long)]
    pub cloud_init_user_data: Option<PathBuf>,
    /// kvm, tcg, or auto (kvm when /dev/kvm boots a guest here, else tcg).
    #[arg(long, default_value = "auto")]
    pub accel: AccelChoice,
    /// libvirt URI [default: qemu:///system]; kept in the VM's record for later commands.
    #[arg(long, value_name = "URI")]
    pub connect: Option<String>,
    /// Start the VM once it is defined.
    #[arg(long)]
    pub start: bool,
    #[command(flatten)]
    pub registry: crate::args::RegistryArgs,
}

fn parse_size(s: &str) -> Result<u64, String> {
    platter_types::parse_size(s).map_err(|e| e.to_string())
}

/// Looking for a VM must not create a store (opening one in-process would).
fn store_exists(dir: &Path, name: &Name) -> Result<()> {
    if !dir.exists() {
        bail!(
            "vm {name} does not exist: there is no store at {}",
            dir.display()
        );
    }
    Ok(())
}

fn absolute(option: &str, path: &Option<PathBuf>) -> Result<Option<PathBuf>> {
    path.as_ref()
        .map(|p| std::path::absolute(p).with_context(|| format!("{option} {}", p.display())))
        .transpose()
}

/// The request of `vm create`, its paths absolute (the server may run elsewhere).
fn create_params(a: CreateArgs) -> Result<VmCreateParams> {
    Ok(VmCreateParams {
        kernel: absolute("--kernel", &a.kernel)?,
        initrd: absolute("--initrd", &a.initrd)?,
        cloud_init_user_data: absolute("--cloud-init-user-data", &a.cloud_init_user_data)?,
        image: a
            .image
            .as_deref()
            .map(crate::image::absolutize)
            .transpose()?,
        volume: a.volume,
        memory: a.memory,
        cpus: a.cpus,
        cmdline: a.cmdline,
        accel: a.accel,
        connect: a.connect,
        start: a.start,
        registry: a.registry.params(),
        name: a.name,
    })
}

pub fn run(dir: &Path, cmd: VmCmd, output: OutputFormat) -> Result<()> {
    match cmd {
        VmCmd::Create(a) => create(dir, *a, output),
        VmCmd::Start { name, libvirt } => {
            store_exists(dir, &name)?;
            let req = Request::VmStart {
                name: name.clone(),
                connect: libvirt.connect,
            };
            match execute(dir, req, OutputFormat::Table)? {
                r @ Response::VmRequested { .. } => crate::output::print(&r, output),
                r => print_vm(&vm_info(r)?, output, &format!("started vm {name}")),
            }
        }
        VmCmd::Stop {
            name,
            timeout,
            libvirt,
        } => {
            let req = Request::VmStop {
                name: name.clone(),
                timeout,
                connect: libvirt.connect,
            };
            let outcome = match execute(dir, req, OutputFormat::Table)? {
                r @ Response::VmRequested { .. } => return crate::output::print(&r, output),
                r => stopped(r)?,
            };
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
            let req = Request::VmRestart {
                name: name.clone(),
                timeout,
                connect: libvirt.connect,
            };
            stopped(execute(dir, req, OutputFormat::Table)?)?;
            println!("restarted vm {name}");
            Ok(())
        }
        VmCmd::Delete { name, libvirt } => {
            store_exists(dir, &name)?;
            let req = Request::VmDelete {
                name: name.clone(),
                connect: libvirt.connect,
            };
            match execute(dir, req, OutputFormat::Table)? {
                Response::VmDeleted { .. } => println!("deleted vm {name}"),
                other => bail!("unexpected reply {other:?}"),
            }
            Ok(())
        }
        VmCmd::List { libvirt } => list(dir, output, libvirt.connect),
        VmCmd::Console {
            name,
            follow,
            libvirt,
        } => console(dir, &name, follow, libvirt.connect),
    }
}

fn vm_info(resp: Response) -> Result<VmInfo> {
    match resp {
        Response::VmInfo { vm } => Ok(vm),
        other => bail!("unexpected reply {other:?}"),
    }
}

fn stopped(resp: Response) -> Result<StopOutcome> {
    match resp {
        Response::VmStopped { outcome, .. } => Ok(outcome),
        other => bail!("unexpected reply {other:?}"),
    }
}

fn print_vm(vm: &VmInfo, output: OutputFormat, line: &str) -> Result<()> {
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(vm)?),
        _ => println!("{line}"),
    }
    Ok(())
}

/// `root`, `img-…@base (CD-ROM)`, `vm-disk (throw-away clone)`, joined.
fn describe_disks(vm: &VmInfo) -> String {
    let disks = vm.disks.iter().map(|d| match vm.throwaway.contains(d) {
        true => format!("{d} (throw-away clone)"),
        false => d.clone(),
    });
    let cdroms = vm.cdroms.iter().map(|c| format!("{c} (CD-ROM)"));
    disks.chain(cdroms).collect::<Vec<_>>().join(", ")
}

fn create(dir: &Path, a: CreateArgs, output: OutputFormat) -> Result<()> {
    let params = create_params(a)?;
    // Checked before a store is opened or a server asked.
    platter_control::vm::check_params(&params).map_err(ControlError::from)?;
    let (name, start, image) = (params.name.clone(), params.start, params.image.is_some());
    let req = Request::VmCreate { params };
    // With --image, Ctrl-C cancels the image's import and leaves nothing behind.
    let vm = vm_info(match image {
        true => execute_interruptible(dir, req, OutputFormat::Table, "import")?,
        false => execute(dir, req, OutputFormat::Table)?,
    })?;
    let line = format!(
        "created vm {name} ({}, {}, accel {}: {}, libvirt {}){}",
        format_size(vm.memory),
        describe_disks(&vm),
        vm.accel,
        vm.accel_reason,
        vm.uri,
        if start { ", started" } else { "" }
    );
    print_vm(&vm, output, &line)
}

fn list(dir: &Path, output: OutputFormat, connect: Option<String>) -> Result<()> {
    let items = match execute(dir, Request::VmStatus { connect }, OutputFormat::Table)? {
        Response::VmInfos { items } => items,
        other => bail!("unexpected reply {other:?}"),
    };
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    let mut rows = vec![["NAME", "STATE", "ACCEL", "MEMORY", "CPUS", "DISKS"]
        .map(String::from)
        .to_vec()];
    for vm in items {
        let mut disks = vm.disks.clone();
        disks.extend(vm.cdroms.iter().map(|c| format!("{c}(cdrom)")));
        rows.push(vec![
            vm.name,
            vm.state,
            vm.accel,
            format_size(vm.memory),
            vm.cpus.to_string(),
            disks.join(","),
        ]);
    }
    print!("{}", crate::output::columns(&rows, 2));
    Ok(())
}

/// Where the console is logged and whether the VM runs, from the server (or the store).
fn console_state(
    dir: &Path,
    name: &Name,
    connect: &Option<String>,
    follow: bool,
) -> Result<(PathBuf, bool)> {
    let req = Request::VmConsole {
        name: name.clone(),
        connect: connect.clone(),
        follow,
    };
    match execute(dir, req, OutputFormat::Table)? {
        Response::VmConsole { log, running, .. } => Ok((log, running)),
        other => bail!("unexpected reply {other:?}"),
    }
}

fn console(dir: &Path, name: &Name, follow: bool, connect: Option<String>) -> Result<()> {
    store_exists(dir, name)?;
    let (path, _) = console_state(dir, name, &connect, follow)?;
    let mut f = match std::fs::File::open(&path) {
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
        if !follow {
            return Ok(());
        }
        if buf.is_empty() && !console_state(dir, name, &connect, true)?.1 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
