//! Domain XML against the exact text expected. A change here is a change to what
//! libvirt is asked for: check it against `virsh define --validate` (tests/libvirt_xml.rs).

use super::*;

fn nbd_disk(export: &str, server: NbdServer, dev: &str) -> Disk {
    Disk {
        device: DiskDevice::Disk,
        source: DiskSource::Nbd {
            export: export.into(),
            server,
            reconnect_delay_secs: Some(2),
        },
        target: Target {
            dev: dev.into(),
            bus: Bus::Virtio,
        },
        read_only: false,
        boot_order: None,
    }
}

#[test]
fn direct_kernel_boot_from_nbd_unix_socket() {
    let d = Domain {
        name: "vm1".into(),
        accel: Accel::Tcg,
        memory_kib: 262144,
        vcpus: 1,
        os: Os::DirectKernel {
            kernel: "/t/vmlinuz".into(),
            initrd: Some("/t/initrd.gz".into()),
            cmdline: Some("console=ttyS0 quiet platter.write=a&b".into()),
        },
        disks: vec![nbd_disk(
            "vm1-root",
            NbdServer::Unix {
                socket: "/run/platter/nbd.sock".into(),
            },
            "vda",
        )],
        interfaces: vec![Interface::User {
            model: NicModel::Virtio,
        }],
        serial: Some(Serial::File {
            path: "/t/console.log".into(),
        }),
        metadata: Some(PlatterMetadata {
            accel: Accel::Tcg,
            console_log: Some("/t/console.log".into()),
        }),
        nbd_attach: NbdAttach::Native,
    };
    let expected = "\
<domain type='qemu'>
  <name>vm1</name>
  <metadata>
    <platter:vm xmlns:platter='https://platter.dev/xmlns/vm/1' accel='tcg' console-log='/t/console.log'/>
  </metadata>
  <memory unit='KiB'>262144</memory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>/t/vmlinuz</kernel>
    <initrd>/t/initrd.gz</initrd>
    <cmdline>console=ttyS0 quiet platter.write=a&amp;b</cmdline>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none' discard='unmap'/>
      <source protocol='nbd' name='vm1-root'>
        <host transport='unix' socket='/run/platter/nbd.sock'/>
        <reconnect delay='2'/>
      </source>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='/t/console.log'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <target type='serial' port='0'/>
    </console>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
";
    assert_eq!(d.to_xml().unwrap(), expected);
}

#[test]
fn bios_boot_with_tcp_snapshot_cdrom_and_pty_console() {
    let mut snap = nbd_disk(
        "base@v1",
        NbdServer::Tcp {
            host: "127.0.0.1".into(),
            port: 10809,
        },
        "vdb",
    );
    snap.read_only = true;
    let mut root = nbd_disk(
        "root",
        NbdServer::Tcp {
            host: "127.0.0.1".into(),
            port: 10809,
        },
        "vda",
    );
    root.boot_order = Some(1);
    let seed = Disk {
        device: DiskDevice::Cdrom,
        source: DiskSource::File("/var/lib/platter/vms/web/seed.iso".into()),
        target: Target {
            dev: "hdc".into(),
            bus: Bus::Ide,
        },
        read_only: true,
        boot_order: None,
    };
    let d = Domain {
        name: "web".into(),
        accel: Accel::Kvm,
        memory_kib: 1048576,
        vcpus: 2,
        os: Os::Bios,
        disks: vec![root, snap, seed],
        interfaces: vec![],
        serial: Some(Serial::Pty {
            log: Some("/var/log/web.log".into()),
        }),
        metadata: None,
        nbd_attach: NbdAttach::Native,
    };
    let expected = "\
<domain type='kvm'>
  <name>web</name>
  <memory unit='KiB'>1048576</memory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none' discard='unmap'/>
      <source protocol='nbd' name='root'>
        <host name='127.0.0.1' port='10809'/>
        <reconnect delay='2'/>
      </source>
      <target dev='vda' bus='virtio'/>
      <boot order='1'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source protocol='nbd' name='base@v1'>
        <host name='127.0.0.1' port='10809'/>
        <reconnect delay='2'/>
      </source>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/platter/vms/web/seed.iso'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <serial type='pty'>
      <log file='/var/log/web.log' append='off'/>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
";
    assert_eq!(d.to_xml().unwrap(), expected);
}

