//! The ECS service scheduler's diff step (DESIGN §3): [`reconcile`] takes a stored service and
//! what its tasks look like now, and returns the next service state plus the tasks to start and
//! stop. No IO: the caller commits the plan atomically (and re-plans on a revision conflict).
//!
//! Rules followed (ECS Developer Guide, "Deploy Amazon ECS services by replacing tasks",
//! "How the Amazon ECS deployment circuit breaker detects failures", "Service scheduler
//! concepts"):
//! - the PRIMARY deployment is brought to `desiredCount`; older (ACTIVE) deployments are drained;
//! - at most `floor(desired * maximumPercent / 100)` tasks exist (RUNNING, PENDING or stopping),
//!   and old healthy tasks are only stopped while at least
//!   `ceil(desired * minimumHealthyPercent / 100)` healthy tasks remain;
//! - a task that stops without the scheduler asking (its essential container exited, it failed
//!   to start) or turns UNHEALTHY counts as a failed task of its deployment and is replaced
//!   (UNHEALTHY is ignored for `healthCheckGracePeriodSeconds` after the task started);
//!   a task stopped by the user (StopTask) is replaced without counting as a failure;
//! - launches are throttled after repeated failures ("is unable to consistently start tasks
//!   successfully");
//! - the circuit breaker fails a deployment after `min(max(ceil(desired/2), 3), 200)` failed
//!   tasks and, with `rollback`, rolls back to the last COMPLETED deployment;
//! - a deployment is COMPLETED when it runs `desiredCount` healthy tasks and no other
//!   deployment has tasks left; then exactly one deployment remains.

use std::collections::{HashMap, HashSet};

use berth_api::ecs::{
    Deployment, DeploymentConfiguration, Rollback, Service, ServiceDeployment,
    ServiceDeploymentCircuitBreaker, ServiceEvent, ServiceRevision, ServiceRevisionSummary,
};
use berth_core::status::{
    CircuitBreakerStatus, DeploymentStatus, DesiredStatus, HealthStatus, RolloutState,
    ServiceDeploymentStatus, ServiceStatus, StopCode, TaskStatus,
};
use serde::{Deserialize, Serialize};

/// Service events kept per service (ECS returns at most 100).
pub const MAX_EVENTS: usize = 100;
/// Service deployments and revisions kept per service.
pub const MAX_HISTORY: usize = 20;
/// How long an INACTIVE service stays describable (seconds).
pub const INACTIVE_RETENTION: f64 = 3600.0;

/// A task the service owns, and the deployment (`ecs-svc/<N>`) that started it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OwnedTask {
    pub id: String,
    pub deployment: String,
}

/// One entry of `deployments[]` plus what berth keeps about it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DeploymentState {
    /// The API view; its counts are filled in when the service is described.
    pub d: Deployment,
    /// The service revision this deployment rolls out.
    pub revision_arn: String,
    /// The service deployment that tracks this deployment (a rollback deployment is tracked by
    /// the service deployment it rolls back).
    #[serde(default)]
    pub sd_arn: Option<String>,
    /// No more launches for this deployment (it FAILED without rollback, or was aborted).
    #[serde(default)]
    pub halted: bool,
}

/// A service deployment (ListServiceDeployments) and the deployment ids it covers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SdState {
    pub sd: ServiceDeployment,
    /// The deployment (`ecs-svc/<N>`) this service deployment started.
    pub deployment_id: String,
    /// The deployment that rolls it back, once a rollback started.
    #[serde(default)]
    pub rollback_deployment_id: Option<String>,
}

/// What is stored per service under `ecs.service/<cluster>/<name>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceRecord {
    /// The API view. `deployments`, the counts, `currentServiceRevisions` are derived when
    /// described; `tags` are always stored (returned only with `include=[TAGS]`).
    pub service: Service,
    /// Newest first; the first is PRIMARY.
    pub deployments: Vec<DeploymentState>,
    pub tasks: Vec<OwnedTask>,
    /// Newest last.
    pub revisions: Vec<ServiceRevision>,
    /// Newest last.
    pub service_deployments: Vec<SdState>,
    /// The last deployment that COMPLETED (what a rollback restores).
    #[serde(default)]
    pub last_completed: Option<DeploymentState>,
    /// Whether the "has reached a steady state" event was posted for the current state.
    #[serde(default)]
    pub steady: bool,
    /// Task failures in a row (launch throttling); reset by a completed deployment, a new
    /// deployment, or five quiet minutes.
    #[serde(default)]
    pub launch_failures: u32,
    /// When the last task failure was counted (epoch seconds).
    #[serde(default)]
    pub last_failure_at: f64,
    /// No launches before this time (epoch seconds).
    #[serde(default)]
    pub next_launch_at: f64,
    /// When the service became INACTIVE.
    #[serde(default)]
    pub inactive_at: Option<f64>,
}

