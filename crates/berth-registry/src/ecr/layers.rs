//! ECR's API-level layer push and pull: BatchCheckLayerAvailability, InitiateLayerUpload,
//! UploadLayerPart, CompleteLayerUpload, GetDownloadUrlForLayer. They share the OCI upload
//! sessions ([`crate::uploads`]) and blob store, so a layer pushed here is a blob on `/v2/`.
//!
//! - InitiateLayerUpload opens a session; `partSize` is advisory (10 MiB).
//! - UploadLayerPart takes `layerPartBlob` (base64 on the wire) for the inclusive byte range
//!   `partFirstByte..=partLastByte`, which must continue the upload exactly
//!   (`InvalidLayerPartException` otherwise, the message naming the last valid byte).
//! - CompleteLayerUpload verifies the content against `layerDigests[0]` (`InvalidLayerException`
//!   on a mismatch, `EmptyUploadException` with no bytes, `LayerAlreadyExistsException` when the
//!   repository already holds it) and links the blob into the repository.
//! - GetDownloadUrlForLayer answers a URL on berth's own `/v2/<name>/blobs/<digest>` endpoint
//!   (carrying a `token` query parameter when the registry requires authentication).

use axum::body::Body;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::invalid;
use crate::digest::Digest;
use crate::{Registry, RegistryError};

/// The `partSize` InitiateLayerUpload suggests (bytes).
pub const PART_SIZE: u64 = 10 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BatchCheckRequest {
    repository_name: Option<String>,
    #[serde(default)]
    layer_digests: Vec<String>,
}

