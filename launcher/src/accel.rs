//! Choosing between KVM and TCG (QEMU's emulator) for a VM.
//!
//! `/dev/kvm` existing is not proof that KVM works: some hosts (this project's CI among
//! them) expose a paravirtualised KVM (`kvm_pvm`) on which stock guest kernels hang or
//! fault. So the decision is made from facts about the host ([`HostFacts`]) by a pure
//! function ([`decide`]), and only [`HostFacts::probe`] reads `/dev`, `/sys` and `/proc`.
//! A user's explicit `kvm` or `tcg` is always obeyed; `auto` picks KVM only with evidence
//! of a real hardware KVM module.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The accelerator a VM runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// The `<domain type=…>` libvirt uses for this accelerator (`qemu` means TCG).
    pub fn libvirt_domain_type(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "qemu",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl FromStr for Accel {
    type Err = AccelParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(AccelParseError(s.to_string())),
        }
    }
}

/// What the user asked for: `--accel kvm|tcg|auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid accelerator {0:?}: expected kvm, tcg or auto")]
pub struct AccelParseError(pub String);

impl FromStr for AccelChoice {
    type Err = AccelParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            _ => Err(AccelParseError(s.to_string())),
        }
    }
}

impl fmt::Display for AccelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccelChoice::Auto => "auto",
            AccelChoice::Kvm => "kvm",
            AccelChoice::Tcg => "tcg",
        })
    }
}

/// The accelerator chosen and why, for `vm list`/`inspect` and logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelDecision {
    pub accel: Accel,
    pub reason: String,
}

/// What is known about the host's KVM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// `/dev/kvm` exists.
    pub dev_kvm: bool,
    /// Loaded kernel modules whose name starts with `kvm` (`kvm`, `kvm_intel`, `kvm_pvm`…),
    /// from `/sys/module` and `/proc/modules`.
    pub kvm_modules: Vec<String>,
    /// Whether libvirt's capabilities offer `<domain type='kvm'>`; `None` if not asked.
    pub libvirt_offers_kvm: Option<bool>,
}

/// Modules that mean hardware-assisted KVM that stock guests run on.
const HARDWARE_KVM_MODULES: &[&str] = &["kvm_intel", "kvm_amd"];
/// Modules that mean a KVM on which stock guest kernels do not run.
const PARAVIRT_KVM_MODULES: &[&str] = &["kvm_pvm"];

/// Picks the accelerator. Pure: everything it knows is in `facts`.
pub fn decide(choice: AccelChoice, facts: &HostFacts) -> AccelDecision {
    let tcg = |reason: String| AccelDecision {
        accel: Accel::Tcg,
        reason,
    };
    match choice {
        AccelChoice::Tcg => tcg("tcg requested".into()),
        AccelChoice::Kvm => AccelDecision {
            accel: Accel::Kvm,
            reason: "kvm requested".into(),
        },
        AccelChoice::Auto => {
            if !facts.dev_kvm {
                return tcg("no /dev/kvm".into());
            }
            let has = |set: &[&str]| {
                facts
                    .kvm_modules
                    .iter()
                    .find(|m| set.contains(&m.as_str()))
                    .cloned()
            };
            if let Some(m) = has(PARAVIRT_KVM_MODULES) {
                return tcg(format!(
                    "/dev/kvm is a paravirtualised KVM ({m}) on which stock guest kernels hang"
                ));
            }
            if facts.libvirt_offers_kvm == Some(false) {
                return tcg("libvirt offers no kvm domain type".into());
            }
            match has(HARDWARE_KVM_MODULES) {
                Some(m) => AccelDecision { accel: Accel::Kvm, reason: format!("/dev/kvm backed by {m}") },
                None => tcg(
                    "/dev/kvm present but no kvm_intel/kvm_amd module seen; use --accel kvm to force it"
                        .into(),
                ),
            }
        }
    }
}

impl HostFacts {
    /// Reads the facts from this host's `/dev`, `/sys/module` and `/proc/modules`.
    /// (`libvirt_offers_kvm` is left `None`: the launcher fills it from its connection.)
    pub fn probe() -> HostFacts {
        Self::probe_at(Path::new("/"))
    }

    /// As [`HostFacts::probe`], under another root (tests).
    pub fn probe_at(root: &Path) -> HostFacts {
        let mut kvm_modules = Vec::new();
        if let Ok(entries) = std::fs::read_dir(root.join("sys/module")) {
            for entry in entries.flatten() {
                if let Some(name) = entry.file_name().to_str() {
                    if name.starts_with("kvm") {
                        kvm_modules.push(name.to_string());
                    }
                }
            }
        }
        // /proc/modules is absent in some containers; /sys/module is then the only source.
        if let Ok(text) = std::fs::read_to_string(root.join("proc/modules")) {
            kvm_modules.extend(modules_from_proc(&text));
        }
        kvm_modules.sort();
        kvm_modules.dedup();
        HostFacts {
            dev_kvm: root.join("dev/kvm").exists(),
            kvm_modules,
            libvirt_offers_kvm: None,
        }
    }
}

