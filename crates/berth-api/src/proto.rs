//! What every AWS service handler berth serves shares: the wire error ([`AwsError`]), the JSON
//! request parser ([`parse_body`]) and the services' awsJson target prefixes. The HTTP side (the
//! `X-Amz-Target` split, content types, codecs, SigV4) is `berth-apiserver`'s.
//!
//! Source: AWS "JSON 1.1 protocol" (Smithy `awsJson1_1`): errors as HTTP 4xx/5xx with
//! `{"__type": "<Name>", "message": ...}`.

use serde::Serialize;

/// ECS target prefix.
pub const ECS_PREFIX: &str = "AmazonEC2ContainerServiceV20141113";
/// ECR target prefix.
pub const ECR_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921";
/// CloudWatch Logs target prefix.
pub const LOGS_PREFIX: &str = "Logs_20140328";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body() {
        let e = AwsError::client("ClusterNotFoundException", "Cluster not found.");
        assert_eq!(
            String::from_utf8(e.body()).unwrap(),
            r#"{"__type":"ClusterNotFoundException","message":"Cluster not found."}"#
        );
        assert_eq!(AwsError::server("x").status, 500);
    }
}
