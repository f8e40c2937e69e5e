//! Driving the OCI runtime binary (crun, runc) from the agent: `delete -f` at cleanup (the
//! per-task shim, `crate::shim`, runs `run --detach`; health checks run `exec`).

use std::process::Stdio;

use tokio::process::Command;

use crate::AgentError;

#[derive(Debug, Clone)]
pub struct Runtime {
    pub bin: String,
}

impl Runtime {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
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