/// The `kvm*` module names in the text of `/proc/modules` (first word of each line).
pub fn modules_from_proc(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|m| m.starts_with("kvm"))
        .map(str::to_string)
        .collect()
}

/// Whether libvirt capabilities XML offers a `kvm` domain type.
pub fn capabilities_offer_kvm(caps_xml: &str) -> bool {
    caps_xml.contains("<domain type='kvm'") || caps_xml.contains("<domain type=\"kvm\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(dev_kvm: bool, modules: &[&str], libvirt: Option<bool>) -> HostFacts {
        HostFacts {
            dev_kvm,
            kvm_modules: modules.iter().map(|s| s.to_string()).collect(),
            libvirt_offers_kvm: libvirt,
        }
    }

    #[test]
    fn explicit_choice_is_obeyed() {
        let none = facts(false, &[], None);
        assert_eq!(decide(AccelChoice::Kvm, &none).accel, Accel::Kvm);
        let good = facts(true, &["kvm", "kvm_intel"], Some(true));
        assert_eq!(decide(AccelChoice::Tcg, &good).accel, Accel::Tcg);
    }

    #[test]
    fn auto_uses_hardware_kvm() {
        for m in ["kvm_intel", "kvm_amd"] {
            let d = decide(AccelChoice::Auto, &facts(true, &["kvm", m], Some(true)));
            assert_eq!(d.accel, Accel::Kvm);
            assert!(d.reason.contains(m), "{}", d.reason);
        }
        // Not asked libvirt: the modules are enough.
        assert_eq!(
            decide(AccelChoice::Auto, &facts(true, &["kvm_amd"], None)).accel,
            Accel::Kvm
        );
    }

    #[test]
    fn auto_avoids_paravirtual_kvm() {
        let d = decide(
            AccelChoice::Auto,
            &facts(true, &["kvm", "kvm_pvm"], Some(true)),
        );
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("kvm_pvm"), "{}", d.reason);
        // Even if a hardware module is also loaded.
        let d = decide(
            AccelChoice::Auto,
            &facts(true, &["kvm_intel", "kvm_pvm"], None),
        );
        assert_eq!(d.accel, Accel::Tcg);
    }

    #[test]
    fn auto_falls_back_to_tcg_without_evidence() {
        assert_eq!(
            decide(AccelChoice::Auto, &facts(false, &["kvm_intel"], None)).accel,
            Accel::Tcg
        );
        assert_eq!(
            decide(AccelChoice::Auto, &facts(true, &["kvm"], None)).accel,
            Accel::Tcg
        );
        let d = decide(AccelChoice::Auto, &facts(true, &["kvm_intel"], Some(false)));
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("libvirt"));
    }

    #[test]
    fn parses_choices() {
        assert_eq!("auto".parse::<AccelChoice>().unwrap(), AccelChoice::Auto);
        assert_eq!("kvm".parse::<AccelChoice>().unwrap(), AccelChoice::Kvm);
        assert_eq!("tcg".parse::<AccelChoice>().unwrap(), AccelChoice::Tcg);
        assert!("KVM".parse::<AccelChoice>().is_err());
        assert_eq!("tcg".parse::<Accel>().unwrap(), Accel::Tcg);
        assert_eq!(Accel::Tcg.libvirt_domain_type(), "qemu");
        assert_eq!(Accel::Kvm.to_string(), "kvm");
    }

    #[test]
    fn reads_proc_modules() {
        let text =
            "kvm_pvm 126976 0 - Live 0x0\nkvm 1142784 1 kvm_pvm, Live 0x0\next4 1 0 - Live 0\n\n";
        assert_eq!(modules_from_proc(text), vec!["kvm_pvm", "kvm"]);
    }

    #[test]
    fn reads_libvirt_capabilities() {
        assert!(capabilities_offer_kvm(
            "<guest>\n  <domain type='qemu'/>\n  <domain type='kvm'/>"
        ));
        assert!(!capabilities_offer_kvm(
            "<guest><domain type='qemu'/></guest>"
        ));
    }

    #[test]
    fn probes_a_fake_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("sys/module/kvm_pvm")).unwrap();
        std::fs::create_dir_all(root.path().join("sys/module/ext4")).unwrap();
        std::fs::create_dir_all(root.path().join("proc")).unwrap();
        std::fs::write(
            root.path().join("proc/modules"),
            "kvm 1 1 kvm_pvm, Live 0\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.path().join("dev")).unwrap();
        std::fs::write(root.path().join("dev/kvm"), "").unwrap();
        let f = HostFacts::probe_at(root.path());
        assert_eq!(f, facts(true, &["kvm", "kvm_pvm"], None));
        assert_eq!(decide(AccelChoice::Auto, &f).accel, Accel::Tcg);
    }
}