/// What the controller sees of one owned task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub id: String,
    pub last_status: TaskStatus,
    pub desired_status: DesiredStatus,
    /// Task `healthStatus` (HEALTHY, UNHEALTHY, UNKNOWN).
    pub health_status: HealthStatus,
    /// Whether an essential container has a health check (then only HEALTHY counts as healthy).
    pub has_health_check: bool,
    pub stop_code: Option<StopCode>,
    /// Task `startedAt` (epoch seconds), once RUNNING.
    pub started_at: Option<f64>,
}

/// Seconds a task without a health check must stay RUNNING before it counts as healthy, so a
/// container that exits right after it starts cannot complete a deployment (and the circuit
/// breaker sees it fail instead).
pub const STABILIZE_SECS: f64 = 1.0;

impl Observed {
    fn stopped(&self) -> bool {
        self.last_status == TaskStatus::Stopped
    }
    /// Wanted and not yet stopped.
    fn live(&self) -> bool {
        self.desired_status != DesiredStatus::Stopped && !self.stopped()
    }
    fn healthy(&self, now: f64) -> bool {
        self.live()
            && self.last_status == TaskStatus::Running
            && if self.has_health_check {
                self.health_status == HealthStatus::Healthy
            } else {
                self.health_status != HealthStatus::Unhealthy && self.stable_in(now) <= 0.0
            }
    }
    /// Seconds until a RUNNING task without a health check has been up for [`STABILIZE_SECS`].
    fn stable_in(&self, now: f64) -> f64 {
        self.started_at
            .map_or(STABILIZE_SECS, |t| t + STABILIZE_SECS - now)
    }
}

/// The result of one reconcile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The next stored state of the service.
    pub record: ServiceRecord,
    /// New tasks: (task id, deployment id). They are already in `record.tasks`.
    pub start: Vec<(String, String)>,
    /// Tasks to stop with stop code ServiceSchedulerInitiated: (task id, stopped reason).
    pub stop: Vec<(String, String)>,
    /// Reconcile again after this many seconds even if nothing changes (launch throttling).
    pub requeue_after: Option<f64>,
    /// The service record is to be removed (INACTIVE long enough).
    pub delete: bool,
}

impl Plan {
    /// Whether anything must be written.
    pub fn changed(&self, before: &ServiceRecord) -> bool {
        self.delete || !self.start.is_empty() || !self.stop.is_empty() || self.record != *before
    }
}

/// Most tasks one reconcile pass launches for a service; the rest follow in later passes.
pub const MAX_LAUNCHES_PER_PASS: i64 = 100;

/// Seconds until the next pass when launches were cut at [`MAX_LAUNCHES_PER_PASS`].
const BATCH_REQUEUE: f64 = 0.2;

/// Circuit-breaker threshold for a desired count (ECS: `min(max(ceil(0.5 * desired), 3), 200)`).
pub fn failure_threshold(desired: i64) -> i64 {
    ((desired.max(0) + 1) / 2).clamp(3, 200)
}

/// `maximumPercent` / `minimumHealthyPercent` with ECS's REPLICA defaults (200 / 100).
pub fn percents(c: &DeploymentConfiguration) -> (i64, i64) {
    (
        c.maximum_percent.unwrap_or(200),
        c.minimum_healthy_percent.unwrap_or(100),
    )
}

/// Launch delay after `failures` consecutive task failures (seconds): none for the first two,
/// then 2, 4, 8 ... up to 60.
pub fn launch_backoff(failures: u32) -> f64 {
    if failures < 3 {
        0.0
    } else {
        (2f64.powi((failures - 2).min(6) as i32)).min(60.0)
    }
}

/// Appends an event (newest first), dropping an identical message posted in the last minute.
pub fn push_event(s: &mut Service, message: String, now: f64, id: String) {
    if s.events
        .iter()
        .take_while(|e| now - e.created_at < 60.0)
        .any(|e| e.message == message)
    {
        return;
    }
    s.events.insert(
        0,
        ServiceEvent {
            id,
            created_at: now,
            message,
        },
    );
    s.events.truncate(MAX_EVENTS);
}

