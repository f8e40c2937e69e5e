use super::*;
use berth_api::agent::{ContainerDependencySpec, ContainerSpec, HealthCheckSpec};

/// A task of containers `(name, essential, [(dependency, condition)])`; names starting with
/// `h` have a health check.
/// `(name, essential, [(dependency, condition)])` per container.
type Containers<'a> = [(&'a str, bool, &'a [(&'a str, &'a str)])];

fn spec(containers: &Containers) -> Arc<TaskSpec> {
    Arc::new(TaskSpec {
        task_id: "t1".into(),
        containers: containers
            .iter()
            .map(|(name, essential, deps)| ContainerSpec {
                name: name.to_string(),
                essential: *essential,
                health_check: name.starts_with('h').then(|| HealthCheckSpec {
                    command: vec!["CMD".into(), "true".into()],
                    ..Default::default()
                }),
                depends_on: deps
                    .iter()
                    .map(|(d, c)| ContainerDependencySpec {
                        container_name: d.to_string(),
                        condition: c.to_string(),
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

/// A report effect, whatever it carries.
fn report() -> Effect {
    Effect::Report(Box::default())
}

/// Feeds `events` in order; the state after them and every effect (reports without their
/// content, see [`report`]).
fn feed(mut st: TaskState, events: impl IntoIterator<Item = Event>) -> (TaskState, Vec<Effect>) {
    let mut all = Vec::new();
    for ev in events {
        let fx;
        (st, fx) = on(st, ev);
        all.extend(fx.into_iter().map(|e| match e {
            Effect::Report(_) => report(),
            e => e,
        }));
    }
    (st, all)
}

fn final_report(fx: &[Effect]) -> &TaskStateReport {
    let finals: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::FinalReport(r) => Some(&**r),
            _ => None,
        })
        .collect();
    assert_eq!(finals.len(), 1, "{fx:?}");
    finals[0]
}

fn exited(idx: usize, code: i32) -> Event {
    Event::Exited {
        idx,
        code,
        oom: false,
    }
}

#[test]
fn a_task_runs_and_stops_when_its_essential_container_exits() {
    let st = TaskState::new(spec(&[("app", true, &[]), ("side", false, &[])]));
    let (st, fx) = feed(st, [Event::Preparing, Event::Prepared]);
    assert_eq!(fx, vec![Effect::Start(0), Effect::Start(1)]);
    assert_eq!(st.status(), TaskStatus::Pending);
    let (st, fx) = feed(st, [Event::Started(0)]);
    // Still starting container 1: not running yet.
    assert_eq!(fx, vec![Effect::Tail(0), Effect::CheckHealth(0)]);
    let (st, fx) = feed(st, [Event::Started(1)]);
    assert_eq!(fx, vec![Effect::Tail(1), Effect::CheckHealth(1), report()]);
    assert_eq!(st.status(), TaskStatus::Running);
    assert_eq!(
        st.report.containers[1].runtime_id.as_deref(),
        Some("berth-t1-side")
    );
    let (st, fx) = feed(st, [exited(0, 3)]);
    assert_eq!(
        fx,
        vec![
            Effect::Signal(1, Signal::Term),
            Effect::StopTimer(1, Duration::from_secs(30))
        ]
    );
    let (st, fx) = feed(st, [Event::StopTimeout(1)]);
    assert_eq!(fx, vec![Effect::Signal(1, Signal::Kill)]);
    let (st, fx) = feed(st, [exited(1, 137)]);
    assert_eq!(fx.first(), Some(&Effect::CleanUp));
    assert_eq!(fx.last(), Some(&Effect::RemoveState));
    let r = final_report(&fx);
    assert_eq!(r.last_status.as_str(), "STOPPED");
    assert_eq!(
        r.stop_code.map(|v| v.as_str()),
        Some("EssentialContainerExited")
    );
    assert_eq!(r.stopped_reason.as_deref(), Some(ESSENTIAL_EXITED));
    assert_eq!(r.containers[0].exit_code, Some(3));
    assert_eq!(r.containers[1].exit_code, Some(137));
    assert!(r
        .containers
        .iter()
        .all(|c| c.last_status.as_str() == "STOPPED"));
    assert_eq!(st.stage, Stage::Done);
    // Nothing happens after the end.
    let (_, fx) = feed(st, [Event::StopRequested, exited(0, 1), Event::ShimLost]);
    assert!(fx.is_empty(), "{fx:?}");
}

#[test]
fn a_stop_while_preparing_or_starting_ends_stopped_as_user_initiated() {
    // Before anything was set up: only the report.
    let st = TaskState::new(spec(&[("app", true, &[])]));
    let (st, fx) = feed(st, [Event::StopRequested]);
    assert!(matches!(fx.as_slice(), [Effect::FinalReport(_)]), "{fx:?}");
    assert_eq!(st.stop, Some((StopCode::UserInitiated, None)));
    // While pulling: undo what was set up.
    let st = TaskState::new(spec(&[("app", true, &[])]));
    let (st, fx) = feed(st, [Event::Preparing, Event::StopRequested]);
    assert_eq!(fx[0], Effect::CleanUp);
    assert_eq!(fx[2], Effect::RemoveState);
    let r = final_report(&fx);
    assert_eq!(
        (r.last_status.as_str(), r.stop_code.map(|v| v.as_str())),
        ("STOPPED", None)
    );
    assert_eq!(st.stop, Some((StopCode::UserInitiated, None)));
    // While the container starts: it is killed as soon as it runs; the task never runs.
    let st = TaskState::new(spec(&[
        ("app", true, &[]),
        ("later", true, &[("app", "START")]),
    ]));
    let (st, fx) = feed(
        st,
        [Event::Preparing, Event::Prepared, Event::StopRequested],
    );
    assert_eq!(fx, vec![Effect::Start(0)]);
    assert_eq!(st.phases[1], Phase::NotStarted);
    let (st, fx) = feed(st, [Event::Started(0)]);
    assert_eq!(
        fx,
        vec![
            Effect::Tail(0),
            Effect::CheckHealth(0),
            Effect::Signal(0, Signal::Kill)
        ]
    );
    let (st, fx) = feed(st, [exited(0, 137)]);
    let r = final_report(&fx);
    assert_eq!(
        (r.last_status.as_str(), r.stop_code.map(|v| v.as_str())),
        ("STOPPED", None)
    );
    assert_eq!(r.stopped_reason, None);
    assert_eq!(st.stop, Some((StopCode::UserInitiated, None)));
    assert!(r.started_at.is_none());
}

#[test]
fn a_failed_preparation_reports_task_failed_to_start_with_container_reasons() {
    let st = TaskState::new(spec(&[("a", true, &[]), ("b", true, &[])]));
    let (_, fx) = feed(
        st,
        [
            Event::Preparing,
            Event::PrepareFailed {
                reason: "CannotPullContainerError: nope".into(),
                per_container: vec![None, Some("CannotPullContainerError: nope".into())],
            },
        ],
    );
    assert_eq!(fx.len(), 3);
    let r = final_report(&fx);
    assert_eq!(r.stop_code.map(|v| v.as_str()), Some("TaskFailedToStart"));
    assert_eq!(r.containers[0].reason, None);
    assert_eq!(
        r.containers[1].reason.as_deref(),
        Some("CannotPullContainerError: nope")
    );
    // Rejected before anything was set up: nothing to undo.
    let st = TaskState::new(spec(&[("a", true, &[])]));
    let (_, fx) = feed(st, [Event::Rejected("invalid task".into())]);
    assert!(matches!(fx.as_slice(), [Effect::FinalReport(r)]
        if r.stop_code.map(|v| v.as_str()) == Some("TaskFailedToStart")));
}

#[test]
fn an_essential_start_failure_stops_the_task_and_dependents_never_start() {
    let st = TaskState::new(spec(&[
        ("db", true, &[]),
        ("side", false, &[]),
        ("app", true, &[("db", "START")]),
    ]));
    let (st, _) = feed(st, [Event::Preparing, Event::Prepared, Event::Started(1)]);
    let (st, fx) = feed(st, [Event::StartFailed(0, "exec: not found".into())]);
    // `app` can never start; `side` is stopped.
    assert_eq!(
        fx,
        vec![
            Effect::Signal(1, Signal::Term),
            Effect::StopTimer(1, Duration::from_secs(30))
        ]
    );
    assert_eq!(st.phases[2], Phase::NotStarted);
    let (_, fx) = feed(st, [exited(1, 0)]);
    let r = final_report(&fx);
    assert_eq!(r.stop_code.map(|v| v.as_str()), Some("TaskFailedToStart"));
    assert_eq!(
        r.stopped_reason.as_deref(),
        Some("CannotStartContainerError: exec: not found")
    );
    assert_eq!(
        r.containers[0].reason.as_deref(),
        Some("CannotStartContainerError: exec: not found")
    );
}

#[test]
fn a_dependency_on_health_waits_for_it_and_gives_up_when_unhealthy() {
    let s = spec(&[("hdb", true, &[]), ("app", true, &[("hdb", "HEALTHY")])]);
    let (st, fx) = feed(
        TaskState::new(s.clone()),
        [Event::Preparing, Event::Prepared, Event::Started(0)],
    );
    assert!(!fx.contains(&Effect::Start(1)));
    assert_eq!(
        st.report.containers[0].health_status.map(|v| v.as_str()),
        Some("UNKNOWN")
    );
    let (st, fx) = feed(st, [Event::Health(0, HealthStatus::Healthy)]);
    assert_eq!(fx, vec![Effect::WriteHealth(0), report(), Effect::Start(1)]);
    assert_eq!(st.health[0].status.as_str(), "HEALTHY");

    let (st, _) = feed(
        TaskState::new(s),
        [Event::Preparing, Event::Prepared, Event::Started(0)],
    );
    let (st, fx) = feed(st, [Event::Health(0, HealthStatus::Unhealthy)]);
    assert_eq!(fx[0], Effect::WriteHealth(0));
    assert!(fx.contains(&Effect::Signal(0, Signal::Term)));
    assert_eq!(
        st.stop.as_ref().map(|s| s.0),
        Some(StopCode::TaskFailedToStart)
    );
    assert!(st.report.containers[1]
        .reason
        .as_deref()
        .unwrap()
        .starts_with("DependencyError: dependency hdb is unhealthy"));
}

#[test]
fn an_exit_that_overtakes_the_start_reply_means_the_task_ran() {
    let st = TaskState::new(spec(&[("job", false, &[]), ("app", true, &[])]));
    let (st, _) = feed(st, [Event::Preparing, Event::Prepared, Event::Started(1)]);
    let (st, fx) = feed(st, [exited(0, 0)]);
    assert_eq!(fx[0], Effect::Tail(0));
    assert_eq!(st.status(), TaskStatus::Running);
    assert_eq!(st.report.containers[0].exit_code, Some(0));
    assert_eq!(st.report.containers[0].last_status.as_str(), "STOPPED");
    assert_eq!(
        st.report.containers[0].runtime_id.as_deref(),
        Some("berth-t1-job")
    );
    // The late start reply changes nothing.
    let (st, fx) = feed(st, [Event::Started(0)]);
    assert!(fx.is_empty());
    assert_eq!(st.phases[0], Phase::Exited(0));
}

#[test]
fn an_essential_container_that_exits_at_once_is_reported_running_then_stopped() {
    let st = TaskState::new(spec(&[("app", true, &[])]));
    let (_, fx) = on(
        feed(st, [Event::Preparing, Event::Prepared]).0,
        exited(0, 0),
    );
    // The running report is a snapshot taken before the end (the shell stamps its startedAt).
    let Effect::Report(r) = &fx[1] else {
        panic!("{fx:?}")
    };
    assert_eq!(r.last_status.as_str(), "RUNNING");
    assert_eq!(r.containers[0].last_status.as_str(), "RUNNING");
    let r = final_report(&fx);
    assert_eq!(r.last_status.as_str(), "STOPPED");
    assert_eq!(r.containers[0].exit_code, Some(0));
    assert_eq!(
        r.stop_code.map(|v| v.as_str()),
        Some("EssentialContainerExited")
    );
}

#[test]
fn a_lost_shim_and_an_eviction_stop_the_task() {
    let s = spec(&[("app", true, &[]), ("late", false, &[("app", "COMPLETE")])]);
    let (st, _) = feed(
        TaskState::new(s.clone()),
        [Event::Preparing, Event::Prepared, Event::Started(0)],
    );
    let (_, fx) = feed(st, [Event::ShimLost]);
    let r = final_report(&fx);
    assert_eq!(
        r.stop_code.map(|v| v.as_str()),
        Some("EssentialContainerExited")
    );
    assert_eq!(r.stopped_reason.as_deref(), Some(LOST_REASON));
    assert_eq!(r.containers[0].reason.as_deref(), Some(LOST_REASON));

    let (st, _) = feed(
        TaskState::new(s),
        [Event::Preparing, Event::Prepared, Event::Started(0)],
    );
    let (st, fx) = feed(st, [Event::Evicted("over its storage".into())]);
    assert_eq!(
        fx,
        vec![
            Effect::Signal(0, Signal::Term),
            Effect::StopTimer(0, Duration::from_secs(30)),
            Effect::Signal(0, Signal::Kill)
        ]
    );
    let (_, fx) = feed(st, [exited(0, 137)]);
    let r = final_report(&fx);
    assert_eq!(
        r.stop_code.map(|v| v.as_str()),
        Some("EssentialContainerExited")
    );
    assert_eq!(r.stopped_reason.as_deref(), Some("over its storage"));
}

#[test]
fn an_adopted_task_resumes_tailing_checking_and_resolving() {
    let s = spec(&[("happ", true, &[]), ("b", true, &[]), ("c", false, &[])]);
    let mut report = pending_report(&s);
    report.last_status = TaskStatus::Running;
    let phases = vec![Phase::Running, Phase::Starting, Phase::Exited(0)];
    let st = TaskState::adopted(s, report, phases, vec![health::State::new(); 3]);
    let (st, fx) = feed(st, [Event::Adopted]);
    assert_eq!(
        fx,
        vec![
            Effect::Tail(0),
            Effect::CheckHealth(0),
            Effect::Resolve(1),
            Effect::Tail(2)
        ]
    );
    // The resolver finds the start failed (the shim had taken it).
    let (st, fx) = feed(st, [Event::StartTaken(1)]);
    assert_eq!(fx, vec![Effect::Resolve(1)]);
    let (_, fx) = feed(st, [Event::StartFailed(1, "gone".into())]);
    assert!(fx.contains(&Effect::Signal(0, Signal::Term)));
}

/// xorshift64*: a small seeded generator, so a failing sequence can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_spec(rng: &mut Rng) -> Arc<TaskSpec> {
    let n = 1 + rng.below(4);
    let names: Vec<String> = (0..n)
        .map(|i| format!("{}{i}", if rng.below(2) == 0 { "h" } else { "c" }))
        .collect();
    let conditions = ["START", "COMPLETE", "SUCCESS", "HEALTHY"];
    let mut deps = vec![Vec::new(); n];
    for (i, d) in deps.iter_mut().enumerate() {
        for name in &names[..i] {
            if rng.below(3) == 0 {
                d.push(ContainerDependencySpec {
                    container_name: name.clone(),
                    condition: conditions[rng.below(4)].into(),
                });
            }
        }
    }
    Arc::new(TaskSpec {
        task_id: "t1".into(),
        containers: (0..n)
            .map(|i| ContainerSpec {
                name: names[i].clone(),
                essential: i == 0 || rng.below(2) == 0,
                stop_timeout: rng.below(3) as u32,
                health_check: names[i].starts_with('h').then(HealthCheckSpec::default),
                depends_on: deps[i].clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

fn random_event(rng: &mut Rng, n: usize) -> Event {
    let idx = rng.below(n);
    match rng.below(20) {
        0 => Event::StopRequested,
        1 => Event::Preparing,
        2 => Event::Prepared,
        3 if rng.below(2) == 0 => Event::ShimLost,
        3 => Event::ShimGone,
        4 => Event::Evicted("evicted".into()),
        5 => Event::StartTaken(idx),
        6 | 7 => Event::StartFailed(idx, "boom".into()),
        8..=10 => Event::Exited {
            idx,
            code: rng.below(3) as i32,
            oom: rng.below(4) == 0,
        },
        11 | 12 => Event::Health(idx, HealthStatus::ALL[rng.below(3)]),
        13 => Event::StopTimeout(idx),
        14 if rng.below(10) == 0 => Event::PrepareFailed {
            reason: "pull".into(),
            per_container: vec![Some("pull".into())],
        },
        _ => Event::Started(idx),
    }
}

/// Random event sequences (seeded, replayable): whatever happens in whatever order, the task's
/// and containers' statuses never go backwards, only running containers are signalled, no
/// container is started twice, exactly one final report (STOPPED, every container STOPPED)
/// ends every task once nothing runs, an essential exit that stops a task is reported as
/// `EssentialContainerExited` with its exit code, and a stop request that stops a task leaves
/// no stop code but the start failure's.
#[test]
fn random_event_sequences_keep_the_invariants() {
    for seed in 1..=3000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let s = random_spec(&mut rng);
        let n = s.containers.len();
        let mut st = TaskState::new(s.clone());
        let mut finals = Vec::new();
        let mut started = vec![false; n];
        let mut reported = TaskStatus::Pending;
        let mut first_cause: Option<Event> = None;
        let steps = rng.below(40);
        let mut step = 0;
        while st.stage != Stage::Done {
            let ev = if step < steps {
                random_event(&mut rng, n)
            } else if st.stage != Stage::Supervising {
                // Drive to the end: a stop before supervision ends the task at once.
                Event::StopRequested
            } else if let Some(i) = st.phases.iter().position(|p| *p == Phase::Starting) {
                Event::Started(i)
            } else if let Some(i) = st.phases.iter().position(|p| *p == Phase::Running) {
                if st.stopping {
                    exited(i, 137)
                } else {
                    Event::StopRequested
                }
            } else {
                Event::StopRequested
            };
            step += 1;
            assert!(step < 200, "seed {seed}: no end");
            let before = st.clone();
            let fx;
            (st, fx) = on(st, ev.clone());
            let ctx = || format!("seed {seed}: {ev:?} after {before:?} gave {fx:?}");
            if first_cause.is_none() && !before.stopping && (st.stopping || st.stage == Stage::Done)
            {
                first_cause = Some(ev.clone());
            }
            assert!(before.status().can_transition_to(st.status()), "{}", ctx());
            for (a, b) in before.report.containers.iter().zip(&st.report.containers) {
                assert!(a.last_status.can_transition_to(b.last_status), "{}", ctx());
            }
            for e in &fx {
                match e {
                    Effect::Start(i) => {
                        assert!(!started[*i], "{}", ctx());
                        started[*i] = true;
                    }
                    Effect::Signal(i, _) => assert_eq!(st.phases[*i], Phase::Running, "{}", ctx()),
                    Effect::FinalReport(r) => finals.push(r.clone()),
                    Effect::Report(r) => {
                        let status = r.last_status;
                        assert!(status != TaskStatus::Stopped, "{}", ctx());
                        assert!(reported.can_transition_to(status), "{}", ctx());
                        reported = status;
                    }
                    _ => {}
                }
            }
        }
        // After the end, nothing does anything.
        for _ in 0..3 {
            let fx;
            (st, fx) = on(st, random_event(&mut rng, n));
            assert!(fx.is_empty(), "seed {seed}: {fx:?}");
        }
        assert_eq!(finals.len(), 1, "seed {seed}");
        let r = &finals[0];
        assert_eq!(r.last_status.as_str(), "STOPPED", "seed {seed}");
        assert!(
            r.containers
                .iter()
                .all(|c| c.last_status.as_str() == "STOPPED"),
            "seed {seed}"
        );
        match &first_cause {
            Some(Event::Exited { idx, code, .. }) if s.containers[*idx].essential => {
                assert_eq!(
                    r.stop_code.map(|v| v.as_str()),
                    Some("EssentialContainerExited"),
                    "seed {seed}: {r:?}"
                );
                assert_eq!(r.containers[*idx].exit_code, Some(*code), "seed {seed}");
            }
            Some(Event::StopRequested) => {
                assert!(
                    r.stop_code.is_none() || st.start_error.is_some(),
                    "seed {seed}: {r:?}"
                );
                assert!(
                    matches!(
                        st.stop,
                        Some((StopCode::UserInitiated | StopCode::TaskFailedToStart, _))
                    ),
                    "seed {seed}: {:?}",
                    st.stop
                );
            }
            _ => {}
        }
    }
}

#[test]
fn a_shim_found_gone_after_a_restart_ends_the_task_with_what_the_disk_recorded() {
    let s = spec(&[
        ("app", true, &[]),
        ("side", false, &[]),
        ("late", false, &[]),
    ]);
    let mut report = pending_report(&s);
    report.last_status = TaskStatus::Running;
    report.containers[0].exit_code = Some(4);
    let phases = vec![Phase::Exited(4), Phase::Running, Phase::Pending];
    let st = TaskState::adopted(
        s.clone(),
        report.clone(),
        phases,
        vec![health::State::new(); 3],
    );
    let (st, fx) = feed(st, [Event::ShimGone]);
    assert_eq!(fx.first(), Some(&Effect::CleanUp));
    assert_eq!(st.stage, Stage::Done);
    let r = final_report(&fx);
    assert_eq!(
        r.stop_code.map(|v| v.as_str()),
        Some("EssentialContainerExited")
    );
    assert_eq!(r.stopped_reason.as_deref(), Some(ESSENTIAL_EXITED));
    assert_eq!(r.containers[0].exit_code, Some(4));
    assert_eq!(r.containers[0].reason, None);
    assert_eq!(r.containers[1].reason.as_deref(), Some(LOST_REASON));
    assert_eq!(r.containers[2].reason.as_deref(), Some(LOST_REASON));
    // Nothing essential exited: the task was lost.
    let phases = vec![Phase::Running, Phase::Exited(0), Phase::Pending];
    let st = TaskState::adopted(s, report, phases, vec![health::State::new(); 3]);
    let (_, fx) = feed(st, [Event::ShimGone]);
    assert_eq!(
        final_report(&fx).stopped_reason.as_deref(),
        Some(LOST_REASON)
    );
}
