//! libvirt domain XML as typed Rust structs, written through [`crate::xml::Element`].
//!
//! This is the only place that knows libvirt's element names. It is pure: it never talks
//! to libvirt, reads a file or decides policy (which accelerator, which paths); callers
//! fill the structs ([`crate::vm::VmRecord::domain`] does) and get a string back.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::accel::Accel;
use crate::xml::{Element, XmlError};

/// The XML namespace of the metadata element that marks a domain as platter's.
pub const METADATA_NS: &str = "https://platter.dev/xmlns/vm/1";
/// The element prefix used for [`METADATA_NS`] inside `<metadata>`.
pub const METADATA_PREFIX: &str = "platter";

/// Why a [`Domain`] could not be written as XML.
#[derive(Debug, thiserror::Error)]
pub enum DomainXmlError {
    #[error("domain {domain:?}: {source}")]
    Xml { domain: String, source: XmlError },
    #[error("domain {domain:?}: {what} path {path:?} is not valid UTF-8")]
    NonUtf8Path {
        domain: String,
        what: &'static str,
        path: PathBuf,
    },
    #[error("domain {domain:?}: encoding QEMU arguments: {source}")]
    Json {
        domain: String,
        source: serde_json::Error,
    },
}

/// How NBD disks reach QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NbdAttach {
    /// `<disk type='network'>` with `<reconnect delay>`: libvirt 9.2 and later.
    Native,
    /// `-blockdev`/`-device` in `<qemu:commandline>` ([`passthrough`]): libvirt before 9.2
    /// drops `<reconnect>` silently, and without it a restart of the NBD server breaks the
    /// guest's file system.
    QemuCommandline,
}

/// The first libvirt version (major * 1_000_000 + minor * 1000 + micro) that passes
/// `<reconnect delay>` of an NBD disk on to QEMU (libvirt NEWS, v9.2.0).
pub const LIBVIRT_NBD_RECONNECT_VERSION: u32 = 9_002_000;

impl NbdAttach {
    /// The attachment a libvirt of `version` needs (`virConnectGetLibVersion`).
    pub fn for_libvirt_version(version: u32) -> NbdAttach {
        if version >= LIBVIRT_NBD_RECONNECT_VERSION {
            NbdAttach::Native
        } else {
            NbdAttach::QemuCommandline
        }
    }
}

/// A whole domain definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub accel: Accel,
    pub memory_kib: u64,
    pub vcpus: u32,
    pub os: Os,
    pub disks: Vec<Disk>,
    pub interfaces: Vec<Interface>,
    pub serial: Option<Serial>,
    pub metadata: Option<PlatterMetadata>,
    pub nbd_attach: NbdAttach,
}

/// How the machine starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Os {
    /// SeaBIOS boots from the devices that carry a boot order.
    Bios,
    /// QEMU loads the kernel (and initramfs) itself: no bootloader on the disk needed.
    DirectKernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub device: DiskDevice,
    pub source: DiskSource,
    pub target: Target,
    pub read_only: bool,
    /// BIOS boot order, 1 first; `None` for devices not to boot from.
    pub boot_order: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskDevice {
    Disk,
    Cdrom,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// An export of an NBD server. `reconnect_delay_secs` lets QEMU reconnect when the
    /// server restarts instead of failing the guest's I/O.
    Nbd {
        export: String,
        server: NbdServer,
        reconnect_delay_secs: Option<u32>,
    },
    /// A local file (an ISO image, a cloud-init seed).
    File(PathBuf),
}

/// Where an NBD server listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NbdServer {
    Unix { socket: PathBuf },
    Tcp { host: String, port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub dev: String,
    pub bus: Bus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    Virtio,
    Ide,
    Sata,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interface {
    /// QEMU's user-mode network (slirp): no bridge and no root-owned setup needed.
    User { model: NicModel },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicModel {
    Virtio,
}

/// The first serial port, which `console=ttyS0` guests use as their console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serial {
    /// Output goes straight to a file; `virsh console` cannot attach.
    File { path: PathBuf },
    /// A pty for `virsh console`, with everything the guest prints also logged to a file
    /// (written by virtlogd, truncated at each start).
    Pty { log: Option<PathBuf> },
}

/// What platter records inside the domain, under [`METADATA_NS`]: it marks the domain as
/// platter's and lets `console` find the log without the VM record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatterMetadata {
    pub accel: Accel,
    pub console_log: Option<PathBuf>,
}

