//! How a VirtualMachine's template maps onto platter's pieces: which volume backs each
//! disk (its DataVolume's volume, a claim, or a throw-away disk made for this VM alone),
//! the boot order, memory, CPUs and the cloud-init user data. Pure: the reconciler does
//! the IO.

use platter_api::vm::Volume;
use platter_api::VirtualMachine;
use platter_launcher::{Media, VmDisk};
use platter_types::{Name, VolumeRef};

use super::{local_name, ObjectError};

/// What backs one volume of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// The volume of DataVolume `dv` (in the VM's namespace).
    DataVolume { dv: String, volume: Name },
    /// A claim: the volume of that name (a DataVolume's, if one has that name).
    Claim { claim: String, volume: Name },
    /// A throw-away clone of a registry image, made for this VM; `pull_secret` names the
    /// Secret (in the VM's namespace) with the registry's credentials.
    ContainerDisk {
        image: String,
        volume: Name,
        pull_secret: Option<String>,
    },
    /// A throw-away empty disk of `size` bytes.
    EmptyDisk { size: u64, volume: Name },
    /// The cloud-init seed (not a disk of the VM's record: the launcher attaches it).
    CloudInit {
        user_data: Vec<u8>,
        network_data: Option<Vec<u8>>,
    },
    /// `firmware.kernelBoot.container`: a kernel (and initrd) taken out of a container
    /// image for this VM; not a volume, but made ready with its disks.
    KernelBoot(KernelBoot),
}

/// The entry [`backings`] adds for a VM that boots a kernel from a container image (a
/// name no template volume can have: those are DNS labels).
pub const KERNEL_BOOT: &str = "(kernelBoot)";

/// Where a VM's kernel and initrd come from, and the command line it boots with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBoot {
    pub image: String,
    /// The `imagePullSecret` (in the VM's namespace).
    pub pull_secret: Option<String>,
    pub kernel_path: String,
    pub initrd_path: Option<String>,
    pub kernel_args: Option<String>,
}

impl Backing {
    /// The platter volume, for the kinds that have one.
    pub fn volume(&self) -> Option<&Name> {
        match self {
            Backing::DataVolume { volume, .. }
            | Backing::Claim { volume, .. }
            | Backing::ContainerDisk { volume, .. }
            | Backing::EmptyDisk { volume, .. } => Some(volume),
            Backing::CloudInit { .. } | Backing::KernelBoot(_) => None,
        }
    }

    pub fn throwaway(&self) -> bool {
        matches!(
            self,
            Backing::ContainerDisk { .. } | Backing::EmptyDisk { .. }
        )
    }
}

/// The template's volumes, in template order, with what backs each.
pub fn backings(vm: &VirtualMachine, ns: &str) -> Result<Vec<(String, Backing)>, ObjectError> {
    let name = vm.metadata.name.as_deref().unwrap_or_default();
    let vm_local = local_name(ns, name)?;
    let mut out: Vec<(String, Backing)> = vm
        .spec
        .template
        .spec
        .volumes
        .iter()
        .map(|v| Ok((v.name.clone(), backing(v, ns, &vm_local)?)))
        .collect::<Result<_, ObjectError>>()?;
    if let Some(k) = kernel_boot(vm) {
        out.push((KERNEL_BOOT.to_string(), Backing::KernelBoot(k)));
    }
    Ok(out)
}

/// The template's kernel boot, when its kernel comes from a container image (validation
/// and apply have refused the other shapes).
fn kernel_boot(vm: &VirtualMachine) -> Option<KernelBoot> {
    let k = vm
        .spec
        .template
        .spec
        .domain
        .firmware
        .as_ref()?
        .kernel_boot
        .as_ref()?;
    let c = k.container.as_ref()?;
    Some(KernelBoot {
        image: image_source(&c.image),
        pull_secret: c.image_pull_secret.clone().filter(|n| !n.is_empty()),
        kernel_path: c.kernel_path.clone()?,
        initrd_path: c.initrd_path.clone().filter(|p| !p.is_empty()),
        kernel_args: k.kernel_args.clone().filter(|a| !a.is_empty()),
    })
}

/// A container image as KubeVirt names it (`registry/repo:tag`), as an import source.
fn image_source(image: &str) -> String {
    if image.contains("://") {
        image.to_string()
    } else {
        format!("docker://{image}")
    }
}

fn own(vm_local: &Name, volume: &str) -> Result<Name, ObjectError> {
    Name::new(&format!("{vm_local}-{volume}")).map_err(|e| ObjectError::LocalName {
        object: format!("volume {volume} of VirtualMachine {vm_local}"),
        detail: e.to_string(),
    })
}

fn backing(v: &Volume, ns: &str, vm_local: &Name) -> Result<Backing, ObjectError> {
    if let Some(d) = &v.data_volume {
        return Ok(Backing::DataVolume {
            dv: d.name.clone(),
            volume: local_name(ns, &d.name)?,
        });
    }
    if let Some(c) = &v.persistent_volume_claim {
        return Ok(Backing::Claim {
            claim: c.claim_name.clone(),
            volume: local_name(ns, &c.claim_name)?,
        });
    }
    if let Some(c) = &v.container_disk {
        return Ok(Backing::ContainerDisk {
            image: image_source(&c.image),
            volume: own(vm_local, &v.name)?,
            pull_secret: c.image_pull_secret.clone().filter(|n| !n.is_empty()),
        });
    }
    if let Some(e) = &v.empty_disk {
        return Ok(Backing::EmptyDisk {
            // Validation has checked that the capacity parses and is not zero.
            size: e.capacity.value().unwrap_or(0).div_ceil(4096) * 4096,
            volume: own(vm_local, &v.name)?,
        });
    }
    if let Some(ci) = &v.cloud_init_no_cloud {
        let damaged = |detail: String| ObjectError::Damaged {
            object: format!("volume {} (cloudInitNoCloud)", v.name),
            detail,
        };
        let user_data = ci.user_data_bytes().map_err(damaged)?;
        let network_data = ci.network_data_bytes().map_err(damaged)?;
        return Ok(Backing::CloudInit {
            user_data,
            network_data,
        });
    }
    Err(ObjectError::Damaged {
        object: format!("volume {}", v.name),
        detail: "no volume source (validation should have refused it)".into(),
    })
}

