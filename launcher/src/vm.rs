//! What a platter VM is: the request ([`VmSpec`]), the record kept in the store
//! ([`VmRecord`]), and the pure mapping from a record to a libvirt [`Domain`].
//!
//! A record holds everything needed to define the domain again (after libvirtd lost it,
//! or on another host), so the store, not libvirt, is the source of truth. Nothing here
//! does IO.

use std::path::PathBuf;

use platter_types::{format_size, Name, VolumeRef};
use serde::{Deserialize, Serialize};

use crate::accel::{Accel, AccelChoice, AccelDecision};
use crate::domain::{
    ide_cdrom_dev_name, virtio_dev_name, Bus, Disk, DiskDevice, DiskSource, Domain, Interface,
    NbdAttach, NbdServer, NicModel, Os, PlatterMetadata, Serial, Target,
};

/// Smallest memory a VM may have; below this no Linux kernel gets far.
pub const MIN_MEMORY: u64 = 32 << 20;
/// Largest vCPU count accepted (QEMU's `pc` machine limit).
pub const MAX_CPUS: u32 = 255;
/// Seconds QEMU holds guest IO (retrying the connection) after `platter serve` goes away,
/// before failing requests: a restart within this window is invisible to the guest.
pub const NBD_RECONNECT_DELAY_SECS: u32 = 15;
/// The kernel command line used for direct kernel boot when none is given: the console on
/// the serial port, which is what `platter vm console` shows.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";

/// How a VM boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Boot {
    /// The BIOS boots the first disk (the disks' order is the boot order).
    Bios,
    /// QEMU loads a kernel and initramfs from host files.
    Kernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: Option<String>,
    },
}

/// How a volume appears to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Media {
    /// A virtio-blk disk.
    #[default]
    Disk,
    /// A read-only CD-ROM (an ISO image volume).
    Cdrom,
}

/// One volume attached to a VM, served by `platter serve` as the NBD export of that name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDisk {
    /// The volume (read-write) or snapshot (read-only) exported to the guest.
    pub volume: VolumeRef,
    /// A clone made for this VM alone (containerDisk semantics): delete it with the VM.
    pub throwaway: bool,
    #[serde(default)]
    pub media: Media,
}

impl VmDisk {
    /// Snapshots and CD-ROMs are read-only for the guest.
    pub fn read_only(&self) -> bool {
        self.volume.is_snapshot() || self.media == Media::Cdrom
    }
}

/// What `platter vm create` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub name: Name,
    pub memory_bytes: u64,
    pub cpus: u32,
    /// In boot order.
    pub disks: Vec<VmDisk>,
    pub boot: Boot,
    pub accel: AccelChoice,
    /// A NoCloud seed ISO ([`crate::cloudinit`]) attached as a CD-ROM.
    pub cloud_init_seed: Option<PathBuf>,
    /// A user-mode virtio-net interface.
    pub network: bool,
}

impl VmSpec {
    /// A spec with the defaults of `platter vm create`: 512M, 1 vCPU, BIOS boot, automatic
    /// accelerator, network on.
    pub fn new(name: Name, disks: Vec<VmDisk>) -> VmSpec {
        VmSpec {
            name,
            memory_bytes: 512 << 20,
            cpus: 1,
            disks,
            boot: Boot::Bios,
            accel: AccelChoice::Auto,
            cloud_init_seed: None,
            network: true,
        }
    }

    /// Refuses specs no guest could boot with, saying why.
    pub fn validate(&self) -> Result<(), String> {
        if self.memory_bytes < MIN_MEMORY {
            return Err(format!(
                "memory {} is below the minimum {}",
                format_size(self.memory_bytes),
                format_size(MIN_MEMORY)
            ));
        }
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(format!(
                "cpus {} is not between 1 and {MAX_CPUS}",
                self.cpus
            ));
        }
        if self.disks.is_empty() && matches!(self.boot, Boot::Bios) {
            return Err("BIOS boot needs at least one disk".into());
        }
        let cdroms = self
            .disks
            .iter()
            .filter(|d| d.media == Media::Cdrom)
            .count()
            + usize::from(self.cloud_init_seed.is_some());
        if ide_cdrom_dev_name(cdroms.saturating_sub(1)).is_none() {
            return Err(format!(
                "{cdroms} CD-ROMs (with the cloud-init seed); at most 4 fit"
            ));
        }
        Ok(())
    }
}