/// Counts per deployment: (pending, running) among the observed tasks (RUNNING = lastStatus
/// RUNNING; pending = wanted and not yet RUNNING).
pub fn counts(rec: &ServiceRecord, obs: &[Observed], deployment: Option<&str>) -> (i64, i64) {
    let (mut pending, mut running) = (0, 0);
    let by_id = index(obs);
    for t in &rec.tasks {
        if deployment.is_some_and(|d| d != t.deployment) {
            continue;
        }
        if let Some(o) = by_id.get(t.id.as_str()) {
            if o.stopped() {
                continue;
            }
            if o.last_status == TaskStatus::Running {
                running += 1;
            } else if o.desired_status != DesiredStatus::Stopped {
                pending += 1;
            }
        }
    }
    (pending, running)
}

fn sd_mut<'a>(rec: &'a mut ServiceRecord, arn: &Option<String>) -> Option<&'a mut SdState> {
    let arn = arn.as_ref()?;
    rec.service_deployments
        .iter_mut()
        .find(|s| &s.sd.service_deployment_arn == arn)
}

/// Counts one task failure for launch throttling.
fn count_failure(r: &mut ServiceRecord, now: f64) {
    if now - r.last_failure_at > 300.0 {
        r.launch_failures = 0;
    }
    r.launch_failures += 1;
    r.last_failure_at = now;
    r.next_launch_at = now + launch_backoff(r.launch_failures);
}

/// Observed tasks by id, so each lookup is O(1) and a reconcile stays O(n) in the service's
/// tasks (a service may hold thousands).
fn index(obs: &[Observed]) -> HashMap<&str, &Observed> {
    obs.iter().map(|o| (o.id.as_str(), o)).collect()
}

/// The ids of `pairs` (stops or starts decided so far) as a set.
fn id_set(pairs: &[(String, String)]) -> HashSet<&str> {
    pairs.iter().map(|(id, _)| id.as_str()).collect()
}

/// One reconcile of a service. `new_id` mints task ids, event ids and deployment numbers.
///
/// Nomad's reconciler shape: [`bucket`] sorts what the tasks look like now, the failures it
/// found are counted and the circuit breaker judged ([`count_failures`], [`trip_breaker`]),
/// [`decide`] (pure) says what to stop and how many to start, and [`bookkeeping`] records
/// the outcome: events, deployment counts and states, completion and steady state.
pub fn reconcile(
    before: &ServiceRecord,
    obs: &[Observed],
    now: f64,
    new_id: &mut dyn FnMut(IdKind) -> String,
) -> Plan {
    let mut r = before.clone();
    let mut plan = Plan::default();
    if r.service.status == ServiceStatus::Inactive {
        if r.inactive_at.is_some_and(|t| now - t > INACTIVE_RETENTION) {
            plan.delete = true;
        }
        plan.record = r;
        return plan;
    }
    let draining = r.service.status == ServiceStatus::Draining;
    let desired = if draining {
        0
    } else {
        r.service.desired_count.max(0)
    };
    let by_id = index(obs);

    let mut b = bucket(&r, &by_id, now);
    r.tasks = std::mem::take(&mut b.kept);
    count_failures(&mut r, before, &b, now, new_id);
    trip_breaker(&mut r, desired, draining, now, new_id);
    let d = decide(&r, &by_id, &b, desired, draining, now);
    let started = launch(&mut r, d.to_start, new_id);
    let seen = Seen { obs, by_id: &by_id };
    bookkeeping(
        &mut r, &seen, &d.stop, &started, desired, draining, now, new_id,
    );

    plan.requeue_after = d.requeue_after;
    for q in [settle_in(obs, now), b.grace_ends].into_iter().flatten() {
        plan.requeue_after = Some(plan.requeue_after.map_or(q, |p| p.min(q)));
    }
    plan.start = started;
    plan.stop = d.stop;
    plan.record = r;
    plan
}

/// The observed tasks, as given and by id.
struct Seen<'a> {
    obs: &'a [Observed],
    by_id: &'a HashMap<&'a str, &'a Observed>,
}

/// Posts a service event (see [`push_event`]) with a fresh id.
fn post(r: &mut ServiceRecord, msg: String, now: f64, new_id: &mut dyn FnMut(IdKind) -> String) {
    let id = new_id(IdKind::Event);
    push_event(&mut r.service, msg, now, id);
}

