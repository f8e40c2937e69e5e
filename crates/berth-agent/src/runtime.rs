//! Driving the OCI runtime binary (crun, runc) from the agent: `delete -f` at cleanup (the
//! per-task shim, `crate::shim`, runs `run --detach`; health checks run `exec`).
//!
//! The runtime is executed from a sealed in-memory copy of its binary when one can be made
//! (runc's `memfd-bind` approach): crun and runc protect themselves against CVE-2019-5736 by
//! copying their own binary and re-executing the copy on every invocation unless
//! `/proc/self/exe` already is a sealed memfd, which costs ~1 ms per container start here. One
//! copy (about 0.5 MiB) serves every invocation; a runtime upgraded on disk is picked up when
//! the agent restarts.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;

use tokio::process::Command;

use crate::AgentError;

#[derive(Debug, Clone)]
pub struct Runtime {
    /// The runtime as configured (`crun`, `/usr/bin/runc`), used in messages.
    pub bin: String,
    /// What to execute: the sealed copy (`/proc/<agent pid>/fd/<n>`) or else `bin`.
    pub exe: String,
    /// Keeps the sealed copy open for as long as the runtime is in use.
    sealed: Option<Arc<OwnedFd>>,
}

impl Runtime {
    /// The runtime `bin` (a name looked up in `$PATH`, or a path), executed from a sealed copy
    /// when one can be made.
    pub fn new(bin: &str) -> Runtime {
        match crate::find_in_path(bin).and_then(|p| sealed_copy(&p).ok()) {
            Some(fd) => Runtime {
                bin: bin.to_string(),
                exe: format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd()),
                sealed: Some(Arc::new(fd)),
            },
            None => Runtime {
                bin: bin.to_string(),
                exe: bin.to_string(),
                sealed: None,
            },
        }
    }

    /// The sealed copy's `/proc/<pid>/fd/<n>` path, when there is one.
    pub fn sealed_path(&self) -> Option<&str> {
        self.sealed.as_ref().map(|_| self.exe.as_str())
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.exe);
        c.stdin(Stdio::null()).kill_on_drop(false);
        c
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

/// A memfd holding `path`'s bytes, sealed against every change (the seals crun and runc check
/// for: seal, shrink, grow, write).
fn sealed_copy(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    use nix::libc;
    let data = std::fs::read(path)?;
    // SAFETY: a NUL-terminated name; flags are valid.
    let fd = unsafe {
        libc::memfd_create(
            c"berth-runtime".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut f = std::fs::File::from(fd);
    std::io::Write::write_all(&mut f, &data)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our memfd.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(OwnedFd::from(f))
}
