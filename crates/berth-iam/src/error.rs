//! Authentication failures and how each AWS protocol words them.
//!
//! | failure | awsJson / rpcv2Cbor (code, HTTP) | query (code, HTTP) |
//! |---|---|---|
//! | no `Authorization` header and no `X-Amz-Signature` | `MissingAuthenticationTokenException` 403 | `MissingAuthenticationToken` 403 |
//! | malformed header or query parameters | `IncompleteSignatureException` 400 | `IncompleteSignature` 400 |
//! | unknown access key | `UnrecognizedClientException` 400 | `InvalidClientTokenId` 403 |
//! | wrong signature, body hash mismatch | `InvalidSignatureException` 400 | `SignatureDoesNotMatch` 403 |
//! | `X-Amz-Date` more than 15 min off, presigned URL past `X-Amz-Expires` | `InvalidSignatureException` 400 | `SignatureDoesNotMatch` 403 |
//!
//! Messages are AWS's (e.g. `Signature expired: 20260101T000000Z is now earlier than
//! 20260101T001000Z (20260101T002500Z - 15 min.)`).

/// The wire protocol an error is reported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// awsJson1.0 / 1.1 (`X-Amz-Target`): `{"__type": code, "message": ...}`.
    AwsJson,
    /// smithy rpcv2Cbor: the same code in a CBOR map.
    RpcV2Cbor,
    /// The query protocol (form-encoded `Action=`): `<ErrorResponse>` XML.
    Query,
}

const MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Neither a SigV4 `Authorization` header nor presigned query parameters.
    #[error("Missing Authentication Token")]
    Missing,
    /// A SigV4 header or query form that lacks or garbles a part; the message says which.
    #[error("{0}")]
    Incomplete(String),
    /// The access key id is not one of the account's.
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    /// The signature does not match the one computed with the key's secret.
    #[error("{MISMATCH}")]
    SignatureMismatch,
    /// `x-amz-content-sha256` names another body than the one sent.
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    ContentSha256Mismatch,
    /// The signing time is too far in the past: `signed` is earlier than `earliest`
    /// (`now` minus `window`, e.g. `15 min.`); all three are `YYYYMMDDTHHMMSSZ`.
    #[error("Signature expired: {signed} is now earlier than {earliest} ({now} - {window})")]
    Expired {
        signed: String,
        earliest: String,
        now: String,
        window: String,
    },
    /// The signing time is more than 15 minutes in the future.
    #[error("Signature not yet current: {signed} is still later than {latest} ({now} + 15 min.)")]
    NotYetCurrent {
        signed: String,
        latest: String,
        now: String,
    },
}

impl AuthError {
    /// The error code (`__type` or `<Code>`) in `protocol`.
    pub fn code(&self, protocol: Protocol) -> &'static str {
        let query = protocol == Protocol::Query;
        match self {
            AuthError::Missing if query => "MissingAuthenticationToken",
            AuthError::Missing => "MissingAuthenticationTokenException",
            AuthError::Incomplete(_) if query => "IncompleteSignature",
            AuthError::Incomplete(_) => "IncompleteSignatureException",
            AuthError::UnknownKey if query => "InvalidClientTokenId",
            AuthError::UnknownKey => "UnrecognizedClientException",
            _ if query => "SignatureDoesNotMatch",
            _ => "InvalidSignatureException",
        }
    }

    /// The HTTP status in `protocol`.
    pub fn status(&self, protocol: Protocol) -> u16 {
        match (self, protocol) {
            (AuthError::Missing, _) => 403,
            (AuthError::Incomplete(_), _) => 400,
            (_, Protocol::Query) => 403,
            _ => 400,
        }
    }

    /// The message in `protocol` (the query protocol words a missing token differently).
    pub fn message(&self, protocol: Protocol) -> String {
        match (self, protocol) {
            (AuthError::Missing, Protocol::Query) => {
                "Request is missing Authentication Token".to_string()
            }
            _ => self.to_string(),
        }
    }
}
