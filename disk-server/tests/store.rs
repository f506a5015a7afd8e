//! The server over the real volume store: volumes and snapshots as exports, IO through
//! qemu-io, fio and nbdcopy, and volumes created while it runs showing up.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::{pattern, run_ok, stdout, TestServer};
use platter_disk_server::{ServerConfig, StoreExports};
use platter_snapshotter::Store;
use platter_types::{Name, VolumeRef};

const MIB: u64 = 1 << 20;

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

#[test]
fn store_volumes_are_exports() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_volume(&name("vm1"), 64 * MIB).unwrap();
    let exports = Arc::new(StoreExports::new(store.clone()));
    let srv = TestServer::start_with(exports, ServerConfig::default(), false);

    run_ok(Command::new("qemu-io").args([
        "-f",
        "raw",
        "-c",
        "write -P 0x61 0 1M",
        "-c",
        "write -P 0x62 4097 5000",
        "-c",
        "discard 512k 64k",
        "-c",
        "write -z 2M 1M",
        "-c",
        "flush",
        &srv.uri("vm1"),
    ]));
    store.snapshot(&name("vm1"), &name("s1")).unwrap();
    // Created after the server started: visible at the next handshake.
    store.create_volume(&name("late"), 4 * MIB).unwrap();

    let out = run_ok(Command::new("nbdinfo").args(["--list", "--json", &srv.uri("")]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<(String, bool)> = v["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["export-name"].as_str().unwrap().to_owned(),
                e["is_read_only"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(names.contains(&("vm1".into(), false)), "{names:?}");
    assert!(names.contains(&("vm1@s1".into(), true)), "{names:?}");
    assert!(names.contains(&("late".into(), false)), "{names:?}");

    let out = run_ok(Command::new("qemu-io").args([
        "-f",
        "raw",
        "-r",
        "-c",
        "read -P 0x61 0 4096",
        "-c",
        "read -P 0x62 4097 5000",
        "-c",
        "read -P 0 512k 64k",
        "-c",
        "read -P 0 2M 1M",
        &srv.uri("vm1@s1"),
    ]));
    assert!(!stdout(&out).contains("fail"), "{}", stdout(&out));
    let denied = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write 0 4k", &srv.uri("vm1@s1")])
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        stdout(&denied),
        String::from_utf8_lossy(&denied.stderr)
    );
    assert!(!all.contains("wrote"), "{all}");

    // The map reflects the store's extents.
    let out = run_ok(Command::new("nbdinfo").args(["--map", "--json", &srv.uri("vm1@s1")]));
    let map: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let type_at = |off: u64| {
        map.as_array()
            .unwrap()
            .iter()
            .find(|e| {
                let o = e["offset"].as_u64().unwrap();
                o <= off && off < o + e["length"].as_u64().unwrap()
            })
            .unwrap()["type"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(type_at(0), 0);
    assert_eq!(type_at(512 * 1024) & 2, 2, "trimmed range reads as zero");
    assert_eq!(type_at(2 * MIB), 2, "write -z leaves allocated zeroes");
    assert_eq!(type_at(32 * MIB), 3, "never written: hole");

    // fio with verification on a store volume.
    let json = dir.path().join("fio.json");
    run_ok(Command::new("fio").current_dir(dir.path()).args([
        "--name=verify",
        "--ioengine=nbd",
        &format!("--uri={}", srv.uri("vm1")),
        "--rw=randwrite",
        "--bs=4k",
        "--iodepth=8",
        "--size=8M",
        "--verify=crc32c",
        "--output-format=json",
        &format!("--output={}", json.display()),
    ]));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["jobs"][0]["error"], 0);

    // nbdcopy out of the snapshot equals what was written before it.
    let img = dir.path().join("s1.img");
    run_ok(Command::new("nbdcopy").args([&srv.uri("vm1@s1"), img.to_str().unwrap()]));
    let bytes = std::fs::read(&img).unwrap();
    assert_eq!(bytes.len() as u64, 64 * MIB);
    assert!(bytes[..4097].iter().all(|b| *b == 0x61));
    assert!(bytes[4097..9097].iter().all(|b| *b == 0x62));
    let snap = store
        .open_volume(&VolumeRef::parse("vm1@s1").unwrap())
        .unwrap();
    let mut buf = vec![0u8; 4096];
    snap.read_at(&mut buf, MIB - 4096).unwrap();
    assert_eq!(buf, vec![0x61; 4096]);
    let _ = pattern(0, 0);
}
