//! Property test of the rolling replacement: [`reconcile`] is driven through simulated time
//! (a pass every [`DT`] seconds) over a world of tasks that start, fail to start, turn
//! unhealthy or exit, as each task's generated fate says. A service runs `desired` tasks of
//! `td:1`; a new deployment rolls out `td:2` under a random minimumHealthyPercent /
//! maximumPercent, circuit breaker and failure phase. Checked on every pass:
//! - never more than [`MAX_LAUNCHES_PER_PASS`] launches, only for the PRIMARY deployment, and
//!   only of tasks that fit under maximumPercent of desired (stopping tasks count);
//! - while no task has failed, healthy tasks never drop below minimumHealthyPercent;
//! - each deployment's failed-task count is the one counted here independently, and the
//!   circuit breaker trips exactly when that count reaches its threshold (never before);
//! - a halted (FAILED, no rollback) deployment launches nothing more;
//! - once failures stop, the service converges: one COMPLETED deployment running `desired`
//!   healthy tasks of `td:2` (of `td:1` when the breaker rolled back), and stays there.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use berth_api::ecs::DeploymentCircuitBreaker;
use berth_core::status::{
    DeploymentStatus, DesiredStatus, HealthStatus, RolloutState, ServiceDeploymentStatus,
    ServiceStatus, StopCode, TaskStatus,
};

/// Seconds between passes.
const DT: f64 = 0.5;
const HEALTH_REASON: &str = "Task failed container health checks";

/// One task's fate, drawn by the generator: how it starts and whether it breaks.
#[derive(Debug, Clone, Copy)]
struct Fate {
    /// Passes spent PENDING (1-3).
    pending: u32,
    /// Passes RUNNING before a health check reports HEALTHY (0-2).
    to_healthy: u32,
    /// Draw against the start-failure rate.
    start_roll: u8,
    /// Draw against the break rate; also when it breaks (1-4 passes after it runs).
    break_roll: u8,
}

#[derive(Debug, Clone)]
struct Scenario {
    desired: i64,
    min_pct: i64,
    max_pct: i64,
    breaker: Option<bool>,
    health_checks: bool,
    grace: Option<i64>,
    /// Out of 256: the share of tasks launched during the failure phase that fail to start /
    /// break once running.
    start_fail: u8,
    break_rate: u8,
    /// Passes during which launched tasks may fail.
    failure_passes: u32,
    fates: Vec<Fate>,
}

/// A task as the simulated world has it.
#[derive(Debug, Clone)]
struct SimTask {
    o: Observed,
    fate: Fate,
    /// Launched while failures happen.
    may_fail: bool,
    pending_left: u32,
    running_passes: u32,
}

impl SimTask {
    /// Whether the task is yet to break as its fate says.
    fn will_break(&self, s: &Scenario) -> bool {
        self.may_fail
            && self.fate.break_roll < s.break_rate
            && self.running_passes < 1 + u32::from(self.fate.break_roll % 4)
    }
}

fn fate() -> impl Strategy<Value = Fate> {
    (1u32..=3, 0u32..=2, any::<u8>(), any::<u8>()).prop_map(
        |(pending, to_healthy, start_roll, break_roll)| Fate {
            pending,
            to_healthy,
            start_roll,
            break_roll,
        },
    )
}

/// Percent pairs the API accepts: min 0..=100 with max 100..=200, or min 0 with max 1..=99.
fn percents_strategy() -> impl Strategy<Value = (i64, i64)> {
    prop_oneof![
        4 => (0i64..=100, 100i64..=200),
        1 => (1i64..100).prop_map(|max| (0, max)),
        1 => Just((100, 200)),
        1 => Just((50, 100)),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop_oneof![6 => 0i64..=24, 1 => 101i64..=220],
        percents_strategy(),
        prop_oneof![Just(None), Just(Some(false)), Just(Some(true))],
        any::<bool>(),
        prop_oneof![Just(None), (0i64..=5).prop_map(Some)],
        prop_oneof![1 => Just(0u8), 2 => any::<u8>()],
        prop_oneof![1 => Just(0u8), 2 => 0u8..128],
        0u32..240,
        proptest::collection::vec(fate(), 1..24),
    )
        .prop_map(
            |(
                desired,
                (min_pct, max_pct),
                breaker,
                health_checks,
                grace,
                start_fail,
                break_rate,
                failure_passes,
                fates,
            )| Scenario {
                desired,
                min_pct,
                max_pct,
                breaker,
                health_checks,
                grace,
                start_fail,
                break_rate,
                failure_passes,
                fates,
            },
        )
}

fn ids() -> impl FnMut(IdKind) -> String {
    let mut n = 0;
    move |k| {
        n += 1;
        match k {
            IdKind::Task => format!("t{n}"),
            IdKind::Event => format!("e{n}"),
            IdKind::Deployment => format!("{}", 100 + n),
        }
    }
}