/// The service's tasks as one pass sees them (Nomad's buckets).
#[derive(Debug, Default)]
struct Buckets {
    /// Owned tasks that are still there (not STOPPED), in their order. An owned task with no
    /// task record left is forgotten.
    kept: Vec<OwnedTask>,
    /// One deployment id per owned task that stopped without the scheduler or a user asking
    /// (its essential container exited, it failed to start): a failure.
    failed: Vec<String>,
    /// Live tasks UNHEALTHY past the health check grace period: (task id, deployment id).
    /// They are stopped, and each is a failure.
    unhealthy: Vec<(String, String)>,
    /// Seconds until the earliest grace period of an UNHEALTHY task ends.
    grace_ends: Option<f64>,
}

/// Sorts the owned tasks of `r` by what `obs` says of them at `now`. Pure.
fn bucket(r: &ServiceRecord, obs: &HashMap<&str, &Observed>, now: f64) -> Buckets {
    // UNHEALTHY is ignored for healthCheckGracePeriodSeconds after the task started.
    let grace = r
        .service
        .health_check_grace_period_seconds
        .unwrap_or(0)
        .max(0) as f64;
    let mut b = Buckets::default();
    for t in &r.tasks {
        let Some(o) = obs.get(t.id.as_str()) else {
            continue;
        };
        if o.stopped() {
            if !matches!(
                o.stop_code,
                Some(StopCode::ServiceSchedulerInitiated | StopCode::UserInitiated)
            ) {
                b.failed.push(t.deployment.clone());
            }
            continue;
        }
        b.kept.push(t.clone());
        if o.live() && o.health_status == HealthStatus::Unhealthy {
            let left = o.started_at.map_or(0.0, |s| s + grace - now);
            if left > 0.0 {
                b.grace_ends = Some(b.grace_ends.map_or(left, |g| g.min(left)));
            } else {
                b.unhealthy.push((t.id.clone(), t.deployment.clone()));
            }
        }
    }
    b
}

/// Counts the failures `b` found: each adds to its deployment's `failedTasks` and to the
/// launch throttle; an UNHEALTHY task gets its event, and repeated failures the "unable to
/// consistently start tasks" one.
fn count_failures(
    r: &mut ServiceRecord,
    before: &ServiceRecord,
    b: &Buckets,
    now: f64,
    new_id: &mut dyn FnMut(IdKind) -> String,
) {
    let name = r.service.service_name.clone();
    let unhealthy = b.unhealthy.iter().map(|(id, dep)| (Some(id), dep));
    for (task, dep) in b.failed.iter().map(|dep| (None, dep)).chain(unhealthy) {
        if let Some(d) = r.deployments.iter_mut().find(|d| &d.d.id == dep) {
            d.d.failed_tasks += 1;
            d.d.updated_at = now;
        }
        count_failure(r, now);
        if let Some(id) = task {
            post(
                r,
                format!("(service {name}) (task {id}) failed container health checks."),
                now,
                new_id,
            );
        }
    }
    if r.launch_failures >= 3 && r.launch_failures > before.launch_failures {
        post(
            r,
            format!("(service {name}) is unable to consistently start tasks successfully. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide."),
            now,
            new_id,
        );
    }
}

