//! The per-task shim (`berth shim <task-dir> <runtime>`, DESIGN §5). One small single-threaded
//! process per task, started by the agent in a session of its own, so the task's containers
//! keep running (and their output keeps being recorded) when the agent or the whole server is
//! killed. It:
//! - is the child subreaper of the task's containers: it runs `<runtime> run --detach` for
//!   each container on request, and the container's pid 1 becomes its child;
//! - owns each container's stdout and stderr (pipes) and appends every line to
//!   `c<idx>/log` as `<epoch ms> <1|2> <line>\n` (lines longer than 256 KiB are split);
//! - waits for each pid 1 and records `c<idx>/exit` (`{"code": 137, "oom": true}`, written to a
//!   temporary file and renamed) once the container's output reached end of file, reading the
//!   container cgroup's OOM-kill counter at that moment.
//!
//! The agent talks to it over a Unix stream socket (abstract name `berth-shim-<task-id>`, the
//! listening socket handed to the shim as its stdin), one JSON object per line:
//! - requests: `{"op":"start","idx":0,"id":"berth-..","bundle":"/..","oom":["/sys/fs/cgroup/.."]}`,
//!   `{"op":"kill","idx":0,"sig":15}`, `{"op":"bye"}` (the shim exits);
//! - events: `{"ev":"started","idx":0,"pid":123}` or `{"ev":"started","idx":0,"error":".."}`,
//!   `{"ev":"log","idx":0}` (new lines in `c0/log`), `{"ev":"exit","idx":0,"code":0,"oom":false}`.
//!
//! A new connection replaces the previous one; what happened while nobody was connected is on
//! disk (`c<idx>/pid`, `c<idx>/exit`, `c<idx>/log`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::libc;
use serde::{Deserialize, Serialize};

/// Longest log line; longer lines are split.
pub const MAX_LINE: usize = 256 * 1024;
/// How long after pid 1 exits the shim waits for the output pipes to reach end of file.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// A request from the agent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Start {
        idx: usize,
        id: String,
        bundle: PathBuf,
        #[serde(default)]
        oom: Vec<PathBuf>,
    },
    Kill {
        idx: usize,
        sig: i32,
    },
    Bye,
}

/// An event from the shim.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "ev", rename_all = "lowercase")]
pub enum Event {
    Started {
        idx: usize,
        #[serde(default)]
        pid: Option<i32>,
        #[serde(default)]
        error: Option<String>,
    },
    Log {
        idx: usize,
    },
    Exit(ExitRecord),
}

/// `c<idx>/exit`: how a container ended.
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

/// The shim's abstract socket name for a task.
pub fn socket_name(task_id: &str) -> String {
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

/// True when `oom_control`/`memory.events` text records at least one OOM kill.
pub fn oom_killed(text: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix("oom_kill ")
            .and_then(|n| n.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    })
}

struct Stream {
    fd: OwnedFd,
    partial: Vec<u8>,
}

struct Ctr {
    idx: usize,
    dir: PathBuf,
    log: File,
    streams: [Option<Stream>; 2],
    runtime_pid: Option<i32>,
    pid: Option<i32>,
    status: Option<i32>,
    exited_at: Option<Instant>,
    oom_files: Vec<PathBuf>,
    done: bool,
}

struct Shim {
    task_dir: PathBuf,
    runtime: String,
    client: Option<UnixStream>,
    inbuf: Vec<u8>,
    ctrs: HashMap<usize, Ctr>,
    /// Statuses of children reaped before their pid was known.
    unclaimed: HashMap<i32, i32>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors from pipe2.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn write_atomic(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, data).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

impl Shim {
    fn send(&mut self, ev: &Event) {
        let Some(c) = &mut self.client else { return };
        let mut line = serde_json::to_vec(ev).unwrap_or_default();
        line.push(b'\n');
        if c.write_all(&line).is_err() {
            self.client = None;
        }
    }

