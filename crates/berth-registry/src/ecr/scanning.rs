//! ECR image scanning operations: StartImageScan, DescribeImageScanFindings (shapes from
//! botocore `ecr/2015-09-21`; the scan itself is [`crate::scan`]).
//!
//! - StartImageScan answers `{registryId, repositoryName, imageId, imageScanStatus{status,
//!   description}}`; the scan runs in the background. An image index is
//!   `UnsupportedImageTypeException`; an unknown image `ImageNotFoundException`.
//! - DescribeImageScanFindings answers `{registryId, repositoryName, imageId, imageScanStatus,
//!   imageScanFindings{imageScanCompletedAt, vulnerabilitySourceUpdatedAt,
//!   findingSeverityCounts, findings[{name, description, uri, severity, attributes[{key,
//!   value}]}]}, nextToken}` (findings only once `COMPLETE`; paginated by `maxResults` 1–1000 and
//!   `nextToken`); an image never scanned is `ScanNotFoundException`.

use berth_core::status::ScanStatus;
use serde::Deserialize;
use serde_json::{json, Value};

use super::images::{resolve_id, ImageId, Resolved};
use super::paginate;
use crate::records::ImageRecord;
use crate::scan::ScanRecord;
use crate::{Registry, RegistryError};

/// `imageScanStatus` of a scan.
pub(crate) fn status_json(r: &ScanRecord) -> Value {
    json!({"status": r.status, "description": r.description})
}

/// `imageScanFindingsSummary` (DescribeImages) of a complete scan.
pub(crate) fn summary_json(r: &ScanRecord) -> Option<Value> {
    if r.status != ScanStatus::Complete {
        return None;
    }
    let mut v = json!({"findingSeverityCounts": r.severity_counts()});
    if let Some(t) = r.completed_at {
        v["imageScanCompletedAt"] = json!(t);
    }
    if let Some(t) = r.source_updated_at {
        v["vulnerabilitySourceUpdatedAt"] = json!(t);
    }
    Some(v)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StartImageScanRequest {
    repository_name: Option<String>,
    image_id: Option<ImageId>,
}

/// The image an `imageId` names, or `ImageNotFoundException` / `InvalidParameterException`.
fn find_image(reg: &Registry, repo: &str, id: &ImageId) -> Result<ImageRecord, RegistryError> {
    reg.records().repository(repo)?;
    match resolve_id(reg, repo, id)? {
        Resolved::Found(i) => Ok(i),
        Resolved::Failure("ImageNotFound", _) => Err(RegistryError::ManifestUnknown(format!(
            "The image with imageId {{imageDigest:'{}', imageTag:'{}'}} does not exist within the repository with name '{repo}' in the registry with id '{}'",
            id.image_digest.as_deref().unwrap_or("null"),
            id.image_tag.as_deref().unwrap_or("null"),
            reg.scope.account
        ))),
        Resolved::Failure(_, m) => Err(RegistryError::InvalidParameter(m)),
    }
}

fn image_id_json(id: &ImageId, image: &ImageRecord) -> Value {
    let mut v = json!({"imageDigest": image.digest});
    if let Some(t) = &id.image_tag {
        v["imageTag"] = json!(t);
    }
    v
}

pub(super) fn start_image_scan(
    reg: &Registry,
    req: StartImageScanRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    let id = req
        .image_id
        .ok_or_else(|| super::invalid("imageId", "Member must not be null"))?;
    let image = find_image(reg, &name, &id)?;
    let rec = reg.start_scan(&name, &image)?;
    Ok(json!({
        "registryId": reg.scope.account,
        "repositoryName": name,
        "imageId": image_id_json(&id, &image),
        "imageScanStatus": status_json(&rec),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DescribeFindingsRequest {
    repository_name: Option<String>,
    image_id: Option<ImageId>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

pub(super) fn describe_image_scan_findings(
    reg: &Registry,
    req: DescribeFindingsRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    let id = req
        .image_id
        .ok_or_else(|| super::invalid("imageId", "Member must not be null"))?;
    let image = find_image(reg, &name, &id)?;
    let rec = reg.scan_of(&name, &image)?.ok_or_else(|| {
        RegistryError::ScanNotFound(format!(
            "Image scan does not exist for the image with '{{imageDigest:'{}', imageTag:'{}'}}' in the repository with name '{name}' in the registry with id '{}'",
            image.digest,
            id.image_tag.as_deref().unwrap_or("null"),
            reg.scope.account
        ))
    })?;
    let mut out = json!({
        "registryId": reg.scope.account,
        "repositoryName": name,
        "imageId": image_id_json(&id, &image),
        "imageScanStatus": status_json(&rec),
    });
    if rec.status == ScanStatus::Complete {
        let all: Vec<Value> = rec
            .findings
            .iter()
            .map(|f| {
                json!({
                    "name": f.name,
                    "description": f.description,
                    "uri": f.uri,
                    "severity": f.severity,
                    "attributes": f.attributes.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let (page, next) = paginate(all, req.max_results, req.next_token.as_deref())?;
        let mut findings = summary_json(&rec).unwrap_or_else(|| json!({}));
        findings["findings"] = json!(page);
        out["imageScanFindings"] = findings;
        if let Some(t) = next {
            out["nextToken"] = json!(t);
        }
    }
    Ok(out)
}