/// A VM as platter keeps it. Serialised into the store by the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    pub name: Name,
    pub memory_bytes: u64,
    pub cpus: u32,
    pub disks: Vec<VmDisk>,
    pub boot: Boot,
    /// What the user asked for, kept so that `auto` can be decided again on another host.
    pub accel_choice: AccelChoice,
    /// What was chosen, and why.
    pub accel: AccelDecision,
    pub cloud_init_seed: Option<PathBuf>,
    pub network: bool,
    /// The NBD server the disks are exports of.
    pub nbd: NbdServer,
    /// Where virtlogd writes the serial console (truncated at each start).
    pub console_log: PathBuf,
    /// The libvirt URI the VM was defined through, used by later commands that are not
    /// given one. Records written before it was kept have none: [`crate::DEFAULT_URI`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

impl VmRecord {
    pub fn new(
        spec: &VmSpec,
        accel: AccelDecision,
        nbd: NbdServer,
        console_log: PathBuf,
    ) -> VmRecord {
        VmRecord {
            name: spec.name.clone(),
            memory_bytes: spec.memory_bytes,
            cpus: spec.cpus,
            disks: spec.disks.clone(),
            boot: spec.boot.clone(),
            accel_choice: spec.accel,
            accel,
            cloud_init_seed: spec.cloud_init_seed.clone(),
            network: spec.network,
            nbd,
            console_log,
            uri: None,
        }
    }

    /// The libvirt URI to reach this VM through: `over` (`--connect`) if given, else the
    /// one it was created through, else [`crate::DEFAULT_URI`].
    pub fn uri_or<'a>(&'a self, over: Option<&'a str>) -> &'a str {
        over.or(self.uri.as_deref())
            .unwrap_or(crate::libvirt::DEFAULT_URI)
    }

    /// The volumes to delete with this VM.
    pub fn throwaway_volumes(&self) -> impl Iterator<Item = &VolumeRef> {
        self.disks.iter().filter(|d| d.throwaway).map(|d| &d.volume)
    }

    /// The libvirt domain for this record, its NBD disks attached as `nbd_attach` says
    /// (which depends on the libvirt version, not on the VM). Disks are virtio vda, vdb, … in order;
    /// CD-ROMs are IDE hdc, hdd, …, the cloud-init seed last. Under BIOS boot, the
    /// disks and CD-ROMs boot in the order listed; the seed never boots.
    pub fn domain(&self, nbd_attach: NbdAttach) -> Domain {
        let mut disks = Vec::new();
        let (mut n_virtio, mut n_ide) = (0usize, 0usize);
        let bios = matches!(self.boot, Boot::Bios);
        for (i, d) in self.disks.iter().enumerate() {
            let target = match d.media {
                Media::Disk => {
                    n_virtio += 1;
                    Target {
                        dev: virtio_dev_name(n_virtio - 1),
                        bus: Bus::Virtio,
                    }
                }
                Media::Cdrom => {
                    n_ide += 1;
                    Target {
                        dev: ide_dev(n_ide - 1),
                        bus: Bus::Ide,
                    }
                }
            };
            disks.push(Disk {
                device: match d.media {
                    Media::Disk => DiskDevice::Disk,
                    Media::Cdrom => DiskDevice::Cdrom,
                },
                source: DiskSource::Nbd {
                    export: d.volume.to_string(),
                    server: self.nbd.clone(),
                    reconnect_delay_secs: Some(NBD_RECONNECT_DELAY_SECS),
                },
                target,
                read_only: d.read_only(),
                boot_order: bios.then(|| u32::try_from(i + 1).unwrap_or(u32::MAX)),
            });
        }
        if let Some(seed) = &self.cloud_init_seed {
            disks.push(Disk {
                device: DiskDevice::Cdrom,
                source: DiskSource::File(seed.clone()),
                target: Target {
                    dev: ide_dev(n_ide),
                    bus: Bus::Ide,
                },
                read_only: true,
                boot_order: None,
            });
        }
        let os = match &self.boot {
            Boot::Bios => Os::Bios,
            Boot::Kernel {
                kernel,
                initrd,
                cmdline,
            } => Os::DirectKernel {
                kernel: kernel.clone(),
                initrd: initrd.clone(),
                cmdline: Some(
                    cmdline
                        .clone()
                        .unwrap_or_else(|| DEFAULT_CMDLINE.to_string()),
                ),
            },
        };
        Domain {
            name: self.name.to_string(),
            accel: self.accel.accel,
            memory_kib: self.memory_bytes.div_ceil(1024),
            vcpus: self.cpus,
            os,
            disks,
            interfaces: if self.network {
                vec![Interface::User {
                    model: NicModel::Virtio,
                }]
            } else {
                Vec::new()
            },
            serial: Some(Serial::Pty {
                log: Some(self.console_log.clone()),
            }),
            metadata: Some(PlatterMetadata {
                accel: self.accel.accel,
                console_log: Some(self.console_log.clone()),
            }),
            nbd_attach,
        }
    }

