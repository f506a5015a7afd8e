//! `platter_serve::run` with every part on: the NBD socket, the control socket (a real
//! request answered), Prometheus metrics over HTTP and the FUSE view of a volume; a
//! cancel stops it all, unmounts and removes the sockets. A bad store or a taken
//! address is an error naming it.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use platter_control::{client, Request, Response};
use platter_serve::{Endpoints, Options, ServeError};
use platter_snapshotter::Store;
use platter_types::Name;
use tokio_util::sync::CancellationToken;

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let d = dir.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(d))
}

#[test]
fn every_part_serves_and_a_cancel_stops_them_all() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is needed (scripts/install.sh)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    {
        let store = Store::open(&dir).unwrap();
        store
            .create_volume(&Name::new("disk").unwrap(), 1 << 20)
            .unwrap();
    }
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let metrics = free_port();
    let shutdown = CancellationToken::new();
    let opts = Options {
        mount: Some(mnt.clone()),
        metrics: Some(metrics.clone()),
        shutdown: Some(shutdown.clone()),
        ..Options::default()
    };
    let (tx, rx) = mpsc::channel::<Endpoints>();
    let server = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            platter_serve::run(&dir, &opts, |at| tx.send(at.clone()).unwrap())
        })
    };
    let at = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("serve became ready");
    assert_eq!(at.nbd_socket, dir.join("run/nbd.sock"));
    assert!(at.nbd_socket.exists());

    // The control socket answers a request.
    let stream = client::connect(&at.control_socket).expect("control socket accepts");
    let reply = client::call(stream, &at.control_socket, &Request::Ping, &mut |_| {}).unwrap();
    assert!(matches!(reply, Response::Pong { .. }), "{reply:?}");

    // Metrics over HTTP.
    let mut s = std::net::TcpStream::connect(&metrics).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(
        body.starts_with("HTTP/1.") && body.contains("platter_"),
        "{body}"
    );

    // The FUSE view shows the volume at its size.
    assert!(mounted(&mnt));
    assert_eq!(
        std::fs::metadata(mnt.join("disk.img")).unwrap().len(),
        1 << 20
    );

    shutdown.cancel();
    server.join().unwrap().unwrap();
    assert!(!mounted(&mnt), "still mounted after stop");
    assert!(!at.nbd_socket.exists() && !at.control_socket.exists());
}

#[test]
fn a_taken_address_and_a_bad_store_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let opts = Options {
        metrics: Some(addr.clone()),
        ..Options::default()
    };
    let e = platter_serve::run(&tmp.path().join("s"), &opts, |_| panic!("not ready")).unwrap_err();
    assert!(
        matches!(
            e,
            ServeError::Listen {
                what: "metrics",
                ..
            }
        ) && e.to_string().contains(&addr),
        "{e}"
    );
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let e = platter_serve::run(&file, &Options::default(), |_| panic!("not ready")).unwrap_err();
    assert!(matches!(e, ServeError::Store { .. }), "{e}");
    assert!(e.to_string().contains(file.to_str().unwrap()), "{e}");
}
