//! `vm create`: check everything that can be checked before anything is made (the
//! resources, the boot files, the name, the volume, libvirt, a local image's kind), then
//! the disks (a volume, an image's throw-away clone or its ISO as a CD-ROM), the
//! cloud-init seed, the libvirt domain and the record. A create that fails leaves no
//! clone, seed, domain or record behind.

use std::path::{Path, PathBuf};

use platter_launcher::cloudinit::{build_seed_iso_from_file, build_seed_iso_with};
use platter_launcher::probe::Content;
use platter_launcher::{Boot, Launcher, Media, VmDisk, VmRecord, VmSpec};
use platter_snapshotter::Store;
use platter_types::{Name, StoreLayout, VolumeRef};

use crate::api::{Event, VmCreateParams, VmInfo};
use crate::error::{ControlError, ErrorKind};
use crate::Context;

use super::image::{ensure_image, local_content};
use super::{info, locked, records, serving, VmError, VmHost, VOLUME_USES};

pub fn create(
    store: &Store,
    host: Option<&VmHost>,
    p: &VmCreateParams,
    ctx: Context,
    events: &mut dyn FnMut(Event),
) -> Result<VmInfo, ControlError> {
    check_params(p)?;
    locked(host, &format!("vm {}", p.name), || {
        let dir = store_dir(store)?;
        if records::get(store, &p.name)?.is_some() {
            return Err(VmError::Exists {
                name: p.name.to_string(),
                dir: store.dir().to_path_buf(),
            }
            .into());
        }
        if let Some(v) = &p.volume {
            check_volume(store, &p.name, v)?;
        }
        let host = serving(host, store.dir())?;
        let launcher = Launcher::new(p.connect.as_deref()).map_err(VmError::from)?;
        if let (Some(image), Some(_)) = (&p.image, &p.volume) {
            // Known before downloading anything: a local disk image is refused here.
            if local_content(image) == Some(Content::Disk) {
                return Err(not_iso(p, image));
            }
        }
        let (disks, clone) = disks(store, host, p, ctx, events)?;
        let seed = p.cloud_init_user_data.clone().map(Seed::File);
        let record = define(&dir, host, &launcher, spec_of(p, disks), seed).and_then(|r| {
            // The volume is looked at again, and the record saved, under the lock that
            // `volume delete` checks the records under: it cannot go in between. A
            // throw-away disk is cloned in the transaction that creates the record, so a
            // crash leaves both or neither.
            locked(Some(host), VOLUME_USES, || {
                if let Some(v) = &p.volume {
                    check_volume(store, &p.name, v)?;
                }
                match &clone {
                    Some((base, name)) => store
                        .clone_volume_with(base, name, &[records::create_change(&r)?])
                        .map(|_| ())
                        .map_err(|e| {
                            VmError::Step {
                                step: format!("vm {}: making its throw-away disk {name}", p.name),
                                source: Box::new(e.into()),
                            }
                            .into()
                        }),
                    None => records::put(store, &r),
                }
            })
            // A domain without a record is invisible to platter: undefine it.
            .inspect_err(|_| {
                let _ = launcher.delete(p.name.as_str());
            })
            .map(|()| r)
        });
        let record = record?;
        if p.start {
            launcher.start(p.name.as_str()).map_err(VmError::from)?;
        }
        let state = launcher
            .state(p.name.as_str())
            .map(|s| s.to_string())
            .unwrap_or_else(|_| "undefined".into());
        Ok(info(&record, launcher.uri(), &state))
    })
}

/// The store's directory as an absolute path: libvirt and QEMU get paths under it.
pub(crate) fn store_dir(store: &Store) -> Result<PathBuf, VmError> {
    std::path::absolute(store.dir()).map_err(|source| VmError::Io {
        what: "store",
        path: store.dir().to_path_buf(),
        source,
    })
}

/// What needs nothing but the request: resources out of range, boot files that are not
/// there. The dispatcher checks it first; a client may too, before it needs a store.
pub fn check_params(p: &VmCreateParams) -> Result<(), VmError> {
    let placeholder = VmDisk {
        volume: VolumeRef::volume(p.name.clone()),
        throwaway: false,
        media: Media::Disk,
    };
    let mut spec = VmSpec::new(p.name.clone(), vec![placeholder]);
    spec.memory_bytes = p.memory;
    spec.cpus = p.cpus;
    spec.validate()
        .map_err(|reason| platter_launcher::LauncherError::InvalidSpec {
            name: p.name.to_string(),
            reason,
        })?;
    let files = [
        ("--kernel", &p.kernel),
        ("--initrd", &p.initrd),
        ("--cloud-init-user-data", &p.cloud_init_user_data),
    ];
    for (option, path) in files {
        let Some(path) = path else { continue };
        let file = |reason: &str, kind| VmError::File {
            option,
            path: path.clone(),
            reason: reason.to_string(),
            kind,
        };
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(file("not a file", ErrorKind::Invalid)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(file("no such file", ErrorKind::NotFound))
            }
            Err(e) => return Err(file(&e.to_string(), ErrorKind::Failed)),
        }
    }
    Ok(())
}

fn check_volume(store: &Store, vm: &Name, volume: &Name) -> Result<(), ControlError> {
    match store.inspect(&VolumeRef::volume(volume.clone())) {
        Ok(_) => Ok(()),
        Err(e) => match ControlError::from(e) {
            e if e.kind() == ErrorKind::NotFound => Err(VmError::NoSuchVolume {
                vm: vm.to_string(),
                volume: volume.to_string(),
            }
            .into()),
            e => Err(e),
        },
    }
}

