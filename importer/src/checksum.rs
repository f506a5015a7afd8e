//! `--checksum ALGO:HEX` and OCI digests: parsing, and incremental hashing of the bytes
//! of a source as they are downloaded.
//!
//! Pure: no IO. A mismatch is reported with both digests so the user can tell a corrupt
//! download from a wrong expectation.

use md5::Md5;
use sha2::{Digest, Sha256, Sha512};
use std::fmt;

/// A hash algorithm accepted by `--checksum` and in OCI digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgo {
    Sha256,
    Sha512,
    Md5,
}

impl ChecksumAlgo {
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgo::Sha256 => "sha256",
            ChecksumAlgo::Sha512 => "sha512",
            ChecksumAlgo::Md5 => "md5",
        }
    }

    /// Length of the digest in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            ChecksumAlgo::Sha256 => 32,
            ChecksumAlgo::Sha512 => 64,
            ChecksumAlgo::Md5 => 16,
        }
    }
}

/// An expected digest: algorithm plus bytes. Displays as `algo:hex`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algo: ChecksumAlgo,
    pub digest: Vec<u8>,
}

/// Why a checksum string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid checksum {input:?}: {reason}")]
pub struct ChecksumParseError {
    pub input: String,
    pub reason: &'static str,
}

impl Checksum {
    /// Parses `sha256:HEX`, `sha512:HEX` or `md5:HEX` (the `--checksum` syntax and the OCI
    /// digest syntax; OCI only uses sha256/sha512).
    pub fn parse(s: &str) -> Result<Checksum, ChecksumParseError> {
        let err = |reason| ChecksumParseError {
            input: s.chars().take(200).collect(),
            reason,
        };
        let (algo, hex_part) = s
            .split_once(':')
            .ok_or_else(|| err("expected ALGO:HEX (sha256, sha512 or md5)"))?;
        let algo = match algo.to_ascii_lowercase().as_str() {
            "sha256" => ChecksumAlgo::Sha256,
            "sha512" => ChecksumAlgo::Sha512,
            "md5" => ChecksumAlgo::Md5,
            _ => return Err(err("unknown algorithm (expected sha256, sha512 or md5)")),
        };
        if hex_part.len() != algo.digest_len() * 2 {
            return Err(err("wrong number of hex digits for the algorithm"));
        }
        let digest = hex::decode(hex_part).map_err(|_| err("not hexadecimal"))?;
        Ok(Checksum { algo, digest })
    }

    /// Parses an OCI descriptor digest: only sha256 and sha512, lower-case hex.
    pub fn parse_oci_digest(s: &str) -> Result<Checksum, ChecksumParseError> {
        let c = Checksum::parse(s)?;
        if c.algo == ChecksumAlgo::Md5 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ChecksumParseError {
                input: s.chars().take(200).collect(),
                reason: "OCI digests are sha256 or sha512 in lower-case hex",
            });
        }
        Ok(c)
    }

    pub fn hex(&self) -> String {
        hex::encode(&self.digest)
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo.name(), self.hex())
    }
}

impl std::str::FromStr for Checksum {
    type Err = ChecksumParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Checksum::parse(s)
    }
}

/// An incremental hasher for one algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
    Md5(Md5),
}

impl Hasher {
    pub fn new(algo: ChecksumAlgo) -> Hasher {
        match algo {
            ChecksumAlgo::Sha256 => Hasher::Sha256(Sha256::new()),
            ChecksumAlgo::Sha512 => Hasher::Sha512(Sha512::new()),
            ChecksumAlgo::Md5 => Hasher::Md5(Md5::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Checksum {
        match self {
            Hasher::Sha256(h) => Checksum {
                algo: ChecksumAlgo::Sha256,
                digest: h.finalize().to_vec(),
            },
            Hasher::Sha512(h) => Checksum {
                algo: ChecksumAlgo::Sha512,
                digest: h.finalize().to_vec(),
            },
            Hasher::Md5(h) => Checksum {
                algo: ChecksumAlgo::Md5,
                digest: h.finalize().to_vec(),
            },
        }
    }
}

/// Hashes with several algorithms at once (the user's `--checksum` and a layer digest).
#[derive(Clone, Default)]
pub struct MultiHasher {
    hashers: Vec<Hasher>,
}

impl MultiHasher {
    pub fn new(algos: impl IntoIterator<Item = ChecksumAlgo>) -> MultiHasher {
        MultiHasher {
            hashers: algos.into_iter().map(Hasher::new).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hashers.is_empty()
    }

    pub fn update(&mut self, data: &[u8]) {
        for h in &mut self.hashers {
            h.update(data);
        }
    }

    pub fn finish(self) -> Vec<Checksum> {
        self.hashers.into_iter().map(Hasher::finish).collect()
    }
}

/// Computes the sha256 digest of `data` as an OCI digest string.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_displays() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let c = Checksum::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(c.algo, ChecksumAlgo::Sha256);
        assert_eq!(c.to_string(), format!("sha256:{hex}"));
        let mut h = Hasher::new(ChecksumAlgo::Sha256);
        h.update(b"");
        assert_eq!(h.finish(), c);
        assert!(Checksum::parse("md5:d41d8cd98f00b204e9800998ecf8427e").is_ok());
        assert!(Checksum::parse("sha256:abc").is_err());
        assert!(Checksum::parse("crc32:00000000").is_err());
        assert!(Checksum::parse("nocolon").is_err());
        assert!(Checksum::parse_oci_digest("md5:d41d8cd98f00b204e9800998ecf8427e").is_err());
        assert!(Checksum::parse_oci_digest(&format!("sha256:{}", hex.to_uppercase())).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = Checksum::parse(&s);
            let _ = Checksum::parse_oci_digest(&s);
        }
    }
}
