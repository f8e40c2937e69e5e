//! The per-task shim (DESIGN §5): one small process per task, started by the agent in a
//! session of its own, so the task's containers keep running (and their output keeps being
//! recorded) when the agent or the whole server is killed. It is the child subreaper of the
//! task's containers (it runs `<runtime> run --detach` for each on request), owns their stdout
//! and stderr (appended to `c<idx>/log` as `<epoch ms> <1|2> <line>\n`), and records each
//! container's end in `c<idx>/exit`.
//!
//! The shim is `shim/main.rs`, a freestanding program (no libc, no std) that `build.rs`
//! compiles to a static executable of a few KiB; this module embeds it ([`BINARY`]), installs
//! it under the agent's data directory ([`install`]) and speaks its line protocol (described in
//! `shim/main.rs`): [`Request`] lines out, [`Event`] lines in.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The shim executable (static, x86-64 Linux), built by `build.rs` from `shim/main.rs`.
pub const BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-shim"));

/// Writes [`BINARY`] to `<dir>/berth-shim-<12 hex digits of its sha256>` (mode 0755) unless it
/// is already there, atomically (temporary file, fsync, rename), and returns the path. Shims of
/// an older berth keep running from their own file.
pub fn install(dir: &Path) -> std::io::Result<PathBuf> {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(BINARY));
    let path = dir.join(format!("berth-shim-{}", &hash[..12]));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == BINARY.len() as u64) {
        return Ok(path);
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".berth-shim-{}.{}",
        &hash[..12],
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(BINARY)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// A request from the agent to the shim.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Run container `idx` (`<runtime> run --detach --bundle <bundle> <id>`); `oom` are the
    /// cgroup files (`memory.oom_control` / `memory.events`) read for its OOM-kill counter.
    Start {
        idx: usize,
        id: String,
        bundle: PathBuf,
        oom: Vec<PathBuf>,
    },
    /// Send signal `sig` to container `idx`'s pid 1.
    Kill { idx: usize, sig: i32 },
    /// End the shim.
    Bye,
}

impl Request {
    /// The request as one protocol line (with its newline). Fails on a field the line format
    /// cannot carry (a tab or newline in an id or path).
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        fn field(out: &mut Vec<u8>, f: &[u8]) -> Result<(), String> {
            if f.is_empty() || f.iter().any(|b| matches!(b, b'\t' | b'\n' | 0)) {
                return Err(format!(
                    "cannot pass {:?} to the shim (empty, or a tab, newline or NUL in it)",
                    String::from_utf8_lossy(f)
                ));
            }
            out.push(b'\t');
            out.extend_from_slice(f);
            Ok(())
        }
        use std::os::unix::ffi::OsStrExt;
        let mut out = Vec::new();
        match self {
            Request::Start {
                idx,
                id,
                bundle,
                oom,
            } => {
                out.extend_from_slice(b"start");
                field(&mut out, idx.to_string().as_bytes())?;
                field(&mut out, id.as_bytes())?;
                field(&mut out, bundle.as_os_str().as_bytes())?;
                for f in oom {
                    field(&mut out, f.as_os_str().as_bytes())?;
                }
            }
            Request::Kill { idx, sig } => {
                out.extend_from_slice(b"kill");
                field(&mut out, idx.to_string().as_bytes())?;
                field(&mut out, sig.to_string().as_bytes())?;
            }
            Request::Bye => out.extend_from_slice(b"bye"),
        }
        out.push(b'\n');
        Ok(out)
    }
}

/// An event from the shim.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Container `idx` runs as `pid`.
    Started { idx: usize, pid: i32 },
    /// Container `idx` could not be started (the runtime's log: `c<idx>/runtime.log`).
    Failed { idx: usize, message: String },
    /// New lines in `c<idx>/log`.
    Log { idx: usize },
    /// Container `idx` ended.
    Exit(ExitRecord),
}

