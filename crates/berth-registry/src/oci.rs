//! The OCI Distribution Spec v1.1 HTTP API (`/v2/...`) and its error table.
//!
//! Endpoints (spec.md "Endpoints"): `GET /v2/`; blobs `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`
//! (single `Range: bytes=a-b` supported); uploads `POST /v2/<name>/blobs/uploads/` (also
//! `?digest=` monolithic and `?mount=&from=` cross-repository mount), `PATCH|PUT|GET|DELETE
//! /v2/<name>/blobs/uploads/<id>`; manifests `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<ref>`;
//! `GET /v2/<name>/tags/list[?n=&last=]`; `GET /v2/<name>/referrers/<digest>[?artifactType=]`.
//! Repository names contain slashes, so everything under `/v2/` is one catch-all route whose
//! tail is parsed here. Errors are `{"errors":[{"code","message","detail"}]}`; every response
//! carries `Docker-Distribution-Api-Version: registry/2.0`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::digest::Digest;
use crate::images::Reference;
use crate::manifests::{self, OCI_INDEX};
use crate::names::valid_repository_name;
use crate::{Registry, RegistryError};

/// The OCI status and error code for each [`RegistryError`] kind (the one OCI table).
pub fn status_and_code(e: &RegistryError) -> (StatusCode, &'static str) {
    use RegistryError::*;
    match e {
        NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
        NameUnknown(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
        RepositoryAlreadyExists(_) | RepositoryNotEmpty(_) => (StatusCode::CONFLICT, "DENIED"),
        DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        BlobUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
        UploadUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
        UploadInvalid(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
        RangeInvalid(_) => (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
        ManifestInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
        ManifestBlobUnknown(_) => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
        ManifestUnknown(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID"),
        TagInvalid(_) | TagImmutable(_) => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
        ReferencedImagesUnknown(_) | LayersNotFound(_) => {
            (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN")
        }
        InvalidLayerPart(_) => (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
        InvalidLayer(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        EmptyUpload(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
        ImageAlreadyExists(_) | LayerAlreadyExists(_) => (StatusCode::CONFLICT, "DENIED"),
        LifecyclePolicyNotFound(_) | LifecyclePreviewNotFound(_) | RepositoryPolicyNotFound(_) => {
            (StatusCode::NOT_FOUND, "UNSUPPORTED")
        }
        Unauthorized(_) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        UnsupportedImageType(_) | ScanNotFound(_) => (StatusCode::BAD_REQUEST, "UNSUPPORTED"),
        InvalidParameter(_) | InvalidTagParameter(_) | TooManyTags(_) => {
            (StatusCode::BAD_REQUEST, "UNSUPPORTED")
        }
        Store(_) | Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
    }
}

fn message(code: &str) -> &'static str {
    match code {
        "NAME_INVALID" => "invalid repository name",
        "NAME_UNKNOWN" => "repository name not known to registry",
        "DIGEST_INVALID" => "provided digest did not match uploaded content",
        "BLOB_UNKNOWN" => "blob unknown to registry",
        "BLOB_UPLOAD_UNKNOWN" => "blob upload unknown to registry",
        "BLOB_UPLOAD_INVALID" => "blob upload invalid",
        "MANIFEST_INVALID" => "manifest invalid",
        "MANIFEST_BLOB_UNKNOWN" => "manifest references a manifest or blob unknown to registry",
        "MANIFEST_UNKNOWN" => "manifest unknown to registry",
        "SIZE_INVALID" => "provided length did not match content length",
        "TAG_INVALID" => "manifest tag did not match URI or is immutable",
        "UNAUTHORIZED" => "authentication required",
        "DENIED" => "requested access to the resource is denied",
        "UNSUPPORTED" => "the operation is unsupported",
        _ => "unknown error",
    }
}

/// The OCI error response for `e`.
pub fn error_response(e: &RegistryError) -> Response {
    let (status, code) = status_and_code(e);
    if status.is_server_error() {
        tracing::warn!(error = %e, "registry request failed");
    }
    let body =
        json!({"errors": [{"code": code, "message": message(code), "detail": e.to_string()}]});
    let mut resp = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"berth\""),
        );
    }
    resp
}

pub(crate) fn router(reg: Arc<Registry>) -> Router {
    Router::new()
        .route("/v2", any(serve))
        .route("/v2/", any(serve))
        .route("/v2/{*rest}", any(serve))
        .with_state(reg)
}

async fn serve(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let mut resp = match handle(&reg, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    resp.headers_mut().insert(
        "Docker-Distribution-Api-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

/// What a `/v2/<tail>` path addresses.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Base,
    Blob(String, String),
    Uploads(String),
    Upload(String, String),
    Manifest(String, String),
    Tags(String),
    Referrers(String, String),
}

fn parse_route(tail: &str) -> Option<Route> {
    if tail.is_empty() {
        return Some(Route::Base);
    }
    let two = |(a, b): (&str, &str)| (a.to_string(), b.to_string());
    if let Some(name) = tail.strip_suffix("/tags/list") {
        return Some(Route::Tags(name.to_string()));
    }
    if let Some(name) = tail
        .strip_suffix("/blobs/uploads/")
        .or_else(|| tail.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::Uploads(name.to_string()));
    }
    for (sep, make) in [
        (
            "/blobs/uploads/",
            Route::Upload as fn(String, String) -> Route,
        ),
        ("/manifests/", Route::Manifest),
        ("/referrers/", Route::Referrers),
        ("/blobs/", Route::Blob),
    ] {
        if let Some((name, rest)) = tail.rsplit_once(sep) {
            if !rest.is_empty() && !rest.contains('/') {
                let (n, r) = two((name, rest));
                return Some(make(n, r));
            }
        }
    }
    None
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(uri: &Uri) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

fn param<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn empty(status: StatusCode, headers: &[(&str, String)]) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    for (k, v) in headers {
        if let Ok(name) = header::HeaderName::from_bytes(k.as_bytes()) {
            h.insert(name, hv(v));
        }
    }
    resp
}

fn range_header(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

async fn handle(reg: &Registry, req: Request) -> Result<Response, RegistryError> {
    let now = crate::auth::now_secs();
    let authenticated = match req.headers().get(header::AUTHORIZATION) {
        Some(v) if reg.auth.verify_header(v.to_str().unwrap_or(""), now) => true,
        Some(_) => {
            return Err(RegistryError::Unauthorized(
                "invalid or expired token".into(),
            ))
        }
        None => false,
    };
    let path = percent_decode(req.uri().path());
    let tail = path.strip_prefix("/v2").unwrap_or("");
    let tail = tail.strip_prefix('/').unwrap_or(tail);
    let route = parse_route(tail)
        .ok_or_else(|| RegistryError::NameInvalid(format!("no such endpoint: {path}")))?;
    let method = req.method().clone();
    let head = method == Method::HEAD;
    if reg.auth_required && !authenticated {
        // A blob read may carry the token in the URL (GetDownloadUrlForLayer).
        let token = param(&query(req.uri()), "token")
            .map(str::to_string)
            .filter(|t| reg.auth.verify(t, now));
        let blob_read = matches!(route, Route::Blob(..)) && (method == Method::GET || head);
        if !(blob_read && token.is_some()) {
            return Err(RegistryError::Unauthorized(
                "authentication required: log in with the password of `aws ecr get-login-password`"
                    .into(),
            ));
        }
    }
    if route == Route::Base {
        return match method {
            Method::GET | Method::HEAD => {
                let mut r = (StatusCode::OK, axum::Json(json!({}))).into_response();
                if head {
                    *r.body_mut() = Body::empty();
                    r.headers_mut()
                        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
                }
                Ok(r)
            }
            _ => Ok(unsupported()),
        };
    }
    let name = match &route {
        Route::Blob(n, _)
        | Route::Uploads(n)
        | Route::Upload(n, _)
        | Route::Manifest(n, _)
        | Route::Tags(n)
        | Route::Referrers(n, _) => n.clone(),
        Route::Base => unreachable!(),
    };
    if !valid_repository_name(&name) {
        return Err(RegistryError::NameInvalid(name));
    }
    reg.records().repository(&name).await?;
    let uri = req.uri().clone();
    let q = query(&uri);
    let headers = req.headers().clone();
    let body = req.into_body();
    match (route, method) {
        (Route::Blob(_, d), Method::GET | Method::HEAD) => {
            get_blob(reg, &name, &d, head, &headers).await
        }
        (Route::Blob(_, d), Method::DELETE) => {
            let d = Digest::parse(&d)?;
            reg.records()
                .blob_link(&name, &d)
                .await?
                .ok_or_else(|| RegistryError::BlobUnknown(d.to_string()))?;
            reg.store
                .commit(vec![berth_store::Op::delete(
                    crate::records::KIND_BLOB,
                    &crate::records::digest_key(&name, &d),
                    berth_store::Expect::Any,
                )])
                .await?;
            Ok(empty(StatusCode::ACCEPTED, &[]))
        }
        (Route::Uploads(_), Method::POST) => start_upload(reg, &name, &q, body).await,
        (Route::Upload(_, id), Method::PATCH) => {
            let range = match headers.get(header::CONTENT_RANGE) {
                Some(v) => Some(parse_content_range(v.to_str().unwrap_or(""))?),
                None => None,
            };
            let mut lease = reg.uploads.lease(&id, &name).await?;
            let size = lease.append(range, body).await?;
            Ok(upload_status(StatusCode::ACCEPTED, &name, &id, size))
        }
        (Route::Upload(_, id), Method::PUT) => {
            let d = Digest::parse(param(&q, "digest").unwrap_or(""))?;
            let range = match headers.get(header::CONTENT_RANGE) {
                Some(v) => Some(parse_content_range(v.to_str().unwrap_or(""))?),
                None => None,
            };
            let lease = reg.uploads.lease(&id, &name).await?;
            let size = lease.finish(range, &d, body, &reg.blobs).await?;
            blob_created(reg, &name, &d, size).await
        }
        (Route::Upload(_, id), Method::GET) => {
            let size = reg.uploads.size(&id, &name).await?;
            Ok(upload_status(StatusCode::NO_CONTENT, &name, &id, size))
        }
        (Route::Upload(_, id), Method::DELETE) => {
            reg.uploads.cancel(&id, &name).await?;
            Ok(empty(StatusCode::NO_CONTENT, &[]))
        }
        (Route::Manifest(_, r), Method::GET | Method::HEAD) => {
            let reference = Reference::parse(&r).map_err(|e| match e {
                RegistryError::TagInvalid(m) => RegistryError::ManifestUnknown(m),
                e => e,
            })?;
            let (image, bytes) = reg.get_manifest(&name, &reference).await?;
            let mut resp = Response::new(if head {
                Body::empty()
            } else {
                Body::from(bytes)
            });
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, hv(&image.media_type));
            h.insert(header::CONTENT_LENGTH, hv(&image.manifest_size.to_string()));
            h.insert("Docker-Content-Digest", hv(&image.digest));
            h.insert(header::ETAG, hv(&format!("\"{}\"", image.digest)));
            Ok(resp)
        }
        (Route::Manifest(_, r), Method::PUT) => {
            let reference = Reference::parse(&r)?;
            let bytes = read_limited(body, manifests::MAX_MANIFEST_BYTES).await?;
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            // end-7b: `PUT /v2/<name>/manifests/<digest>?tag=a&tag=b` tags while pushing.
            let extra_tags: Vec<String> = q
                .iter()
                .filter(|(k, _)| k == "tag")
                .map(|(_, v)| v.clone())
                .collect();
            let pushed = match &reference {
                Reference::Digest(d) if !extra_tags.is_empty() => {
                    reg.push_manifest(&name, Some(d), &extra_tags, ct, &bytes)
                        .await?
                }
                _ => reg.put_manifest(&name, &reference, ct, &bytes).await?,
            };
            let mut h = vec![
                (
                    "Location",
                    format!("/v2/{name}/manifests/{}", pushed.digest),
                ),
                ("Docker-Content-Digest", pushed.digest.to_string()),
            ];
            if let Some(s) = pushed.subject {
                h.push(("OCI-Subject", s.to_string()));
            }
            let mut resp = empty(StatusCode::CREATED, &h);
            if matches!(reference, Reference::Digest(_)) {
                for t in &extra_tags {
                    resp.headers_mut().append("OCI-Tag", hv(t));
                }
            }
            Ok(resp)
        }
        (Route::Manifest(_, r), Method::DELETE) => {
            reg.delete_manifest(&name, &Reference::parse(&r)?).await?;
            Ok(empty(StatusCode::ACCEPTED, &[]))
        }
        (Route::Tags(_), Method::GET) => tags_list(reg, &name, &q).await,
        (Route::Referrers(_, d), Method::GET) => {
            referrers(reg, &name, &d, param(&q, "artifactType")).await
        }
        _ => Ok(unsupported()),
    }
}

fn unsupported() -> Response {
    let body = json!({"errors": [{"code": "UNSUPPORTED", "message": message("UNSUPPORTED"), "detail": "method not allowed"}]});
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// `Content-Range: <start>-<end>` (inclusive; a leading `bytes` / `bytes=` is tolerated).
fn parse_content_range(v: &str) -> Result<(u64, u64), RegistryError> {
    let v = v.trim();
    let v = v
        .strip_prefix("bytes")
        .map(|r| r.trim_start_matches(['=', ' ']))
        .unwrap_or(v);
    let v = v.split('/').next().unwrap_or(v);
    let parsed = v
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)));
    match parsed {
        Some((a, b)) if b >= a => Ok((a, b)),
        _ => Err(RegistryError::RangeInvalid(format!(
            "invalid Content-Range {v:?}"
        ))),
    }
}

fn upload_status(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
    empty(
        status,
        &[
            ("Location", format!("/v2/{name}/blobs/uploads/{id}")),
            ("Range", range_header(size)),
            ("Docker-Upload-UUID", id.to_string()),
        ],
    )
}

async fn blob_created(
    reg: &Registry,
    name: &str,
    d: &Digest,
    size: u64,
) -> Result<Response, RegistryError> {
    reg.records().link_blob(name, d, size).await?;
    Ok(empty(
        StatusCode::CREATED,
        &[
            ("Location", format!("/v2/{name}/blobs/{d}")),
            ("Docker-Content-Digest", d.to_string()),
        ],
    ))
}

async fn start_upload(
    reg: &Registry,
    name: &str,
    q: &[(String, String)],
    body: Body,
) -> Result<Response, RegistryError> {
    if let Some(m) = param(q, "mount") {
        // Cross-repository mount (end-11): 201 only when `from` names a repository holding the
        // blob; otherwise (no `from`, unknown blob) a new upload session, as the spec allows.
        let from = param(q, "from").filter(|f| valid_repository_name(f));
        if let (Ok(d), Some(from)) = (Digest::parse(m), from) {
            if reg.records().blob_link(from, &d).await?.is_some() && reg.blobs.touch(&d)? {
                if let Some(size) = reg.blobs.size(&d).await? {
                    return blob_created(reg, name, &d, size).await;
                }
            }
        }
    } else if let Some(d) = param(q, "digest") {
        let d = Digest::parse(d)?;
        let id = reg.uploads.start(name).await?;
        let lease = reg.uploads.lease(&id, name).await?;
        let size = lease.finish(None, &d, body, &reg.blobs).await?;
        return blob_created(reg, name, &d, size).await;
    }
    let id = reg.uploads.start(name).await?;
    Ok(upload_status(StatusCode::ACCEPTED, name, &id, 0))
}

async fn get_blob(
    reg: &Registry,
    name: &str,
    d: &str,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    let d = Digest::parse(d)?;
    let unknown = || RegistryError::BlobUnknown(d.to_string());
    reg.records()
        .blob_link(name, &d)
        .await?
        .ok_or_else(unknown)?;
    let mut file = match tokio::fs::File::open(reg.blobs.path(&d)).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(unknown()),
        Err(e) => return Err(e.into()),
    };
    let size = file.metadata().await?.len();
    let mut status = StatusCode::OK;
    let (mut start, mut len) = (0, size);
    let mut extra = vec![("Accept-Ranges", "bytes".to_string())];
    if let Some(r) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        match parse_range(r, size) {
            Some((a, b)) => {
                status = StatusCode::PARTIAL_CONTENT;
                (start, len) = (a, b - a + 1);
                extra.push(("Content-Range", format!("bytes {a}-{b}/{size}")));
            }
            None => {
                return Ok(empty(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    &[("Content-Range", format!("bytes */{size}"))],
                ))
            }
        }
    }
    let body = if head {
        Body::empty()
    } else {
        file.seek(std::io::SeekFrom::Start(start)).await?;
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            file.take(len),
            256 * 1024,
        ))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, hv(&len.to_string()));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("Docker-Content-Digest", hv(&d.to_string()));
    h.insert(header::ETAG, hv(&format!("\"{d}\"")));
    for (k, v) in extra {
        if let Ok(k) = header::HeaderName::from_bytes(k.as_bytes()) {
            h.insert(k, hv(&v));
        }
    }
    Ok(resp)
}

