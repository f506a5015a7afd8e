//! Names of volumes, snapshots and VMs, and `NAME[@SNAP]` references.
//!
//! The grammar is `[a-z0-9][a-z0-9._-]{0,62}`: safe as a file name, an NBD export name,
//! a Kubernetes object name and a libvirt domain name. Anything else is refused here,
//! once, so that no other layer has to re-check.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest name accepted (one leading character plus 62).
pub const MAX_NAME_LEN: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid name {0:?}: empty")]
    Empty(String),
    #[error("invalid name {0:?}: longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
    #[error("invalid name {0:?}: must start with a lowercase letter or digit")]
    BadStart(String),
    #[error("invalid name {name:?}: character {ch:?} not allowed (use a-z, 0-9, '.', '_', '-')")]
    BadChar { name: String, ch: char },
    #[error("invalid reference {0:?}: expected NAME or NAME@SNAP")]
    BadRef(String),
    #[error("{0:?} names a snapshot; a volume name is needed here")]
    SnapshotNotAllowed(String),
}

/// A validated object name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    pub fn new(s: &str) -> Result<Self, NameError> {
        let first = s
            .chars()
            .next()
            .ok_or_else(|| NameError::Empty(s.to_string()))?;
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(s.to_string()));
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(NameError::BadStart(s.to_string()));
        }
        if let Some(ch) = s.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        }) {
            return Err(NameError::BadChar {
                name: s.to_string(),
                ch,
            });
        }
        Ok(Name(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Name::new(s)
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Name::new(&s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

/// `NAME` (a volume) or `NAME@SNAP` (a read-only snapshot of it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VolumeRef {
    pub volume: Name,
    pub snapshot: Option<Name>,
}

impl VolumeRef {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        match s.split_once('@') {
            None => Ok(VolumeRef {
                volume: Name::new(s)?,
                snapshot: None,
            }),
            Some((v, snap)) => {
                if snap.contains('@') {
                    return Err(NameError::BadRef(s.to_string()));
                }
                Ok(VolumeRef {
                    volume: Name::new(v)?,
                    snapshot: Some(Name::new(snap)?),
                })
            }
        }
    }

    pub fn volume(name: Name) -> Self {
        VolumeRef {
            volume: name,
            snapshot: None,
        }
    }

    pub fn is_snapshot(&self) -> bool {
        self.snapshot.is_some()
    }

    /// The plain volume name, refusing a snapshot reference.
    pub fn require_volume(&self) -> Result<&Name, NameError> {
        match &self.snapshot {
            None => Ok(&self.volume),
            Some(_) => Err(NameError::SnapshotNotAllowed(self.to_string())),
        }
    }

    /// The snapshot part, refusing a plain volume reference.
    pub fn require_snapshot(&self) -> Result<&Name, NameError> {
        self.snapshot
            .as_ref()
            .ok_or_else(|| NameError::BadRef(self.to_string()))
    }
}

impl fmt::Display for VolumeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.snapshot {
            None => write!(f, "{}", self.volume),
            Some(s) => write!(f, "{}@{}", self.volume, s),
        }
    }
}

impl FromStr for VolumeRef {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VolumeRef::parse(s)
    }
}

impl TryFrom<String> for VolumeRef {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        VolumeRef::parse(&s)
    }
}

impl From<VolumeRef> for String {
    fn from(r: VolumeRef) -> String {
        r.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_valid_names() {
        for n in ["a", "0", "vm-1", "disk.img", "a_b", &"x".repeat(63)] {
            assert!(Name::new(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn refuses_invalid_names() {
        assert!(matches!(Name::new(""), Err(NameError::Empty(_))));
        assert!(matches!(
            Name::new(&"x".repeat(64)),
            Err(NameError::TooLong(_))
        ));
        assert!(matches!(Name::new("-a"), Err(NameError::BadStart(_))));
        assert!(matches!(Name::new("Abc"), Err(NameError::BadStart(_))));
        assert!(matches!(
            Name::new("a/b"),
            Err(NameError::BadChar { ch: '/', .. })
        ));
        assert!(matches!(
            Name::new("a b"),
            Err(NameError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            Name::new("a@b"),
            Err(NameError::BadChar { ch: '@', .. })
        ));
    }

    #[test]
    fn parses_references() {
        let r = VolumeRef::parse("db@monday").unwrap();
        assert_eq!(r.volume.as_str(), "db");
        assert_eq!(r.snapshot.as_ref().unwrap().as_str(), "monday");
        assert_eq!(r.to_string(), "db@monday");
        assert!(VolumeRef::parse("a@b@c").is_err());
        assert!(VolumeRef::parse("a@").is_err());
        assert!(VolumeRef::parse("@b").is_err());
        assert!(r.require_volume().is_err());
        assert!(VolumeRef::parse("db").unwrap().require_snapshot().is_err());
    }

    #[test]
    fn serde_round_trip_validates() {
        let r: VolumeRef = serde_json::from_str("\"a@b\"").unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"a@b\"");
        assert!(serde_json::from_str::<Name>("\"../x\"").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(s in ".{0,80}") {
            if let Ok(r) = VolumeRef::parse(&s) {
                prop_assert_eq!(r.to_string(), s);
            }
        }
    }
}
