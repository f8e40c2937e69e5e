//! ECS and ECR status values as typed enums, with the pure transition rules of the ECS life
//! cycles ("Task lifecycle", "Service deployments" in the ECS developer guide).
//!
//! Each enum serialises to exactly the string AWS uses (botocore `ecs/2014-11-13/service-2.json`
//! and `ecr/2015-09-21/service-2.json`; the shape each follows is named on it), so stored records
//! and wire JSON keep their bytes. Every enum has `as_str`, `Display` and `FromStr`; parsing an
//! unknown value gives [`UnknownStatus`].

use serde::{Deserialize, Serialize};

/// A string that is not one of a status enum's values (`kind` names the enum).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {kind}")]
pub struct UnknownStatus {
    /// The enum the value was parsed as, e.g. `TaskStatus`.
    pub kind: &'static str,
    /// The rejected value.
    pub value: String,
}

/// Declares a status enum with its wire strings, `as_str`, `Display`, `FromStr` and `ALL`.
macro_rules! status_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $s:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $s)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant ),+ ];

            /// The wire string of this value, as AWS spells it.
            pub const fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $s, )+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownStatus;
            fn from_str(s: &str) -> Result<Self, UnknownStatus> {
                match s {
                    $( $s => Ok($name::$variant), )+
                    _ => Err(UnknownStatus { kind: stringify!($name), value: s.to_string() }),
                }
            }
        }
    };
}

status_enum! {
    /// A task's `lastStatus` (botocore `Task.lastStatus`, a `String` whose values the ECS "Task
    /// lifecycle" lists), declared in life-cycle order.
    #[derive(Default)]
    TaskStatus {
        #[default]
        Provisioning = "PROVISIONING",
        Pending = "PENDING",
        Activating = "ACTIVATING",
        Running = "RUNNING",
        Deactivating = "DEACTIVATING",
        Stopping = "STOPPING",
        Deprovisioning = "DEPROVISIONING",
        Stopped = "STOPPED",
    }
}

impl TaskStatus {
    /// Position in the life cycle (PROVISIONING = 0 ... STOPPED = 7).
    pub const fn rank(self) -> usize {
        self as usize
    }

    /// Whether a task may move from `self` to `to`: only forwards or in place.
    pub fn can_transition_to(self, to: Self) -> bool {
        to.rank() >= self.rank()
    }

    /// The status a task moves to when an agent reports `reported`: a task never moves
    /// backwards (a late PENDING report cannot undo RUNNING) and nothing leaves STOPPED.
    pub fn next(self, reported: Self) -> Self {
        if self.can_transition_to(reported) {
            reported
        } else {
            self
        }
    }

    /// STOPPED: the end of the life cycle.
    pub fn is_terminal(self) -> bool {
        self == TaskStatus::Stopped
    }
}

status_enum! {
    /// A task's `desiredStatus` (botocore `DesiredStatus`; also the `ListTasks` filter).
    #[derive(Default)]
    DesiredStatus {
        #[default]
        Running = "RUNNING",
        Pending = "PENDING",
        Stopped = "STOPPED",
    }
}

status_enum! {
    /// A container's `lastStatus` (botocore `Container.lastStatus`, a `String`), in order
    /// PENDING -> RUNNING -> STOPPED.
    #[derive(Default)]
    ContainerStatus {
        #[default]
        Pending = "PENDING",
        Running = "RUNNING",
        Stopped = "STOPPED",
    }
}

impl ContainerStatus {
    /// Whether a container may move from `self` to `to`: only forwards or in place.
    pub fn can_transition_to(self, to: Self) -> bool {
        to as usize >= self as usize
    }

    /// The status a container moves to on a report of `reported`; never backwards.
    pub fn next(self, reported: Self) -> Self {
        if self.can_transition_to(reported) {
            reported
        } else {
            self
        }
    }

    /// STOPPED: the end of the life cycle.
    pub fn is_terminal(self) -> bool {
        self == ContainerStatus::Stopped
    }
}

status_enum! {
    /// A task's or container's `healthStatus` (botocore `HealthStatus`).
    #[derive(Default)]
    HealthStatus {
        Healthy = "HEALTHY",
        Unhealthy = "UNHEALTHY",
        #[default]
        Unknown = "UNKNOWN",
    }
}

status_enum! {
    /// A service's `status` (botocore `Service.status`, a `String`: ACTIVE, DRAINING, INACTIVE).
    #[derive(Default)]
    ServiceStatus {
        #[default]
        Active = "ACTIVE",
        Draining = "DRAINING",
        Inactive = "INACTIVE",
    }
}

status_enum! {
    /// A service deployment's `status` inside `Service.deployments` (botocore
    /// `Deployment.status`, a `String`: PRIMARY, ACTIVE, INACTIVE).
    #[derive(Default)]
    DeploymentStatus {
        #[default]
        Primary = "PRIMARY",
        Active = "ACTIVE",
        Inactive = "INACTIVE",
    }
}