    fn start(&mut self, idx: usize, id: String, bundle: PathBuf, oom: Vec<PathBuf>) {
        let dir = container_dir(&self.task_dir, idx);
        let r = (|| -> std::io::Result<Ctr> {
            std::fs::create_dir_all(&dir)?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("log"))?;
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let child = std::process::Command::new(&self.runtime)
                .arg(format!("--log={}", dir.join("runtime.log").display()))
                .arg("run")
                .arg("--detach")
                .arg("--pid-file")
                .arg(dir.join("pid"))
                .arg("--bundle")
                .arg(&bundle)
                .arg(&id)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::from(out_w))
                .stderr(std::process::Stdio::from(err_w))
                .spawn()?;
            for fd in [&out_r, &err_r] {
                // SAFETY: valid fd; O_NONBLOCK for poll-driven reads.
                unsafe {
                    let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
                    libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
                }
            }
            let runtime_pid = child.id() as i32;
            // The child is reaped by waitpid(-1) in the main loop, not through `Child`.
            std::mem::forget(child);
            Ok(Ctr {
                idx,
                dir: dir.clone(),
                log,
                streams: [
                    Some(Stream {
                        fd: out_r,
                        partial: Vec::new(),
                    }),
                    Some(Stream {
                        fd: err_r,
                        partial: Vec::new(),
                    }),
                ],
                runtime_pid: Some(runtime_pid),
                pid: None,
                status: None,
                exited_at: None,
                oom_files: oom,
                done: false,
            })
        })();
        match r {
            Ok(c) => {
                self.ctrs.insert(idx, c);
            }
            Err(e) => self.send(&Event::Started {
                idx,
                pid: None,
                error: Some(format!("cannot run {}: {e}", self.runtime)),
            }),
        }
    }

    fn handle_line(&mut self, line: &[u8]) -> bool {
        match serde_json::from_slice::<Request>(line) {
            Ok(Request::Start {
                idx,
                id,
                bundle,
                oom,
            }) => self.start(idx, id, bundle, oom),
            Ok(Request::Kill { idx, sig }) => {
                if let Some(c) = self.ctrs.get(&idx) {
                    if let (Some(pid), None) = (c.pid, c.status) {
                        // SAFETY: pid is our unreaped child, so it cannot have been reused.
                        unsafe { libc::kill(pid, sig) };
                    }
                }
            }
            Ok(Request::Bye) => return false,
            Err(_) => {}
        }
        true
    }

    fn read_client(&mut self) -> bool {
        let Some(c) = &mut self.client else {
            return true;
        };
        let mut buf = [0u8; 8192];
        match c.read(&mut buf) {
            Ok(0) | Err(_) => {
                self.client = None;
                self.inbuf.clear();
                return true;
            }
            Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
        }
        while let Some(p) = self.inbuf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.inbuf.drain(..=p).collect();
            if !self.handle_line(&line[..line.len() - 1]) {
                return false;
            }
        }
        true
    }

    /// Reads what is available on one output stream and appends complete lines to the log.
    /// Returns true when something was written.
    fn read_stream(&mut self, idx: usize, s: usize) -> bool {
        let Some(c) = self.ctrs.get_mut(&idx) else {
            return false;
        };
        let mut out = Vec::new();
        let mut eof = false;
        if let Some(st) = &mut c.streams[s] {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                // SAFETY: reading into a buffer we own.
                let n = unsafe {
                    libc::read(
                        st.fd.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                    )
                };
                if n > 0 {
                    st.partial.extend_from_slice(&buf[..n as usize]);
                    if (n as usize) < buf.len() {
                        break;
                    }
                    continue;
                }
                if n == 0 {
                    eof = true;
                    break;
                }
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    eof = true;
                }
                break;
            }
            let ts = now_ms();
            let tag = if s == 0 { b'1' } else { b'2' };
            let frame = |line: &[u8], out: &mut Vec<u8>| {
                out.extend_from_slice(format!("{ts} ").as_bytes());
                out.push(tag);
                out.push(b' ');
                out.extend_from_slice(line);
                out.push(b'\n');
            };
            let mut start = 0;
            while let Some(p) = st.partial[start..].iter().position(|b| *b == b'\n') {
                let end = start + p;
                let mut line = &st.partial[start..end];
                while line.len() > MAX_LINE {
                    frame(&line[..MAX_LINE], &mut out);
                    line = &line[MAX_LINE..];
                }
                frame(line, &mut out);
                start = end + 1;
            }
            st.partial.drain(..start);
            while st.partial.len() > MAX_LINE {
                let head: Vec<u8> = st.partial.drain(..MAX_LINE).collect();
                frame(&head, &mut out);
            }
            if eof && !st.partial.is_empty() {
                let rest = std::mem::take(&mut st.partial);
                frame(&rest, &mut out);
            }
        }
        if eof {
            c.streams[s] = None;
        }
        if out.is_empty() {
            return false;
        }
        let _ = c.log.write_all(&out);
        true
    }

    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: plain waitpid on any child, non-blocking.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
            if pid <= 0 {
                return;
            }
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                continue;
            };
            self.on_reaped(pid, code);
        }
    }

    fn on_reaped(&mut self, pid: i32, code: i32) {
        let mut started = None;
        for c in self.ctrs.values_mut() {
            if c.runtime_pid == Some(pid) {
                c.runtime_pid = None;
                if code == 0 {
                    match read_pid(&self.task_dir, c.idx) {
                        Some(p) => {
                            c.pid = Some(p);
                            started = Some(Event::Started {
                                idx: c.idx,
                                pid: Some(p),
                                error: None,
                            });
                        }
                        None => {
                            started = Some(Event::Started {
                                idx: c.idx,
                                pid: None,
                                error: Some("the runtime wrote no pid file".into()),
                            });
                            c.done = true;
                        }
                    }
                } else {
                    let log =
                        std::fs::read_to_string(c.dir.join("runtime.log")).unwrap_or_default();
                    let msg = runtime_error(&log);
                    started = Some(Event::Started {
                        idx: c.idx,
                        pid: None,
                        error: Some(format!("{} run exited with {code}: {msg}", self.runtime)),
                    });
                    c.streams = [None, None];
                    c.done = true;
                }
                break;
            }
            if c.pid == Some(pid) {
                c.status = Some(code);
                c.exited_at = Some(Instant::now());
                return;
            }
        }
        match started {
            Some(ev) => {
                let claimed = match &ev {
                    Event::Started {
                        idx, pid: Some(p), ..
                    } => self.unclaimed.remove(p).map(|code| (*idx, code)),
                    _ => None,
                };
                self.send(&ev);
                if let Some((idx, code)) = claimed {
                    if let Some(c) = self.ctrs.get_mut(&idx) {
                        c.status = Some(code);
                        c.exited_at = Some(Instant::now());
                    }
                }
            }
            None => {
                self.unclaimed.insert(pid, code);
            }
        }
    }

    /// Containers whose pid 1 exited and whose output is drained (or waited for long enough)
    /// get their exit record.
    fn finish_exits(&mut self) {
        let mut evs = Vec::new();
        for c in self.ctrs.values_mut() {
            let (Some(code), Some(at)) = (c.status, c.exited_at) else {
                continue;
            };
            if c.done {
                continue;
            }
            if c.streams.iter().any(|s| s.is_some()) && at.elapsed() < DRAIN_WAIT {
                continue;
            }
            c.streams = [None, None];
            let oom = c
                .oom_files
                .iter()
                .any(|f| std::fs::read_to_string(f).is_ok_and(|t| oom_killed(&t)));
            let rec = ExitRecord {
                idx: c.idx,
                code,
                oom,
            };
            write_atomic(
                &c.dir.join("exit"),
                &serde_json::to_vec(&rec).unwrap_or_default(),
            );
            c.done = true;
            evs.push(Event::Exit(rec));
        }
        for e in evs {
            self.send(&e);
        }
    }
}

