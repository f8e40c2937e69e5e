//! ECS operations (awsJson1.1 target prefix `AmazonEC2ContainerServiceV20141113`).
//!
//! Store layout: `ecs.cluster/<name>` -> [`Cluster`](berth_api::ecs::Cluster);
//! `ecs.taskdef/<family>:<revision, 10 digits>` -> `TaskDefinition`;
//! `ecs.task/<cluster>/<task-id>` -> [`tasks::TaskRecord`]; `ecs.active/<task-id>` -> the cluster
//! name of every task that is not STOPPED yet (what agents are assigned);
//! `ecs.service/<cluster>/<name>` -> [`ServiceRecord`](crate::controller::service::ServiceRecord)
//! (the service, its deployments, revisions, service deployments and owned task ids).

mod clusters;
mod launch;
pub(crate) mod services;
mod tags;
mod task_definitions;
mod taskdef_rules;
pub(crate) mod tasks;

use std::sync::Arc;

use berth_api::operation::{EcsOperation, Operation as _};
use berth_api::proto::{parse_body, AwsError};
use berth_apiserver::{AwsService, ErrorKind, ErrorTable, Input};
use serde_json::Value;

use crate::ControlPlane;

pub(crate) const CLUSTER: &str = "ecs.cluster";
pub(crate) const TASKDEF: &str = "ecs.taskdef";
pub(crate) const TASK: &str = "ecs.task";
pub(crate) const ACTIVE: &str = "ecs.active";
pub(crate) const SERVICE: &str = "ecs.service";

/// The cluster a request names (`cluster` member: name or ARN), `default` when absent.
pub(crate) fn cluster_name(cluster: Option<&str>) -> String {
    berth_core::arn::short_name(cluster.unwrap_or("default")).to_string()
}

/// Encodes a list position as a `nextToken` (opaque to clients).
pub(crate) fn next_token(last_key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last_key)
}

/// Decodes a `nextToken`; a token berth did not issue is an `InvalidParameterException`.
pub(crate) fn decode_token(token: Option<&str>) -> Result<Option<String>, AwsError> {
    use base64::Engine;
    match token {
        None => Ok(None),
        Some(t) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(Some)
            .ok_or_else(|| AwsError::invalid_parameter("Invalid nextToken.")),
    }
}

/// `maxResults` for List operations: 1..=100, default 100.
pub(crate) fn max_results(v: Option<i64>) -> Result<usize, AwsError> {
    match v {
        None => Ok(100),
        Some(n) if (1..=100).contains(&n) => Ok(n as usize),
        Some(_) => Err(AwsError::invalid_parameter(
            "maxResults must be between 1 and 100.",
        )),
    }
}

/// Pages `keys` (sorted) after the token position; returns the page and the next token.
pub(crate) fn page<T>(
    items: Vec<(String, T)>,
    token: Option<String>,
    max: usize,
) -> (Vec<T>, Option<String>) {
    let mut it = items
        .into_iter()
        .filter(|(k, _)| token.as_ref().is_none_or(|t| k.as_str() > t.as_str()))
        .peekable();
    let mut out = Vec::new();
    let mut last = None;
    while out.len() < max {
        match it.next() {
            Some((k, v)) => {
                last = Some(k);
                out.push(v);
            }
            None => break,
        }
    }
    let more = it.peek().is_some();
    (
        out,
        if more {
            last.map(|k| next_token(&k))
        } else {
            None
        },
    )
}

impl ControlPlane {
    /// Runs one ECS operation named `operation` (a wire name; an unknown one gives
    /// `UnknownOperationException`); `body` is the raw JSON request.
    pub async fn handle_ecs(&self, operation: &str, body: &[u8]) -> Result<Value, AwsError> {
        self.ecs(EcsOperation::parse(operation)?, body).await
    }

    /// Runs ECS operation `op`; `body` is the raw JSON request. A store conflict that escapes
    /// the handler runs it again ([`crate::retry_conflicts`]).
    pub async fn ecs(&self, op: EcsOperation, body: &[u8]) -> Result<Value, AwsError> {
        crate::retry_conflicts(|| self.ecs_once(op, body)).await
    }

