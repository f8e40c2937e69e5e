//! RunTask, StopTask, DescribeTasks, ListTasks (ECS API reference), and how agent reports move a
//! task through its life cycle (PROVISIONING -> PENDING -> RUNNING -> STOPPED).

use berth_api::agent::{
    ContainerDependencySpec, ContainerSpec, HealthCheckSpec, LogDestination, MountPointSpec,
    PortMappingSpec, TaskSpec, TaskStateReport, UlimitSpec, VolumeFromSpec, VolumeSpec,
};
use berth_api::ecs::{
    Attachment, Container, DescribeTasksRequest, Failure, KeyValuePair, ListRequest,
    RunTaskRequest, StopTaskRequest, Task, TaskOverride,
};
use berth_api::proto::AwsError;
use berth_core::status::{
    ContainerStatus, DesiredStatus, HealthStatus, StopCode, TaskDefinitionStatus, TaskStatus,
};
use berth_core::{epoch_now, fargate};
use berth_store::{Expect, Op, StoreError, StoreExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::launch;
use super::task_definitions::TaskDefRecord;
use super::{cluster_name, decode_token, max_results, page, ACTIVE, TASK};
use crate::{store_err, ControlPlane};

/// What is stored per task: the API view, the resolved spec agents run, and bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskRecord {
    pub task: Task,
    pub spec: TaskSpec,
    /// The container instance the task is placed on.
    pub instance: String,
    /// Set when StopTask asked for the stop (then the stop code is UserInitiated).
    #[serde(default)]
    pub user_stop_reason: Option<String>,
    /// Set when the service scheduler stopped the task (stop code ServiceSchedulerInitiated).
    #[serde(default)]
    pub scheduler_stop_reason: Option<String>,
}

