//! The control plane's side of the agent protocol (`berth_api::agent`): assignments long poll,
//! task state reports, container log batches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_api::agent::{Assignments, LogBatch, MetricsBatch, TaskAssignment, TaskStateReport};
use serde::Deserialize;

use crate::ControlPlane;

#[derive(Deserialize)]
struct PollQuery {
    instance: String,
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait: u64,
}

fn fault(e: berth_api::proto::AwsError) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, e.message).into_response()
}

async fn assignments(State(cp): State<Arc<ControlPlane>>, Query(q): Query<PollQuery>) -> Response {
    let mut rx = cp.assignments.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.min(60));
    loop {
        let version = *rx.borrow_and_update();
        if version > q.after || tokio::time::Instant::now() >= deadline {
            let tasks = match cp.assigned_tasks(&q.instance) {
                Ok(t) => t,
                Err(e) => return fault(e),
            };
            let body = Assignments {
                version,
                tasks: tasks
                    .into_iter()
                    .map(|r| TaskAssignment {
                        desired_status: r.task.desired_status.clone(),
                        last_status: r.task.last_status.clone(),
                        spec: r.spec,
                    })
                    .collect(),
            };
            return Json(body).into_response();
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_ok_and(|r| r.is_err())
        {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
}

async fn report(
    State(cp): State<Arc<ControlPlane>>,
    Path(task_id): Path<String>,
    Json(report): Json<TaskStateReport>,
) -> Response {
    match cp.apply_report(&task_id, &report) {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => fault(e),
    }
}

async fn logs(State(cp): State<Arc<ControlPlane>>, Json(batch): Json<LogBatch>) -> Response {
    let mut by_stream: BTreeMap<(String, String), Vec<(i64, String)>> = BTreeMap::new();
    for l in batch.events {
        by_stream
            .entry((l.group, l.stream))
            .or_default()
            .push((l.timestamp, l.message));
    }
    for ((group, stream), events) in by_stream {
        if let Err(e) = cp.store.append_log_events(&group, &stream, &events) {
            return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn metrics(State(cp): State<Arc<ControlPlane>>, Json(batch): Json<MetricsBatch>) -> Response {
    match cp.ingest_metrics(&batch) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => fault(e),
    }
}

/// Routes under `/_berth/agent/` (see `berth_api::agent` for the protocol).
pub fn router(cp: Arc<ControlPlane>) -> Router {
    Router::new()
        .route("/_berth/agent/assignments", get(assignments))
        .route("/_berth/agent/tasks/{task_id}/state", post(report))
        .route("/_berth/agent/logs", post(logs))
        .route("/_berth/agent/metrics", post(metrics))
        .with_state(cp)
}
