//! TagResource, UntagResource, ListTagsForResource (ECS API reference) for clusters, task
//! definitions, tasks and services, named by ARN.

use berth_api::ecs::{Cluster, Tag, TagsRequest};
use berth_api::proto::AwsError;
use berth_core::status::{ClusterStatus, ServiceStatus};
use berth_store::{Expect, StoreError, StoreExt};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};

use super::task_definitions::{taskdef_key, TaskDefRecord};
use super::tasks::TaskRecord;
use super::{CLUSTER, SERVICE, TASK, TASKDEF};
use crate::controller::service::ServiceRecord;
use crate::{store_err, ControlPlane};

/// ECS allows at most 50 tags per resource.
const MAX_TAGS: usize = 50;

fn not_found() -> AwsError {
    AwsError::client(
        "ResourceNotFoundException",
        "The specified resource could not be found.",
    )
}

fn cluster_not_found() -> AwsError {
    AwsError::client("ClusterNotFoundException", "Cluster not found.")
}

/// Where a taggable resource lives in the store.
enum Target {
    Cluster(String),
    TaskDefinition(String),
    Task(String),
    Service(String),
}

fn target(arn: &str) -> Result<Target, AwsError> {
    let invalid = || AwsError::invalid_parameter(format!("Invalid resource ARN: {arn}"));
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" || parts[2] != "ecs" {
        return Err(invalid());
    }
    let (kind, rest) = parts[5].split_once('/').ok_or_else(invalid)?;
    match kind {
        "cluster" => Ok(Target::Cluster(rest.to_string())),
        "task-definition" => {
            let (family, rev) = rest.rsplit_once(':').ok_or_else(invalid)?;
            let rev: u32 = rev.parse().map_err(|_| invalid())?;
            Ok(Target::TaskDefinition(taskdef_key(family, rev)))
        }
        "task" if rest.contains('/') => Ok(Target::Task(rest.to_string())),
        "service" if rest.contains('/') => Ok(Target::Service(rest.to_string())),
        _ => Err(invalid()),
    }
}

impl ControlPlane {
    /// Reads and optionally rewrites the tags of `kind/key` under a revision check.
    fn edit_tags<T: Serialize + DeserializeOwned>(
        &self,
        kind: &str,
        key: &str,
        missing: fn() -> AwsError,
        tags: fn(&mut T) -> Option<&mut Vec<Tag>>,
        edit: &dyn Fn(&mut Vec<Tag>) -> Result<bool, AwsError>,
    ) -> Result<Vec<Tag>, AwsError> {
        loop {
            let (mut rec, rev) = self
                .store
                .get_json::<T>(kind, key)
                .map_err(store_err)?
                .ok_or_else(missing)?;
            let t = tags(&mut rec).ok_or_else(missing)?;
            if !edit(t)? {
                return Ok(t.clone());
            }
            let out = t.clone();
            match self.store.put_json(kind, key, &rec, Expect::Revision(rev)) {
                Ok(()) => return Ok(out),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
    }

    fn with_tags(
        &self,
        arn: &str,
        edit: &dyn Fn(&mut Vec<Tag>) -> Result<bool, AwsError>,
    ) -> Result<Vec<Tag>, AwsError> {
        match target(arn)? {
            Target::Cluster(name) => self.edit_tags::<Cluster>(
                CLUSTER,
                &name,
                cluster_not_found,
                |c| {
                    if c.status != ClusterStatus::Active {
                        return None;
                    }
                    Some(c.tags.get_or_insert_with(Vec::new))
                },
                edit,
            ),
            Target::TaskDefinition(key) => self.edit_tags::<TaskDefRecord>(
                TASKDEF,
                &key,
                not_found,
                |r| Some(&mut r.tags),
                edit,
            ),
            Target::Task(key) => self.edit_tags::<TaskRecord>(
                TASK,
                &key,
                not_found,
                |r| Some(r.task.tags.get_or_insert_with(Vec::new)),
                edit,
            ),
            Target::Service(key) => self.edit_tags::<ServiceRecord>(
                SERVICE,
                &key,
                not_found,
                |r| {
                    if r.service.status == ServiceStatus::Inactive {
                        return None;
                    }
                    Some(r.service.tags.get_or_insert_with(Vec::new))
                },
                edit,
            ),
        }
    }

    pub(super) fn tag_resource(&self, req: TagsRequest) -> Result<Value, AwsError> {
        let new = req.tags.clone().unwrap_or_default();
        if new
            .iter()
            .any(|t| t.key.as_deref().unwrap_or("").is_empty())
        {
            return Err(AwsError::invalid_parameter("Tag keys must not be empty."));
        }
        self.with_tags(&req.resource_arn, &|tags| {
            for t in &new {
                match tags.iter_mut().find(|x| x.key == t.key) {
                    Some(x) => x.value = t.value.clone(),
                    None => tags.push(t.clone()),
                }
            }
            if tags.len() > MAX_TAGS {
                return Err(AwsError::client(
                    "LimitExceededException",
                    "The resource can have at most 50 tags.",
                ));
            }
            Ok(true)
        })?;
        Ok(json!({}))
    }

    pub(super) fn untag_resource(&self, req: TagsRequest) -> Result<Value, AwsError> {
        let keys = req.tag_keys.clone().unwrap_or_default();
        self.with_tags(&req.resource_arn, &|tags| {
            let before = tags.len();
            tags.retain(|t| !t.key.as_ref().is_some_and(|k| keys.contains(k)));
            Ok(tags.len() != before)
        })?;
        Ok(json!({}))
    }

    pub(super) fn list_tags_for_resource(&self, req: TagsRequest) -> Result<Value, AwsError> {
        let tags = self.with_tags(&req.resource_arn, &|_| Ok(false))?;
        Ok(json!({ "tags": tags }))
    }
}
