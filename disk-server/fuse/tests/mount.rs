//! End-to-end tests of the FUSE view: a real store in a temp dir, mounted for real, driven
//! with std::fs and the tools people use on image files (`ls`, `cp --sparse`, `qemu-img`,
//! `fallocate`). Every test skips (and passes) only when /dev/fuse is missing.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

use platter_fuse::{mount, MountHandle, MountOptions};
use platter_snapshotter::{BlockKind, Store};
use platter_types::{Name, VolumeRef};
use rand::{RngCore, SeedableRng};
use rustix::fs::SeekFrom;

const SIZE: u64 = 16 << 20;
const ISIZE: i64 = SIZE as i64;
/// Data runs of the test volume: (offset, len); everything else is a hole.
const RUNS: &[(u64, u64)] = &[
    (0, 64 << 10),
    (1 << 20, 192 << 10),
    (5 << 20, 4096),
    (9 << 20, 1 << 20),
    (SIZE - (128 << 10), 128 << 10),
];

static PANICS: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

/// Counts panics anywhere in the process, fuser's worker threads included.
fn count_panics() {
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            prev(info);
        }));
    });
}

/// The suite needs FUSE (the machine has /dev/fuse, scripts/install.sh installs fuse3): a
/// test that cannot mount fails, it does not pass without checking anything.
fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: FUSE tests cannot run (load the fuse module; scripts/install.sh installs fuse3)"
    );
}

struct Fixture {
    tmp: tempfile::TempDir,
    store: Store,
    mnt: PathBuf,
    model: Vec<u8>,
    handle: Option<MountHandle>,
}

fn r(s: &str) -> VolumeRef {
    VolumeRef::parse(s).unwrap()
}

/// A store with volume `disk` (random data in `RUNS`, holes elsewhere) and its snapshot
/// `disk@s1`, mounted on a temp dir.
fn setup() -> Fixture {
    count_panics();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    store
        .create_volume(&Name::new("disk").unwrap(), SIZE)
        .unwrap();
    let vol = store.open_volume(&r("disk")).unwrap();
    let mut model = vec![0u8; SIZE as usize];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for &(off, len) in RUNS {
        let chunk = &mut model[off as usize..(off + len) as usize];
        rng.fill_bytes(chunk);
        vol.write_at(chunk, off).unwrap();
    }
    vol.flush().unwrap();
    store
        .snapshot(&Name::new("disk").unwrap(), &Name::new("s1").unwrap())
        .unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let handle = mount(store.clone(), &mnt, &MountOptions::default()).unwrap();
    let mnt = handle.dir().to_path_buf();
    Fixture {
        tmp,
        store,
        mnt,
        model,
        handle: Some(handle),
    }
}

impl Fixture {
    fn file(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }

    fn unmount(&mut self) {
        self.handle.take().unwrap().unmount().unwrap();
        assert!(
            !is_mounted(&self.mnt),
            "{} still in /proc/mounts",
            self.mnt.display()
        );
        assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a thread panicked");
    }

