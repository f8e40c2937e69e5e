//! awsJson1.1 plumbing shared by every AWS service berth serves (ECS, ECR, CloudWatch Logs):
//! the `X-Amz-Target` split, the error body, and the SigV4 credential scope.
//!
//! Source: AWS "JSON 1.1 protocol" (Smithy `awsJson1_1`): `POST /`, `Content-Type:
//! application/x-amz-json-1.1`, errors as HTTP 4xx/5xx with `{"__type": "<Name>", "message": ...}`.

use serde::Serialize;

/// ECS target prefix.
pub const ECS_PREFIX: &str = "AmazonEC2ContainerServiceV20141113";
/// ECR target prefix.
pub const ECR_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921";
/// CloudWatch Logs target prefix.
pub const LOGS_PREFIX: &str = "Logs_20140328";
/// The content type of awsJson1.1 requests and responses.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Splits `X-Amz-Target: <prefix>.<Operation>` into its two parts.
pub fn split_target(target: &str) -> Option<(&str, &str)> {
    target
        .split_once('.')
        .filter(|(p, o)| !p.is_empty() && !o.is_empty())
}

/// An AWS error as sent on the wire: HTTP `status` plus the JSON body
/// `{"__type": error_type, "message": message}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct AwsError {
    pub status: u16,
    pub error_type: String,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "__type")]
    error_type: &'a str,
    message: &'a str,
}

impl AwsError {
    /// A client error (HTTP 400) of the given exception name.
    pub fn client(error_type: &str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            error_type: error_type.to_string(),
            message: message.into(),
        }
    }
    /// `ClientException` (HTTP 400).
    pub fn client_exception(message: impl Into<String>) -> Self {
        Self::client("ClientException", message)
    }
    /// `InvalidParameterException` (HTTP 400).
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::client("InvalidParameterException", message)
    }
    /// `SerializationException` (HTTP 400): the body is not the JSON the operation takes.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::client("SerializationException", message)
    }
    /// `UnknownOperationException` (HTTP 400): `service` (a name such as `ECS`) has no
    /// operation `operation` in berth (yet); the message names both.
    pub fn unknown_operation(service: &str, operation: &str) -> Self {
        Self::client(
            "UnknownOperationException",
            format!("berth's {service} does not implement the operation {operation:?} yet."),
        )
    }
    /// `ServerException` (HTTP 500): berth's own fault.
    pub fn server(message: impl Into<String>) -> Self {
        Self {
            status: 500,
            error_type: "ServerException".to_string(),
            message: message.into(),
        }
    }
    /// The JSON error body.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&ErrorBody {
            error_type: &self.error_type,
            message: &self.message,
        })
        .unwrap_or_default()
    }
}

/// Parses a request body into `T`; an empty body counts as `{}`. Bad JSON or wrong member types
/// give `SerializationException`, as AWS endpoints answer.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AwsError> {
    let body: &[u8] = if body.iter().all(|b| b.is_ascii_whitespace()) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| AwsError::serialization(e.to_string()))
}

/// The credential scope of a SigV4 `Authorization` header:
/// `AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/<service>/aws4_request, ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialScope {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
}

/// Extracts the credential scope from an `Authorization` header value; `None` when the header is
/// not SigV4. (Signatures are not checked yet.)
pub fn credential_scope(authorization: &str) -> Option<CredentialScope> {
    let rest = authorization.strip_prefix("AWS4-HMAC-SHA256")?;
    let cred = rest
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("Credential="))?;
    let mut parts = cred.split('/');
    Some(CredentialScope {
        access_key: parts.next()?.to_string(),
        date: parts.next()?.to_string(),
        region: parts.next()?.to_string(),
        service: parts.next()?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_and_target() {
        let h = "AWS4-HMAC-SHA256 Credential=AKID/20261124/eu-west-1/ecs/aws4_request, SignedHeaders=host, Signature=x";
        let s = credential_scope(h).unwrap();
        assert_eq!(
            (s.region.as_str(), s.service.as_str()),
            ("eu-west-1", "ecs")
        );
        assert_eq!(
            split_target("AmazonEC2ContainerServiceV20141113.RunTask"),
            Some((ECS_PREFIX, "RunTask"))
        );
        assert_eq!(split_target("nodot"), None);
        let e = AwsError::client("ClusterNotFoundException", "Cluster not found.");
        assert_eq!(
            String::from_utf8(e.body()).unwrap(),
            r#"{"__type":"ClusterNotFoundException","message":"Cluster not found."}"#
        );
    }
}
