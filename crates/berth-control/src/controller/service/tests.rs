use super::*;
use berth_api::ecs::DeploymentCircuitBreaker;

fn ids() -> impl FnMut(IdKind) -> String {
    let mut n = 0;
    move |k| {
        n += 1;
        match k {
            IdKind::Task => format!("t{n}"),
            IdKind::Event => format!("e{n}"),
            IdKind::Deployment => format!("{n}"),
        }
    }
}

fn deployment(id: &str, td: &str, status: DeploymentStatus, desired: i64) -> DeploymentState {
    DeploymentState {
        d: Deployment {
            id: id.into(),
            status,
            task_definition: td.into(),
            desired_count: desired,
            rollout_state: RolloutState::InProgress,
            ..Default::default()
        },
        revision_arn: format!("rev/{id}"),
        sd_arn: Some(format!("sd/{id}")),
        halted: false,
    }
}

fn service(desired: i64, min: i64, max: i64) -> ServiceRecord {
    let mut r = ServiceRecord::default();
    r.service.service_name = "web".into();
    r.service.status = ServiceStatus::Active;
    r.service.desired_count = desired;
    r.service.deployment_configuration = DeploymentConfiguration {
        maximum_percent: Some(max),
        minimum_healthy_percent: Some(min),
        ..Default::default()
    };
    r.deployments = vec![deployment(
        "ecs-svc/1",
        "td:1",
        DeploymentStatus::Primary,
        desired,
    )];
    r.service_deployments = vec![SdState {
        sd: ServiceDeployment {
            service_deployment_arn: "sd/ecs-svc/1".into(),
            status: ServiceDeploymentStatus::InProgress,
            ..Default::default()
        },
        deployment_id: "ecs-svc/1".into(),
        rollback_deployment_id: None,
    }];
    r
}

fn task(id: &str, last: TaskStatus) -> Observed {
    Observed {
        id: id.into(),
        last_status: last,
        desired_status: if last == TaskStatus::Stopped {
            DesiredStatus::Stopped
        } else {
            DesiredStatus::Running
        },
        health_status: HealthStatus::Unknown,
        has_health_check: false,
        stop_code: None,
        // Long enough ago to count as stable.
        started_at: (last == TaskStatus::Running).then_some(-1.0e9),
    }
}

fn own(r: &mut ServiceRecord, id: &str, dep: &str) {
    r.tasks.push(OwnedTask {
        id: id.into(),
        deployment: dep.into(),
    });
}

#[test]
fn starts_desired_count_then_completes_and_reports_steady() {
    let r = service(3, 100, 200);
    let p = reconcile(&r, &[], 10.0, &mut ids());
    assert_eq!(p.start.len(), 3);
    assert!(p.stop.is_empty());
    assert!(p.record.service.events[0]
        .message
        .contains("has started 3 tasks"));
    assert_eq!(
        p.record.deployments[0].d.rollout_state,
        RolloutState::InProgress
    );
    // All three run: the deployment completes, the service is steady.
    let obs: Vec<Observed> = p
        .start
        .iter()
        .map(|(id, _)| task(id, TaskStatus::Running))
        .collect();
    let p2 = reconcile(&p.record, &obs, 11.0, &mut ids());
    assert!(p2.start.is_empty() && p2.stop.is_empty());
    assert_eq!(
        p2.record.deployments[0].d.rollout_state,
        RolloutState::Completed
    );
    assert_eq!(
        p2.record.service_deployments[0].sd.status,
        ServiceDeploymentStatus::Successful
    );
    assert_eq!(
        p2.record.service.events[0].message,
        "(service web) has reached a steady state."
    );
    // Nothing changes: nothing to write.
    let p3 = reconcile(&p2.record, &obs, 12.0, &mut ids());
    assert!(!p3.changed(&p2.record));
}

#[test]
fn a_task_that_just_started_does_not_complete_the_deployment_yet() {
    let r = service(1, 100, 200);
    let p = reconcile(&r, &[], 10.0, &mut ids());
    let mut fresh = task(&p.start[0].0, TaskStatus::Running);
    fresh.started_at = Some(10.5);
    let p2 = reconcile(&p.record, std::slice::from_ref(&fresh), 10.6, &mut ids());
    assert_eq!(
        p2.record.deployments[0].d.rollout_state,
        RolloutState::InProgress
    );
    let again = p2
        .requeue_after
        .expect("looks again when the task is stable");
    assert!((again - 0.9).abs() < 1e-6, "{again}");
    let p3 = reconcile(&p2.record, &[fresh], 11.6, &mut ids());
    assert_eq!(
        p3.record.deployments[0].d.rollout_state,
        RolloutState::Completed
    );
}

