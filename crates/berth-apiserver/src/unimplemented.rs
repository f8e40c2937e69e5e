//! Answers for AWS services and operations berth does not implement yet, each in the calling
//! service's own protocol and error shape, naming the service and the operation, so that a user
//! reading an SDK's or Terraform's output knows exactly what berth lacks:
//! - EC2 protocol (`ec2`): HTTP 400, `<Response><Errors><Error><Code>InvalidAction</Code>...`;
//! - query protocol (IAM, STS, ELBv2, ...): HTTP 400, `<ErrorResponse><Error><Type>Sender</Type>
//!   <Code>InvalidAction</Code>...`;
//! - awsJson (Cloud Map, Secrets Manager, SSM, ...): HTTP 400, `UnknownOperationException`;
//! - restJson (EKS, Lambda, ...): HTTP 404 with `x-amzn-ErrorType: UnknownOperationException`
//!   and a JSON `message`.
//!
//! The service is the SigV4 signing name of the request's credential scope (`Authorization`
//! header or the presigned `X-Amz-Credential`), or the awsJson target prefix.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::query::xml_escape;

/// The service's full name for a SigV4 signing name or an awsJson target prefix (botocore's
/// `serviceFullName`); the name itself when unknown.
pub fn service_name(id: &str) -> &str {
    match id {
        "ec2" => "Amazon EC2",
        "iam" => "AWS IAM",
        "sts" => "AWS STS",
        "elasticloadbalancing" => "Elastic Load Balancing",
        "servicediscovery" | "Route53AutoNaming_v20170314" => "AWS Cloud Map",
        "secretsmanager" => "AWS Secrets Manager",
        "ssm" | "AmazonSSM" => "AWS Systems Manager",
        "eks" => "Amazon EKS",
        "lambda" => "AWS Lambda",
        "s3" => "Amazon S3",
        "route53" => "Amazon Route 53",
        "kms" | "TrentService" => "AWS KMS",
        "dynamodb" | "DynamoDB_20120810" => "Amazon DynamoDB",
        "sqs" | "AmazonSQS" => "Amazon SQS",
        "sns" => "Amazon SNS",
        "events" | "AWSEvents" => "Amazon EventBridge",
        "cloudformation" => "AWS CloudFormation",
        "acm" | "CertificateManager" => "AWS Certificate Manager",
        other => other,
    }
}

/// The SigV4 signing name (service) of a request, from its `Authorization` header or, for a
/// presigned request, from `X-Amz-Credential` in the query string or form body.
pub fn signing_service(headers: &HeaderMap, query: Option<&str>, form: &[u8]) -> Option<String> {
    if let Some(scope) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::credential_scope)
    {
        return Some(scope.service);
    }
    let from_pairs = |pairs: form_urlencoded::Parse<'_>| {
        pairs
            .into_iter()
            .find(|(k, _)| k == "X-Amz-Credential")
            .and_then(|(_, v)| v.split('/').nth(3).map(str::to_string))
    };
    query
        .and_then(|q| from_pairs(form_urlencoded::parse(q.as_bytes())))
        .or_else(|| from_pairs(form_urlencoded::parse(form)))
}

fn with_headers(status: StatusCode, content_type: &'static str, body: String) -> Response {
    crate::reply(status, content_type, body, &crate::new_request_id())
}

/// A query-protocol (or EC2-protocol) request for `action` of signing service `service`:
/// `InvalidAction` in that protocol's XML error shape.
pub fn query_response(service: &str, action: &str) -> Response {
    let rid = crate::new_request_id();
    let message = xml_escape(&format!(
        "berth does not implement {} ({service}) yet: the action {action} is not valid for this web service.",
        service_name(service)
    ));
    let body = if service == "ec2" {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>InvalidAction</Code><Message>{message}</Message></Error></Errors><RequestID>{rid}</RequestID></Response>"
        )
    } else {
        format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidAction</Code><Message>{message}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>"
        )
    };
    with_headers(StatusCode::BAD_REQUEST, "text/xml", body)
}

/// An awsJson request for a target prefix berth does not serve: `UnknownOperationException`
/// naming the service and the operation.
pub fn json_unknown_service(prefix: &str, op: &str, content_type: Option<&str>) -> Response {
    let body = serde_json::json!({
        "__type": "UnknownOperationException",
        "message": format!(
            "berth does not implement {} ({prefix}) yet: operation {op}.",
            service_name(prefix)
        ),
    });
    let ct = match content_type {
        Some(c) if c.starts_with("application/x-amz-json-1.0") => "application/x-amz-json-1.0",
        _ => "application/x-amz-json-1.1",
    };
    with_headers(StatusCode::BAD_REQUEST, ct, body.to_string())
}

/// Router fallback: a signed request to a path berth does not route (a restJson service such
/// as EKS) gets a 404 in restJson's error shape naming the service, method and path; anything
/// else gets a plain 404.
pub async fn fallback(req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let Some(service) = signing_service(&parts.headers, parts.uri.query(), b"") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let body = serde_json::json!({
        "message": format!(
            "berth does not implement {} ({service}) yet: {} {}.",
            service_name(&service),
            parts.method,
            parts.uri.path()
        ),
    });
    let mut resp = with_headers(StatusCode::NOT_FOUND, "application/json", body.to_string());
    resp.headers_mut().insert(
        "x-amzn-errortype",
        HeaderValue::from_static("UnknownOperationException"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_service_from_header_and_presigned_forms() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKID/20261202/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=00",
            ),
        );
        assert_eq!(signing_service(&h, None, b"").as_deref(), Some("ec2"));
        let q = "Action=GetCallerIdentity&X-Amz-Credential=AKID%2F20261202%2Fus-east-1%2Fsts%2Faws4_request";
        assert_eq!(
            signing_service(&HeaderMap::new(), Some(q), b"").as_deref(),
            Some("sts")
        );
        assert_eq!(
            signing_service(&HeaderMap::new(), None, q.as_bytes()).as_deref(),
            Some("sts")
        );
        assert_eq!(signing_service(&HeaderMap::new(), None, b"Action=X"), None);
    }
}
