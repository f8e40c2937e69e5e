//! One task's life on this node: pull, network, bundles, start (in `dependsOn` order, through
//! the task's shim), supervise (exits, health, stop requests), stop, clean up, report.
//! Per-task state lives in `<data_dir>/tasks/<task-id>/`: `task.json` (the spec),
//! `report.json` (the last state report), `net.json` (the task's address), `shim.pid`, and per
//! container `c<idx>/` (bundle, `pid`, `exit`, `log`, `log.pos`, `health`), so a restarted
//! agent re-adopts a task whose shim still runs, or cleans up after one whose shim is gone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::agent::{TaskSpec, TaskStateReport};
use berth_core::epoch_now;
use berth_core::status::{ContainerStatus, HealthStatus, TaskStatus};
use tokio::sync::{mpsc, watch};

use crate::bundle::{self, remove_task_dir, unmount_all};
use crate::control::Reporter;
use crate::deps::Phase;
use crate::network::{self, TaskNet};
use crate::shim::{self, ExitRecord};
use crate::shim_client::{ShimConn, ShimEvent};
use crate::supervisor::{self, pending_report, Effect, Event, Signal, Stage, TaskState};
use crate::tailer::Tailer;
use crate::{cgroups, health, statefile, Agent, AgentError};

pub use crate::supervisor::{LOST_REASON, OOM_REASON};

pub fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn valid_task_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The OCI runtime's id for a container.
pub fn container_id(task_id: &str, name: &str) -> String {
    format!("berth-{task_id}-{}", safe_name(name))
}

pub fn cgroup_task_rel(task_id: &str) -> String {
    format!("berth/{task_id}")
}

fn region_of(spec: &TaskSpec) -> String {
    let az = spec
        .availability_zone
        .trim_end_matches(|c: char| c.is_ascii_lowercase());
    if az.is_empty() {
        spec.task_arn.split(':').nth(3).unwrap_or("").to_string()
    } else {
        az.to_string()
    }
}

/// Sends reports (each persisted to `report.json` by the [`Reporter`] as it is sent) and
/// keeps the last one in the metadata registry.
struct Reports {
    reporter: Reporter,
    agent: Arc<Agent>,
    task_id: String,
}

impl Reports {
    /// Reports of task `task_id`, persisted in its task directory when the id is valid.
    fn new(agent: &Arc<Agent>, task_id: &str) -> Reports {
        let file =
            valid_task_id(task_id).then(|| agent.tasks_dir.join(task_id).join("report.json"));
        Reports {
            reporter: Reporter::start(agent.control.clone(), task_id.to_string(), file),
            agent: agent.clone(),
            task_id: task_id.to_string(),
        }
    }

    fn send(&self, r: &TaskStateReport) {
        self.agent.metadata.update_report(&self.task_id, r);
        self.reporter.send(r.clone());
    }

    async fn finish(self, r: TaskStateReport) {
        self.agent.metadata.remove(&self.task_id);
        self.reporter.finish(r).await;
    }
}

