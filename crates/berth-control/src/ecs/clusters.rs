//! CreateCluster, DescribeClusters, ListClusters, DeleteCluster (ECS API reference).

use berth_api::ecs::{
    Cluster, CreateClusterRequest, DeleteClusterRequest, DescribeClustersRequest, Failure,
    ListRequest,
};
use berth_api::proto::AwsError;
use berth_core::status::{ClusterStatus, TaskStatus};
use berth_store::{Expect, Store, StoreExt};
use serde_json::{json, Value};

use super::{cluster_name, decode_token, max_results, page, ACTIVE, CLUSTER};
use crate::{store_err, ControlPlane};

fn valid_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl ControlPlane {
    /// Loads an ACTIVE cluster or fails with `ClusterNotFoundException` ("Cluster not found.").
    pub(crate) fn active_cluster(&self, name: &str) -> Result<Cluster, AwsError> {
        match self
            .store
            .get_json::<Cluster>(CLUSTER, name)
            .map_err(store_err)?
        {
            Some((c, _)) if c.status == ClusterStatus::Active => Ok(c),
            _ => Err(AwsError::client(
                "ClusterNotFoundException",
                "Cluster not found.",
            )),
        }
    }

    /// Fills the task counts of a cluster from the tasks that are not STOPPED.
    fn with_counts(&self, mut c: Cluster, include_tags: bool) -> Result<Cluster, AwsError> {
        let (mut running, mut pending) = (0, 0);
        for r in self.store.list(ACTIVE, "").map_err(store_err)? {
            let cluster: String = r.decode().map_err(store_err)?;
            if cluster != c.cluster_name {
                continue;
            }
            let id = r.key;
            if let Some(t) = self.load_task(&cluster, &id)? {
                match t.task.last_status {
                    TaskStatus::Running => running += 1,
                    _ => pending += 1,
                }
            }
        }
        c.running_tasks_count = running;
        c.pending_tasks_count = pending;
        c.active_services_count = self.active_services(&c.cluster_name)?;
        if !include_tags {
            c.tags = None;
        }
        Ok(c)
    }

    pub(super) fn create_cluster(&self, req: CreateClusterRequest) -> Result<Value, AwsError> {
        let name = req.cluster_name.unwrap_or_else(|| "default".to_string());
        if !valid_cluster_name(&name) {
            return Err(AwsError::invalid_parameter(
                "Cluster name can have up to 255 characters: letters, numbers, hyphens and underscores.",
            ));
        }
        loop {
            let existing = self
                .store
                .get_json::<Cluster>(CLUSTER, &name)
                .map_err(store_err)?;
            let expect = match &existing {
                Some((c, _)) if c.status == ClusterStatus::Active => {
                    // CreateCluster is idempotent for an existing ACTIVE cluster.
                    return Ok(json!({ "cluster": self.with_counts(c.clone(), false)? }));
                }
                Some((_, rev)) => Expect::Revision(*rev),
                None => Expect::Absent,
            };
            let cluster = Cluster {
                cluster_arn: self.scope.cluster(&name),
                cluster_name: name.clone(),
                status: ClusterStatus::Active,
                tags: req.tags.clone().or(Some(vec![])),
                settings: req.settings.clone().unwrap_or_else(|| {
                    vec![json!({"name": "containerInsights", "value": "disabled"})]
                }),
                capacity_providers: req.capacity_providers.clone().unwrap_or_default(),
                default_capacity_provider_strategy: req
                    .default_capacity_provider_strategy
                    .clone()
                    .unwrap_or_default(),
                configuration: req.configuration.clone(),
                ..Default::default()
            };
            match self.store.put_json(CLUSTER, &name, &cluster, expect) {
                Ok(()) => return Ok(json!({ "cluster": self.with_counts(cluster, false)? })),
                Err(berth_store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
    }

    pub(super) fn describe_clusters(
        &self,
        req: DescribeClustersRequest,
    ) -> Result<Value, AwsError> {
        let names = req.clusters.unwrap_or_else(|| vec!["default".to_string()]);
        let include_tags = req
            .include
            .as_ref()
            .is_some_and(|i| i.iter().any(|x| x == "TAGS"));
        let mut clusters = Vec::new();
        let mut failures = Vec::new();
        for n in &names {
            let name = cluster_name(Some(n));
            match self
                .store
                .get_json::<Cluster>(CLUSTER, &name)
                .map_err(store_err)?
            {
                Some((c, _)) => clusters.push(self.with_counts(c, include_tags)?),
                None => failures.push(Failure {
                    arn: self.scope.cluster(&name),
                    reason: "MISSING".into(),
                    detail: None,
                }),
            }
        }
        Ok(json!({ "clusters": clusters, "failures": failures }))
    }

    pub(super) fn list_clusters(&self, req: ListRequest) -> Result<Value, AwsError> {
        let max = max_results(req.max_results)?;
        let token = decode_token(req.next_token.as_deref())?;
        let items: Vec<(String, String)> = self
            .store
            .list_json::<Cluster>(CLUSTER, "")
            .map_err(store_err)?
            .into_iter()
            .filter(|c| c.status == ClusterStatus::Active)
            .map(|c| (c.cluster_name.clone(), c.cluster_arn))
            .collect();
        let (arns, next) = page(items, token, max);
        Ok(json!({ "clusterArns": arns, "nextToken": next }))
    }

    pub(super) fn delete_cluster(&self, req: DeleteClusterRequest) -> Result<Value, AwsError> {
        let name = cluster_name(Some(&req.cluster));
        loop {
            let (mut c, rev) = match self
                .store
                .get_json::<Cluster>(CLUSTER, &name)
                .map_err(store_err)?
            {
                Some((c, rev)) if c.status == ClusterStatus::Active => (c, rev),
                _ => {
                    return Err(AwsError::client(
                        "ClusterNotFoundException",
                        "Cluster not found.",
                    ))
                }
            };
            let counted = self.with_counts(c.clone(), false)?;
            if counted.active_services_count > 0 {
                return Err(AwsError::client(
                    "ClusterContainsServicesException",
                    "The Cluster cannot be deleted while Services are active.",
                ));
            }
            if counted.running_tasks_count + counted.pending_tasks_count > 0 {
                return Err(AwsError::client(
                    "ClusterContainsTasksException",
                    "The Cluster cannot be deleted while Tasks are active.",
                ));
            }
            c.status = ClusterStatus::Inactive;
            match self
                .store
                .put_json(CLUSTER, &name, &c, Expect::Revision(rev))
            {
                Ok(()) => return Ok(json!({ "cluster": counted_inactive(counted) })),
                Err(berth_store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
    }
}

fn counted_inactive(mut c: Cluster) -> Cluster {
    c.status = ClusterStatus::Inactive;
    c
}