    fn out(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

fn is_mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let needle = format!(" {} ", dir.display());
    mounts.lines().any(|l| l.contains(&needle))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn data_bytes() -> u64 {
    RUNS.iter().map(|r| r.1).sum()
}

#[test]
fn listing_sizes_and_reads() {
    require_fuse();
    let mut fx = setup();
    let ls = run(Command::new("ls").arg("-l").arg(&fx.mnt));
    let line = |name: &str| {
        ls.lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("{name} not in:\n{ls}"))
            .to_string()
    };
    assert!(line(" disk.img").starts_with("-rw-r--r--"), "{ls}");
    assert!(line(" disk.img").contains(&format!(" {SIZE} ")), "{ls}");
    assert!(line(" disk@s1.img").starts_with("-r--r--r--"), "{ls}");
    assert!(line(" disk@s1.img").contains(&format!(" {SIZE} ")), "{ls}");
    let meta = std::fs::metadata(fx.file("disk.img")).unwrap();
    assert!(
        meta.blocks() * 512 < SIZE / 2,
        "st_blocks should show a thin volume: {}",
        meta.blocks()
    );

    // Two files read at once, by different threads: both complete and match.
    let (a, b) = (fx.file("disk.img"), fx.file("disk@s1.img"));
    let t = std::thread::spawn(move || std::fs::read(a).unwrap());
    let snap = std::fs::read(b).unwrap();
    let vol = t.join().unwrap();
    assert!(vol == fx.model, "volume read differs");
    assert!(snap == fx.model, "snapshot read differs");

    // Volumes created and deleted after mounting appear and disappear.
    fx.store
        .create_volume(&Name::new("later").unwrap(), 1 << 20)
        .unwrap();
    assert_eq!(
        std::fs::metadata(fx.file("later.img")).unwrap().len(),
        1 << 20
    );
    fx.store.delete(&r("later")).unwrap();
    let names: Vec<String> = std::fs::read_dir(&fx.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["disk.img", "disk@s1.img"]);
    assert!(std::fs::metadata(fx.file("nothere.img")).is_err());
    assert!(
        File::create(fx.file("new.img")).is_err(),
        "creating files must be refused"
    );
    fx.unmount();
}

#[test]
fn writes_reach_the_store() {
    require_fuse();
    let mut fx = setup();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.file("disk.img"))
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for (off, len) in [
        (12_345u64, 1000usize),
        (3 * 4096 + 7, 5000),
        ((1 << 20) - 100, 300),
        (7 << 20, 70_001),
    ] {
        let mut buf = vec![0u8; len];
        rng.fill_bytes(&mut buf);
        f.write_all_at(&buf, off).unwrap();
        fx.model[off as usize..off as usize + len].copy_from_slice(&buf);
    }
    // Past the end: the part inside is written, then no space.
    assert_eq!(f.write_at(&[0xAB; 100], SIZE - 10).unwrap(), 10);
    fx.model[(SIZE - 10) as usize..].fill(0xAB);
    assert_eq!(
        f.write_at(&[1; 10], SIZE).unwrap_err().raw_os_error(),
        Some(libc::ENOSPC)
    );
    assert!(
        f.write_at(&[1; 10], 1 << 62).is_err(),
        "a write far past the end"
    );
    assert!(f.set_len(SIZE / 2).is_err(), "shrinking must be refused");
    assert!(f.set_len(SIZE * 2).is_err(), "growing must be refused");
    // Reads at and past the end are empty, never an error.
    let mut buf = [0u8; 10];
    assert_eq!(f.read_at(&mut buf, SIZE).unwrap(), 0);
    assert_eq!(f.read_at(&mut buf, 1 << 50).unwrap(), 0);
    f.sync_all().unwrap();
    let back = std::fs::read(fx.file("disk.img")).unwrap();
    assert!(back == fx.model, "read back through the mount differs");

    // A hole punched through the file is a hole in the volume.
    let (p_off, p_len) = (9u64 << 20, 256u64 << 10);
    run(Command::new("fallocate")
        .args(["-p", "-o", &p_off.to_string(), "-l", &p_len.to_string()])
        .arg(fx.file("disk.img")));
    fx.model[p_off as usize..(p_off + p_len) as usize].fill(0);
    // ZERO_RANGE zeroes, unaligned ends included.
    let (z_off, z_len) = ((1u64 << 20) + 1000, 70_000u64);
    run(Command::new("fallocate")
        .args(["-z", "-o", &z_off.to_string(), "-l", &z_len.to_string()])
        .arg(fx.file("disk.img")));
    fx.model[z_off as usize..(z_off + z_len) as usize].fill(0);
    drop(f);
    fx.unmount();

    let vol = fx.store.open_volume(&r("disk")).unwrap();
    let mut stored = vec![0u8; SIZE as usize];
    vol.read_at(&mut stored, 0).unwrap();
    assert!(stored == fx.model, "store contents after unmount differ");
    let st = vol.block_status(p_off, p_len).unwrap();
    assert!(st.iter().all(|e| e.kind == BlockKind::Hole), "{st:?}");
}

