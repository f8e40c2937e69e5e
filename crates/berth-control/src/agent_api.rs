//! The control plane's side of the agent protocol (`berth_api::agent`): registration with the
//! join token, then, for agents showing their credential ([`AgentId`]), the assignments long
//! poll, task state reports, container log batches and metrics, each limited to the tasks
//! placed on the agent's own instance.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_api::agent::{
    Assignments, LogBatch, MetricsBatch, RegisterRequest, RegisterResponse, TaskAssignment,
    TaskStateReport, CREDENTIAL_SCHEME,
};
use berth_store::StoreExt;
use serde::Deserialize;

use crate::agent_auth::{same_secret, AgentAuthError};
use crate::ecs::tasks::TaskRecord;
use crate::ControlPlane;

/// State of the agent endpoints: the control plane and the join token agents register with.
pub struct AgentApi {
    cp: Arc<ControlPlane>,
    join_token: String,
}

/// The container instance an agent request is authenticated as (from its
/// `Authorization: Bearer <credential>`); requests without a valid credential get 401.
pub struct AgentId(pub String);

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case(CREDENTIAL_SCHEME)
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn unauthorized(what: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [("www-authenticate", "Bearer realm=\"berth-agent\"")],
        format!("{what}\n"),
    )
        .into_response()
}

fn forbidden(what: String) -> Response {
    (StatusCode::FORBIDDEN, format!("{what}\n")).into_response()
}

fn auth_fault(e: AgentAuthError) -> Response {
    match e {
        AgentAuthError::Unauthorized => unauthorized("missing or wrong agent credential"),
        AgentAuthError::InvalidArgument(_) => {
            (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
        }
        AgentAuthError::Conflict(_) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
        e => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

impl FromRequestParts<Arc<AgentApi>> for AgentId {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        api: &Arc<AgentApi>,
    ) -> Result<Self, Self::Rejection> {
        let Some(credential) = bearer(&parts.headers) else {
            return Err(unauthorized("an agent credential is required"));
        };
        api.cp
            .authenticate_agent(credential)
            .map(AgentId)
            .map_err(auth_fault)
    }
}

/// `POST /_berth/agent/register`: the join token as bearer token, [`RegisterRequest`] as body.
async fn register(State(api): State<Arc<AgentApi>>, headers: HeaderMap, body: Bytes) -> Response {
    // The token is checked before the body is even parsed.
    if !bearer(&headers).is_some_and(|t| same_secret(t, &api.join_token)) {
        return unauthorized("a valid join token is required to register an agent");
    }
    let req: RegisterRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    match api.cp.register_agent(&req.instance_id) {
        Ok(credential) => Json(RegisterResponse {
            instance_id: req.instance_id,
            credential,
        })
        .into_response(),
        Err(e) => auth_fault(e),
    }
}

/// The not-yet-STOPPED task `task_id` (`None` when there is none).
fn active_task(
    cp: &ControlPlane,
    task_id: &str,
) -> Result<Option<TaskRecord>, berth_api::proto::AwsError> {
    let r = cp
        .store
        .get_json::<String>(crate::ecs::ACTIVE, task_id)
        .map_err(crate::store_err)?;
    let Some((cluster, _)) = r else {
        return Ok(None);
    };
    cp.load_task(&cluster, task_id)
}

#[derive(Deserialize)]
struct PollQuery {
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait: u64,
}

fn fault(e: berth_api::proto::AwsError) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, e.message).into_response()
}

async fn assignments(
    State(api): State<Arc<AgentApi>>,
    AgentId(instance): AgentId,
    Query(q): Query<PollQuery>,
) -> Response {
    if q.instance.as_ref().is_some_and(|i| *i != instance) {
        return forbidden(format!(
            "this credential belongs to container instance {instance:?}"
        ));
    }
    let cp = &api.cp;
    let mut rx = cp.assignments.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.min(60));
    loop {
        let version = *rx.borrow_and_update();
        if version > q.after || tokio::time::Instant::now() >= deadline {
            let tasks = match cp.assigned_tasks(&instance) {
                Ok(t) => t,
                Err(e) => return fault(e),
            };
            let body = Assignments {
                version,
                tasks: tasks
                    .into_iter()
                    .map(|r| TaskAssignment {
                        desired_status: r.task.desired_status,
                        last_status: r.task.last_status,
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
    State(api): State<Arc<AgentApi>>,
    AgentId(instance): AgentId,
    Path(task_id): Path<String>,
    Json(report): Json<TaskStateReport>,
) -> Response {
    match active_task(&api.cp, &task_id) {
        Err(e) => return fault(e),
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Ok(Some(rec)) if rec.instance != instance => {
            return forbidden(format!("task {task_id} is not placed on {instance:?}"));
        }
        Ok(Some(_)) => {}
    }
    match api.cp.apply_report(&task_id, &report) {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => fault(e),
    }
}

async fn logs(
    State(api): State<Arc<AgentApi>>,
    AgentId(instance): AgentId,
    Json(batch): Json<LogBatch>,
) -> Response {
    let mut by_stream: BTreeMap<(String, String), Vec<(i64, String)>> = BTreeMap::new();
    for l in batch.events {
        by_stream
            .entry((l.group, l.stream))
            .or_default()
            .push((l.timestamp, l.message));
    }
    // Every stream must be a log destination of a task of this instance; its stream name
    // (`<prefix>/<container>/<task-id>`) says which task to look at.
    let mut tasks: HashMap<String, Option<TaskRecord>> = HashMap::new();
    for (group, stream) in by_stream.keys() {
        let task_id = stream.rsplit('/').next().unwrap_or("");
        if !tasks.contains_key(task_id) {
            match active_task(&api.cp, task_id) {
                Ok(r) => tasks.insert(task_id.to_string(), r),
                Err(e) => return fault(e),
            };
        }
        let ours = tasks[task_id].as_ref().is_some_and(|rec| {
            rec.instance == instance
                && rec.spec.containers.iter().any(|c| {
                    c.log
                        .as_ref()
                        .is_some_and(|d| d.group == *group && d.stream == *stream)
                })
        });
        if !ours {
            return forbidden(format!(
                "log stream {group} {stream} is not a destination of a running task on {instance:?}"
            ));
        }
    }
    for ((group, stream), events) in by_stream {
        if let Err(e) = api.cp.store.append_log_events(&group, &stream, &events) {
            return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn metrics(
    State(api): State<Arc<AgentApi>>,
    AgentId(instance): AgentId,
    Json(batch): Json<MetricsBatch>,
) -> Response {
    for s in &batch.samples {
        match api.cp.load_task(&s.cluster_name, &s.task_id) {
            Ok(Some(rec)) if rec.instance == instance => {}
            Ok(_) => {
                return forbidden(format!(
                    "task {} of cluster {} is not placed on {instance:?}",
                    s.task_id, s.cluster_name
                ))
            }
            Err(e) => return fault(e),
        }
    }
    match api.cp.ingest_metrics(&batch) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => fault(e),
    }
}

/// Routes under `/_berth/agent/` (see `berth_api::agent` for the protocol); agents register
/// with `join_token`.
pub fn router(cp: Arc<ControlPlane>, join_token: String) -> Router {
    Router::new()
        .route("/_berth/agent/register", post(register))
        .route("/_berth/agent/assignments", get(assignments))
        .route("/_berth/agent/tasks/{task_id}/state", post(report))
        .route("/_berth/agent/logs", post(logs))
        .route("/_berth/agent/metrics", post(metrics))
        .with_state(Arc::new(AgentApi { cp, join_token }))
}
