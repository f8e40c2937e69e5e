//! Content digests (OCI image-spec "Digests"): `sha256:<64 lowercase hex>` or
//! `sha512:<128 lowercase hex>`. Any other algorithm or encoding is `DIGEST_INVALID`.

use std::fmt;

use sha2::{Digest as _, Sha256, Sha512};

use crate::RegistryError;

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

    /// Parses an algorithm name; `DigestInvalid` when it is not registered.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            _ => Err(RegistryError::DigestInvalid(format!(
                "unsupported digest algorithm {s:?}"
            ))),
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

/// A validated digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    alg: Algorithm,
    hex: String,
}

impl Digest {
    /// Parses `<alg>:<lowercase hex of the algorithm's length>`; anything else gives
    /// [`RegistryError::DigestInvalid`].
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let invalid = || RegistryError::DigestInvalid(format!("invalid digest {s:?}"));
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

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg.name(), self.hex)
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
        let d512 = Digest::of_with(Algorithm::Sha512, b"abc");
        assert_eq!(
            d512.to_string(),
            "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        assert_eq!(Digest::parse(&d512.to_string()).unwrap(), d512);
        assert_eq!(d512.algorithm(), Algorithm::Sha512);
        for bad in [
            "sha256:totallywrong",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha512:00",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "nocolon",
            "sha256:",
        ] {
            assert!(
                matches!(Digest::parse(bad), Err(RegistryError::DigestInvalid(_))),
                "{bad}"
            );
        }
    }
}
