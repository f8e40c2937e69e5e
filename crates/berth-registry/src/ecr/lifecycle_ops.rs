//! ECR lifecycle policy operations: Put/Get/DeleteLifecyclePolicy and
//! Start/GetLifecyclePolicyPreview, over [`crate::lifecycle`].
//!
//! A preview is evaluated synchronously when it is started, so StartLifecyclePolicyPreview and
//! GetLifecyclePolicyPreview answer `status: COMPLETE` (the `LifecyclePolicyPreviewComplete`
//! waiter succeeds at once). The stored policy is applied after every push and by the server's
//! periodic maintenance ([`crate::Registry::run_maintenance`]).

use berth_store::{Expect, Op, StoreError, StoreExt};
use serde::Deserialize;
use serde_json::{json, Value};

use super::images::ImageId;
use super::{invalid, paginate};
use crate::lifecycle::{self, PolicyRecord, PreviewRecord, PreviewResult};
use crate::records::{KIND_LIFECYCLE, KIND_LIFECYCLE_PREVIEW};
use crate::{Registry, RegistryError};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PolicyRequest {
    repository_name: Option<String>,
    lifecycle_policy_text: Option<String>,
}

/// Validates policy text (length 100–30720 as the model says, then [`lifecycle::parse`]).
fn validate(text: &str) -> Result<(), RegistryError> {
    let n = text.chars().count();
    if !(100..=30720).contains(&n) {
        return Err(invalid(
            "lifecyclePolicyText",
            "Member must have length less than or equal to 30720 and greater than or equal to 100",
        ));
    }
    lifecycle::parse(text).map(|_| ()).map_err(|m| {
        RegistryError::InvalidParameter(format!(
            "Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: 'Lifecycle policy validation failure: {m}'"
        ))
    })
}

fn not_found(reg: &Registry, name: &str) -> RegistryError {
    RegistryError::LifecyclePolicyNotFound(format!(
        "Lifecycle policy does not exist for the repository with name '{name}' in the registry with id '{}'",
        reg.scope.account
    ))
}

fn policy_json(reg: &Registry, name: &str, p: &PolicyRecord) -> Value {
    let mut v = json!({
        "registryId": reg.scope.account,
        "repositoryName": name,
        "lifecyclePolicyText": p.lifecycle_policy_text,
    });
    if let Some(t) = p.last_evaluated_at {
        v["lastEvaluatedAt"] = json!(t);
    }
    v
}

pub(super) async fn put(reg: &Registry, req: PolicyRequest) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    let text = req.lifecycle_policy_text.unwrap_or_default();
    validate(&text)?;
    let record = PolicyRecord {
        lifecycle_policy_text: text.clone(),
        last_evaluated_at: None,
    };
    reg.store
        .put_json(KIND_LIFECYCLE, &name, &record, Expect::Any)
        .await?;
    Ok(
        json!({"registryId": reg.scope.account, "repositoryName": name, "lifecyclePolicyText": text}),
    )
}

pub(super) async fn get(reg: &Registry, req: PolicyRequest) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    let (p, _) = reg
        .store
        .get_json::<PolicyRecord>(KIND_LIFECYCLE, &name)
        .await?
        .ok_or_else(|| not_found(reg, &name))?;
    Ok(policy_json(reg, &name, &p))
}

pub(super) async fn delete(reg: &Registry, req: PolicyRequest) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    let (p, rev) = reg
        .store
        .get_json::<PolicyRecord>(KIND_LIFECYCLE, &name)
        .await?
        .ok_or_else(|| not_found(reg, &name))?;
    match reg
        .store
        .commit(vec![Op::delete(
            KIND_LIFECYCLE,
            &name,
            Expect::Revision(rev),
        )])
        .await
    {
        Ok(_) => Ok(policy_json(reg, &name, &p)),
        Err(StoreError::Conflict { .. }) => Err(not_found(reg, &name)),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn start_preview(
    reg: &Registry,
    req: PolicyRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    let text = match req.lifecycle_policy_text {
        Some(t) => t,
        None => {
            reg.store
                .get_json::<PolicyRecord>(KIND_LIFECYCLE, &name)
                .await?
                .ok_or_else(|| not_found(reg, &name))?
                .0
                .lifecycle_policy_text
        }
    };
    validate(&text)?;
    let policy = lifecycle::parse(&text).map_err(RegistryError::InvalidParameter)?;
    let now = berth_core::epoch_now();
    let results = lifecycle::evaluate(&policy, &reg.lifecycle_candidates(&name).await?, now)
        .into_iter()
        .map(|(c, priority)| PreviewResult {
            image_digest: c.digest,
            image_tags: c.tags,
            image_pushed_at: c.pushed_at,
            applied_rule_priority: priority,
        })
        .collect();
    let record = PreviewRecord {
        lifecycle_policy_text: text.clone(),
        results,
    };
    reg.store
        .put_json(KIND_LIFECYCLE_PREVIEW, &name, &record, Expect::Any)
        .await?;
    Ok(json!({
        "registryId": reg.scope.account,
        "repositoryName": name,
        "lifecyclePolicyText": text,
        "status": "COMPLETE",
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GetPreviewRequest {
    repository_name: Option<String>,
    image_ids: Option<Vec<ImageId>>,
    next_token: Option<String>,
    max_results: Option<i64>,
    filter: Option<super::images::TagStatusFilter>,
}

pub(super) async fn get_preview(
    reg: &Registry,
    req: GetPreviewRequest,
) -> Result<Value, RegistryError> {
    let name = req.repository_name.unwrap_or_default();
    reg.records().repository(&name).await?;
    let (p, _) = reg
        .store
        .get_json::<PreviewRecord>(KIND_LIFECYCLE_PREVIEW, &name).await?
        .ok_or_else(|| {
            RegistryError::LifecyclePreviewNotFound(format!(
                "There is no lifecycle policy preview for the repository with name '{name}' in the registry with id '{}'",
                reg.scope.account
            ))
        })?;
    if let Some(n) = req.max_results {
        if !(1..=100).contains(&n) {
            return Err(invalid(
                "maxResults",
                "Member must have value between 1 and 100",
            ));
        }
    }
    let status = super::images::TagStatusFilter::status(req.filter)?;
    let total = p.results.len();
    let selected: Vec<Value> = p
        .results
        .into_iter()
        .filter(|r| super::images::TagStatusFilter::keeps(&status, !r.image_tags.is_empty()))
        .filter(|r| match &req.image_ids {
            None => true,
            Some(ids) => ids.iter().any(|id| {
                id.image_digest.as_deref() == Some(r.image_digest.as_str())
                    || id
                        .image_tag
                        .as_ref()
                        .is_some_and(|t| r.image_tags.contains(t))
            }),
        })
        .map(|r| {
            let mut v = json!({
                "imageDigest": r.image_digest,
                "imagePushedAt": r.image_pushed_at,
                "action": {"type": "EXPIRE"},
                "appliedRulePriority": r.applied_rule_priority,
            });
            if !r.image_tags.is_empty() {
                v["imageTags"] = json!(r.image_tags);
            }
            v
        })
        .collect();
    let (page, next) = paginate(selected, req.max_results, req.next_token.as_deref())?;
    let mut out = json!({
        "registryId": reg.scope.account,
        "repositoryName": name,
        "lifecyclePolicyText": p.lifecycle_policy_text,
        "status": "COMPLETE",
        "previewResults": page,
        "summary": {"expiringImageTotalCount": total},
    });
    if let Some(t) = next {
        out["nextToken"] = json!(t);
    }
    Ok(out)
}
