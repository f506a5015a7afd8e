//! TLS for `NBD_OPT_STARTTLS`: loads a certificate chain, a key and optionally a client
//! CA into a rustls server configuration (ring provider only).
//!
//! Loading happens once, when the server starts, so a bad file fails `run` with an error
//! that names it instead of failing clients later.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Where the server's TLS material lives (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Server certificate chain.
    pub cert: PathBuf,
    /// Server private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no {what}")]
    Empty { path: PathBuf, what: &'static str },
    #[error("TLS configuration from {path} refused: {source}")]
    Rustls {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("client CA {path} refused: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error(
        "{path} is a {bits}-bit RSA key; the TLS library (ring) signs only with RSA keys of \
         2048, 3072 or 4096 bits: make one with `openssl genrsa -out KEY 3072`, or use an \
         ECDSA (P-256, P-384) or Ed25519 key"
    )]
    RsaKeySize { path: PathBuf, bits: u32 },
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::Empty {
            path: path.to_owned(),
            what: "private key",
        })
}

/// Builds the acceptor for STARTTLS from `cfg`.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            path: cfg.cert.clone(),
            source,
        })?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|source| TlsError::Rustls {
                    path: ca.clone(),
                    source,
                })?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| TlsError::ClientCa {
                        path: ca.clone(),
                        reason: e.to_string(),
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let certs = certs(&cfg.cert)?;
    let key = key(&cfg.key)?;
    if let Some(bits) = rsa_modulus_bits(&key).filter(|b| !RING_RSA_BITS.contains(b)) {
        return Err(TlsError::RsaKeySize {
            path: cfg.key.clone(),
            bits,
        });
    }
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Rustls {
            path: cfg.key.clone(),
            source,
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The RSA modulus sizes ring signs with: 2048 to 4096 bits, primes a multiple of 512 bits
/// (ring's `RsaKeyPair`). Any other size fails inside rustls as "failed to parse private
/// key", so it is named before rustls sees it.
const RING_RSA_BITS: [u32; 3] = [2048, 3072, 4096];

/// `rsaEncryption` and `id-RSASSA-PSS` (1.2.840.113549.1.1.1 and .10), DER-encoded.
const RSA_OIDS: [&[u8]; 2] = [
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a],
];

/// The bit length of an RSA private key's modulus, or None for other keys and for DER
/// that cannot be read (rustls then says what is wrong with it).
fn rsa_modulus_bits(key: &PrivateKeyDer<'_>) -> Option<u32> {
    match key {
        PrivateKeyDer::Pkcs1(k) => pkcs1_modulus_bits(k.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(k) => {
            // PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier, OCTET STRING }
            let (info, _) = der::take(k.secret_pkcs8_der(), der::SEQUENCE)?;
            let (_, rest) = der::take(info, der::INTEGER)?;
            let (alg, rest) = der::take(rest, der::SEQUENCE)?;
            let (oid, _) = der::take(alg, der::OID)?;
            if !RSA_OIDS.contains(&oid) {
                return None;
            }
            let (inner, _) = der::take(rest, der::OCTET_STRING)?;
            pkcs1_modulus_bits(inner)
        }
        _ => None,
    }
}

/// RSAPrivateKey ::= SEQUENCE { version INTEGER, modulus INTEGER, ... } (RFC 8017).
fn pkcs1_modulus_bits(der: &[u8]) -> Option<u32> {
    let (key, _) = der::take(der, der::SEQUENCE)?;
    let (_, rest) = der::take(key, der::INTEGER)?;
    let (n, _) = der::take(rest, der::INTEGER)?;
    let first = n.iter().position(|&b| b != 0)?;
    let bytes = u32::try_from(n.len() - first).ok()?;
    Some(bytes.checked_mul(8)? - n[first].leading_zeros())
}

/// Just enough DER to walk to an RSA key's modulus.
mod der {
    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;

    /// Splits one element with tag `tag` off `input`: (its contents, what follows).
    pub fn take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, rest) = input.split_first()?;
        if t != tag {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| rest.split_at(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rustls::pki_types::{PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};

    /// A PKCS#1 key with only its version and modulus (enough for the walk).
    fn pkcs1(modulus: &[u8]) -> Vec<u8> {
        let mut body = vec![0x02, 0x01, 0x00, 0x02];
        push_len(&mut body, modulus.len());
        body.extend_from_slice(modulus);
        let mut out = vec![0x30];
        push_len(&mut out, body.len());
        out.extend(body);
        out
    }

    fn push_len(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            out.extend([0x82, (len >> 8) as u8, len as u8]);
        }
    }

    fn pkcs8(oid: &[u8], inner: &[u8]) -> Vec<u8> {
        let mut alg = vec![0x06, oid.len() as u8];
        alg.extend_from_slice(oid);
        alg.extend([0x05, 0x00]);
        let mut body = vec![0x02, 0x01, 0x00, 0x30, alg.len() as u8];
        body.extend(alg);
        body.push(0x04);
        push_len(&mut body, inner.len());
        body.extend_from_slice(inner);
        let mut out = vec![0x30];
        push_len(&mut out, body.len());
        out.extend(body);
        out
    }

    #[test]
    fn modulus_bits_of_both_encodings() {
        for bits in [2048u32, 2432, 2560, 3072, 4096] {
            // A leading zero byte (DER's sign byte) and a top bit set.
            let mut n = vec![0u8; 1 + bits as usize / 8];
            n[1] = 0x80;
            let k1 = pkcs1(&n);
            let key = PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(k1.clone()));
            assert_eq!(rsa_modulus_bits(&key), Some(bits));
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8(RSA_OIDS[0], &k1)));
            assert_eq!(rsa_modulus_bits(&key), Some(bits));
        }
        let mut n = vec![0u8; 256];
        n[0] = 0x01;
        let key = PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(pkcs1(&n)));
        assert_eq!(rsa_modulus_bits(&key), Some(2041));
        // An EC key's PKCS#8 (id-ecPublicKey) is not RSA.
        let ec = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8(&ec, &pkcs1(&n))));
        assert_eq!(rsa_modulus_bits(&key), None);
    }

    proptest! {
        #[test]
        fn arbitrary_key_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = rsa_modulus_bits(&PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(data.clone())));
            let _ = rsa_modulus_bits(&PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(data)));
        }
    }
}
