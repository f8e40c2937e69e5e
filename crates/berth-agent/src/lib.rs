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

mod cgroups;
mod control;
mod registry;
mod resolve;
mod runtime;
mod snapshot;
mod spec;
mod task;

pub use cgroups::Layout as CgroupLayout;

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
    #[error("image: {0}")]
    Image(String),
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

fn find_in_path(bin: &str) -> Option<PathBuf> {
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
    let layout = cgroups::Layout::read();
    cgroups::check_runtime_layout(&config.runtime, &layout).map_err(AgentError::Preflight)?;
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
    pub nofile: u64,
    pub tasks_dir: PathBuf,
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
    runtime::become_subreaper()?;
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()?;
    let control = control::Control::new(client.clone(), &config.server_url);
    let snapshots = Arc::new(snapshot::Snapshots::new(config.data_dir.join("snapshots"))?);
    let puller = registry::Puller::new(client, &config.server_url, &config.data_dir, snapshots)?;
    let nofile = match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) if hard != nix::libc::RLIM_INFINITY => hard,
        _ => 1_048_576,
    };
    let tasks_dir = config.data_dir.join("tasks");
    std::fs::create_dir_all(&tasks_dir)?;
    let agent = Arc::new(Agent {
        runtime: runtime::Runtime {
            bin: config.runtime.clone(),
        },
        layout: cgroups::Layout::read(),
        logs: control::LogShipper::start(control.clone()),
        control,
        puller,
        nofile,
        tasks_dir,
        cfg: config,
    });

    let mut tasks: HashMap<String, TaskHandle> = HashMap::new();
    // Tasks left from a previous run: their containers are gone with us; clean and report.
    for id in task::recover_leftovers(&agent).await {
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
            let want_running = ta.desired_status == "RUNNING";
            match tasks.get(&id) {
                Some(h) => {
                    if !want_running && !h.done.load(Ordering::SeqCst) {
                        let _ = h.stop.send(true);
                    }
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
            true
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