fn deployment(
    id: &str,
    td: &str,
    status: DeploymentStatus,
    desired: i64,
    rollout: RolloutState,
) -> DeploymentState {
    DeploymentState {
        d: Deployment {
            id: id.into(),
            status,
            task_definition: td.into(),
            desired_count: desired,
            rollout_state: rollout,
            ..Default::default()
        },
        revision_arn: format!("rev/{id}"),
        sd_arn: Some(format!("sd/{id}")),
        halted: false,
    }
}

fn running_task(id: &str, health_checks: bool) -> Observed {
    Observed {
        id: id.into(),
        last_status: TaskStatus::Running,
        desired_status: DesiredStatus::Running,
        health_status: if health_checks {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unknown
        },
        has_health_check: health_checks,
        stop_code: None,
        started_at: Some(-1.0e9),
    }
}

/// The service after a completed deployment of `td:1` with `desired` RUNNING tasks, and a new
/// deployment of `td:2` just made (UpdateService).
fn start_state(s: &Scenario) -> (ServiceRecord, HashMap<String, SimTask>) {
    let mut r = ServiceRecord::default();
    r.service.service_name = "web".into();
    r.service.status = ServiceStatus::Active;
    r.service.desired_count = s.desired;
    r.service.task_definition = "td:2".into();
    r.service.health_check_grace_period_seconds = s.grace;
    r.service.deployment_configuration = DeploymentConfiguration {
        maximum_percent: Some(s.max_pct),
        minimum_healthy_percent: Some(s.min_pct),
        deployment_circuit_breaker: s.breaker.map(|rollback| DeploymentCircuitBreaker {
            enable: true,
            rollback,
            ..Default::default()
        }),
        ..Default::default()
    };
    let old = deployment(
        "ecs-svc/1",
        "td:1",
        DeploymentStatus::Active,
        s.desired,
        RolloutState::Completed,
    );
    r.last_completed = Some(old.clone());
    r.deployments = vec![
        deployment(
            "ecs-svc/2",
            "td:2",
            DeploymentStatus::Primary,
            s.desired,
            RolloutState::InProgress,
        ),
        old,
    ];
    for id in ["ecs-svc/1", "ecs-svc/2"] {
        r.service_deployments.push(SdState {
            sd: ServiceDeployment {
                service_deployment_arn: format!("sd/{id}"),
                status: if id == "ecs-svc/2" {
                    ServiceDeploymentStatus::InProgress
                } else {
                    ServiceDeploymentStatus::Successful
                },
                deployment_circuit_breaker: breaker_status(
                    &r.service.deployment_configuration,
                    s.desired,
                ),
                ..Default::default()
            },
            deployment_id: id.into(),
            rollback_deployment_id: None,
        });
    }
    let mut world = HashMap::new();
    for i in 0..s.desired {
        let id = format!("old{i}");
        r.tasks.push(OwnedTask {
            id: id.clone(),
            deployment: "ecs-svc/1".into(),
        });
        world.insert(
            id.clone(),
            SimTask {
                o: running_task(&id, s.health_checks),
                fate: s.fates[0],
                may_fail: false,
                pending_left: 0,
                running_passes: 100,
            },
        );
    }
    (r, world)
}

/// Healthy as ECS counts it for minimumHealthyPercent: RUNNING, wanted, and HEALTHY (with a
/// health check) or up for [`STABILIZE_SECS`] without turning UNHEALTHY.
fn healthy(o: &Observed, now: f64) -> bool {
    o.last_status == TaskStatus::Running
        && o.desired_status == DesiredStatus::Running
        && if o.has_health_check {
            o.health_status == HealthStatus::Healthy
        } else {
            o.health_status != HealthStatus::Unhealthy
                && o.started_at.is_some_and(|t| now - t >= STABILIZE_SECS)
        }
}

fn not_stopped(o: &Observed) -> bool {
    o.last_status != TaskStatus::Stopped
}

/// A stop nobody asked for (the task failed), as opposed to the scheduler's or a user's.
fn failed_stop(o: &Observed) -> bool {
    o.last_status == TaskStatus::Stopped
        && !matches!(
            o.stop_code,
            Some(StopCode::ServiceSchedulerInitiated | StopCode::UserInitiated)
        )
}