/// The circuit breaker on the PRIMARY deployment: past its threshold of failed tasks the
/// deployment FAILS and, with `rollback`, is rolled back to the last COMPLETED deployment;
/// otherwise (or when the failing deployment is itself a rollback) it launches nothing more.
fn trip_breaker(
    r: &mut ServiceRecord,
    desired: i64,
    draining: bool,
    now: f64,
    new_id: &mut dyn FnMut(IdKind) -> String,
) {
    let name = r.service.service_name.clone();
    let cb = r
        .service
        .deployment_configuration
        .deployment_circuit_breaker
        .clone()
        .unwrap_or_default();
    let Some(p) = r.deployments.first().cloned() else {
        return;
    };
    if !cb.enable
        || draining
        || p.d.rollout_state != RolloutState::InProgress
        || p.d.failed_tasks < failure_threshold(desired)
    {
        return;
    }
    let reason = "tasks failed to start.";
    {
        let d = &mut r.deployments[0];
        d.d.rollout_state = RolloutState::Failed;
        d.d.rollout_state_reason = Some(format!("ECS deployment circuit breaker: {reason}"));
        d.d.updated_at = now;
    }
    post(
        r,
        format!(
            "(service {name}) (deployment {}) deployment failed: {reason}",
            p.d.id
        ),
        now,
        new_id,
    );
    let reason_sd =
        "Service deployment rolled back because the circuit breaker threshold was exceeded.";
    // A rollback that fails too ends the service deployment ROLLBACK_FAILED: rolling back
    // again would start the same failing tasks without end.
    let is_rollback = r
        .service_deployments
        .iter()
        .any(|s| s.rollback_deployment_id.as_deref() == Some(p.d.id.as_str()));
    if is_rollback {
        post(
            r,
            format!(
                "(service {name}) (deployment {}) rollback failed: {reason} No further tasks are started until a new deployment (UpdateService) is made.",
                p.d.id
            ),
            now,
            new_id,
        );
    }
    let rolled = cb.rollback && !is_rollback && start_rollback(r, reason_sd, now, new_id).is_some();
    if rolled {
        if let Some(s) = sd_mut(r, &p.sd_arn) {
            s.sd.deployment_circuit_breaker.status = CircuitBreakerStatus::Triggered;
        }
        let id = r.deployments[0].d.id.clone();
        post(
            r,
            format!("(service {name}) rolling back to deployment {id}."),
            now,
            new_id,
        );
    } else {
        r.deployments[0].halted = true;
        if let Some(s) = sd_mut(r, &p.sd_arn) {
            s.sd.status = if cb.rollback {
                ServiceDeploymentStatus::RollbackFailed
            } else {
                ServiceDeploymentStatus::Stopped
            };
            s.sd.status_reason = Some(format!("ECS deployment circuit breaker: {reason}"));
            s.sd.deployment_circuit_breaker.status = CircuitBreakerStatus::Triggered;
            s.sd.stopped_at = Some(now);
            s.sd.finished_at = Some(now);
            s.sd.updated_at = now;
        }
    }
}

/// What one pass does to the tasks.
#[derive(Debug, Default, PartialEq)]
struct Decision {
    /// Tasks to stop: (task id, stopped reason).
    stop: Vec<(String, String)>,
    /// New tasks for the PRIMARY deployment.
    to_start: i64,
    /// Look again after this many seconds (launch throttling, batches).
    requeue_after: Option<f64>,
}

/// The rolling replacement (pure): UNHEALTHY tasks go; the PRIMARY deployment is scaled in to
/// `desired` (pending tasks first, then the newest); older deployments lose their pending and
/// unhealthy tasks at once and their healthy ones while `minimumHealthyPercent` of desired
/// stay healthy; the PRIMARY is brought up to `desired` within `maximumPercent` (stopping
/// tasks count), unless it is halted, the service drains, launches are throttled, or more than
/// [`MAX_LAUNCHES_PER_PASS`] would start.
fn decide(
    r: &ServiceRecord,
    obs: &HashMap<&str, &Observed>,
    b: &Buckets,
    desired: i64,
    draining: bool,
    now: f64,
) -> Decision {
    let find = |id: &str| obs.get(id).copied();
    let mut d = Decision {
        stop: b
            .unhealthy
            .iter()
            .map(|(id, _)| (id.clone(), "Task failed container health checks".into()))
            .collect(),
        ..Decision::default()
    };
    let (max_pct, min_pct) = percents(&r.service.deployment_configuration);
    let max_total = (desired * max_pct.max(0)) / 100;
    let min_healthy = (desired * min_pct.max(0) + 99) / 100;
    let primary_id = r.deployments.first().map(|d| d.d.id.clone());
    let primary_halted = r.deployments.first().is_some_and(|d| d.halted);
    let dep_of: HashMap<&str, &str> = r
        .tasks
        .iter()
        .map(|t| (t.id.as_str(), t.deployment.as_str()))
        .collect();
    let scaling = |id: &str| {
        format!(
            "Scaling activity initiated by (deployment {})",
            dep_of.get(id).copied().unwrap_or_default()
        )
    };
    // Tasks still wanted, per deployment, after the stops decided so far.
    let live_of = |stop: &[(String, String)], primary: bool| -> Vec<String> {
        let stopping = id_set(stop);
        r.tasks
            .iter()
            .filter(|t| (Some(&t.deployment) == primary_id.as_ref()) == primary)
            .filter(|t| find(&t.id).is_some_and(|o| o.live()) && !stopping.contains(t.id.as_str()))
            .map(|t| t.id.clone())
            .collect()
    };
    let healthy = |id: &String| find(id).is_some_and(|o| o.healthy(now));
    // Scale-in of the primary: pending tasks first, then the newest.
    let mut primary_live = live_of(&d.stop, true);
    if primary_live.len() as i64 > desired {
        let excess = primary_live.len() - desired as usize;
        let mut order: Vec<String> = primary_live
            .iter()
            .filter(|i| !healthy(i))
            .cloned()
            .collect();
        order.extend(primary_live.iter().rev().filter(|i| healthy(i)).cloned());
        let reason = format!(
            "Scaling activity initiated by (deployment {})",
            primary_id.clone().unwrap_or_default()
        );
        for id in order.into_iter().take(excess) {
            d.stop.push((id, reason.clone()));
        }
        primary_live = live_of(&d.stop, true);
    }
    // Old deployments: pending/unhealthy tasks go at once, healthy ones while enough remain.
    let old_live = live_of(&d.stop, false);
    let mut healthy_total = primary_live.iter().filter(|i| healthy(i)).count() as i64
        + old_live.iter().filter(|i| healthy(i)).count() as i64;
    for id in old_live.iter().filter(|i| !healthy(i)) {
        d.stop.push((id.clone(), scaling(id)));
    }
    for id in old_live.iter().filter(|i| healthy(i)) {
        if healthy_total - 1 < min_healthy {
            break;
        }
        healthy_total -= 1;
        d.stop.push((id.clone(), scaling(id)));
    }
    // Launches for the primary, within maximumPercent (stopping tasks still count).
    let existing = r
        .tasks
        .iter()
        .filter(|t| find(&t.id).is_some_and(|o| !o.stopped()))
        .count() as i64;
    d.to_start = (desired - primary_live.len() as i64)
        .min(max_total.max(desired.min(1)) - existing)
        .max(0);
    if primary_halted || draining {
        d.to_start = 0;
    }
    if d.to_start > 0 && now < r.next_launch_at {
        d.requeue_after = Some(r.next_launch_at - now);
        d.to_start = 0;
    }
    // Large scale-outs go in batches, so one service's pass stays short and the services
    // queued behind it on the controller are not held up.
    if d.to_start > MAX_LAUNCHES_PER_PASS {
        d.to_start = MAX_LAUNCHES_PER_PASS;
        d.requeue_after = Some(
            d.requeue_after
                .map_or(BATCH_REQUEUE, |q| q.min(BATCH_REQUEUE)),
        );
    }
    d
}