/// A single `Range: bytes=a-b` / `bytes=a-` / `bytes=-n` within `size`, as inclusive bounds.
fn parse_range(v: &str, size: u64) -> Option<(u64, u64)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.saturating_sub(n), size - 1)
        }
        (a, "") => (a.parse().ok()?, size - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(size - 1)),
    };
    (a <= b && a < size).then_some((a, b))
}

async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| RegistryError::ManifestInvalid(format!("reading body: {e}")))?;
        if out.len() + chunk.len() > limit {
            return Err(RegistryError::TooLarge(format!(
                "manifest exceeds {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn tags_list(
    reg: &Registry,
    name: &str,
    q: &[(String, String)],
) -> Result<Response, RegistryError> {
    let mut tags: Vec<String> = reg
        .records()
        .tags(name)
        .await?
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    tags.sort();
    if let Some(last) = param(q, "last") {
        tags.retain(|t| t.as_str() > last);
    }
    let mut link = None;
    if let Some(n) = param(q, "n").and_then(|n| n.parse::<usize>().ok()) {
        if tags.len() > n {
            tags.truncate(n);
            if let Some(l) = tags.last() {
                link = Some(format!(
                    "</v2/{name}/tags/list?n={n}&last={l}>; rel=\"next\""
                ));
            }
        }
    }
    let mut resp = axum::Json(json!({"name": name, "tags": tags})).into_response();
    if let Some(l) = link {
        resp.headers_mut().insert(header::LINK, hv(&l));
    }
    Ok(resp)
}

async fn referrers(
    reg: &Registry,
    name: &str,
    subject: &str,
    artifact_type: Option<&str>,
) -> Result<Response, RegistryError> {
    let subject = Digest::parse(subject)?.to_string();
    let mut found = Vec::new();
    for image in reg.records().images(name).await? {
        if image.subject.as_deref() != Some(subject.as_str()) {
            continue;
        }
        if artifact_type.is_some() && image.artifact_type.as_deref() != artifact_type {
            continue;
        }
        let mut desc = json!({
            "mediaType": image.media_type,
            "digest": image.digest,
            "size": image.manifest_size,
        });
        if let Some(t) = &image.artifact_type {
            desc["artifactType"] = json!(t);
        }
        if let Ok(bytes) = reg.blobs.read(&Digest::parse(&image.digest)?).await {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                if let Some(a) = v.get("annotations") {
                    desc["annotations"] = a.clone();
                }
            }
        }
        found.push(desc);
    }
    let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found});
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
    if artifact_type.is_some() {
        resp.headers_mut().insert(
            "OCI-Filters-Applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}

#[cfg(test)]
mod tests;
