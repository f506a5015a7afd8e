//! A failed request fails the same way in-process and through the real control server:
//! the same kind, object and message on both sides of the socket.

use std::path::{Path, PathBuf};

use platter_control::api::ImportParams;
use platter_control::{client, handle, server, Context, ControlError, ErrorKind, Failure, Request};
use platter_snapshotter::Store;
use platter_types::{Name, VolumeRef};
use tokio_util::sync::CancellationToken;

struct Served {
    store: Store,
    sock: PathBuf,
    rt: tokio::runtime::Runtime,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Served {
    fn start() -> Served {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let sock = dir.path().join("control.sock");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let shutdown = CancellationToken::new();
        let server = {
            let _g = rt.enter();
            let listener = server::bind(&sock).unwrap();
            rt.spawn(server::run(listener, store.clone(), shutdown.clone()))
        };
        Served {
            store,
            sock,
            rt,
            shutdown,
            server: Some(server),
            _dir: dir,
        }
    }

    fn in_process(&self, req: &Request) -> Result<(), Failure> {
        handle(&self.store, req.clone(), Context::default(), &mut |_| {})
            .map(drop)
            .map_err(|e| e.failure())
    }

    fn remote(&self, req: &Request) -> Result<(), Failure> {
        let conn = client::connect(&self.sock).unwrap();
        match client::call(conn, &self.sock, req, &mut |_| {}) {
            Ok(_) => Ok(()),
            Err(ControlError::Remote(f)) => Err(f),
            Err(e) => panic!("not the server's error: {e}"),
        }
    }

    /// `req` fails alike both ways; returns the failure.
    fn fails_alike(&self, req: Request) -> Failure {
        let here = self.in_process(&req).unwrap_err();
        let there = self.remote(&req).unwrap_err();
        assert_eq!(here, there, "{req:?}");
        here
    }

    fn ok(&self, req: Request) {
        self.in_process(&req).unwrap();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(s) = self.server.take() {
            let _ = self.rt.block_on(s);
        }
    }
}

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn target(s: &str) -> VolumeRef {
    VolumeRef::parse(s).unwrap()
}

fn expect(f: &Failure, kind: ErrorKind, object: &str, message: &str) {
    assert_eq!(
        (f.kind, f.object.as_deref(), f.message.as_str()),
        (kind, Some(object), message)
    );
}

#[test]
fn the_same_request_fails_the_same_way_through_the_socket() {
    let s = Served::start();
    let f = s.fails_alike(Request::VolumeInspect {
        target: target("nosuch"),
    });
    expect(
        &f,
        ErrorKind::NotFound,
        "volume nosuch",
        "volume nosuch does not exist",
    );

    s.ok(Request::VolumeCreate {
        name: name("a"),
        size: 1 << 20,
    });
    let f = s.fails_alike(Request::VolumeCreate {
        name: name("a"),
        size: 1 << 20,
    });
    expect(
        &f,
        ErrorKind::AlreadyExists,
        "volume a",
        "volume a already exists",
    );

    s.ok(Request::VolumeSnapshot {
        volume: name("a"),
        snapshot: name("s1"),
    });
    s.ok(Request::VolumeClone {
        source: target("a@s1"),
        name: name("b"),
    });
    let f = s.fails_alike(Request::VolumeDelete {
        target: target("a@s1"),
    });
    assert_eq!(f.kind, ErrorKind::InUse);
    assert_eq!(f.object.as_deref(), Some("snapshot a@s1"));
    assert!(f.message.contains("clone b"), "{}", f.message);

    let f = s.fails_alike(Request::VolumeInspect {
        target: target("a@nosuch"),
    });
    expect(
        &f,
        ErrorKind::NotFound,
        "snapshot a@nosuch",
        "snapshot a@nosuch does not exist",
    );

    let f = s.fails_alike(Request::VolumeCreate {
        name: name("c"),
        size: 0,
    });
    assert_eq!(f.kind, ErrorKind::Invalid);
    assert_eq!(f.object.as_deref(), Some("volume c"));
    assert!(
        f.message.starts_with("invalid size 0 for c"),
        "{}",
        f.message
    );

    let f = s.fails_alike(Request::VolumeResize {
        name: name("a"),
        size: 4096,
    });
    assert_eq!(
        (f.kind, f.object.as_deref()),
        (ErrorKind::Invalid, Some("volume a"))
    );

    let f = s.fails_alike(Request::VmGet { name: name("web") });
    expect(&f, ErrorKind::NotFound, "vm web", "vm web does not exist");
}

fn raw_file(dir: &Path) -> PathBuf {
    let p = dir.join("disk.raw");
    std::fs::write(&p, vec![7u8; 1 << 16]).unwrap();
    p
}

#[test]
fn imports_and_their_parameters_fail_the_same_way_through_the_socket() {
    let s = Served::start();
    let tmp = tempfile::tempdir().unwrap();
    let file = raw_file(tmp.path()).display().to_string();
    let import = |to: &str| Request::Import {
        source: file.clone(),
        name: name(to),
        params: ImportParams::default(),
    };
    s.ok(import("a"));
    let f = s.fails_alike(import("a"));
    expect(
        &f,
        ErrorKind::AlreadyExists,
        "volume a",
        "invalid destination \"a\": a volume of that name already exists",
    );

    let mut params = ImportParams::default();
    params.registry.creds = Some("nocolon".into());
    let f = s.fails_alike(Request::Import {
        source: file.clone(),
        name: name("b"),
        params,
    });
    assert_eq!(
        (f.kind, f.object.as_deref()),
        (ErrorKind::Invalid, Some("--creds"))
    );

    let missing = tmp.path().join("nosuch.raw").display().to_string();
    let f = s.fails_alike(Request::Import {
        source: missing.clone(),
        name: name("c"),
        params: ImportParams::default(),
    });
    assert_eq!(f.kind, ErrorKind::NotFound, "{f:?}");
    assert!(f.message.contains(&missing), "{}", f.message);
}
