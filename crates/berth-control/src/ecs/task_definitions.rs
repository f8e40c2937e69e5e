//! RegisterTaskDefinition, DescribeTaskDefinition, ListTaskDefinitions,
//! ListTaskDefinitionFamilies, DeregisterTaskDefinition (ECS API reference; Fargate sizes per
//! the botocore model, see `berth_core::fargate`).

use std::collections::{BTreeSet, HashSet};

use berth_api::ecs::{
    ListRequest, RegisterTaskDefinitionRequest, Tag, TaskDefinition, TaskDefinitionRequest,
};
use berth_api::proto::AwsError;
use berth_core::fargate;
use berth_core::status::{TaskDefinitionFamilyStatus, TaskDefinitionStatus};
use berth_store::{Expect, Store, StoreExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{decode_token, max_results, page, taskdef_rules, TASKDEF};
use crate::{store_err, ControlPlane};

/// What is stored per task-definition revision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskDefRecord {
    pub task_definition: TaskDefinition,
    pub tags: Vec<Tag>,
}

pub(crate) fn taskdef_key(family: &str, revision: u32) -> String {
    format!("{family}:{revision:010}")
}

/// The `status` filter of ListTaskDefinitions and ListTaskDefinitionFamilies: ACTIVE when
/// absent, `ALL` (botocore `TaskDefinitionFamilyStatus`) matches every task definition, a
/// `TaskDefinitionStatus` matches its own, and any other value matches nothing (it is not
/// rejected).
fn status_filter(status: Option<&str>) -> impl Fn(TaskDefinitionStatus) -> bool {
    let status = status.unwrap_or(TaskDefinitionStatus::Active.as_str());
    let all = status.parse() == Ok(TaskDefinitionFamilyStatus::All);
    let want = status.parse::<TaskDefinitionStatus>().ok();
    move |s| all || want == Some(s)
}