#[test]
fn sparse_copies_and_seek() {
    require_fuse();
    let mut fx = setup();
    let src = fx.file("disk.img");

    let f = File::open(&src).unwrap();
    let seek = |w: SeekFrom| rustix::fs::seek(&f, w).map_err(|e| e.raw_os_error());
    assert_eq!(seek(SeekFrom::Data(0)), Ok(0));
    assert_eq!(seek(SeekFrom::Hole(0)), Ok(64 << 10));
    assert_eq!(seek(SeekFrom::Data(64 << 10)), Ok(1 << 20));
    assert_eq!(seek(SeekFrom::Data((5 << 20) + 4096)), Ok(9 << 20));
    assert_eq!(seek(SeekFrom::Hole(9 << 20)), Ok(10 << 20));
    assert_eq!(seek(SeekFrom::Hole(ISIZE - 1)), Ok(SIZE));
    assert_eq!(seek(SeekFrom::Data(ISIZE)), Err(libc::ENXIO));
    drop(f);

    let raw = fx.out("out.raw");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&src)
        .arg(&raw));
    assert!(std::fs::read(&raw).unwrap() == fx.model, "cp copy differs");
    let allocated = std::fs::metadata(&raw).unwrap().blocks() * 512;
    assert!(
        allocated >= data_bytes() && allocated <= data_bytes() + (1 << 20),
        "cp allocated {allocated}, data {}",
        data_bytes()
    );

    let qcow = fx.out("out.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&src)
        .arg(&qcow));
    run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(&src)
        .arg(&qcow));
    let qsize = std::fs::metadata(&qcow).unwrap().blocks() * 512;
    assert!(
        qsize <= data_bytes() + (2 << 20),
        "qcow2 allocated {qsize}, data {}",
        data_bytes()
    );
    fx.unmount();
}

#[test]
fn snapshots_refuse_writes() {
    require_fuse();
    let mut fx = setup();
    let snap = fx.file("disk@s1.img");
    assert_eq!(
        std::fs::metadata(&snap).unwrap().permissions().mode() & 0o777,
        0o444
    );
    let err = OpenOptions::new().write(true).open(&snap).unwrap_err();
    assert!(
        matches!(err.raw_os_error(), Some(libc::EROFS) | Some(libc::EACCES)),
        "{err}"
    );
    let out = Command::new("fallocate")
        .args(["-p", "-o", "0", "-l", "4096"])
        .arg(&snap)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "punching a hole in a snapshot must fail"
    );
    // Writing the volume leaves the snapshot as it was.
    let f = OpenOptions::new()
        .write(true)
        .open(fx.file("disk.img"))
        .unwrap();
    f.write_all_at(&[0x55; 8192], 0).unwrap();
    drop(f);
    assert!(std::fs::read(&snap).unwrap() == fx.model);
    fx.unmount();
}

#[test]
fn unmount_with_open_files_is_clean() {
    require_fuse();
    let mut fx = setup();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.file("disk.img"))
        .unwrap();
    f.write_all_at(b"still open", 4096 * 3 + 1).unwrap();
    // No close and no fsync: unmount must neither hang nor lose the acknowledged write.
    fx.unmount();
    drop(f);
    let mut buf = [0u8; 10];
    let vol = fx.store.open_volume(&r("disk")).unwrap();
    vol.read_at(&mut buf, 4096 * 3 + 1).unwrap();
    assert_eq!(&buf, b"still open");

    // A dropped handle unmounts too.
    let mnt2 = fx.out("mnt2");
    std::fs::create_dir(&mnt2).unwrap();
    let h = mount(
        fx.store.clone(),
        &mnt2,
        &MountOptions {
            threads: 1,
            allow_other: false,
        },
    )
    .unwrap();
    let dir = h.dir().to_path_buf();
    assert!(is_mounted(&dir));
    assert_eq!(
        std::fs::read(dir.join("disk.img")).unwrap().len() as u64,
        SIZE
    );
    drop(h);
    assert!(!is_mounted(&dir));
}