/// Adds `n` new tasks of the PRIMARY deployment to `r`; returns them as (task id, deployment).
fn launch(
    r: &mut ServiceRecord,
    n: i64,
    new_id: &mut dyn FnMut(IdKind) -> String,
) -> Vec<(String, String)> {
    let Some(pid) = r.deployments.first().map(|d| d.d.id.clone()) else {
        return Vec::new();
    };
    (0..n)
        .map(|_| {
            let id = new_id(IdKind::Task);
            r.tasks.push(OwnedTask {
                id: id.clone(),
                deployment: pid.clone(),
            });
            (id, pid.clone())
        })
        .collect()
}

/// Records a pass's outcome in `r`: the started/stopped events, each deployment's desired
/// count, drained deployments leaving, the PRIMARY's completion (and its service
/// deployment's), failure counts of service deployments, the steady-state event, and the end
/// of a DRAINING service.
#[allow(clippy::too_many_arguments)]
fn bookkeeping(
    r: &mut ServiceRecord,
    seen: &Seen,
    stop: &[(String, String)],
    started: &[(String, String)],
    desired: i64,
    draining: bool,
    now: f64,
    new_id: &mut dyn FnMut(IdKind) -> String,
) {
    let name = r.service.service_name.clone();
    let find = |id: &str| seen.by_id.get(id).copied();
    if !started.is_empty() {
        let list: Vec<String> = started
            .iter()
            .map(|(id, _)| format!("(task {id})"))
            .collect();
        post(
            r,
            format!(
                "(service {name}) has started {} tasks: {}.",
                started.len(),
                list.join(" ")
            ),
            now,
            new_id,
        );
    }
    let stopped_running: Vec<String> = stop
        .iter()
        .filter(|(id, _)| find(id).is_some_and(|o| o.last_status == TaskStatus::Running))
        .map(|(id, _)| format!("(task {id})"))
        .collect();
    if !stopped_running.is_empty() {
        post(
            r,
            format!(
                "(service {name}) has stopped {} running tasks: {}.",
                stopped_running.len(),
                stopped_running.join(" ")
            ),
            now,
            new_id,
        );
    }

    // Desired counts; drained deployments leave.
    let (stopping, starting) = (id_set(stop), id_set(started));
    let alive = |r: &ServiceRecord, dep: &str| {
        r.tasks
            .iter()
            .filter(|t| t.deployment == dep)
            .filter(|t| {
                starting.contains(t.id.as_str())
                    || find(&t.id).is_some_and(|o| o.live() && !stopping.contains(t.id.as_str()))
            })
            .count() as i64
    };
    let exists = |r: &ServiceRecord, dep: &str| {
        r.tasks.iter().any(|t| {
            t.deployment == dep
                && (starting.contains(t.id.as_str()) || find(&t.id).is_some_and(|o| !o.stopped()))
        })
    };
    for i in 0..r.deployments.len() {
        let want = if i == 0 {
            desired
        } else {
            alive(r, &r.deployments[i].d.id)
        };
        let d = &mut r.deployments[i].d;
        if d.desired_count != want {
            d.desired_count = want;
            d.updated_at = now;
        }
    }
    let mut i = 1;
    while i < r.deployments.len() {
        if exists(r, &r.deployments[i].d.id) {
            i += 1;
        } else {
            r.deployments.remove(i);
        }
    }

    // Completion of the PRIMARY.
    if let Some(p) = r.deployments.first().cloned() {
        let primary_healthy = r
            .tasks
            .iter()
            .filter(|t| t.deployment == p.d.id)
            .filter(|t| !stopping.contains(t.id.as_str()))
            .filter(|t| find(&t.id).is_some_and(|o| o.healthy(now)))
            .count() as i64;
        let done = p.d.rollout_state == RolloutState::InProgress
            && r.deployments.len() == 1
            && primary_healthy == desired
            && alive(r, &p.d.id) == desired
            && !draining;
        if done {
            complete(r, &p, now, new_id);
        }
    }
    // Service deployments: failure counts follow their deployment.
    for s in &mut r.service_deployments {
        if let Some(d) = r.deployments.iter().find(|d| d.d.id == s.deployment_id) {
            if s.sd.deployment_circuit_breaker.failure_count != d.d.failed_tasks {
                s.sd.deployment_circuit_breaker.failure_count = d.d.failed_tasks;
                s.sd.updated_at = now;
            }
        }
    }

    // Steady state, and the end of a DRAINING service.
    let (pending, running) = {
        let mut tmp = r.clone();
        tmp.tasks.retain(|t| !starting.contains(t.id.as_str()));
        counts(&tmp, seen.obs, None)
    };
    let stable = r.deployments.len() == 1
        && started.is_empty()
        && stop.is_empty()
        && pending == 0
        && running == desired
        && r.deployments[0].d.rollout_state != RolloutState::InProgress
        && !draining;
    if stable && !r.steady {
        post(
            r,
            format!("(service {name}) has reached a steady state."),
            now,
            new_id,
        );
    }
    r.steady = stable;
    if draining && r.tasks.is_empty() {
        r.service.status = ServiceStatus::Inactive;
        r.inactive_at = Some(now);
        for d in &mut r.deployments {
            d.d.desired_count = 0;
        }
    }
}