fn task_key(cluster: &str, id: &str) -> String {
    format!("{cluster}/{id}")
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Builds the agent's view of one container: definition + override, sizes in ECS units.
fn container_spec(
    def: &berth_api::ecs::ContainerDefinition,
    ov: Option<&berth_api::ecs::ContainerOverride>,
    task_id: &str,
) -> ContainerSpec {
    let name = def.name.clone().unwrap_or_default();
    let mut environment: Vec<(String, String)> = Vec::new();
    let mut push_env = |list: &Option<Vec<KeyValuePair>>| {
        for kv in list.iter().flatten() {
            if let Some(n) = &kv.name {
                let v = kv.value.clone().unwrap_or_default();
                environment.retain(|(k, _)| k != n);
                environment.push((n.clone(), v));
            }
        }
    };
    push_env(&def.environment);
    if let Some(o) = ov {
        push_env(&o.environment);
    }
    let log = def.log_configuration.as_ref().and_then(|l| {
        if l.log_driver != "awslogs" {
            return None;
        }
        let opts = l.options.as_ref()?;
        let group = opts.get("awslogs-group")?.clone();
        let stream = match opts.get("awslogs-stream-prefix") {
            Some(p) => format!("{p}/{name}/{task_id}"),
            None => format!("{name}/{task_id}"),
        };
        Some(LogDestination { group, stream })
    });
    let pos = |v: Option<i64>| v.filter(|x| *x > 0).map(|x| x as u32);
    ContainerSpec {
        name: name.clone(),
        image: def.image.clone().unwrap_or_default(),
        entry_point: def.entry_point.clone(),
        command: ov
            .and_then(|o| o.command.clone())
            .or_else(|| def.command.clone()),
        environment,
        working_directory: def.working_directory.clone(),
        user: def.user.clone(),
        essential: def.essential.unwrap_or(true),
        stop_timeout: def
            .stop_timeout
            .map(|s| s.clamp(0, 120) as u32)
            .unwrap_or(30),
        cpu: ov.and_then(|o| o.cpu).or(def.cpu).unwrap_or(0).max(0) as u32,
        memory: pos(ov.and_then(|o| o.memory).or(def.memory)),
        memory_reservation: pos(ov
            .and_then(|o| o.memory_reservation)
            .or(def.memory_reservation)),
        readonly_root_filesystem: def.readonly_root_filesystem.unwrap_or(false),
        log,
        health_check: def.health_check.as_ref().map(|h| HealthCheckSpec {
            command: h.command.clone(),
            interval: h.interval.unwrap_or(30).clamp(5, 300) as u32,
            timeout: h.timeout.unwrap_or(5).clamp(2, 60) as u32,
            retries: h.retries.unwrap_or(3).clamp(1, 10) as u32,
            start_period: h.start_period.unwrap_or(0).clamp(0, 300) as u32,
        }),
        depends_on: def
            .depends_on
            .iter()
            .flatten()
            .map(|d| ContainerDependencySpec {
                container_name: d.container_name.clone(),
                condition: d.condition.clone(),
            })
            .collect(),
        port_mappings: def
            .port_mappings
            .iter()
            .flatten()
            .filter_map(|p| {
                let cp = p.get("containerPort")?.as_u64()? as u16;
                Some(PortMappingSpec {
                    container_port: cp,
                    host_port: p
                        .get("hostPort")
                        .and_then(Value::as_u64)
                        .filter(|h| *h > 0)
                        .map(|h| h as u16)
                        .unwrap_or(cp),
                    protocol: p
                        .get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("tcp")
                        .to_string(),
                })
            })
            .collect(),
        ulimits: def
            .extra
            .get("ulimits")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|u| {
                Some(UlimitSpec {
                    name: u.get("name")?.as_str()?.to_string(),
                    soft: u.get("softLimit")?.as_i64()?,
                    hard: u.get("hardLimit")?.as_i64()?,
                })
            })
            .collect(),
        cap_add: linux_caps(def, "add"),
        cap_drop: linux_caps(def, "drop"),
        init_process_enabled: def
            .extra
            .get("linuxParameters")
            .and_then(|l| l.get("initProcessEnabled"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        mount_points: def
            .mount_points
            .iter()
            .flatten()
            .filter_map(|m| {
                Some(MountPointSpec {
                    source_volume: m.get("sourceVolume")?.as_str()?.to_string(),
                    container_path: m.get("containerPath")?.as_str()?.to_string(),
                    read_only: m.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
                })
            })
            .collect(),
        volumes_from: def
            .volumes_from
            .iter()
            .flatten()
            .filter_map(|m| {
                Some(VolumeFromSpec {
                    source_container: m.get("sourceContainer")?.as_str()?.to_string(),
                    read_only: m.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
                })
            })
            .collect(),
        privileged: def.privileged.unwrap_or(false),
        repository_credentials: def
            .extra
            .get("repositoryCredentials")
            .and_then(|r| r.get("credentialsParameter"))
            .and_then(Value::as_str)
            .map(String::from),
    }
}

/// `linuxParameters.capabilities.<which>` of a container definition.
fn linux_caps(def: &berth_api::ecs::ContainerDefinition, which: &str) -> Vec<String> {
    def.extra
        .get("linuxParameters")
        .and_then(|l| l.get("capabilities"))
        .and_then(|c| c.get(which))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

/// `ephemeralStorage.sizeInGiB` of a task definition or task override (their unmodelled
/// fields).
fn ephemeral_storage_gib(extra: &serde_json::Map<String, Value>) -> Option<u32> {
    extra
        .get("ephemeralStorage")?
        .get("sizeInGiB")?
        .as_u64()
        .and_then(|g| u32::try_from(g).ok())
}

/// Task `volumes` for the agent: `host.sourcePath` or a scratch directory.
fn volume_specs(volumes: &[Value]) -> Vec<VolumeSpec> {
    volumes
        .iter()
        .filter_map(|v| {
            Some(VolumeSpec {
                name: v.get("name")?.as_str()?.to_string(),
                host_path: v
                    .get("host")
                    .and_then(|h| h.get("sourcePath"))
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
                    .map(String::from),
            })
        })
        .collect()
}

/// Task `healthStatus` from its essential containers that have a health check: UNHEALTHY if
/// any is, HEALTHY if all are, UNKNOWN otherwise (ECS "Container health checks").
fn task_health(spec: &TaskSpec, containers: &[Container]) -> HealthStatus {
    let checked: Vec<HealthStatus> = spec
        .containers
        .iter()
        .filter(|c| c.essential && c.health_check.is_some())
        .filter_map(|c| containers.iter().find(|x| x.name == c.name))
        .map(|c| c.health_status)
        .collect();
    if checked.contains(&HealthStatus::Unhealthy) {
        HealthStatus::Unhealthy
    } else if !checked.is_empty() && checked.iter().all(|h| *h == HealthStatus::Healthy) {
        HealthStatus::Healthy
    } else {
        HealthStatus::Unknown
    }
}

/// The capacity provider the `n`th task (0-based) launched with `strategy` runs on, as ECS
/// spreads tasks: each provider's `base` is filled first (in strategy order), the rest go
/// round-robin in proportion to `weight` (all weights 0: the first provider). `None` without a
/// (non-empty) strategy.
pub(crate) fn capacity_provider_for(strategy: Option<&[Value]>, n: usize) -> Option<String> {
    let items: Vec<(String, usize, usize)> = strategy?
        .iter()
        .filter_map(|v| {
            let name = v.get("capacityProvider")?.as_str()?.to_string();
            let num = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
            Some((name, num("base"), num("weight")))
        })
        .collect();
    let mut left = n;
    for (name, base, _) in &items {
        if left < *base {
            return Some(name.clone());
        }
        left -= base;
    }
    let total: usize = items.iter().map(|i| i.2).sum();
    if total == 0 {
        return items.first().map(|i| i.0.clone());
    }
    let mut slot = left % total;
    for (name, _, weight) in &items {
        if slot < *weight {
            return Some(name.clone());
        }
        slot -= weight;
    }
    None
}

/// Everything needed to mint one task record (RunTask and the service scheduler).
pub(crate) struct NewTask<'a> {
    pub cluster: &'a str,
    pub cluster_arn: &'a str,
    pub td: &'a berth_api::ecs::TaskDefinition,
    pub launch_type: &'a str,
    pub vpc: Option<&'a berth_api::ecs::AwsVpcConfiguration>,
    pub overrides: &'a TaskOverride,
    /// Task size: CPU units and MiB.
    pub cpu: Option<u32>,
    pub memory: Option<u32>,
    pub group: String,
    pub started_by: Option<String>,
    pub tags: Vec<berth_api::ecs::Tag>,
    pub platform_version: Option<String>,
    pub enable_execute_command: bool,
    /// The task id to use (a fresh one when None).
    pub task_id: Option<String>,
}

impl ControlPlane {
    /// Builds a new PROVISIONING task record (not stored) with a fresh task id.
    pub(crate) fn build_task_record(&self, n: &NewTask<'_>) -> TaskRecord {
        let now = epoch_now();
        let id = n.task_id.clone().unwrap_or_else(new_id);
        let task_arn = self.scope.task(n.cluster, &id);
        let ephemeral_gib = ephemeral_storage_gib(&n.overrides.extra)
            .or_else(|| ephemeral_storage_gib(&n.td.extra));
        let containers: Vec<ContainerSpec> =
            n.td.container_definitions
                .iter()
                .map(|d| {
                    let ov = n
                        .overrides
                        .container_overrides
                        .iter()
                        .find(|o| o.name == d.name);
                    container_spec(d, ov, &id)
                })
                .collect();
        let api_containers = containers
            .iter()
            .map(|c| Container {
                container_arn: self.scope.container(n.cluster, &id, &new_id()),
                task_arn: task_arn.clone(),
                name: c.name.clone(),
                image: c.image.clone(),
                last_status: ContainerStatus::Pending,
                health_status: HealthStatus::Unknown,
                cpu: c.cpu.to_string(),
                memory: c.memory.map(|m| m.to_string()),
                memory_reservation: c.memory_reservation.map(|m| m.to_string()),
                ..Default::default()
            })
            .collect();
        let attachments = n
            .vpc
            .map(|v| {
                vec![Attachment {
                    id: uuid::Uuid::new_v4().to_string(),
                    attachment_type: "ElasticNetworkInterface".into(),
                    status: "ATTACHED".into(),
                    details: vec![KeyValuePair {
                        name: Some("subnetId".into()),
                        value: Some(v.subnets[0].clone()),
                    }],
                }]
            })
            .unwrap_or_default();
        let task = Task {
            attachments,
            availability_zone: format!("{}a", self.scope.region),
            cluster_arn: n.cluster_arn.to_string(),
            connectivity: "CONNECTED".into(),
            connectivity_at: now,
            containers: api_containers,
            cpu: n.cpu.map(|c| c.to_string()),
            created_at: now,
            desired_status: DesiredStatus::Running,
            enable_execute_command: n.enable_execute_command,
            group: Some(n.group.clone()),
            health_status: HealthStatus::Unknown,
            last_status: TaskStatus::Provisioning,
            launch_type: n.launch_type.to_string(),
            memory: n.memory.map(|m| m.to_string()),
            overrides: TaskOverride {
                container_overrides: n.overrides.container_overrides.clone(),
                ..n.overrides.clone()
            },
            platform_version: (n.launch_type == "FARGATE")
                .then(|| n.platform_version.clone().unwrap_or_else(|| "1.4.0".into())),
            platform_family: (n.launch_type == "FARGATE").then(|| "Linux".into()),
            started_by: n.started_by.clone(),
            tags: Some(n.tags.clone()),
            task_arn: task_arn.clone(),
            task_definition_arn: n.td.task_definition_arn.clone(),
            version: 1,
            ephemeral_storage: (n.launch_type == "FARGATE")
                .then(|| json!({"sizeInGiB": ephemeral_gib.unwrap_or(20)})),
            ..Default::default()
        };
        let rec = TaskRecord {
            spec: TaskSpec {
                task_id: id.clone(),
                task_arn,
                cluster_name: n.cluster.to_string(),
                cpu: n.cpu,
                memory: n.memory,
                containers,
                family: n.td.family.clone(),
                revision: n.td.revision as i64,
                task_definition_arn: n.td.task_definition_arn.clone(),
                launch_type: n.launch_type.to_string(),
                availability_zone: format!("{}a", self.scope.region),
                awsvpc: n.td.network_mode.as_deref() == Some("awsvpc"),
                volumes: volume_specs(&n.td.volumes),
                ephemeral_storage_gib: ephemeral_gib,
            },
            task: task.clone(),
            instance: self.instance_id.clone(),
            user_stop_reason: None,
            scheduler_stop_reason: None,
        };
        rec
    }
}

impl ControlPlane {
    pub(crate) async fn load_task(
        &self,
        cluster: &str,
        id: &str,
    ) -> Result<Option<TaskRecord>, AwsError> {
        Ok(self
            .store
            .get_json::<TaskRecord>(TASK, &task_key(cluster, id))
            .await
            .map_err(store_err)?
            .map(|(r, _)| r))
    }

    pub(super) async fn run_task(&self, req: RunTaskRequest) -> Result<Value, AwsError> {
        let cluster = cluster_name(req.cluster.as_deref());
        let cluster_rec = self.active_cluster(&cluster).await?;
        let count = req.count.unwrap_or(1);
        if !(1..=10).contains(&count) {
            return Err(AwsError::invalid_parameter(
                "count must be between 1 and 10.",
            ));
        }
        let TaskDefRecord {
            task_definition: td,
            tags: td_tags,
        } = self.resolve_task_definition(&req.task_definition).await?;
        if td.status != TaskDefinitionStatus::Active {
            return Err(AwsError::client_exception("TaskDefinition is inactive"));
        }
        let launch_type = launch::launch_type(
            req.launch_type.as_deref(),
            req.capacity_provider_strategy.is_some(),
        )?;
        launch::check_launch(&td, &launch_type, req.network_configuration.as_ref())?;
        let vpc = req
            .network_configuration
            .as_ref()
            .and_then(|n| n.awsvpc_configuration.clone());
        let overrides = req.overrides.clone().unwrap_or_default();
        for o in &overrides.container_overrides {
            let n = o.name.as_deref().unwrap_or("");
            if !td
                .container_definitions
                .iter()
                .any(|c| c.name.as_deref() == Some(n))
            {
                return Err(AwsError::invalid_parameter(format!(
                    "Override for container named {n} is not a container in the TaskDefinition."
                )));
            }
        }
        if let Some(e) = overrides.extra.get("ephemeralStorage") {
            let gib = e.get("sizeInGiB").and_then(Value::as_i64);
            if !gib.is_some_and(|g| (21..=200).contains(&g)) {
                return Err(AwsError::invalid_parameter(
                    "Invalid 'ephemeralStorage.sizeInGiB' override. The minimum supported value is 21 GiB and the maximum supported value is 200 GiB.",
                ));
            }
        }
        let parse = |v: &Option<String>,
                     f: fn(&str) -> Option<u32>,
                     what: &str|
         -> Result<Option<u32>, AwsError> {
            match v {
                Some(s) => f(s).map(Some).ok_or_else(|| {
                    AwsError::invalid_parameter(format!("Invalid '{what}' override: {s}"))
                }),
                None => Ok(None),
            }
        };
        let cpu = parse(&overrides.cpu, fargate::parse_cpu, "cpu")?
            .or_else(|| td.cpu.as_deref().and_then(fargate::parse_cpu));
        let memory = parse(&overrides.memory, fargate::parse_memory, "memory")?
            .or_else(|| td.memory.as_deref().and_then(fargate::parse_memory));
        if launch_type == "FARGATE" && (overrides.cpu.is_some() || overrides.memory.is_some()) {
            let ok = matches!((cpu, memory), (Some(c), Some(m)) if fargate::valid_size(c, m));
            if !ok {
                return Err(AwsError::client_exception(format!(
                    "No Fargate configuration exists for given values: {} CPU, {} memory. See the Amazon ECS documentation for the possible combinations.",
                    cpu.unwrap_or(0),
                    memory.unwrap_or(0)
                )));
            }
        }
        let mut ops = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..count {
            let mut rec = self.build_task_record(&NewTask {
                cluster: &cluster,
                cluster_arn: &cluster_rec.cluster_arn,
                td: &td,
                launch_type: &launch_type,
                vpc: vpc.as_ref(),
                overrides: &overrides,
                cpu,
                memory,
                group: req
                    .group
                    .clone()
                    .unwrap_or_else(|| format!("family:{}", td.family)),
                started_by: req.started_by.clone(),
                tags: req.tags.clone().unwrap_or_else(|| td_tags.clone()),
                platform_version: req.platform_version.clone(),
                enable_execute_command: req.enable_execute_command.unwrap_or(false),
                task_id: None,
            });
            rec.task.capacity_provider_name =
                capacity_provider_for(req.capacity_provider_strategy.as_deref(), i as usize);
            let id = rec.spec.task_id.clone();
            ops.push(
                Op::put(TASK, &task_key(&cluster, &id), &rec, Expect::Absent).map_err(store_err)?,
            );
            ops.push(Op::put(ACTIVE, &id, &cluster, Expect::Absent).map_err(store_err)?);
            tasks.push(rec.task);
        }
        self.store.commit(ops).await.map_err(store_err)?;
        Ok(json!({ "tasks": tasks, "failures": [] }))
    }

    /// Applies `f` to a task record under optimistic concurrency; returns the stored result.
    /// `f` returns false to leave the record unchanged.
    async fn update_task(
        &self,
        cluster: &str,
        id: &str,
        mut f: impl FnMut(&mut TaskRecord) -> bool,
    ) -> Result<Option<TaskRecord>, AwsError> {
        let key = task_key(cluster, id);
        loop {
            let Some((mut rec, rev)) = self
                .store
                .get_json::<TaskRecord>(TASK, &key)
                .await
                .map_err(store_err)?
            else {
                return Ok(None);
            };
            if !f(&mut rec) {
                return Ok(Some(rec));
            }
            rec.task.version += 1;
            let mut ops =
                vec![Op::put(TASK, &key, &rec, Expect::Revision(rev)).map_err(store_err)?];
            if rec.task.last_status == TaskStatus::Stopped {
                ops.push(Op::delete(ACTIVE, id, Expect::Any));
            }
            match self.store.commit(ops).await {
                Ok(_) => {
                    return Ok(Some(rec));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
    }

    pub(super) async fn stop_task(&self, req: StopTaskRequest) -> Result<Value, AwsError> {
        let cluster = cluster_name(req.cluster.as_deref());
        self.active_cluster(&cluster).await?;
        let id = berth_core::arn::short_name(&req.task).to_string();
        let reason = req
            .reason
            .clone()
            .unwrap_or_else(|| "Task stopped by user".to_string());
        let rec = self
            .update_task(&cluster, &id, |rec| {
                if rec.task.desired_status == DesiredStatus::Stopped {
                    return false;
                }
                rec.task.desired_status = DesiredStatus::Stopped;
                rec.task.stopping_at = Some(epoch_now());
                rec.task.stop_code = Some(StopCode::UserInitiated);
                rec.task.stopped_reason = Some(reason.clone());
                rec.user_stop_reason = Some(reason.clone());
                true
            })
            .await?
            .ok_or_else(|| AwsError::invalid_parameter("The referenced task was not found."))?;
        Ok(json!({ "task": rec.task }))
    }

    pub(super) async fn describe_tasks(
        &self,
        req: DescribeTasksRequest,
    ) -> Result<Value, AwsError> {
        let cluster = cluster_name(req.cluster.as_deref());
        self.active_cluster(&cluster).await?;
        if req.tasks.len() > 100 {
            return Err(AwsError::invalid_parameter(
                "tasks can have at most 100 items.",
            ));
        }
        let include_tags = req
            .include
            .as_ref()
            .is_some_and(|i| i.iter().any(|x| x == "TAGS"));
        let mut tasks = Vec::new();
        let mut failures = Vec::new();
        for t in &req.tasks {
            let id = berth_core::arn::short_name(t);
            match self.load_task(&cluster, id).await? {
                Some(mut rec) => {
                    if !include_tags {
                        rec.task.tags = None;
                    }
                    tasks.push(rec.task)
                }
                None => failures.push(Failure {
                    arn: if t.starts_with("arn:") {
                        t.clone()
                    } else {
                        self.scope.task(&cluster, id)
                    },
                    reason: "MISSING".into(),
                    detail: None,
                }),
            }
        }
        Ok(json!({ "tasks": tasks, "failures": failures }))
    }

    pub(super) async fn list_tasks(&self, req: ListRequest) -> Result<Value, AwsError> {
        let cluster = cluster_name(req.cluster.as_deref());
        self.active_cluster(&cluster).await?;
        let max = max_results(req.max_results)?;
        let token = decode_token(req.next_token.as_deref())?;
        let desired = match req.desired_status.as_deref() {
            None => DesiredStatus::Running,
            Some(d) => d
                .parse::<DesiredStatus>()
                .map_err(|_| AwsError::invalid_parameter(format!("Invalid desiredStatus: {d}")))?,
        };
        let family = req.family.as_deref();
        let service_group = match req.service_name.as_deref() {
            Some(svc) => {
                let name = berth_core::arn::short_name(svc);
                if self.load_service(&cluster, name).await?.is_none() {
                    return Err(super::services::service_not_found());
                }
                Some(format!("service:{name}"))
            }
            None => None,
        };
        let items: Vec<(String, String)> = self
            .store
            .list_json::<TaskRecord>(TASK, &format!("{cluster}/"))
            .await
            .map_err(store_err)?
            .into_iter()
            .map(|r| r.task)
            .filter(|t| match desired {
                DesiredStatus::Pending => {
                    t.desired_status == DesiredStatus::Running
                        && t.last_status != TaskStatus::Running
                }
                d => t.desired_status == d,
            })
            .filter(|t| {
                family.is_none_or(|f| {
                    berth_core::arn::task_definition_ref(&t.task_definition_arn)
                        .is_some_and(|(fam, _)| fam == f)
                })
            })
            .filter(|t| {
                req.started_by
                    .as_ref()
                    .is_none_or(|s| t.started_by.as_ref() == Some(s))
            })
            .filter(|t| req.launch_type.as_ref().is_none_or(|l| &t.launch_type == l))
            .filter(|t| {
                service_group
                    .as_ref()
                    .is_none_or(|g| t.group.as_ref() == Some(g))
            })
            .map(|t| {
                (
                    berth_core::arn::short_name(&t.task_arn).to_string(),
                    t.task_arn,
                )
            })
            .collect();
        let (arns, next) = page(items, token, max);
        Ok(json!({ "taskArns": arns, "nextToken": next }))
    }

    /// Every not-yet-STOPPED task placed on `instance`, with its desired status.
    pub(crate) async fn assigned_tasks(&self, instance: &str) -> Result<Vec<TaskRecord>, AwsError> {
        let mut out = Vec::new();
        for r in self.store.list(ACTIVE, "").await.map_err(store_err)? {
            let cluster: String = r.decode().map_err(store_err)?;
            if let Some(rec) = self.load_task(&cluster, &r.key).await? {
                if rec.instance == instance && rec.task.last_status != TaskStatus::Stopped {
                    out.push(rec);
                }
            }
        }
        Ok(out)
    }

    /// Folds an agent's report into the task: statuses only move forward, timestamps are set
    /// once, a stop asked for by StopTask keeps its UserInitiated code and reason.
    pub(crate) async fn apply_report(
        &self,
        task_id: &str,
        report: &TaskStateReport,
    ) -> Result<bool, AwsError> {
        let Some(r) = self.store.get(ACTIVE, task_id).await.map_err(store_err)? else {
            return Ok(false);
        };
        let cluster: String = r.decode().map_err(store_err)?;
        let updated = self
            .update_task(&cluster, task_id, |rec| {
                let t = &mut rec.task;
                if t.last_status.is_terminal() {
                    return false;
                }
                t.last_status = t.last_status.next(report.last_status);
                t.pull_started_at = t.pull_started_at.or(report.pull_started_at);
                t.pull_stopped_at = t.pull_stopped_at.or(report.pull_stopped_at);
                t.started_at = t.started_at.or(report.started_at);
                for c in &report.containers {
                    if let Some(tc) = t.containers.iter_mut().find(|x| x.name == c.name) {
                        tc.last_status = tc.last_status.next(c.last_status);
                        tc.exit_code = c.exit_code.or(tc.exit_code);
                        tc.reason = c.reason.clone().or(tc.reason.take());
                        tc.runtime_id = c.runtime_id.clone().or(tc.runtime_id.take());
                        tc.image_digest = c.image_digest.clone().or(tc.image_digest.take());
                        if let Some(h) = c.health_status {
                            tc.health_status = h;
                        }
                    }
                }
                if let Some(n) = &report.network {
                    apply_network(t, n);
                }
                for c in &report.containers {
                    if c.network_bindings.is_empty() {
                        continue;
                    }
                    if let Some(tc) = t.containers.iter_mut().find(|x| x.name == c.name) {
                        tc.network_bindings = c
                            .network_bindings
                            .iter()
                            .map(|b| {
                                json!({"bindIP": "127.0.0.1", "containerPort": b.container_port,
                                   "hostPort": b.host_port, "protocol": b.protocol})
                            })
                            .collect();
                    }
                }
                t.health_status = task_health(&rec.spec, &t.containers);
                if t.last_status.is_terminal() {
                    let now = epoch_now();
                    t.desired_status = DesiredStatus::Stopped;
                    t.stopped_at = Some(report.stopped_at.unwrap_or(now));
                    t.execution_stopped_at = t.stopped_at;
                    t.stopping_at = t.stopping_at.or(t.stopped_at);
                    if let Some(reason) = &rec.user_stop_reason {
                        t.stop_code = Some(StopCode::UserInitiated);
                        t.stopped_reason = Some(reason.clone());
                    } else if let Some(reason) = &rec.scheduler_stop_reason {
                        t.stop_code = Some(StopCode::ServiceSchedulerInitiated);
                        t.stopped_reason = Some(reason.clone());
                    } else {
                        t.stop_code = report.stop_code;
                        t.stopped_reason = report.stopped_reason.clone();
                    }
                    for c in &mut t.containers {
                        c.last_status = ContainerStatus::Stopped;
                    }
                }
                true
            })
            .await?;
        Ok(updated.is_some())
    }
}

/// Fills the ENI attachment's details and each container's `networkInterfaces` from the
/// agent's network report (ECS DescribeTasks shape: `privateIPv4Address`, `macAddress`,
/// `privateDnsName`, `subnetId`, `networkInterfaceId`).
fn apply_network(t: &mut Task, n: &berth_api::agent::NetworkReport) {
    let Some(att) = t
        .attachments
        .iter_mut()
        .find(|a| a.attachment_type == "ElasticNetworkInterface")
    else {
        return;
    };
    let mut set = |name: &str, value: &str| {
        att.details.retain(|d| d.name.as_deref() != Some(name));
        att.details.push(KeyValuePair {
            name: Some(name.into()),
            value: Some(value.into()),
        });
    };
    set(
        "networkInterfaceId",
        &format!("eni-{}", &n.mac_address.replace(':', "")),
    );
    set("macAddress", &n.mac_address);
    set("privateDnsName", &n.private_dns_name);
    set("privateIPv4Address", &n.private_ipv4_address);
    let id = att.id.clone();
    for c in &mut t.containers {
        c.network_interfaces = vec![berth_api::ecs::NetworkInterface {
            attachment_id: Some(id.clone()),
            private_ipv4_address: Some(n.private_ipv4_address.clone()),
        }];
    }
}

#[cfg(test)]
mod capacity_provider_tests {
    use super::capacity_provider_for;
    use serde_json::json;

    #[test]
    fn base_first_then_weights() {
        let s = [
            json!({"capacityProvider": "FARGATE", "base": 1, "weight": 1}),
            json!({"capacityProvider": "FARGATE_SPOT", "weight": 3}),
        ];
        let picks: Vec<_> = (0..5)
            .map(|n| capacity_provider_for(Some(&s), n).unwrap())
            .collect();
        assert_eq!(
            picks,
            [
                "FARGATE",
                "FARGATE",
                "FARGATE_SPOT",
                "FARGATE_SPOT",
                "FARGATE_SPOT"
            ]
        );
        assert_eq!(capacity_provider_for(None, 0), None);
        let zero = [json!({"capacityProvider": "FARGATE_SPOT"})];
        assert_eq!(
            capacity_provider_for(Some(&zero), 7).as_deref(),
            Some("FARGATE_SPOT")
        );
    }
}
