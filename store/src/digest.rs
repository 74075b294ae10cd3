//! Content identities: blob digests, layer diffIDs and snapshot chain IDs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::Error;

/// A sha256 content digest, displayed as `sha256:<64 lowercase hex>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest a finished hasher holds.
    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest(format!("sha256:{}", hex::encode(hasher.finalize())))
    }

    /// The 64 hex characters after `sha256:`.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The full `sha256:<hex>` string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A digest from bare hex (the name of a file in `blobs/sha256/`).
    pub fn from_hex(hex: &str) -> Result<Digest, Error> {
        format!("sha256:{hex}").parse()
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest, Error> {
        let bad = |reason| Error::InvalidDigest {
            value: s.to_owned(),
            reason,
        };
        let (algorithm, hex) = s
            .split_once(':')
            .ok_or_else(|| bad("missing algorithm prefix"))?;
        if algorithm != "sha256" {
            return Err(bad("only sha256 is supported"));
        }
        if hex.len() != 64 {
            return Err(bad("expected 64 hex characters"));
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("expected lowercase hex"));
        }
        Ok(Digest(s.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

macro_rules! digest_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Digest);

        impl $name {
            /// The underlying digest.
            pub fn digest(&self) -> &Digest {
                &self.0
            }

            /// The 64 hex characters.
            pub fn hex(&self) -> &str {
                self.0.hex()
            }
        }

        impl From<Digest> for $name {
            fn from(d: Digest) -> Self {
                $name(d)
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Error> {
                Ok($name(s.parse()?))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

digest_newtype!(
    /// The sha256 of an uncompressed layer tar (the image config's `rootfs.diff_ids`).
    DiffId
);
digest_newtype!(
    /// A snapshot's identity: the OCI chain ID of a layer stack.
    ChainId
);

impl ChainId {
    /// The chain ID of `diff` on top of `parent` (OCI: `sha256(parent + " " + diff)`,
    /// and the diffID itself for the bottom layer).
    pub fn child(parent: Option<&ChainId>, diff: &DiffId) -> ChainId {
        match parent {
            None => ChainId(diff.0.clone()),
            Some(p) => ChainId(Digest::of(format!("{} {}", p.0, diff.0).as_bytes())),
        }
    }

    /// The chain ID of a whole stack of diffIDs, bottom first (None when empty).
    pub fn of_stack(diff_ids: &[DiffId]) -> Option<ChainId> {
        diff_ids
            .iter()
            .fold(None, |parent, d| Some(ChainId::child(parent.as_ref(), d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let d = Digest::of(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
        assert!("sha512:00".parse::<Digest>().is_err());
        assert!("sha256:ABC".parse::<Digest>().is_err());
        assert!(format!("sha256:{}", "G".repeat(64))
            .parse::<Digest>()
            .is_err());
        assert!("e3b0".parse::<Digest>().is_err());
    }

    #[test]
    fn chain_id_follows_the_oci_formula() {
        let a = DiffId::from(Digest::of(b"a"));
        let b = DiffId::from(Digest::of(b"b"));
        let ca = ChainId::child(None, &a);
        assert_eq!(ca.digest(), a.digest());
        let cb = ChainId::child(Some(&ca), &b);
        let expected = Digest::of(format!("{} {}", a, b).as_bytes());
        assert_eq!(cb.digest(), &expected);
        assert_eq!(ChainId::of_stack(&[a, b]), Some(cb));
    }
}