/// Resolves once a stop is asked for (or the asking side is gone).
async fn stop_requested(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Runs a new task to its end. `stop` turns true when the control plane wants it stopped.
pub async fn run_task(agent: Arc<Agent>, spec: TaskSpec, mut stop: watch::Receiver<bool>) {
    let reports = Reports::new(&agent, &spec.task_id);
    let t0 = Instant::now();
    let spec = Arc::new(spec);
    let task_dir = agent.tasks_dir.join(&spec.task_id);
    let st = TaskState::new(spec.clone());
    if *stop.borrow() {
        let (_, fx) = supervisor::on(st, Event::StopRequested);
        end_unsupervised(&agent, &spec, &task_dir, None, reports, fx).await;
        return;
    }
    if !valid_task_id(&spec.task_id) || spec.containers.is_empty() {
        let why = format!("invalid task {:?}", spec.task_id);
        let (_, fx) = supervisor::on(st, Event::Rejected(why));
        end_unsupervised(&agent, &spec, &task_dir, None, reports, fx).await;
        return;
    }
    let prepared = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(&task_dir)?;
        statefile::write_json(&task_dir.join("task.json"), &*spec)
    })();
    if let Err(e) = prepared {
        let why = format!("cannot create task state: {e}");
        let (_, fx) = supervisor::on(st, Event::Rejected(why));
        end_unsupervised(&agent, &spec, &task_dir, None, reports, fx).await;
        return;
    }
    agent.metadata.insert(&spec, None);
    let (mut st, _) = supervisor::on(st, Event::Preparing);

    // The runtime's cgroup attach is a few ms away: have the kernel's attach path warm by then.
    agent.primer.touch();
    // Pull, the network, the shim and the task cgroup, all at once.
    st.report.pull_started_at = Some(epoch_now());
    reports.send(&st.report);
    let pulls = async {
        futures_util::future::join_all(spec.containers.iter().map(|c| {
            agent
                .puller
                .pull(&c.image, c.repository_credentials.as_deref())
        }))
        .await
    };
    // The network is set up in a task of its own: a stop request must not cancel a CNI ADD
    // half-way (its DEL could then run first and the address would stay reserved), so the
    // stop path waits for it before cleaning up.
    let net_setup: tokio::task::JoinHandle<Result<Option<TaskNet>, AgentError>> = {
        let (agent, task_dir, awsvpc, task_id) = (
            agent.clone(),
            task_dir.clone(),
            spec.awsvpc,
            spec.task_id.clone(),
        );
        tokio::spawn(async move {
            if awsvpc {
                if let Some(cfg) = &agent.net {
                    // A pre-attached namespace from the warm pool when there is one (recorded
                    // at once, so cleanup releases it whatever happens next).
                    if let Some(n) = agent.pool.as_ref().and_then(|p| p.take()) {
                        let _ = statefile::write_json(&task_dir.join("net.json"), &n);
                        return Ok(Some(n));
                    }
                    return network::setup(cfg, &task_id).await.map(Some);
                }
            }
            Ok(None)
        })
    };
    let net_setup = futures_util::FutureExt::shared(async move {
        match net_setup.await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("network setup: {e}")),
        }
    });
    let net = net_setup.clone();
    let shim = async { shim_start(&agent, &task_dir, &spec.task_id).await };
    let cg = {
        let (layout, rel, cpu, memory) = (
            agent.layout.clone(),
            cgroup_task_rel(&spec.task_id),
            spec.cpu,
            spec.memory,
        );
        async move {
            tokio::task::spawn_blocking(move || cgroups::setup_task(&layout, &rel, cpu, memory))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
        }
    };
    let all = async { tokio::join!(pulls, net, shim, cg) };
    let (pulled, net, shim, cg) = tokio::select! {
        r = all => r,
        _ = stop_requested(&mut stop) => {
            // Whatever got set up is undone by cleanup (network, cgroups, shim), once the
            // network setup has finished.
            let _ = net_setup.await;
            let (_, fx) = supervisor::on(st, Event::StopRequested);
            end_unsupervised(&agent, &spec, &task_dir, None, reports, fx).await;
            return;
        }
    };
    st.report.pull_stopped_at = Some(epoch_now());
    tracing::debug!(task = %spec.task_id, "pull, network, shim, cgroup ready after {:?}", t0.elapsed());
    let mut images = Vec::with_capacity(pulled.len());
    let mut errors: Vec<Option<String>> = Vec::new();
    let mut first_err = None;
    for p in pulled {
        match p {
            Ok(img) => {
                images.push(img);
                errors.push(None);
            }
            Err(e) => {
                first_err.get_or_insert(e.message.clone());
                errors.push(Some(e.message));
            }
        }
    }
    let setup_err = match (&net, &shim, &cg) {
        (Err(e), _, _) => Some(format!("ResourceInitializationError: {e}")),
        (_, Err(e), _) => Some(format!("ResourceInitializationError: {e}")),
        (_, _, Err(e)) => Some(format!("ResourceInitializationError: cgroup: {e}")),
        _ => None,
    };
    let shim = shim.ok();
    let net: Option<TaskNet> = net.ok().flatten();
    if let Some(reason) = first_err.or(setup_err) {
        let ev = Event::PrepareFailed {
            reason,
            per_container: errors,
        };
        let (_, fx) = supervisor::on(st, ev);
        let conn = shim.as_ref().map(|s| &s.0);
        end_unsupervised(&agent, &spec, &task_dir, conn, reports, fx).await;
        return;
    }
    let (conn, events) = shim.expect("checked");
    if let Some(n) = &net {
        let _ = statefile::write_json(&task_dir.join("net.json"), n);
        agent.metadata.set_net(&spec.task_id, n);
        st.report.network = Some(network_report(n, &region_of(&spec)));
        agent.ensure_metadata_server(n.gateway).await;
    }

    // Bundles for every container (dependents too), prepared now so starting is quick.
    let region = region_of(&spec);
    let host = bundle::hostname(&spec.task_id, net.as_ref());
    bundle::write_etc_files(&task_dir, &host, net.as_ref(), &region);
    let metadata_base = net
        .as_ref()
        .filter(|_| agent.metadata.serving())
        .map(|n| format!("http://{}:{}/v4", n.gateway, agent.metadata_port()));
    let env = bundle::TaskEnv {
        task_dir: &task_dir,
        hostname: &host,
        net: net.as_ref(),
        metadata_base,
        cgroup_ns: agent.layout.is_unified(),
        hard_limits: &crate::spec::own_hard_limit,
        region: &region,
        init: Some(&agent.shim_bin),
    };
    let mut bundle_errors = Vec::new();
    let mut bundles = Vec::new();
    for (idx, img) in images.iter().enumerate() {
        match bundle::prepare(&spec, idx, img, &env) {
            Ok(b) => {
                bundles.push(b);
                bundle_errors.push(None);
            }
            Err(e) => {
                bundles.push(PathBuf::new());
                bundle_errors.push(Some(format!("CannotStartContainerError: {e}")));
            }
        }
    }
    if let Some(reason) = bundle_errors.iter().flatten().next().cloned() {
        let ev = Event::PrepareFailed {
            reason,
            per_container: bundle_errors,
        };
        let (_, fx) = supervisor::on(st, ev);
        end_unsupervised(&agent, &spec, &task_dir, Some(&conn), reports, fx).await;
        return;
    }
    for (cr, img) in st.report.containers.iter_mut().zip(images.iter()) {
        cr.image_digest = Some(img.digest.clone());
    }
    tracing::debug!(task = %spec.task_id, "bundles ready after {:?}", t0.elapsed());
    let sup = Supervisor::new(agent, spec, task_dir, conn, net, reports, t0);
    sup.run(st, Event::Prepared, events, stop).await;
}

