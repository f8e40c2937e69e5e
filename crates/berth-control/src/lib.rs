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

use std::sync::{mpsc, Arc, Mutex};

use berth_api::proto::AwsError;
use berth_core::arn::Scope;
use berth_store::{SqliteStore, StoreError};
use tokio::sync::watch;

/// The control plane: shared by the API handlers and the agent endpoints.
pub struct ControlPlane {
    pub(crate) store: Arc<SqliteStore>,
    pub(crate) scope: Scope,
    /// Assignment version; bumped on every change an agent must see.
    pub(crate) assignments: watch::Sender<u64>,
    /// The container instance new tasks are placed on (one per host for now).
    pub(crate) instance_id: String,
    /// Wakes the service controller for one service key (`<cluster>/<service>`).
    pub(crate) service_wake: mpsc::Sender<String>,
    /// The receiving end, taken once by [`ControlPlane::start_controllers`].
    pub(crate) service_wake_rx: Mutex<Option<mpsc::Receiver<String>>>,
}

impl ControlPlane {
    /// Creates the control plane over `store`, minting ARNs in `scope`; tasks are placed on the
    /// container instance `instance_id`.
    pub fn new(store: Arc<SqliteStore>, scope: Scope, instance_id: String) -> Self {
        // Start versions at the wall clock (ms) so they keep increasing across restarts.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        let (tx, _) = watch::channel(start);
        let (wake, wake_rx) = mpsc::channel();
        Self {
            store,
            scope,
            assignments: tx,
            instance_id,
            service_wake: wake,
            service_wake_rx: Mutex::new(Some(wake_rx)),
        }
    }

    /// Starts the background controllers (the ECS service scheduler) on their own thread, and
    /// the CloudWatch Logs retention sweeper on the current tokio runtime.
    /// Call once; later calls do nothing.
    pub fn start_controllers(self: &Arc<Self>) {
        let rx = self
            .service_wake_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rx) = rx {
            controller::spawn(self.clone(), rx);
            logs::spawn_sweeper(self.clone());
        }
    }

    /// Asks the service controller to reconcile service `name` of `cluster` soon.
    pub(crate) fn wake_service(&self, cluster: &str, name: &str) {
        let _ = self.service_wake.send(format!("{cluster}/{name}"));
    }

    /// Wakes the service that owns `task` (its `group` is `service:<name>`), if any.
    pub(crate) fn wake_service_of(&self, cluster: &str, task: &berth_api::ecs::Task) {
        if let Some(name) = task
            .group
            .as_deref()
            .and_then(|g| g.strip_prefix("service:"))
        {
            self.wake_service(cluster, name);
        }
    }

    /// Wakes agents waiting on assignments.
    pub(crate) fn bump(&self) {
        self.assignments.send_modify(|v| *v += 1);
    }
}

/// Maps a store failure to the AWS fault `ServerException` (HTTP 500): it is berth's fault.
pub(crate) fn store_err(e: StoreError) -> AwsError {
    AwsError::server(e.to_string())
}

/// Builds the shared control plane.
pub fn control_plane(
    store: Arc<SqliteStore>,
    scope: Scope,
    instance_id: String,
) -> Arc<ControlPlane> {
    Arc::new(ControlPlane::new(store, scope, instance_id))
}
