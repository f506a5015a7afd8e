//! `platter serve` with real clients: exports appear as volumes are created, snapshots
//! taken through the control socket under write load are consistent points in time, the
//! other commands go through the control socket, and `kill -9` loses nothing flushed.

mod common;
use common::*;

use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};

fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn exports_follow_volumes_and_commands_use_the_control_socket() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path();
    ok(st, &["volume", "create", "a", "--size", "16M"]);
    let srv = Serve::start(st);
    let sock = st.join("run/nbd.sock");
    let list = tool(
        "nbdinfo",
        &["--list", &format!("nbd+unix://?socket={}", sock.display())],
    );
    assert!(
        list.contains("export=\"a\"") || list.contains("export: a") || list.contains("\"a\""),
        "{list}"
    );
    // Created while serving: through the control socket (the store is locked by serve).
    ok(st, &["volume", "create", "b", "--size", "8M"]);
    ok(st, &["volume", "snapshot", "b@s1"]);
    let list = tool(
        "nbdinfo",
        &[
            "--list",
            "--json",
            &format!("nbd+unix://?socket={}", sock.display()),
        ],
    );
    for name in ["\"a\"", "\"b\"", "\"b@s1\""] {
        assert!(list.contains(name), "{name} missing from {list}");
    }
    tool(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x5a 4096 8192",
            "-c",
            "flush",
            &srv.uri("b"),
        ],
    );
    let map = tool("nbdinfo", &["--map", &srv.uri("b")]);
    assert!(map.contains("data"), "{map}");
    // Snapshots are read-only exports.
    let out = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write 0 512", &srv.uri("b@s1")])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success()
            || text.contains("ermission")
            || text.contains("read-only")
            || text.contains("Read-only"),
        "{text}"
    );
    ok(st, &["volume", "delete", "a"]);
    let list = tool(
        "nbdinfo",
        &[
            "--list",
            "--json",
            &format!("nbd+unix://?socket={}", sock.display()),
        ],
    );
    assert!(
        !list.contains("\"a\""),
        "deleted volume still listed: {list}"
    );
    drop(srv);
    assert!(
        !st.join("run/control.sock").exists(),
        "control socket left behind"
    );
}

/// Writes of 4 KiB-aligned runs, each with its own byte pattern, logged in order.
fn write_plan(seed: u64, blocks: u64, n: usize) -> Vec<(u64, u64, u8)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let len = rng.gen_range(1..8u64);
            let start = rng.gen_range(0..blocks - len);
            (start, len, (i % 255) as u8 + 1)
        })
        .collect()
}

/// Is `image` (one byte per 4 KiB block sampled) the state after some prefix of `plan`?
fn matches_a_prefix(plan: &[(u64, u64, u8)], image: &[u8]) -> Option<usize> {
    let mut state = vec![0u8; image.len()];
    let mut mismatched = state.iter().zip(image).filter(|(a, b)| a != b).count();
    if mismatched == 0 {
        return Some(0);
    }
    for (k, &(start, len, pat)) in plan.iter().enumerate() {
        for b in start..start + len {
            let b = b as usize;
            let before = state[b] != image[b];
            state[b] = pat;
            let after = state[b] != image[b];
            mismatched = mismatched + usize::from(after) - usize::from(before);
        }
        if mismatched == 0 {
            return Some(k + 1);
        }
    }
    None
}

#[test]
fn snapshots_under_write_load_are_points_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path();
    let blocks = 512u64;
    ok(
        st,
        &[
            "volume",
            "create",
            "live",
            "--size",
            &(blocks * 4096).to_string(),
        ],
    );
    let srv = Serve::start(st);
    let plan = write_plan(1, blocks, 1500);
    let mut args: Vec<String> = vec!["-f".into(), "raw".into()];
    for (start, len, pat) in &plan {
        args.push("-c".into());
        args.push(format!("write -P {pat} {} {}", start * 4096, len * 4096));
    }
    args.push(srv.uri("live"));
    let mut writer = Command::new("qemu-io")
        .args(&args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut snaps = Vec::new();
    for i in 0..8 {
        std::thread::sleep(Duration::from_millis(150));
        let name = format!("live@t{i}");
        ok(st, &["volume", "snapshot", &name]);
        snaps.push(name);
    }
    assert!(writer.wait().unwrap().success());
    ok(st, &["volume", "snapshot", "live@final"]);
    snaps.push("live@final".into());
    let mut prefixes = Vec::new();
    for s in &snaps {
        let raw = dir.path().join(format!("{s}.raw"));
        ok(st, &["volume", "export", s, raw.to_str().unwrap()]);
        let bytes = std::fs::read(&raw).unwrap();
        // Every block is one write's pattern throughout: check that, then sample a byte.
        let mut image = Vec::new();
        for b in bytes.chunks(4096) {
            assert!(b.iter().all(|&x| x == b[0]), "{s}: a torn 4 KiB block");
            image.push(b[0]);
        }
        let k = matches_a_prefix(&plan, &image)
            .unwrap_or_else(|| panic!("{s} is no point in time of the write sequence"));
        prefixes.push(k);
    }
    assert_eq!(*prefixes.last().unwrap(), plan.len());
    assert!(
        prefixes.windows(2).all(|w| w[0] <= w[1]),
        "snapshots went back in time: {prefixes:?}"
    );
    assert!(
        prefixes.iter().any(|&k| k > 0 && k < plan.len()),
        "no snapshot landed mid-load: {prefixes:?}"
    );
}

#[test]
fn kill_9_keeps_every_flushed_write() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path();
    ok(st, &["volume", "create", "d", "--size", "32M"]);
    let srv = Serve::start(st);
    let uri = srv.uri("d");
    tool(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x11 0 1M",
            "-c",
            "write -P 0x22 3M 64k",
            "-c",
            "write -P 0x33 1000 3000",
            "-c",
            "flush",
            &uri,
        ],
    );
    // More writes without a flush, then the server dies.
    tool("qemu-io", &["-f", "raw", "-c", "write -P 0x44 8M 1M", &uri]);
    srv.kill9();
    let srv = Serve::start(st);
    let uri = srv.uri("d");
    let out = tool(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "read -P 0x11 0 1000",
            "-c",
            "read -P 0x33 1000 3000",
            "-c",
            "read -P 0x11 4000 1044576",
            "-c",
            "read -P 0x22 3M 64k",
            &uri,
        ],
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
}

#[test]
fn fio_verified_random_writes() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path();
    ok(st, &["volume", "create", "f", "--size", "64M"]);
    let srv = Serve::start(st);
    let sock = st.join("run/nbd.sock");
    let out = tool(
        "fio",
        &[
            "--name=v",
            "--verify_state_save=0",
            "--ioengine=nbd",
            &format!("--uri=nbd+unix:///f?socket={}", sock.display()),
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=16",
            "--size=32M",
            "--verify=crc32c",
            "--do_verify=1",
            "--output-format=json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    assert_eq!(v["jobs"][0]["error"], 0, "{out}");
    drop(srv);
}
