//! The agent's side of the shim protocol (`crate::shim`): starting a task's shim, connecting
//! to it (also after an agent restart), asking it to start containers, receiving its events.
//!
//! The shim listens on a Unix socket file, `<task_dir>/ctl/shim.sock` (see
//! [`crate::shim::socket_dir`]): the directory is 0700 and the socket 0600, so only root
//! reaches it, and the shim itself accepts only peers running as root or as its own user
//! (`SO_PEERCRED`). A restarted agent finds the socket again from the task directory.
//!
//! `sun_path` holds at most 107 bytes and data directories can be longer, so the socket is
//! never named by its full path: the agent opens `<task_dir>/ctl` and binds or connects to
//! `/proc/self/fd/<dir fd>/shim.sock` (the kernel resolves the directory through the
//! descriptor), which is about 30 bytes whatever the data directory.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
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

/// Opens (creating it when `create`) the socket directory `<task_dir>/ctl`, mode 0700, not
/// through a symbolic link.
fn open_socket_dir(task_dir: &Path, create: bool) -> std::io::Result<std::fs::File> {
    let dir = crate::shim::socket_dir(task_dir);
    if create {
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(&dir)?;
    if create {
        f.set_permissions(std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(f)
}

/// `/proc/self/fd/<dir>/shim.sock`: the socket path, short whatever the data directory.
fn socket_path_via(dir: &std::fs::File) -> PathBuf {
    PathBuf::from(format!(
        "/proc/self/fd/{}/{}",
        dir.as_raw_fd(),
        crate::shim::SOCKET_FILE
    ))
}

/// Binds the shim's listening socket `<task_dir>/ctl/shim.sock` (directory 0700, socket 0600;
/// a stale socket file is replaced).
pub fn bind_socket(task_dir: &Path) -> std::io::Result<UnixListener> {
    let dir = open_socket_dir(task_dir, true)?;
    let path = socket_path_via(&dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// The uid of the process at the other end of `s` (`SO_PEERCRED`).
pub fn peer_uid(s: &impl AsRawFd) -> std::io::Result<u32> {
    use nix::libc;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt into a ucred whose size we pass.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Connects to the shim of the task in `task_dir`: its socket file, or for a shim of an
/// earlier berth without one (no `ctl` directory) its abstract name. The listening end must
/// belong to root or to this agent's user.
pub fn connect_socket(task_dir: &Path, task_id: &str) -> Result<UnixStream, AgentError> {
    let stream = match open_socket_dir(task_dir, false) {
        Ok(dir) => UnixStream::connect(socket_path_via(&dir))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let name = crate::shim::legacy_socket_name(task_id);
            UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?
        }
        Err(e) => return Err(e.into()),
    };
    let uid = peer_uid(&stream)?;
    if uid != 0 && uid != nix::unistd::geteuid().as_raw() {
        return Err(AgentError::Runtime(format!(
            "the shim socket of task {task_id} belongs to uid {uid}, not to root"
        )));
    }
    Ok(stream)
}

/// Starts `<shim_bin> shim <task_dir> <runtime> [<sealed runtime copy>]` (the embedded shim, see
/// [`crate::shim::install`]) in a process group of its own with a fresh listening socket
/// ([`bind_socket`]) as stdin; writes `shim.pid`. Returns the shim's pid.
pub fn spawn(
    shim_bin: &Path,
    task_dir: &Path,
    runtime: &crate::runtime::Runtime,
) -> Result<i32, AgentError> {
    let listener = bind_socket(task_dir)?;
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
    /// Connects to the shim of task `task_id` in `task_dir` ([`connect_socket`]); events
    /// arrive on the returned channel.
    pub async fn connect(
        task_dir: &Path,
        task_id: &str,
    ) -> Result<(Arc<ShimConn>, mpsc::UnboundedReceiver<ShimEvent>), AgentError> {
        let std = connect_socket(task_dir, task_id)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The socket sits in a 0700 directory, is 0600, and is reached through the directory's
    /// descriptor whatever the length of the task directory's path.
    #[test]
    fn socket_file_under_a_long_path() {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let base = std::env::temp_dir().join(format!("berth-shim-sock-{}", std::process::id()));
        let task_dir = base.join("d".repeat(120)).join("t");
        std::fs::create_dir_all(&task_dir).unwrap();
        assert!(task_dir.join("ctl/shim.sock").as_os_str().len() > 108);
        let l = bind_socket(&task_dir).unwrap();
        let dir = crate::shim::socket_dir(&task_dir);
        let md = std::fs::metadata(&dir).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o700);
        let md = std::fs::symlink_metadata(dir.join("shim.sock")).unwrap();
        assert!(md.file_type().is_socket());
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        let c = connect_socket(&task_dir, "t").unwrap();
        let (s, _) = l.accept().unwrap();
        assert_eq!(peer_uid(&s).unwrap(), nix::unistd::geteuid().as_raw());
        drop(c);
        // A second bind (an agent starting a shim again) replaces the stale socket file.
        drop(l);
        let _l = bind_socket(&task_dir).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// A shim of an earlier berth (no `ctl` directory) is reached by its abstract name, but a
    /// listener another user bound there is not trusted.
    #[test]
    fn legacy_abstract_socket_of_another_user_is_refused() {
        let base = std::env::temp_dir().join(format!("berth-shim-legacy-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let id = format!("legacy{}", std::process::id());
        let name = crate::shim::legacy_socket_name(&id);
        // A thread whose own credentials a raw setresuid changed (the kernel keeps them per
        // thread) binds and listens: the socket carries uid 65534.
        let l = std::thread::spawn(move || {
            // SAFETY: a raw system call changing only this thread's credentials.
            let r = unsafe {
                nix::libc::syscall(nix::libc::SYS_setresuid, 65534u32, 65534u32, 65534u32)
            };
            assert_eq!(r, 0);
            UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap()
        })
        .join()
        .unwrap();
        match connect_socket(&base, &id) {
            Err(e) => assert!(e.to_string().contains("uid 65534"), "{e}"),
            Ok(_) => panic!("connected to a shim socket owned by uid 65534"),
        }
        drop(l);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
