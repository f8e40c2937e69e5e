//! The agent's side of the agent protocol (`berth_api::agent`): assignment long polls, task
//! state reports (ordered, coalesced, retried) and batched log shipping.

use std::time::Duration;

use berth_api::agent::{Assignments, LogBatch, LogLine, MetricsBatch, TaskStateReport};
use tokio::sync::{mpsc, oneshot, watch};

use crate::AgentError;

#[derive(Clone)]
pub struct Control {
    pub client: reqwest::Client,
    pub base: String,
}

impl Control {
    pub fn new(client: reqwest::Client, server_url: &str) -> Control {
        Control {
            client,
            base: server_url.trim_end_matches('/').to_string(),
        }
    }

    /// One long poll for assignments newer than `after`.
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
            return Err(AgentError::Control(format!("GET {url}: {st}: {body}")));
        }
        Ok(resp.json().await?)
    }

    /// POSTs `body` as JSON to `path`; on failure says whether a retry may help (connection
    /// errors and 5xx) and what happened.
    async fn post_json<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<(), (bool, String)> {
        let url = format!("{}{path}", self.base);
        match self
            .client
            .post(&url)
            .json(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
        {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => {
                let st = resp.status();
                let body = resp.text().await.unwrap_or_default();
                Err((st.is_server_error(), format!("POST {url}: {st}: {body}")))
            }
            Err(e) => Err((true, format!("POST {url}: {e}"))),
        }
    }

    async fn post_report(&self, task_id: &str, r: &TaskStateReport) -> Result<(), (bool, String)> {
        self.post_json(&format!("/_berth/agent/tasks/{task_id}/state"), r)
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

/// Sends one task's state reports in order. Reports are cumulative, so when several are
/// queued only the newest is sent; each is retried with backoff while the server is away.
pub struct Reporter {
    tx: watch::Sender<Option<TaskStateReport>>,
    join: tokio::task::JoinHandle<()>,
}

impl Reporter {
    pub fn start(control: Control, task_id: String) -> Reporter {
        let (tx, mut rx) = watch::channel::<Option<TaskStateReport>>(None);
        let join = tokio::spawn(async move {
            loop {
                let report = rx.borrow_and_update().clone();
                if let Some(report) = report {
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
                    if report.last_status == "STOPPED" && !rx.has_changed().unwrap_or(false) {
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
