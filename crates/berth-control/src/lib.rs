//! berth-control: the control plane (DESIGN §3): ECS operation handlers, the CloudWatch Logs
//! API, and the agent endpoints through which node agents receive their tasks and report back.
//!
//! State lives in the store (`berth-store`); every write is a revision-checked commit, retried on
//! conflict. Agents never see the store: they long-poll [`agent_api`] for assignments.

pub mod agent_api;
pub mod agent_auth;
pub mod alarms;
pub mod autoscaling;
pub mod cloudwatch;
pub mod controller;
pub mod ecs;
pub mod logs;
pub mod metering;
pub mod prom;
pub mod usage_api;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use berth_api::proto::AwsError;
use berth_core::arn::Scope;
use berth_store::{LogStore, MetricStore, Store, StoreError};

/// The control plane: shared by the API handlers and the agent endpoints.
///
/// Who must act on a change learns about it from the store itself: agents' assignment long
/// polls and the service controller watch the task and service kinds (from the store's
/// revision), so the same works with several servers sharing one store.
pub struct ControlPlane {
    pub(crate) store: Arc<dyn Store>,
    /// CloudWatch Logs groups, streams and events.
    pub(crate) logs: Arc<dyn LogStore>,
    /// Per-task utilization samples.
    pub(crate) metrics: Arc<dyn MetricStore>,
    pub(crate) scope: Scope,
    /// The container instance new tasks are placed on (one per host for now).
    pub(crate) instance_id: String,
    /// Set by the first [`ControlPlane::start_controllers`].
    controllers_started: AtomicBool,
}

impl ControlPlane {
    /// Creates the control plane over `store` (records), `logs` and `metrics`, minting ARNs in
    /// `scope`; tasks are placed on the container instance `instance_id`.
    pub fn new(
        store: Arc<dyn Store>,
        logs: Arc<dyn LogStore>,
        metrics: Arc<dyn MetricStore>,
        scope: Scope,
        instance_id: String,
    ) -> Self {
        Self {
            store,
            logs,
            metrics,
            scope,
            instance_id,
            controllers_started: AtomicBool::new(false),
        }
    }

    /// Starts the background controllers (the ECS service scheduler, woken by store watches)
    /// and the CloudWatch Logs retention sweeper on the current tokio runtime.
    /// Call once; later calls do nothing.
    pub fn start_controllers(self: &Arc<Self>) {
        if !self.controllers_started.swap(true, Ordering::SeqCst) {
            controller::spawn(self.clone());
            logs::spawn_sweeper(self.clone());
        }
    }
}

/// The internal error type of a store conflict that escaped a handler: [`retry_conflicts`]
/// runs the operation again instead of answering with it.
const STORE_CONFLICT: &str = "berth#StoreConflict";

/// How many times [`retry_conflicts`] runs an operation that keeps hitting store conflicts.
const CONFLICT_ATTEMPTS: usize = 8;

/// Maps a store failure to the AWS fault `ServerException` (HTTP 500): it is berth's fault.
/// A conflict (a concurrent write won) is not a fault: it becomes [`STORE_CONFLICT`], which
/// [`retry_conflicts`] retries.
pub(crate) fn store_err(e: StoreError) -> AwsError {
    match e {
        StoreError::Conflict { .. } => AwsError {
            status: 500,
            error_type: STORE_CONFLICT.to_string(),
            message: e.to_string(),
        },
        e => AwsError::server(e.to_string()),
    }
}

/// Maps a failed [`berth_store::StoreExt::update`]: the closure's own error as it is, a store
/// failure through [`store_err`] (a conflict that kept happening is retried by
/// [`retry_conflicts`]).
pub(crate) fn update_err(e: berth_store::UpdateError<AwsError>) -> AwsError {
    match e {
        berth_store::UpdateError::Store(e) => store_err(e),
        berth_store::UpdateError::Rejected(e) => e,
    }
}

/// Runs an API operation again when a store conflict escaped it (it re-reads and re-plans),
/// up to [`CONFLICT_ATTEMPTS`] times; then answers `ThrottlingException` (HTTP 400), which
/// AWS SDKs retry, never `ServerException`.
pub(crate) async fn retry_conflicts<T, F, Fut>(mut op: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AwsError>>,
{
    for _ in 0..CONFLICT_ATTEMPTS {
        match op().await {
            Err(e) if e.error_type == STORE_CONFLICT => continue,
            r => return r,
        }
    }
    Err(AwsError::client(
        "ThrottlingException",
        "Rate exceeded: concurrent updates of the same resource kept conflicting",
    ))
}

/// Builds the shared control plane.
pub fn control_plane(
    store: Arc<dyn Store>,
    logs: Arc<dyn LogStore>,
    metrics: Arc<dyn MetricStore>,
    scope: Scope,
    instance_id: String,
) -> Arc<ControlPlane> {
    Arc::new(ControlPlane::new(store, logs, metrics, scope, instance_id))
}
