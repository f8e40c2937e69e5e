//! The agent's side of the agent protocol (`berth_api::agent`): registration with the join
//! token, assignment long polls, task state reports (ordered, coalesced, persisted, retried
//! until acknowledged) and batched log shipping, every call with the agent's credential.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use berth_api::agent::{
    Assignments, LogBatch, LogLine, MetricsBatch, RegisterRequest, RegisterResponse,
    TaskStateReport, CREDENTIAL_SCHEME,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{statefile, AgentConfig, AgentError};

/// Where a joined agent keeps its credential: `<data-dir>/credential` (mode 0600).
pub const CREDENTIAL_FILE: &str = "credential";

/// `<data-dir>/credential`: the credential and whom it was issued by and for.
#[derive(Serialize, Deserialize)]
struct SavedCredential {
    server: String,
    instance_id: String,
    credential: String,
}

#[derive(Clone)]
pub struct Control {
    pub client: reqwest::Client,
    pub base: String,
    credential: Arc<RwLock<String>>,
    /// Host paths (the agent's data directory) cut out of the reasons reported to the server,
    /// so API callers never learn the host's layout.
    redacted: Arc<Vec<String>>,
}

impl Control {
    pub fn new(client: reqwest::Client, server_url: &str, credential: String) -> Control {
        Control {
            client,
            base: server_url.trim_end_matches('/').to_string(),
            credential: Arc::new(RwLock::new(credential)),
            redacted: Arc::new(Vec::new()),
        }
    }

    fn authorization(&self) -> String {
        let c = self.credential.read().unwrap_or_else(|e| e.into_inner());
        format!("{CREDENTIAL_SCHEME} {c}")
    }

    /// Uses `credential` from now on (after registering again).
    pub fn set_credential(&self, credential: String) {
        *self.credential.write().unwrap_or_else(|e| e.into_inner()) = credential;
    }

    /// One long poll for assignments newer than `after`. A refused credential is
    /// [`AgentError::Unauthorized`].
    pub async fn assignments(
        &self,
        instance: &str,
        after: u64,
        wait: u64,
    ) -> Result<Assignments, AgentError> {
        let url = format!("{}/_berth/agent/assignments", self.base);
        let resp = self
            .client
            .get(&url)
            .header("authorization", self.authorization())
            .query(&[
                ("instance", instance),
                ("after", &after.to_string()),
                ("wait", &wait.to_string()),
            ])
            .timeout(Duration::from_secs(wait + 15))
            .send()
            .await?;
        let st = resp.status();
        if !st.is_success() {
            let body = resp.text().await.unwrap_or_default();
            if st == reqwest::StatusCode::UNAUTHORIZED {
                return Err(AgentError::Unauthorized(format!("GET {url}: {st}: {body}")));
            }
            return Err(AgentError::Control(format!("GET {url}: {st}: {body}")));
        }
        Ok(resp.json().await?)
    }