/// The VM's disks in boot order: disks with a bootOrder first (ascending), then the
/// other disks in the order listed, then volumes with no disk entry (KubeVirt attaches
/// those as disks too). The cloud-init volume is not a disk here.
pub fn disks(vm: &VirtualMachine, backings: &[(String, Backing)]) -> Vec<VmDisk> {
    let listed = &vm.spec.template.spec.domain.devices.disks;
    let mut ordered: Vec<(u32, usize, &str, Media)> = listed
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let media = if d.cdrom.is_some() {
                Media::Cdrom
            } else {
                Media::Disk
            };
            (d.boot_order.unwrap_or(u32::MAX), i, d.name.as_str(), media)
        })
        .collect();
    ordered.sort_by_key(|(order, i, _, _)| (*order, *i));
    let mut names: Vec<(&str, Media)> = ordered.iter().map(|(_, _, n, m)| (*n, *m)).collect();
    for (name, _) in backings {
        if !listed.iter().any(|d| d.name == *name) {
            names.push((name.as_str(), Media::Disk));
        }
    }
    names
        .into_iter()
        .filter_map(|(n, media)| {
            let (_, b) = backings.iter().find(|(vn, _)| vn == n)?;
            let volume = b.volume()?;
            Some(VmDisk {
                volume: VolumeRef::volume(volume.clone()),
                throwaway: b.throwaway(),
                media,
            })
        })
        .collect()
}

/// Guest memory in bytes: `memory.guest`, else `resources.requests.memory`.
pub fn memory(vm: &VirtualMachine) -> u64 {
    let d = &vm.spec.template.spec.domain;
    let guest = d.memory.as_ref().and_then(|m| m.guest.as_ref());
    let requested = d.resources.as_ref().and_then(|r| r.requests.get("memory"));
    guest
        .or(requested)
        .and_then(|q| q.value().ok())
        .unwrap_or(0)
}

pub fn cpus(vm: &VirtualMachine) -> u32 {
    vm.spec
        .template
        .spec
        .domain
        .cpu
        .as_ref()
        .map(|c| c.vcpus())
        .unwrap_or(1)
}

/// Seconds an ACPI shutdown may take before the guest is powered off.
pub fn grace(vm: &VirtualMachine) -> u64 {
    vm.spec
        .template
        .spec
        .termination_grace_period_seconds
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(30)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(yaml: &str) -> VirtualMachine {
        let docs = platter_api::parse_documents(yaml).unwrap();
        match docs.into_iter().next().unwrap().unwrap().object {
            platter_api::Object::VirtualMachine(v) => v,
            o => panic!("{o:?}"),
        }
    }

    const VM: &str = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: web}
spec:
  runStrategy: Always
  template:
    spec:
      domain:
        memory: {guest: 256Mi}
        cpu: {cores: 2, sockets: 1}
        devices:
          disks:
          - name: data
            disk: {bus: virtio}
          - name: root
            disk: {bus: virtio}
            bootOrder: 1
          - name: iso
            cdrom: {bus: sata}
      volumes:
      - name: root
        containerDisk: {image: "127.0.0.1:5000/guest:1"}
      - name: data
        dataVolume: {name: web-data}
      - name: iso
        persistentVolumeClaim: {claimName: install}
      - name: scratch
        emptyDisk: {capacity: 1Gi}
      - name: ci
        cloudInitNoCloud: {userDataBase64: "I2Nsb3VkLWNvbmZpZwo=", networkData: "version: 2\n"}
"#;

    #[test]
    fn disks_in_boot_order_with_their_backings() {
        let v = vm(VM);
        let b = backings(&v, "default").unwrap();
        assert_eq!(
            b[0].1,
            Backing::ContainerDisk {
                image: "docker://127.0.0.1:5000/guest:1".into(),
                volume: Name::new("web-root").unwrap(),
                pull_secret: None,
            }
        );
        assert_eq!(
            b[4].1,
            Backing::CloudInit {
                user_data: b"#cloud-config\n".to_vec(),
                network_data: Some(b"version: 2\n".to_vec())
            }
        );
        let d = disks(&v, &b);
        let names: Vec<String> = d.iter().map(|d| d.volume.to_string()).collect();
        assert_eq!(names, ["web-root", "web-data", "install", "web-scratch"]);
        assert!(d[0].throwaway && !d[1].throwaway && !d[2].throwaway && d[3].throwaway);
        assert_eq!(d[2].media, Media::Cdrom);
        assert_eq!(memory(&v), 256 << 20);
        assert_eq!(cpus(&v), 2);
    }

    #[test]
    fn other_namespaces_get_their_own_names() {
        let b = backings(&vm(VM), "team").unwrap();
        assert_eq!(b[1].1.volume().unwrap().as_str(), "team_web-data");
        assert_eq!(b[0].1.volume().unwrap().as_str(), "team_web-root");
    }
}
