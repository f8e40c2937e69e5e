//! berth-agent: the node agent (DESIGN §5). It long-polls the control plane for the tasks
//! placed on this instance, pulls their images, unpacks layers into shared snapshots, mounts an
//! overlayfs rootfs per container, writes an OCI bundle and runs it with crun (or runc),
//! reports task state and ships container output as log events. Linux only, runs as root.
//!
//! It talks to the control plane only over HTTP (`berth_api::agent`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_core::status::{DesiredStatus, StopCode, TaskStatus};

mod bundle;
mod cgroups;
mod control;
mod deps;
mod ephemeral;
mod health;
mod metadata;
mod network;
mod registry;
mod resolve;
mod runtime;
mod sampler;
mod seccomp;
pub mod shim;
mod shim_client;
mod snapshot;
mod spec;
mod statefile;
mod supervisor;
mod tailer;
mod task;
mod transport;
pub mod unpack;
#[cfg(test)]
mod unpack_attacks;

pub use cgroups::Layout as CgroupLayout;
pub use transport::PullConfig;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The control plane, e.g. `http://127.0.0.1:5150`.
    pub server_url: String,
    /// Where blobs, snapshots and per-task state live.
    pub data_dir: PathBuf,
    /// OCI runtime: `crun` (default) or `runc`, a binary name or path.
    pub runtime: String,
    /// This container instance's id (as the control plane knows it).
    pub instance_id: String,
    /// awsvpc networking: the task subnet (CIDR) and bridge name; `None` gives awsvpc tasks a
    /// loopback-only namespace.
    pub network: Option<NetworkConfig>,
    /// How often running tasks' CPU and memory are sampled for CloudWatch metrics.
    pub metrics_interval: Duration,
    /// A credential issued for `instance_id` (the server's embedded agent gets one in-process);
    /// `None`: the one saved in `<data_dir>/credential`, or a registration with `join_token`.
    pub credential: Option<String>,
    /// The server's join token, to register with (and to register again when the server no
    /// longer knows the saved credential).
    pub join_token: Option<String>,
    /// The access key the agent signs ECR `GetAuthorizationToken` with (SigV4) to get a
    /// password for the server's own registry; `None` asks unsigned (servers started with
    /// `--insecure-any-credentials` or `--no-registry-auth`).
    pub credentials: Option<berth_iam::AccessKey>,
    /// How registries other than berth's own are reached (extra CAs, plain-HTTP ones).
    pub pull: PullConfig,
}

/// Task network settings of an agent.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// e.g. `10.213.0.0/16`; the bridge takes the first address.
    pub subnet: String,
    /// Bridge interface name, at most 15 bytes.
    pub bridge: String,
    /// Directory of the CNI plugins (`/usr/lib/cni` on Debian).
    pub cni_path: PathBuf,
    /// Port of the task metadata endpoint on the bridge address.
    pub metadata_port: u16,
}

impl NetworkConfig {
    /// Checks the subnet and bridge name; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if network::gateway_of(&self.subnet).is_none() {
            return Err(format!(
                "task subnet {:?} is not an IPv4 CIDR with a prefix between /8 and /30",
                self.subnet
            ));
        }
        if self.bridge.is_empty()
            || self.bridge.len() > 15
            || !self
                .bridge
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "bridge name {:?} must be 1-15 characters of letters, digits, - and _",
                self.bridge
            ));
        }
        Ok(())
    }
}

/// Agent failures.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The host cannot run containers as configured; the message says what to do.
    #[error("{0}")]
    Preflight(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("control plane: {0}")]
    Control(String),
    /// The control plane refused the agent's credential or join token.
    #[error("not authorized: {0}")]
    Unauthorized(String),
    #[error("image: {0}")]
    Image(String),
    /// A layer could not be unpacked safely (the message names no host path).
    #[error(transparent)]
    Layer(#[from] unpack::LayerError),
    #[error("runtime: {0}")]
    Runtime(String),
    #[error("bundle: {0}")]
    Spec(String),
}

impl From<oci_spec::OciSpecError> for AgentError {
    fn from(e: oci_spec::OciSpecError) -> Self {
        AgentError::Spec(e.to_string())
    }
}