/// Marks the PRIMARY deployment `p` COMPLETED (and its service deployment SUCCESSFUL, or
/// ROLLBACK_SUCCESSFUL for a rollback); it becomes what a later rollback restores.
fn complete(
    r: &mut ServiceRecord,
    p: &DeploymentState,
    now: f64,
    new_id: &mut dyn FnMut(IdKind) -> String,
) {
    let d = &mut r.deployments[0];
    d.d.rollout_state = RolloutState::Completed;
    d.d.rollout_state_reason = Some(format!("ECS deployment {} completed.", p.d.id));
    d.d.updated_at = now;
    r.last_completed = Some(r.deployments[0].clone());
    r.launch_failures = 0;
    r.next_launch_at = 0.0;
    if let Some(s) = sd_mut(r, &p.sd_arn) {
        if s.rollback_deployment_id.as_deref() == Some(p.d.id.as_str()) {
            s.sd.status = ServiceDeploymentStatus::RollbackSuccessful;
        } else if s.sd.status == ServiceDeploymentStatus::InProgress
            || s.sd.status == ServiceDeploymentStatus::Pending
        {
            s.sd.status = ServiceDeploymentStatus::Successful;
            s.sd.status_reason = None;
            if s.sd.deployment_circuit_breaker.status == CircuitBreakerStatus::Monitoring {
                s.sd.deployment_circuit_breaker.status = CircuitBreakerStatus::MonitoringComplete;
            }
        }
        s.sd.finished_at = Some(now);
        s.sd.updated_at = now;
        s.sd.lifecycle_stage = None;
    }
    let name = r.service.service_name.clone();
    post(
        r,
        format!(
            "(service {name}) (deployment {}) deployment completed.",
            p.d.id
        ),
        now,
        new_id,
    );
}

