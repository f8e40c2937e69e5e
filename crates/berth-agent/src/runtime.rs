//! Driving the OCI runtime binary (crun, runc): `run --detach` with the container's stdout and
//! stderr as pipes to the agent, exit status through `waitpid` (the agent is a child
//! subreaper, so the container's pid 1 becomes its child once the runtime exits), signals
//! through a pidfd, and `delete -f`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;

use tokio::process::{ChildStderr, ChildStdout, Command};

use crate::AgentError;

#[derive(Debug, Clone)]
pub struct Runtime {
    pub bin: String,
}

/// A started container.
pub struct Started {
    pub pid: i32,
    pub pidfd: Option<OwnedFd>,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// Makes this process a child subreaper (once).
pub fn become_subreaper() -> Result<(), AgentError> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| AgentError::Runtime(format!("prctl(PR_SET_CHILD_SUBREAPER): {e}")))
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: plain syscall; the result is a new fd we own or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        None
    } else {
        // SAFETY: fd is a fresh descriptor returned by the kernel.
        Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

/// Exit code as a shell reports it: the status, or 128 + signal.
pub fn exit_code(status: nix::sys::wait::WaitStatus) -> Option<i32> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

impl Runtime {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.stdin(Stdio::null()).kill_on_drop(false);
        c
    }

    /// `<runtime> run --detach`: returns once the container process runs.
    pub async fn run(&self, id: &str, bundle: &Path) -> Result<Started, AgentError> {
        let pid_file = bundle.join("pid");
        let mut child = self
            .cmd()
            .arg("run")
            .arg("--detach")
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("--bundle")
            .arg(bundle)
            .arg(id)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| AgentError::Runtime(format!("cannot run {}: {e}", self.bin)))?;
        let stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let status = child.wait().await?;
        if !status.success() {
            // The runtime's own error went to the stderr pipe; no container holds it now
            // (normally), but do not hang if one does.
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                use tokio::io::AsyncReadExt;
                let _ = stderr.read_to_end(&mut buf).await;
            })
            .await;
            let _ = self.delete_force(id).await;
            let msg = String::from_utf8_lossy(&buf).trim().to_string();
            return Err(AgentError::Runtime(format!(
                "{} run {id}: {status}: {msg}",
                self.bin
            )));
        }
        let pid: i32 = tokio::fs::read_to_string(&pid_file)
            .await?
            .trim()
            .parse()
            .map_err(|e| {
                AgentError::Runtime(format!("bad pid file {}: {e}", pid_file.display()))
            })?;
        let pidfd = pidfd_open(pid);
        // crun leaves a helper process that is reparented to us; reap it (off the hot path).
        let comm: String = Path::new(&self.bin)
            .file_name()
            .map(|n| n.to_string_lossy().chars().take(15).collect())
            .unwrap_or_default();
        tokio::task::spawn_blocking(move || reap_runtime_helpers(comm));
        Ok(Started {
            pid,
            pidfd,
            stdout,
            stderr,
        })
    }

    /// Signals the container's pid 1 through its pidfd, falling back to `<runtime> kill`.
    pub async fn signal(&self, id: &str, pidfd: Option<&OwnedFd>, sig: nix::sys::signal::Signal) {
        if let Some(fd) = pidfd {
            // SAFETY: valid pidfd; null siginfo is allowed.
            let r = unsafe {
                nix::libc::syscall(
                    nix::libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig as i32,
                    std::ptr::null::<nix::libc::siginfo_t>(),
                    0,
                )
            };
            if r == 0 {
                return;
            }
        }
        let _ = self
            .cmd()
            .arg("kill")
            .arg(id)
            .arg(sig.as_str().trim_start_matches("SIG"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }

    /// `<runtime> delete -f <id>`; a missing container is fine.
    pub async fn delete_force(&self, id: &str) -> Result<(), AgentError> {
        let out = self
            .cmd()
            .arg("delete")
            .arg("-f")
            .arg(id)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let l = err.to_ascii_lowercase();
        if l.contains("does not exist")
            || l.contains("not exist")
            || l.contains("no such")
            || l.contains("not found")
        {
            return Ok(());
        }
        Err(AgentError::Runtime(format!(
            "{} delete -f {id}: {}",
            self.bin,
            err.trim()
        )))
    }
}

/// Reaps helper processes the runtime left behind that were reparented to this subreaper
/// (crun's `run --detach` leaves one per container). A helper is a child of ours, named like
/// the runtime, in a session of its own (so not one of the runtime processes tokio spawned and
/// waits for) and in our pid namespace (so not a container's pid 1, which is in a new one).
fn reap_runtime_helpers(runtime_comm: String) {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    use nix::unistd::Pid;
    let me = std::process::id() as i32;
    let my_sid = nix::unistd::getsid(None).map(|p| p.as_raw()).unwrap_or(0);
    let my_ns = std::fs::read_link("/proc/self/ns/pid").ok();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut found = Vec::new();
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp session ...
        let (Some(open), Some((_, rest))) = (stat.find(" ("), stat.rsplit_once(") ")) else {
            continue;
        };
        let comm = &stat[open + 2..stat.len() - rest.len() - 2];
        let f: Vec<&str> = rest.split(' ').take(4).collect();
        if f.len() < 4 || comm != runtime_comm {
            continue;
        }
        let (ppid, sid) = (f[1].parse().unwrap_or(0), f[3].parse().unwrap_or(0));
        if ppid != me || sid == my_sid {
            continue;
        }
        if my_ns.is_none() || std::fs::read_link(e.path().join("ns/pid")).ok() != my_ns {
            continue;
        }
        found.push(pid);
    }
    for pid in found {
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL));
    }
}

/// Blocks until `pid` (a child of this process) exits; returns its exit code. Waits on that
/// pid only, so tokio's own child handling is not disturbed.
pub fn wait_exit(pid: i32) -> Option<i32> {
    use nix::errno::Errno;
    use nix::sys::wait::{waitpid, WaitPidFlag};
    use nix::unistd::Pid;
    let mut delay = std::time::Duration::from_millis(1);
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL)) {
            Ok(st) => {
                if let Some(c) = exit_code(st) {
                    return Some(c);
                }
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => {
                // Not (yet) our child: crun's helper that cloned it may still be exiting; once
                // it has, the process is reparented to us. Gone entirely -> status unknown.
                if nix::sys::signal::kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
                    return None;
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(std::time::Duration::from_millis(100));
            }
            Err(_) => return None,
        }
    }
}
