//! ECR image operations: ListImages, DescribeImages, BatchGetImage, PutImage, BatchDeleteImage
//! (shapes from botocore `ecr/2015-09-21`).
//!
//! Semantics: BatchDeleteImage by tag removes the tag, and the image once its last tag is gone
//! (unless an index of the repository references it); by digest it removes the image and all its
//! tags, refused (`ImageReferencedByManifestList`) while an index references it. PutImage of an
//! image that exists with the same tag (or without a tag) is `ImageAlreadyExistsException`; a tag
//! move the repository's mutability forbids is `ImageTagAlreadyExistsException`.

use std::collections::HashMap;

use berth_store::{Expect, Op};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{invalid, paginate};
use crate::digest::Digest;
use crate::names::valid_tag;
use crate::records::{self, ImageRecord, KIND_IMAGE, KIND_TAG};
use crate::{Registry, RegistryError};

/// `filter` of ListImages / DescribeImages.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct TagStatusFilter {
    tag_status: Option<String>,
}

impl TagStatusFilter {
    /// `TAGGED`, `UNTAGGED` or `ANY` (the default); anything else is InvalidParameter.
    pub(super) fn status(filter: Option<Self>) -> Result<String, RegistryError> {
        let s = filter
            .unwrap_or_default()
            .tag_status
            .unwrap_or_else(|| "ANY".into());
        if !["TAGGED", "UNTAGGED", "ANY"].contains(&s.as_str()) {
            return Err(invalid(
                "filter.tagStatus",
                "Member must satisfy enum value set: [TAGGED, UNTAGGED, ANY]",
            ));
        }
        Ok(s)
    }

