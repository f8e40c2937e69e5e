//! The agent protocol: how a node agent (`berth-agent`) and the control plane talk over HTTP
//! (DESIGN §2: the agent never touches the store; it goes through these endpoints even when both
//! run in one process).
//!
//! Authentication (DESIGN §6: "agents join with a join token and then hold a per-agent
//! credential"):
//! - The server creates a random join token at its first start (`<data-dir>/agent-join-token`,
//!   mode 0600; `berth join-token` prints it).
//! - `POST /_berth/agent/register` with `Authorization: Bearer <join token>` and
//!   [`RegisterRequest`] -> 200 [`RegisterResponse`]: a credential for that container instance.
//!   401 for a missing or wrong join token, 400 for an instance id that is not
//!   [`valid_instance_id`], 409 when the instance is already registered (its credential is not
//!   handed out twice).
//! - Every other endpoint takes `Authorization: Bearer <credential>` ([`CREDENTIAL_SCHEME`]):
//!   401 (with `WWW-Authenticate: Bearer`) when it is missing or wrong, 403 when the request
//!   names a task that is not placed on the credential's instance. A refused request changes
//!   nothing.
//!
//! Endpoints, all JSON, served by the control plane under `/_berth/agent/`:
//! - `GET  /_berth/agent/assignments?after=<version>&wait=<seconds>[&instance=<id>]`
//!   -> [`Assignments`]. Long poll: answers at once when the assignment version is greater than
//!   `after`, else when it changes, else after `wait` seconds (max 60). Level-triggered: it lists
//!   every task placed on the credential's instance that is not yet STOPPED, with its desired
//!   status. `instance`, when given, must be the credential's instance (else 403).
//! - `POST /_berth/agent/tasks/<task-id>/state` with [`TaskStateReport`] -> 204 (404 for a task
//!   the control plane does not know, 403 for another instance's task).
//! - `POST /_berth/agent/logs` with [`LogBatch`] -> 204; every line's group and stream must be
//!   a log destination of a task placed on the credential's instance (else 403 for the batch).
//! - `POST /_berth/agent/metrics` with [`MetricsBatch`] -> 204 (403 when a sample names a task
//!   of another instance).
//!
//! Time values are epoch seconds as `f64`, like the ECS API's timestamps.

use berth_core::status::{ContainerStatus, DesiredStatus, HealthStatus, StopCode, TaskStatus};
use serde::{Deserialize, Serialize};

/// The `Authorization` scheme of the join token and of agent credentials.
pub const CREDENTIAL_SCHEME: &str = "Bearer";

/// `POST /_berth/agent/register` body (with the join token as bearer token).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RegisterRequest {
    /// The container instance id the agent runs as ([`valid_instance_id`]).
    pub instance_id: String,
}

/// `POST /_berth/agent/register` reply.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RegisterResponse {
    pub instance_id: String,
    /// The agent's credential, sent as `Authorization: Bearer <credential>` from now on; the
    /// control plane keeps only its SHA-256.
    pub credential: String,
}

/// An instance id is 1-64 ASCII letters, digits, `.`, `_` and `-`.
pub fn valid_instance_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Everything the control plane wants running on one instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Assignments {
    /// Increases whenever the set or any desired status changes.
    pub version: u64,
    pub tasks: Vec<TaskAssignment>,
}

/// One task placed on the instance.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskAssignment {
    pub spec: TaskSpec,
    /// `RUNNING` or `STOPPED` (ECS `desiredStatus`).
    pub desired_status: DesiredStatus,
    /// The task's `lastStatus` as the control plane knows it (`PROVISIONING`, `PENDING`,
    /// `RUNNING`): a restarted agent that does not have a task it was already running
    /// reports it lost instead of starting it again.
    /// Absent from older control planes: then PROVISIONING (not yet running).
    #[serde(default)]
    pub last_status: TaskStatus,
}

