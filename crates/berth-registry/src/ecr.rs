//! ECR operations (awsJson1.1, model `ecr/2015-09-21`; shapes and error names from botocore's
//! `service-2.json`) on the registry's data, and the AWS error table for [`RegistryError`].
//!
//! Served: CreateRepository, DescribeRepositories, DeleteRepository, GetAuthorizationToken,
//! ListImages, DescribeImages, BatchGetImage. Anything else is `UnknownOperationException`.

use base64::Engine as _;
use berth_api::proto::{parse_body, AwsError};
use berth_store::{Expect, Op, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::digest::Digest;
use crate::images::Reference;
use crate::names::{valid_repository_name, REPOSITORY_NAME_PATTERN};
use crate::records::{ImageRecord, RepositoryRecord, ResourceTag, KIND_REPOSITORY};
use crate::{Registry, RegistryError};

/// The AWS `__type` and message for each [`RegistryError`] kind (the one ECR table).
pub fn aws_error(account: &str, e: &RegistryError) -> AwsError {
    use RegistryError::*;
    match e {
        NameUnknown(n) => AwsError::client(
            "RepositoryNotFoundException",
            format!("The repository with name '{n}' does not exist in the registry with id '{account}'"),
        ),
        RepositoryAlreadyExists(n) => AwsError::client(
            "RepositoryAlreadyExistsException",
            format!("The repository with name '{n}' already exists in the registry with id '{account}'"),
        ),
        RepositoryNotEmpty(n) => AwsError::client(
            "RepositoryNotEmptyException",
            format!("The repository with name '{n}' in registry with id '{account}' cannot be deleted because it still contains images"),
        ),
        InvalidTagParameter(m) => AwsError::client("InvalidTagParameterException", m.clone()),
        TooManyTags(m) => AwsError::client("TooManyTagsException", m.clone()),
        ManifestUnknown(m) => AwsError::client("ImageNotFoundException", m.clone()),
        ManifestBlobUnknown(m) | BlobUnknown(m) => AwsError::client("LayersNotFoundException", m.clone()),
        TagInvalid(m) => AwsError::client("ImageTagAlreadyExistsException", m.clone()),
        DigestInvalid(m) => AwsError::client("ImageDigestDoesNotMatchException", m.clone()),
        UploadUnknown(m) => AwsError::client("UploadNotFoundException", m.clone()),
        Store(_) | Io(_) => AwsError::server(e.to_string()),
        InvalidParameter(m) => AwsError::invalid_parameter(m.clone()),
        other => AwsError::invalid_parameter(other.to_string()),
    }
}

pub(crate) async fn handle(reg: &Registry, op: &str, body: &[u8]) -> Result<Value, AwsError> {
    let account = reg.scope.account.clone();
    let res = match op {
        "CreateRepository" => create_repository(reg, parse_body(body)?),
        "DescribeRepositories" => describe_repositories(reg, parse_body(body)?),
        "DeleteRepository" => delete_repository(reg, parse_body(body)?),
        "GetAuthorizationToken" => {
            let _: Value = parse_body(body)?;
            Ok(get_authorization_token(reg))
        }
        "ListImages" => list_images(reg, parse_body(body)?),
        "DescribeImages" => describe_images(reg, parse_body(body)?),
        "BatchGetImage" => batch_get_image(reg, parse_body(body)?).await,
        _ => return Err(AwsError::unknown_operation()),
    };
    res.map_err(|e| aws_error(&account, &e))
}

fn invalid(field: &str, constraint: &str) -> RegistryError {
    RegistryError::InvalidParameter(format!(
        "Invalid parameter at '{field}' failed to satisfy constraint: '{constraint}'"
    ))
}

/// Offset pagination: `nextToken` is base64 of the offset of the next item.
fn paginate<T>(
    items: Vec<T>,
    max_results: Option<i64>,
    next_token: Option<&str>,
) -> Result<(Vec<T>, Option<String>), RegistryError> {
    let max = match max_results {
        None => 1000,
        Some(n) if (1..=1000).contains(&n) => n as usize,
        Some(_) => {
            return Err(invalid(
                "maxResults",
                "Member must have value between 1 and 1000",
            ))
        }
    };
    let start = match next_token {
        None => 0,
        Some(t) => base64::engine::general_purpose::STANDARD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| {
                RegistryError::InvalidParameter("Invalid parameter at 'nextToken'".into())
            })?,
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(max).collect();
    let next = (start + page.len() < total).then(|| {
        base64::engine::general_purpose::STANDARD.encode((start + page.len()).to_string())
    });
    Ok((page, next))
}

impl Registry {
    /// The ECR `Repository` shape of `r`.
    pub fn repository_json(&self, r: &RepositoryRecord) -> Value {
        let mut enc = json!({"encryptionType": r.encryption_type});
        if let Some(k) = &r.kms_key {
            enc["kmsKey"] = json!(k);
        }
        json!({
            "repositoryArn": self.scope.repository(&r.name),
            "registryId": self.scope.account,
            "repositoryName": r.name,
            "repositoryUri": format!("{}/{}", self.public_host, r.name),
            "createdAt": r.created_at,
            "imageTagMutability": r.image_tag_mutability,
            "imageScanningConfiguration": {"scanOnPush": r.scan_on_push},
            "encryptionConfiguration": enc,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ScanningConfiguration {
    #[serde(default)]
    scan_on_push: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptionConfiguration {
    encryption_type: String,
    kms_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateRepositoryRequest {
    repository_name: Option<String>,
    #[serde(default)]
    tags: Vec<ResourceTag>,
    image_tag_mutability: Option<String>,
    image_scanning_configuration: Option<ScanningConfiguration>,
    encryption_configuration: Option<EncryptionConfiguration>,
}

fn create_repository(reg: &Registry, req: CreateRepositoryRequest) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    if !valid_repository_name(&name) {
        return Err(invalid(
            "repositoryName",
            &format!("must satisfy regular expression '{REPOSITORY_NAME_PATTERN}' and have length between 2 and 256"),
        ));
    }
    if req.tags.len() > 50 {
        return Err(RegistryError::TooManyTags(
            "A resource can have at most 50 tags".into(),
        ));
    }
    for t in &req.tags {
        if t.key.is_empty() || t.key.len() > 128 || t.value.len() > 256 || t.key.starts_with("aws:")
        {
            return Err(RegistryError::InvalidTagParameter(format!(
                "Invalid tag key or value: {:?}",
                t.key
            )));
        }
    }
    let mutability = req.image_tag_mutability.unwrap_or_else(|| "MUTABLE".into());
    if ![
        "MUTABLE",
        "IMMUTABLE",
        "IMMUTABLE_WITH_EXCLUSION",
        "MUTABLE_WITH_EXCLUSION",
    ]
    .contains(&mutability.as_str())
    {
        return Err(invalid(
            "imageTagMutability",
            "Member must satisfy enum value set: [MUTABLE, IMMUTABLE, IMMUTABLE_WITH_EXCLUSION, MUTABLE_WITH_EXCLUSION]",
        ));
    }
    let (encryption_type, kms_key) = match req.encryption_configuration {
        None => ("AES256".to_string(), None),
        Some(e) if ["AES256", "KMS", "KMS_DSSE"].contains(&e.encryption_type.as_str()) => {
            (e.encryption_type, e.kms_key)
        }
        Some(_) => {
            return Err(invalid(
                "encryptionConfiguration.encryptionType",
                "Member must satisfy enum value set: [AES256, KMS, KMS_DSSE]",
            ))
        }
    };
    let record = RepositoryRecord {
        name: name.clone(),
        created_at: berth_core::epoch_now(),
        image_tag_mutability: mutability,
        scan_on_push: req
            .image_scanning_configuration
            .unwrap_or_default()
            .scan_on_push,
        encryption_type,
        kms_key,
        tags: req.tags,
    };
    match reg.store.commit(vec![Op::put(
        KIND_REPOSITORY,
        &name,
        &record,
        Expect::Absent,
    )?]) {
        Ok(()) => Ok(json!({"repository": reg.repository_json(&record)})),
        Err(StoreError::Conflict { .. }) => Err(RegistryError::RepositoryAlreadyExists(name)),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeRepositoriesRequest {
    repository_names: Option<Vec<String>>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

fn describe_repositories(
    reg: &Registry,
    req: DescribeRepositoriesRequest,
) -> Result<Value, RegistryError> {
    let repos = match req.repository_names {
        Some(names) => names
            .iter()
            .map(|n| reg.records().repository(n).map(|(r, _)| r))
            .collect::<Result<Vec<_>, _>>()?,
        None => reg.records().repositories()?,
    };
    let (page, next) = paginate(repos, req.max_results, req.next_token.as_deref())?;
    let mut out =
        json!({"repositories": page.iter().map(|r| reg.repository_json(r)).collect::<Vec<_>>()});
    if let Some(t) = next {
        out["nextToken"] = json!(t);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteRepositoryRequest {
    repository_name: Option<String>,
    #[serde(default)]
    force: bool,
}

fn delete_repository(reg: &Registry, req: DeleteRepositoryRequest) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    let (repo, rev) = reg.records().repository(&name)?;
    if !req.force && !reg.records().images(&name)?.is_empty() {
        return Err(RegistryError::RepositoryNotEmpty(name));
    }
    let mut ops = reg.records().delete_repository_ops(&name)?;
    ops[0] = Op::delete(KIND_REPOSITORY, &name, Expect::Revision(rev));
    match reg.store.commit(ops) {
        Ok(()) => Ok(json!({"repository": reg.repository_json(&repo)})),
        Err(StoreError::Conflict { .. }) => Err(RegistryError::NameUnknown(name)),
        Err(e) => Err(e.into()),
    }
}

fn get_authorization_token(reg: &Registry) -> Value {
    let (token, expires_at) = reg.auth.mint(crate::auth::now_secs());
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{token}"));
    json!({"authorizationData": [{
        "authorizationToken": b64,
        "expiresAt": expires_at,
        "proxyEndpoint": format!("http://{}", reg.public_host),
    }]})
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListImagesFilter {
    tag_status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListImagesRequest {
    repository_name: Option<String>,
    filter: Option<ListImagesFilter>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

/// `(image, tags)` for every image of `repo`.
fn images_with_tags(
    reg: &Registry,
    repo: &str,
) -> Result<Vec<(ImageRecord, Vec<String>)>, RegistryError> {
    let tags = reg.records().tags(repo)?;
    Ok(reg
        .records()
        .images(repo)?
        .into_iter()
        .map(|i| {
            let t = tags
                .iter()
                .filter(|(_, d)| *d == i.digest)
                .map(|(t, _)| t.clone())
                .collect();
            (i, t)
        })
        .collect())
}

fn list_images(reg: &Registry, req: ListImagesRequest) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name)?;
    let status = req
        .filter
        .unwrap_or_default()
        .tag_status
        .unwrap_or_else(|| "ANY".into());
    let mut ids = Vec::new();
    for (image, tags) in images_with_tags(reg, &name)? {
        if tags.is_empty() && status != "TAGGED" {
            ids.push(json!({"imageDigest": image.digest}));
        }
        if status != "UNTAGGED" {
            for t in tags {
                ids.push(json!({"imageDigest": image.digest, "imageTag": t}));
            }
        }
    }
    let (page, next) = paginate(ids, req.max_results, req.next_token.as_deref())?;
    let mut out = json!({"imageIds": page});
    if let Some(t) = next {
        out["nextToken"] = json!(t);
    }
    Ok(out)
}

#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
struct ImageId {
    image_digest: Option<String>,
    image_tag: Option<String>,
}

impl ImageId {
    fn json(&self) -> Value {
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

/// Resolves an ECR imageId (digest and/or tag) in `repo`; `None` when it names no image.
fn resolve_id(
    reg: &Registry,
    repo: &str,
    id: &ImageId,
) -> Result<Option<ImageRecord>, RegistryError> {
    let by = |r: Result<Reference, RegistryError>| -> Result<Option<ImageRecord>, RegistryError> {
        match r.and_then(|r| reg.resolve(repo, &r)) {
            Ok(i) => Ok(Some(i)),
            Err(
                RegistryError::ManifestUnknown(_)
                | RegistryError::DigestInvalid(_)
                | RegistryError::TagInvalid(_),
            ) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let by_digest = id
        .image_digest
        .as_deref()
        .map(|d| by(Digest::parse(d).map(Reference::Digest)))
        .transpose()?;
    let by_tag = id
        .image_tag
        .as_deref()
        .map(|t| by(Reference::parse(t)))
        .transpose()?;
    Ok(match (by_digest, by_tag) {
        (Some(d), Some(t)) => d
            .zip(t)
            .filter(|(a, b)| a.digest == b.digest)
            .map(|(a, _)| a),
        (Some(d), None) => d,
        (None, Some(t)) => t,
        (None, None) => None,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeImagesRequest {
    repository_name: Option<String>,
    image_ids: Option<Vec<ImageId>>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

fn describe_images(reg: &Registry, req: DescribeImagesRequest) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name)?;
    let all = images_with_tags(reg, &name)?;
    let selected: Vec<(ImageRecord, Vec<String>)> = match req.image_ids {
        None => all,
        Some(ids) => {
            let mut out = Vec::new();
            for id in ids {
                let image = resolve_id(reg, &name, &id)?.ok_or_else(|| {
                    RegistryError::ManifestUnknown(format!(
                        "The image with imageId {{imageDigest:'{}', imageTag:'{}'}} does not exist within the repository with name '{name}' in the registry with id '{}'",
                        id.image_digest.as_deref().unwrap_or("null"),
                        id.image_tag.as_deref().unwrap_or("null"),
                        reg.scope.account
                    ))
                })?;
                if let Some(entry) = all.iter().find(|(i, _)| i.digest == image.digest) {
                    if !out
                        .iter()
                        .any(|(i, _): &(ImageRecord, Vec<String>)| i.digest == image.digest)
                    {
                        out.push(entry.clone());
                    }
                }
            }
            out
        }
    };
    let details: Vec<Value> = selected
        .into_iter()
        .map(|(i, tags)| {
            let mut v = json!({
                "registryId": reg.scope.account,
                "repositoryName": name,
                "imageDigest": i.digest,
                "imageSizeInBytes": i.image_size,
                "imagePushedAt": i.pushed_at,
                "imageManifestMediaType": i.media_type,
            });
            if !tags.is_empty() {
                v["imageTags"] = json!(tags);
            }
            if let Some(t) = &i.artifact_type {
                v["artifactMediaType"] = json!(t);
            }
            v
        })
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
struct BatchGetImageRequest {
    repository_name: Option<String>,
    #[serde(default)]
    image_ids: Vec<ImageId>,
}

async fn batch_get_image(
    reg: &Registry,
    req: BatchGetImageRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name)?;
    let (mut images, mut failures) = (Vec::new(), Vec::new());
    for id in req.image_ids {
        let found = match resolve_id(reg, &name, &id)? {
            Some(i) => reg
                .get_manifest(&name, &Reference::Digest(Digest::parse(&i.digest)?))
                .await
                .ok(),
            None => None,
        };
        match found {
            Some((image, bytes)) => {
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
            None => failures.push(json!({
                "imageId": id.json(),
                "failureCode": "ImageNotFound",
                "failureReason": "Requested image not found",
            })),
        }
    }
    Ok(json!({"images": images, "failures": failures}))
}

#[cfg(test)]
mod tests;
