//! One task's life on this node: pull, bundle, run, supervise, stop, clean up, report.
//! Per-task state lives in `<data_dir>/tasks/<task-id>/` (`task.json` plus a bundle directory
//! per container) so a restarted agent can clean up what a previous run left.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_api::agent::{
    ContainerSpec, ContainerStateReport, LogDestination, LogLine, TaskSpec, TaskStateReport,
};
use berth_core::epoch_now;
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::{mpsc, watch};

use crate::control::Reporter;
use crate::registry::Image;
use crate::spec::{
    build_spec, merge_env, process_args, read_rootfs_etc, resolve_user, BundleInputs,
};
use crate::{cgroups, Agent, AgentError};

pub const RESTART_REASON: &str =
    "Task stopped because berth restarted while it was running; its containers were lost";
const ESSENTIAL_EXITED: &str = "Essential container in task exited";
const DEFAULT_STOP_TIMEOUT: u32 = 30;
const MAX_LINE: u64 = 256 * 1024;

fn safe_name(s: &str) -> String {
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

fn cgroup_task_rel(task_id: &str) -> String {
    format!("berth/{task_id}")
}

/// A running container.
struct Running {
    id: String,
    pidfd: Option<Arc<OwnedFd>>,
    exited: Arc<AtomicBool>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

fn stopped_report(spec: &TaskSpec, base: &TaskStateReport) -> TaskStateReport {
    let mut r = base.clone();
    r.last_status = "STOPPED".into();
    r.stopped_at = Some(epoch_now());
    if r.containers.len() != spec.containers.len() {
        r.containers = spec
            .containers
            .iter()
            .map(|c| ContainerStateReport {
                name: c.name.clone(),
                last_status: "STOPPED".into(),
                ..Default::default()
            })
            .collect();
    }
    for c in &mut r.containers {
        c.last_status = "STOPPED".into();
    }
    r
}

/// Runs a task to its end. `stop` turns true when the control plane wants it stopped.
pub async fn run_task(agent: Arc<Agent>, spec: TaskSpec, mut stop: watch::Receiver<bool>) {
    let reporter = Reporter::start(agent.control.clone(), spec.task_id.clone());
    let mut report = TaskStateReport {
        last_status: "PENDING".into(),
        containers: spec
            .containers
            .iter()
            .map(|c| ContainerStateReport {
                name: c.name.clone(),
                last_status: "PENDING".into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let fail = |report: &TaskStateReport, reason: String, per_container: Vec<Option<String>>| {
        let mut r = stopped_report(&spec, report);
        r.stop_code = Some("TaskFailedToStart".into());
        r.stopped_reason = Some(reason);
        for (c, why) in r.containers.iter_mut().zip(per_container) {
            if why.is_some() {
                c.reason = why;
            }
        }
        r
    };
    if *stop.borrow() {
        reporter.finish(stopped_report(&spec, &report)).await;
        return;
    }
    if !valid_task_id(&spec.task_id) || spec.containers.is_empty() {
        let r = fail(&report, format!("invalid task {:?}", spec.task_id), vec![]);
        reporter.finish(r).await;
        return;
    }
    let task_dir = agent.tasks_dir.join(&spec.task_id);
    let prepared = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(&task_dir)?;
        std::fs::write(
            task_dir.join("task.json"),
            serde_json::to_vec(&spec).unwrap_or_default(),
        )
    })();
    if let Err(e) = prepared {
        reporter
            .finish(fail(
                &report,
                format!("cannot create task state: {e}"),
                vec![],
            ))
            .await;
        return;
    }

    // Pull.
    report.pull_started_at = Some(epoch_now());
    reporter.send(report.clone());
    let pulls =
        futures_util::future::join_all(spec.containers.iter().map(|c| agent.puller.pull(&c.image)));
    let pulled = tokio::select! {
        p = pulls => p,
        _ = stop_requested(&mut stop) => {
            let _ = std::fs::remove_dir_all(&task_dir);
            reporter.finish(stopped_report(&spec, &report)).await;
            return;
        }
    };
    report.pull_stopped_at = Some(epoch_now());
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
    if let Some(reason) = first_err {
        tracing::info!(task = %spec.task_id, "pull failed: {reason}");
        let _ = std::fs::remove_dir_all(&task_dir);
        reporter.finish(fail(&report, reason, errors)).await;
        return;
    }

    // Start every container at once.
    let hostname: String = spec.task_id.chars().take(12).collect();
    write_etc_files(&task_dir, &hostname);
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel::<(usize, Option<i32>)>();
    let starts =
        futures_util::future::join_all(spec.containers.iter().zip(images.iter()).enumerate().map(
            |(idx, (c, img))| {
                start_container(
                    &agent,
                    &spec,
                    &task_dir,
                    &hostname,
                    idx,
                    c,
                    img,
                    exit_tx.clone(),
                )
            },
        ))
        .await;
    drop(exit_tx);
    let mut running: Vec<Option<Running>> = Vec::new();
    let mut start_err = None;
    let mut start_errors = Vec::new();
    for s in starts {
        match s {
            Ok(r) => {
                running.push(Some(r));
                start_errors.push(None);
            }
            Err(e) => {
                let msg = format!("CannotStartContainerError: {e}");
                start_err.get_or_insert(msg.clone());
                start_errors.push(Some(msg));
                running.push(None);
            }
        }
    }
    if let Some(reason) = start_err {
        tracing::info!(task = %spec.task_id, "start failed: {reason}");
        for r in running.iter().flatten() {
            agent
                .runtime
                .signal(&r.id, r.pidfd.as_deref(), Signal::SIGKILL)
                .await;
        }
        let n_running = running.iter().flatten().count();
        for _ in 0..n_running {
            if exit_rx.recv().await.is_none() {
                break;
            }
        }
        finish_readers(&mut running).await;
        agent.logs.flush().await;
        cleanup(&agent, &spec.task_id, &spec.containers).await;
        reporter.finish(fail(&report, reason, start_errors)).await;
        remove_task_dir(&task_dir);
        return;
    }
    report.last_status = "RUNNING".into();
    report.started_at = Some(epoch_now());
    for ((cr, r), img) in report
        .containers
        .iter_mut()
        .zip(running.iter())
        .zip(images.iter())
    {
        cr.last_status = "RUNNING".into();
        cr.runtime_id = r.as_ref().map(|r| r.id.clone());
        cr.image_digest = Some(img.digest.clone());
    }
    reporter.send(report.clone());
    tracing::info!(task = %spec.task_id, "running");

    // Supervise.
    let n = spec.containers.len();
    let mut alive = n;
    let mut stopping = false;
    let mut stop_code = None;
    let mut stopped_reason = None;
    let mut timers: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    while alive > 0 {
        tokio::select! {
            ev = exit_rx.recv() => {
                let Some((idx, code)) = ev else { break };
                alive -= 1;
                let cr = &mut report.containers[idx];
                cr.last_status = "STOPPED".into();
                cr.exit_code = code;
                tracing::info!(task = %spec.task_id, container = %spec.containers[idx].name, "exited with {code:?}");
                if !stopping && (spec.containers[idx].essential || alive == 0) {
                    stopping = true;
                    stop_code = Some("EssentialContainerExited".to_string());
                    stopped_reason = Some(ESSENTIAL_EXITED.to_string());
                    timers = begin_stop(&agent, &spec, &running).await;
                } else if !stopping {
                    reporter.send(report.clone());
                }
            }
            _ = stop_requested(&mut stop), if !stopping => {
                stopping = true;
                timers = begin_stop(&agent, &spec, &running).await;
            }
        }
    }
    for t in timers {
        t.abort();
    }
    finish_readers(&mut running).await;
    agent.logs.flush().await;
    cleanup(&agent, &spec.task_id, &spec.containers).await;
    let mut r = stopped_report(&spec, &report);
    r.stop_code = stop_code;
    r.stopped_reason = stopped_reason;
    reporter.finish(r).await;
    remove_task_dir(&task_dir);
    tracing::info!(task = %spec.task_id, "stopped");
}

/// Resolves once a stop is asked for (or the asking side is gone).
async fn stop_requested(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// SIGTERM to every running container, SIGKILL after its stop timeout.
async fn begin_stop(
    agent: &Arc<Agent>,
    spec: &TaskSpec,
    running: &[Option<Running>],
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut timers = Vec::new();
    for (c, r) in spec.containers.iter().zip(running) {
        let Some(r) = r else { continue };
        if r.exited.load(Ordering::SeqCst) {
            continue;
        }
        agent
            .runtime
            .signal(&r.id, r.pidfd.as_deref(), Signal::SIGTERM)
            .await;
        let timeout = if c.stop_timeout == 0 {
            DEFAULT_STOP_TIMEOUT
        } else {
            c.stop_timeout
        };
        let (agent, id, pidfd, exited) = (
            agent.clone(),
            r.id.clone(),
            r.pidfd.clone(),
            r.exited.clone(),
        );
        timers.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(timeout as u64)).await;
            if !exited.load(Ordering::SeqCst) {
                agent
                    .runtime
                    .signal(&id, pidfd.as_deref(), Signal::SIGKILL)
                    .await;
            }
        }));
    }
    timers
}