/// A task fully resolved for running: overrides applied, images as written in the task
/// definition, sizes in ECS units.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskSpec {
    /// 32 hex characters, the last part of the task ARN.
    pub task_id: String,
    pub task_arn: String,
    pub cluster_name: String,
    /// Task CPU in CPU units (1024 = 1 vCPU); `None` means unlimited.
    pub cpu: Option<u32>,
    /// Task memory hard limit in MiB; `None` means unlimited.
    pub memory: Option<u32>,
    pub containers: Vec<ContainerSpec>,
    /// Task definition `family`, `revision` and ARN (for the task metadata endpoint).
    #[serde(default)]
    pub family: String,
    #[serde(default)]
    pub revision: i64,
    #[serde(default)]
    pub task_definition_arn: String,
    /// `FARGATE`, `EC2` or `EXTERNAL`.
    #[serde(default)]
    pub launch_type: String,
    #[serde(default)]
    pub availability_zone: String,
    /// ECS `networkMode` is `awsvpc`: the task gets its own network namespace with an address
    /// on the agent's task subnet. Otherwise its containers get an isolated namespace with
    /// loopback only.
    #[serde(default)]
    pub awsvpc: bool,
    /// Task `volumes` (ECS `Volume`): a host path, or a per-task scratch directory.
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// ECS `ephemeralStorage.sizeInGiB` (RunTask override, else the task definition's);
    /// `None` means the default of 20 GiB. The agent measures the task's writable storage
    /// against it and stops the task when it is exceeded.
    #[serde(default)]
    pub ephemeral_storage_gib: Option<u32>,
}

/// A task volume: `host_path` bind-mounts a host directory; `None` gives a scratch directory
/// that lives as long as the task and is shared by the containers that mount it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VolumeSpec {
    pub name: String,
    #[serde(default)]
    pub host_path: Option<String>,
}

/// ECS `MountPoint`: a task volume mounted in a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MountPointSpec {
    pub source_volume: String,
    pub container_path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// ECS `VolumeFrom`: every mount point of another container of the task.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VolumeFromSpec {
    pub source_container: String,
    #[serde(default)]
    pub read_only: bool,
}

/// ECS `PortMapping` (awsvpc: `host_port` equals `container_port` unless given).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PortMappingSpec {
    pub container_port: u16,
    pub host_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// ECS `Ulimit` (`name` like `nofile`, `nproc`, `core`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UlimitSpec {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// One container of a [`TaskSpec`], from the ECS `ContainerDefinition` plus `containerOverrides`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerSpec {
    pub name: String,
    /// Image reference as written (`repo:tag`, `host:port/repo@sha256:...`,
    /// `<acct>.dkr.ecr.<region>.amazonaws.com/repo:tag`).
    pub image: String,
    /// Replaces the image's Entrypoint when set.
    pub entry_point: Option<Vec<String>>,
    /// Replaces the image's Cmd when set.
    pub command: Option<Vec<String>>,
    /// Added to (and overriding) the image's Env, in order.
    pub environment: Vec<(String, String)>,
    pub working_directory: Option<String>,
    pub user: Option<String>,
    pub essential: bool,
    /// Seconds between SIGTERM and SIGKILL on stop (ECS `stopTimeout`, default 30).
    pub stop_timeout: u32,
    /// Relative CPU share in CPU units (ECS container `cpu`), 0 = unset.
    pub cpu: u32,
    /// Hard limit in MiB (ECS container `memory`).
    pub memory: Option<u32>,
    /// Soft limit in MiB (ECS `memoryReservation`).
    pub memory_reservation: Option<u32>,
    pub readonly_root_filesystem: bool,
    /// Where stdout/stderr lines go (`awslogs`); `None` drops them.
    pub log: Option<LogDestination>,
    /// The container health check (ECS `healthCheck`), run inside the container.
    #[serde(default)]
    pub health_check: Option<HealthCheckSpec>,
    /// Containers that must reach a condition before this one starts (ECS `dependsOn`).
    #[serde(default)]
    pub depends_on: Vec<ContainerDependencySpec>,
    /// ECS `portMappings`, published on 127.0.0.1 of the host.
    #[serde(default)]
    pub port_mappings: Vec<PortMappingSpec>,
    /// ECS `ulimits`.
    #[serde(default)]
    pub ulimits: Vec<UlimitSpec>,
    /// ECS `linuxParameters.capabilities.add` / `.drop` (names like `NET_ADMIN` or `ALL`).
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// ECS `linuxParameters.initProcessEnabled`.
    #[serde(default)]
    pub init_process_enabled: bool,
    /// ECS `mountPoints` and `volumesFrom`.
    #[serde(default)]
    pub mount_points: Vec<MountPointSpec>,
    #[serde(default)]
    pub volumes_from: Vec<VolumeFromSpec>,
    /// ECS `privileged` (refused by the agent for FARGATE tasks).
    #[serde(default)]
    pub privileged: bool,
    /// ECS `repositoryCredentials.credentialsParameter`: the ARN of the Secrets Manager
    /// secret holding the registry's `username` and `password`.
    #[serde(default)]
    pub repository_credentials: Option<String>,
}

