//! Making files usable by the user QEMU runs as.
//!
//! Under `qemu:///system`, libvirt starts QEMU as user `libvirt-qemu` (Debian), not root.
//! libvirt re-labels the files it knows are disks, kernels and initrds, but it cannot do
//! that for an NBD unix socket, and it never touches the directories above a file. So:
//!
//! - the NBD socket must be connectable by that user: mode 0660 with group `libvirt-qemu`
//!   ([`prepare_nbd_socket`] does this; 0666 if the group does not exist);
//! - every directory above the socket, the kernel, the initrd and the seed ISO must be
//!   traversable (`x`) by that user — `/root` (0700) is not, `/var/lib/platter` and `/tmp`
//!   are; [`check_qemu_can_reach`] says which directory is in the way;
//! - the console log is written by virtlogd (root): only its directory must exist.
//!
//! Without this, QEMU fails with "Failed to connect to '…/nbd.sock': Permission denied".
//! The permission logic ([`reach_blocker`]) is pure; the rest reads `/etc/passwd`,
//! `/etc/group` and file metadata. Nothing here ever loosens a directory's mode.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{LauncherError, Result};

/// The user and group QEMU runs as under `qemu:///system` on Debian.
pub const QEMU_USER: &str = "libvirt-qemu";
pub const QEMU_GROUP: &str = "libvirt-qemu";

/// A user's identity as the kernel checks permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    /// Primary and supplementary groups.
    pub gids: Vec<u32>,
}

/// What the user must be able to do with the final path component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read a file (kernel, initrd, ISO).
    Read,
    /// Read and write a file.
    ReadWrite,
    /// Connect to a unix socket (needs write permission on it).
    Connect,
    /// Enter a directory.
    Traverse,
}

/// Owner, group and mode of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPerm {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// The permission class (rwx bits) that applies to `account` on `p`.
fn bits_for(account: &Account, p: &PathPerm) -> u32 {
    if account.uid == 0 {
        return 0o7;
    }
    if account.uid == p.uid {
        (p.mode >> 6) & 0o7
    } else if account.gids.contains(&p.gid) {
        (p.mode >> 3) & 0o7
    } else {
        p.mode & 0o7
    }
}

/// The first path in `chain` (directories from `/` down, then the target last) that
/// stops `account`, with the reason; `None` if it can do `need` on the target. Pure.
pub fn reach_blocker(
    chain: &[PathPerm],
    account: &Account,
    need: Need,
) -> Option<(PathBuf, String)> {
    let (target, dirs) = chain.split_last()?;
    for d in dirs {
        if bits_for(account, d) & 0o1 == 0 {
            return Some((
                d.path.clone(),
                format!("directory mode {:04o} does not let it in", d.mode & 0o7777),
            ));
        }
    }
    let bits = bits_for(account, target);
    let (wanted, what) = match need {
        Need::Read => (0o4, "read"),
        Need::ReadWrite => (0o6, "read and write"),
        Need::Connect => (0o2, "connect to"),
        Need::Traverse => (0o1, "enter"),
    };
    (bits & wanted != wanted).then(|| {
        (
            target.path.clone(),
            format!(
                "mode {:04o} does not let it {what} it",
                target.mode & 0o7777
            ),
        )
    })
}

/// `(uid, primary gid)` of `user` in the text of `/etc/passwd`.
pub fn passwd_entry(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != user {
            return None;
        }
        let _password = f.next()?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// The gid of `group` in the text of `/etc/group`.
pub fn group_gid(group_file: &str, group: &str) -> Option<u32> {
    group_file.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != group {
            return None;
        }
        let _password = f.next()?;
        f.next()?.parse().ok()
    })
}

/// The gids of the groups listing `user` as a member in the text of `/etc/group`.
pub fn supplementary_gids(group_file: &str, user: &str) -> Vec<u32> {
    group_file
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.splitn(4, ':').collect();
            let members = f.get(3)?;
            members
                .split(',')
                .any(|m| m.trim() == user)
                .then(|| f.get(2)?.parse().ok())?
        })
        .collect()
}

/// The account of [`QEMU_USER`], or `None` where it does not exist (another distribution,
/// or a session libvirt where QEMU runs as the caller).
pub fn qemu_account() -> Option<Account> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let (uid, gid) = passwd_entry(&passwd, QEMU_USER)?;
    let mut gids = vec![gid];
    gids.extend(supplementary_gids(&groups, QEMU_USER));
    gids.sort_unstable();
    gids.dedup();
    Some(Account { uid, gids })
}

/// Owner and mode of `path` and of every directory above it, from `/` down.
fn perm_chain(path: &Path) -> Result<Vec<PathPerm>> {
    let abs = std::path::absolute(path).map_err(|source| LauncherError::Io {
        op: "resolve",
        path: path.to_path_buf(),
        source,
    })?;
    let mut chain = Vec::new();
    for p in abs.ancestors().collect::<Vec<_>>().into_iter().rev() {
        let m = std::fs::metadata(p).map_err(|source| LauncherError::Io {
            op: "stat",
            path: p.to_path_buf(),
            source,
        })?;
        chain.push(PathPerm {
            path: p.to_path_buf(),
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode(),
        });
    }
    Ok(chain)
}