/// The last error message in a runtime log (crun: text lines; runc: `--log` text or JSON).
fn runtime_error(log: &str) -> String {
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

/// Entry point of `berth shim <task-dir> <runtime>`; stdin is the listening socket. Returns
/// the process exit code.
pub fn main(args: &[String]) -> i32 {
    let (Some(task_dir), Some(runtime)) = (args.first(), args.get(1)) else {
        eprintln!("usage: berth shim <task-dir> <runtime> (started by the berth agent)");
        return 2;
    };
    let _ = nix::sys::prctl::set_child_subreaper(true);
    // SAFETY: fd 0 is the listening socket the agent handed over.
    let listener = unsafe { UnixListener::from_raw_fd(0) };
    let _ = listener.set_nonblocking(true);
    // SIGCHLD through a signalfd. SIGHUP/SIGINT/SIGTERM are blocked too (only the agent ends
    // a shim); blocking, unlike ignoring, is not inherited by the runtime and containers
    // (std's spawn resets the signal mask).
    let mut mask = nix::sys::signal::SigSet::empty();
    for s in [
        nix::sys::signal::Signal::SIGCHLD,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        mask.add(s);
    }
    let _ = mask.thread_block();
    let mut chld = nix::sys::signal::SigSet::empty();
    chld.add(nix::sys::signal::Signal::SIGCHLD);
    let sfd = match nix::sys::signalfd::SignalFd::with_flags(
        &chld,
        nix::sys::signalfd::SfdFlags::SFD_NONBLOCK | nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("signalfd: {e}");
            return 1;
        }
    };
    let mut shim = Shim {
        task_dir: PathBuf::from(task_dir),
        runtime: runtime.clone(),
        client: None,
        inbuf: Vec::new(),
        ctrs: HashMap::new(),
        unclaimed: HashMap::new(),
    };
    loop {
        // What to poll: listener, signalfd, client, every open output stream.
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(8);
        let mut what: Vec<(u8, usize, usize)> = Vec::with_capacity(8);
        let mut add = |fd: RawFd, kind: u8, idx: usize, s: usize| {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            what.push((kind, idx, s));
        };
        add(listener.as_raw_fd(), 0, 0, 0);
        add(sfd.as_raw_fd(), 1, 0, 0);
        if let Some(c) = &shim.client {
            add(c.as_raw_fd(), 2, 0, 0);
        }
        let mut waiting_drain = false;
        for c in shim.ctrs.values() {
            for (s, st) in c.streams.iter().enumerate() {
                if let Some(st) = st {
                    add(st.fd.as_raw_fd(), 3, c.idx, s);
                }
            }
            waiting_drain |= c.status.is_some() && !c.done;
        }
        let timeout = if waiting_drain { 100 } else { -1 };
        // SAFETY: fds is a valid array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return 1;
        }
        let mut logged = Vec::new();
        for (p, (kind, idx, s)) in fds.iter().zip(what) {
            if p.revents == 0 {
                continue;
            }
            match kind {
                0 => {
                    while let Ok((c, _)) = listener.accept() {
                        let _ = c.set_nonblocking(false);
                        shim.client = Some(c);
                        shim.inbuf.clear();
                    }
                }
                1 => {
                    while let Ok(Some(_)) = sfd.read_signal() {}
                    shim.reap();
                }
                2 => {
                    if !shim.read_client() {
                        return 0;
                    }
                }
                _ => {
                    if shim.read_stream(idx, s) && !logged.contains(&idx) {
                        logged.push(idx);
                    }
                }
            }
        }
        for idx in logged {
            shim.send(&Event::Log { idx });
        }
        shim.finish_exits();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_shapes() {
        let r: Request =
            serde_json::from_str(r#"{"op":"start","idx":1,"id":"x","bundle":"/b"}"#).unwrap();
        assert!(matches!(r, Request::Start { idx: 1, .. }));
        let e = serde_json::to_string(&Event::Exit(ExitRecord {
            idx: 0,
            code: 137,
            oom: true,
        }))
        .unwrap();
        assert_eq!(e, r#"{"ev":"exit","idx":0,"code":137,"oom":true}"#);
        assert_eq!(
            serde_json::from_str::<Event>(r#"{"ev":"log","idx":2}"#).unwrap(),
            Event::Log { idx: 2 }
        );
    }

    #[test]
    fn oom_counters() {
        assert!(oom_killed("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"));
        assert!(!oom_killed("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"));
        assert!(oom_killed("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n"));
        assert!(!oom_killed(""));
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
