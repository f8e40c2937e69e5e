//! Who may call `berth server`: the layers every request goes through (DESIGN §2, berth-iam).
//!
//! - [`sigv4`]: every AWS API route (`POST /` for ECS, ECR, CloudWatch Logs, Application Auto
//!   Scaling and CloudWatch awsJson/query, and CloudWatch's rpcv2Cbor paths) needs a valid
//!   SigV4 signature by one of the account's access keys; refusals are worded in the request's
//!   protocol (see [`berth_iam::error`]). The body is read once (at most 2 MiB, as the API
//!   handlers take) and hashed once.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_iam::{AuthError, Credentials, Protocol};

/// Largest API request body (the same as axum's default body limit the handlers had).
pub const MAX_API_BODY: usize = 2 * 1024 * 1024;

/// What the authentication layers check against.
pub struct Auth {
    /// The account's access keys (or the insecure accept-anything mode).
    pub credentials: Credentials,
}

/// The protocol a request speaks, which decides how a refusal is shaped.
fn protocol_of(req: &Request) -> (Protocol, &'static str) {
    if req.uri().path().starts_with("/service/") {
        return (Protocol::RpcV2Cbor, "application/cbor");
    }
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/x-www-form-urlencoded") {
        (Protocol::Query, "text/xml")
    } else if ct.starts_with("application/x-amz-json-1.0") {
        (Protocol::AwsJson, "application/x-amz-json-1.0")
    } else {
        (Protocol::AwsJson, berth_api::proto::CONTENT_TYPE)
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A refusal in `protocol`'s error shape, with `x-amzn-RequestId` and `x-amzn-ErrorType`.
pub fn refusal(e: &AuthError, protocol: Protocol, content_type: &'static str) -> Response {
    let rid = uuid::Uuid::new_v4().to_string();
    let (code, message) = (e.code(protocol), e.message(protocol));
    let body = match protocol {
        Protocol::AwsJson => {
            serde_json::to_vec(&serde_json::json!({"__type": code, "message": message}))
                .unwrap_or_default()
        }
        Protocol::RpcV2Cbor => berth_api::cbor::encode(
            &serde_json::json!({"__type": code, "message": message}),
            &[],
        ),
        Protocol::Query => format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>",
            xml_escape(&message)
        )
        .into_bytes(),
    };
    let status = StatusCode::from_u16(e.status(protocol)).unwrap_or(StatusCode::FORBIDDEN);
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static(content_type));
    h.insert("x-amzn-errortype", HeaderValue::from_static(code));
    if let Ok(v) = HeaderValue::from_str(&rid) {
        h.insert("x-amzn-requestid", v);
    }
    if protocol == Protocol::RpcV2Cbor {
        h.insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
    }
    resp
}

/// Middleware of every AWS API route: verifies SigV4, then passes the request on with the
/// [`berth_iam::Caller`] as an extension.
pub async fn sigv4(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let (protocol, content_type) = protocol_of(&req);
    let (mut parts, body) = req.into_parts();
    let Ok(bytes): Result<Bytes, _> = axum::body::to_bytes(body, MAX_API_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    };
    let signed = berth_iam::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
    };
    match auth
        .credentials
        .verify(&signed, &bytes, std::time::SystemTime::now())
    {
        Ok(caller) => {
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => {
            tracing::debug!(path = %parts.uri.path(), error = %e, "request not authenticated");
            refusal(&e, protocol, content_type)
        }
    }
}