/// Checks that QEMU's user can do `need` on `path`, naming the directory or file in the
/// way. Passes when there is no [`QEMU_USER`] on this host.
pub fn check_qemu_can_reach(path: &Path, need: Need) -> Result<()> {
    let Some(account) = qemu_account() else {
        return Ok(());
    };
    match reach_blocker(&perm_chain(path)?, &account, need) {
        None => Ok(()),
        Some((blocker, reason)) => Err(LauncherError::NotAccessible {
            user: QEMU_USER,
            path: path.to_path_buf(),
            reason: format!("{}: {reason}", blocker.display()),
        }),
    }
}

/// Lets QEMU's user connect to the NBD socket at `socket`: group [`QEMU_GROUP`] and mode
/// 0660 (0666 where that group does not exist), then checks the directories above it.
pub fn prepare_nbd_socket(socket: &Path) -> Result<()> {
    let io = |op, source| LauncherError::Io {
        op,
        path: socket.to_path_buf(),
        source,
    };
    let gid = std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|g| group_gid(&g, QEMU_GROUP));
    let mode = match gid {
        Some(gid) => {
            std::os::unix::fs::chown(socket, None, Some(gid)).map_err(|e| io("chgrp", e))?;
            0o660
        }
        None => 0o666,
    };
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io("chmod", e))?;
    check_qemu_can_reach(socket, Need::Connect)
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU: Account = Account {
        uid: 64055,
        gids: Vec::new(),
    };

    fn qemu() -> Account {
        Account {
            gids: vec![109, 64055],
            ..QEMU
        }
    }

    fn p(path: &str, uid: u32, gid: u32, mode: u32) -> PathPerm {
        PathPerm {
            path: path.into(),
            uid,
            gid,
            mode,
        }
    }

    #[test]
    fn root_home_blocks_traversal() {
        let chain = [
            p("/", 0, 0, 0o755),
            p("/root", 0, 0, 0o700),
            p("/root/nbd.sock", 0, 0, 0o666),
        ];
        let (blocker, why) = reach_blocker(&chain, &qemu(), Need::Connect).unwrap();
        assert_eq!(blocker, PathBuf::from("/root"));
        assert!(why.contains("0700"), "{why}");
    }

    #[test]
    fn socket_needs_write_through_owner_group_or_other() {
        let dirs = [p("/", 0, 0, 0o755), p("/tmp", 0, 0, 0o1777)];
        let with = |sock: PathPerm| [dirs[0].clone(), dirs[1].clone(), sock];
        assert!(reach_blocker(&with(p("/tmp/s", 0, 0, 0o755)), &qemu(), Need::Connect).is_some());
        assert!(
            reach_blocker(&with(p("/tmp/s", 0, 64055, 0o660)), &qemu(), Need::Connect).is_none()
        );
        assert!(reach_blocker(&with(p("/tmp/s", 0, 0, 0o666)), &qemu(), Need::Connect).is_none());
        assert!(
            reach_blocker(&with(p("/tmp/s", 64055, 0, 0o600)), &qemu(), Need::Connect).is_none()
        );
        // Group bits apply to group members even when "other" would allow more.
        assert!(reach_blocker(&with(p("/tmp/s", 0, 109, 0o606)), &qemu(), Need::Connect).is_some());
    }

    #[test]
    fn files_need_read() {
        let chain = [
            p("/", 0, 0, 0o755),
            p("/boot", 0, 0, 0o711),
            p("/boot/vmlinuz", 0, 0, 0o600),
        ];
        assert!(reach_blocker(&chain, &qemu(), Need::Read).is_some());
        let chain = [
            p("/", 0, 0, 0o755),
            p("/boot", 0, 0, 0o711),
            p("/boot/vmlinuz", 0, 0, 0o644),
        ];
        assert!(reach_blocker(&chain, &qemu(), Need::Read).is_none());
        assert!(reach_blocker(&chain, &qemu(), Need::ReadWrite).is_some());
        assert!(reach_blocker(&[], &qemu(), Need::Read).is_none());
    }

    #[test]
    fn parses_account_files() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nlibvirt-qemu:x:64055:109:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin\n";
        let group =
            "kvm:x:109:\nlibvirt-qemu:x:64055:libvirt-qemu\nlibvirt:x:108:root,libvirt-qemu\nbad\n";
        assert_eq!(passwd_entry(passwd, "libvirt-qemu"), Some((64055, 109)));
        assert_eq!(passwd_entry(passwd, "nobody"), None);
        assert_eq!(
            passwd_entry("libvirt-qemu:x:notanumber:1", "libvirt-qemu"),
            None
        );
        assert_eq!(group_gid(group, "libvirt-qemu"), Some(64055));
        assert_eq!(group_gid(group, "none"), None);
        assert_eq!(supplementary_gids(group, "libvirt-qemu"), vec![64055, 108]);
    }
}