#[test]
fn hostile_strings_are_escaped_or_refused() {
    let mut d = Domain {
        name: "x".into(),
        accel: Accel::Tcg,
        memory_kib: 65536,
        vcpus: 1,
        os: Os::DirectKernel {
            kernel: "/k'/><evil/>".into(),
            initrd: None,
            cmdline: Some("</cmdline><evil/>".into()),
        },
        disks: vec![],
        interfaces: vec![],
        serial: None,
        metadata: None,
        nbd_attach: NbdAttach::Native,
    };
    let xml = d.to_xml().unwrap();
    assert!(!xml.contains("<evil"), "{xml}");
    assert!(
        xml.contains("<kernel>/k&apos;/&gt;&lt;evil/&gt;</kernel>"),
        "{xml}"
    );
    d.os = Os::DirectKernel {
        kernel: "/k".into(),
        initrd: None,
        cmdline: Some("a\u{7}b".into()),
    };
    let err = d.to_xml().unwrap_err();
    assert!(err.to_string().contains("cmdline"), "{err}");
}

#[test]
fn non_utf8_paths_are_refused() {
    use std::os::unix::ffi::OsStrExt;
    let bad = PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/\xff.iso"));
    let d = Domain {
        name: "x".into(),
        accel: Accel::Tcg,
        memory_kib: 65536,
        vcpus: 1,
        os: Os::Bios,
        disks: vec![Disk {
            device: DiskDevice::Cdrom,
            source: DiskSource::File(bad),
            target: Target {
                dev: "hdc".into(),
                bus: Bus::Ide,
            },
            read_only: true,
            boot_order: Some(1),
        }],
        interfaces: vec![],
        serial: None,
        metadata: None,
        nbd_attach: NbdAttach::Native,
    };
    assert!(matches!(
        d.to_xml(),
        Err(DomainXmlError::NonUtf8Path {
            what: "disk file",
            ..
        })
    ));
}

#[test]
fn device_names() {
    assert_eq!(virtio_dev_name(0), "vda");
    assert_eq!(virtio_dev_name(25), "vdz");
    assert_eq!(virtio_dev_name(26), "vdaa");
    assert_eq!(virtio_dev_name(27), "vdab");
    assert_eq!(virtio_dev_name(701), "vdzz");
    assert_eq!(virtio_dev_name(702), "vdaaa");
    assert_eq!(ide_cdrom_dev_name(0), Some("hdc"));
    assert_eq!(ide_cdrom_dev_name(3), Some("hdb"));
    assert_eq!(ide_cdrom_dev_name(4), None);
}

#[test]
fn nbd_attach_follows_the_libvirt_version() {
    assert_eq!(
        NbdAttach::for_libvirt_version(9_000_000),
        NbdAttach::QemuCommandline
    );
    assert_eq!(
        NbdAttach::for_libvirt_version(9_001_999),
        NbdAttach::QemuCommandline
    );
    assert_eq!(NbdAttach::for_libvirt_version(9_002_000), NbdAttach::Native);
    assert_eq!(
        NbdAttach::for_libvirt_version(11_000_000),
        NbdAttach::Native
    );
}