    pub(super) fn keeps(status: &str, tagged: bool) -> bool {
        match status {
            "TAGGED" => tagged,
            "UNTAGGED" => !tagged,
            _ => true,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListImagesRequest {
    repository_name: Option<String>,
    filter: Option<TagStatusFilter>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

/// `(image, tags)` for every image of `repo`, ordered by digest; tags sorted.
pub(crate) async fn images_with_tags(
    reg: &Registry,
    repo: &str,
) -> Result<Vec<(ImageRecord, Vec<String>)>, RegistryError> {
    let mut by_digest: HashMap<String, Vec<String>> = HashMap::new();
    for (t, d) in reg.records().tags(repo).await? {
        by_digest.entry(d).or_default().push(t);
    }
    Ok(reg
        .records()
        .images(repo)
        .await?
        .into_iter()
        .map(|i| {
            let t = by_digest.remove(&i.digest).unwrap_or_default();
            (i, t)
        })
        .collect())
}

pub(super) async fn list_images(
    reg: &Registry,
    req: ListImagesRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    let status = TagStatusFilter::status(req.filter)?;
    let mut ids = Vec::new();
    for (image, tags) in images_with_tags(reg, &name).await? {
        if !TagStatusFilter::keeps(&status, !tags.is_empty()) {
            continue;
        }
        if tags.is_empty() {
            ids.push(json!({"imageDigest": image.digest}));
        }
        for t in tags {
            ids.push(json!({"imageDigest": image.digest, "imageTag": t}));
        }
    }
    let (page, next) = paginate(ids, req.max_results, req.next_token.as_deref())?;
    let mut out = json!({"imageIds": page});
    if let Some(t) = next {
        out["nextToken"] = json!(t);
    }
    Ok(out)
}

/// An ECR `ImageIdentifier`.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct ImageId {
    pub(super) image_digest: Option<String>,
    pub(super) image_tag: Option<String>,
}

impl ImageId {
    pub(super) fn json(&self) -> Value {
        let mut v = json!({});
        if let Some(d) = &self.image_digest {
            v["imageDigest"] = json!(d);
        }
        if let Some(t) = &self.image_tag {
            v["imageTag"] = json!(t);
        }
        v
    }
}

/// What an `ImageIdentifier` names: an image, or an `ImageFailure` code and reason.
pub(super) enum Resolved {
    Found(ImageRecord),
    Failure(&'static str, String),
}

/// Resolves an ECR imageId (digest and/or tag) in `repo` (which must exist).
pub(super) async fn resolve_id(
    reg: &Registry,
    repo: &str,
    id: &ImageId,
) -> Result<Resolved, RegistryError> {
    use Resolved::Failure;
    let not_found = || Failure("ImageNotFound", "Requested image not found".into());
    let by_digest = match id.image_digest.as_deref() {
        None => None,
        Some(d) => match Digest::parse(d) {
            Ok(d) => Some(reg.records().image(repo, &d).await?),
            Err(_) => return Ok(Failure("InvalidImageDigest", "Invalid request parameters: image digest should satisfy the regex '[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+'".into())),
        },
    };
    let by_tag = match id.image_tag.as_deref() {
        None => None,
        Some(t) if !valid_tag(t) => {
            return Ok(Failure(
                "InvalidImageTag",
                "Invalid request parameters: image tag is invalid".into(),
            ))
        }
        Some(t) => Some(match reg.records().tag(repo, t).await? {
            Some((d, _)) => reg.records().image(repo, &Digest::parse(&d)?).await?,
            None => None,
        }),
    };
    Ok(match (by_digest, by_tag) {
        (None, None) => Failure(
            "MissingDigestAndTag",
            "Invalid request parameters: both tag and digest cannot be null".into(),
        ),
        (Some(Some(d)), Some(Some(t))) if d.digest != t.digest => Failure(
            "ImageTagDoesNotMatchDigest",
            "Invalid request parameters: given tag does not map to the given digest".into(),
        ),
        (Some(Some(i)), None | Some(Some(_))) | (None, Some(Some(i))) => Resolved::Found(i),
        _ => not_found(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DescribeImagesRequest {
    repository_name: Option<String>,
    image_ids: Option<Vec<ImageId>>,
    filter: Option<TagStatusFilter>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

/// The ECR `ImageDetail` of `image` with `tags` and its last `scan` (`imageScanStatus`,
/// `imageScanFindingsSummary`).
pub(super) fn image_detail(
    reg: &Registry,
    repo: &str,
    i: &ImageRecord,
    tags: &[String],
    scan: Option<&crate::scan::ScanRecord>,
) -> Value {
    let mut v = json!({
        "registryId": reg.scope.account,
        "repositoryName": repo,
        "imageDigest": i.digest,
        "imageSizeInBytes": i.image_size,
        "imagePushedAt": i.pushed_at,
        "imageManifestMediaType": i.media_type,
        "imageStatus": "ACTIVE",
    });
    if !tags.is_empty() {
        v["imageTags"] = json!(tags);
    }
    if let Some(t) = &i.artifact_type {
        v["artifactMediaType"] = json!(t);
    }
    if let Some(s) = &i.subject {
        v["subjectManifestDigest"] = json!(s);
    }
    if let Some(s) = scan {
        v["imageScanStatus"] = super::scanning::status_json(s);
        if let Some(sum) = super::scanning::summary_json(s) {
            v["imageScanFindingsSummary"] = sum;
        }
    }
    v
}

pub(super) async fn describe_images(
    reg: &Registry,
    req: DescribeImagesRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    let status = TagStatusFilter::status(req.filter)?;
    let all = images_with_tags(reg, &name).await?;
    let selected: Vec<(ImageRecord, Vec<String>)> = match req.image_ids {
        None => all
            .into_iter()
            .filter(|(_, t)| TagStatusFilter::keeps(&status, !t.is_empty()))
            .collect(),
        Some(ids) => {
            let mut out: Vec<(ImageRecord, Vec<String>)> = Vec::new();
            for id in ids {
                let image = match resolve_id(reg, &name, &id).await? {
                    Resolved::Found(i) => i,
                    Resolved::Failure("InvalidImageDigest" | "InvalidImageTag", m) => {
                        return Err(RegistryError::InvalidParameter(m))
                    }
                    Resolved::Failure(..) => {
                        return Err(RegistryError::ManifestUnknown(format!(
                            "The image with imageId {{imageDigest:'{}', imageTag:'{}'}} does not exist within the repository with name '{name}' in the registry with id '{}'",
                            id.image_digest.as_deref().unwrap_or("null"),
                            id.image_tag.as_deref().unwrap_or("null"),
                            reg.scope.account
                        )))
                    }
                };
                if let Some(entry) = all.iter().find(|(i, _)| i.digest == image.digest) {
                    if !out.iter().any(|(i, _)| i.digest == image.digest) {
                        out.push(entry.clone());
                    }
                }
            }
            out
        }
    };
    let images: Vec<ImageRecord> = selected.iter().map(|(i, _)| i.clone()).collect();
    let scans = reg.scans_of(&name, &images).await?;
    let details: Vec<Value> = selected
        .iter()
        .map(|(i, tags)| image_detail(reg, &name, i, tags, scans.get(&i.digest)))
        .collect();
    let (page, next) = paginate(details, req.max_results, req.next_token.as_deref())?;
    let mut out = json!({"imageDetails": page});
    if let Some(t) = next {
        out["nextToken"] = json!(t);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BatchGetImageRequest {
    repository_name: Option<String>,
    #[serde(default)]
    image_ids: Vec<ImageId>,
    accepted_media_types: Option<Vec<String>>,
}

pub(super) async fn batch_get_image(
    reg: &Registry,
    req: BatchGetImageRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    if req.image_ids.is_empty() || req.image_ids.len() > 100 {
        return Err(invalid(
            "imageIds",
            "Member must have length less than or equal to 100 and greater than or equal to 1",
        ));
    }
    let (mut images, mut failures) = (Vec::new(), Vec::new());
    for id in req.image_ids {
        let fail = |code: &str, reason: &str| json!({"imageId": id.json(), "failureCode": code, "failureReason": reason});
        let image = match resolve_id(reg, &name, &id).await? {
            Resolved::Found(i) => i,
            Resolved::Failure(code, reason) => {
                failures.push(fail(code, &reason));
                continue;
            }
        };
        if let Some(accepted) = &req.accepted_media_types {
            if !accepted.iter().any(|t| t == &image.media_type) {
                failures.push(fail(
                    "ImageNotFound",
                    "Requested image not found in the accepted media types",
                ));
                continue;
            }
        }
        let digest = Digest::parse(&image.digest)?;
        let Ok(bytes) = reg.blobs.read(&digest).await else {
            failures.push(fail("ImageNotFound", "Requested image not found"));
            continue;
        };
        let mut image_id = id.clone();
        image_id.image_digest = Some(image.digest.clone());
        images.push(json!({
            "registryId": reg.scope.account,
            "repositoryName": name,
            "imageId": image_id.json(),
            "imageManifest": String::from_utf8_lossy(&bytes),
            "imageManifestMediaType": image.media_type,
        }));
    }
    Ok(json!({"images": images, "failures": failures}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PutImageRequest {
    repository_name: Option<String>,
    image_manifest: Option<String>,
    image_manifest_media_type: Option<String>,
    image_tag: Option<String>,
    image_digest: Option<String>,
}

pub(super) async fn put_image(
    reg: &Registry,
    req: PutImageRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    let manifest = req.image_manifest.unwrap_or_default();
    if manifest.is_empty() {
        return Err(invalid(
            "imageManifest",
            "Member must have length greater than or equal to 1",
        ));
    }
    let tags: Vec<String> = req.image_tag.iter().cloned().collect();
    if let Some(t) = &req.image_tag {
        if !valid_tag(t) {
            return Err(invalid(
                "imageTag",
                "Member must satisfy regular expression pattern: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}",
            ));
        }
    }
    let expected = match &req.image_digest {
        Some(d) => Some(Digest::parse(d).map_err(|_| {
            invalid(
                "imageDigest",
                "Member must satisfy regular expression pattern: [a-zA-Z0-9-_+.]+:[a-fA-F0-9]+",
            )
        })?),
        None => None,
    };
    let bytes = manifest.as_bytes();
    let alg = expected
        .as_ref()
        .map_or(crate::digest::Algorithm::Sha256, Digest::algorithm);
    let digest = Digest::of_with(alg, bytes);
    if let Some(e) = &expected {
        if e != &digest {
            return Err(RegistryError::DigestInvalid(format!(
                "Manifest digest '{digest}' does not match the provided image digest '{e}'"
            )));
        }
    }
    if reg.records().image(&name, &digest).await?.is_some() {
        let tag_there = match &req.image_tag {
            None => true,
            Some(t) => reg
                .records()
                .tag(&name, t)
                .await?
                .is_some_and(|(d, _)| d == digest.to_string()),
        };
        if tag_there {
            return Err(RegistryError::ImageAlreadyExists(format!(
                "Image with digest '{digest}' and tag '{}' already exists in the repository with name '{name}' in registry with id '{}'",
                req.image_tag.as_deref().unwrap_or("null"),
                reg.scope.account
            )));
        }
    }
    let media_type = req.image_manifest_media_type.as_deref();
    let pushed = reg
        .push_manifest(&name, Some(&digest), &tags, media_type, bytes)
        .await
        .map_err(|e| match e {
            RegistryError::ManifestBlobUnknown(d) => RegistryError::LayersNotFound(format!(
                "Layers with digests '[{d}]' required for pushing image into repository with name '{name}' in the registry with id '{}' do not exist",
                reg.scope.account
            )),
            RegistryError::ReferencedImagesUnknown(d) => RegistryError::ReferencedImagesUnknown(format!(
                "Manifests with digests '[{d}]' referenced by the image do not exist in the repository with name '{name}'"
            )),
            e => e,
        })?;
    let image = reg
        .records()
        .image(&name, &pushed.digest)
        .await?
        .ok_or_else(|| RegistryError::ManifestUnknown(pushed.digest.to_string()))?;
    let mut id = json!({"imageDigest": pushed.digest.to_string()});
    if let Some(t) = &req.image_tag {
        id["imageTag"] = json!(t);
    }
    Ok(json!({"image": {
        "registryId": reg.scope.account,
        "repositoryName": name,
        "imageId": id,
        "imageManifest": manifest,
        "imageManifestMediaType": image.media_type,
    }}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BatchDeleteImageRequest {
    repository_name: Option<String>,
    #[serde(default)]
    image_ids: Vec<ImageId>,
}

pub(super) async fn batch_delete_image(
    reg: &Registry,
    req: BatchDeleteImageRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    if req.image_ids.is_empty() || req.image_ids.len() > 100 {
        return Err(invalid(
            "imageIds",
            "Member must have length less than or equal to 100 and greater than or equal to 1",
        ));
    }
    let (mut deleted, mut failures) = (Vec::new(), Vec::new());
    for id in req.image_ids {
        let image = match resolve_id(reg, &name, &id).await? {
            Resolved::Found(i) => i,
            Resolved::Failure(code, reason) => {
                failures.push(
                    json!({"imageId": id.json(), "failureCode": code, "failureReason": reason}),
                );
                continue;
            }
        };
        let parents = reg.index_parents(&name).await?;
        let referenced = parents.get(&image.digest).filter(|p| !p.is_empty());
        let tags: Vec<String> = reg
            .records()
            .tags(&name)
            .await?
            .into_iter()
            .filter(|(_, d)| *d == image.digest)
            .map(|(t, _)| t)
            .collect();
        let mut ops = Vec::new();
        match &id.image_tag {
            Some(tag) => {
                ops.push(Op::delete(
                    KIND_TAG,
                    &records::tag_key(&name, tag),
                    Expect::Any,
                ));
                if tags.len() == 1 && referenced.is_none() {
                    ops.push(Op::delete(
                        KIND_IMAGE,
                        &records::digest_key(&name, &Digest::parse(&image.digest)?),
                        Expect::Any,
                    ));
                    ops.push(crate::scan::delete_op(
                        &name,
                        &Digest::parse(&image.digest)?,
                    ));
                }
                deleted.push(json!({"imageDigest": image.digest, "imageTag": tag}));
            }
            None => {
                if let Some(p) = referenced {
                    failures.push(json!({
                        "imageId": id.json(),
                        "failureCode": "ImageReferencedByManifestList",
                        "failureReason": format!("Requested image referenced by manifest list: {p:?}"),
                    }));
                    continue;
                }
                ops.push(Op::delete(
                    KIND_IMAGE,
                    &records::digest_key(&name, &Digest::parse(&image.digest)?),
                    Expect::Any,
                ));
                ops.push(crate::scan::delete_op(
                    &name,
                    &Digest::parse(&image.digest)?,
                ));
                for t in &tags {
                    ops.push(Op::delete(
                        KIND_TAG,
                        &records::tag_key(&name, t),
                        Expect::Any,
                    ));
                    deleted.push(json!({"imageDigest": image.digest, "imageTag": t}));
                }
                if tags.is_empty() {
                    deleted.push(json!({"imageDigest": image.digest}));
                }
            }
        }
        reg.store.commit(ops).await?;
    }
    Ok(json!({"imageIds": deleted, "failures": failures}))
}
