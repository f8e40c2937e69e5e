//! awsJson 1.0 / 1.1 (Smithy `awsJson1_0`, `awsJson1_1`): `POST /` with `X-Amz-Target:
//! <prefix>.<Operation>`; replies `200` with the output as JSON, errors HTTP 4xx/5xx with
//! `{"__type": "<Name>", "message": ...}` (and, for `awsQueryCompatible` services,
//! `x-amzn-query-error: <Code>;<Sender|Receiver>`).

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use berth_api::proto::AwsError;
use serde_json::Value;

use crate::service::QuerySupport;

/// The content type of awsJson1.1 requests and replies.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Splits `X-Amz-Target: <prefix>.<Operation>` into its two parts (both non-empty).
pub fn split_target(target: &str) -> Option<(&str, &str)> {
    target
        .split_once('.')
        .filter(|(p, o)| !p.is_empty() && !o.is_empty())
}

/// The HTTP status of an error (400 when its number is not a status).
pub(crate) fn status_of(e: &AwsError) -> StatusCode {
    StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST)
}

/// Adds `x-amzn-query-error` for an error of an `awsQueryCompatible` service.
pub(crate) fn query_error_header(resp: &mut Response, query: Option<&QuerySupport>, e: &AwsError) {
    if let Some(q) = query {
        let (code, fault) = crate::query::query_code(q, e);
        if let Ok(v) = HeaderValue::from_str(&format!("{code};{fault}")) {
            resp.headers_mut().insert("x-amzn-query-error", v);
        }
    }
}

/// The awsJson reply of a call's outcome, typed `content_type`, with a fresh request id.
pub fn response(
    result: &Result<Value, AwsError>,
    content_type: &'static str,
    query: Option<&QuerySupport>,
) -> Response {
    match result {
        Ok(v) => crate::reply(
            StatusCode::OK,
            content_type,
            serde_json::to_vec(v).unwrap_or_default(),
            &crate::new_request_id(),
        ),
        Err(e) => {
            let mut resp = crate::reply(
                status_of(e),
                content_type,
                e.body(),
                &crate::new_request_id(),
            );
            query_error_header(&mut resp, query, e);
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_split() {
        assert_eq!(
            split_target("AmazonEC2ContainerServiceV20141113.RunTask"),
            Some(("AmazonEC2ContainerServiceV20141113", "RunTask"))
        );
        assert_eq!(split_target("nodot"), None);
        assert_eq!(split_target(".Op"), None);
        assert_eq!(split_target("Prefix."), None);
    }

    #[test]
    fn errors_carry_type_status_and_request_id() {
        let e = AwsError::client("ClusterNotFoundException", "Cluster not found.");
        let r = response(&Err(e), CONTENT_TYPE, None);
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()["content-type"], CONTENT_TYPE);
        assert_eq!(r.headers()["x-amzn-requestid"].len(), 36);
        assert!(r.headers().get("x-amzn-query-error").is_none());
        let r = response(&Err(AwsError::server("x")), CONTENT_TYPE, None);
        assert_eq!(r.status(), 500);
    }
}
