//! ECR repository settings and registry-level operations: PutImageTagMutability,
//! PutImageScanningConfiguration, Set/Get/DeleteRepositoryPolicy, TagResource, UntagResource,
//! ListTagsForResource, DescribeRegistry.
//!
//! Repository policies are stored and returned verbatim (valid JSON is required) but not
//! enforced: berth has no IAM principals to evaluate them against.

use berth_store::{Expect, Op, StoreError, StoreExt};
use serde::Deserialize;
use serde_json::{json, Value};

use super::invalid;
use crate::records::{
    ExclusionFilter, PolicyText, RepositoryRecord, ResourceTag, KIND_POLICY, KIND_REPOSITORY,
};
use crate::{Registry, RegistryError};

/// The four `ImageTagMutability` values.
const MUTABILITY: [&str; 4] = [
    "MUTABLE",
    "IMMUTABLE",
    "IMMUTABLE_WITH_EXCLUSION",
    "MUTABLE_WITH_EXCLUSION",
];

/// Checks a mutability mode and its exclusion filters: the `*_WITH_EXCLUSION` modes need 1–5
/// filters of type `WILDCARD` matching `^[0-9a-zA-Z._*-]{1,128}$`; the other two take none.
pub(super) fn validate_mutability(
    mode: &str,
    filters: Option<Vec<ExclusionFilter>>,
) -> Result<Vec<ExclusionFilter>, RegistryError> {
    if !MUTABILITY.contains(&mode) {
        return Err(invalid(
            "imageTagMutability",
            "Member must satisfy enum value set: [MUTABLE, IMMUTABLE, IMMUTABLE_WITH_EXCLUSION, MUTABLE_WITH_EXCLUSION]",
        ));
    }
    let filters = filters.unwrap_or_default();
    let with_exclusion = mode.ends_with("_WITH_EXCLUSION");
    if with_exclusion && filters.is_empty() {
        return Err(RegistryError::InvalidParameter(format!(
            "imageTagMutabilityExclusionFilters must be specified when imageTagMutability is {mode}"
        )));
    }
    if !with_exclusion && !filters.is_empty() {
        return Err(RegistryError::InvalidParameter(format!(
            "imageTagMutabilityExclusionFilters can only be specified when imageTagMutability is IMMUTABLE_WITH_EXCLUSION or MUTABLE_WITH_EXCLUSION, not {mode}"
        )));
    }
    if filters.len() > 5 {
        return Err(invalid(
            "imageTagMutabilityExclusionFilters",
            "Member must have length less than or equal to 5",
        ));
    }
    for f in &filters {
        if f.filter_type != "WILDCARD" {
            return Err(invalid(
                "imageTagMutabilityExclusionFilters.filterType",
                "Member must satisfy enum value set: [WILDCARD]",
            ));
        }
        let ok = (1..=128).contains(&f.filter.len())
            && f.filter
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'*' | b'-'));
        if !ok {
            return Err(invalid(
                "imageTagMutabilityExclusionFilters.filter",
                "Member must satisfy regular expression pattern: ^[0-9a-zA-Z._*-]{1,128}$",
            ));
        }
    }
    Ok(filters)
}

/// Checks resource tags: at most 50, keys 1–128 characters not starting with `aws:`, values at
/// most 256 characters.
pub(super) fn validate_tags(tags: &[ResourceTag]) -> Result<(), RegistryError> {
    if tags.len() > 50 {
        return Err(RegistryError::TooManyTags(
            "A resource can have at most 50 tags".into(),
        ));
    }
    for t in tags {
        if t.key.is_empty() || t.key.len() > 128 || t.value.len() > 256 || t.key.starts_with("aws:")
        {
            return Err(RegistryError::InvalidTagParameter(format!(
                "Invalid tag key or value: {:?}",
                t.key
            )));
        }
    }
    Ok(())
}