fn not_iso(p: &VmCreateParams, image: &str) -> ControlError {
    VmError::NotIso {
        vm: p.name.to_string(),
        image: image.to_string(),
    }
    .into()
}

/// A throw-away disk still to be made: cloned from `.0` as `.1`, with the VM's record.
type PendingClone = (VolumeRef, Name);

/// The disks of the new VM from `volume` and `image`: a throw-away clone of a disk image,
/// or an ISO image's cached snapshot as a CD-ROM (after the volume, if any, so a blank
/// volume falls through to the CD under BIOS boot). A throw-away clone is not made here:
/// its source and name are returned, to be cloned with the record.
fn disks(
    store: &Store,
    host: &VmHost,
    p: &VmCreateParams,
    ctx: Context,
    events: &mut dyn FnMut(Event),
) -> Result<(Vec<VmDisk>, Option<PendingClone>), ControlError> {
    let volume = p.volume.as_ref().map(|v| VmDisk {
        volume: VolumeRef::volume(v.clone()),
        throwaway: false,
        media: Media::Disk,
    });
    let Some(image) = &p.image else {
        return Ok((volume.into_iter().collect(), None));
    };
    let cached = ensure_image(store, Some(host), image, &p.registry, ctx.cancel, events)?;
    match (cached.content, volume) {
        (Content::Iso, volume) => {
            let cd = VmDisk {
                volume: cached.base,
                throwaway: false,
                media: Media::Cdrom,
            };
            Ok((volume.into_iter().chain([cd]).collect(), None))
        }
        (Content::Disk, Some(_)) => Err(not_iso(p, image)),
        (Content::Disk, None) => {
            let clone =
                Name::new(&format!("{}-disk", p.name)).map_err(|_| VmError::NameTooLong {
                    vm: p.name.to_string(),
                })?;
            let disk = VmDisk {
                volume: VolumeRef::volume(clone.clone()),
                throwaway: true,
                media: Media::Disk,
            };
            Ok((vec![disk], Some((cached.base, clone))))
        }
    }
}

/// The launcher's spec of `p` with `disks`.
fn spec_of(p: &VmCreateParams, disks: Vec<VmDisk>) -> VmSpec {
    let mut spec = VmSpec::new(p.name.clone(), disks);
    spec.memory_bytes = p.memory;
    spec.cpus = p.cpus;
    spec.accel = p.accel;
    if let Some(kernel) = &p.kernel {
        spec.boot = Boot::Kernel {
            kernel: kernel.clone(),
            initrd: p.initrd.clone(),
            cmdline: p.cmdline.clone(),
        };
    }
    spec
}

/// Where a VM's cloud-init user data comes from.
pub enum Seed {
    /// `--cloud-init-user-data FILE`.
    File(PathBuf),
    /// A VirtualMachine's `cloudInitNoCloud`: its user data and network data.
    Declared {
        user_data: Vec<u8>,
        network_config: Option<Vec<u8>>,
    },
}

/// Defines a VM whose disks exist already (a declarative VirtualMachine's: its
/// DataVolumes and the throw-away disks the reconciler made): the domain, then the
/// record, under the lock `volume delete` checks records under. A failure leaves no
/// domain and no record.
pub fn define_prepared(
    store: &Store,
    host: &VmHost,
    spec: VmSpec,
    seed: Option<Seed>,
) -> Result<VmRecord, ControlError> {
    let name = spec.name.clone();
    locked(Some(host), &format!("vm {name}"), || {
        let dir = store_dir(store)?;
        if let Some(r) = records::get(store, &name)? {
            return Ok(r);
        }
        spec.validate()
            .map_err(|reason| platter_launcher::LauncherError::InvalidSpec {
                name: name.to_string(),
                reason,
            })
            .map_err(VmError::from)?;
        let launcher = Launcher::new(None).map_err(VmError::from)?;
        let record = define(&dir, host, &launcher, spec, seed)?;
        locked(Some(host), VOLUME_USES, || records::put(store, &record)).inspect_err(|_| {
            let _ = launcher.delete(name.as_str());
        })?;
        Ok(record)
    })
}

/// The cloud-init seed and the libvirt domain of `spec`; the record to keep.
fn define(
    dir: &Path,
    host: &VmHost,
    launcher: &Launcher,
    mut spec: VmSpec,
    seed: Option<Seed>,
) -> Result<VmRecord, ControlError> {
    let layout = StoreLayout::new(dir);
    let vm_dir = layout.vms_dir();
    std::fs::create_dir_all(&vm_dir).map_err(|source| VmError::Io {
        what: "creating",
        path: vm_dir.clone(),
        source,
    })?;
    let name = spec.name.clone();
    if let Some(seed) = seed {
        let path = layout.seed_iso(&name);
        match seed {
            Seed::File(ud) => build_seed_iso_from_file(&name, &ud, &path),
            Seed::Declared {
                user_data,
                network_config,
            } => build_seed_iso_with(&name, &user_data, network_config.as_deref(), &path),
        }
        .map_err(VmError::from)?;
        spec.cloud_init_seed = Some(path);
    }
    let console_log = layout.console_log(&name);
    let created = launcher.create(&spec, host.nbd_socket(), &console_log);
    if created.is_err() {
        if let Some(seed) = &spec.cloud_init_seed {
            let _ = std::fs::remove_file(seed);
        }
    }
    Ok(created.map_err(VmError::from)?)
}
