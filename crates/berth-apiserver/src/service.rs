//! The trait every AWS service implements to be served by the front ([`AwsService`]), and what
//! a call hands it ([`Input`]).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use berth_api::operation::Operation;
use berth_api::proto::{parse_body, AwsError};
use serde_json::Value;

use crate::error::ErrorTable;

/// The awsJson flavour a service answers in (its replies' `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonVersion {
    /// `application/x-amz-json-1.0` (CloudWatch, DynamoDB, ...).
    V1_0,
    /// `application/x-amz-json-1.1` (ECS, ECR, CloudWatch Logs, Application Auto Scaling).
    V1_1,
}

impl JsonVersion {
    /// The `Content-Type` of this flavour.
    pub fn content_type(self) -> &'static str {
        match self {
            JsonVersion::V1_0 => "application/x-amz-json-1.0",
            JsonVersion::V1_1 => crate::json::CONTENT_TYPE,
        }
    }
}

/// How a service speaks the query protocol (form-encoded `Action=<Op>&Version=...`, XML
/// replies). A service that has it is also `awsQueryCompatible` on its JSON and CBOR
/// protocols: their errors carry `x-amzn-query-error: <Code>;<Sender|Receiver>`.
#[derive(Debug)]
pub struct QuerySupport {
    /// The XML namespace of replies (`http://monitoring.amazonaws.com/doc/2010-08-01/`).
    pub xmlns: &'static str,
    /// `(__type, query code)`: the model's `awsQueryError` codes; other types keep their name
    /// (and `UnknownOperationException` is always `InvalidAction`).
    pub error_codes: &'static [(&'static str, &'static str)],
    /// Members that are maps, written `<entry><key>..</key><value>..</value></entry>`.
    pub map_members: &'static [&'static str],
}

/// A request's input, as the protocol delivered it.
#[derive(Debug, Clone, PartialEq)]
pub enum Input<'a> {
    /// An awsJson body, raw (parsed by the operation into its own request shape, so that a bad
    /// body's `SerializationException` names what serde found).
    Json(&'a [u8]),
    /// A document decoded by the front (rpcv2Cbor, or the query protocol's parameters), with
    /// timestamps as epoch seconds (CBOR) or ISO 8601 text (query).
    Document(Value),
}

impl Input<'_> {
    /// The input as the request shape `T`; `SerializationException` when it is not one. An
    /// empty JSON body counts as `{}`.
    pub fn parse<T: serde::de::DeserializeOwned>(self) -> Result<T, AwsError> {
        match self {
            Input::Json(b) => parse_body(b),
            Input::Document(v) => {
                serde_json::from_value(v).map_err(|e| AwsError::serialization(e.to_string()))
            }
        }
    }

    /// The input as JSON bytes (for handlers that parse bytes themselves).
    pub fn json_bytes(&self) -> Cow<'_, [u8]> {
        match self {
            Input::Json(b) => Cow::Borrowed(b),
            Input::Document(v) => Cow::Owned(serde_json::to_vec(v).unwrap_or_default()),
        }
    }
}