#[test]
fn replaces_a_task_that_exits_and_counts_the_failure() {
    let mut r = service(2, 100, 200);
    own(&mut r, "a", "ecs-svc/1");
    own(&mut r, "b", "ecs-svc/1");
    let mut dead = task("b", TaskStatus::Stopped);
    dead.stop_code = Some(StopCode::EssentialContainerExited);
    let p = reconcile(&r, &[task("a", TaskStatus::Running), dead], 5.0, &mut ids());
    assert_eq!(p.start.len(), 1);
    assert_eq!(p.record.deployments[0].d.failed_tasks, 1);
    assert_eq!(p.record.tasks.len(), 2);
    // A user stop is replaced but is not a failure.
    let mut user = task("b", TaskStatus::Stopped);
    user.stop_code = Some(StopCode::UserInitiated);
    let p = reconcile(&r, &[task("a", TaskStatus::Running), user], 5.0, &mut ids());
    assert_eq!(p.start.len(), 1);
    assert_eq!(p.record.deployments[0].d.failed_tasks, 0);
}

#[test]
fn unhealthy_tasks_are_stopped_and_replaced() {
    let mut r = service(1, 100, 200);
    own(&mut r, "a", "ecs-svc/1");
    let mut sick = task("a", TaskStatus::Running);
    sick.has_health_check = true;
    sick.health_status = HealthStatus::Unhealthy;
    let p = reconcile(&r, &[sick], 5.0, &mut ids());
    assert_eq!(
        p.stop,
        vec![("a".into(), "Task failed container health checks".into())]
    );
    assert_eq!(p.start.len(), 1);
    assert!(p
        .record
        .service
        .events
        .iter()
        .any(|e| e.message == "(service web) (task a) failed container health checks."));
}

#[test]
fn unhealthy_tasks_are_left_alone_during_the_grace_period() {
    let mut r = service(1, 100, 200);
    r.service.health_check_grace_period_seconds = Some(30);
    own(&mut r, "a", "ecs-svc/1");
    let mut sick = task("a", TaskStatus::Running);
    sick.has_health_check = true;
    sick.health_status = HealthStatus::Unhealthy;
    sick.started_at = Some(100.0);
    // 10 s after it started: ignored, looked at again when the grace period ends.
    let p = reconcile(&r, std::slice::from_ref(&sick), 110.0, &mut ids());
    assert!(p.stop.is_empty(), "{:?}", p.stop);
    assert!(p.start.is_empty());
    assert_eq!(p.requeue_after, Some(20.0));
    // After the grace period: stopped and replaced.
    let p = reconcile(&r, &[sick], 131.0, &mut ids());
    assert_eq!(p.stop.len(), 1);
    assert_eq!(p.start.len(), 1);
}

#[test]
fn scale_in_stops_pending_tasks_first() {
    let mut r = service(1, 100, 200);
    own(&mut r, "a", "ecs-svc/1");
    own(&mut r, "b", "ecs-svc/1");
    let p = reconcile(
        &r,
        &[
            task("a", TaskStatus::Running),
            task("b", TaskStatus::Pending),
        ],
        5.0,
        &mut ids(),
    );
    assert_eq!(p.stop.len(), 1);
    assert_eq!(p.stop[0].0, "b");
    assert!(p.stop[0].1.starts_with("Scaling activity initiated by"));
}