pub(crate) fn find_in_path(bin: &str) -> Option<PathBuf> {
    if bin.contains('/') {
        let p = PathBuf::from(bin);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// Checks the runtime binary exists and can work with this host's cgroup layout; the error
/// text says plainly what to do.
pub fn preflight(config: &AgentConfig) -> Result<(), AgentError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(AgentError::Preflight(
            "the berth agent must run as root (it mounts overlay filesystems and creates cgroups); run it with sudo or as root".into(),
        ));
    }
    let Some(bin) = find_in_path(&config.runtime) else {
        return Err(AgentError::Preflight(format!(
            "OCI runtime {:?} not found{}; install it (Debian/Ubuntu: `apt-get install crun`, or `apt-get install runc` and start berth with `--runtime runc`)",
            config.runtime,
            if config.runtime.contains('/') { String::new() } else { " in PATH".to_string() }
        )));
    };
    match std::process::Command::new(&bin)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => {
            return Err(AgentError::Preflight(format!(
                "OCI runtime {} does not work: `{} --version` exited with {s}",
                bin.display(),
                bin.display()
            )))
        }
        Err(e) => {
            return Err(AgentError::Preflight(format!(
                "OCI runtime {} cannot be executed: {e}",
                bin.display()
            )))
        }
    }
    config.pull.client().map_err(AgentError::Preflight)?;
    let layout = cgroups::Layout::read();
    cgroups::check_runtime_layout(&config.runtime, &layout).map_err(AgentError::Preflight)?;
    if let Some(n) = &config.network {
        n.validate().map_err(AgentError::Preflight)?;
        if !n.cni_path.join("bridge").is_file() || !n.cni_path.join("host-local").is_file() {
            return Err(AgentError::Preflight(format!(
                "the CNI plugins bridge and host-local are not in {}; install them (Debian/Ubuntu: `apt-get install containernetworking-plugins`)",
                n.cni_path.display()
            )));
        }
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.lines().any(|l| l.trim_end().ends_with("overlay")) {
        return Err(AgentError::Preflight(
            "the kernel has no overlay filesystem; load it with `modprobe overlay`".into(),
        ));
    }
    Ok(())
}

/// Shared agent state.
pub(crate) struct Agent {
    pub cfg: AgentConfig,
    pub control: control::Control,
    pub puller: registry::Puller,
    pub runtime: runtime::Runtime,
    pub layout: cgroups::Layout,
    pub logs: control::LogShipper,
    pub tasks_dir: PathBuf,
    pub shim_bin: PathBuf,
    /// Keeps the kernel's cgroup attach path warm while tasks start.
    pub primer: Arc<cgroups::AttachPrimer>,
    pub net: Option<network::NetConfig>,
    /// Warm pool of attached network namespaces (with `net`).
    pub pool: Option<Arc<network::NetPool>>,
    pub metadata: Arc<metadata::Metadata>,
    metadata_bind: tokio::sync::Mutex<()>,
    /// Stop requests of the sampler (a task over its ephemeral storage).
    pub evictions: ephemeral::Evictions,
}

impl Agent {
    /// The metadata endpoint's port.
    pub fn metadata_port(&self) -> u16 {
        self.net.as_ref().map(|n| n.metadata_port).unwrap_or(0)
    }

    /// Starts the metadata endpoint on the bridge address `gw` unless it runs already.
    pub async fn ensure_metadata_server(&self, gw: std::net::Ipv4Addr) {
        if self.metadata.serving() {
            return;
        }
        let _g = self.metadata_bind.lock().await;
        if self.metadata.serving() {
            return;
        }
        match tokio::net::TcpListener::bind((gw, self.metadata_port())).await {
            Ok(l) => {
                self.metadata.set_serving();
                tokio::spawn(metadata::serve(l, self.metadata.clone()));
                tracing::info!(
                    "task metadata endpoint on http://{gw}:{}/v4",
                    self.metadata_port()
                );
            }
            Err(e) => tracing::warn!(
                "cannot serve the task metadata endpoint on {gw}:{}: {e}",
                self.metadata_port()
            ),
        }
    }
}