/// Waits (briefly) for the output readers to reach the end of the pipes.
async fn finish_readers(running: &mut [Option<Running>]) {
    let handles: Vec<_> = running
        .iter_mut()
        .flatten()
        .flat_map(|r| r.readers.drain(..))
        .collect();
    let all = futures_util::future::join_all(handles);
    if tokio::time::timeout(Duration::from_secs(2), all)
        .await
        .is_err()
    {
        tracing::warn!("container output still open 2s after exit; some log lines may be missing");
    }
}

fn write_etc_files(task_dir: &Path, hostname: &str) {
    let _ = std::fs::write(task_dir.join("hostname"), format!("{hostname}\n"));
    let _ = std::fs::write(
        task_dir.join("hosts"),
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
    );
    if let Ok(s) = std::fs::read_to_string("/etc/resolv.conf") {
        let _ = std::fs::write(task_dir.join("resolv.conf"), s);
    }
}

fn overlay_options(layers: &[PathBuf], empty: &Path, upper: &Path, work: &Path) -> String {
    let lower: Vec<String> = if layers.is_empty() {
        vec![empty.display().to_string()]
    } else {
        layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect()
    };
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    )
}

#[allow(clippy::too_many_arguments)]
async fn start_container(
    agent: &Arc<Agent>,
    spec: &TaskSpec,
    task_dir: &Path,
    hostname: &str,
    idx: usize,
    c: &ContainerSpec,
    img: &Image,
    exit_tx: mpsc::UnboundedSender<(usize, Option<i32>)>,
) -> Result<Running, AgentError> {
    let cdir = task_dir.join(format!("c{idx}"));
    let rootfs = cdir.join("rootfs");
    let upper = cdir.join("upper");
    let work = cdir.join("work");
    let empty = cdir.join("empty");
    for d in [&rootfs, &upper, &work] {
        std::fs::create_dir_all(d)?;
    }
    if img.layers.is_empty() {
        std::fs::create_dir_all(&empty)?;
    }
    let opts = overlay_options(&img.layers, &empty, &upper, &work);
    nix::mount::mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| AgentError::Runtime(format!("mounting the overlay rootfs: {e}")))?;

    let rc = img.config.config.as_ref();
    let args = process_args(rc, c).map_err(AgentError::Spec)?;
    let user_str = c
        .user
        .clone()
        .filter(|u| !u.is_empty())
        .or_else(|| rc.and_then(|r| r.user.clone()))
        .unwrap_or_default();
    let user = if user_str.is_empty() {
        resolve_user("", None, None)
    } else {
        resolve_user(
            &user_str,
            read_rootfs_etc(&rootfs, "passwd").as_deref(),
            read_rootfs_etc(&rootfs, "group").as_deref(),
        )
    }
    .map_err(AgentError::Spec)?;
    let image_env = rc.and_then(|r| r.env.clone()).unwrap_or_default();
    let env = merge_env(&image_env, &c.environment, hostname);
    let cwd = c
        .working_directory
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| {
            rc.and_then(|r| r.working_dir.clone())
                .filter(|w| !w.is_empty())
        })
        .unwrap_or_else(|| "/".into());
    let mut binds = vec![
        (task_dir.join("hostname"), "/etc/hostname", false),
        (task_dir.join("hosts"), "/etc/hosts", false),
    ];
    if task_dir.join("resolv.conf").exists() {
        binds.push((task_dir.join("resolv.conf"), "/etc/resolv.conf", false));
    }
    let name = safe_name(&c.name);
    let inputs = BundleInputs {
        args,
        env,
        cwd,
        user,
        hostname: hostname.to_string(),
        rootfs: rootfs.clone(),
        cgroups_path: format!("/{}/{name}", cgroup_task_rel(&spec.task_id)),
        cgroup_ns: agent.layout.is_unified(),
        nofile: agent.nofile,
        binds,
    };
    let oci = build_spec(spec, c, &inputs)?;
    let json = serde_json::to_vec(&oci).map_err(|e| AgentError::Spec(e.to_string()))?;
    std::fs::write(cdir.join("config.json"), json)?;

    let id = container_id(&spec.task_id, &c.name);
    let started = agent.runtime.run(&id, &cdir).await?;
    let exited = Arc::new(AtomicBool::new(false));
    {
        let exited = exited.clone();
        let pid = started.pid;
        tokio::task::spawn_blocking(move || {
            let code = crate::runtime::wait_exit(pid);
            exited.store(true, Ordering::SeqCst);
            let _ = exit_tx.send((idx, code));
        });
    }
    let readers = vec![
        tokio::spawn(read_lines(
            started.stdout,
            c.log.clone(),
            agent.logs.clone(),
        )),
        tokio::spawn(read_lines(
            started.stderr,
            c.log.clone(),
            agent.logs.clone(),
        )),
    ];
    Ok(Running {
        id,
        pidfd: started.pidfd.map(Arc::new),
        exited,
        readers,
    })
}