/// Applies `f` to repository `name` and commits it under its revision (retrying on a race).
async fn update_repository(
    reg: &Registry,
    name: &str,
    f: impl Fn(&mut RepositoryRecord) -> Result<(), RegistryError>,
) -> Result<RepositoryRecord, RegistryError> {
    loop {
        let (mut repo, rev) = reg.records().repository(name).await?;
        f(&mut repo)?;
        match reg
            .store
            .commit(vec![Op::put(
                KIND_REPOSITORY,
                name,
                &repo,
                Expect::Revision(rev),
            )?])
            .await
        {
            Ok(_) => return Ok(repo),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PutTagMutabilityRequest {
    repository_name: Option<String>,
    image_tag_mutability: Option<String>,
    image_tag_mutability_exclusion_filters: Option<Vec<ExclusionFilter>>,
}

pub(super) async fn put_tag_mutability(
    reg: &Registry,
    req: PutTagMutabilityRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    let mode = req.image_tag_mutability.unwrap_or_default();
    let filters = validate_mutability(&mode, req.image_tag_mutability_exclusion_filters)?;
    let repo = update_repository(reg, &name, |r| {
        r.image_tag_mutability = mode.clone();
        r.exclusion_filters = filters.clone();
        Ok(())
    })
    .await?;
    let mut out = json!({
        "registryId": reg.scope.account,
        "repositoryName": name,
        "imageTagMutability": repo.image_tag_mutability,
    });
    if !repo.exclusion_filters.is_empty() {
        out["imageTagMutabilityExclusionFilters"] = json!(repo.exclusion_filters);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PutScanningRequest {
    repository_name: Option<String>,
    image_scanning_configuration: Option<super::ScanningConfiguration>,
}

pub(super) async fn put_scanning(
    reg: &Registry,
    req: PutScanningRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    let cfg = req
        .image_scanning_configuration
        .ok_or_else(|| invalid("imageScanningConfiguration", "Member must not be null"))?;
    let repo = update_repository(reg, &name, |r| {
        r.scan_on_push = cfg.scan_on_push;
        Ok(())
    })
    .await?;
    Ok(json!({
        "registryId": reg.scope.account,
        "repositoryName": name,
        "imageScanningConfiguration": {"scanOnPush": repo.scan_on_push},
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PolicyRequest {
    repository_name: Option<String>,
    policy_text: Option<String>,
}

fn policy_not_found(reg: &Registry, name: &str) -> RegistryError {
    RegistryError::RepositoryPolicyNotFound(format!(
        "Repository policy does not exist for the repository with name '{name}' in the registry with id '{}'",
        reg.scope.account
    ))
}

pub(super) async fn set_policy(reg: &Registry, req: PolicyRequest) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    let text = req.policy_text.unwrap_or_default();
    if text.len() > 10240 || !serde_json::from_str::<Value>(&text).is_ok_and(|v| v.is_object()) {
        return Err(invalid("PolicyText", "Invalid repository policy provided"));
    }
    let record = PolicyText {
        policy_text: text.clone(),
    };
    reg.store
        .put_json(KIND_POLICY, &name, &record, Expect::Any)
        .await?;
    Ok(json!({"registryId": reg.scope.account, "repositoryName": name, "policyText": text}))
}

pub(super) async fn get_policy(reg: &Registry, req: PolicyRequest) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    let (p, _) = reg
        .store
        .get_json::<PolicyText>(KIND_POLICY, &name)
        .await?
        .ok_or_else(|| policy_not_found(reg, &name))?;
    Ok(
        json!({"registryId": reg.scope.account, "repositoryName": name, "policyText": p.policy_text}),
    )
}

pub(super) async fn delete_policy(
    reg: &Registry,
    req: PolicyRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    let (p, rev) = reg
        .store
        .get_json::<PolicyText>(KIND_POLICY, &name)
        .await?
        .ok_or_else(|| policy_not_found(reg, &name))?;
    match reg
        .store
        .commit(vec![Op::delete(KIND_POLICY, &name, Expect::Revision(rev))])
        .await
    {
        Ok(_) => {}
        Err(StoreError::Conflict { .. }) => return Err(policy_not_found(reg, &name)),
        Err(e) => return Err(e.into()),
    }
    Ok(
        json!({"registryId": reg.scope.account, "repositoryName": name, "policyText": p.policy_text}),
    )
}

/// The repository name an ECR repository ARN of this registry names.
fn repository_of_arn(reg: &Registry, arn: &str) -> Result<String, RegistryError> {
    let prefix = format!(
        "arn:aws:ecr:{}:{}:repository/",
        reg.scope.region, reg.scope.account
    );
    match arn.strip_prefix(&prefix) {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(RegistryError::InvalidParameter(format!(
            "Invalid parameter at 'resourceArn' failed to satisfy constraint: 'Invalid ARN {arn:?}: expected {prefix}<repository-name>'"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TagResourceRequest {
    resource_arn: Option<String>,
    #[serde(default)]
    tags: Vec<ResourceTag>,
}

pub(super) async fn tag_resource(
    reg: &Registry,
    req: TagResourceRequest,
) -> Result<Value, RegistryError> {
    let name = repository_of_arn(reg, req.resource_arn.as_deref().unwrap_or(""))?;
    validate_tags(&req.tags)?;
    update_repository(reg, &name, |r| {
        for t in &req.tags {
            match r.tags.iter_mut().find(|x| x.key == t.key) {
                Some(x) => x.value = t.value.clone(),
                None => r.tags.push(t.clone()),
            }
        }
        validate_tags(&r.tags)
    })
    .await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UntagResourceRequest {
    resource_arn: Option<String>,
    #[serde(default)]
    tag_keys: Vec<String>,
}

pub(super) async fn untag_resource(
    reg: &Registry,
    req: UntagResourceRequest,
) -> Result<Value, RegistryError> {
    let name = repository_of_arn(reg, req.resource_arn.as_deref().unwrap_or(""))?;
    update_repository(reg, &name, |r| {
        r.tags.retain(|t| !req.tag_keys.contains(&t.key));
        Ok(())
    })
    .await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListTagsRequest {
    resource_arn: Option<String>,
}

pub(super) async fn list_tags(
    reg: &Registry,
    req: ListTagsRequest,
) -> Result<Value, RegistryError> {
    let name = repository_of_arn(reg, req.resource_arn.as_deref().unwrap_or(""))?;
    let (repo, _) = reg.records().repository(&name).await?;
    Ok(json!({"tags": repo.tags}))
}

/// DescribeRegistry: berth replicates nowhere, so the replication configuration has no rules.
pub(super) fn describe_registry(reg: &Registry) -> Value {
    json!({"registryId": reg.scope.account, "replicationConfiguration": {"rules": []}})
}
