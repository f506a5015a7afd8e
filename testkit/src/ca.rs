//! A throw-away CA made for one test with the `openssl` command.

use std::path::{Path, PathBuf};

use crate::sh;

/// A CA made for one test, and a server certificate from it for 127.0.0.1 (and
/// `localhost`).
pub struct TestCa {
    /// Holds only `ca.crt`: what `--cert-dir` takes.
    pub ca_dir: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Makes a [`TestCa`] in `dir` with the `openssl` command.
pub fn throwaway_ca(dir: &Path) -> TestCa {
    let script = format!(
        "cd {d} && \
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=platter-test-ca 2>/dev/null && \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key -out srv.csr -subj /CN=127.0.0.1 2>/dev/null && \
         printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nbasicConstraints=CA:FALSE\\nkeyUsage=digitalSignature\\nextendedKeyUsage=serverAuth\\n' > ext && \
         openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt -days 2 -extfile ext 2>/dev/null && \
         mkdir certs && cp ca.crt certs/",
        d = dir.display()
    );
    sh(&script);
    TestCa {
        ca_dir: dir.join("certs"),
        server_cert: dir.join("srv.crt"),
        server_key: dir.join("srv.key"),
    }
}