/// One AWS service served by the front. Implement it in the service's module and register the
/// value with [`crate::ApiServer::service`]; that is all a new service needs.
///
/// The front routes a request to the service by its awsJson target prefix (`X-Amz-Target:
/// <prefix>.<Op>`), its rpcv2Cbor path (`/service/<prefix>/operation/<Op>`, when
/// [`AwsService::rpc_v2_cbor`] is set) or, for the query protocol, the SigV4 signing name of the
/// request (when [`AwsService::query`] is set); parses the operation name into
/// [`AwsService::Operation`] (an unknown name is answered with [`Operation::unknown`] and never
/// reaches [`AwsService::call`]); decodes the input; and encodes the reply or error in the
/// request's protocol.
pub trait AwsService: Send + Sync + 'static {
    /// The service's operation enum (in `berth_api::operation`).
    type Operation: Operation;

    /// The SigV4 signing name (`ecs`, `ecr`, `logs`, `monitoring`, `application-autoscaling`).
    fn signing_name(&self) -> &'static str;

    /// The awsJson `X-Amz-Target` prefix, which is also the smithy service name of rpcv2Cbor
    /// paths (`AmazonEC2ContainerServiceV20141113`).
    fn json_target_prefix(&self) -> &'static str;

    /// The awsJson flavour of replies (default 1.1).
    fn json_version(&self) -> JsonVersion {
        JsonVersion::V1_1
    }

    /// The `service` label of the API metrics (default: the target prefix).
    fn metrics_label(&self) -> &'static str {
        self.json_target_prefix()
    }

    /// `Some(namespace)` (`com.amazonaws.cloudwatch`) when the service speaks
    /// smithy-rpc-v2-cbor; errors are then typed `<namespace>#<Name>`.
    fn rpc_v2_cbor(&self) -> Option<&'static str> {
        None
    }

    /// How the service speaks the query protocol, if it does.
    fn query(&self) -> Option<&'static QuerySupport> {
        None
    }

    /// Reply members that are timestamps (epoch seconds in JSON): CBOR tags them (tag 1), the
    /// query protocol writes them as ISO 8601 text.
    fn timestamp_members(&self) -> &'static [&'static str] {
        &[]
    }

    /// The service's error names by kind (see [`crate::error`]).
    fn errors(&self) -> &'static ErrorTable;

    /// Runs operation `op` on `input`; the reply is the operation's output shape as JSON.
    fn call(
        &self,
        op: Self::Operation,
        input: Input<'_>,
    ) -> impl Future<Output = Result<Value, AwsError>> + Send;
}

/// A boxed, sendable future of a call's outcome.
pub(crate) type CallFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, AwsError>> + Send + 'a>>;

/// [`AwsService`] with its operation type erased, so the front can hold every service in one
/// table.
pub(crate) trait DynService: Send + Sync {
    fn signing_name(&self) -> &'static str;
    fn json_target_prefix(&self) -> &'static str;
    fn json_version(&self) -> JsonVersion;
    fn metrics_label(&self) -> &'static str;
    fn rpc_v2_cbor(&self) -> Option<&'static str>;
    fn query(&self) -> Option<&'static QuerySupport>;
    fn timestamp_members(&self) -> &'static [&'static str];
    /// Parses `operation` (the one place names become operations) and runs it.
    fn call_named<'a>(&'a self, operation: &str, input: Input<'a>) -> CallFuture<'a>;
}

impl<S: AwsService> DynService for S {
    fn signing_name(&self) -> &'static str {
        AwsService::signing_name(self)
    }
    fn json_target_prefix(&self) -> &'static str {
        AwsService::json_target_prefix(self)
    }
    fn json_version(&self) -> JsonVersion {
        AwsService::json_version(self)
    }
    fn metrics_label(&self) -> &'static str {
        AwsService::metrics_label(self)
    }
    fn rpc_v2_cbor(&self) -> Option<&'static str> {
        AwsService::rpc_v2_cbor(self)
    }
    fn query(&self) -> Option<&'static QuerySupport> {
        AwsService::query(self)
    }
    fn timestamp_members(&self) -> &'static [&'static str] {
        AwsService::timestamp_members(self)
    }
    fn call_named<'a>(&'a self, operation: &str, input: Input<'a>) -> CallFuture<'a> {
        match S::Operation::parse(operation) {
            Ok(op) => Box::pin(self.call(op, input)),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_parses_json_and_documents_alike() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct R {
            a: i64,
        }
        assert_eq!(Input::Json(br#"{"a": 1}"#).parse::<R>(), Ok(R { a: 1 }));
        assert_eq!(
            Input::Document(serde_json::json!({"a": 2})).parse::<R>(),
            Ok(R { a: 2 })
        );
        let e = Input::Json(b"{nope").parse::<R>().unwrap_err();
        assert_eq!(e.error_type, "SerializationException");
        let e = Input::Document(serde_json::json!({"a": "x"}))
            .parse::<R>()
            .unwrap_err();
        assert_eq!(e.error_type, "SerializationException");
        assert_eq!(
            Input::Json(b"  ").parse::<Value>(),
            Ok(serde_json::json!({}))
        );
        assert_eq!(
            &*Input::Document(serde_json::json!({"a": 3})).json_bytes(),
            br#"{"a":3}"#
        );
    }
}