impl Event {
    /// Parses one event line (without its newline); `None` for anything else.
    pub fn parse(line: &str) -> Option<Event> {
        let f: Vec<&str> = line.split('\t').collect();
        let idx = || f.get(1)?.parse::<usize>().ok();
        match *f.first()? {
            "started" if f.len() == 3 => Some(Event::Started {
                idx: idx()?,
                pid: f[2].parse().ok()?,
            }),
            "failed" if f.len() >= 2 => Some(Event::Failed {
                idx: idx()?,
                message: f[2..].join("\t"),
            }),
            "log" if f.len() == 2 => Some(Event::Log { idx: idx()? }),
            "exit" if f.len() == 4 => Some(Event::Exit(ExitRecord {
                idx: idx()?,
                code: f[2].parse().ok()?,
                oom: match f[3] {
                    "1" => true,
                    "0" => false,
                    _ => return None,
                },
            })),
            _ => None,
        }
    }
}

/// `c<idx>/exit`: how a container ended (JSON, written by the shim).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct ExitRecord {
    pub idx: usize,
    /// Shell-style: the exit status, or 128 + signal.
    pub code: i32,
    /// The container's cgroup recorded an OOM kill.
    pub oom: bool,
}

/// `<task_dir>/c<idx>`.
pub fn container_dir(task_dir: &Path, idx: usize) -> PathBuf {
    task_dir.join(format!("c{idx}"))
}

/// The directory of a task's shim socket, `<task_dir>/ctl` (mode 0700: only root reaches the
/// socket through it).
pub fn socket_dir(task_dir: &Path) -> PathBuf {
    task_dir.join(SOCKET_DIR)
}

/// Name of [`socket_dir`] inside the task directory.
pub const SOCKET_DIR: &str = "ctl";
/// File name of the shim's listening socket (mode 0600) in [`socket_dir`].
pub const SOCKET_FILE: &str = "shim.sock";

/// The abstract socket name shims of berth before the path socket listened on. Only connected
/// to (never bound) for a shim that has no socket file, and only when its peer runs as root.
pub fn legacy_socket_name(task_id: &str) -> String {
    format!("berth-shim-{task_id}")
}

/// Reads `c<idx>/exit` if the container has ended.
pub fn read_exit(task_dir: &Path, idx: usize) -> Option<ExitRecord> {
    let b = std::fs::read(container_dir(task_dir, idx).join("exit")).ok()?;
    serde_json::from_slice(&b).ok()
}

