//! ECR operations (awsJson1.1, model `ecr/2015-09-21`; shapes and error names from botocore's
//! `service-2.json`) on the registry's data, and the AWS error table for [`RegistryError`].
//!
//! Served, by module:
//! - here: CreateRepository, DescribeRepositories, DeleteRepository, GetAuthorizationToken;
//! - [`images`]: ListImages, DescribeImages, BatchGetImage, PutImage, BatchDeleteImage;
//! - [`layers`]: BatchCheckLayerAvailability, InitiateLayerUpload, UploadLayerPart,
//!   CompleteLayerUpload, GetDownloadUrlForLayer;
//! - [`settings`]: PutImageTagMutability, PutImageScanningConfiguration,
//!   Set/Get/DeleteRepositoryPolicy, TagResource, UntagResource, ListTagsForResource,
//!   DescribeRegistry;
//! - [`lifecycle_ops`]: Put/Get/DeleteLifecyclePolicy, Start/GetLifecyclePolicyPreview;
//! - [`scanning`]: StartImageScan, DescribeImageScanFindings.
//!
//! Anything else is `UnknownOperationException`.

mod images;
mod layers;
mod lifecycle_ops;
mod scanning;
mod settings;

pub(crate) use images::images_with_tags;

use base64::Engine as _;
use berth_api::operation::EcrOperation;
use berth_api::proto::{parse_body, AwsError};
use berth_apiserver::{AwsService, ErrorKind, ErrorTable, Input};
use berth_store::{Expect, Op, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::names::{valid_repository_name, REPOSITORY_NAME_PATTERN};
use crate::records::{ExclusionFilter, RepositoryRecord, ResourceTag, KIND_REPOSITORY};
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
        ManifestBlobUnknown(m) | BlobUnknown(m) | LayersNotFound(m) => AwsError::client("LayersNotFoundException", m.clone()),
        ReferencedImagesUnknown(m) => AwsError::client("ReferencedImagesNotFoundException", m.clone()),
        TagImmutable(m) => AwsError::client("ImageTagAlreadyExistsException", m.clone()),
        ImageAlreadyExists(m) => AwsError::client("ImageAlreadyExistsException", m.clone()),
        DigestInvalid(m) => AwsError::client("ImageDigestDoesNotMatchException", m.clone()),
        UploadUnknown(m) => AwsError::client("UploadNotFoundException", m.clone()),
        InvalidLayerPart(m) => AwsError::client("InvalidLayerPartException", m.clone()),
        InvalidLayer(m) => AwsError::client("InvalidLayerException", m.clone()),
        LayerAlreadyExists(m) => AwsError::client("LayerAlreadyExistsException", m.clone()),
        EmptyUpload(m) => AwsError::client("EmptyUploadException", m.clone()),
        LifecyclePolicyNotFound(m) => AwsError::client("LifecyclePolicyNotFoundException", m.clone()),
        LifecyclePreviewNotFound(m) => AwsError::client("LifecyclePolicyPreviewNotFoundException", m.clone()),
        RepositoryPolicyNotFound(m) => AwsError::client("RepositoryPolicyNotFoundException", m.clone()),
        Store(_) | Io(_) => AwsError::server(e.to_string()),
        UnsupportedImageType(m) => AwsError::client("UnsupportedImageTypeException", m.clone()),
        ScanNotFound(m) => AwsError::client("ScanNotFoundException", m.clone()),
        InvalidParameter(m) => AwsError::invalid_parameter(m.clone()),
        other => AwsError::invalid_parameter(other.to_string()),
    }
}

