//! The server against the real NBD clients installed here: nbdinfo, nbdcopy, qemu-io,
//! qemu-img and fio, each started on the server's temp unix socket.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::{pattern, run_ok, stdout, TestServer};
use platter_disk_server::{BlockDevice, ExtentKind, MemDevice, ServerConfig, StaticExports};

const MIB: u64 = 1 << 20;

fn server_with(size: u64) -> (TestServer, Arc<MemDevice>) {
    let exports = Arc::new(StaticExports::new());
    let disk = Arc::new(MemDevice::new(size));
    exports.insert("disk", "a test disk", disk.clone());
    exports.insert(
        "disk@snap",
        "",
        Arc::new(MemDevice::new(8 * MIB).into_read_only()),
    );
    (
        TestServer::start(exports, ServerConfig::default(), false),
        disk,
    )
}

#[test]
fn nbdinfo_lists_exports_including_new_ones() {
    let (srv, _) = server_with(64 * MIB);
    let out = run_ok(Command::new("nbdinfo").args(["--list", "--json", &srv.uri("")]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let exports = v["exports"].as_array().unwrap();
    let find = |name: &str| {
        exports
            .iter()
            .find(|e| e["export-name"] == name)
            .unwrap_or_else(|| panic!("{name} missing in {v}"))
            .clone()
    };
    let disk = find("disk");
    assert_eq!(disk["export-size"], 64 * MIB);
    assert_eq!(disk["is_read_only"], false);
    assert_eq!(disk["description"], "a test disk");
    assert_eq!(disk["can_multi_conn"], true);
    assert_eq!(disk["can_fast_zero"], true);
    assert_eq!(disk["block_size_maximum"], 32 * MIB);
    let snap = find("disk@snap");
    assert_eq!(snap["is_read_only"], true);

    // Exports are looked up per handshake: a new one shows up without a restart.
    srv.exports
        .insert("later", "", Arc::new(MemDevice::new(MIB)));
    let out = run_ok(Command::new("nbdinfo").args(["--list", &srv.uri("")]));
    assert!(stdout(&out).contains("later"), "{}", stdout(&out));
    let out = run_ok(Command::new("nbdinfo").args(["--size", &srv.uri("later")]));
    assert_eq!(stdout(&out).trim(), MIB.to_string());
}

#[test]
fn qemu_io_writes_discards_and_reads_back() {
    let (srv, disk) = server_with(16 * MIB);
    let uri = srv.uri("disk");
    let cmds = [
        "write -P 0xab 0 64k",
        "write -P 0xcd 65537 1000", // unaligned
        "write -P 0x11 1M 128k",
        "discard 1M 64k",
        "write -P 0x22 2M 64k",
        "write -z 2M 32k", // NO_HOLE: allocated zeroes
        "write -P 0x33 3M 64k",
        "write -z -u 3M 64k", // may unmap
        "flush",
        "read -P 0xab 0 64k",
        "read -P 0xcd 65537 1000",
        "read -P 0 66537 1000",
        "read -P 0 1M 64k",
        "read -P 0x11 1088k 64k",
        "read -P 0 2M 32k",
        "read -P 0x22 2080k 32k",
        "read -P 0 3M 64k",
        "read -P 0 16380k 4k",
    ];
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw"]);
    for c in cmds {
        cmd.args(["-c", c]);
    }
    cmd.arg(&uri);
    let out = run_ok(&mut cmd);
    let text = stdout(&out);
    assert!(!text.contains("fail"), "{text}");
    assert_eq!(text.matches("read ").count(), 9, "{text}");

    // The device saw a trim and both kinds of zeroing.
    let st = disk.block_status(0, 4 * MIB).unwrap();
    let kind_at = |off: u64| {
        st.iter()
            .find(|e| e.offset <= off && off < e.offset + e.len)
            .unwrap()
            .kind
    };
    assert_eq!(kind_at(0), ExtentKind::Data);
    assert_eq!(kind_at(MIB), ExtentKind::Hole);
    assert_eq!(kind_at(2 * MIB), ExtentKind::Zero);
    assert_eq!(kind_at(3 * MIB), ExtentKind::Hole);
    assert!(disk.flush_count() >= 1);

    // Writes to a snapshot are refused.
    let out = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write 0 4k", &srv.uri("disk@snap")])
        .output()
        .unwrap();
    let all = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(
        all.contains("ermission") || all.contains("read-only") || all.contains("Read-only"),
        "{all}"
    );
}

#[test]
fn nbdinfo_map_shows_data_zero_and_holes() {
    let (srv, disk) = server_with(8 * MIB);
    disk.write_at(&[1u8; 65536], 0).unwrap();
    disk.write_at(&[1u8; 65536], 1 << 20).unwrap();
    disk.write_zeroes(1 << 20, 32768, false).unwrap();
    disk.write_at(&[1u8; 65536], 2 << 20).unwrap();
    disk.trim(2 << 20, 65536).unwrap();
    let out = run_ok(Command::new("nbdinfo").args(["--map", "--json", &srv.uri("disk")]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let map: Vec<(u64, u64, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["offset"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                e["type"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        map,
        vec![
            (0, 65536, 0),
            (65536, MIB - 65536, 3),
            (MIB, 32768, 2),
            (MIB + 32768, 32768, 0),
            (MIB + 65536, 8 * MIB - MIB - 65536, 3),
        ]
    );
    assert_eq!(map.iter().map(|e| e.1).sum::<u64>(), 8 * MIB);
}

#[test]
fn nbdcopy_in_and_out_keeps_bytes() {
    let (srv, disk) = server_with(32 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    let mut data = vec![0u8; 32 * MIB as usize];
    for (i, off) in [0u64, 5 * MIB + 123, 17 * MIB, 31 * MIB].iter().enumerate() {
        let p = pattern(i as u64 + 1, 700_000);
        let end = (*off as usize + p.len()).min(data.len());
        data[*off as usize..end].copy_from_slice(&p[..end - *off as usize]);
    }
    std::fs::write(&src, &data).unwrap();
    run_ok(Command::new("nbdcopy").args([src.to_str().unwrap(), &srv.uri("disk")]));
    let mut got = vec![0u8; data.len()];
    disk.read_at(&mut got, 0).unwrap();
    assert!(got == data, "device differs after nbdcopy in");

    let dst = dir.path().join("dst.img");
    run_ok(Command::new("nbdcopy").args([&srv.uri("disk"), dst.to_str().unwrap()]));
    let back = std::fs::read(&dst).unwrap();
    assert!(back == data, "file differs after nbdcopy out");
    // Multi-connection copy (nbdcopy uses 4 connections when CAN_MULTI_CONN).
    let out = run_ok(Command::new("nbdinfo").args(["--can", "multi-conn", &srv.uri("disk")]));
    assert!(out.status.success());
}

#[test]
fn qemu_img_convert_to_qcow2_keeps_sparseness() {
    let (srv, disk) = server_with(256 * MIB);
    disk.write_at(&pattern(9, MIB as usize), 100 * MIB).unwrap();
    disk.write_at(&pattern(10, 4096), 200 * MIB + 512).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.qcow2");
    run_ok(Command::new("qemu-img").args([
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        &srv.uri("disk"),
        out.to_str().unwrap(),
    ]));
    let size = std::fs::metadata(&out).unwrap().len();
    assert!(size < 8 * MIB, "qcow2 is {size} bytes: sparseness lost");
    run_ok(Command::new("qemu-img").args([
        "compare",
        "-f",
        "raw",
        "-F",
        "qcow2",
        &srv.uri("disk"),
        out.to_str().unwrap(),
    ]));
    let m = run_ok(Command::new("qemu-img").args([
        "map",
        "--output=json",
        "-f",
        "qcow2",
        out.to_str().unwrap(),
    ]));
    let v: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
    let data: u64 = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum();
    assert!(data <= 2 * MIB, "{data} bytes of data mapped");
}

#[test]
fn fio_randwrite_verifies() {
    let (srv, _) = server_with(64 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("fio.json");
    run_ok(Command::new("fio").current_dir(dir.path()).args([
        "--name=verify",
        "--ioengine=nbd",
        &format!("--uri={}", srv.uri("disk")),
        "--rw=randwrite",
        "--bs=4k",
        "--iodepth=16",
        "--size=16M",
        "--verify=crc32c",
        "--do_verify=1",
        "--output-format=json",
        &format!("--output={}", json.display()),
    ]));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let job = &v["jobs"][0];
    assert_eq!(job["error"], 0, "{job}");
    assert!(job["write"]["io_bytes"].as_u64().unwrap() >= 16 * MIB);
    assert!(
        job["read"]["io_bytes"].as_u64().unwrap() >= 16 * MIB,
        "verify reads missing"
    );
}
