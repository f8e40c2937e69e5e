//! The agent's side of the shim protocol (`crate::shim`): starting a task's shim, connecting
//! to it (also after an agent restart), asking it to start containers, receiving its events.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::shim::{Event, ExitRecord, Request};
use crate::AgentError;

/// What the shim tells the task supervisor.
#[derive(Debug)]
pub enum ShimEvent {
    Exit(ExitRecord),
    /// New lines in `c<idx>/log`.
    Log(usize),
    /// The connection ended (the shim exited or was killed).
    Closed,
}

type Pending = Arc<Mutex<HashMap<usize, oneshot::Sender<Result<i32, String>>>>>;

/// A connection to one task's shim.
pub struct ShimConn {
    writer: tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>,
    pending: Pending,
}

/// Starts `<shim_bin> shim <task_dir> <runtime> [<sealed runtime copy>]` (the embedded shim, see
/// [`crate::shim::install`]) in a process group of its own with a fresh
/// listening socket as stdin; writes `shim.pid`. Returns the shim's pid.
pub fn spawn(
    shim_bin: &Path,
    task_dir: &Path,
    task_id: &str,
    runtime: &crate::runtime::Runtime,
) -> Result<i32, AgentError> {
    let addr = SocketAddr::from_abstract_name(crate::shim::socket_name(task_id).as_bytes())?;
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr)?;
    let log = std::fs::File::create(task_dir.join("shim.log"))?;
    let mut child = tokio::process::Command::new(shim_bin)
        .arg("shim")
        .arg(task_dir)
        .arg(&runtime.bin)
        .args(runtime.sealed_path())
        .stdin(std::process::Stdio::from(OwnedFd::from(listener)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(log))
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| {
            AgentError::Runtime(format!("cannot start the shim {}: {e}", shim_bin.display()))
        })?;
    let pid = child.id().unwrap_or(0) as i32;
    crate::statefile::write(&task_dir.join("shim.pid"), pid.to_string().as_bytes())?;
    // Reap it when it ends (while this agent lives).
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(pid)
}

/// True when the shim recorded in `<task_dir>/shim.pid` still runs.
pub fn shim_alive(task_dir: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(task_dir.join("shim.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return false;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.get(1) == Some(&&b"shim"[..])
        && args
            .get(2)
            .map(|a| Path::new(std::str::from_utf8(a).unwrap_or("")))
            == Some(task_dir)
}

impl ShimConn {
    /// Connects to the shim of `task_id`; events arrive on the returned channel.
    pub async fn connect(
        task_id: &str,
    ) -> Result<(Arc<ShimConn>, mpsc::UnboundedReceiver<ShimEvent>), AgentError> {
        let addr = SocketAddr::from_abstract_name(crate::shim::socket_name(task_id).as_bytes())?;
        let std = std::os::unix::net::UnixStream::connect_addr(&addr)?;
        std.set_nonblocking(true)?;
        let stream = tokio::net::UnixStream::from_std(std)?;
        let (r, w) = stream.into_split();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let pending = pending.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let (idx, res) = match Event::parse(&line) {
                        Some(Event::Started { idx, pid }) => (idx, Ok(pid)),
                        Some(Event::Failed { idx, message }) => (idx, Err(message)),
                        Some(Event::Log { idx }) => {
                            let _ = tx.send(ShimEvent::Log(idx));
                            continue;
                        }
                        Some(Event::Exit(rec)) => {
                            let _ = tx.send(ShimEvent::Exit(rec));
                            continue;
                        }
                        None => {
                            tracing::warn!("bad shim event {line:?}");
                            continue;
                        }
                    };
                    if let Some(w) = pending.lock().unwrap().remove(&idx) {
                        let _ = w.send(res);
                    }
                }
                for (_, w) in pending.lock().unwrap().drain() {
                    let _ = w.send(Err("the shim went away".into()));
                }
                let _ = tx.send(ShimEvent::Closed);
            });
        }
        Ok((
            Arc::new(ShimConn {
                writer: tokio::sync::Mutex::new(w),
                pending,
            }),
            rx,
        ))
    }

    async fn send(&self, r: &Request) -> Result<(), String> {
        let line = r.encode()?;
        self.writer
            .lock()
            .await
            .write_all(&line)
            .await
            .map_err(|e| format!("writing to the shim: {e}"))
    }

    /// Starts container `idx` (bundle in `bundle`); returns its pid 1 once it runs, or the
    /// reason it did not start (with the runtime's own last error line when it logged one).
    pub async fn start(
        &self,
        idx: usize,
        id: &str,
        bundle: PathBuf,
        oom: Vec<PathBuf>,
    ) -> Result<i32, String> {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(idx, tx);
        self.send(&Request::Start {
            idx,
            id: id.to_string(),
            bundle: bundle.clone(),
            oom,
        })
        .await?;
        let res = rx.await.map_err(|_| "the shim went away".to_string())?;
        res.map_err(|msg| {
            let log = std::fs::read_to_string(bundle.join("runtime.log")).unwrap_or_default();
            match crate::shim::runtime_error(&log) {
                e if e.is_empty() => msg,
                e => format!("{msg}: {e}"),
            }
        })
    }

    /// Sends `sig` to container `idx`'s pid 1.
    pub async fn kill(&self, idx: usize, sig: i32) -> Result<(), String> {
        self.send(&Request::Kill { idx, sig }).await
    }

    /// Tells the shim to exit (after every container has ended).
    pub async fn bye(&self) {
        let _ = self.send(&Request::Bye).await;
    }
}