/// Simulates a rollout: every started task turns RUNNING at the next step, every stopped task
/// STOPPED; checks min/max at each step.
fn roll(desired: i64, min: i64, max: i64) -> usize {
    let mut r = service(desired, min, max);
    let mut obs = Vec::new();
    for i in 0..desired {
        let id = format!("old{i}");
        own(&mut r, &id, "ecs-svc/1");
        obs.push(task(&id, TaskStatus::Running));
    }
    r.deployments[0].d.rollout_state = RolloutState::Completed;
    r.last_completed = Some(r.deployments[0].clone());
    r.deployments[0].d.status = DeploymentStatus::Active;
    r.deployments.insert(
        0,
        deployment("ecs-svc/2", "td:2", DeploymentStatus::Primary, desired),
    );
    let mut gen = ids();
    for step in 0..50 {
        let p = reconcile(&r, &obs, step as f64, &mut gen);
        let alive = |o: &Observed| o.last_status != TaskStatus::Stopped;
        for (id, _) in &p.stop {
            let o = obs.iter_mut().find(|o| &o.id == id).unwrap();
            o.desired_status = DesiredStatus::Stopped;
        }
        let healthy = obs
            .iter()
            .filter(|o| {
                o.last_status == TaskStatus::Running && o.desired_status == DesiredStatus::Running
            })
            .count() as i64;
        let total = obs.iter().filter(|o| alive(o)).count() as i64 + p.start.len() as i64;
        assert!(
            healthy >= (desired * min + 99) / 100,
            "step {step}: {healthy} healthy"
        );
        assert!(total <= desired * max / 100, "step {step}: {total} tasks");
        // The next step: stops complete, starts run.
        for o in obs.iter_mut() {
            if o.desired_status == DesiredStatus::Stopped {
                o.last_status = TaskStatus::Stopped;
                o.stop_code = Some(StopCode::ServiceSchedulerInitiated);
            }
        }
        for (id, _) in &p.start {
            obs.push(task(id, TaskStatus::Running));
        }
        r = p.record;
        if r.deployments.len() == 1 && r.deployments[0].d.rollout_state == RolloutState::Completed {
            assert_eq!(r.deployments[0].d.id, "ecs-svc/2");
            return step;
        }
    }
    panic!("rollout did not complete");
}

#[test]
fn rolling_update_respects_min_and_max_percent() {
    roll(3, 100, 200);
    roll(4, 50, 100);
    roll(10, 50, 150);
    roll(2, 0, 100);
}

#[test]
fn circuit_breaker_rolls_back_to_the_last_completed_deployment() {
    let mut r = service(3, 100, 200);
    r.service
        .deployment_configuration
        .deployment_circuit_breaker = Some(DeploymentCircuitBreaker {
        enable: true,
        rollback: true,
        ..Default::default()
    });
    r.service.task_definition = "td:2".into();
    r.last_completed = Some(deployment(
        "ecs-svc/0",
        "td:1",
        DeploymentStatus::Primary,
        3,
    ));
    r.deployments[0].d.failed_tasks = 2;
    own(&mut r, "x", "ecs-svc/1");
    let mut dead = task("x", TaskStatus::Stopped);
    dead.stop_code = Some(StopCode::EssentialContainerExited);
    let p = reconcile(&r, &[dead], 1.0, &mut ids());
    let rec = &p.record;
    assert_eq!(rec.deployments[0].d.task_definition, "td:1");
    assert_eq!(rec.deployments[0].d.status, DeploymentStatus::Primary);
    // The failed deployment has no tasks left, so it is gone already.
    assert_eq!(rec.deployments.len(), 1);
    assert_eq!(rec.service.task_definition, "td:1");
    assert_eq!(
        rec.service_deployments[0].sd.status,
        ServiceDeploymentStatus::RollbackInProgress
    );
    assert_eq!(p.start.len(), 3);
    assert!(p.start.iter().all(|(_, d)| *d == rec.deployments[0].d.id));
    // Without rollback the deployment just fails and launches nothing more.
    let mut r2 = r.clone();
    r2.service
        .deployment_configuration
        .deployment_circuit_breaker
        .as_mut()
        .unwrap()
        .rollback = false;
    let mut dead = task("x", TaskStatus::Stopped);
    dead.stop_code = Some(StopCode::EssentialContainerExited);
    let p = reconcile(&r2, &[dead], 1.0, &mut ids());
    assert_eq!(
        p.record.deployments[0].d.rollout_state,
        RolloutState::Failed
    );
    assert_eq!(
        p.record.service_deployments[0].sd.status,
        ServiceDeploymentStatus::Stopped
    );
    assert!(p.start.is_empty());
}

#[test]
fn thresholds_and_backoff() {
    assert_eq!(failure_threshold(1), 3);
    assert_eq!(failure_threshold(10), 5);
    assert_eq!(failure_threshold(1000), 200);
    assert_eq!(launch_backoff(1), 0.0);
    assert!(launch_backoff(4) > 0.0 && launch_backoff(100) <= 60.0);
}

