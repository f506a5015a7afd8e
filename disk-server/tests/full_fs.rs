//! A store on a filesystem that fills up, through NBD: writes get ENOSPC, a FLUSH that
//! cannot write the journal fails, the server stays up, and once space is free the next
//! FLUSH commits every write it acknowledges: after a restart all of them read back.
//!
//! The filesystem is a real ext4 of 32 MiB on a loop device (the suite runs as root).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{run_ok, TestServer};
use platter_disk_server::{ServerConfig, StoreExports};
use platter_nbd_proto::client::{Client, Options};
use platter_nbd_proto::consts::{CMD_FLUSH, ENOSPC};
use platter_snapshotter::Store;
use platter_types::{Name, VolumeRef};

const BLOCKS: u64 = 200;
const STRIDE: u64 = 4;

/// An ext4 filesystem mounted from a loop device, unmounted on drop.
struct LoopFs {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl LoopFs {
    fn new(size_mib: u64) -> LoopFs {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(size_mib << 20)
            .unwrap();
        run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
        run_ok(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(&mnt),
        );
        LoopFs { _dir: dir, mnt }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

/// Fills the filesystem with one file until a write fails with ENOSPC.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    for chunk in [1 << 20, 4096, 512] {
        let buf = vec![0x55u8; chunk];
        loop {
            match f.write_all(&buf) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    let _ = f.sync_all();
}

fn block(i: u64) -> Vec<u8> {
    let mut b = vec![(i % 251) as u8 + 1; 4096];
    b[..8].copy_from_slice(&i.to_le_bytes());
    b
}

#[test]
fn acknowledged_flush_after_enospc_keeps_every_write() {
    let fs = LoopFs::new(32);
    let store_dir = fs.mnt.join("store");
    let disk = VolumeRef::parse("disk").unwrap();
    {
        let store = Store::open(&store_dir).unwrap();
        store
            .create_volume(&Name::new("disk").unwrap(), 8 << 20)
            .unwrap();
        let mut srv = TestServer::start_with(
            Arc::new(StoreExports::new(store.clone())),
            ServerConfig::default(),
            false,
        );
        let mut c = Client::connect_unix(&srv.sock, &Options::new("disk")).unwrap();
        for i in 0..BLOCKS {
            c.write(i * STRIDE * 4096, &block(i)).unwrap();
        }
        let filler = fs.mnt.join("filler");
        fill(&filler);

        // Full: a write that needs a new block gets ENOSPC, and the flush (whose journal
        // has to grow) fails.
        assert_eq!(
            c.write(8 * 4096 + 4096, &[9u8; 4096]).unwrap_err().errno(),
            Some(ENOSPC)
        );
        let r = c.call(0, CMD_FLUSH, 0, 0, &[]).unwrap();
        assert_eq!(
            r.error, ENOSPC,
            "a flush on a full filesystem cannot commit"
        );
        // The server is still up for this client and for new ones.
        c.read(0, 4096).unwrap();
        let mut c2 = Client::connect_unix(&srv.sock, &Options::new("disk")).unwrap();
        c2.read(4096, 4096).unwrap();
        c2.disconnect().unwrap();

        std::fs::remove_file(&filler).unwrap();
        let r = c.call(0, CMD_FLUSH, 0, 0, &[]).unwrap();
        assert_eq!(r.error, 0, "with space again the flush succeeds");
        c.disconnect().unwrap();
        srv.stop().unwrap();
    }
    // Restart: what the successful flush acknowledged is all there.
    let store = Store::open(&store_dir).unwrap();
    let v = store.open_volume(&disk).unwrap();
    let mut buf = vec![0u8; 4096];
    for i in 0..BLOCKS {
        v.read_at(&mut buf, i * STRIDE * 4096).unwrap();
        assert!(
            buf == block(i),
            "block {i} was acknowledged by a flush but lost"
        );
    }
}
