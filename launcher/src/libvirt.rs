//! The [`Launcher`]: platter VMs as libvirt domains, through the `virt` crate.
//!
//! Every call is blocking (libvirt's API is); async callers use `spawn_blocking`. Errors
//! from libvirt are turned into [`LauncherError`] variants that name the VM, so the CLI
//! can print them as they are. A platter domain is marked by a metadata element in
//! [`METADATA_NS`]; [`Launcher::list`] shows only those, never other users' domains.
//! This module must never build XML by hand: [`crate::domain`] does that.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use virt::connect::Connect;
use virt::domain::{Domain as VirDomain, DomainState};
use virt::error::{Error as VirError, ErrorNumber};
use virt::sys;

use crate::accel::{capabilities_offer_kvm, decide, Accel, AccelChoice, AccelDecision, HostFacts};
use crate::access::{self, Need};
use crate::domain::{NbdAttach, NbdServer, METADATA_NS};
use crate::error::{LauncherError, Result};
use crate::vm::{Boot, VmRecord, VmSpec};
use crate::xml::first_element_attr;

/// The libvirt URI used when none is given.
pub const DEFAULT_URI: &str = "qemu:///system";
/// How often [`Launcher::stop`] looks whether the guest has powered off.
const STOP_POLL: Duration = Duration::from_millis(100);

/// A VM's run state as libvirt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    Running,
    Blocked,
    Paused,
    ShuttingDown,
    ShutOff,
    Crashed,
    Suspended,
    Unknown,
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VmState::Running => "running",
            VmState::Blocked => "blocked",
            VmState::Paused => "paused",
            VmState::ShuttingDown => "shutting-down",
            VmState::ShutOff => "shut-off",
            VmState::Crashed => "crashed",
            VmState::Suspended => "suspended",
            VmState::Unknown => "unknown",
        })
    }
}

impl From<DomainState> for VmState {
    fn from(s: DomainState) -> Self {
        match s {
            DomainState::Running => VmState::Running,
            DomainState::Blocked => VmState::Blocked,
            DomainState::Paused => VmState::Paused,
            DomainState::Shutdown => VmState::ShuttingDown,
            DomainState::Shutoff => VmState::ShutOff,
            DomainState::Crashed => VmState::Crashed,
            DomainState::PMSuspended => VmState::Suspended,
            DomainState::NoState => VmState::Unknown,
        }
    }
}

/// How a shut-off domain last ended, from libvirt's shutoff reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LastExit {
    /// Not known: defined and never started, or libvirtd restarted since.
    Unknown,
    /// The guest powered itself off.
    Shutdown,
    /// Powered off from outside (`vm stop` past its grace period, `virsh destroy`).
    Destroyed,
    /// The guest crashed or QEMU failed.
    Crashed,
}

impl LastExit {
    /// From libvirt's state reason (a shutoff reason for a shut-off domain).
    fn from_reason(reason: &virt::domain::DomainStateReasonEnum) -> LastExit {
        use virt::domain::{DomainShutoffReason as R, DomainStateReason};
        use virt::enumutil::Enum;
        match reason {
            Enum::Known(DomainStateReason::Shutoff(Enum::Known(r))) => match r {
                R::Shutdown => LastExit::Shutdown,
                R::Destroyed => LastExit::Destroyed,
                R::Crashed | R::Failed => LastExit::Crashed,
                _ => LastExit::Unknown,
            },
            _ => LastExit::Unknown,
        }
    }
}

/// One platter VM as libvirt sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStatus {
    pub name: String,
    pub state: VmState,
    /// From the platter metadata in the domain.
    pub accel: Option<Accel>,
}

/// How [`Launcher::stop`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopOutcome {
    /// It was not running.
    AlreadyStopped,
    /// The guest powered off after the ACPI power button.
    Graceful,
    /// The guest did not power off in time and was destroyed (pulled the plug).
    Forced,
}

/// A connection to libvirtd that runs platter VMs.
pub struct Launcher {
    conn: Connect,
    uri: String,
    nbd_attach: NbdAttach,
}