/// libvirt < 9.2: NBD disks go to QEMU as -blockdev/-device with reconnect-delay, the
/// seed ISO stays a libvirt disk.
#[test]
fn qemu_commandline_nbd_disks() {
    let mut root = nbd_disk(
        "root",
        NbdServer::Unix {
            socket: "/run/p/nbd.sock".into(),
        },
        "vda",
    );
    root.boot_order = Some(1);
    let mut iso = nbd_disk(
        "install@v1",
        NbdServer::Tcp {
            host: "127.0.0.1".into(),
            port: 10809,
        },
        "hdd",
    );
    iso.device = DiskDevice::Cdrom;
    iso.target.bus = Bus::Ide;
    iso.read_only = true;
    iso.boot_order = Some(2);
    let seed = Disk {
        device: DiskDevice::Cdrom,
        source: DiskSource::File("/s.iso".into()),
        target: Target {
            dev: "hdc".into(),
            bus: Bus::Ide,
        },
        read_only: true,
        boot_order: None,
    };
    let d = Domain {
        name: "pt".into(),
        accel: Accel::Tcg,
        memory_kib: 65536,
        vcpus: 1,
        os: Os::Bios,
        disks: vec![root, iso, seed],
        interfaces: vec![],
        serial: None,
        metadata: None,
        nbd_attach: NbdAttach::QemuCommandline,
    };
    let q = "&quot;";
    let expected = format!(
        "\
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>pt</name>
  <memory unit='KiB'>65536</memory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/s.iso'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-blockdev'/>
    <qemu:arg value='{{{q}driver{q}:{q}nbd{q},{q}node-name{q}:{q}platter-vda-nbd{q},{q}server{q}:{{{q}type{q}:{q}unix{q},{q}path{q}:{q}/run/p/nbd.sock{q}}},{q}export{q}:{q}root{q},{q}reconnect-delay{q}:2,{q}cache{q}:{{{q}direct{q}:true,{q}no-flush{q}:false}},{q}read-only{q}:false,{q}discard{q}:{q}unmap{q}}}'/>
    <qemu:arg value='-blockdev'/>
    <qemu:arg value='{{{q}driver{q}:{q}raw{q},{q}node-name{q}:{q}platter-vda{q},{q}file{q}:{q}platter-vda-nbd{q},{q}cache{q}:{{{q}direct{q}:true,{q}no-flush{q}:false}},{q}read-only{q}:false,{q}discard{q}:{q}unmap{q}}}'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='{{{q}driver{q}:{q}virtio-blk-pci{q},{q}drive{q}:{q}platter-vda{q},{q}id{q}:{q}platter-vda{q},{q}bootindex{q}:1,{q}write-cache{q}:{q}on{q}}}'/>
    <qemu:arg value='-blockdev'/>
    <qemu:arg value='{{{q}driver{q}:{q}nbd{q},{q}node-name{q}:{q}platter-hdd-nbd{q},{q}server{q}:{{{q}type{q}:{q}inet{q},{q}host{q}:{q}127.0.0.1{q},{q}port{q}:{q}10809{q}}},{q}export{q}:{q}install@v1{q},{q}reconnect-delay{q}:2,{q}cache{q}:{{{q}direct{q}:true,{q}no-flush{q}:false}},{q}read-only{q}:true,{q}discard{q}:{q}ignore{q}}}'/>
    <qemu:arg value='-blockdev'/>
    <qemu:arg value='{{{q}driver{q}:{q}raw{q},{q}node-name{q}:{q}platter-hdd{q},{q}file{q}:{q}platter-hdd-nbd{q},{q}cache{q}:{{{q}direct{q}:true,{q}no-flush{q}:false}},{q}read-only{q}:true,{q}discard{q}:{q}ignore{q}}}'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='{{{q}driver{q}:{q}ide-cd{q},{q}drive{q}:{q}platter-hdd{q},{q}id{q}:{q}platter-hdd{q},{q}bus{q}:{q}ide.1{q},{q}unit{q}:1,{q}bootindex{q}:2}}'/>
  </qemu:commandline>
</domain>
"
    );
    assert_eq!(d.to_xml().unwrap(), expected);
}
