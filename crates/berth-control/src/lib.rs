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

/// Maps a store failure to the AWS fault `ServerException` (HTTP 500): it is berth's fault.
pub(crate) fn store_err(e: StoreError) -> AwsError {
    AwsError::server(e.to_string())
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