/// A task this agent knows about.
struct TaskHandle {
    stop: tokio::sync::watch::Sender<bool>,
    done: Arc<AtomicBool>,
}

/// Runs forever: long-polls assignments, starts/stops tasks, reports state, ships logs.
pub async fn run(mut config: AgentConfig) -> Result<(), AgentError> {
    std::fs::create_dir_all(&config.data_dir)?;
    config.data_dir = std::fs::canonicalize(&config.data_dir)?;
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()?;
    let credential = control::credential(&client, &config).await?;
    let control = control::Control::new(client, &config.server_url, credential).redacting(vec![
        config.data_dir.clone(),
        std::fs::canonicalize(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone()),
    ]);
    let snapshots = Arc::new(snapshot::Snapshots::new(config.data_dir.join("snapshots"))?);
    let pull_client = config.pull.client().map_err(AgentError::Preflight)?;
    let insecure = config.pull.insecure().map_err(AgentError::Preflight)?;
    let puller = registry::Puller::new(
        pull_client,
        &config.server_url,
        &config.data_dir,
        snapshots,
        insecure,
        config.credentials.clone(),
    )?;
    let tasks_dir = config.data_dir.join("tasks");
    std::fs::create_dir_all(&tasks_dir)?;
    // The embedded per-task shim, run as `<data-dir>/bin/berth-shim-<hash> shim <task-dir> ..`.
    let shim_bin = shim::install(&config.data_dir.join("bin"))?;
    let net = config.network.as_ref().map(|n| network::NetConfig {
        bridge: n.bridge.clone(),
        subnet: n.subnet.clone(),
        cni_path: n.cni_path.clone(),
        ipam_dir: config.data_dir.join("cni"),
        netns_dir: config.data_dir.join("netns"),
        metadata_port: n.metadata_port,
    });
    let layout = cgroups::Layout::read();
    // All tasks together leave the host pids of its own (a fork bomb per task cannot add up).
    match cgroups::limit_parent_pids(&layout) {
        Ok(Some((_, max))) => tracing::info!("tasks may use {max} pids in all"),
        Ok(None) => tracing::warn!("no pids cgroup controller: tasks' pids are not limited"),
        Err(e) => tracing::warn!("cannot limit the tasks' pids in all: {e}"),
    }
    let agent = Arc::new(Agent {
        runtime: runtime::Runtime::new(&config.runtime),
        metadata: Arc::new(metadata::Metadata::new(layout.clone(), tasks_dir.clone())),
        primer: cgroups::AttachPrimer::new(layout.clone()),
        layout,
        logs: control::LogShipper::start(control.clone()),
        control,
        puller,
        tasks_dir,
        shim_bin,
        pool: net.clone().map(network::NetPool::new),
        net,
        metadata_bind: tokio::sync::Mutex::new(()),
        evictions: ephemeral::Evictions::default(),
        cfg: config,
    });
    // The host is closed to tasks before any task (re)starts.
    if let Some(n) = &agent.net {
        network::install_isolation(n).await;
    }
    tokio::spawn(sampler::run(agent.clone(), agent.cfg.metrics_interval));

    let mut tasks: HashMap<String, TaskHandle> = HashMap::new();
    // Tasks of a previous run: re-adopt those whose shims still run, report the others.
    let mut adopted_stops = HashMap::new();
    let rec = task::recover(&agent, |id| {
        let (tx, rx) = tokio::sync::watch::channel(false);
        adopted_stops.insert(id.to_string(), tx);
        rx
    })
    .await;
    for id in rec.adopted {
        if let Some(stop) = adopted_stops.remove(&id) {
            // Adopted supervisors end on their own; `done` stays false until the control plane
            // stops listing the task.
            tasks.insert(
                id,
                TaskHandle {
                    stop,
                    done: Arc::new(AtomicBool::new(false)),
                },
            );
        }
    }
    if let (Some(cfg), Some(pool)) = (agent.net.clone(), agent.pool.clone()) {
        // Pool namespaces of an earlier run that no task took are released, then the pool
        // is filled (in the background).
        let mut in_use = std::collections::HashSet::new();
        if let Ok(rd) = std::fs::read_dir(&agent.tasks_dir) {
            for e in rd.flatten() {
                if let Some(id) = std::fs::read(e.path().join("net.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<network::TaskNet>(&b).ok())
                    .and_then(|n| network::net_id(&n))
                {
                    in_use.insert(id);
                }
            }
        }
        network::sweep_pool(&cfg, &in_use).await;
        pool.refill();
        // On SIGTERM/SIGINT the pool's addresses are released before the process ends (tasks
        // keep running: they outlive the agent).
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            let code = tokio::select! {
                _ = term.recv() => 143,
                _ = int.recv() => 130,
            };
            pool.drain().await;
            std::process::exit(code);
        });
    }
    for id in rec.finished {
        let (stop, _) = tokio::sync::watch::channel(true);
        tasks.insert(
            id,
            TaskHandle {
                stop,
                done: Arc::new(AtomicBool::new(true)),
            },
        );
    }

    let mut after = 0u64;
    let mut backoff = Duration::from_millis(100);
    loop {
        let a = match agent
            .control
            .assignments(&agent.cfg.instance_id, after, 30)
            .await
        {
            Ok(a) => {
                backoff = Duration::from_millis(100);
                a
            }
            Err(AgentError::Unauthorized(e)) => {
                // The server no longer knows this credential (e.g. its state was reset):
                // register again when the join token is at hand.
                tracing::warn!("assignments: {e}");
                if let (None, Some(token)) = (&agent.cfg.credential, &agent.cfg.join_token) {
                    match control::register(
                        &agent.control.client,
                        &agent.cfg.server_url,
                        &agent.cfg.data_dir,
                        &agent.cfg.instance_id,
                        token,
                    )
                    .await
                    {
                        Ok(c) => {
                            agent.control.set_credential(c);
                            continue;
                        }
                        Err(e) => tracing::error!("{e}"),
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(e) => {
                tracing::warn!("assignments: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        after = a.version;
        let mut listed = std::collections::HashSet::new();
        for ta in a.tasks {
            let id = ta.spec.task_id.clone();
            listed.insert(id.clone());
            let want_running = ta.desired_status == DesiredStatus::Running;
            match tasks.get(&id) {
                Some(h) => {
                    if !want_running && !h.done.load(Ordering::SeqCst) {
                        let _ = h.stop.send(true);
                    }
                }
                None if ta.last_status == TaskStatus::Running => {
                    // Running here before, but nothing of it survived (no task directory).
                    tracing::warn!(task = %id, "a task this node ran is gone; reporting it stopped");
                    let (stop, _) = tokio::sync::watch::channel(true);
                    tasks.insert(
                        id.clone(),
                        TaskHandle {
                            stop,
                            done: Arc::new(AtomicBool::new(true)),
                        },
                    );
                    let reporter = control::Reporter::start(agent.control.clone(), id, None);
                    let r = berth_api::agent::TaskStateReport {
                        last_status: TaskStatus::Stopped,
                        stopped_at: Some(berth_core::epoch_now()),
                        stop_code: Some(StopCode::EssentialContainerExited),
                        stopped_reason: Some(task::LOST_REASON.into()),
                        ..Default::default()
                    };
                    tokio::spawn(reporter.finish(r));
                }
                None => {
                    let (stop, stop_rx) = tokio::sync::watch::channel(!want_running);
                    let done = Arc::new(AtomicBool::new(false));
                    tasks.insert(
                        id.clone(),
                        TaskHandle {
                            stop,
                            done: done.clone(),
                        },
                    );
                    let agent = agent.clone();
                    tokio::spawn(async move {
                        task::run_task(agent, ta.spec, stop_rx).await;
                        done.store(true, Ordering::SeqCst);
                    });
                }
            }
        }
        // Level-triggered: what the control plane no longer lists must not run here.
        tasks.retain(|id, h| {
            if listed.contains(id) {
                return true;
            }
            if h.done.load(Ordering::SeqCst) {
                return false;
            }
            let _ = h.stop.send(true);
            // An adopted task's supervisor has no `done` flag; once unlisted it is STOPPED.
            h.stop.receiver_count() > 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_lookup() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("/definitely/not/here").is_none());
        assert!(find_in_path("no-such-runtime-xyz").is_none());
    }
}
