//! berth's identities (DESIGN §2): the account's access keys and AWS Signature Version 4.
//!
//! - [`credentials`]: the access key store (`<data-dir>/credentials.json`, mode 0600), created
//!   with one AKIA-style key pair on first start.
//! - [`sigv4`]: verification of SigV4-signed requests (the `Authorization: AWS4-HMAC-SHA256 ...`
//!   header form and the presigned `X-Amz-*` query form) and a signer for berth's own clients.
//! - [`error`]: [`AuthError`] and its shape in each AWS protocol (awsJson, query, rpcv2Cbor).
//!
//! Spec: AWS General Reference, "Signature Version 4 signing process" (canonical request,
//! string to sign, signing key), as botocore implements it (`botocore/auth.py`).

pub mod credentials;
pub mod error;
pub mod sigv4;
mod time;

pub use credentials::{AccessKey, Caller, Credentials};
pub use error::{AuthError, Protocol};
pub use sigv4::{sign, sign_json_call, Request};