status_enum! {
    /// A deployment's `rolloutState` (botocore `DeploymentRolloutState`).
    #[derive(Default)]
    RolloutState {
        Completed = "COMPLETED",
        Failed = "FAILED",
        #[default]
        InProgress = "IN_PROGRESS",
    }
}

impl RolloutState {
    /// COMPLETED or FAILED: the rollout is over.
    pub fn is_terminal(self) -> bool {
        self != RolloutState::InProgress
    }

    /// Only IN_PROGRESS moves, to COMPLETED or FAILED.
    pub fn can_transition_to(self, to: Self) -> bool {
        self == to || (self == RolloutState::InProgress && to.is_terminal())
    }
}

status_enum! {
    /// A `ServiceDeployment`'s `status` (botocore `ServiceDeploymentStatus`).
    #[derive(Default)]
    ServiceDeploymentStatus {
        #[default]
        Pending = "PENDING",
        Successful = "SUCCESSFUL",
        Stopped = "STOPPED",
        StopRequested = "STOP_REQUESTED",
        InProgress = "IN_PROGRESS",
        RollbackRequested = "ROLLBACK_REQUESTED",
        RollbackInProgress = "ROLLBACK_IN_PROGRESS",
        RollbackSuccessful = "ROLLBACK_SUCCESSFUL",
        RollbackFailed = "ROLLBACK_FAILED",
    }
}

impl ServiceDeploymentStatus {
    /// SUCCESSFUL, STOPPED, ROLLBACK_SUCCESSFUL or ROLLBACK_FAILED: the deployment is over.
    pub fn is_terminal(self) -> bool {
        use ServiceDeploymentStatus::*;
        matches!(
            self,
            Successful | Stopped | RollbackSuccessful | RollbackFailed
        )
    }

    /// PENDING or IN_PROGRESS: the deployment is still rolling forward.
    pub fn is_rolling_forward(self) -> bool {
        matches!(
            self,
            ServiceDeploymentStatus::Pending | ServiceDeploymentStatus::InProgress
        )
    }

    /// Whether `self -> to` is a step of the service-deployment life cycle: PENDING ->
    /// IN_PROGRESS -> SUCCESSFUL; a live deployment can be stopped (STOP_REQUESTED -> STOPPED)
    /// or rolled back (ROLLBACK_REQUESTED -> ROLLBACK_IN_PROGRESS -> ROLLBACK_SUCCESSFUL /
    /// ROLLBACK_FAILED); nothing leaves a terminal status. Staying put is allowed.
    pub fn can_transition_to(self, to: Self) -> bool {
        use ServiceDeploymentStatus::*;
        if self == to {
            return true;
        }
        match self {
            Pending => matches!(
                to,
                InProgress
                    | Successful
                    | StopRequested
                    | Stopped
                    | RollbackRequested
                    | RollbackInProgress
                    | RollbackFailed
            ),
            InProgress => matches!(
                to,
                Successful
                    | StopRequested
                    | Stopped
                    | RollbackRequested
                    | RollbackInProgress
                    | RollbackFailed
            ),
            StopRequested => to == Stopped,
            RollbackRequested => matches!(to, RollbackInProgress | RollbackFailed),
            RollbackInProgress => matches!(to, RollbackSuccessful | RollbackFailed | Stopped),
            Successful | Stopped | RollbackSuccessful | RollbackFailed => false,
        }
    }
}

status_enum! {
    /// The deployment circuit breaker's `status` on a `ServiceDeployment` (botocore
    /// `ServiceDeploymentRollbackMonitorsStatus`).
    #[derive(Default)]
    CircuitBreakerStatus {
        Triggered = "TRIGGERED",
        Monitoring = "MONITORING",
        MonitoringComplete = "MONITORING_COMPLETE",
        #[default]
        Disabled = "DISABLED",
    }
}

status_enum! {
    /// A task's `stopCode` (botocore `TaskStopCode`).
    StopCode {
        TaskFailedToStart = "TaskFailedToStart",
        EssentialContainerExited = "EssentialContainerExited",
        UserInitiated = "UserInitiated",
        ServiceSchedulerInitiated = "ServiceSchedulerInitiated",
        SpotInterruption = "SpotInterruption",
        TerminationNotice = "TerminationNotice",
    }
}

status_enum! {
    /// A cluster's `status` (botocore `Cluster.status`, a `String`; berth uses ACTIVE and
    /// INACTIVE, the values for clusters without capacity providers).
    #[derive(Default)]
    ClusterStatus {
        #[default]
        Active = "ACTIVE",
        Inactive = "INACTIVE",
    }
}