    async fn ecs_once(&self, op: EcsOperation, body: &[u8]) -> Result<Value, AwsError> {
        use EcsOperation as Op;
        match op {
            Op::CreateCluster => self.create_cluster(parse_body(body)?).await,
            Op::DescribeClusters => self.describe_clusters(parse_body(body)?).await,
            Op::ListClusters => self.list_clusters(parse_body(body)?).await,
            Op::DeleteCluster => self.delete_cluster(parse_body(body)?).await,
            Op::RegisterTaskDefinition => self.register_task_definition(parse_body(body)?).await,
            Op::DescribeTaskDefinition => self.describe_task_definition(parse_body(body)?).await,
            Op::ListTaskDefinitions => self.list_task_definitions(parse_body(body)?).await,
            Op::ListTaskDefinitionFamilies => {
                self.list_task_definition_families(parse_body(body)?).await
            }
            Op::DeregisterTaskDefinition => {
                self.deregister_task_definition(parse_body(body)?).await
            }
            Op::RunTask => self.run_task(parse_body(body)?).await,
            Op::StopTask => self.stop_task(parse_body(body)?).await,
            Op::DescribeTasks => self.describe_tasks(parse_body(body)?).await,
            Op::ListTasks => self.list_tasks(parse_body(body)?).await,
            Op::CreateService => self.create_service(parse_body(body)?).await,
            Op::UpdateService => self.update_service(parse_body(body)?).await,
            Op::DeleteService => self.delete_service(parse_body(body)?).await,
            Op::DescribeServices => self.describe_services(parse_body(body)?).await,
            Op::ListServices => self.list_services(parse_body(body)?).await,
            Op::ListServiceDeployments => self.list_service_deployments(parse_body(body)?).await,
            Op::DescribeServiceDeployments => {
                self.describe_service_deployments(parse_body(body)?).await
            }
            Op::DescribeServiceRevisions => {
                self.describe_service_revisions(parse_body(body)?).await
            }
            Op::StopServiceDeployment => self.stop_service_deployment(parse_body(body)?).await,
            Op::TagResource => self.tag_resource(parse_body(body)?).await,
            Op::UntagResource => self.untag_resource(parse_body(body)?).await,
            Op::ListTagsForResource => self.list_tags_for_resource(parse_body(body)?).await,
        }
    }
}

/// ECS's error names (botocore `ecs/2014-11-13`): every ECS error is HTTP 400 except
/// `ServerException` (500).
pub static ERRORS: ErrorTable = ErrorTable {
    rows: &[
        (
            ErrorKind::NotFound,
            Some("Cluster"),
            "ClusterNotFoundException",
            400,
        ),
        (
            ErrorKind::NotFound,
            Some("Service"),
            "ServiceNotFoundException",
            400,
        ),
        (
            ErrorKind::NotFound,
            Some("ServiceDeployment"),
            "ServiceDeploymentNotFoundException",
            400,
        ),
        (
            ErrorKind::NotFound,
            Some("TaskDefinition"),
            "ClientException",
            400,
        ),
        (
            ErrorKind::Conflict,
            Some("Service"),
            "ServiceNotActiveException",
            400,
        ),
    ],
    defaults: &[
        (ErrorKind::NotFound, "ResourceNotFoundException", 400),
        (ErrorKind::AlreadyExists, "InvalidParameterException", 400),
        (ErrorKind::InvalidArgument, "InvalidParameterException", 400),
        (ErrorKind::Conflict, "ConflictException", 400),
        (ErrorKind::LimitExceeded, "LimitExceededException", 400),
        (ErrorKind::Unauthorized, "AccessDeniedException", 400),
        (ErrorKind::Unsupported, "UnsupportedFeatureException", 400),
        (ErrorKind::Internal, "ServerException", 500),
    ],
};

/// ECS as an [`AwsService`] (awsJson1.1, target prefix `AmazonEC2ContainerServiceV20141113`,
/// signing name `ecs`).
pub struct EcsApi(pub Arc<ControlPlane>);

impl AwsService for EcsApi {
    type Operation = EcsOperation;
    fn signing_name(&self) -> &'static str {
        "ecs"
    }
    fn json_target_prefix(&self) -> &'static str {
        berth_api::proto::ECS_PREFIX
    }
    fn errors(&self) -> &'static ErrorTable {
        &ERRORS
    }
    async fn call(&self, op: EcsOperation, input: Input<'_>) -> Result<Value, AwsError> {
        self.0.ecs(op, &input.json_bytes()).await
    }
}
