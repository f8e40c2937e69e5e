//! The API view of a stored service: its deployments and counts derived from its tasks.

use berth_api::ecs::{Deployment, Service, ServiceDeployment};
use berth_api::proto::AwsError;

use super::super::tasks::TaskRecord;
use crate::controller::service::{counts, revision_summary, Observed, SdState, ServiceRecord};
use crate::ControlPlane;

impl ControlPlane {
    /// The API view of a service: deployments and counts from its tasks as they are now.
    pub(super) async fn service_view(
        &self,
        cluster: &str,
        rec: &ServiceRecord,
        with_tags: bool,
    ) -> Result<Service, AwsError> {
        let obs = self.observe(cluster, rec).await?;
        Ok(view(rec, &obs, with_tags))
    }
}

/// The controller's view of one task record.
pub(super) fn observed(tr: &TaskRecord) -> Observed {
    Observed {
        id: tr.spec.task_id.clone(),
        last_status: tr.task.last_status,
        desired_status: tr.task.desired_status,
        health_status: tr.task.health_status,
        has_health_check: tr
            .spec
            .containers
            .iter()
            .any(|c| c.essential && c.health_check.is_some()),
        stop_code: tr.task.stop_code,
        started_at: tr.task.started_at,
    }
}

/// The API view of a stored service given its observed tasks.
pub(super) fn view(rec: &ServiceRecord, obs: &[Observed], with_tags: bool) -> Service {
    let mut s = rec.service.clone();
    let (pending, running) = counts(rec, obs, None);
    s.pending_count = pending;
    s.running_count = running;
    s.deployments = rec
        .deployments
        .iter()
        .map(|d| {
            let (p, r) = counts(rec, obs, Some(&d.d.id));
            Deployment {
                pending_count: p,
                running_count: r,
                ..d.d.clone()
            }
        })
        .collect();
    s.current_service_revisions = Some(
        rec.deployments
            .iter()
            .map(|d| {
                let r = revision_summary(rec, obs, d);
                berth_api::ecs::ServiceCurrentRevisionSummary {
                    arn: r.arn,
                    requested_task_count: r.requested_task_count,
                    running_task_count: r.running_task_count,
                    pending_task_count: r.pending_task_count,
                }
            })
            .collect(),
    );
    if !with_tags {
        s.tags = None;
    }
    s
}

/// A service deployment with the live counts of its revisions.
pub(super) fn live_sd(rec: &ServiceRecord, obs: &[Observed], s: &SdState) -> ServiceDeployment {
    let mut sd = s.sd.clone();
    let finished = sd.finished_at.is_some();
    if !finished {
        if let Some(d) = rec
            .deployments
            .iter()
            .find(|d| d.revision_arn == sd.target_service_revision.arn)
        {
            sd.target_service_revision = revision_summary(rec, obs, d);
        }
        for src in &mut sd.source_service_revisions {
            if let Some(d) = rec.deployments.iter().find(|d| d.revision_arn == src.arn) {
                *src = revision_summary(rec, obs, d);
            } else {
                src.running_task_count = 0;
                src.pending_task_count = 0;
            }
        }
    }
    sd
}