pub(super) async fn batch_check(
    reg: &Registry,
    req: BatchCheckRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    if req.layer_digests.is_empty() || req.layer_digests.len() > 100 {
        return Err(invalid(
            "layerDigests",
            "Member must have length less than or equal to 100 and greater than or equal to 1",
        ));
    }
    let (mut layers, mut failures) = (Vec::new(), Vec::new());
    for d in req.layer_digests {
        let Ok(digest) = Digest::parse(&d) else {
            failures.push(json!({"layerDigest": d, "failureCode": "InvalidLayerDigest", "failureReason": "Invalid layer digest"}));
            continue;
        };
        let linked = reg.records().blob_link(&name, &digest).await?;
        match (linked, reg.blobs.size(&digest).await?) {
            (Some(_), Some(size)) => layers.push(json!({
                "layerDigest": d,
                "layerAvailability": "AVAILABLE",
                "layerSize": size,
            })),
            _ => failures.push(json!({"layerDigest": d, "failureCode": "MissingLayerDigest", "failureReason": "Could not find layer"})),
        }
    }
    Ok(json!({"layers": layers, "failures": failures}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct InitiateRequest {
    repository_name: Option<String>,
}

pub(super) async fn initiate(reg: &Registry, req: InitiateRequest) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    let id = reg.uploads.start(&name).await?;
    Ok(json!({"uploadId": id, "partSize": PART_SIZE}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UploadPartRequest {
    repository_name: Option<String>,
    upload_id: Option<String>,
    part_first_byte: Option<u64>,
    part_last_byte: Option<u64>,
    layer_part_blob: Option<String>,
}

fn upload_not_found(name: &str, id: &str, account: &str) -> RegistryError {
    RegistryError::UploadUnknown(format!(
        "The upload with id '{id}' does not exist in the repository with name '{name}' in the registry with id '{account}'"
    ))
}

pub(super) async fn upload_part(
    reg: &Registry,
    req: UploadPartRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    let id = req.upload_id.unwrap_or_default();
    let first = req
        .part_first_byte
        .ok_or_else(|| invalid("partFirstByte", "Member must not be null"))?;
    let last = req
        .part_last_byte
        .ok_or_else(|| invalid("partLastByte", "Member must not be null"))?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(req.layer_part_blob.unwrap_or_default())
        .map_err(|_| invalid("layerPartBlob", "Member must be base64-encoded"))?;
    let account = reg.scope.account.clone();
    let mut lease = match reg.uploads.lease(&id, &name).await {
        Ok(l) => l,
        Err(RegistryError::UploadUnknown(_)) => return Err(upload_not_found(&name, &id, &account)),
        Err(e) => return Err(e),
    };
    let received = lease.size();
    let bad_part = |why: String| {
        RegistryError::InvalidLayerPart(format!(
            "The layer part {first}-{last} of upload '{id}' is invalid: {why}; last valid byte received: {}",
            received as i64 - 1
        ))
    };
    if last < first || blob.len() as u64 != last - first + 1 {
        return Err(bad_part(format!("the part holds {} bytes", blob.len())));
    }
    match lease.append(Some((first, last)), Body::from(blob)).await {
        Ok(_) => {}
        Err(RegistryError::RangeInvalid(m) | RegistryError::UploadInvalid(m)) => {
            return Err(bad_part(m))
        }
        Err(e) => return Err(e),
    }
    Ok(json!({
        "registryId": account,
        "repositoryName": name,
        "uploadId": id,
        "lastByteReceived": last,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CompleteRequest {
    repository_name: Option<String>,
    upload_id: Option<String>,
    #[serde(default)]
    layer_digests: Vec<String>,
}

pub(super) async fn complete(reg: &Registry, req: CompleteRequest) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    let id = req.upload_id.unwrap_or_default();
    let account = reg.scope.account.clone();
    let first =
        match req.layer_digests.as_slice() {
            [d, ..] if req.layer_digests.len() <= 100 => d.clone(),
            _ => return Err(invalid(
                "layerDigests",
                "Member must have length less than or equal to 100 and greater than or equal to 1",
            )),
        };
    let digest = Digest::parse(&first).map_err(|_| {
        invalid(
            "layerDigests",
            "Member must satisfy regular expression pattern: [a-zA-Z0-9-_+.]+:[a-fA-F0-9]+",
        )
    })?;
    let lease = match reg.uploads.lease(&id, &name).await {
        Ok(l) => l,
        Err(RegistryError::UploadUnknown(_)) => return Err(upload_not_found(&name, &id, &account)),
        Err(e) => return Err(e),
    };
    if lease.size() == 0 {
        return Err(RegistryError::EmptyUpload(format!(
            "The layer upload with id '{id}' contains no data"
        )));
    }
    if reg.records().blob_link(&name, &digest).await?.is_some() && reg.blobs.touch(&digest)? {
        drop(lease);
        reg.uploads.cancel(&id, &name).await?;
        return Err(RegistryError::LayerAlreadyExists(format!(
            "The layer '{digest}' already exists in the repository with name '{name}' in the registry with id '{account}'"
        )));
    }
    let size = match lease.finish(None, &digest, Body::empty(), &reg.blobs).await {
        Ok(s) => s,
        Err(RegistryError::DigestInvalid(m)) => {
            return Err(RegistryError::InvalidLayer(format!(
                "The layer digest calculation performed by berth upon receipt of the image layer does not match the digest specified: {m}"
            )))
        }
        Err(e) => return Err(e),
    };
    reg.records().link_blob(&name, &digest, size).await?;
    Ok(json!({
        "registryId": account,
        "repositoryName": name,
        "uploadId": id,
        "layerDigest": digest.to_string(),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DownloadUrlRequest {
    repository_name: Option<String>,
    layer_digest: Option<String>,
}

pub(super) async fn download_url(
    reg: &Registry,
    req: DownloadUrlRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    let d = req.layer_digest.unwrap_or_default();
    let missing = || {
        RegistryError::LayersNotFound(format!(
            "The layer with digest '{d}' does not exist in the repository with name '{name}' in the registry with id '{}'",
            reg.scope.account
        ))
    };
    let digest = Digest::parse(&d).map_err(|_| {
        invalid(
            "layerDigest",
            "Member must satisfy regular expression pattern: [a-zA-Z0-9-_+.]+:[a-fA-F0-9]+",
        )
    })?;
    if reg.records().blob_link(&name, &digest).await?.is_none()
        || reg.blobs.size(&digest).await?.is_none()
    {
        return Err(missing());
    }
    let mut url = format!("http://{}/v2/{name}/blobs/{digest}", reg.public_host);
    if reg.auth_required {
        let (token, _) = reg.auth.mint(crate::auth::now_secs());
        url.push_str(&format!("?token={token}"));
    }
    Ok(json!({"downloadUrl": url, "layerDigest": digest.to_string()}))
}
