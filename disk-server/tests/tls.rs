//! STARTTLS against libnbd (nbdinfo, nbdcopy) with a throw-away CA made by `openssl`:
//! TCP clients must use TLS when a certificate is configured, unix clients may, and a
//! configured client CA is enforced.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{pattern, run_ok, stdout, TestServer};
use platter_disk_server::{BlockDevice, MemDevice, ServerConfig, StaticExports, TlsConfig};

const MIB: u64 = 1 << 20;

fn openssl(dir: &Path, args: &[&str]) {
    run_ok(Command::new("openssl").current_dir(dir).args(args));
}

/// Makes `ca-cert.pem`, `server-{cert,key}.pem` and `client-{cert,key}.pem` in `dir`, all
/// from a CA named `ca`. Returns nothing; the names are libnbd's.
fn make_pki(dir: &Path, ca: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca-cert.pem",
        "-days",
        "2",
        "-subj",
        ca,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &a);
    for (who, san, eku) in [
        (
            "server",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "serverAuth",
        ),
        ("client", "subjectAltName=DNS:client", "clientAuth"),
    ] {
        let ext = dir.join(format!("{who}.ext"));
        std::fs::write(
            &ext,
            format!("{san}\nextendedKeyUsage={eku}\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n"),
        )
        .unwrap();
        let (key, csr, cert) = (
            format!("{who}-key.pem"),
            format!("{who}.csr"),
            format!("{who}-cert.pem"),
        );
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=test"]);
        openssl(dir, &a);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca-cert.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                ext.to_str().unwrap(),
            ],
        );
    }
}

fn tls_server(dir: &Path, client_ca: bool) -> (TestServer, Arc<MemDevice>) {
    let exports = Arc::new(StaticExports::new());
    let disk = Arc::new(MemDevice::new(16 * MIB));
    exports.insert("disk", "", disk.clone());
    let config = ServerConfig {
        tls: Some(TlsConfig {
            cert: dir.join("server-cert.pem"),
            key: dir.join("server-key.pem"),
            client_ca: client_ca.then(|| dir.join("ca-cert.pem")),
        }),
        ..ServerConfig::default()
    };
    (TestServer::start(exports, config, true), disk)
}

fn nbds(srv: &TestServer, export: &str, certs: &Path) -> String {
    format!(
        "nbds://{}/{export}?tls-certificates={}",
        srv.tcp.unwrap(),
        certs.display()
    )
}

#[test]
fn tcp_requires_tls_and_unix_does_not() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path(), "/CN=test CA");
    let (srv, disk) = tls_server(pki.path(), false);

    let out = run_ok(Command::new("nbdinfo").args(["--list", &nbds(&srv, "", pki.path())]));
    assert!(stdout(&out).contains("disk"), "{}", stdout(&out));

    // Plain TCP is refused: the server insists on TLS.
    let plain = Command::new("nbdinfo")
        .args(["--list", &srv.tcp_uri("")])
        .output()
        .unwrap();
    assert!(!plain.status.success(), "plain TCP listed exports");
    let plain = Command::new("nbdinfo")
        .args(["--size", &srv.tcp_uri("disk")])
        .output()
        .unwrap();
    assert!(!plain.status.success(), "plain TCP opened an export");

    // The unix socket works without TLS.
    run_ok(Command::new("nbdinfo").args(["--list", &srv.uri("")]));

    // Data moves over TLS.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let data = pattern(3, 3 * MIB as usize);
    std::fs::write(&src, &data).unwrap();
    run_ok(Command::new("nbdcopy").args([
        "--synchronous",
        src.to_str().unwrap(),
        &nbds(&srv, "disk", pki.path()),
    ]));
    let mut got = vec![0u8; data.len()];
    disk.read_at(&mut got, 0).unwrap();
    assert!(got == data);
    let dst = dir.path().join("dst");
    run_ok(Command::new("nbdcopy").args([&nbds(&srv, "disk", pki.path()), dst.to_str().unwrap()]));
    assert!(std::fs::read(&dst).unwrap()[..data.len()] == data[..]);
}

#[test]
fn client_certificates_are_checked() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path(), "/CN=test CA");
    let (srv, _) = tls_server(pki.path(), true);
    run_ok(Command::new("nbdinfo").args(["--size", &nbds(&srv, "disk", pki.path())]));

    // Without a client certificate.
    let nocert = tempfile::tempdir().unwrap();
    std::fs::copy(
        pki.path().join("ca-cert.pem"),
        nocert.path().join("ca-cert.pem"),
    )
    .unwrap();
    let out = Command::new("nbdinfo")
        .args(["--size", &nbds(&srv, "disk", nocert.path())])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "accepted a client without a certificate"
    );

    // With a certificate from another CA (which still trusts our server's CA).
    let other = tempfile::tempdir().unwrap();
    make_pki(other.path(), "/CN=other CA");
    std::fs::copy(
        pki.path().join("ca-cert.pem"),
        other.path().join("ca-cert.pem"),
    )
    .unwrap();
    let out = Command::new("nbdinfo")
        .args(["--size", &nbds(&srv, "disk", other.path())])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "accepted a certificate from an unknown CA"
    );
}

#[test]
fn bad_tls_files_fail_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        tls: Some(TlsConfig {
            cert: dir.path().join("missing.pem"),
            key: dir.path().join("missing-key.pem"),
            client_ca: None,
        }),
        ..ServerConfig::default()
    };
    let err = start_error(config);
    assert!(err.contains("missing.pem"), "{err}");
}

/// What the server says when it refuses to start with `config`.
fn start_error(config: ServerConfig) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(platter_disk_server::run(
        vec![],
        Arc::new(StaticExports::new()),
        config,
        tokio_util::sync::CancellationToken::new(),
    ))
    .unwrap_err()
    .to_string()
}

/// A self-signed server certificate for 127.0.0.1 with an RSA key of `bits` bits, as
/// `server-{cert,key}.pem`, and the same certificate as the clients' `ca-cert.pem`.
fn rsa_pki(dir: &Path, bits: u32) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            &format!("rsa:{bits}"),
            "-nodes",
            "-keyout",
            "server-key.pem",
            "-out",
            "server-cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
    );
    std::fs::copy(dir.join("server-cert.pem"), dir.join("ca-cert.pem")).unwrap();
}

/// ring signs with 2048-, 3072- and 4096-bit RSA keys only; any other size is refused at
/// start with its size and what to do, not rustls' "failed to parse private key".
#[test]
fn rsa_keys_work_or_are_refused_naming_their_size() {
    for bits in [2048, 3072, 4096] {
        let pki = tempfile::tempdir().unwrap();
        rsa_pki(pki.path(), bits);
        let (srv, _) = tls_server(pki.path(), false);
        let out = run_ok(Command::new("nbdinfo").args(["--size", &nbds(&srv, "disk", pki.path())]));
        assert_eq!(stdout(&out).trim(), (16 * MIB).to_string(), "{bits} bits");
    }
    for bits in [2432, 2560] {
        let pki = tempfile::tempdir().unwrap();
        rsa_pki(pki.path(), bits);
        let config = ServerConfig {
            tls: Some(TlsConfig {
                cert: pki.path().join("server-cert.pem"),
                key: pki.path().join("server-key.pem"),
                client_ca: None,
            }),
            ..ServerConfig::default()
        };
        let err = start_error(config);
        assert!(err.contains(&format!("is a {bits}-bit RSA key")), "{err}");
        assert!(err.contains("2048, 3072 or 4096 bits"), "{err}");
    }
}
