//! platter-launcher: platter VMs run by libvirt.
//!
//! - [`vm`]: what a VM is ([`VmSpec`] asked for, [`VmRecord`] kept in the store) and the
//!   pure mapping to a libvirt domain;
//! - [`domain`]: typed libvirt domain XML (NBD disks with reconnect, CD-ROMs, direct kernel
//!   or BIOS boot, user-mode virtio-net, serial console logged to a file);
//! - [`accel`]: KVM when it really works, TCG otherwise (`--accel kvm|tcg|auto`);
//! - [`libvirt`]: the [`Launcher`] (define, start, stop, restart, delete, list, state,
//!   console log) over the `virt` crate;
//! - [`cloudinit`]: NoCloud seed ISOs;
//! - [`access`]: making the NBD socket and boot files usable by the `libvirt-qemu` user;
//! - [`probe`]: whether a served volume is an ISO image (a CD-ROM) or a disk.
//!
//! The crate never starts libvirtd, serves disks or owns volumes: the caller (the VM use
//! cases in `platter-control`, run by `platter serve`) serves the disks, persists the
//! [`VmRecord`] and deletes throw-away volumes.
#![forbid(unsafe_code)]

pub mod accel;
pub mod access;
pub mod cloudinit;
pub mod domain;
mod error;
pub mod libvirt;
pub mod probe;
pub mod vm;
mod xml;

pub use accel::{Accel, AccelChoice, AccelDecision};
pub use error::{LauncherError, Result};
pub use libvirt::{LastExit, Launcher, StopOutcome, VmState, VmStatus, DEFAULT_URI};
pub use vm::{Boot, Media, VmDisk, VmRecord, VmSpec};
pub use xml::XmlError;