/// Performs the effects of a task that ends before it is supervised (stopped or failed while
/// it was taken or set up): clean up, the final report, the state directory removed.
async fn end_unsupervised(
    agent: &Arc<Agent>,
    spec: &TaskSpec,
    task_dir: &Path,
    conn: Option<&Arc<ShimConn>>,
    reports: Reports,
    effects: Vec<Effect>,
) {
    let mut reports = Some(reports);
    for e in effects {
        match e {
            Effect::CleanUp => cleanup(agent, spec, task_dir, conn).await,
            Effect::FinalReport(mut r) => {
                r.stopped_at = Some(epoch_now());
                if let Some(reports) = reports.take() {
                    reports.finish(*r).await;
                }
            }
            Effect::RemoveState => remove_task_dir(task_dir),
            other => tracing::warn!(task = %spec.task_id, "{other:?} before supervision"),
        }
    }
}

async fn shim_start(
    agent: &Arc<Agent>,
    task_dir: &Path,
    task_id: &str,
) -> Result<(Arc<ShimConn>, mpsc::UnboundedReceiver<ShimEvent>), AgentError> {
    let (bin, dir, runtime) = (
        agent.shim_bin.clone(),
        task_dir.to_path_buf(),
        agent.runtime.clone(),
    );
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        crate::shim_client::spawn(&bin, &dir, &runtime)
    })
    .await
    .map_err(|e| AgentError::Runtime(format!("starting the shim: {e}")))??;
    ShimConn::connect(task_dir, task_id).await
}

fn network_report(n: &TaskNet, region: &str) -> berth_api::agent::NetworkReport {
    berth_api::agent::NetworkReport {
        private_ipv4_address: n.ip.to_string(),
        subnet_cidr: n.subnet_cidr(),
        gateway: n.gateway.to_string(),
        mac_address: n.mac.clone(),
        private_dns_name: n.dns_name(region),
    }
}

/// The id of a warm-pool network recorded in `<task_dir>/net.json`, if any.
fn pooled_net_id(task_dir: &Path) -> Option<String> {
    let n: TaskNet =
        serde_json::from_slice(&std::fs::read(task_dir.join("net.json")).ok()?).ok()?;
    network::net_id(&n).filter(|id| id.starts_with(network::POOL_PREFIX))
}