status_enum! {
    /// A task definition's `status` (botocore `TaskDefinitionStatus`; also the
    /// `ListTaskDefinitions` filter).
    #[derive(Default)]
    TaskDefinitionStatus {
        #[default]
        Active = "ACTIVE",
        Inactive = "INACTIVE",
        DeleteInProgress = "DELETE_IN_PROGRESS",
    }
}

status_enum! {
    /// The `status` filter of `ListTaskDefinitionFamilies` (botocore
    /// `TaskDefinitionFamilyStatus`).
    TaskDefinitionFamilyStatus {
        Active = "ACTIVE",
        Inactive = "INACTIVE",
        All = "ALL",
    }
}

status_enum! {
    /// A `dependsOn` condition (botocore `ContainerCondition`).
    ContainerCondition {
        Start = "START",
        Complete = "COMPLETE",
        Success = "SUCCESS",
        Healthy = "HEALTHY",
    }
}

status_enum! {
    /// An ECR image scan's `status` (botocore ECR `ScanStatus`).
    ScanStatus {
        InProgress = "IN_PROGRESS",
        Complete = "COMPLETE",
        Failed = "FAILED",
        UnsupportedImage = "UNSUPPORTED_IMAGE",
        Active = "ACTIVE",
        Pending = "PENDING",
        ScanEligibilityExpired = "SCAN_ELIGIBILITY_EXPIRED",
        FindingsUnavailable = "FINDINGS_UNAVAILABLE",
        LimitExceeded = "LIMIT_EXCEEDED",
        ImageArchived = "IMAGE_ARCHIVED",
    }
}

/// Task `lastStatus` values in life-cycle order.
pub const TASK_STATUSES: [&str; 8] = [
    "PROVISIONING",
    "PENDING",
    "ACTIVATING",
    "RUNNING",
    "DEACTIVATING",
    "STOPPING",
    "DEPROVISIONING",
    "STOPPED",
];

/// Position of a task `lastStatus` in the life cycle (unknown values sort first).
pub fn task_status_rank(s: &str) -> usize {
    s.parse::<TaskStatus>().map(TaskStatus::rank).unwrap_or(0)
}

/// The status a task moves to when an agent reports `reported`: a task never moves backwards
/// (a late PENDING report cannot undo RUNNING, nothing leaves STOPPED).
pub fn next_task_status<'a>(current: &'a str, reported: &'a str) -> &'a str {
    if task_status_rank(reported) >= task_status_rank(current) {
        reported
    } else {
        current
    }
}

/// `stopCode` values (botocore `TaskStopCode`).
pub mod stop_code {
    use super::StopCode;
    pub const TASK_FAILED_TO_START: &str = StopCode::TaskFailedToStart.as_str();
    pub const ESSENTIAL_CONTAINER_EXITED: &str = StopCode::EssentialContainerExited.as_str();
    pub const USER_INITIATED: &str = StopCode::UserInitiated.as_str();
    pub const SERVICE_SCHEDULER_INITIATED: &str = StopCode::ServiceSchedulerInitiated.as_str();
}