impl Launcher {
    /// Connects to `uri` (default [`DEFAULT_URI`]). If libvirtd is not reachable, the error
    /// says how to start it.
    pub fn new(uri: Option<&str>) -> Result<Launcher> {
        let uri = uri.unwrap_or(DEFAULT_URI).to_string();
        if uri.contains('\0') {
            return Err(LauncherError::Unreachable {
                uri,
                message: "URI contains NUL".into(),
            });
        }
        // libvirt's default error handler prints every error to stderr as well; our errors
        // carry the message already.
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(&uri)).map_err(|e| LauncherError::Unreachable {
            uri: uri.clone(),
            message: one_line(e.message()),
        })?;
        // The daemon's version decides how NBD disks can get a reconnect delay.
        let nbd_attach = match conn.lib_version() {
            Ok(v) => NbdAttach::for_libvirt_version(v),
            Err(_) => NbdAttach::QemuCommandline,
        };
        tracing::debug!(%uri, ?nbd_attach, "connected to libvirtd");
        Ok(Launcher {
            conn,
            uri,
            nbd_attach,
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// How this libvirtd gets NBD disks with a reconnect delay.
    pub fn nbd_attach(&self) -> NbdAttach {
        self.nbd_attach
    }

    /// This host's KVM facts, including whether libvirt offers KVM at all.
    pub fn host_facts(&self) -> HostFacts {
        let mut facts = HostFacts::probe();
        facts.libvirt_offers_kvm = self
            .conn
            .capabilities()
            .ok()
            .map(|c| capabilities_offer_kvm(&c));
        facts
    }

    /// Decides `--accel` for this host.
    pub fn resolve_accel(&self, choice: AccelChoice) -> AccelDecision {
        let d = decide(choice, &self.host_facts());
        tracing::debug!(accel = %d.accel, reason = %d.reason, "accelerator chosen");
        d
    }

    /// Defines (does not start) a VM whose disks are exports of the NBD server on
    /// `nbd_socket` and whose serial console is logged to `console_log`. Returns the
    /// record to keep in the store, which names this connection's URI. The socket must be usable by qemu's user: see
    /// [`crate::access::prepare_nbd_socket`].
    pub fn create(&self, spec: &VmSpec, nbd_socket: &Path, console_log: &Path) -> Result<VmRecord> {
        spec.validate()
            .map_err(|reason| LauncherError::InvalidSpec {
                name: spec.name.to_string(),
                reason,
            })?;
        let accel = self.resolve_accel(spec.accel);
        let mut record = VmRecord::new(
            spec,
            accel,
            NbdServer::Unix {
                socket: nbd_socket.to_path_buf(),
            },
            console_log.to_path_buf(),
        );
        record.uri = Some(self.uri.clone());
        if self.qemu_runs_as_system_user() {
            check_record_access(&record)?;
        }
        self.define(&record)?;
        Ok(record)
    }

    /// Under a system URI QEMU runs as [`access::QEMU_USER`]; under a session URI as us.
    fn qemu_runs_as_system_user(&self) -> bool {
        self.uri.starts_with("qemu") && self.uri.contains("/system")
    }

    /// Defines the domain of `record`; refuses if a domain of that name exists.
    pub fn define(&self, record: &VmRecord) -> Result<()> {
        let name = record.name.as_str();
        match self.conn.lookup_domain_by_name(name) {
            Ok(_) => {
                return Err(LauncherError::DomainExists {
                    name: name.to_string(),
                })
            }
            Err(e) if e.code().is(ErrorNumber::NoDomain) => {}
            Err(e) => return Err(vm_err("look up", name, e)),
        }
        let xml = record.domain(self.nbd_attach).to_xml()?;
        tracing::debug!(vm = name, %xml, "defining domain");
        self.conn
            .define_domain_xml_flags(&xml, sys::VIR_DOMAIN_DEFINE_VALIDATE)
            .map_err(|e| {
                if e.code().is(ErrorNumber::DomExist) {
                    LauncherError::DomainExists {
                        name: name.to_string(),
                    }
                } else {
                    vm_err("define", name, e)
                }
            })?;
        Ok(())
    }

    /// Defines the domain of `record` if libvirt does not have it (it lost it, or this
    /// is another host). Returns whether it had to.
    pub fn ensure_defined(&self, record: &VmRecord) -> Result<bool> {
        match self.conn.lookup_domain_by_name(record.name.as_str()) {
            Ok(_) => Ok(false),
            Err(e) if e.code().is(ErrorNumber::NoDomain) => self.define(record).map(|()| true),
            Err(e) => Err(vm_err("look up", record.name.as_str(), e)),
        }
    }

    pub fn start(&self, name: &str) -> Result<()> {
        let dom = self.lookup(name)?;
        if dom.is_active().map_err(|e| vm_err("query", name, e))? {
            return Err(LauncherError::AlreadyRunning {
                name: name.to_string(),
            });
        }
        dom.create().map_err(|e| {
            if e.code().is(ErrorNumber::OperationInvalid) && e.message().contains("already running")
            {
                LauncherError::AlreadyRunning {
                    name: name.to_string(),
                }
            } else {
                vm_err("start", name, e)
            }
        })?;
        Ok(())
    }

    /// Presses the ACPI power button and waits up to `timeout` for the guest to power
    /// off; then destroys it.
    pub fn stop(&self, name: &str, timeout: Duration) -> Result<StopOutcome> {
        let dom = self.lookup(name)?;
        if !is_active(&dom, name)? {
            return Ok(StopOutcome::AlreadyStopped);
        }
        if let Err(e) = dom.shutdown_flags(sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN) {
            if !is_active(&dom, name)? {
                return Ok(StopOutcome::AlreadyStopped);
            }
            tracing::warn!(vm = name, error = %one_line(e.message()), "ACPI shutdown refused; destroying");
        } else {
            let deadline = Instant::now() + timeout;
            loop {
                if !is_active(&dom, name)? {
                    return Ok(StopOutcome::Graceful);
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                std::thread::sleep(STOP_POLL.min(deadline - now));
            }
            tracing::info!(
                vm = name,
                ?timeout,
                "guest did not power off in time; destroying"
            );
        }
        match dom.destroy() {
            Ok(()) => Ok(StopOutcome::Forced),
            // It powered off between the last look and the destroy.
            Err(_) if !is_active(&dom, name)? => Ok(StopOutcome::Graceful),
            Err(e) => Err(vm_err("destroy", name, e)),
        }
    }

    /// Pulls the plug at once.
    pub fn destroy(&self, name: &str) -> Result<()> {
        let dom = self.lookup(name)?;
        if !is_active(&dom, name)? {
            return Ok(());
        }
        match dom.destroy() {
            Ok(()) => Ok(()),
            Err(_) if !is_active(&dom, name)? => Ok(()),
            Err(e) => Err(vm_err("destroy", name, e)),
        }
    }

    /// [`Launcher::stop`] then [`Launcher::start`].
    pub fn restart(&self, name: &str, timeout: Duration) -> Result<StopOutcome> {
        let outcome = self.stop(name, timeout)?;
        self.start(name)?;
        Ok(outcome)
    }

    /// Destroys the VM if it runs and undefines it. The volumes, the seed ISO and the
    /// console log are the caller's to remove.
    pub fn delete(&self, name: &str) -> Result<()> {
        self.destroy(name)?;
        let dom = self.lookup(name)?;
        dom.undefine_flags(
            sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA,
        )
        .map_err(|e| vm_err("undefine", name, e))
    }

    pub fn state(&self, name: &str) -> Result<VmState> {
        let dom = self.lookup(name)?;
        domain_state(&dom, name)
    }

    /// The state and, for a shut-off domain, how it last ended (libvirt's shutoff
    /// reason; `Unknown` when it has not run since it was defined or libvirtd restarted).
    pub fn state_and_exit(&self, name: &str) -> Result<(VmState, Option<LastExit>)> {
        let dom = self.lookup(name)?;
        let (state, reason) = dom.state().map_err(|e| vm_err("query", name, e))?;
        let state = match state {
            virt::enumutil::Enum::Known(s) => VmState::from(s),
            virt::enumutil::Enum::Unknown(_) => VmState::Unknown,
        };
        let exit = (state == VmState::ShutOff).then(|| LastExit::from_reason(&reason));
        Ok((state, exit))
    }

    /// Every platter VM libvirt knows, by name.
    pub fn list(&self) -> Result<Vec<VmStatus>> {
        let domains = self
            .conn
            .list_all_domains(0)
            .map_err(|e| LauncherError::Connection {
                op: "list domains",
                message: one_line(e.message()),
            })?;
        let mut out = Vec::new();
        for dom in domains {
            let Ok(name) = dom.name() else { continue };
            let meta = match platter_metadata(&dom, &name) {
                Ok(Some(m)) => m,
                // Not ours, or undefined while we looked.
                Ok(None) | Err(LauncherError::NoSuchVm { .. }) => continue,
                Err(e) => return Err(e),
            };
            let state = match domain_state(&dom, &name) {
                Ok(s) => s,
                Err(LauncherError::NoSuchVm { .. }) => continue,
                Err(e) => return Err(e),
            };
            let accel = first_element_attr(&meta, "accel").and_then(|a| a.parse().ok());
            out.push(VmStatus { name, state, accel });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The file the VM's serial console is logged to, from its platter metadata.
    pub fn console_log_path(&self, name: &str) -> Result<PathBuf> {
        let dom = self.lookup(name)?;
        let meta = platter_metadata(&dom, name)?
            .ok_or_else(|| LauncherError::NotPlatter { name: name.into() })?;
        first_element_attr(&meta, "console-log")
            .map(PathBuf::from)
            .ok_or_else(|| LauncherError::NotPlatter { name: name.into() })
    }

    /// The domain XML as libvirt holds it (for `inspect` and debugging).
    pub fn domain_xml(&self, name: &str) -> Result<String> {
        self.lookup(name)?
            .xml_desc(0)
            .map_err(|e| vm_err("describe", name, e))
    }

    fn lookup(&self, name: &str) -> Result<VirDomain> {
        self.conn
            .lookup_domain_by_name(name)
            .map_err(|e| vm_err("look up", name, e))
    }
}

/// Fails early, naming the path, when QEMU's user could not open the boot files or reach
/// the NBD socket (QEMU's own error would come only at start, and less clearly).
fn check_record_access(record: &VmRecord) -> Result<()> {
    if let Boot::Kernel { kernel, initrd, .. } = &record.boot {
        access::check_qemu_can_reach(kernel, Need::Read)?;
        if let Some(initrd) = initrd {
            access::check_qemu_can_reach(initrd, Need::Read)?;
        }
    }
    if let Some(seed) = &record.cloud_init_seed {
        access::check_qemu_can_reach(seed, Need::Read)?;
    }
    if let NbdServer::Unix { socket } = &record.nbd {
        // The server may not be running yet; its directory must be reachable regardless.
        if socket.exists() {
            access::check_qemu_can_reach(socket, Need::Connect)?;
        } else if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
            access::check_qemu_can_reach(dir, Need::Traverse)?;
        }
    }
    Ok(())
}

fn is_active(dom: &VirDomain, name: &str) -> Result<bool> {
    dom.is_active().map_err(|e| vm_err("query", name, e))
}

fn domain_state(dom: &VirDomain, name: &str) -> Result<VmState> {
    let (state, _reason) = dom.state().map_err(|e| vm_err("query", name, e))?;
    Ok(match state {
        virt::enumutil::Enum::Known(s) => s.into(),
        virt::enumutil::Enum::Unknown(_) => VmState::Unknown,
    })
}

/// Our metadata element, or `None` for a domain that is not platter's.
fn platter_metadata(dom: &VirDomain, name: &str) -> Result<Option<String>> {
    match dom.metadata(
        sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
        Some(METADATA_NS),
        0,
    ) {
        Ok(xml) => Ok(Some(xml)),
        Err(e) if e.code().is(ErrorNumber::NoDomainMetadata) => Ok(None),
        Err(e) => Err(vm_err("read metadata of", name, e)),
    }
}

/// libvirt messages can span lines (schema errors do); the CLI prints one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn vm_err(op: &'static str, name: &str, e: VirError) -> LauncherError {
    if e.code().is(ErrorNumber::NoDomain) {
        LauncherError::NoSuchVm {
            name: name.to_string(),
        }
    } else {
        LauncherError::Libvirt {
            op,
            name: name.to_string(),
            message: one_line(e.message()),
        }
    }
}