/// Moves the world on by one pass.
fn advance(world: &mut HashMap<String, SimTask>, s: &Scenario, now: f64) {
    for t in world.values_mut() {
        let o = &mut t.o;
        if o.last_status == TaskStatus::Stopped {
            continue;
        }
        if o.desired_status == DesiredStatus::Stopped {
            o.last_status = TaskStatus::Stopped;
            o.stop_code = Some(StopCode::ServiceSchedulerInitiated);
            continue;
        }
        if o.last_status == TaskStatus::Pending {
            t.pending_left -= 1;
            if t.pending_left > 0 {
                continue;
            }
            if t.may_fail && t.fate.start_roll < s.start_fail {
                o.last_status = TaskStatus::Stopped;
                o.desired_status = DesiredStatus::Stopped;
                o.stop_code = Some(StopCode::TaskFailedToStart);
            } else {
                o.last_status = TaskStatus::Running;
                o.started_at = Some(now);
            }
            continue;
        }
        t.running_passes += 1;
        let breaks = t.may_fail && t.fate.break_roll < s.break_rate;
        if breaks && t.running_passes == 1 + u32::from(t.fate.break_roll % 4) {
            if o.has_health_check {
                o.health_status = HealthStatus::Unhealthy;
            } else {
                o.last_status = TaskStatus::Stopped;
                o.desired_status = DesiredStatus::Stopped;
                o.stop_code = Some(StopCode::EssentialContainerExited);
            }
        } else if o.has_health_check
            && o.health_status == HealthStatus::Unknown
            && t.running_passes > t.fate.to_healthy
        {
            o.health_status = HealthStatus::Healthy;
        }
    }
}

/// Whether the rollout can reach `desired`: room above desired under maximumPercent, or below
/// it over minimumHealthyPercent (ECS stalls, as berth does, when there is neither). berth also
/// caps a service at maximumPercent of desired when the deployment is over, so one whose
/// maximumPercent is under 100 never runs `desired` tasks; such scenarios are checked for
/// everything but convergence.
fn has_room(s: &Scenario) -> bool {
    let max_total = (s.desired * s.max_pct / 100).max(s.desired.min(1));
    let min_healthy = (s.desired * s.min_pct + 99) / 100;
    s.desired == 0 || (max_total >= s.desired && (max_total > s.desired || min_healthy < s.desired))
}

