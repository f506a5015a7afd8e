//! The domain XML we generate is accepted by libvirt's schema and its define-time checks
//! (`virsh define --validate`), for every shape of VM platter makes.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use platter_launcher::accel::{Accel, AccelDecision};
use platter_launcher::domain::{
    Bus, Disk, DiskDevice, DiskSource, Domain, Interface, NbdAttach, NbdServer, NicModel, Os,
    Serial, Target,
};
use platter_launcher::{Boot, Media, VmDisk, VmRecord, VmSpec};
use platter_types::VolumeRef;

fn virsh(args: &[&str]) -> std::process::Output {
    Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .output()
        .unwrap()
}

/// Defines with validation, then undefines; panics with libvirt's complaint.
fn define_validate(xml: &str, name: &str, dir: &Path) {
    let file = dir.join(format!("{name}.xml"));
    std::fs::write(&file, xml).unwrap();
    let out = virsh(&["define", "--validate", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let undefine = virsh(&["undefine", name]);
    assert!(
        out.status.success(),
        "virsh define --validate refused:\n{stderr}\n{xml}"
    );
    assert!(
        undefine.status.success(),
        "{}",
        String::from_utf8_lossy(&undefine.stderr)
    );
}

fn vm_disk(v: &str, media: Media) -> VmDisk {
    VmDisk {
        volume: VolumeRef::parse(v).unwrap(),
        throwaway: false,
        media,
    }
}

#[test]
fn records_produce_valid_domains() {
    ensure_libvirtd();
    let scratch = Scratch::new();
    let seed = scratch.path("seed.iso");
    let name = unique_name("xml-kernel");
    platter_launcher::cloudinit::build_seed_iso(&name, b"#cloud-config\n", &seed).unwrap();
    // The attachment this libvirt needs (native <reconnect> is refused by libvirt < 9.2).
    let attach = platter_launcher::Launcher::new(None).unwrap().nbd_attach();
    let mut spec = VmSpec::new(
        name.clone(),
        vec![
            VmDisk {
                throwaway: true,
                ..vm_disk("root", Media::Disk)
            },
            vm_disk("data@monday", Media::Disk),
            vm_disk("installer", Media::Cdrom),
        ],
    );
    spec.boot = Boot::Kernel {
        kernel: scratch.path("vmlinuz"),
        initrd: Some(scratch.path("initrd.gz")),
        cmdline: Some("console=ttyS0 root=/dev/vda quiet".into()),
    };
    spec.cloud_init_seed = Some(seed);
    for (n, accel) in [
        (name.clone(), Accel::Tcg),
        (unique_name("xml-bios-kvm"), Accel::Kvm),
    ] {
        let mut spec = spec.clone();
        spec.name = n.clone();
        if accel == Accel::Kvm {
            spec.boot = Boot::Bios;
            spec.network = false;
        }
        let record = VmRecord::new(
            &spec,
            AccelDecision {
                accel,
                reason: "test".into(),
            },
            NbdServer::Unix {
                socket: scratch.path("nbd.sock"),
            },
            scratch.path("console.log"),
        );
        let xml = record.domain(attach).to_xml().unwrap();
        define_validate(&xml, n.as_str(), scratch.dir.path());
    }
}

#[test]
fn tcp_nbd_and_file_console_are_valid() {
    ensure_libvirtd();
    let scratch = Scratch::new();
    let name = unique_name("xml-tcp");
    let d = Domain {
        name: name.to_string(),
        accel: Accel::Tcg,
        memory_kib: 131072,
        vcpus: 2,
        os: Os::Bios,
        disks: vec![Disk {
            device: DiskDevice::Disk,
            source: DiskSource::Nbd {
                export: "vol@snap".into(),
                server: NbdServer::Tcp {
                    host: "127.0.0.1".into(),
                    port: 10809,
                },
                reconnect_delay_secs: Some(2),
            },
            target: Target {
                dev: "vda".into(),
                bus: Bus::Virtio,
            },
            read_only: true,
            boot_order: Some(1),
        }],
        interfaces: vec![Interface::User {
            model: NicModel::Virtio,
        }],
        serial: Some(Serial::File {
            path: scratch.path("console.log"),
        }),
        metadata: None,
        nbd_attach: NbdAttach::QemuCommandline,
    };
    define_validate(&d.to_xml().unwrap(), name.as_str(), scratch.dir.path());
    // Native <reconnect> only where libvirt knows it (9.2+); a native disk without it
    // is valid everywhere.
    let native_reconnect =
        platter_launcher::Launcher::new(None).unwrap().nbd_attach() == NbdAttach::Native;
    let mut d = Domain {
        nbd_attach: NbdAttach::Native,
        ..d
    };
    if !native_reconnect {
        if let DiskSource::Nbd {
            reconnect_delay_secs,
            ..
        } = &mut d.disks[0].source
        {
            *reconnect_delay_secs = None;
        }
    }
    define_validate(&d.to_xml().unwrap(), name.as_str(), scratch.dir.path());
}