impl PlatterMetadata {
    /// The element alone, as given to `virDomainSetMetadata` and as libvirt returns it.
    pub fn element(&self, domain: &str) -> Result<Element, DomainXmlError> {
        let console = self
            .console_log
            .as_deref()
            .map(|p| path_str(domain, "console log", p))
            .transpose()?;
        Ok(Element::new("platter:vm")
            .attr("xmlns:platter", METADATA_NS)
            .attr("accel", self.accel)
            .attr_opt("console-log", console))
    }
}

impl Domain {
    /// The domain as libvirt XML.
    pub fn to_xml(&self) -> Result<String, DomainXmlError> {
        self.element()?
            .render()
            .map_err(|source| DomainXmlError::Xml {
                domain: self.name.clone(),
                source,
            })
    }

    fn element(&self) -> Result<Element, DomainXmlError> {
        let name = self.name.as_str();
        let metadata = match &self.metadata {
            Some(m) => Some(Element::new("metadata").child(m.element(name)?)),
            None => None,
        };
        let mut devices = Vec::new();
        let mut qemu_args = Vec::new();
        for disk in &self.disks {
            let passthrough = match self.nbd_attach {
                NbdAttach::QemuCommandline => passthrough::nbd_disk_args(name, disk)?,
                NbdAttach::Native => None,
            };
            match passthrough {
                Some(args) => qemu_args.extend(args),
                None => devices.push(disk.element(name)?),
            }
        }
        devices.extend(self.interfaces.iter().map(Interface::element));
        if let Some(serial) = &self.serial {
            devices.extend(serial.elements(name)?);
        }
        // No USB and no balloon: the guest gets the memory it was given, and fewer devices
        // to probe at boot.
        devices.push(
            Element::new("controller")
                .attr("type", "usb")
                .attr("model", "none"),
        );
        devices.push(Element::new("memballoon").attr("model", "none"));
        let commandline =
            (!qemu_args.is_empty()).then(|| Element::new("qemu:commandline").children(qemu_args));

        Ok(Element::new("domain")
            .attr("type", self.accel.libvirt_domain_type())
            .attr_opt(
                "xmlns:qemu",
                commandline.as_ref().map(|_| passthrough::QEMU_NS),
            )
            .child(Element::leaf("name", name))
            .child_opt(metadata)
            .child(Element::leaf("memory", self.memory_kib).attr("unit", "KiB"))
            .child(Element::leaf("vcpu", self.vcpus).attr("placement", "static"))
            .child(self.os_element(name)?)
            .child(
                Element::new("features")
                    .child(Element::new("acpi"))
                    .child(Element::new("apic")),
            )
            .child(Element::new("clock").attr("offset", "utc"))
            .child(Element::leaf("on_poweroff", "destroy"))
            .child(Element::leaf("on_reboot", "restart"))
            .child(Element::leaf("on_crash", "destroy"))
            .child(Element::new("devices").children(devices))
            .child_opt(commandline))
    }

    fn os_element(&self, domain: &str) -> Result<Element, DomainXmlError> {
        let os = Element::new("os").child(
            Element::leaf("type", "hvm")
                .attr("arch", "x86_64")
                .attr("machine", "pc"),
        );
        Ok(match &self.os {
            Os::Bios => os,
            Os::DirectKernel {
                kernel,
                initrd,
                cmdline,
            } => {
                let initrd = initrd
                    .as_deref()
                    .map(|p| path_str(domain, "initrd", p))
                    .transpose()?;
                os.child(Element::leaf("kernel", path_str(domain, "kernel", kernel)?))
                    .child_opt(initrd.map(|i| Element::leaf("initrd", i)))
                    .child_opt(cmdline.as_ref().map(|c| Element::leaf("cmdline", c)))
            }
        })
    }
}