/// Turns a container output stream into log lines (always drained, shipped when the container
/// has a log destination).
async fn read_lines<R: AsyncRead + Unpin>(
    r: R,
    dest: Option<LogDestination>,
    logs: crate::control::LogShipper,
) {
    let mut br = BufReader::with_capacity(64 * 1024, r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut br).take(MAX_LINE).read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let Some(d) = &dest else { continue };
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                logs.line(LogLine {
                    group: d.group.clone(),
                    stream: d.stream.clone(),
                    timestamp: ts,
                    message: String::from_utf8_lossy(&buf).into_owned(),
                });
            }
        }
    }
}

/// Deletes the task's containers, unmounts their rootfs and removes the task's cgroups.
async fn cleanup(agent: &Arc<Agent>, task_id: &str, containers: &[ContainerSpec]) {
    let deletes = containers.iter().map(|c| {
        let id = container_id(task_id, &c.name);
        async move {
            if let Err(e) = agent.runtime.delete_force(&id).await {
                tracing::warn!("{e}");
            }
        }
    });
    futures_util::future::join_all(deletes).await;
    unmount_all(&agent.tasks_dir.join(task_id));
    let failed = cgroups::remove_tree(&agent.layout, &cgroup_task_rel(task_id));
    for f in failed {
        tracing::warn!("cannot remove cgroup {f}");
    }
}

