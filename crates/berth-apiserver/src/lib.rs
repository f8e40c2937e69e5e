//! berth-apiserver: the HTTP front of every AWS API berth serves (DESIGN §2).
//!
//! - Routing and protocol negotiation: `POST /` with `X-Amz-Target` is awsJson ([`json`]),
//!   `POST /` with a form body is the query protocol ([`query`]), `POST
//!   /service/<prefix>/operation/<Op>` is smithy-rpc-v2-cbor ([`cbor`]). The service is found by
//!   target prefix, by path, or (query) by the request's SigV4 signing name.
//! - Services plug in by implementing [`AwsService`] (one module each, with a typed operation
//!   enum from `berth_api::operation`) and one [`ApiServer::service`] line.
//! - SigV4 verification and the caller's identity, the `Host` check and `/metrics` access
//!   ([`auth`]); `Connection: close` after unread bodies ([`body_drain`]); answers for services
//!   berth lacks ([`unimplemented`]); request ids (`x-amzn-requestid`, [`new_request_id`]);
//!   the per-service error tables ([`error`]); a hook that sees every call's outcome
//!   ([`ApiServer::on_call`], for metrics).

pub mod auth;
pub mod body_drain;
pub mod cbor;
pub mod error;
pub mod json;
pub mod query;
pub mod service;
pub mod unimplemented;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
pub use berth_api::operation::Operation;
pub use berth_api::proto::AwsError;
use serde_json::{json, Value};

pub use crate::error::{ApiError, ErrorKind, ErrorTable};
use crate::service::DynService;
pub use crate::service::{AwsService, Input, JsonVersion, QuerySupport};

