//! ECS task life-cycle values (ECS "Task lifecycle"; botocore `TaskStopCode`).

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
    TASK_STATUSES.iter().position(|x| *x == s).unwrap_or(0)
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
    pub const TASK_FAILED_TO_START: &str = "TaskFailedToStart";
    pub const ESSENTIAL_CONTAINER_EXITED: &str = "EssentialContainerExited";
    pub const USER_INITIATED: &str = "UserInitiated";
    pub const SERVICE_SCHEDULER_INITIATED: &str = "ServiceSchedulerInitiated";
}

/// Container `lastStatus` order: PENDING -> RUNNING -> STOPPED; never backwards.
pub fn next_container_status<'a>(current: &'a str, reported: &'a str) -> &'a str {
    let rank = |s: &str| match s {
        "PENDING" => 0,
        "RUNNING" => 1,
        "STOPPED" => 2,
        _ => 0,
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

    #[test]
    fn monotonic() {
        assert_eq!(next_task_status("RUNNING", "PENDING"), "RUNNING");
        assert_eq!(next_task_status("PENDING", "RUNNING"), "RUNNING");
        assert_eq!(next_task_status("STOPPED", "RUNNING"), "STOPPED");
    }
}
