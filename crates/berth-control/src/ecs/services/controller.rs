//! The IO half of the service controller: what it sees of a service's tasks, and one
//! reconcile of a service that commits its [`Plan`] atomically.

use berth_api::ecs::TaskOverride;
use berth_api::proto::AwsError;
use berth_core::status::{DesiredStatus, StopCode};
use berth_core::{epoch_now, fargate};
use berth_store::{Expect, Op, StoreError, StoreExt};

use super::super::tasks::{NewTask, TaskRecord};
use super::super::{ACTIVE, SERVICE, TASK};
use super::deployment_number;
use super::view::observed;
use crate::controller::service::{reconcile, IdKind, Observed, Plan, ServiceRecord};
use crate::{store_err, ControlPlane};

fn new_task_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Mints the ids [`reconcile`] asks for: task ids, event ids (UUIDs), deployment numbers.
pub(super) fn id_gen(kind: IdKind) -> String {
    match kind {
        IdKind::Task => new_task_id(),
        IdKind::Event => uuid::Uuid::new_v4().to_string(),
        IdKind::Deployment => deployment_number(),
    }
}

impl ControlPlane {
    /// Every stored service key (`<cluster>/<name>`), for the controller's resync.
    pub(crate) async fn service_keys(&self) -> Result<Vec<String>, AwsError> {
        Ok(self
            .store
            .list(SERVICE, "")
            .await
            .map_err(store_err)?
            .into_iter()
            .map(|r| r.key)
            .collect())
    }

    /// What the controller sees of the service's tasks now.
    pub(super) async fn observe(
        &self,
        cluster: &str,
        rec: &ServiceRecord,
    ) -> Result<Vec<Observed>, AwsError> {
        let mut out = Vec::with_capacity(rec.tasks.len());
        for t in &rec.tasks {
            if let Some(tr) = self.load_task(cluster, &t.id).await? {
                out.push(observed(&tr));
            }
        }
        Ok(out)
    }

    /// One reconcile of the service at `key` (`<cluster>/<name>`): plan, then commit the new
    /// service state, the new tasks and the stops in one atomic write (re-planned on conflict).
    /// Returns when to look again without a wake-up, if ever.
    pub(crate) async fn reconcile_service(&self, key: &str) -> Result<Option<f64>, AwsError> {
        let Some((cluster, _)) = key.split_once('/') else {
            return Ok(None);
        };
        for _ in 0..20 {
            let Some((rec, rev)) = self
                .store
                .get_json::<ServiceRecord>(SERVICE, key)
                .await
                .map_err(store_err)?
            else {
                return Ok(None);
            };
            let obs = self.observe(cluster, &rec).await?;
            let mut gen = id_gen;
            let plan = reconcile(&rec, &obs, epoch_now(), &mut gen);
            if !plan.changed(&rec) {
                return Ok(plan.requeue_after);
            }
            let ops = self.plan_ops(cluster, key, rev, &plan).await?;
            match self.store.commit(ops).await {
                Ok(_) => return Ok(plan.requeue_after),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(AwsError::server("service reconcile kept conflicting"))
    }

    async fn plan_ops(
        &self,
        cluster: &str,
        key: &str,
        rev: i64,
        plan: &Plan,
    ) -> Result<Vec<Op>, AwsError> {
        let mut ops = Vec::new();
        if plan.delete {
            ops.push(Op::delete(SERVICE, key, Expect::Revision(rev)));
            return Ok(ops);
        }
        ops.push(Op::put(SERVICE, key, &plan.record, Expect::Revision(rev)).map_err(store_err)?);
        let r = &plan.record;
        let cluster_arn = self.scope.cluster(cluster);
        for (task_id, dep_id) in &plan.start {
            let d = r
                .deployments
                .iter()
                .find(|d| &d.d.id == dep_id)
                .ok_or_else(|| AwsError::server("planned task for an unknown deployment"))?;
            let tdr = self.resolve_task_definition(&d.d.task_definition).await?;
            let td = &tdr.task_definition;
            let tags = match r.service.propagate_tags.as_str() {
                "SERVICE" => r.service.tags.clone().unwrap_or_default(),
                "TASK_DEFINITION" => tdr.tags.clone(),
                _ => vec![],
            };
            let vpc =
                d.d.network_configuration
                    .as_ref()
                    .and_then(|n| n.awsvpc_configuration.clone());
            let overrides = TaskOverride::default();
            let mut rec = self.build_task_record(&NewTask {
                cluster,
                cluster_arn: &cluster_arn,
                td,
                launch_type: d.d.launch_type.as_deref().unwrap_or("FARGATE"),
                vpc: vpc.as_ref(),
                overrides: &overrides,
                cpu: td.cpu.as_deref().and_then(fargate::parse_cpu),
                memory: td.memory.as_deref().and_then(fargate::parse_memory),
                group: format!("service:{}", r.service.service_name),
                started_by: Some(dep_id.clone()),
                tags,
                platform_version: None,
                enable_execute_command: r.service.enable_execute_command,
                task_id: Some(task_id.clone()),
            });
            rec.task.version = 1;
            let ordinal = r.tasks.iter().position(|t| &t.id == task_id).unwrap_or(0);
            rec.task.capacity_provider_name = super::super::tasks::capacity_provider_for(
                r.service.capacity_provider_strategy.as_deref(),
                ordinal,
            );
            ops.push(
                Op::put(TASK, &format!("{cluster}/{task_id}"), &rec, Expect::Absent)
                    .map_err(store_err)?,
            );
            ops.push(Op::put(ACTIVE, task_id, &cluster, Expect::Absent).map_err(store_err)?);
        }
        for (task_id, reason) in &plan.stop {
            let tkey = format!("{cluster}/{task_id}");
            let Some((mut t, trev)) = self
                .store
                .get_json::<TaskRecord>(TASK, &tkey)
                .await
                .map_err(store_err)?
            else {
                continue;
            };
            if t.task.desired_status == DesiredStatus::Stopped {
                continue;
            }
            t.task.desired_status = DesiredStatus::Stopped;
            t.task.stopping_at = Some(epoch_now());
            t.task.stop_code = Some(StopCode::ServiceSchedulerInitiated);
            t.task.stopped_reason = Some(reason.clone());
            t.scheduler_stop_reason = Some(reason.clone());
            t.task.version += 1;
            ops.push(Op::put(TASK, &tkey, &t, Expect::Revision(trev)).map_err(store_err)?);
        }
        Ok(ops)
    }
}