/// A fresh request id (a UUID v4), as `x-amzn-requestid` and the query protocol's
/// `<RequestId>` carry it.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A reply with `status`, `Content-Type: content_type`, `body` and `x-amzn-requestid: rid`.
pub fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
    rid: &str,
) -> Response {
    let mut resp = (status, body.into()).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(rid) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

/// What the front calls after every operation: `(service metrics label, operation name as
/// sent, the error if it failed, time taken)`. berth records its API metrics with it.
pub type CallHook = fn(&str, &str, Option<&AwsError>, Duration);

/// The set of AWS services the front serves; [`ApiServer::router`] makes it an axum router.
#[derive(Default)]
pub struct ApiServer {
    services: Vec<Arc<dyn DynService>>,
    on_call: Option<CallHook>,
}

impl ApiServer {
    /// A front serving no service yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `service`. A target prefix registered twice is served by the first.
    pub fn service(mut self, service: impl AwsService) -> Self {
        self.services.push(Arc::new(service));
        self
    }

    /// Sets the hook called after every operation (see [`CallHook`]).
    pub fn on_call(mut self, hook: CallHook) -> Self {
        self.on_call = Some(hook);
        self
    }

    /// The AWS API routes: `POST /` (awsJson and query) and `POST
    /// /service/<prefix>/operation/{op}` for each rpcv2Cbor service. Unauthenticated: put
    /// [`auth::sigv4`] in front (see [`ApiServer::signed_router`]).
    pub fn router(self) -> Router {
        let front = Arc::new(self);
        let mut r = Router::new()
            .route("/", post(post_root))
            .with_state(front.clone());
        for svc in front.services.iter().filter(|s| s.rpc_v2_cbor().is_some()) {
            let path = format!("/service/{}/operation/{{op}}", svc.json_target_prefix());
            let (front, svc) = (front.clone(), svc.clone());
            r = r.route(
                &path,
                post(move |Path(op): Path<String>, body: Bytes| async move {
                    front.cbor(svc.as_ref(), &op, &body).await
                }),
            );
        }
        r
    }

    /// [`ApiServer::router`] behind the SigV4 layer of `auth`.
    pub fn signed_router(self, auth: Arc<auth::Auth>) -> Router {
        self.router()
            .route_layer(axum::middleware::from_fn_with_state(auth, auth::sigv4))
    }

    fn by_prefix(&self, prefix: &str) -> Option<&dyn DynService> {
        self.services
            .iter()
            .find(|s| s.json_target_prefix() == prefix)
            .map(|s| s.as_ref())
    }

    /// The service answering the query protocol for signing name `signing` (any query service
    /// for an unsigned request).
    fn by_query_signing_name(&self, signing: Option<&str>) -> Option<&dyn DynService> {
        self.services
            .iter()
            .filter(|s| s.query().is_some())
            .find(|s| signing.is_none_or(|n| n == s.signing_name()))
            .map(|s| s.as_ref())
    }

    /// Runs operation `op` of `svc` on `input`, logs a failure and calls the hook.
    async fn run(
        &self,
        svc: &dyn DynService,
        op: &str,
        input: Result<Input<'_>, AwsError>,
    ) -> Result<Value, AwsError> {
        let started = Instant::now();
        let result = match input {
            Ok(input) => svc.call_named(op, input).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            tracing::debug!(service = svc.json_target_prefix(), operation = op, error = %e, "request failed");
        }
        if let Some(hook) = self.on_call {
            hook(
                svc.metrics_label(),
                op,
                result.as_ref().err(),
                started.elapsed(),
            );
        }
        result
    }

    /// smithy-rpc-v2-cbor: CBOR in, CBOR out, `smithy-protocol: rpc-v2-cbor`.
    async fn cbor(&self, svc: &dyn DynService, op: &str, body: &[u8]) -> Response {
        const CT: &str = "application/cbor";
        let input = cbor::decode(body)
            .map(Input::Document)
            .map_err(|e| AwsError::serialization(e.to_string()));
        let result = self.run(svc, op, input).await;
        let rid = new_request_id();
        let mut resp = match &result {
            Ok(v) => reply(
                StatusCode::OK,
                CT,
                cbor::encode(v, svc.timestamp_members()),
                &rid,
            ),
            Err(e) => {
                let ns = svc.rpc_v2_cbor().unwrap_or_default();
                let body =
                    json!({"__type": format!("{ns}#{}", e.error_type), "message": e.message});
                let mut r = reply(json::status_of(e), CT, cbor::encode(&body, &[]), &rid);
                json::query_error_header(&mut r, svc.query(), e);
                r
            }
        };
        resp.headers_mut()
            .insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
        resp
    }

    /// The query protocol for `svc`: form parameters in, XML out.
    async fn query(&self, svc: &dyn DynService, q: &QuerySupport, body: &[u8]) -> Response {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let op = pairs
            .iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let input = Input::Document(query::query_to_json(&pairs));
        let result = self.run(svc, &op, Ok(input)).await;
        query::response(q, &op, svc.timestamp_members(), &result, &new_request_id())
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `POST /`: awsJson dispatched on the `X-Amz-Target` prefix, or the query protocol.
async fn post_root(
    State(front): State<Arc<ApiServer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = header(&headers, "x-amz-target").unwrap_or("");
    let content_type = header(&headers, "content-type");
    let Some((prefix, op)) = json::split_target(target) else {
        if content_type.is_some_and(|v| v.starts_with("application/x-www-form-urlencoded")) {
            // The query protocol (`Action=...`): a service of ours that speaks it (CloudWatch,
            // signing name `monitoring`), or one berth does not have yet (EC2, IAM, STS, ...).
            let signing = unimplemented::signing_service(&headers, None, &body);
            let svc = front.by_query_signing_name(signing.as_deref());
            if let Some((svc, q)) = svc.and_then(|s| Some((s, s.query()?))) {
                return front.query(svc, q, &body).await;
            }
            let action = form_urlencoded::parse(&body)
                .find(|(k, _)| k == "Action")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            return unimplemented::query_response(signing.as_deref().unwrap_or(""), &action);
        }
        return json::response(
            &Err(AwsError::client(
                "UnknownOperationException",
                "berth expects an X-Amz-Target header (awsJson) or an Action parameter (query protocol).",
            )),
            json::CONTENT_TYPE,
            None,
        );
    };
    let Some(svc) = front.by_prefix(prefix) else {
        return unimplemented::json_unknown_service(prefix, op, content_type);
    };
    let result = front.run(svc, op, Ok(Input::Json(&body))).await;
    json::response(&result, svc.json_version().content_type(), svc.query())
}

/// The layers around every route of the server (AWS APIs, registry, console, agent API): the
/// [`unimplemented::fallback`] for unrouted paths, the `Host` check ([`auth::host_check`]) and
/// `Connection: close` after unread bodies ([`body_drain::close_if_body_unread`]).
pub fn outer_layers(app: Router, auth: Arc<auth::Auth>) -> Router {
    app.fallback(unimplemented::fallback)
        .layer(axum::middleware::from_fn_with_state(auth, auth::host_check))
        .layer(axum::middleware::from_fn(body_drain::close_if_body_unread))
}

#[cfg(test)]
mod tests;
