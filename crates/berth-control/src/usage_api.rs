//! `GET /_berth/usage`: the metering report ([`crate::metering`]) over the stored tasks.
//!
//! Query: `cluster` (name or ARN), `service` (name or ARN), `since`, `until` (epoch seconds or
//! RFC 3339), `group_by` (`task` default, `service`, `cluster`, `day`). Reply: a
//! [`UsageReport`](crate::metering::UsageReport) as JSON. A bad parameter is HTTP 400 with
//! `{"__type": "InvalidParameterException", "message": ...}`; a store failure 500 `ServerException`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use berth_api::proto::AwsError;
use berth_store::StoreExt;
use serde::Deserialize;

use crate::ecs::tasks::TaskRecord;
use crate::ecs::TASK;
use crate::metering::{self, GroupBy, MeteredTask, Pricing, UsageReport};
use crate::{store_err, ControlPlane};

/// Query string of `GET /_berth/usage`.
#[derive(Debug, Default, Deserialize)]
pub struct UsageQuery {
    /// Only tasks of this cluster (name or ARN).
    pub cluster: Option<String>,
    /// Only tasks of this service (name or ARN; its group is `service:<name>`).
    pub service: Option<String>,
    /// Window start (epoch seconds or RFC 3339).
    pub since: Option<String>,
    /// Window end (epoch seconds or RFC 3339).
    pub until: Option<String>,
    /// `task` (default), `service`, `cluster` or `day`.
    pub group_by: Option<String>,
}

impl ControlPlane {
    /// Every stored task (all clusters) in the shape metering needs.
    pub async fn metered_tasks(&self) -> Result<Vec<MeteredTask>, AwsError> {
        let recs = self
            .store
            .list_json::<TaskRecord>(TASK, "")
            .await
            .map_err(store_err)?;
        Ok(recs
            .into_iter()
            .map(|r| {
                let t = r.task;
                MeteredTask {
                    service: t
                        .group
                        .as_deref()
                        .and_then(|g| g.strip_prefix("service:"))
                        .map(str::to_string),
                    cluster: r.spec.cluster_name,
                    cpu_units: t
                        .cpu
                        .as_deref()
                        .and_then(berth_core::fargate::parse_cpu)
                        .unwrap_or(0),
                    memory_mib: t
                        .memory
                        .as_deref()
                        .and_then(berth_core::fargate::parse_memory)
                        .unwrap_or(0),
                    price_key: t
                        .capacity_provider_name
                        .clone()
                        .unwrap_or_else(|| t.launch_type.clone()),
                    created_at: t.created_at,
                    pull_started_at: t.pull_started_at,
                    started_at: t.started_at,
                    stopped_at: t.stopped_at,
                    task_arn: t.task_arn,
                }
            })
            .collect())
    }

    /// The usage report for `q` priced by `pricing`, as of now.
    pub async fn usage(&self, q: &UsageQuery, pricing: &Pricing) -> Result<UsageReport, AwsError> {
        let bad = |e: metering::MeteringError| AwsError::invalid_parameter(e.to_string());
        let group = match q.group_by.as_deref().filter(|s| !s.is_empty()) {
            Some(g) => g.parse::<GroupBy>().map_err(bad)?,
            None => GroupBy::Task,
        };
        let time = |v: &Option<String>| -> Result<Option<f64>, AwsError> {
            match v.as_deref().filter(|s| !s.is_empty()) {
                Some(s) => metering::parse_time(s).map(Some).map_err(bad),
                None => Ok(None),
            }
        };
        let (since, until) = (time(&q.since)?, time(&q.until)?);
        let nonempty = |v: &Option<String>| {
            v.as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| berth_core::arn::short_name(s).to_string())
        };
        let (cluster, service) = (nonempty(&q.cluster), nonempty(&q.service));
        let tasks: Vec<MeteredTask> = self
            .metered_tasks()
            .await?
            .into_iter()
            .filter(|t| cluster.as_ref().is_none_or(|c| &t.cluster == c))
            .filter(|t| service.is_none() || t.service == service)
            .collect();
        Ok(metering::report(
            &tasks,
            pricing,
            berth_core::epoch_now(),
            since,
            until,
            group,
        ))
    }
}

async fn usage(
    State((cp, pricing)): State<(Arc<ControlPlane>, Arc<Pricing>)>,
    Query(q): Query<UsageQuery>,
) -> Response {
    match cp.usage(&q, &pricing).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => (
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            [("content-type", "application/json")],
            e.body(),
        )
            .into_response(),
    }
}

/// The router serving `GET /_berth/usage`, pricing tasks with `pricing`.
pub fn router(control: Arc<ControlPlane>, pricing: Pricing) -> Router {
    Router::new()
        .route("/_berth/usage", get(usage))
        .with_state((control, Arc::new(pricing)))
}
