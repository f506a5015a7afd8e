//! cloud-init NoCloud seed ISOs: an ISO9660 volume labelled `cidata` holding `user-data`,
//! `meta-data` (instance-id = the VM's name) and, when given, `network-config`, attached
//! to the VM as a CD-ROM.
//!
//! The file contents are made by pure functions; the ISO is written by `genisoimage`
//! (Debian package genisoimage, installed by scripts/install.sh). The user-data is bounded
//! before it is read, and never interpreted here.

use std::path::{Path, PathBuf};
use std::process::Command;

use platter_types::Name;

use crate::error::{LauncherError, Result};

/// The volume label cloud-init's NoCloud data source looks for.
pub const SEED_LABEL: &str = "cidata";
/// The largest user-data accepted (cloud-init itself has no small limit; this keeps a
/// mistaken path from being copied into an ISO).
pub const MAX_USER_DATA: u64 = 16 << 20;

/// The `meta-data` file: the VM's name is both its instance-id (so a new VM of the same
/// name on a fresh disk is a new instance to cloud-init) and its hostname.
pub fn meta_data(vm: &Name) -> String {
    // Names are `[a-z0-9][a-z0-9._-]*`: safe as plain YAML scalars.
    format!("instance-id: {vm}\nlocal-hostname: {vm}\n")
}

/// Writes the seed ISO for `vm` with `user_data` to `out` (replacing it).
pub fn build_seed_iso(vm: &Name, user_data: &[u8], out: &Path) -> Result<()> {
    build_seed_iso_with(vm, user_data, None, out)
}

/// As [`build_seed_iso`], with a `network-config` file too when `network_config` is
/// given (cloud-init's NoCloud network configuration, version 1 or 2, passed on as is).
pub fn build_seed_iso_with(
    vm: &Name,
    user_data: &[u8],
    network_config: Option<&[u8]>,
    out: &Path,
) -> Result<()> {
    for (what, data) in [
        ("<user-data>", Some(user_data)),
        ("<network-config>", network_config),
    ] {
        let size = data.map_or(0, |d| d.len() as u64);
        if size > MAX_USER_DATA {
            return Err(LauncherError::UserDataTooLarge {
                path: PathBuf::from(what),
                size,
                limit: MAX_USER_DATA,
            });
        }
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = parent.join(format!(".{vm}-seed-{}", std::process::id()));
    let result = write_and_pack(vm, user_data, network_config, &staging, out);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// As [`build_seed_iso`], reading the user-data from a file (bounded by [`MAX_USER_DATA`]).
pub fn build_seed_iso_from_file(vm: &Name, user_data: &Path, out: &Path) -> Result<()> {
    let io = |op, source| LauncherError::Io {
        op,
        path: user_data.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(user_data)
        .map_err(|e| io("stat", e))?
        .len();
    if size > MAX_USER_DATA {
        return Err(LauncherError::UserDataTooLarge {
            path: user_data.to_path_buf(),
            size,
            limit: MAX_USER_DATA,
        });
    }
    let data = std::fs::read(user_data).map_err(|e| io("read", e))?;
    build_seed_iso(vm, &data, out)
}

fn write_and_pack(
    vm: &Name,
    user_data: &[u8],
    network_config: Option<&[u8]>,
    staging: &Path,
    out: &Path,
) -> Result<()> {
    let io = |op, path: &Path, source| LauncherError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_dir_all(staging);
    std::fs::create_dir_all(staging).map_err(|e| io("create directory", staging, e))?;
    let ud = staging.join("user-data");
    std::fs::write(&ud, user_data).map_err(|e| io("write", &ud, e))?;
    let md = staging.join("meta-data");
    std::fs::write(&md, meta_data(vm)).map_err(|e| io("write", &md, e))?;
    let mut files = vec![ud, md];
    if let Some(nc) = network_config {
        let p = staging.join("network-config");
        std::fs::write(&p, nc).map_err(|e| io("write", &p, e))?;
        files.push(p);
    }
    let output = Command::new("genisoimage")
        .arg("-quiet")
        .arg("-output")
        .arg(out)
        .args(["-volid", SEED_LABEL, "-joliet", "-rock"])
        .args(&files)
        .output()
        .map_err(|e| LauncherError::SeedIso {
            path: out.to_path_buf(),
            message: format!("cannot run genisoimage ({e}); install it (scripts/install.sh)"),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(LauncherError::SeedIso {
            path: out.to_path_buf(),
            message: format!("genisoimage {}: {}", output.status, stderr.trim()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_data_names_the_instance() {
        let md = meta_data(&Name::new("web-1").unwrap());
        assert_eq!(md, "instance-id: web-1\nlocal-hostname: web-1\n");
    }

    #[test]
    fn refuses_oversized_user_data() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("ud");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_USER_DATA + 1).unwrap();
        let err =
            build_seed_iso_from_file(&Name::new("vm").unwrap(), &big, &dir.path().join("s.iso"))
                .unwrap_err();
        assert!(
            matches!(err, LauncherError::UserDataTooLarge { .. }),
            "{err}"
        );
        let err =
            build_seed_iso_from_file(&Name::new("vm").unwrap(), &dir.path().join("nope"), &big)
                .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