    /// POSTs `body` as JSON to `path`; on failure says whether a retry may help (connection
    /// errors, 5xx, and 401: the credential may be renewed meanwhile) and what happened.
    async fn post_json<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<(), (bool, String)> {
        let url = format!("{}{path}", self.base);
        match self
            .client
            .post(&url)
            .header("authorization", self.authorization())
            .json(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
        {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => {
                let st = resp.status();
                let body = resp.text().await.unwrap_or_default();
                let retry = st.is_server_error() || st == reqwest::StatusCode::UNAUTHORIZED;
                Err((retry, format!("POST {url}: {st}: {body}")))
            }
            Err(e) => Err((true, format!("POST {url}: {e}"))),
        }
    }

    /// Reports name no path under `dirs` (each written as `<dir>/` becomes empty, so
    /// `/var/lib/berth/agent/tasks/x/c0/rootfs` reads `tasks/x/c0/rootfs`).
    pub fn redacting(mut self, dirs: Vec<std::path::PathBuf>) -> Control {
        let mut v: Vec<String> = dirs
            .iter()
            .map(|d| d.to_string_lossy().trim_end_matches('/').to_string())
            .filter(|d| d.len() > 1)
            .collect();
        // Longest first, so a nested directory is cut before its parent.
        v.sort_by_key(|d| std::cmp::Reverse(d.len()));
        v.dedup();
        self.redacted = Arc::new(v);
        self
    }

    fn redact(&self, s: &str) -> String {
        let mut out = s.to_string();
        for d in self.redacted.iter() {
            out = out.replace(&format!("{d}/"), "").replace(d.as_str(), ".");
        }
        out
    }

    async fn post_report(&self, task_id: &str, r: &TaskStateReport) -> Result<(), (bool, String)> {
        let mut r = r.clone();
        if let Some(s) = &r.stopped_reason {
            r.stopped_reason = Some(self.redact(s));
        }
        for c in &mut r.containers {
            if let Some(s) = &c.reason {
                c.reason = Some(self.redact(s));
            }
        }
        self.post_json(&format!("/_berth/agent/tasks/{task_id}/state"), &r)
            .await
    }

    /// Posts utilization samples (`POST /_berth/agent/metrics`); not retried (the next
    /// interval brings fresh ones).
    pub async fn post_metrics(&self, batch: &MetricsBatch) -> Result<(), String> {
        self.post_json("/_berth/agent/metrics", batch)
            .await
            .map_err(|(_, m)| m)
    }

    async fn post_logs(&self, batch: &LogBatch) -> Result<(), (bool, String)> {
        self.post_json("/_berth/agent/logs", batch).await
    }
}

/// Registers `instance_id` with `join_token` (`POST /_berth/agent/register`) and saves the
/// credential in `<data_dir>/credential` (0600). Connection errors are retried (the server
/// may not be up yet); a refusal is an error that says why.
pub async fn register(
    client: &reqwest::Client,
    server_url: &str,
    data_dir: &Path,
    instance_id: &str,
    join_token: &str,
) -> Result<String, AgentError> {
    let base = server_url.trim_end_matches('/');
    let url = format!("{base}/_berth/agent/register");
    let mut backoff = Duration::from_millis(200);
    let resp = loop {
        match client
            .post(&url)
            .header("authorization", format!("{CREDENTIAL_SCHEME} {join_token}"))
            .json(&RegisterRequest {
                instance_id: instance_id.to_string(),
            })
            .timeout(Duration::from_secs(30))
            .send()
            .await
        {
            Ok(r) if !r.status().is_server_error() => break r,
            Ok(r) => tracing::warn!("registering with {base}: {}; retrying", r.status()),
            Err(e) => tracing::warn!("registering with {base}: {e}; retrying in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    };
    let st = resp.status();
    if !st.is_success() {
        let body = resp.text().await.unwrap_or_default();
        let why = match st.as_u16() {
            401 => "the join token is wrong (see `berth join-token` on the server)".to_string(),
            _ => body.trim().to_string(),
        };
        return Err(AgentError::Unauthorized(format!(
            "registering as {instance_id:?} with {base}: {st}: {why}"
        )));
    }
    let r: RegisterResponse = resp.json().await?;
    let saved = SavedCredential {
        server: base.to_string(),
        instance_id: instance_id.to_string(),
        credential: r.credential.clone(),
    };
    statefile::write_mode(
        &data_dir.join(CREDENTIAL_FILE),
        &serde_json::to_vec(&saved).map_err(std::io::Error::other)?,
        0o600,
    )?;
    tracing::info!(instance = %instance_id, "registered with {base}");
    Ok(r.credential)
}

/// The credential this agent calls the control plane with: the one it was given (the server's
/// embedded agent), else the one saved by an earlier registration with the same server and
/// instance id, else a new registration with the join token.
pub async fn credential(client: &reqwest::Client, cfg: &AgentConfig) -> Result<String, AgentError> {
    if let Some(c) = &cfg.credential {
        return Ok(c.clone());
    }
    let path = cfg.data_dir.join(CREDENTIAL_FILE);
    let saved: Option<SavedCredential> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(s) = saved {
        if s.instance_id == cfg.instance_id && s.server == cfg.server_url.trim_end_matches('/') {
            return Ok(s.credential);
        }
    }
    let Some(token) = &cfg.join_token else {
        return Err(AgentError::Preflight(format!(
            "this agent has no credential ({} is missing or for another server or instance id); start it with --join-token (or BERTH_JOIN_TOKEN) set to the server's join token (`berth join-token` on the server prints it)",
            path.display()
        )));
    };
    register(
        client,
        &cfg.server_url,
        &cfg.data_dir,
        &cfg.instance_id,
        token,
    )
    .await
}

/// Sends one task's state reports in order, each also persisted to the task's `report.json`
/// (so a restarted agent re-sends what may not have arrived). Reports are cumulative, so when
/// several are queued only the newest is sent; each is retried with backoff until the server
/// acknowledges it (or refuses it for good).
pub struct Reporter {
    tx: watch::Sender<Option<TaskStateReport>>,
    join: tokio::task::JoinHandle<()>,
}

impl Reporter {
    /// `file`: where each report is persisted while it is sent (`None`: not persisted).
    pub fn start(control: Control, task_id: String, file: Option<PathBuf>) -> Reporter {
        let (tx, mut rx) = watch::channel::<Option<TaskStateReport>>(None);
        let join = tokio::spawn(async move {
            loop {
                let report = rx.borrow_and_update().clone();
                if let Some(report) = report {
                    // Written and sent at once: whichever a crash interrupts, the restarted
                    // agent derives the state from the shim's files again and re-sends it
                    // (reports only move a task forward, so an older one is harmless).
                    let persist = async {
                        let Some(f) = file.clone() else { return };
                        let r = report.clone();
                        let written =
                            tokio::task::spawn_blocking(move || statefile::write_json(&f, &r))
                                .await;
                        if let Ok(Err(e)) = written {
                            tracing::debug!(task = %task_id, "cannot persist the state report: {e}");
                        }
                    };
                    let post = async {
                        let mut backoff = Duration::from_millis(50);
                        loop {
                            match control.post_report(&task_id, &report).await {
                                Ok(()) => break,
                                Err((retry, e)) => {
                                    tracing::warn!(task = %task_id, "state report failed: {e}");
                                    if !retry {
                                        break;
                                    }
                                    // A newer report replaces this one.
                                    if rx.has_changed().unwrap_or(false) {
                                        break;
                                    }
                                    tokio::time::sleep(backoff).await;
                                    backoff = (backoff * 2).min(Duration::from_secs(5));
                                }
                            }
                        }
                    };
                    tokio::join!(persist, post);
                    if report.last_status.is_terminal() && !rx.has_changed().unwrap_or(false) {
                        return;
                    }
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        Reporter { tx, join }
    }

    pub fn send(&self, r: TaskStateReport) {
        let _ = self.tx.send(Some(r));
    }

    /// Sends the final report and waits until it is delivered (or refused).
    pub async fn finish(self, r: TaskStateReport) {
        let _ = self.tx.send(Some(r));
        drop(self.tx);
        let _ = self.join.await;
    }
}

enum LogMsg {
    Line(LogLine),
    Flush(oneshot::Sender<()>),
}

/// Batches log lines from every container and posts them at least every 200 ms.
#[derive(Clone)]
pub struct LogShipper {
    tx: mpsc::UnboundedSender<LogMsg>,
}

const FLUSH_EVERY: Duration = Duration::from_millis(200);
const MAX_BATCH: usize = 1000;

impl LogShipper {
    pub fn start(control: Control) -> LogShipper {
        let (tx, mut rx) = mpsc::unbounded_channel::<LogMsg>();
        tokio::spawn(async move {
            let mut batch: Vec<LogLine> = Vec::new();
            let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
            let mut deadline: Option<tokio::time::Instant> = None;
            loop {
                let msg = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                        Ok(m) => m,
                        Err(_) => {
                            ship(&control, &mut batch).await;
                            deadline = None;
                            continue;
                        }
                    },
                    None => rx.recv().await,
                };
                let Some(msg) = msg else {
                    ship(&control, &mut batch).await;
                    return;
                };
                match msg {
                    LogMsg::Line(l) => {
                        batch.push(l);
                        if deadline.is_none() {
                            deadline = Some(tokio::time::Instant::now() + FLUSH_EVERY);
                        }
                    }
                    LogMsg::Flush(w) => waiters.push(w),
                }
                // Take whatever else is already queued before deciding to ship.
                while let Ok(m) = rx.try_recv() {
                    match m {
                        LogMsg::Line(l) => batch.push(l),
                        LogMsg::Flush(w) => waiters.push(w),
                    }
                    if batch.len() >= MAX_BATCH {
                        break;
                    }
                }
                if !waiters.is_empty() || batch.len() >= MAX_BATCH {
                    ship(&control, &mut batch).await;
                    deadline = None;
                    for w in waiters.drain(..) {
                        let _ = w.send(());
                    }
                }
            }
        });
        LogShipper { tx }
    }

    pub fn line(&self, l: LogLine) {
        let _ = self.tx.send(LogMsg::Line(l));
    }

    /// Returns once every line sent before this call has been posted (or given up on).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(LogMsg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn ship(control: &Control, batch: &mut Vec<LogLine>) {
    if batch.is_empty() {
        return;
    }
    let b = LogBatch {
        events: std::mem::take(batch),
    };
    let mut backoff = Duration::from_millis(50);
    for _ in 0..6 {
        match control.post_logs(&b).await {
            Ok(()) => return,
            Err((retry, e)) => {
                tracing::warn!("log shipping failed: {e}");
                if !retry {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
    tracing::warn!("dropped {} log events", b.events.len());
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn reasons_name_no_host_paths() {
        let c = Control::new(reqwest::Client::new(), "http://127.0.0.1:1", String::new())
            .redacting(vec![
                "/srv/data/agent".into(),
                "/srv/data/agent/".into(),
                "/".into(),
            ]);
        assert_eq!(
            c.redact("CannotStartContainerError: open /srv/data/agent/tasks/t1/c0/rootfs/x: EPERM"),
            "CannotStartContainerError: open tasks/t1/c0/rootfs/x: EPERM"
        );
        assert_eq!(c.redact("cwd /srv/data/agent"), "cwd .");
        assert_eq!(c.redact("no paths here"), "no paths here");
    }
}