    pub fn accel(&self) -> Accel {
        self.accel.accel
    }
}

/// IDE names beyond the four slots only occur for specs that skipped
/// [`VmSpec::validate`]; libvirt then refuses the name with its own error.
fn ide_dev(index: usize) -> String {
    ide_cdrom_dev_name(index).map_or_else(|| format!("hd{index}"), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(v: &str) -> VmDisk {
        VmDisk {
            volume: VolumeRef::parse(v).unwrap(),
            throwaway: false,
            media: Media::Disk,
        }
    }

    fn record(spec: &VmSpec) -> VmRecord {
        VmRecord::new(
            spec,
            AccelDecision {
                accel: Accel::Tcg,
                reason: "test".into(),
            },
            NbdServer::Unix {
                socket: "/run/p/nbd.sock".into(),
            },
            "/var/lib/p/vm1.log".into(),
        )
    }

    #[test]
    fn validates_specs() {
        let mut s = VmSpec::new(Name::new("vm1").unwrap(), vec![disk("root")]);
        assert!(s.validate().is_ok());
        s.memory_bytes = 1 << 20;
        assert!(s.validate().unwrap_err().contains("memory"));
        s.memory_bytes = 256 << 20;
        s.cpus = 0;
        assert!(s.validate().unwrap_err().contains("cpus"));
        s.cpus = 2;
        s.disks.clear();
        assert!(s.validate().unwrap_err().contains("BIOS"));
        s.boot = Boot::Kernel {
            kernel: "/k".into(),
            initrd: None,
            cmdline: None,
        };
        assert!(s.validate().is_ok());
        s.disks = (0..4)
            .map(|i| VmDisk {
                media: Media::Cdrom,
                ..disk(&format!("iso{i}"))
            })
            .collect();
        assert!(s.validate().is_ok());
        s.cloud_init_seed = Some("/seed.iso".into());
        assert!(s.validate().unwrap_err().contains("CD-ROM"));
    }

    #[test]
    fn maps_disks_to_devices() {
        let mut s = VmSpec::new(
            Name::new("vm1").unwrap(),
            vec![
                disk("root"),
                VmDisk {
                    media: Media::Cdrom,
                    ..disk("install-iso")
                },
                disk("data@monday"),
            ],
        );
        s.cloud_init_seed = Some("/seed.iso".into());
        let d = record(&s).domain(NbdAttach::Native);
        let devs: Vec<_> = d
            .disks
            .iter()
            .map(|d| (d.target.dev.as_str(), d.read_only, d.boot_order))
            .collect();
        assert_eq!(
            devs,
            vec![
                ("vda", false, Some(1)),
                ("hdc", true, Some(2)),
                ("vdb", true, Some(3)),
                ("hdd", true, None)
            ]
        );
        match &d.disks[2].source {
            DiskSource::Nbd {
                export,
                reconnect_delay_secs,
                ..
            } => {
                assert_eq!(export, "data@monday");
                assert_eq!(*reconnect_delay_secs, Some(NBD_RECONNECT_DELAY_SECS));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(d.disks[3].source, DiskSource::File("/seed.iso".into()));
        assert_eq!(d.memory_kib, 512 * 1024);
        assert_eq!(d.os, Os::Bios);
    }

    #[test]
    fn an_iso_alone_boots_as_a_cdrom_and_after_a_disk_otherwise() {
        let iso = VmDisk {
            media: Media::Cdrom,
            ..disk("img-1@base")
        };
        let s = VmSpec::new(Name::new("vm1").unwrap(), vec![iso.clone()]);
        let d = record(&s).domain(NbdAttach::Native);
        assert_eq!(d.disks.len(), 1);
        assert_eq!(d.disks[0].device, DiskDevice::Cdrom);
        assert_eq!(d.disks[0].target.bus, Bus::Ide);
        assert!(d.disks[0].read_only);
        assert_eq!(d.disks[0].boot_order, Some(1));
        let xml = d.to_xml().unwrap();
        assert!(xml.contains("device='cdrom'"), "{xml}");
        assert!(!xml.contains("bus='virtio'"), "{xml}");
        // libvirt < 9.2: still an IDE CD-ROM, read-only, booting first.
        let xml = record(&s)
            .domain(NbdAttach::QemuCommandline)
            .to_xml()
            .unwrap();
        assert!(xml.contains("ide-cd") && xml.contains("bootindex"), "{xml}");
        assert!(xml.contains("read-only&quot;:true"), "{xml}");
        assert!(!xml.contains("virtio-blk"), "{xml}");

        // With a volume: the disk first (a blank one falls through to the CD), the CD second.
        let s = VmSpec::new(Name::new("vm1").unwrap(), vec![disk("root"), iso]);
        let d = record(&s).domain(NbdAttach::Native);
        let devs: Vec<_> = d
            .disks
            .iter()
            .map(|d| (d.device, d.target.dev.as_str(), d.boot_order))
            .collect();
        assert_eq!(
            devs,
            vec![
                (DiskDevice::Disk, "vda", Some(1)),
                (DiskDevice::Cdrom, "hdc", Some(2))
            ]
        );
    }

    #[test]
    fn the_uri_is_kept_and_old_records_without_it_still_load() {
        let s = VmSpec::new(Name::new("vm1").unwrap(), vec![disk("root")]);
        let mut r = record(&s);
        assert_eq!(r.uri_or(None), crate::DEFAULT_URI);
        r.uri = Some("qemu+ssh://host/system".into());
        assert_eq!(r.uri_or(None), "qemu+ssh://host/system");
        assert_eq!(r.uri_or(Some("test:///default")), "test:///default");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["uri"], "qemu+ssh://host/system");
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("uri");
        let back: VmRecord = serde_json::from_value(old).unwrap();
        assert_eq!(back.uri, None);
        assert_eq!(serde_json::from_value::<VmRecord>(json).unwrap(), r);
    }

    #[test]
    fn kernel_boot_gets_a_console_cmdline_and_no_boot_order() {
        let mut s = VmSpec::new(Name::new("vm1").unwrap(), vec![disk("root")]);
        s.boot = Boot::Kernel {
            kernel: "/k".into(),
            initrd: Some("/i".into()),
            cmdline: None,
        };
        s.network = false;
        let d = record(&s).domain(NbdAttach::Native);
        assert_eq!(
            d.os,
            Os::DirectKernel {
                kernel: "/k".into(),
                initrd: Some("/i".into()),
                cmdline: Some(DEFAULT_CMDLINE.into())
            }
        );
        assert_eq!(d.disks[0].boot_order, None);
        assert!(d.interfaces.is_empty());
    }

    #[test]
    fn record_round_trips_through_json() {
        let mut s = VmSpec::new(
            Name::new("vm1").unwrap(),
            vec![
                VmDisk {
                    throwaway: true,
                    ..disk("vm1-root")
                },
                disk("data"),
            ],
        );
        s.boot = Boot::Kernel {
            kernel: "/k".into(),
            initrd: None,
            cmdline: Some("quiet".into()),
        };
        s.cloud_init_seed = Some("/seed.iso".into());
        let r = record(&s);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"type\":\"kernel\""), "{json}");
        assert!(json.contains("\"accel\":\"tcg\""), "{json}");
        let back: VmRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            r.throwaway_volumes()
                .map(|v| v.to_string())
                .collect::<Vec<_>>(),
            vec!["vm1-root"]
        );
        // A bad name in a stored record is refused on load.
        let bad = json.replace("\"vm1\"", "\"VM 1\"");
        assert!(serde_json::from_str::<VmRecord>(&bad).is_err());
    }
}
