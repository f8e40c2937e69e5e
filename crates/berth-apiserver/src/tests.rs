//! The front's routing and protocol negotiation, over a fake service.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::Request;
use berth_api::operation::CloudWatchOperation;
use tower::ServiceExt;

use super::*;

static ERRORS: ErrorTable = ErrorTable {
    rows: &[],
    defaults: &[(
        ErrorKind::InvalidArgument,
        "InvalidParameterValueException",
        400,
    )],
};

static QUERY: QuerySupport = QuerySupport {
    xmlns: "urn:test",
    error_codes: &[("InvalidParameterValueException", "InvalidParameterValue")],
    map_members: &[],
};

/// Answers `ListMetrics` with the input echoed and a timestamp; fails `DeleteAlarms`.
struct Fake;

impl AwsService for Fake {
    type Operation = CloudWatchOperation;
    fn signing_name(&self) -> &'static str {
        "monitoring"
    }
    fn json_target_prefix(&self) -> &'static str {
        "GraniteServiceVersion20100801"
    }
    fn json_version(&self) -> JsonVersion {
        JsonVersion::V1_0
    }
    fn metrics_label(&self) -> &'static str {
        "fake"
    }
    fn rpc_v2_cbor(&self) -> Option<&'static str> {
        Some("com.amazonaws.cloudwatch")
    }
    fn query(&self) -> Option<&'static QuerySupport> {
        Some(&QUERY)
    }
    fn timestamp_members(&self) -> &'static [&'static str] {
        &["Timestamp"]
    }
    fn errors(&self) -> &'static ErrorTable {
        &ERRORS
    }
    async fn call(&self, op: CloudWatchOperation, input: Input<'_>) -> Result<Value, AwsError> {
        let v: Value = input.parse()?;
        match op {
            CloudWatchOperation::ListMetrics => Ok(json!({"In": v, "Timestamp": 0})),
            _ => Err(ERRORS.error(ErrorKind::InvalidArgument, None, "no")),
        }
    }
}

static CALLS: AtomicUsize = AtomicUsize::new(0);

fn count(service: &str, _op: &str, _e: Option<&AwsError>, _t: Duration) {
    assert_eq!(service, "fake");
    CALLS.fetch_add(1, Ordering::SeqCst);
}

async fn send(headers: &[(&str, &str)], path: &str, body: Vec<u8>) -> (Response, Vec<u8>) {
    let app = ApiServer::new().service(Fake).on_call(count).router();
    let mut req = Request::post(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
    (Response::from_parts(parts, Body::empty()), bytes)
}

fn json_target(op: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "x-amz-target",
            format!("GraniteServiceVersion20100801.{op}"),
        ),
        ("content-type", "application/x-amz-json-1.0".into()),
    ]
}

#[tokio::test]
async fn aws_json_dispatch_and_errors() {
    let h = json_target("ListMetrics");
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (r, body) = send(&h, "/", br#"{"a":1}"#.to_vec()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-amz-json-1.0");
    assert_eq!(r.headers()["x-amzn-requestid"].len(), 36);
    assert_eq!(body, br#"{"In":{"a":1},"Timestamp":0}"#);

    let h = json_target("DeleteAlarms");
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (r, body) = send(&h, "/", b"{}".to_vec()).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.headers()["x-amzn-query-error"],
        "InvalidParameterValue;Sender"
    );
    assert_eq!(
        body,
        br#"{"__type":"InvalidParameterValueException","message":"no"}"#
    );

    // An operation the service lacks never reaches it, and is still counted.
    let before = CALLS.load(Ordering::SeqCst);
    let h = json_target("Frobnicate");
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (r, body) = send(&h, "/", b"{}".to_vec()).await;
    assert_eq!(r.status(), 400);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["__type"], "UnknownOperationException");
    assert!(CALLS.load(Ordering::SeqCst) > before);

    // A prefix nobody registered: the unimplemented-service answer.
    let (r, body) = send(
        &[("x-amz-target", "AmazonSSM.GetParameter")],
        "/",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/x-amz-json-1.1");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["__type"], "UnknownOperationException");
    assert!(
        v["message"].as_str().unwrap().contains("Systems Manager"),
        "{v}"
    );

    // Neither a target nor a form.
    let (r, body) = send(&[], "/", b"{}".to_vec()).await;
    assert_eq!(r.status(), 400);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["__type"], "UnknownOperationException");
}

#[tokio::test]
async fn query_protocol_by_signing_name() {
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (r, body) = send(
        &form,
        "/",
        b"Action=ListMetrics&Version=2010-08-01&A.member.1=x".to_vec(),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/xml");
    let rid = r.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_string();
    let text = String::from_utf8(body).unwrap();
    assert_eq!(
        text,
        format!("<ListMetricsResponse xmlns=\"urn:test\"><ListMetricsResult><In><A><member>x</member></A></In><Timestamp>1970-01-01T00:00:00.000Z</Timestamp></ListMetricsResult><ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></ListMetricsResponse>")
    );

    let (r, body) = send(&form, "/", b"Action=DescribeAnomalyDetectors".to_vec()).await;
    assert_eq!(r.status(), 400);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("<Code>InvalidAction</Code>"), "{text}");

    // Signed for a service berth lacks: InvalidAction naming it.
    let auth = "AWS4-HMAC-SHA256 Credential=AKID/20261202/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=00";
    let (r, body) = send(
        &[form[0], ("authorization", auth)],
        "/",
        b"Action=ListRoles".to_vec(),
    )
    .await;
    assert_eq!(r.status(), 400);
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("AWS IAM") && text.contains("ListRoles"),
        "{text}"
    );
}

#[tokio::test]
async fn rpc_v2_cbor_route() {
    let path = "/service/GraniteServiceVersion20100801/operation/ListMetrics";
    let (r, body) = send(&[], path, cbor::encode(&json!({"a": 1}), &[])).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["smithy-protocol"], "rpc-v2-cbor");
    assert_eq!(r.headers()["content-type"], "application/cbor");
    // The timestamp member is tagged (tag 1 = 0xc1).
    assert!(body.windows(2).any(|w| w == [0xc1, 0x00]), "{body:?}");
    assert_eq!(
        cbor::decode(&body).unwrap(),
        json!({"In": {"a": 1}, "Timestamp": 0})
    );

    let path = "/service/GraniteServiceVersion20100801/operation/DeleteAlarms";
    let (r, body) = send(&[], path, Vec::new()).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.headers()["x-amzn-query-error"],
        "InvalidParameterValue;Sender"
    );
    assert_eq!(
        cbor::decode(&body).unwrap(),
        json!({"__type": "com.amazonaws.cloudwatch#InvalidParameterValueException", "message": "no"})
    );

    let (r, body) = send(&[], path, vec![0xff]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        cbor::decode(&body).unwrap()["__type"],
        "com.amazonaws.cloudwatch#SerializationException"
    );
}