/// Container `lastStatus` order: PENDING -> RUNNING -> STOPPED; never backwards.
pub fn next_container_status<'a>(current: &'a str, reported: &'a str) -> &'a str {
    let rank = |s: &str| {
        s.parse::<ContainerStatus>()
            .map(|c| c as usize)
            .unwrap_or(0)
    };
    if rank(reported) >= rank(current) {
        reported
    } else {
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every enum round-trips through `as_str`/`FromStr` and serde with the same string.
    fn round_trip<T>(all: &[T])
    where
        T: Copy
            + std::fmt::Debug
            + std::fmt::Display
            + PartialEq
            + std::str::FromStr<Err = UnknownStatus>
            + Serialize
            + for<'de> Deserialize<'de>,
    {
        for v in all {
            let s = v.to_string();
            assert_eq!(s.parse::<T>().unwrap(), *v);
            assert_eq!(serde_json::to_string(v).unwrap(), format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<T>(&format!("\"{s}\"")).unwrap(), *v);
        }
        assert!("nope".parse::<T>().is_err());
        assert!(serde_json::from_str::<T>("\"nope\"").is_err());
    }

    #[test]
    fn wire_strings_round_trip() {
        round_trip(TaskStatus::ALL);
        round_trip(DesiredStatus::ALL);
        round_trip(ContainerStatus::ALL);
        round_trip(HealthStatus::ALL);
        round_trip(ServiceStatus::ALL);
        round_trip(DeploymentStatus::ALL);
        round_trip(RolloutState::ALL);
        round_trip(ServiceDeploymentStatus::ALL);
        round_trip(CircuitBreakerStatus::ALL);
        round_trip(StopCode::ALL);
        round_trip(ClusterStatus::ALL);
        round_trip(TaskDefinitionStatus::ALL);
        round_trip(TaskDefinitionFamilyStatus::ALL);
        round_trip(ContainerCondition::ALL);
        round_trip(ScanStatus::ALL);
    }

    #[test]
    fn wire_strings_match_aws() {
        assert_eq!(TASK_STATUSES.len(), TaskStatus::ALL.len());
        for (s, t) in TASK_STATUSES.iter().zip(TaskStatus::ALL) {
            assert_eq!(t.as_str(), *s);
        }
        assert_eq!(
            StopCode::EssentialContainerExited.as_str(),
            "EssentialContainerExited"
        );
        assert_eq!(
            ServiceDeploymentStatus::RollbackInProgress.as_str(),
            "ROLLBACK_IN_PROGRESS"
        );
        assert_eq!(
            TaskDefinitionStatus::DeleteInProgress.as_str(),
            "DELETE_IN_PROGRESS"
        );
        assert_eq!(
            CircuitBreakerStatus::MonitoringComplete.as_str(),
            "MONITORING_COMPLETE"
        );
        let e = "running".parse::<TaskStatus>().unwrap_err();
        assert_eq!(e.kind, "TaskStatus");
        assert_eq!(e.value, "running");
    }

    #[test]
    fn task_status_never_goes_backwards() {
        use TaskStatus::*;
        assert_eq!(Running.next(Pending), Running);
        assert_eq!(Pending.next(Running), Running);
        assert_eq!(Stopped.next(Running), Stopped);
        assert_eq!(Provisioning.next(Stopped), Stopped);
        for &a in TaskStatus::ALL {
            for &b in TaskStatus::ALL {
                let n = a.next(b);
                assert!(n.rank() >= a.rank(), "{a} -> {b} went back to {n}");
                assert!(n == a || n == b);
                assert_eq!(a.can_transition_to(b), n == b);
            }
            assert_eq!(Stopped.next(a), Stopped);
            assert_eq!(a.is_terminal(), a == Stopped);
        }
    }

    #[test]
    fn container_status_never_goes_backwards() {
        use ContainerStatus::*;
        assert_eq!(Running.next(Pending), Running);
        assert_eq!(Pending.next(Running), Running);
        assert_eq!(Running.next(Stopped), Stopped);
        for &a in ContainerStatus::ALL {
            assert_eq!(Stopped.next(a), Stopped);
            for &b in ContainerStatus::ALL {
                let n = a.next(b);
                assert!(n as usize >= a as usize);
                assert_eq!(a.can_transition_to(b), n == b);
            }
        }
    }

    #[test]
    fn rollout_state_only_leaves_in_progress() {
        use RolloutState::*;
        assert!(InProgress.can_transition_to(Completed));
        assert!(InProgress.can_transition_to(Failed));
        assert!(!Completed.can_transition_to(InProgress));
        assert!(!Failed.can_transition_to(Completed));
        assert!(!Completed.can_transition_to(Failed));
        assert!(Completed.is_terminal() && Failed.is_terminal() && !InProgress.is_terminal());
    }

    #[test]
    fn service_deployment_terminal_states_are_final() {
        use ServiceDeploymentStatus::*;
        for &a in ServiceDeploymentStatus::ALL {
            for &b in ServiceDeploymentStatus::ALL {
                if a.is_terminal() && a != b {
                    assert!(!a.can_transition_to(b), "{a} -> {b}");
                }
                // Nothing goes back to PENDING or IN_PROGRESS once past them.
                if a != b && matches!(b, Pending) {
                    assert!(!a.can_transition_to(b), "{a} -> {b}");
                }
            }
        }
        assert!(Pending.can_transition_to(InProgress));
        assert!(InProgress.can_transition_to(Successful));
        assert!(InProgress.can_transition_to(RollbackInProgress));
        assert!(RollbackInProgress.can_transition_to(RollbackSuccessful));
        assert!(RollbackInProgress.can_transition_to(RollbackFailed));
        assert!(StopRequested.can_transition_to(Stopped));
        assert!(!InProgress.can_transition_to(Pending));
        assert!(!RollbackInProgress.can_transition_to(InProgress));
        assert!(Successful.is_terminal() && RollbackFailed.is_terminal());
        assert!(!InProgress.is_terminal() && !RollbackRequested.is_terminal());
        assert!(Pending.is_rolling_forward() && InProgress.is_rolling_forward());
        assert!(!RollbackInProgress.is_rolling_forward());
    }

    #[test]
    fn legacy_string_helpers() {
        assert_eq!(next_task_status("RUNNING", "PENDING"), "RUNNING");
        assert_eq!(next_task_status("PENDING", "RUNNING"), "RUNNING");
        assert_eq!(next_task_status("STOPPED", "RUNNING"), "STOPPED");
        assert_eq!(next_container_status("RUNNING", "PENDING"), "RUNNING");
        assert_eq!(task_status_rank("STOPPED"), 7);
    }
}
