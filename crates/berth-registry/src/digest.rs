//! Content digests (OCI image-spec "Digests"): `sha256:<64 lowercase hex>`. Only sha256 is
//! accepted; anything else is `DIGEST_INVALID`.

use std::fmt;

use sha2::{Digest as _, Sha256};

use crate::RegistryError;

/// A validated sha256 digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`; anything else gives [`RegistryError::DigestInvalid`].
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let invalid = || RegistryError::DigestInvalid(format!("invalid digest {s:?}"));
        let (alg, hex) = s.split_once(':').ok_or_else(invalid)?;
        if alg != "sha256" {
            return Err(RegistryError::DigestInvalid(format!(
                "unsupported digest algorithm {alg:?}"
            )));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid());
        }
        Ok(Self {
            hex: hex.to_string(),
        })
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest a finished hasher computed.
    pub fn from_hasher(h: Sha256) -> Self {
        Self {
            hex: hex::encode(h.finalize()),
        }
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
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
        for bad in [
            "sha256:totallywrong",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha512:00",
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