impl Disk {
    fn element(&self, domain: &str) -> Result<Element, DomainXmlError> {
        let (kind, device) = match (&self.source, self.device) {
            (DiskSource::Nbd { .. }, DiskDevice::Disk) => ("network", "disk"),
            (DiskSource::Nbd { .. }, DiskDevice::Cdrom) => ("network", "cdrom"),
            (DiskSource::File(_), DiskDevice::Disk) => ("file", "disk"),
            (DiskSource::File(_), DiskDevice::Cdrom) => ("file", "cdrom"),
        };
        let mut driver = Element::new("driver")
            .attr("name", "qemu")
            .attr("type", "raw");
        if let DiskSource::Nbd { .. } = self.source {
            // The store is the cache: no host page cache in between, and guest TRIM goes
            // through to the server so freed blocks are freed in the store.
            driver = driver.attr("cache", "none");
            if !self.read_only && self.device == DiskDevice::Disk {
                driver = driver.attr("discard", "unmap");
            }
        }
        let source = match &self.source {
            DiskSource::Nbd {
                export,
                server,
                reconnect_delay_secs,
            } => {
                let host = match server {
                    NbdServer::Unix { socket } => Element::new("host")
                        .attr("transport", "unix")
                        .attr("socket", path_str(domain, "NBD socket", socket)?),
                    NbdServer::Tcp { host, port } => {
                        Element::new("host").attr("name", host).attr("port", port)
                    }
                };
                Element::new("source")
                    .attr("protocol", "nbd")
                    .attr("name", export)
                    .child(host)
                    .child_opt(
                        reconnect_delay_secs.map(|d| Element::new("reconnect").attr("delay", d)),
                    )
            }
            DiskSource::File(path) => {
                Element::new("source").attr("file", path_str(domain, "disk file", path)?)
            }
        };
        let bus = match self.target.bus {
            Bus::Virtio => "virtio",
            Bus::Ide => "ide",
            Bus::Sata => "sata",
        };
        Ok(Element::new("disk")
            .attr("type", kind)
            .attr("device", device)
            .child(driver)
            .child(source)
            .child(
                Element::new("target")
                    .attr("dev", &self.target.dev)
                    .attr("bus", bus),
            )
            .child_opt(self.read_only.then(|| Element::new("readonly")))
            .child_opt(
                self.boot_order
                    .map(|o| Element::new("boot").attr("order", o)),
            ))
    }
}

impl Interface {
    fn element(&self) -> Element {
        match self {
            Interface::User {
                model: NicModel::Virtio,
            } => Element::new("interface")
                .attr("type", "user")
                .child(Element::new("model").attr("type", "virtio")),
        }
    }
}

impl Serial {
    /// The `<serial>` and the `<console>` that aliases it (as libvirt itself would add).
    fn elements(&self, domain: &str) -> Result<[Element; 2], DomainXmlError> {
        let target = Element::new("target").attr("port", 0);
        let serial = match self {
            Serial::File { path } => Element::new("serial")
                .attr("type", "file")
                .child(Element::new("source").attr("path", path_str(domain, "console", path)?))
                .child(target),
            Serial::Pty { log } => {
                let log = match log {
                    Some(p) => Some(
                        Element::new("log")
                            .attr("file", path_str(domain, "console log", p)?)
                            .attr("append", "off"),
                    ),
                    None => None,
                };
                Element::new("serial")
                    .attr("type", "pty")
                    .child_opt(log)
                    .child(target)
            }
        };
        let kind = match self {
            Serial::File { .. } => "file",
            Serial::Pty { .. } => "pty",
        };
        let console = Element::new("console").attr("type", kind).child(
            Element::new("target")
                .attr("type", "serial")
                .attr("port", 0),
        );
        Ok([serial, console])
    }
}

/// The virtio disk name for the `index`th disk: vda … vdz, vdaa … (as the kernel names them).
pub fn virtio_dev_name(index: usize) -> String {
    let mut suffix = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        let rem = (n - 1) % 26;
        suffix.push(char::from(b'a' + rem as u8));
        n = (n - 1) / 26;
    }
    let tail: String = suffix.iter().rev().collect();
    format!("vd{tail}")
}

/// The IDE device name for the `index`th CD-ROM, starting on the secondary channel (hdc)
/// as PCs traditionally do; IDE has four slots, so `None` beyond that.
pub fn ide_cdrom_dev_name(index: usize) -> Option<&'static str> {
    ["hdc", "hdd", "hda", "hdb"].get(index).copied()
}

fn path_str<'a>(
    domain: &str,
    what: &'static str,
    path: &'a Path,
) -> Result<&'a str, DomainXmlError> {
    path.to_str().ok_or_else(|| DomainXmlError::NonUtf8Path {
        domain: domain.to_string(),
        what,
        path: path.to_path_buf(),
    })
}

pub mod passthrough;
#[cfg(test)]
mod tests;