fn unmount_all(task_dir: &Path) {
    let Ok(rd) = std::fs::read_dir(task_dir) else {
        return;
    };
    for e in rd.flatten() {
        let rootfs = e.path().join("rootfs");
        if rootfs.is_dir() {
            match nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(err) => tracing::warn!("umount {}: {err}", rootfs.display()),
            }
        }
    }
}

fn is_mount_point(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(a), Some(parent)) = (std::fs::symlink_metadata(p), p.parent()) else {
        return false;
    };
    let Ok(b) = std::fs::symlink_metadata(parent) else {
        return false;
    };
    a.dev() != b.dev()
}

/// Removes a task directory unless a rootfs in it is still mounted (never delete through a
/// mount).
fn remove_task_dir(task_dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(task_dir) {
        for e in rd.flatten() {
            if is_mount_point(&e.path().join("rootfs")) {
                tracing::error!(
                    "{} is still mounted; leaving {}",
                    e.path().join("rootfs").display(),
                    task_dir.display()
                );
                return;
            }
        }
    }
    if let Err(e) = std::fs::remove_dir_all(task_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("removing {}: {e}", task_dir.display());
        }
    }
}

/// Cleans up every task directory a previous agent run left and reports those tasks STOPPED.
/// Returns their ids.
pub async fn recover_leftovers(agent: &Arc<Agent>) -> Vec<String> {
    let mut ids = Vec::new();
    let Ok(rd) = std::fs::read_dir(&agent.tasks_dir) else {
        return ids;
    };
    for e in rd.flatten() {
        let dir = e.path();
        let dir_name = e.file_name().to_string_lossy().to_string();
        let spec: Option<TaskSpec> = std::fs::read(dir.join("task.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let Some(spec) = spec else {
            unmount_all(&dir);
            if valid_task_id(&dir_name) {
                let _ = cgroups::remove_tree(&agent.layout, &cgroup_task_rel(&dir_name));
            }
            remove_task_dir(&dir);
            continue;
        };
        tracing::info!(task = %spec.task_id, "cleaning up a task left by a previous run");
        cleanup(agent, &spec.task_id, &spec.containers).await;
        let base = TaskStateReport::default();
        let mut r = stopped_report(&spec, &base);
        r.stop_code = Some("EssentialContainerExited".into());
        r.stopped_reason = Some(RESTART_REASON.into());
        for c in &mut r.containers {
            c.reason = Some(RESTART_REASON.into());
        }
        ids.push(spec.task_id.clone());
        let reporter = Reporter::start(agent.control.clone(), spec.task_id.clone());
        tokio::spawn(async move {
            reporter.finish(r).await;
            remove_task_dir(&dir);
        });
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_overlay_options() {
        assert_eq!(container_id("abc", "web/app x"), "berth-abc-web-app-x");
        assert!(valid_task_id("0123abcd"));
        assert!(!valid_task_id("../x"));
        let o = overlay_options(
            &[PathBuf::from("/s/1/fs"), PathBuf::from("/s/2/fs")],
            Path::new("/e"),
            Path::new("/u"),
            Path::new("/w"),
        );
        assert_eq!(o, "lowerdir=/s/2/fs:/s/1/fs,upperdir=/u,workdir=/w");
        assert_eq!(
            overlay_options(&[], Path::new("/e"), Path::new("/u"), Path::new("/w")),
            "lowerdir=/e,upperdir=/u,workdir=/w"
        );
    }
}