/// Runs ECR operation `op` on the raw JSON request `body`.
pub(crate) async fn handle(
    reg: &Registry,
    op: EcrOperation,
    body: &[u8],
) -> Result<Value, AwsError> {
    use EcrOperation as O;
    let account = reg.scope.account.clone();
    let res = match op {
        O::CreateRepository => create_repository(reg, parse_body(body)?).await,
        O::DescribeRepositories => describe_repositories(reg, parse_body(body)?).await,
        O::DeleteRepository => delete_repository(reg, parse_body(body)?).await,
        O::GetAuthorizationToken => {
            let _: Value = parse_body(body)?;
            Ok(get_authorization_token(reg))
        }
        O::ListImages => images::list_images(reg, parse_body(body)?).await,
        O::DescribeImages => images::describe_images(reg, parse_body(body)?).await,
        O::BatchGetImage => images::batch_get_image(reg, parse_body(body)?).await,
        O::PutImage => images::put_image(reg, parse_body(body)?).await,
        O::BatchDeleteImage => images::batch_delete_image(reg, parse_body(body)?).await,
        O::BatchCheckLayerAvailability => layers::batch_check(reg, parse_body(body)?).await,
        O::InitiateLayerUpload => layers::initiate(reg, parse_body(body)?).await,
        O::UploadLayerPart => layers::upload_part(reg, parse_body(body)?).await,
        O::CompleteLayerUpload => layers::complete(reg, parse_body(body)?).await,
        O::GetDownloadUrlForLayer => layers::download_url(reg, parse_body(body)?).await,
        O::PutImageTagMutability => settings::put_tag_mutability(reg, parse_body(body)?).await,
        O::PutImageScanningConfiguration => settings::put_scanning(reg, parse_body(body)?).await,
        O::SetRepositoryPolicy => settings::set_policy(reg, parse_body(body)?).await,
        O::GetRepositoryPolicy => settings::get_policy(reg, parse_body(body)?).await,
        O::DeleteRepositoryPolicy => settings::delete_policy(reg, parse_body(body)?).await,
        O::TagResource => settings::tag_resource(reg, parse_body(body)?).await,
        O::UntagResource => settings::untag_resource(reg, parse_body(body)?).await,
        O::ListTagsForResource => settings::list_tags(reg, parse_body(body)?).await,
        O::DescribeRegistry => {
            let _: Value = parse_body(body)?;
            Ok(settings::describe_registry(reg))
        }
        O::PutLifecyclePolicy => lifecycle_ops::put(reg, parse_body(body)?).await,
        O::GetLifecyclePolicy => lifecycle_ops::get(reg, parse_body(body)?).await,
        O::DeleteLifecyclePolicy => lifecycle_ops::delete(reg, parse_body(body)?).await,
        O::StartLifecyclePolicyPreview => {
            lifecycle_ops::start_preview(reg, parse_body(body)?).await
        }
        O::GetLifecyclePolicyPreview => lifecycle_ops::get_preview(reg, parse_body(body)?).await,
        O::StartImageScan => scanning::start_image_scan(reg, parse_body(body)?).await,
        O::DescribeImageScanFindings => {
            scanning::describe_image_scan_findings(reg, parse_body(body)?).await
        }
    };
    res.map_err(|e| aws_error(&account, &e))
}

/// ECR's error names by kind (botocore `ecr/2015-09-21`), for handlers that report an
/// [`berth_apiserver::ErrorKind`]; [`RegistryError`]s keep their own table above.
pub static ERRORS: ErrorTable = ErrorTable {
    rows: &[
        (
            ErrorKind::NotFound,
            Some("Repository"),
            "RepositoryNotFoundException",
            400,
        ),
        (
            ErrorKind::NotFound,
            Some("Image"),
            "ImageNotFoundException",
            400,
        ),
        (
            ErrorKind::NotFound,
            Some("Layer"),
            "LayersNotFoundException",
            400,
        ),
        (
            ErrorKind::NotFound,
            Some("Upload"),
            "UploadNotFoundException",
            400,
        ),
        (
            ErrorKind::NotFound,
            Some("LifecyclePolicy"),
            "LifecyclePolicyNotFoundException",
            400,
        ),
        (
            ErrorKind::NotFound,
            Some("RepositoryPolicy"),
            "RepositoryPolicyNotFoundException",
            400,
        ),
        (
            ErrorKind::AlreadyExists,
            Some("Repository"),
            "RepositoryAlreadyExistsException",
            400,
        ),
        (
            ErrorKind::AlreadyExists,
            Some("Image"),
            "ImageAlreadyExistsException",
            400,
        ),
        (
            ErrorKind::AlreadyExists,
            Some("Layer"),
            "LayerAlreadyExistsException",
            400,
        ),
        (
            ErrorKind::Conflict,
            Some("Repository"),
            "RepositoryNotEmptyException",
            400,
        ),
    ],
    defaults: &[
        (ErrorKind::InvalidArgument, "InvalidParameterException", 400),
        (ErrorKind::LimitExceeded, "LimitExceededException", 400),
        (ErrorKind::Unsupported, "UnsupportedImageTypeException", 400),
        (ErrorKind::Internal, "ServerException", 500),
    ],
};