/// Undoes what a task set up on this node: containers, rootfs mounts, cgroups, network, shim.
async fn cleanup(
    agent: &Arc<Agent>,
    spec: &TaskSpec,
    task_dir: &Path,
    conn: Option<&Arc<ShimConn>>,
) {
    let deletes = spec.containers.iter().map(|c| {
        let id = container_id(&spec.task_id, &c.name);
        async move {
            if let Err(e) = agent.runtime.delete_force(&id).await {
                tracing::warn!("{e}");
            }
        }
    });
    futures_util::future::join_all(deletes).await;
    unmount_all(task_dir);
    let failed = cgroups::remove_tree(&agent.layout, &cgroup_task_rel(&spec.task_id));
    for f in failed {
        tracing::warn!("cannot remove cgroup {f}");
    }
    if let Some(cfg) = &agent.net {
        let pooled = pooled_net_id(task_dir).filter(|id| id != &spec.task_id);
        if let Some(id) = &pooled {
            network::teardown(cfg, id).await;
        }
        if (spec.awsvpc && pooled.is_none()) || cfg.netns_dir.join(&spec.task_id).exists() {
            network::teardown(cfg, &spec.task_id).await;
        }
    }
    match conn {
        Some(c) => c.bye().await,
        None => {
            // A shim we cannot talk to (e.g. set up, then the task was stopped): end it.
            if let Some(pid) = std::fs::read_to_string(task_dir.join("shim.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                if crate::shim_client::shim_alive(task_dir) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// The shim's answer to a second `start` of a container (see `shim/main.rs`).
const ALREADY_STARTED: &str = "container already started";
/// How long a restarted agent waits to learn what became of a start that was under way.
const RESOLVE_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Finds out what became of a container start the shim took while this agent was not
/// listening (an agent restart): the runtime's pid file naming a live process means it runs
/// (`Sup::Started`), an exit record that it ran and ended (`ShimEvent::Exit`); neither within
/// [`RESOLVE_START_TIMEOUT`] means the runtime failed (`Sup::Started` with its error).
fn spawn_resolver(
    task_dir: &Path,
    idx: usize,
    tx: &mpsc::UnboundedSender<Sup>,
    etx: &mpsc::UnboundedSender<ShimEvent>,
) {
    tracing::info!(task_dir = %task_dir.display(), container = idx, "resolving a start the shim took before this agent was listening");
    let (task_dir, tx, etx) = (task_dir.to_path_buf(), tx.clone(), etx.clone());
    tokio::spawn(async move {
        let deadline = Instant::now() + RESOLVE_START_TIMEOUT;
        loop {
            if let Some(rec) = shim::read_exit(&task_dir, idx) {
                let _ = etx.send(ShimEvent::Exit(rec));
                return;
            }
            if let Some(pid) = shim::read_pid(&task_dir, idx).filter(|p| pid_alive(*p)) {
                let _ = tx.send(Sup::Started(idx, Ok(pid)));
                return;
            }
            if Instant::now() >= deadline {
                let log = std::fs::read_to_string(
                    shim::container_dir(&task_dir, idx).join("runtime.log"),
                )
                .unwrap_or_default();
                let msg = match shim::runtime_error(&log) {
                    e if e.is_empty() => "the container did not start".to_string(),
                    e => format!("the container did not start: {e}"),
                };
                let _ = tx.send(Sup::Started(idx, Err(msg)));
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// True when process `pid` exists.
fn pid_alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Events the supervisor reacts to besides the shim's.
enum Sup {
    Started(usize, Result<i32, String>),
    Kill(usize),
}

/// The shell around the supervisor state machine ([`supervisor::on`]) for one task: it
/// performs the machine's effects (the shim, timers, tailers, health checkers, reports) and
/// feeds it what happens.
struct Supervisor {
    agent: Arc<Agent>,
    spec: Arc<TaskSpec>,
    task_dir: PathBuf,
    conn: Arc<ShimConn>,
    net: Option<TaskNet>,
    /// Taken by the final report.
    reports: Option<Reports>,
    /// When the agent took the task (for the start-phase timings logged at debug level).
    t0: Instant,
    /// Start answers and stop timeouts.
    tx: mpsc::UnboundedSender<Sup>,
    rx: mpsc::UnboundedReceiver<Sup>,
    /// The shim's events, and exits found on disk by start resolvers (`spawn_resolver`).
    etx: mpsc::UnboundedSender<ShimEvent>,
    /// Health checkers' status changes.
    htx: mpsc::UnboundedSender<(usize, HealthStatus)>,
    hrx: mpsc::UnboundedReceiver<(usize, HealthStatus)>,
    tailers: HashMap<usize, Tailer>,
    /// When the task began to run (the machine keeps no clock).
    started_at: Option<f64>,
    /// Health checkers, stop timers and port relays: aborted at the end.
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Supervisor {
    fn new(
        agent: Arc<Agent>,
        spec: Arc<TaskSpec>,
        task_dir: PathBuf,
        conn: Arc<ShimConn>,
        net: Option<TaskNet>,
        reports: Reports,
        t0: Instant,
    ) -> Supervisor {
        let (tx, rx) = mpsc::unbounded_channel();
        let (htx, hrx) = mpsc::unbounded_channel();
        Supervisor {
            agent,
            spec,
            task_dir,
            conn,
            net,
            reports: Some(reports),
            t0,
            tx,
            rx,
            etx: mpsc::unbounded_channel().0,
            htx,
            hrx,
            tailers: HashMap::new(),
            started_at: None,
            background: Vec::new(),
        }
    }

    /// Supervises the task from `st` (fed `first`: `Prepared` or `Adopted`) to its end.
    async fn run(
        mut self,
        mut st: TaskState,
        first: Event,
        mut shim_events: mpsc::UnboundedReceiver<ShimEvent>,
        mut stop: watch::Receiver<bool>,
    ) {
        let (etx, mut events) = mpsc::unbounded_channel::<ShimEvent>();
        self.etx = etx.clone();
        tokio::spawn(async move {
            while let Some(ev) = shim_events.recv().await {
                if etx.send(ev).is_err() {
                    return;
                }
            }
            let _ = etx.send(ShimEvent::Closed);
        });
        // The sampler's stop request for a task over its ephemeral storage.
        let mut evicted = self.agent.evictions.subscribe(&self.spec.task_id);
        self.started_at = st.report.started_at;
        self.publish_ports(&mut st).await;

        let mut fx;
        (st, fx) = supervisor::on(st, first);
        self.perform(&mut st, fx).await;
        while st.stage != Stage::Done {
            let mut poke = None;
            let ev = tokio::select! {
                ev = events.recv() => match ev {
                    Some(ShimEvent::Log(idx)) => {
                        if let Some(t) = self.tailers.get(&idx) {
                            t.poke();
                        }
                        continue;
                    }
                    Some(ShimEvent::Exit(rec)) => {
                        poke = Some(rec.idx);
                        Event::Exited { idx: rec.idx, code: rec.code, oom: rec.oom }
                    }
                    Some(ShimEvent::Closed) | None => {
                        // Keep the loop from waiting on a closed channel.
                        events = mpsc::unbounded_channel().1;
                        Event::ShimLost
                    }
                },
                Some(s) = self.rx.recv() => match s {
                    Sup::Started(idx, Ok(_pid)) => Event::Started(idx),
                    Sup::Started(idx, Err(e)) if e.starts_with(ALREADY_STARTED) => {
                        Event::StartTaken(idx)
                    }
                    Sup::Started(idx, Err(e)) => Event::StartFailed(idx, e),
                    Sup::Kill(idx) => Event::StopTimeout(idx),
                },
                Some((idx, status)) = self.hrx.recv() => {
                    Event::Health(idx, status)
                }
                Ok(()) = evicted.changed(), if !st.stopping => {
                    match evicted.borrow_and_update().clone() {
                        Some(why) => Event::Evicted(why),
                        None => continue,
                    }
                }
                _ = stop_requested(&mut stop), if !st.stopping => Event::StopRequested,
            };
            if let Event::Started(idx) = ev {
                tracing::debug!(task = %self.spec.task_id, "container {idx} started after {:?}", self.t0.elapsed());
            }
            (st, fx) = supervisor::on(st, ev);
            self.perform(&mut st, fx).await;
            if let Some(t) = poke.and_then(|idx| self.tailers.get(&idx)) {
                t.poke();
            }
        }
        tracing::info!(task = %self.spec.task_id, "stopped");
    }

    /// Ports are published before anything starts (connections wait for the app);
    /// `networkBindings` lists only what was bound.
    async fn publish_ports(&mut self, st: &mut TaskState) {
        let Some(net) = &self.net else {
            return;
        };
        for (idx, c) in self.spec.containers.iter().enumerate() {
            let mut bound = Vec::new();
            for p in &c.port_mappings {
                let published = if p.protocol == "udp" {
                    network::publish_udp(p.host_port, net.ip, p.container_port).await
                } else {
                    network::publish(p.host_port, net.ip, p.container_port).await
                };
                match published {
                    Ok(h) => {
                        self.background.push(h);
                        bound.push(p.clone());
                    }
                    // Best effort: the task keeps its own address, where the port is
                    // reachable from the host whatever else holds the host port.
                    Err(e) => tracing::warn!(
                        task = %self.spec.task_id,
                        "port {}/{} not published on the host ({e}); the task answers on {}:{}",
                        p.host_port, p.protocol, net.ip, p.container_port
                    ),
                }
            }
            st.report.containers[idx].network_bindings = bound;
        }
    }

    /// Performs the machine's effects, in order.
    async fn perform(&mut self, st: &mut TaskState, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Start(idx) => {
                    tracing::debug!(task = %self.spec.task_id, "starting container {idx} after {:?}", self.t0.elapsed());
                    let c = &self.spec.containers[idx];
                    let id = container_id(&self.spec.task_id, &c.name);
                    let bundle = shim::container_dir(&self.task_dir, idx);
                    let oom = cgroups::oom_files(
                        &self.agent.layout,
                        &format!(
                            "{}/{}",
                            cgroup_task_rel(&self.spec.task_id),
                            safe_name(&c.name)
                        ),
                    );
                    let (conn, tx) = (self.conn.clone(), self.tx.clone());
                    tokio::spawn(async move {
                        let r = conn.start(idx, &id, bundle, oom).await;
                        let _ = tx.send(Sup::Started(idx, r));
                    });
                }
                Effect::Resolve(idx) => spawn_resolver(&self.task_dir, idx, &self.tx, &self.etx),
                Effect::Signal(idx, sig) => {
                    let sig = match sig {
                        Signal::Term => nix::libc::SIGTERM,
                        Signal::Kill => nix::libc::SIGKILL,
                    };
                    let _ = self.conn.kill(idx, sig).await;
                }
                Effect::StopTimer(idx, after) => {
                    let tx = self.tx.clone();
                    self.background.push(tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = tx.send(Sup::Kill(idx));
                    }));
                }
                Effect::Tail(idx) => {
                    if let Some(t) = self.tailer(idx) {
                        self.tailers.insert(idx, t);
                    }
                }
                Effect::CheckHealth(idx) => {
                    if let Some(h) = self.checker(idx, st.health[idx]) {
                        self.background.push(h);
                    }
                }
                Effect::WriteHealth(idx) => {
                    let path = shim::container_dir(&self.task_dir, idx).join("health");
                    let _ = statefile::write(&path, st.health[idx].status.as_str().as_bytes());
                }
                Effect::Report(mut r) => {
                    if r.last_status == TaskStatus::Running && self.started_at.is_none() {
                        self.started_at = Some(epoch_now());
                        tracing::debug!(task = %self.spec.task_id, "running after {:?}", self.t0.elapsed());
                    }
                    r.started_at = r.started_at.or(self.started_at);
                    if let Some(reports) = &self.reports {
                        reports.send(&r);
                    }
                }
                Effect::CleanUp => {
                    for h in self.background.drain(..) {
                        h.abort();
                    }
                    for (_, t) in self.tailers.drain() {
                        t.finish().await;
                    }
                    self.agent.logs.flush().await;
                    self.agent.evictions.forget(&self.spec.task_id);
                    cleanup(&self.agent, &self.spec, &self.task_dir, Some(&self.conn)).await;
                }
                Effect::FinalReport(mut r) => {
                    r.started_at = r.started_at.or(self.started_at);
                    r.stopped_at = Some(epoch_now());
                    if let Some(reports) = self.reports.take() {
                        reports.finish(*r).await;
                    }
                }
                Effect::RemoveState => remove_task_dir(&self.task_dir),
            }
        }
    }

    fn tailer(&self, idx: usize) -> Option<Tailer> {
        let dest = self.spec.containers[idx].log.clone()?;
        Some(Tailer::start(
            shim::container_dir(&self.task_dir, idx),
            dest,
            self.agent.logs.clone(),
        ))
    }

    fn checker(&self, idx: usize, state: health::State) -> Option<tokio::task::JoinHandle<()>> {
        let c = &self.spec.containers[idx];
        let hc = c.health_check.clone()?;
        health::spawn(
            self.agent.runtime.exe.clone(),
            container_id(&self.spec.task_id, &c.name),
            idx,
            hc,
            Instant::now(),
            state,
            self.htx.clone(),
        )
    }
}

/// What a restarted agent found in the task directories.
pub struct Recovered {
    /// Tasks whose shims still run: supervised again.
    pub adopted: Vec<String>,
    /// Tasks that ended (their shim is gone, or their final report awaited delivery): cleaned
    /// up and reported STOPPED.
    pub finished: Vec<String>,
}

/// How far a container got, as its shim left it on disk.
fn container_phase(task_dir: &Path, idx: usize) -> (Phase, Option<ExitRecord>) {
    if let Some(rec) = shim::read_exit(task_dir, idx) {
        return (Phase::Exited(rec.code), Some(rec));
    }
    match shim::read_pid(task_dir, idx) {
        Some(pid) if pid_alive(pid) => (Phase::Running, None),
        // A start the shim took: the pid file or the log it opens exists.
        Some(_) => (Phase::Starting, None),
        None if shim::container_dir(task_dir, idx).join("log").exists() => (Phase::Starting, None),
        None => (Phase::Pending, None),
    }
}

/// Re-adopts every task whose shim still runs (spawning its supervisor), and cleans up and
/// reports the others (with the exit codes their shims recorded, if any). The disk is the
/// truth, not the last report: a container whose start the shim took is adopted as running
/// (or resolved, see `spawn_resolver`), one that exited meanwhile reports its exit code. The
/// last report is sent again, as it may not have arrived. A task none of whose containers
/// was handed to its shim yet is undone, and the control plane's assignment starts it anew.
pub async fn recover(
    agent: &Arc<Agent>,
    mut stops: impl FnMut(&str) -> watch::Receiver<bool>,
) -> Recovered {
    let mut out = Recovered {
        adopted: Vec::new(),
        finished: Vec::new(),
    };
    let Ok(rd) = std::fs::read_dir(&agent.tasks_dir) else {
        return out;
    };
    for e in rd.flatten() {
        let dir = e.path();
        let dir_name = e.file_name().to_string_lossy().to_string();
        let spec: Option<TaskSpec> = std::fs::read(dir.join("task.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|s: &TaskSpec| s.task_id == dir_name && valid_task_id(&s.task_id));
        let Some(spec) = spec else {
            unmount_all(&dir);
            if valid_task_id(&dir_name) {
                let _ = cgroups::remove_tree(&agent.layout, &cgroup_task_rel(&dir_name));
                if let Some(cfg) = &agent.net {
                    if let Some(id) = pooled_net_id(&dir) {
                        network::teardown(cfg, &id).await;
                    }
                    if cfg.netns_dir.join(&dir_name).exists() {
                        network::teardown(cfg, &dir_name).await;
                    }
                }
            }
            remove_task_dir(&dir);
            continue;
        };
        let mut report: TaskStateReport = std::fs::read(dir.join("report.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| pending_report(&spec));
        let n = spec.containers.len();
        if report.containers.len() != n {
            report = pending_report(&spec);
        }
        let conn = if crate::shim_client::shim_alive(&dir) {
            ShimConn::connect(&dir, &spec.task_id).await.ok()
        } else {
            None
        };
        if report.last_status == TaskStatus::Stopped {
            // The final report was written, maybe not delivered: undo what is left, send it.
            tracing::info!(task = %spec.task_id, "sending the final report of a stopped task again");
            cleanup(agent, &spec, &dir, conn.as_ref().map(|c| &c.0)).await;
            out.finished.push(spec.task_id.clone());
            let reports = Reports::new(agent, &spec.task_id);
            tokio::spawn(async move {
                reports.finish(report).await;
                remove_task_dir(&dir);
            });
            continue;
        }
        // Connected first, then read the disk: an exit after this point arrives as an event.
        let mut phases = Vec::with_capacity(n);
        let mut health = vec![health::State::new(); n];
        #[allow(clippy::needless_range_loop)]
        for idx in 0..n {
            let (phase, exit) = container_phase(&dir, idx);
            let cr = &mut report.containers[idx];
            match phase {
                Phase::Exited(_) => {
                    let rec = exit.expect("an exit record");
                    cr.last_status = ContainerStatus::Stopped;
                    cr.exit_code = Some(rec.code);
                    if rec.oom {
                        cr.reason = Some(OOM_REASON.into());
                    }
                    cr.runtime_id = Some(container_id(&spec.task_id, &spec.containers[idx].name));
                }
                Phase::Running => {
                    cr.last_status = ContainerStatus::Running;
                    cr.runtime_id = Some(container_id(&spec.task_id, &spec.containers[idx].name));
                    let cdir = shim::container_dir(&dir, idx);
                    if let Ok(h) = std::fs::read_to_string(cdir.join("health")) {
                        health[idx].status = h.trim().parse().unwrap_or(HealthStatus::Unknown);
                    }
                }
                _ => {}
            }
            phases.push(phase);
        }
        let handed = report.last_status == TaskStatus::Running
            || phases.iter().any(|p| *p != Phase::Pending);
        if !handed {
            // Nothing ran yet (the agent went away while pulling or preparing): undo it all;
            // the task is still assigned, so it is started again from the beginning.
            tracing::info!(task = %spec.task_id, "restarting a task that had not started a container yet");
            match conn {
                Some((conn, mut events)) => {
                    cleanup(agent, &spec, &dir, Some(&conn)).await;
                    // The shim must be gone before a new one binds the task's socket.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while let Some(ev) = events.recv().await {
                            if matches!(ev, ShimEvent::Closed) {
                                break;
                            }
                        }
                    })
                    .await;
                }
                None => cleanup(agent, &spec, &dir, None).await,
            }
            remove_task_dir(&dir);
            continue;
        }
        let reports = Reports::new(agent, &spec.task_id);
        let Some((conn, events)) = conn else {
            tracing::info!(task = %spec.task_id, "cleaning up a task whose shim is gone");
            let spec = Arc::new(spec);
            let st = TaskState::adopted(spec.clone(), report, phases, health);
            let (_, fx) = supervisor::on(st, Event::ShimGone);
            // Cleaned up now; the final report may take its time.
            let (now, later): (Vec<_>, Vec<_>) =
                fx.into_iter().partition(|e| *e == Effect::CleanUp);
            if !now.is_empty() {
                cleanup(agent, &spec, &dir, None).await;
            }
            out.finished.push(spec.task_id.clone());
            let agent = agent.clone();
            tokio::spawn(async move {
                end_unsupervised(&agent, &spec, &dir, None, reports, later).await;
            });
            continue;
        };
        tracing::info!(task = %spec.task_id, "re-adopting a task whose shim still runs");
        agent.metadata.insert(&spec, Some(&report));
        let net: Option<TaskNet> = std::fs::read(dir.join("net.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(n) = &net {
            agent.metadata.set_net(&spec.task_id, n);
            agent.ensure_metadata_server(n.gateway).await;
        }
        // What the control plane last heard may be older than this (a report lost in the
        // crash): say it again.
        reports.send(&report);
        out.adopted.push(spec.task_id.clone());
        let stop = stops(&spec.task_id);
        let spec = Arc::new(spec);
        let st = TaskState::adopted(spec.clone(), report, phases, health);
        let sup = Supervisor::new(agent.clone(), spec, dir, conn, net, reports, Instant::now());
        tokio::spawn(sup.run(st, Event::Adopted, events, stop));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(container_id("abc", "web/app x"), "berth-abc-web-app-x");
        assert!(valid_task_id("0123abcd"));
        assert!(!valid_task_id("../x"));
        let spec = TaskSpec {
            availability_zone: "eu-west-1a".into(),
            ..Default::default()
        };
        assert_eq!(region_of(&spec), "eu-west-1");
        let spec = TaskSpec {
            task_arn: "arn:aws:ecs:us-east-2:0:task/c/x".into(),
            ..Default::default()
        };
        assert_eq!(region_of(&spec), "us-east-2");
    }

    #[test]
    fn container_phase_from_the_shim_files() {
        let d = std::env::temp_dir().join(format!("berth-phase-{}", std::process::id()));
        let c = |i: usize| shim::container_dir(&d, i);
        for i in 0..5 {
            std::fs::create_dir_all(c(i)).unwrap();
        }
        // 0: never handed to the shim (a bundle only).
        std::fs::write(c(0).join("config.json"), "{}").unwrap();
        // 1: the shim took the start (its log exists), the runtime has not written a pid yet.
        std::fs::write(c(1).join("log"), "").unwrap();
        // 2: runs (a live pid).
        std::fs::write(c(2).join("pid"), std::process::id().to_string()).unwrap();
        // 3: a pid that is gone and no exit record yet: still to be resolved.
        std::fs::write(c(3).join("pid"), "2147483646").unwrap();
        // 4: ended.
        std::fs::write(c(4).join("pid"), "1").unwrap();
        std::fs::write(c(4).join("exit"), r#"{"idx":4,"code":7,"oom":false}"#).unwrap();
        assert_eq!(container_phase(&d, 0).0, Phase::Pending);
        assert_eq!(container_phase(&d, 1).0, Phase::Starting);
        assert_eq!(container_phase(&d, 2).0, Phase::Running);
        assert_eq!(container_phase(&d, 3).0, Phase::Starting);
        let (p, rec) = container_phase(&d, 4);
        assert_eq!(p, Phase::Exited(7));
        assert_eq!(rec.map(|r| r.code), Some(7));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn a_start_under_way_is_resolved_from_the_shim_files() {
        let d = std::env::temp_dir().join(format!("berth-resolve-{}", std::process::id()));
        for i in 0..2 {
            std::fs::create_dir_all(shim::container_dir(&d, i)).unwrap();
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (etx, mut erx) = mpsc::unbounded_channel();
        spawn_resolver(&d, 0, &tx, &etx);
        spawn_resolver(&d, 1, &tx, &etx);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(rx.try_recv().is_err() && erx.try_recv().is_err());
        // The runtime writes its pid file: container 0 runs.
        let me = std::process::id() as i32;
        std::fs::write(shim::container_dir(&d, 0).join("pid"), me.to_string()).unwrap();
        // Container 1 ran and ended meanwhile.
        std::fs::write(
            shim::container_dir(&d, 1).join("exit"),
            r#"{"idx":1,"code":7,"oom":false}"#,
        )
        .unwrap();
        let started = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert!(matches!(started, Some(Sup::Started(0, Ok(p))) if p == me));
        let exited = tokio::time::timeout(Duration::from_secs(5), erx.recv())
            .await
            .unwrap();
        assert!(matches!(exited, Some(ShimEvent::Exit(r)) if r.idx == 1 && r.code == 7));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
