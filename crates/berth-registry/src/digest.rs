//! Content digests: berth's one [`Digest`] type lives in [`berth_core::digest`]; the registry
//! reports a malformed one as OCI `DIGEST_INVALID` ([`crate::RegistryError::DigestInvalid`]).

pub use berth_core::digest::{Algorithm, Digest, DigestError, Hasher};