/// Reads the pid 1 recorded by the runtime in `c<idx>/pid`.
pub fn read_pid(task_dir: &Path, idx: usize) -> Option<i32> {
    std::fs::read_to_string(container_dir(task_dir, idx).join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The last error message in a runtime log (crun: text lines; runc: `--log` text or JSON).
pub fn runtime_error(log: &str) -> String {
    let last = log
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(last) {
        if let Some(m) = v.get("msg").and_then(|m| m.as_str()) {
            return m.to_string();
        }
    }
    last.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let r = Request::Start {
            idx: 1,
            id: "berth-t-app".into(),
            bundle: "/d/tasks/t/c1".into(),
            oom: vec!["/sys/fs/cgroup/memory/x/memory.oom_control".into()],
        };
        assert_eq!(
            r.encode().unwrap(),
            b"start\t1\tberth-t-app\t/d/tasks/t/c1\t/sys/fs/cgroup/memory/x/memory.oom_control\n"
        );
        assert_eq!(
            Request::Kill { idx: 0, sig: 15 }.encode().unwrap(),
            b"kill\t0\t15\n"
        );
        assert_eq!(Request::Bye.encode().unwrap(), b"bye\n");
        let bad = Request::Start {
            idx: 0,
            id: "x".into(),
            bundle: "/a\tb".into(),
            oom: vec![],
        };
        assert!(bad.encode().is_err());
    }

    #[test]
    fn events() {
        assert_eq!(
            Event::parse("started\t0\t4242"),
            Some(Event::Started { idx: 0, pid: 4242 })
        );
        assert_eq!(
            Event::parse("exit\t2\t137\t1"),
            Some(Event::Exit(ExitRecord {
                idx: 2,
                code: 137,
                oom: true
            }))
        );
        assert_eq!(Event::parse("log\t3"), Some(Event::Log { idx: 3 }));
        assert_eq!(
            Event::parse("failed\t0\tthe runtime exited with 1"),
            Some(Event::Failed {
                idx: 0,
                message: "the runtime exited with 1".into()
            })
        );
        assert_eq!(Event::parse("exit\t2\t137"), None);
        assert_eq!(Event::parse("started\tx\t1"), None);
        assert_eq!(Event::parse(""), None);
    }

    #[test]
    fn exit_record_file() {
        // The shim writes this JSON by hand; the agent reads it with serde.
        let r: ExitRecord = serde_json::from_str(r#"{"idx":0,"code":137,"oom":true}"#).unwrap();
        assert_eq!(
            r,
            ExitRecord {
                idx: 0,
                code: 137,
                oom: true
            }
        );
    }

    #[test]
    fn embedded_binary_is_a_static_executable() {
        assert_eq!(&BINARY[..4], b"\x7fELF");
        assert!(BINARY.len() < 256 * 1024, "{} bytes", BINARY.len());
        let dir = std::env::temp_dir().join(format!("berth-shim-install-{}", std::process::id()));
        let p = install(&dir).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), BINARY);
        assert_eq!(install(&dir).unwrap(), p);
        // Without the agent's arguments it prints its usage and exits 2.
        let out = std::process::Command::new(&p).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage: berth-shim"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The shim answers only root (or its own user) and runs only the task's own bundles. Its
    /// listening socket here is world-writable, so that nothing but the shim's own check
    /// (`SO_PEERCRED`) stands between another user and it.
    #[test]
    fn shim_refuses_other_users_and_foreign_bundles() {
        use std::io::{BufRead, BufReader, Read};
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::time::Duration;
        assert!(
            nix::unistd::geteuid().is_root(),
            "run the agent's tests as root"
        );
        let base = std::env::temp_dir().join(format!("berth-shim-peer-{}", std::process::id()));
        let task_dir = base.join("task");
        std::fs::create_dir_all(&task_dir).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sock = base.join("open.sock");
        let l = UnixListener::bind(&sock).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
        let bin = install(&base.join("bin")).unwrap();
        let mut child = std::process::Command::new(&bin)
            .arg("shim")
            .arg(&task_dir)
            .arg("/bin/true")
            .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(l)))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(base.join("shim.log")).unwrap())
            .spawn()
            .unwrap();
        // The shim blocks SIGTERM: a failing test kills it with SIGKILL.
        struct Reap(u32);
        impl Drop for Reap {
            fn drop(&mut self) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.0 as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let reap = Reap(child.id());
        let mut agent = UnixStream::connect(&sock).unwrap();
        agent
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut events = BufReader::new(agent.try_clone().unwrap());
        let foreign = format!("start\t0\tberth-x\t{}\n", base.display());
        let mut refused = |agent: &mut UnixStream| {
            agent.write_all(foreign.as_bytes()).unwrap();
            let mut line = String::new();
            events.read_line(&mut line).unwrap();
            assert_eq!(
                line, "failed\t0\trefused: the bundle is not this task's own\n",
                "the shim ran a bundle outside its task"
            );
        };
        refused(&mut agent);

        // Another user (a thread whose own credentials a raw setresuid changed: the kernel
        // keeps credentials per thread) connects and asks for a start.
        let (sock2, own) = (sock.clone(), task_dir.join("c1"));
        let got = std::thread::spawn(move || {
            // SAFETY: a raw system call changing only this thread's credentials.
            let r = unsafe {
                nix::libc::syscall(nix::libc::SYS_setresuid, 65534u32, 65534u32, 65534u32)
            };
            assert_eq!(r, 0, "setresuid: {}", std::io::Error::last_os_error());
            let mut s = UnixStream::connect(&sock2).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = s.write_all(format!("start\t1\tberth-x\t{}\n", own.display()).as_bytes());
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
        .join()
        .unwrap();
        assert_eq!(got, "", "the shim answered uid 65534");
        // The agent's connection was not disturbed.
        refused(&mut agent);
        agent.write_all(b"bye\n").unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(0));
        std::mem::forget(reap);
        let log = std::fs::read_to_string(base.join("shim.log")).unwrap();
        assert!(log.contains("refused a connection from uid 65534"), "{log}");
        assert!(!task_dir.join("c1").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn runtime_errors() {
        assert_eq!(
            runtime_error("{\"level\":\"error\",\"msg\":\"exec: no such file\"}\n"),
            "exec: no such file"
        );
        assert_eq!(
            runtime_error("a\nexecutable file not found\n\n"),
            "executable file not found"
        );
    }
}