/// ECR as an [`AwsService`] (awsJson1.1, target prefix `AmazonEC2ContainerRegistry_V20150921`,
/// signing name `ecr`).
pub struct EcrApi(pub std::sync::Arc<Registry>);

impl AwsService for EcrApi {
    type Operation = EcrOperation;
    fn signing_name(&self) -> &'static str {
        "ecr"
    }
    fn json_target_prefix(&self) -> &'static str {
        berth_api::proto::ECR_PREFIX
    }
    fn errors(&self) -> &'static ErrorTable {
        &ERRORS
    }
    async fn call(&self, op: EcrOperation, input: Input<'_>) -> Result<Value, AwsError> {
        handle(&self.0, op, &input.json_bytes()).await
    }
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
        let mut v = json!({
            "repositoryArn": self.scope.repository(&r.name),
            "registryId": self.scope.account,
            "repositoryName": r.name,
            "repositoryUri": format!("{}/{}", self.public_host, r.name),
            "createdAt": r.created_at,
            "imageTagMutability": r.image_tag_mutability,
            "imageScanningConfiguration": {"scanOnPush": r.scan_on_push},
            "encryptionConfiguration": enc,
        });
        if !r.exclusion_filters.is_empty() {
            v["imageTagMutabilityExclusionFilters"] = json!(r.exclusion_filters);
        }
        v
    }
}

/// `imageScanningConfiguration`.
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
    image_tag_mutability_exclusion_filters: Option<Vec<ExclusionFilter>>,
    image_scanning_configuration: Option<ScanningConfiguration>,
    encryption_configuration: Option<EncryptionConfiguration>,
}

async fn create_repository(
    reg: &Registry,
    req: CreateRepositoryRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    if !valid_repository_name(&name) {
        return Err(invalid(
            "repositoryName",
            &format!("must satisfy regular expression '{REPOSITORY_NAME_PATTERN}' and have length between 2 and 256"),
        ));
    }
    settings::validate_tags(&req.tags)?;
    let mutability = req.image_tag_mutability.unwrap_or_else(|| "MUTABLE".into());
    let exclusion_filters =
        settings::validate_mutability(&mutability, req.image_tag_mutability_exclusion_filters)?;
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
        exclusion_filters,
    };
    match reg
        .store
        .commit(vec![Op::put(
            KIND_REPOSITORY,
            &name,
            &record,
            Expect::Absent,
        )?])
        .await
    {
        Ok(_) => Ok(json!({"repository": reg.repository_json(&record)})),
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

async fn describe_repositories(
    reg: &Registry,
    req: DescribeRepositoriesRequest,
) -> Result<Value, RegistryError> {
    let repos = match req.repository_names {
        Some(names) => {
            let mut repos = Vec::with_capacity(names.len());
            for n in &names {
                repos.push(reg.records().repository(n).await?.0);
            }
            repos
        }
        None => reg.records().repositories().await?,
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

async fn delete_repository(
    reg: &Registry,
    req: DeleteRepositoryRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    let (repo, rev) = reg.records().repository(&name).await?;
    if !req.force && !reg.records().images(&name).await?.is_empty() {
        return Err(RegistryError::RepositoryNotEmpty(name));
    }
    let mut ops = reg.records().delete_repository_ops(&name).await?;
    ops[0] = Op::delete(KIND_REPOSITORY, &name, Expect::Revision(rev));
    match reg.store.commit(ops).await {
        Ok(_) => Ok(json!({"repository": reg.repository_json(&repo)})),
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

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_images;
