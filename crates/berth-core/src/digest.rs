//! Content digests (OCI image-spec "Digests"): `sha256:<64 lowercase hex>` or
//! `sha512:<128 lowercase hex>`; any other algorithm or encoding is refused. The one digest type
//! of berth: the registry stores and serves blobs by it, the agent pulls, caches and names
//! snapshots by it. Pure computation (hashing included), no IO.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

/// Why a string is not a [`Digest`]. The registry reports it as OCI `DIGEST_INVALID`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The algorithm is not one of the registered ones (`sha256`, `sha512`).
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// No `<alg>:` prefix, or an encoded part that is not the algorithm's length of lowercase hex.
    #[error("invalid digest {0:?}")]
    Invalid(String),
}

/// A registered digest algorithm (OCI image-spec: `sha256`, `sha512`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// `sha256` / `sha512`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Parses an algorithm name; [`DigestError::UnsupportedAlgorithm`] when it is not registered.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            _ => Err(DigestError::UnsupportedAlgorithm(s.to_string())),
        }
    }

    /// Length of the hex encoding (64 or 128).
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// A fresh incremental hasher.
    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Box::new(Sha512::new())),
        }
    }
}

/// An incremental hasher of either algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Box<Sha512>),
}

impl Hasher {
    /// Feeds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The algorithm this hasher computes.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        let (alg, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { alg, hex }
    }
}

/// A validated digest: `<algorithm>:<lowercase hex>`, so its hex part is safe as a file name.
/// Serialised (serde) as that string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    alg: Algorithm,
    hex: String,
}

impl Digest {
    /// Parses `<alg>:<lowercase hex of the algorithm's length>`; anything else is a
    /// [`DigestError`].
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let invalid = || DigestError::Invalid(s.to_string());
        let (alg, hex) = s.split_once(':').ok_or_else(invalid)?;
        let alg = Algorithm::parse(alg)?;
        if hex.len() != alg.hex_len()
            || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(invalid());
        }
        Ok(Self {
            alg,
            hex: hex.to_string(),
        })
    }

    /// The sha256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::of_with(Algorithm::Sha256, bytes)
    }

    /// The digest of `bytes` with algorithm `alg`.
    pub fn of_with(alg: Algorithm, bytes: &[u8]) -> Self {
        let mut h = alg.hasher();
        h.update(bytes);
        h.finish()
    }

    /// Whether `bytes` hash to this digest (with this digest's algorithm).
    pub fn verifies(&self, bytes: &[u8]) -> bool {
        Self::of_with(self.alg, bytes) == *self
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The hex digits (lowercase, the algorithm's length).
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg.name(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, DigestError> {
        Self::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_compute() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.hex().len(), 64);
        assert!(d.verifies(b""));
        assert!(!d.verifies(b"x"));
        let d512 = Digest::of_with(Algorithm::Sha512, b"abc");
        assert_eq!(
            d512.to_string(),
            "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        assert_eq!(Digest::parse(&d512.to_string()).unwrap(), d512);
        assert_eq!(d512.algorithm(), Algorithm::Sha512);
        assert!(d512.verifies(b"abc"));
        for bad in [
            "sha256:totallywrong",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha512:00",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "nocolon",
            "sha256:",
            "sha256:../../../../etc/passwd",
        ] {
            assert_eq!(
                Digest::parse(bad),
                Err(DigestError::Invalid(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(
            "md5:d41d8cd98f00b204e9800998ecf8427e".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm("md5".into()))
        );
    }

    #[test]
    fn serde_as_a_string() {
        let d = Digest::of(b"abc");
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(j, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&j).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:xyz\"").is_err());
    }
}
