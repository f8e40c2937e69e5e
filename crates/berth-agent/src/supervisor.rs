//! The decisions of one task's life on this node, as a pure state machine:
//! [`on`]`(state, event) -> (state, effects)`. It starts containers in `dependsOn` order,
//! notices when the task runs, stops it (SIGTERM, then SIGKILL after each container's stop
//! timeout) when an essential container exits or cannot start, when the control plane asks or
//! the sampler evicts it, and writes the final report once nothing runs. It performs nothing
//! itself: `task.rs` is the shell that performs the [`Effect`]s (talking to the shim, timers,
//! tailers, health checkers, reports) and feeds back what happened as [`Event`]s. Nothing here
//! needs root, a clock or a runtime, so the whole life cycle is unit-tested.
//!
//! Statuses follow ECS: a task goes PENDING -> RUNNING -> STOPPED (never backwards), a
//! container PENDING -> RUNNING -> STOPPED; the final report carries `stopCode`
//! `TaskFailedToStart` or `EssentialContainerExited`, or none for a stop the control plane asked
//! for (it records `UserInitiated` itself).

use std::sync::Arc;
use std::time::Duration;

use berth_api::agent::{ContainerStateReport, TaskSpec, TaskStateReport};
use berth_core::status::{ContainerStatus, HealthStatus, StopCode, TaskStatus};

use crate::deps::{decide, Decision, Phase};
use crate::health;

/// The reason of a task stopped because a container's shim went away while berth was down.
pub const LOST_REASON: &str =
    "Task stopped because its containers were lost while berth was down (their shim is gone)";
/// The reason of a task stopped because an essential container exited.
pub const ESSENTIAL_EXITED: &str = "Essential container in task exited";
/// The reason of a container the kernel killed for its memory use.
pub const OOM_REASON: &str = "OutOfMemoryError: Container killed due to memory usage";
/// Seconds between SIGTERM and SIGKILL when a container sets no `stopTimeout` (ECS default).
const DEFAULT_STOP_TIMEOUT: u32 = 30;

/// The `stopCode` the agent reports for `code`: none for [`StopCode::UserInitiated`] (the
/// control plane records its own code for the stops it asked for).
fn reported_code(code: StopCode) -> Option<StopCode> {
    (code != StopCode::UserInitiated).then_some(code)
}

/// Where the task is in its life on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Taken, nothing set up on the node yet.
    Received,
    /// Pulling images, setting up the network, the shim, the cgroup and the bundles.
    Preparing,
    /// Its containers are started, supervised and stopped.
    Supervising,
    /// The final report was handed out; no event does anything any more.
    Done,
}

/// A signal sent to a container's pid 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: asks the process to end.
    Term,
    /// SIGKILL: ends it.
    Kill,
}

/// The state of one task: the report as the control plane will see it, and what the
/// decisions need besides.
#[derive(Debug, Clone)]
pub struct TaskState {
    /// The task as the control plane assigned it.
    pub spec: Arc<TaskSpec>,
    /// Where the task is in its life on this node.
    pub stage: Stage,
    /// The last report: task and container statuses, exit codes, reasons, health. The shell
    /// fills in what it learns itself (timestamps, image digests, network, port bindings).
    pub report: TaskStateReport,
    /// Per container (spec order): how far it got.
    pub phases: Vec<Phase>,
    /// Per container: its health between probes.
    pub health: Vec<health::State>,
    /// Set once the task is being stopped (no container starts any more).
    pub stopping: bool,
    /// Why it stops, once known, with the `stoppedReason` (none for a user stop).
    pub stop: Option<(StopCode, Option<String>)>,
    /// The first container start that failed.
    pub start_error: Option<String>,
}

/// What happened, as the shell saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The control plane wants the task stopped (or gave up on it).
    StopRequested,
    /// The task cannot be taken at all (invalid, its state cannot be written); nothing was set
    /// up on the node.
    Rejected(String),
    /// Setting up began (images, network, shim, cgroup).
    Preparing,
    /// Setting up failed: the task's reason, and per container its own (spec order; may be
    /// shorter than the container list).
    PrepareFailed {
        reason: String,
        per_container: Vec<Option<String>>,
    },
    /// Everything is set up; containers may start.
    Prepared,
    /// A restarted agent re-adopted the task in the state it was built with
    /// ([`TaskState::adopted`]).
    Adopted,
    /// Container `idx` runs.
    Started(usize),
    /// The shim had taken this start before (a request of the previous agent): the disk tells
    /// whether it runs, ran or failed.
    StartTaken(usize),
    /// Container `idx` could not start.
    StartFailed(usize, String),
    /// Container `idx` ended with `code` (`oom`: the kernel killed it for its memory use).
    Exited { idx: usize, code: i32, oom: bool },
    /// The shim went away while the task was supervised: its containers are lost.
    ShimLost,
    /// A restarted agent found the task's shim gone (berth was down while it ended): the task
    /// ends, its containers that had not exited are lost.
    ShimGone,
    /// A health probe changed container `idx`'s status.
    Health(usize, HealthStatus),
    /// Container `idx`'s stop timeout passed.
    StopTimeout(usize),
    /// The sampler evicts the task (over its ephemeral storage); the reason says why.
    Evicted(String),
}