/// Runs the scenario; `Err` names the first broken invariant.
fn simulate(s: &Scenario) -> Result<(), TestCaseError> {
    let (mut r, mut world) = start_state(s);
    let mut gen = ids();
    let desired = s.desired;
    let (max_pct, min_pct) = (s.max_pct, s.min_pct);
    let max_total = (desired * max_pct / 100).max(desired.min(1));
    let min_healthy = (desired * min_pct + 99) / 100;
    let threshold = failure_threshold(desired);
    let mut any_failure = false;
    let mut launched = 0usize;
    let mut converged_at: Option<u32> = None;
    // Failures stop, launches may be throttled for a minute, then each replacement round
    // takes a few passes (pending, stabilising, health, stopping).
    let room = (max_total - desired).max(desired - min_healthy).max(1);
    let rounds = (desired + room - 1) / room + 2;
    let limit = s.failure_passes + (60.0 / DT) as u32 + 12 * rounds as u32 + 40;
    for pass in 0..limit {
        let now = pass as f64 * DT;
        let obs: Vec<Observed> = r
            .tasks
            .iter()
            .filter_map(|t| world.get(&t.id).map(|w| w.o.clone()))
            .collect();
        let by_id: HashMap<&str, &Observed> = obs.iter().map(|o| (o.id.as_str(), o)).collect();
        let before_primary = r.deployments[0].clone();
        let plan = reconcile(&r, &obs, now, &mut gen);
        let after = &plan.record;

        // Launches: bounded per pass, for the primary only, within maximumPercent.
        prop_assert!(plan.start.len() as i64 <= MAX_LAUNCHES_PER_PASS);
        let primary = &after.deployments[0];
        prop_assert_eq!(primary.d.desired_count, desired);
        prop_assert!(plan.start.iter().all(|(_, d)| *d == primary.d.id));
        let existing = obs.iter().filter(|o| not_stopped(o)).count() as i64;
        if !plan.start.is_empty() {
            prop_assert!(
                existing + plan.start.len() as i64 <= max_total,
                "pass {pass}: {existing} tasks + {} launches > {max_total}",
                plan.start.len()
            );
            prop_assert!(!primary.halted, "pass {pass}: a halted deployment launched");
        }
        if max_pct >= 100 {
            prop_assert!(existing + plan.start.len() as i64 <= max_total);
        }
        // Stops: only tasks of the service that are still wanted.
        for (id, _) in &plan.stop {
            let o = by_id.get(id.as_str());
            prop_assert!(
                o.is_some_and(|o| o.desired_status == DesiredStatus::Running && not_stopped(o))
            );
        }

        // The failure count of the deployment that was primary, counted here.
        let folded = r
            .tasks
            .iter()
            .filter(|t| t.deployment == before_primary.d.id)
            .filter(|t| by_id.get(t.id.as_str()).is_some_and(|o| failed_stop(o)))
            .count() as i64;
        let sick = plan
            .stop
            .iter()
            .filter(|(id, why)| {
                why == HEALTH_REASON
                    && r.tasks
                        .iter()
                        .any(|t| t.id == *id && t.deployment == before_primary.d.id)
            })
            .count() as i64;
        any_failure |= folded > 0
            || sick > 0
            || obs
                .iter()
                .any(|o| failed_stop(o) || o.health_status == HealthStatus::Unhealthy);
        let failed = before_primary.d.failed_tasks + folded + sick;
        if let Some(d) = after
            .deployments
            .iter()
            .find(|d| d.d.id == before_primary.d.id)
        {
            prop_assert_eq!(d.d.failed_tasks, failed, "pass {}", pass);
        }
        // The breaker trips exactly when an IN_PROGRESS primary reaches the threshold.
        if before_primary.d.rollout_state == RolloutState::InProgress && !before_primary.halted {
            let tripped = after.deployments[0].d.id != before_primary.d.id
                || after.deployments[0].d.rollout_state == RolloutState::Failed;
            let should = s.breaker.is_some() && failed >= threshold;
            prop_assert_eq!(
                tripped,
                should,
                "pass {}: {} failures, threshold {}",
                pass,
                failed,
                threshold
            );
        }

        // Apply the plan to the world.
        for (id, _) in &plan.stop {
            if let Some(t) = world.get_mut(id) {
                t.o.desired_status = DesiredStatus::Stopped;
            }
        }
        let failing = pass < s.failure_passes;
        for (id, _) in &plan.start {
            let fate = s.fates[launched % s.fates.len()];
            launched += 1;
            world.insert(
                id.clone(),
                SimTask {
                    o: Observed {
                        id: id.clone(),
                        last_status: TaskStatus::Pending,
                        desired_status: DesiredStatus::Running,
                        health_status: HealthStatus::Unknown,
                        has_health_check: s.health_checks,
                        stop_code: None,
                        started_at: None,
                    },
                    fate,
                    may_fail: failing,
                    pending_left: fate.pending,
                    running_passes: 0,
                },
            );
        }
        r = plan.record;

        // minimumHealthyPercent holds while nothing has failed.
        if !any_failure {
            let healthy_left = r
                .tasks
                .iter()
                .filter_map(|t| world.get(&t.id))
                .filter(|t| healthy(&t.o, now))
                .count() as i64;
            prop_assert!(
                healthy_left >= min_healthy,
                "pass {pass}: {healthy_left} healthy < {min_healthy}"
            );
        }

        // Convergence once failures are over and no task launched during them is left.
        let p = &r.deployments[0];
        let done = r.deployments.len() == 1
            && p.d.rollout_state == RolloutState::Completed
            && r.tasks.len() as i64 == desired
            && r.tasks.iter().all(|t| {
                t.deployment == p.d.id
                    && world
                        .get(&t.id)
                        .is_some_and(|w| healthy(&w.o, now) && !w.will_break(s))
            });
        if let Some(at) = converged_at {
            prop_assert!(done, "pass {pass}: left the converged state of pass {at}");
            prop_assert!(plan.start.is_empty() && plan.stop.is_empty());
            if pass > at + 10 {
                break;
            }
        } else if done && !failing {
            let rolled_back = r.deployments[0].d.id != "ecs-svc/2";
            let want = if rolled_back { "td:1" } else { "td:2" };
            prop_assert_eq!(&p.d.task_definition, want);
            prop_assert!(!rolled_back || s.breaker == Some(true));
            converged_at = Some(pass);
        }
        advance(&mut world, s, now + DT);
    }
    let halted = r.deployments[0].halted;
    if converged_at.is_none() && !halted && has_room(s) {
        return Err(TestCaseError::fail(format!(
            "no convergence in {limit} passes: {} deployments, primary {} {}, {} tasks",
            r.deployments.len(),
            r.deployments[0].d.id,
            r.deployments[0].d.rollout_state,
            r.tasks.len()
        )));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn rollouts_keep_their_bounds_and_converge(s in scenario()) {
        simulate(&s)?;
    }
}

/// The failure-free rollouts the unit test `rolling_update_respects_min_and_max_percent`
/// steps through, each with a health check and without.
#[test]
fn known_rollouts_converge() {
    for (desired, min_pct, max_pct) in [(3, 100, 200), (4, 50, 100), (10, 50, 150), (2, 0, 100)] {
        for health_checks in [false, true] {
            let s = Scenario {
                desired,
                min_pct,
                max_pct,
                breaker: Some(true),
                health_checks,
                grace: None,
                start_fail: 0,
                break_rate: 0,
                failure_passes: 0,
                fates: vec![Fate {
                    pending: 1,
                    to_healthy: 1,
                    start_roll: 255,
                    break_roll: 255,
                }],
            };
            simulate(&s).unwrap();
        }
    }
}
