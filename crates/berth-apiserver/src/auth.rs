//! Who may call `berth server`: the layers every request goes through (DESIGN §2, berth-iam;
//! the signature maths is `berth_iam::sigv4`'s).
//!
//! - [`sigv4`]: every AWS API route (`POST /` for ECS, ECR, CloudWatch Logs, Application Auto
//!   Scaling and CloudWatch awsJson/query, and CloudWatch's rpcv2Cbor paths) needs a valid
//!   SigV4 signature by one of the account's access keys; refusals are worded in the request's
//!   protocol (see [`berth_iam::error`]). The body is read once (at most 2 MiB, as the API
//!   handlers take) and hashed once. `/_berth/usage` (the console's and `berth usage`'s
//!   metering report) goes through it too.
//! - [`host_check`]: every request's `Host` must name this server (see [`Hosts`]); anything
//!   else gets 421 and nothing, so a page on another name that rebinds its DNS to berth's
//!   address (DNS rebinding) reads nothing from `/`, `/v2/`, the console or `/metrics`.
//! - [`metrics_auth`]: `/metrics` wants `Authorization: Bearer <token>` when
//!   `<data-dir>/metrics-token` exists, and otherwise answers only loopback peers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
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
    /// The names the server answers to.
    pub hosts: Hosts,
    /// The bearer token `/metrics` wants (`<data-dir>/metrics-token`); `None`: loopback only.
    pub metrics_token: Option<String>,
}

/// The `Host` values berth answers: `localhost` and any IP literal (a DNS-rebinding page can
/// only reach berth through a name it controls, never through an IP literal) with the listen
/// port (no port only when it is 80), and each `--hostname` (`name` with any port, `name:port`
/// with that one). Case and a trailing dot do not matter.
#[derive(Debug, Clone)]
pub struct Hosts {
    port: u16,
    names: Vec<(String, Option<u16>)>,
}

/// Splits `host[:port]` (IPv6 in brackets); `None` when malformed.
fn split_host(h: &str) -> Option<(String, Option<u16>)> {
    let h = h.trim().to_ascii_lowercase();
    let (name, port) = if let Some(rest) = h.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        (format!("[{inner}]"), port)
    } else {
        match h.rsplit_once(':') {
            Some((n, p)) => (n.to_string(), Some(p.parse().ok()?)),
            None => (h.clone(), None),
        }
    };
    let name = name.trim_end_matches('.').to_string();
    (!name.is_empty()).then_some((name, port))
}

impl Hosts {
    /// The names of a server listening on `port`, plus the `--hostname` values.
    pub fn new(port: u16, extra: &[String]) -> Hosts {
        Hosts {
            port,
            names: extra.iter().filter_map(|h| split_host(h)).collect(),
        }
    }

    /// Whether a request with this `Host` header value is for this server.
    pub fn allows(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        let literal = name.parse::<IpAddr>().is_ok()
            || name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok());
        let own_port = port.unwrap_or(80) == self.port;
        if (literal || name == "localhost") && own_port {
            return true;
        }
        self.names.iter().any(|(n, p)| {
            *n == name && p.is_none_or(|p| Some(p) == port || (port.is_none() && p == 80))
        })
    }
}

/// Middleware of every route: 421 Misdirected Request (empty body) unless `Host` names this
/// server.
pub async fn host_check(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    if auth.hosts.allows(host) {
        return next.run(req).await;
    }
    tracing::debug!(host, path = %req.uri().path(), "refused: Host is not one of this server's names");
    StatusCode::MISDIRECTED_REQUEST.into_response()
}

/// Middleware of `/metrics`: with a token configured, `Authorization: Bearer <token>` (compared
/// in constant time); without, loopback peers only. Refusals are 401 with a `Bearer` challenge
/// or 403.
pub async fn metrics_auth(
    State(auth): State<Arc<Auth>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let allowed = match &auth.metrics_token {
        Some(token) => req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| {
                given.len() == token.len()
                    && given
                        .bytes()
                        .zip(token.bytes())
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0
            }),
        None => {
            peer.ip().is_loopback()
                || matches!(peer.ip(), IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
        }
    };
    if allowed {
        return next.run(req).await;
    }
    if auth.metrics_token.is_some() {
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        r.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Bearer realm=\"berth-metrics\""),
        );
        return r;
    }
    (
        StatusCode::FORBIDDEN,
        "/metrics answers loopback only; write a token to <data-dir>/metrics-token to scrape it remotely\n",
    )
        .into_response()
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
        (Protocol::AwsJson, crate::json::CONTENT_TYPE)
    }
}

/// A refusal in `protocol`'s error shape, with `x-amzn-RequestId` and `x-amzn-ErrorType`.
pub fn refusal(e: &AuthError, protocol: Protocol, content_type: &'static str) -> Response {
    let rid = crate::new_request_id();
    let (code, message) = (e.code(protocol), e.message(protocol));
    let body = match protocol {
        Protocol::AwsJson => {
            serde_json::to_vec(&serde_json::json!({"__type": code, "message": message}))
                .unwrap_or_default()
        }
        Protocol::RpcV2Cbor => crate::cbor::encode(
            &serde_json::json!({"__type": code, "message": message}),
            &[],
        ),
        Protocol::Query => format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>",
            crate::query::xml_escape(&message)
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

/// The credential scope of a SigV4 `Authorization` header:
/// `AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/<service>/aws4_request, ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialScope {
    /// The access key id.
    pub access_key: String,
    /// `YYYYMMDD`.
    pub date: String,
    /// The region (`us-east-1`).
    pub region: String,
    /// The signing name of the service (`ecs`, `monitoring`).
    pub service: String,
}

/// Extracts the credential scope from an `Authorization` header value (the signature is not
/// checked here); `None` when the header is not SigV4.
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
    fn scope_of_an_authorization_header() {
        let h = "AWS4-HMAC-SHA256 Credential=AKID/20261124/eu-west-1/ecs/aws4_request, SignedHeaders=host, Signature=x";
        let s = credential_scope(h).unwrap();
        assert_eq!(
            (s.access_key.as_str(), s.region.as_str(), s.service.as_str()),
            ("AKID", "eu-west-1", "ecs")
        );
        assert_eq!(credential_scope("Basic QQ=="), None);
    }
}

#[cfg(test)]
mod host_tests {
    use super::*;

    #[test]
    fn host_names() {
        let h = Hosts::new(5150, &["berth.example".into(), "ci.local:8443".into()]);
        for ok in [
            "127.0.0.1:5150",
            "localhost:5150",
            "LOCALHOST:5150",
            "[::1]:5150",
            "10.1.2.3:5150",
            "berth.example",
            "berth.example:5150",
            "berth.example.:443",
            "ci.local:8443",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:5150",
            "evil.example",
            "127.0.0.1:80",
            "localhost",
            "ci.local:5150",
            "",
            "127.0.0.1:5150:1",
            "[::1",
            "localhost.evil.example:5150",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
        assert!(Hosts::new(80, &[]).allows("localhost"));
    }
}