#[test]
fn draining_stops_everything_then_goes_inactive() {
    let mut r = service(2, 100, 200);
    r.service.status = ServiceStatus::Draining;
    own(&mut r, "a", "ecs-svc/1");
    let p = reconcile(&r, &[task("a", TaskStatus::Running)], 1.0, &mut ids());
    assert_eq!(p.stop.len(), 1);
    assert!(p.start.is_empty());
    assert_eq!(p.record.service.status, ServiceStatus::Draining);
    let mut gone = task("a", TaskStatus::Stopped);
    gone.stop_code = Some(StopCode::ServiceSchedulerInitiated);
    let p = reconcile(&p.record, &[gone], 2.0, &mut ids());
    assert_eq!(p.record.service.status, ServiceStatus::Inactive);
    let p = reconcile(&p.record, &[], 2.0 + INACTIVE_RETENTION + 1.0, &mut ids());
    assert!(p.delete);
}

/// A scale-out to thousands launches in batches of [`MAX_LAUNCHES_PER_PASS`]; a service of
/// 5,000 RUNNING tasks under a rolling replacement plans in one linear pass.
#[test]
fn large_services_launch_in_batches() {
    let mut r = service(5000, 100, 200);
    let plan = reconcile(&r, &[], 0.0, &mut ids());
    assert_eq!(plan.start.len() as i64, MAX_LAUNCHES_PER_PASS);
    assert!(plan.requeue_after.is_some_and(|q| q <= 1.0));
    // 5,000 live tasks of an old deployment and a new primary: a full pass.
    r.deployments.insert(
        0,
        deployment("ecs-svc/2", "td:2", DeploymentStatus::Primary, 5000),
    );
    r.deployments[1].d.status = DeploymentStatus::Active;
    let mut obs = Vec::new();
    for i in 0..5000 {
        let id = format!("old{i}");
        own(&mut r, &id, "ecs-svc/1");
        obs.push(task(&id, TaskStatus::Running));
    }
    let plan = reconcile(&r, &obs, 0.0, &mut ids());
    assert_eq!(plan.start.len() as i64, MAX_LAUNCHES_PER_PASS);
    assert!(
        plan.stop.is_empty(),
        "min healthy 100% keeps every old task"
    );
}

/// Every task of every revision fails at once (the old revision too): the breaker rolls back
/// once, the failing rollback ends ROLLBACK_FAILED instead of rolling back again, and over ten
/// simulated minutes the service never starts more than a bounded number of tasks per minute.
#[test]
fn a_failing_rollback_settles_and_launches_stay_bounded() {
    let mut r = service(2, 100, 200);
    r.service
        .deployment_configuration
        .deployment_circuit_breaker = Some(DeploymentCircuitBreaker {
        enable: true,
        rollback: true,
        ..Default::default()
    });
    r.service.task_definition = "td:2".into();
    r.last_completed = Some(deployment(
        "ecs-svc/0",
        "td:1",
        DeploymentStatus::Primary,
        2,
    ));
    let mut next_id = ids();
    let mut started_at: Vec<(String, f64)> = Vec::new();
    let mut now = 0.0;
    while now < 600.0 {
        let obs: Vec<Observed> = r
            .tasks
            .iter()
            .map(|t| {
                let at = started_at.iter().find(|(id, _)| *id == t.id).unwrap().1;
                if now - at >= 0.5 {
                    let mut o = task(&t.id, TaskStatus::Stopped);
                    o.stop_code = Some(StopCode::EssentialContainerExited);
                    o
                } else {
                    task(&t.id, TaskStatus::Pending)
                }
            })
            .collect();
        let plan = reconcile(&r, &obs, now, &mut next_id);
        for (id, _) in &plan.start {
            started_at.push((id.clone(), now));
        }
        r = plan.record;
        now += 0.25;
    }
    let total = started_at.len();
    eprintln!("{total} task starts in ten simulated minutes");
    for minute in 0..10 {
        let lo = minute as f64 * 60.0;
        let n = started_at
            .iter()
            .filter(|(_, t)| *t >= lo && *t < lo + 60.0)
            .count();
        assert!(n <= 20, "{n} starts in minute {minute} ({total} in all)");
    }
    assert!(total <= 20, "{total} starts in ten minutes");
    assert_eq!(r.deployments[0].d.rollout_state, RolloutState::Failed);
    assert!(r.deployments[0].halted);
    assert_eq!(
        r.service_deployments[0].sd.status,
        ServiceDeploymentStatus::RollbackFailed
    );
    assert!(r
        .service
        .events
        .iter()
        .any(|e| e.message.contains("rollback failed")));
}