/// What the shell is to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Hand container `idx`'s start to the shim; answer with `Started`, `StartTaken` or
    /// `StartFailed` (or an `Exited` that overtakes the answer).
    Start(usize),
    /// Find out from the disk what became of a start the shim took before this agent listened.
    Resolve(usize),
    /// Send a signal to container `idx`.
    Signal(usize, Signal),
    /// Feed `StopTimeout(idx)` after this long.
    StopTimer(usize, Duration),
    /// Deliver container `idx`'s output to its log destination.
    Tail(usize),
    /// Run container `idx`'s health check.
    CheckHealth(usize),
    /// Persist container `idx`'s health status (`health` in its directory).
    WriteHealth(usize),
    /// Send this report (PENDING or RUNNING). The machine keeps no clock: the shell stamps
    /// `startedAt` on the first RUNNING one and carries it into every later report.
    Report(Box<TaskStateReport>),
    /// Undo what the task set up on the node (containers, mounts, cgroups, network, shim).
    CleanUp,
    /// Send this final report (STOPPED; `stoppedAt` is the shell's); exactly one per task.
    FinalReport(Box<TaskStateReport>),
    /// Remove the task's state directory.
    RemoveState,
}

/// The first report of a task: it and every container PENDING.
pub fn pending_report(spec: &TaskSpec) -> TaskStateReport {
    TaskStateReport {
        last_status: TaskStatus::Pending,
        containers: spec
            .containers
            .iter()
            .map(|c| ContainerStateReport {
                name: c.name.clone(),
                last_status: ContainerStatus::Pending,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// `base` turned final: the task and every container STOPPED (`stoppedAt` is the shell's).
fn stopped_report(spec: &TaskSpec, base: &TaskStateReport) -> TaskStateReport {
    let mut r = base.clone();
    r.last_status = TaskStatus::Stopped;
    if r.containers.len() != spec.containers.len() {
        r.containers = spec
            .containers
            .iter()
            .map(|c| ContainerStateReport {
                name: c.name.clone(),
                ..Default::default()
            })
            .collect();
    }
    for c in &mut r.containers {
        c.last_status = ContainerStatus::Stopped;
    }
    r
}

impl TaskState {
    /// A task just taken: nothing set up, everything PENDING.
    pub fn new(spec: Arc<TaskSpec>) -> TaskState {
        let n = spec.containers.len();
        TaskState {
            report: pending_report(&spec),
            spec,
            stage: Stage::Received,
            phases: vec![Phase::Pending; n],
            health: vec![health::State::new(); n],
            stopping: false,
            stop: None,
            start_error: None,
        }
    }

    /// A task a restarted agent found with its shim running: `report` as last sent (with what
    /// the disk says since), `phases` and `health` as the shim's files tell. Feed
    /// [`Event::Adopted`] next.
    pub fn adopted(
        spec: Arc<TaskSpec>,
        report: TaskStateReport,
        phases: Vec<Phase>,
        health: Vec<health::State>,
    ) -> TaskState {
        TaskState {
            spec,
            stage: Stage::Supervising,
            report,
            phases,
            health,
            stopping: false,
            stop: None,
            start_error: None,
        }
    }

    /// The task's `lastStatus` (PENDING for a value the report should never hold).
    pub fn status(&self) -> TaskStatus {
        self.report.last_status
    }

    fn snapshot(&self) -> Effect {
        Effect::Report(Box::new(self.report.clone()))
    }

    fn runtime_id(&self, idx: usize) -> String {
        crate::task::container_id(&self.spec.task_id, &self.spec.containers[idx].name)
    }

    fn essential(&self, idx: usize) -> bool {
        self.spec.containers[idx].essential
    }

    fn any_phase(&self, f: impl Fn(&Phase) -> bool) -> bool {
        self.phases.iter().any(f)
    }

    /// Ends the task before it was supervised: `report` final, what was set up undone.
    fn end_early(&mut self, report: TaskStateReport, cleanup: bool, fx: &mut Vec<Effect>) {
        if cleanup {
            fx.push(Effect::CleanUp);
        }
        self.report = report.clone();
        fx.push(Effect::FinalReport(Box::new(report)));
        if cleanup {
            fx.push(Effect::RemoveState);
        }
        self.stage = Stage::Done;
    }

    /// A failed start: STOPPED, `TaskFailedToStart`, with per-container reasons.
    fn failed(&self, reason: String, per_container: Vec<Option<String>>) -> TaskStateReport {
        let mut r = stopped_report(&self.spec, &self.report);
        r.stop_code = reported_code(StopCode::TaskFailedToStart);
        r.stopped_reason = Some(reason);
        for (c, why) in r.containers.iter_mut().zip(per_container) {
            if why.is_some() {
                c.reason = why;
            }
        }
        r
    }

    /// SIGTERM to every running container, SIGKILL after its stop timeout; pending containers
    /// will not start.
    fn begin_stop(&mut self, fx: &mut Vec<Effect>) {
        self.stopping = true;
        for p in self.phases.iter_mut() {
            if *p == Phase::Pending {
                *p = Phase::NotStarted;
            }
        }
        for (idx, c) in self.spec.containers.iter().enumerate() {
            if self.phases[idx] != Phase::Running {
                continue;
            }
            let timeout = if c.stop_timeout == 0 {
                DEFAULT_STOP_TIMEOUT
            } else {
                c.stop_timeout
            };
            fx.push(Effect::Signal(idx, Signal::Term));
            fx.push(Effect::StopTimer(
                idx,
                Duration::from_secs(u64::from(timeout)),
            ));
        }
    }

    /// Stops the task for `code` unless it already stops.
    fn stop_for(&mut self, code: StopCode, reason: Option<String>, fx: &mut Vec<Effect>) {
        if self.stopping {
            return;
        }
        self.stop = Some((code, reason));
        self.begin_stop(fx);
    }

    fn mark_running(&mut self) {
        self.report.last_status = TaskStatus::Running;
        tracing::info!(task = %self.spec.task_id, "running");
    }

    /// Records an exit; true when it was an essential container (the task stops).
    fn record_exit(&mut self, idx: usize, code: i32, oom: bool) -> bool {
        if idx >= self.phases.len() || matches!(self.phases[idx], Phase::Exited(_)) {
            return false;
        }
        self.phases[idx] = Phase::Exited(code);
        let cr = &mut self.report.containers[idx];
        cr.last_status = ContainerStatus::Stopped;
        cr.exit_code = Some(code);
        if oom {
            cr.reason = Some(OOM_REASON.into());
        }
        tracing::info!(task = %self.spec.task_id, container = %self.spec.containers[idx].name, "exited with {code} (oom: {oom})");
        self.essential(idx)
    }

    /// Starts what may start, gives up on what never can, notices the task runs, and ends it
    /// once nothing runs any more.
    fn settle(&mut self, fx: &mut Vec<Effect>) {
        while self.stage == Stage::Supervising {
            if !self.stopping {
                let hs: Vec<HealthStatus> = self.health.iter().map(|h| h.status).collect();
                for idx in 0..self.phases.len() {
                    if self.phases[idx] != Phase::Pending {
                        continue;
                    }
                    match decide(idx, &self.spec.containers, &self.phases, &hs) {
                        Decision::Wait => {}
                        Decision::Start => {
                            self.phases[idx] = Phase::Starting;
                            fx.push(Effect::Start(idx));
                        }
                        Decision::Never(why) => {
                            let name = &self.spec.containers[idx].name;
                            tracing::info!(task = %self.spec.task_id, container = %name, "not started: {why}");
                            self.phases[idx] = Phase::NotStarted;
                            self.report.containers[idx].reason =
                                Some(format!("DependencyError: {why}"));
                            if self.essential(idx) && !self.stopping {
                                let reason =
                                    format!("Essential container {name} could not start: {why}");
                                self.stop_for(StopCode::TaskFailedToStart, Some(reason), fx);
                            }
                        }
                    }
                }
            }
            // The task runs once nothing is being started and nothing startable waits.
            if self.status() == TaskStatus::Pending
                && !self.stopping
                && !self.phases.contains(&Phase::Starting)
                && self.any_phase(|p| matches!(p, Phase::Running | Phase::Exited(_)))
            {
                self.mark_running();
                fx.push(self.snapshot());
            }
            if self
                .phases
                .iter()
                .all(|p| matches!(p, Phase::Exited(_) | Phase::NotStarted))
            {
                self.finish(fx);
                return;
            }
            if self.stopping && !self.any_phase(|p| matches!(p, Phase::Running | Phase::Starting)) {
                // Nothing runs; pending containers never will.
                for p in self.phases.iter_mut() {
                    if *p == Phase::Pending {
                        *p = Phase::NotStarted;
                    }
                }
                continue;
            }
            return;
        }
    }

    /// The end: clean up, the final report, the state directory removed.
    fn finish(&mut self, fx: &mut Vec<Effect>) {
        let mut r = stopped_report(&self.spec, &self.report);
        let exited = self.any_phase(|p| matches!(p, Phase::Exited(_)));
        let mut stop = self.stop.clone();
        let coded = !matches!(stop, None | Some((StopCode::UserInitiated, _)));
        if !coded && !exited {
            if let Some(e) = &self.start_error {
                stop = Some((StopCode::TaskFailedToStart, Some(e.clone())));
            }
        }
        if stop.is_none() && exited {
            stop = Some((
                StopCode::EssentialContainerExited,
                Some(ESSENTIAL_EXITED.into()),
            ));
        }
        r.stop_code = stop.as_ref().and_then(|(c, _)| reported_code(*c));
        r.stopped_reason = stop.as_ref().and_then(|(_, why)| why.clone());
        self.stop = stop;
        self.report = r.clone();
        self.stage = Stage::Done;
        fx.push(Effect::CleanUp);
        fx.push(Effect::FinalReport(Box::new(r)));
        fx.push(Effect::RemoveState);
    }

    fn supervise(&mut self, ev: Event, fx: &mut Vec<Effect>) {
        let n = self.phases.len();
        let known = |idx: usize| idx < n;
        match ev {
            Event::Rejected(_) | Event::Preparing | Event::PrepareFailed { .. } => {}
            Event::Prepared | Event::Adopted => {
                // Adopted containers: tail, health-check; find out what became of starts that
                // were under way when the agent went away.
                for idx in 0..n {
                    if self.phases[idx] == Phase::Starting {
                        fx.push(Effect::Resolve(idx));
                    }
                    if matches!(self.phases[idx], Phase::Running | Phase::Exited(_)) {
                        fx.push(Effect::Tail(idx));
                    }
                    if self.phases[idx] == Phase::Running {
                        fx.push(Effect::CheckHealth(idx));
                    }
                }
            }
            Event::StopRequested => {
                if !self.stopping {
                    self.stop = Some((StopCode::UserInitiated, None));
                    self.begin_stop(fx);
                }
            }
            Event::Evicted(why) => {
                if !self.stopping {
                    self.stop_for(StopCode::EssentialContainerExited, Some(why), fx);
                    // Like a hard eviction: no grace period.
                    for idx in 0..n {
                        if self.phases[idx] == Phase::Running {
                            fx.push(Effect::Signal(idx, Signal::Kill));
                        }
                    }
                }
            }
            Event::Started(idx) => {
                if !known(idx) || self.phases[idx] != Phase::Starting {
                    return;
                }
                self.phases[idx] = Phase::Running;
                let id = self.runtime_id(idx);
                let has_check = self.spec.containers[idx].health_check.is_some();
                let cr = &mut self.report.containers[idx];
                cr.last_status = ContainerStatus::Running;
                cr.runtime_id = Some(id);
                if has_check {
                    cr.health_status = Some(HealthStatus::Unknown);
                }
                fx.push(Effect::Tail(idx));
                fx.push(Effect::CheckHealth(idx));
                if self.stopping {
                    fx.push(Effect::Signal(idx, Signal::Kill));
                } else if self.status() == TaskStatus::Running {
                    fx.push(self.snapshot());
                }
            }
            Event::StartTaken(idx) => {
                if known(idx) && self.phases[idx] == Phase::Starting {
                    fx.push(Effect::Resolve(idx));
                }
            }
            Event::StartFailed(idx, e) => {
                if !known(idx) || self.phases[idx] != Phase::Starting {
                    return;
                }
                let msg = format!("CannotStartContainerError: {e}");
                tracing::info!(task = %self.spec.task_id, "start failed: {msg}");
                self.phases[idx] = Phase::NotStarted;
                self.report.containers[idx].reason = Some(msg.clone());
                self.start_error.get_or_insert(msg.clone());
                if self.essential(idx) {
                    self.stop_for(StopCode::TaskFailedToStart, Some(msg), fx);
                }
            }
            Event::Exited { idx, code, oom } => {
                // The exit can overtake the start reply (a container that exits at once): it
                // ran, so the task ran.
                if self.phases.get(idx) == Some(&Phase::Starting) {
                    self.report.containers[idx].runtime_id = Some(self.runtime_id(idx));
                    fx.push(Effect::Tail(idx));
                }
                if self.status() == TaskStatus::Pending && !self.stopping {
                    self.mark_running();
                    for (i, p) in self.phases.iter().enumerate() {
                        if matches!(p, Phase::Running | Phase::Starting) {
                            self.report.containers[i].last_status = ContainerStatus::Running;
                        }
                    }
                    fx.push(self.snapshot());
                }
                if self.record_exit(idx, code, oom) && !self.stopping {
                    self.stop_for(
                        StopCode::EssentialContainerExited,
                        Some(ESSENTIAL_EXITED.into()),
                        fx,
                    );
                } else if !self.stopping {
                    fx.push(self.snapshot());
                }
            }
            Event::ShimLost => {
                tracing::warn!(task = %self.spec.task_id, "the shim went away; its containers are lost");
                for (idx, p) in self.phases.iter_mut().enumerate() {
                    match *p {
                        Phase::Running | Phase::Starting => {
                            *p = Phase::Exited(137);
                            let cr = &mut self.report.containers[idx];
                            cr.last_status = ContainerStatus::Stopped;
                            cr.reason = Some(LOST_REASON.into());
                        }
                        Phase::Pending => *p = Phase::NotStarted,
                        _ => {}
                    }
                }
                if !self.stopping {
                    self.stop =
                        Some((StopCode::EssentialContainerExited, Some(LOST_REASON.into())));
                }
                self.stopping = true;
            }
            Event::ShimGone => {
                let essential_exited = self
                    .spec
                    .containers
                    .iter()
                    .zip(&self.phases)
                    .any(|(c, p)| c.essential && matches!(p, Phase::Exited(_)));
                for (idx, p) in self.phases.iter_mut().enumerate() {
                    if !matches!(p, Phase::Exited(_)) {
                        *p = Phase::NotStarted;
                        self.report.containers[idx].reason = Some(LOST_REASON.into());
                    }
                }
                let reason = if essential_exited {
                    ESSENTIAL_EXITED
                } else {
                    LOST_REASON
                };
                if !self.stopping {
                    self.stop = Some((StopCode::EssentialContainerExited, Some(reason.into())));
                }
                self.stopping = true;
            }
            Event::Health(idx, status) => {
                if known(idx) && self.phases[idx] == Phase::Running {
                    self.health[idx].status = status;
                    self.report.containers[idx].health_status = Some(status);
                    tracing::info!(task = %self.spec.task_id, container = %self.spec.containers[idx].name, "health {status}");
                    fx.push(Effect::WriteHealth(idx));
                    if self.status() == TaskStatus::Running {
                        fx.push(self.snapshot());
                    }
                }
            }
            Event::StopTimeout(idx) => {
                if known(idx) && self.phases[idx] == Phase::Running {
                    fx.push(Effect::Signal(idx, Signal::Kill));
                }
            }
        }
        self.settle(fx);
    }
}

/// The state after `ev`, and what to do about it (in order).
pub fn on(mut st: TaskState, ev: Event) -> (TaskState, Vec<Effect>) {
    let mut fx = Vec::new();
    match st.stage {
        Stage::Done => {}
        Stage::Received | Stage::Preparing => {
            let set_up = st.stage == Stage::Preparing;
            match ev {
                Event::StopRequested => {
                    let r = stopped_report(&st.spec, &st.report);
                    st.stop = Some((StopCode::UserInitiated, None));
                    st.end_early(r, set_up, &mut fx);
                }
                Event::Rejected(reason) => {
                    let r = st.failed(reason.clone(), Vec::new());
                    st.stop = Some((StopCode::TaskFailedToStart, Some(reason)));
                    st.end_early(r, set_up, &mut fx);
                }
                Event::Preparing => st.stage = Stage::Preparing,
                Event::PrepareFailed {
                    reason,
                    per_container,
                } => {
                    tracing::info!(task = %st.spec.task_id, "start failed: {reason}");
                    let r = st.failed(reason.clone(), per_container);
                    st.stop = Some((StopCode::TaskFailedToStart, Some(reason)));
                    st.end_early(r, true, &mut fx);
                }
                Event::Prepared => {
                    st.stage = Stage::Supervising;
                    st.supervise(Event::Prepared, &mut fx);
                }
                // Nothing runs yet: container events cannot happen before `Prepared`.
                _ => {}
            }
        }
        Stage::Supervising => st.supervise(ev, &mut fx),
    }
    (st, fx)
}

#[cfg(test)]
mod tests;