/// ECS `HealthCheck`: `command` is `["CMD", exe, args...]` or `["CMD-SHELL", "shell command"]`;
/// times in seconds (defaults: interval 30, timeout 5, retries 3, start period 0).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HealthCheckSpec {
    pub command: Vec<String>,
    pub interval: u32,
    pub timeout: u32,
    pub retries: u32,
    pub start_period: u32,
}

/// ECS `ContainerDependency`: `condition` is START, COMPLETE, SUCCESS or HEALTHY.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerDependencySpec {
    pub container_name: String,
    pub condition: String,
}

/// A CloudWatch Logs destination for a container's output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogDestination {
    pub group: String,
    /// `<awslogs-stream-prefix>/<container-name>/<task-id>`.
    pub stream: String,
}

/// What the agent observed about a task; the control plane folds it into the task record.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskStateReport {
    /// `PENDING`, `RUNNING` or `STOPPED`.
    pub last_status: TaskStatus,
    pub pull_started_at: Option<f64>,
    pub pull_stopped_at: Option<f64>,
    pub started_at: Option<f64>,
    pub stopped_at: Option<f64>,
    /// Set with STOPPED: `TaskFailedToStart` or `EssentialContainerExited` (the control plane
    /// replaces it with `UserInitiated` when the stop was asked for).
    pub stop_code: Option<StopCode>,
    /// Set with STOPPED, e.g. `Essential container in task exited` or
    /// `CannotPullContainerError: ...`.
    pub stopped_reason: Option<String>,
    pub containers: Vec<ContainerStateReport>,
    /// The task's network attachment once its namespace is set up (awsvpc).
    #[serde(default)]
    pub network: Option<NetworkReport>,
}

/// The ENI-like attachment of an awsvpc task: its address on the agent's task subnet.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NetworkReport {
    /// e.g. `10.88.0.5`.
    pub private_ipv4_address: String,
    /// e.g. `10.88.0.0/16`.
    pub subnet_cidr: String,
    /// The bridge address, the task's default gateway.
    pub gateway: String,
    pub mac_address: String,
    /// `ip-10-88-0-5.<region>.compute.internal`-style hostname.
    pub private_dns_name: String,
}

/// One container's observed state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerStateReport {
    pub name: String,
    /// `PENDING`, `RUNNING` or `STOPPED`.
    pub last_status: ContainerStatus,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// The OCI runtime's container id.
    pub runtime_id: Option<String>,
    /// `sha256:...` of the manifest that was run.
    pub image_digest: Option<String>,
    /// `HEALTHY`, `UNHEALTHY` or `UNKNOWN` (containers with a health check only).
    #[serde(default)]
    pub health_status: Option<HealthStatus>,
    /// Ports published for this container (ECS `networkBindings`).
    #[serde(default)]
    pub network_bindings: Vec<PortMappingSpec>,
}

/// A batch of log events from container output.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LogBatch {
    pub events: Vec<LogLine>,
}

/// One line of container output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    pub group: String,
    pub stream: String,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub message: String,
}

/// Utilization samples of the running tasks of one instance (`POST /_berth/agent/metrics`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MetricsBatch {
    pub samples: Vec<TaskMetricSample>,
}

/// One task's CPU and memory use over the last sampling interval, as ECS defines utilization:
/// CPUUtilization = CPU time used / (interval * reserved vCPUs) * 100, MemoryUtilization =
/// memory used / reserved memory * 100.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskMetricSample {
    /// 32 hex characters, the last part of the task ARN.
    pub task_id: String,
    pub cluster_name: String,
    /// End of the interval, milliseconds since the epoch.
    pub timestamp: i64,
    /// Percent of the task's reserved CPU units (can exceed 100 without a hard limit).
    pub cpu_utilization: f64,
    /// Percent of the task's reserved memory.
    pub memory_utilization: f64,
}