/// Seconds until the first RUNNING task without a health check becomes stable (it may then
/// complete the deployment), if any is still settling.
fn settle_in(obs: &[Observed], now: f64) -> Option<f64> {
    let settle = obs
        .iter()
        .filter(|o| o.live() && o.last_status == TaskStatus::Running && !o.has_health_check)
        .map(|o| o.stable_in(now))
        .filter(|t| *t > 0.0)
        .fold(f64::INFINITY, f64::min);
    settle.is_finite().then_some(settle)
}

/// Rolls the PRIMARY deployment back to the last COMPLETED one: a new PRIMARY deployment with
/// that configuration (tracked by the failed deployment's service deployment, which becomes
/// ROLLBACK_IN_PROGRESS); the failed deployment turns ACTIVE and launches nothing more. Returns
/// the new deployment id, or None when there is nothing to roll back to.
pub fn start_rollback(
    r: &mut ServiceRecord,
    reason: &str,
    now: f64,
    new_id: &mut dyn FnMut(IdKind) -> String,
) -> Option<String> {
    let p = r.deployments.first()?.clone();
    let last = r.last_completed.clone().filter(|l| l.d.id != p.d.id)?;
    let id = format!("ecs-svc/{}", new_id(IdKind::Deployment));
    let mut d = last.clone();
    d.d.id = id.clone();
    d.d.status = DeploymentStatus::Primary;
    d.d.desired_count = r.service.desired_count;
    d.d.failed_tasks = 0;
    d.d.pending_count = 0;
    d.d.running_count = 0;
    d.d.created_at = now;
    d.d.updated_at = now;
    d.d.rollout_state = RolloutState::InProgress;
    d.d.rollout_state_reason = Some(format!("ECS deployment {id} in progress."));
    d.sd_arn = p.sd_arn.clone();
    d.halted = false;
    r.deployments[0].d.status = DeploymentStatus::Active;
    r.deployments[0].halted = true;
    if r.deployments[0].d.rollout_state == RolloutState::InProgress {
        r.deployments[0].d.rollout_state = RolloutState::Failed;
        r.deployments[0].d.rollout_state_reason = Some(reason.to_string());
        r.deployments[0].d.updated_at = now;
    }
    r.service.task_definition = d.d.task_definition.clone();
    r.deployments.insert(0, d);
    // The launch throttle stays: the rollback's tasks start no faster than the failures allow.
    r.steady = false;
    if let Some(s) = sd_mut(r, &p.sd_arn) {
        s.sd.status = ServiceDeploymentStatus::RollbackInProgress;
        s.sd.status_reason = Some(reason.to_string());
        s.sd.updated_at = now;
        s.sd.rollback = Some(Rollback {
            reason: reason.to_string(),
            started_at: now,
            service_revision_arn: last.revision_arn.clone(),
        });
        s.rollback_deployment_id = Some(id.clone());
    }
    Some(id)
}

/// What [`reconcile`]'s id generator is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// A 32-hex-digit task id.
    Task,
    /// A service event id (UUID).
    Event,
    /// The number `N` of a new deployment `ecs-svc/N`.
    Deployment,
}

/// A service revision summary of deployment `d` with its live counts.
pub fn revision_summary(
    rec: &ServiceRecord,
    obs: &[Observed],
    d: &DeploymentState,
) -> ServiceRevisionSummary {
    let (pending, running) = counts(rec, obs, Some(&d.d.id));
    ServiceRevisionSummary {
        arn: d.revision_arn.clone(),
        requested_task_count: d.d.desired_count,
        running_task_count: running,
        pending_task_count: pending,
    }
}

/// A fresh circuit-breaker status block for a service deployment.
pub fn breaker_status(
    c: &DeploymentConfiguration,
    desired: i64,
) -> ServiceDeploymentCircuitBreaker {
    let enabled = c
        .deployment_circuit_breaker
        .as_ref()
        .is_some_and(|b| b.enable);
    ServiceDeploymentCircuitBreaker {
        status: if enabled {
            CircuitBreakerStatus::Monitoring
        } else {
            CircuitBreakerStatus::Disabled
        },
        failure_count: 0,
        threshold: if enabled {
            failure_threshold(desired)
        } else {
            0
        },
    }
}

#[cfg(test)]
mod rollout_props;
#[cfg(test)]
mod tests;