fn valid_family(f: &str) -> bool {
    !f.is_empty()
        && f.len() <= 255
        && f.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn not_found() -> AwsError {
    AwsError::client_exception("Unable to describe task definition.")
}

/// Validates a registration and returns the normalised task-level (cpu units, memory MiB).
fn validate(req: &RegisterTaskDefinitionRequest) -> Result<(Option<u32>, Option<u32>), AwsError> {
    if !valid_family(&req.family) {
        return Err(AwsError::client_exception(
            "Family contains invalid characters. Up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed.",
        ));
    }
    if req.container_definitions.is_empty() {
        return Err(AwsError::client_exception(
            "Container list cannot be empty.",
        ));
    }
    let cpu = match &req.cpu {
        Some(s) => Some(fargate::parse_cpu(s).ok_or_else(|| {
            AwsError::client_exception(format!("Invalid 'cpu' setting for task: {s}"))
        })?),
        None => None,
    };
    let memory = match &req.memory {
        Some(s) => Some(fargate::parse_memory(s).ok_or_else(|| {
            AwsError::client_exception(format!("Invalid 'memory' setting for task: {s}"))
        })?),
        None => None,
    };
    if let Some(e) = req.extra.get("ephemeralStorage") {
        let gib = e.get("sizeInGiB").and_then(serde_json::Value::as_i64);
        if !gib.is_some_and(|g| (21..=200).contains(&g)) {
            return Err(AwsError::client_exception(
                "Invalid 'ephemeralStorage.sizeInGiB' setting for the task definition. The minimum supported value is 21 GiB and the maximum supported value is 200 GiB.",
            ));
        }
    }
    let mut names = HashSet::new();
    for c in &req.container_definitions {
        let name = c.name.as_deref().unwrap_or("");
        if name.is_empty() {
            return Err(AwsError::client_exception(
                "Container.name should not be null or empty.",
            ));
        }
        if !names.insert(name) {
            return Err(AwsError::client_exception(format!(
                "Duplicate container name found: {name}."
            )));
        }
        if c.image.as_deref().unwrap_or("").is_empty() {
            return Err(AwsError::client_exception(
                "Container.image should not be null or empty.",
            ));
        }
        if let Some(img) = c.image.as_deref() {
            berth_core::image_ref::ImageRef::parse(img).map_err(|e| {
                AwsError::client_exception(format!(
                    "Invalid setting for container '{name}': image {e}"
                ))
            })?;
        }
        if memory.is_none() && c.memory.is_none() && c.memory_reservation.is_none() {
            return Err(AwsError::client_exception(format!(
                "Invalid setting for container '{name}'. At least one of 'memory' or 'memoryReservation' must be specified."
            )));
        }
        if let (Some(m), Some(t)) = (c.memory, memory) {
            if m > t as i64 {
                return Err(AwsError::client_exception(format!(
                    "Invalid setting for container '{name}'. The container memory ({m} MiB) exceeds the task memory ({t} MiB)."
                )));
            }
        }
    }
    taskdef_rules::check_containers(&req.container_definitions)?;
    let fargate_required = req
        .requires_compatibilities
        .as_ref()
        .is_some_and(|r| r.iter().any(|x| x == "FARGATE"));
    if fargate_required {
        if req.network_mode.as_deref() != Some("awsvpc") {
            return Err(AwsError::client_exception(
                "Fargate only supports network mode 'awsvpc'.",
            ));
        }
        let (Some(c), Some(m)) = (cpu, memory) else {
            return Err(AwsError::client_exception(
                "Fargate requires that 'cpu' and 'memory' be defined at the task level.",
            ));
        };
        if !fargate::valid_size(c, m) {
            return Err(AwsError::client_exception(format!(
                "No Fargate configuration exists for given values: {c} CPU, {m} memory. See the Amazon ECS documentation for the possible combinations."
            )));
        }
        if let Some(why) = taskdef_rules::request_fargate_incompatibility(req) {
            return Err(AwsError::client_exception(why));
        }
    }
    if let Some(n) = req.network_mode.as_deref() {
        if !matches!(n, "bridge" | "host" | "awsvpc" | "none") {
            return Err(AwsError::invalid_parameter(format!(
                "Invalid networkMode: {n}"
            )));
        }
    }
    Ok((cpu, memory))
}

impl ControlPlane {
    /// Resolves `family`, `family:revision` or a task-definition ARN. A bare family means its
    /// latest ACTIVE revision.
    pub(crate) fn resolve_task_definition(
        &self,
        reference: &str,
    ) -> Result<TaskDefRecord, AwsError> {
        let (family, revision) =
            berth_core::arn::task_definition_ref(reference).ok_or_else(not_found)?;
        match revision {
            Some(rev) => self
                .store
                .get_json::<TaskDefRecord>(TASKDEF, &taskdef_key(&family, rev))
                .map_err(store_err)?
                .map(|(r, _)| r)
                .ok_or_else(not_found),
            None => self
                .store
                .list_json::<TaskDefRecord>(TASKDEF, &format!("{family}:"))
                .map_err(store_err)?
                .into_iter()
                .rev()
                .find(|r| r.task_definition.status == TaskDefinitionStatus::Active)
                .ok_or_else(not_found),
        }
    }

    pub(super) fn register_task_definition(
        &self,
        req: RegisterTaskDefinitionRequest,
    ) -> Result<Value, AwsError> {
        let (cpu, memory) = validate(&req)?;
        let revision = self
            .store
            .next_sequence(&format!("taskdef/{}", req.family))
            .map_err(store_err)? as u32;
        let containers = req
            .container_definitions
            .iter()
            .cloned()
            .map(|mut c| {
                c.cpu.get_or_insert(0);
                c.port_mappings.get_or_insert_with(Vec::new);
                c.essential.get_or_insert(true);
                c.environment.get_or_insert_with(Vec::new);
                c.mount_points.get_or_insert_with(Vec::new);
                c.volumes_from.get_or_insert_with(Vec::new);
                c
            })
            .collect();
        let fargate_ok = req.network_mode.as_deref() == Some("awsvpc")
            && matches!((cpu, memory), (Some(c), Some(m)) if fargate::valid_size(c, m))
            && taskdef_rules::request_fargate_incompatibility(&req).is_none();
        let td = TaskDefinition {
            task_definition_arn: self.scope.task_definition(&req.family, revision),
            container_definitions: containers,
            family: req.family.clone(),
            task_role_arn: req.task_role_arn.clone(),
            execution_role_arn: req.execution_role_arn.clone(),
            network_mode: Some(req.network_mode.clone().unwrap_or_else(|| "bridge".into())),
            revision,
            volumes: req.volumes.clone().unwrap_or_default(),
            status: TaskDefinitionStatus::Active,
            requires_attributes: vec![],
            placement_constraints: req.placement_constraints.clone().unwrap_or_default(),
            compatibilities: if fargate_ok {
                vec!["EC2".into(), "FARGATE".into()]
            } else {
                vec!["EC2".into()]
            },
            requires_compatibilities: req.requires_compatibilities.clone(),
            cpu: cpu.map(|c| c.to_string()),
            memory: memory.map(|m| m.to_string()),
            registered_at: berth_core::epoch_now(),
            deregistered_at: None,
            registered_by: Some(format!("arn:aws:iam::{}:root", self.scope.account)),
            extra: req.extra.clone(),
        };
        let rec = TaskDefRecord {
            task_definition: td.clone(),
            tags: req.tags.clone().unwrap_or_default(),
        };
        self.store
            .put_json(
                TASKDEF,
                &taskdef_key(&req.family, revision),
                &rec,
                Expect::Absent,
            )
            .map_err(store_err)?;
        Ok(json!({ "taskDefinition": td, "tags": rec.tags }))
    }

    pub(super) fn describe_task_definition(
        &self,
        req: TaskDefinitionRequest,
    ) -> Result<Value, AwsError> {
        let rec = self.resolve_task_definition(&req.task_definition)?;
        let mut out = json!({ "taskDefinition": rec.task_definition });
        if req
            .include
            .as_ref()
            .is_some_and(|i| i.iter().any(|x| x == "TAGS"))
        {
            out["tags"] = json!(rec.tags);
        }
        Ok(out)
    }

    pub(super) fn list_task_definitions(&self, req: ListRequest) -> Result<Value, AwsError> {
        let max = max_results(req.max_results)?;
        let token = decode_token(req.next_token.as_deref())?;
        let wanted = status_filter(req.status.as_deref());
        let prefix = req
            .family_prefix
            .as_deref()
            .map(|f| format!("{f}:"))
            .unwrap_or_default();
        let mut items: Vec<(String, String)> = self
            .store
            .list_json::<TaskDefRecord>(TASKDEF, &prefix)
            .map_err(store_err)?
            .into_iter()
            .map(|r| r.task_definition)
            .filter(|t| wanted(t.status))
            .map(|t| (taskdef_key(&t.family, t.revision), t.task_definition_arn))
            .collect();
        if req.sort.as_deref() == Some("DESC") {
            items.reverse();
            // Keys must still grow along the pages: index them by position.
            let items = items
                .into_iter()
                .enumerate()
                .map(|(i, (_, arn))| (format!("{i:010}"), arn))
                .collect();
            let (arns, next) = page(items, token, max);
            return Ok(json!({ "taskDefinitionArns": arns, "nextToken": next }));
        }
        let (arns, next) = page(items, token, max);
        Ok(json!({ "taskDefinitionArns": arns, "nextToken": next }))
    }

    pub(super) fn list_task_definition_families(
        &self,
        req: ListRequest,
    ) -> Result<Value, AwsError> {
        let max = max_results(req.max_results)?;
        let token = decode_token(req.next_token.as_deref())?;
        let wanted = status_filter(req.status.as_deref());
        let prefix = req.family_prefix.clone().unwrap_or_default();
        let families: BTreeSet<String> = self
            .store
            .list_json::<TaskDefRecord>(TASKDEF, &prefix)
            .map_err(store_err)?
            .into_iter()
            .map(|r| r.task_definition)
            .filter(|t| wanted(t.status))
            .map(|t| t.family)
            .collect();
        let items = families.into_iter().map(|f| (f.clone(), f)).collect();
        let (families, next) = page(items, token, max);
        Ok(json!({ "families": families, "nextToken": next }))
    }

    pub(super) fn deregister_task_definition(
        &self,
        req: TaskDefinitionRequest,
    ) -> Result<Value, AwsError> {
        let (family, revision) =
            berth_core::arn::task_definition_ref(&req.task_definition).ok_or_else(not_found)?;
        let Some(revision) = revision else {
            return Err(AwsError::client_exception(
                "Revision must be specified to deregister a task definition.",
            ));
        };
        let key = taskdef_key(&family, revision);
        loop {
            let (mut rec, rev) = self
                .store
                .get_json::<TaskDefRecord>(TASKDEF, &key)
                .map_err(store_err)?
                .ok_or_else(|| {
                    AwsError::client_exception("The specified task definition does not exist.")
                })?;
            if rec.task_definition.status == TaskDefinitionStatus::Active {
                rec.task_definition.status = TaskDefinitionStatus::Inactive;
                rec.task_definition.deregistered_at = Some(berth_core::epoch_now());
            }
            match self
                .store
                .put_json(TASKDEF, &key, &rec, Expect::Revision(rev))
            {
                Ok(()) => return Ok(json!({ "taskDefinition": rec.task_definition })),
                Err(berth_store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
    }
}
