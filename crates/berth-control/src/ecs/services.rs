//! CreateService, UpdateService, DeleteService, DescribeServices, ListServices,
//! ListServiceDeployments, DescribeServiceDeployments, DescribeServiceRevisions,
//! StopServiceDeployment (ECS API reference). Split by job: the handlers here, the
//! controller's IO half in [`controller`] (observing a service's tasks, committing a
//! [`Plan`](crate::controller::service::Plan) atomically), the API view in [`view`], request
//! checks in [`validate`].

mod controller;
mod validate;
mod view;

use berth_api::ecs::{
    CreateServiceRequest, DeleteServiceRequest, Deployment, DescribeServiceArnsRequest,
    DescribeServicesRequest, Failure, ListRequest, ListServiceDeploymentsRequest,
    NetworkConfiguration, Service, ServiceDeployment, ServiceDeploymentBrief, ServiceRevision,
    StopServiceDeploymentRequest, TaskDefinition, UpdateServiceRequest,
};
use berth_api::proto::AwsError;
use berth_core::epoch_now;
use berth_core::status::{
    DeploymentStatus, RolloutState, ServiceDeploymentStatus, ServiceStatus, TaskDefinitionStatus,
};
use berth_store::{Expect, StoreError, StoreExt};
use serde_json::{json, Value};

use super::launch;
use super::{cluster_name, decode_token, max_results, page, SERVICE};
use crate::controller::service::{
    breaker_status, revision_summary, start_rollback, DeploymentState, Observed, SdState,
    ServiceRecord, MAX_HISTORY,
};
use crate::{store_err, ControlPlane};
use controller::id_gen;
use validate::MAX_SERVICES_PER_CLUSTER;
use validate::{
    check_desired_quota, check_references, valid_service_name, validate_percents, with_defaults,
};
use view::{live_sd, view};

/// `ServiceNotFoundException` ("Service not found.").
pub(crate) fn service_not_found() -> AwsError {
    AwsError::client("ServiceNotFoundException", "Service not found.")
}

fn service_not_active() -> AwsError {
    AwsError::client("ServiceNotActiveException", "Service was not ACTIVE.")
}

/// A deployment number like ECS's (`ecs-svc/1113266061326586537`): 19 random digits.
fn deployment_number() -> String {
    let r = uuid::Uuid::new_v4().as_u128() as u64;
    (1_000_000_000_000_000_000u64 + r % 8_000_000_000_000_000_000u64).to_string()
}

fn include_tags(include: &Option<Vec<String>>) -> bool {
    include
        .as_ref()
        .is_some_and(|i| i.iter().any(|x| x == "TAGS"))
}

/// `<type>/<cluster>/<service>/<last>` parts of a service-deployment or service-revision ARN.
fn parse_sub_arn<'a>(arn: &'a str, kind: &str) -> Option<(&'a str, &'a str, &'a str)> {
    let rest = arn.split_once(&format!(":{kind}/"))?.1;
    let mut it = rest.splitn(3, '/');
    Some((it.next()?, it.next()?, it.next()?))
}

impl ControlPlane {
    fn service_arn(&self, cluster: &str, name: &str) -> String {
        format!(
            "arn:aws:ecs:{}:{}:service/{cluster}/{name}",
            self.scope.region, self.scope.account
        )
    }

    fn revision_arn(&self, cluster: &str, name: &str, n: &str) -> String {
        format!(
            "arn:aws:ecs:{}:{}:service-revision/{cluster}/{name}/{n}",
            self.scope.region, self.scope.account
        )
    }

    fn service_deployment_arn(&self, cluster: &str, name: &str) -> String {
        let id: String = uuid::Uuid::new_v4().simple().to_string()[..22].to_string();
        format!(
            "arn:aws:ecs:{}:{}:service-deployment/{cluster}/{name}/{id}",
            self.scope.region, self.scope.account
        )
    }

    /// Loads a service record (any status) with its revision.
    pub(crate) async fn load_service_rev(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<Option<(ServiceRecord, i64)>, AwsError> {
        self.store
            .get_json::<ServiceRecord>(SERVICE, &format!("{cluster}/{name}"))
            .await
            .map_err(store_err)
    }

    /// Loads a service record (any status).
    pub(crate) async fn load_service(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<Option<ServiceRecord>, AwsError> {
        Ok(self.load_service_rev(cluster, name).await?.map(|(r, _)| r))
    }

    /// Number of ACTIVE or DRAINING services in `cluster`.
    pub(crate) async fn active_services(&self, cluster: &str) -> Result<i64, AwsError> {
        Ok(self
            .store
            .list_json::<ServiceRecord>(SERVICE, &format!("{cluster}/"))
            .await
            .map_err(store_err)?
            .iter()
            .filter(|r| r.service.status != ServiceStatus::Inactive)
            .count() as i64)
    }

    /// Builds a deployment (PRIMARY, IN_PROGRESS), its revision and its service deployment.
    #[allow(clippy::too_many_arguments)]
    fn new_deployment(
        &self,
        cluster: &str,
        service: &Service,
        td: &TaskDefinition,
        network: Option<NetworkConfiguration>,
        sources: Vec<berth_api::ecs::ServiceRevisionSummary>,
        now: f64,
    ) -> (DeploymentState, ServiceRevision, SdState) {
        let n = deployment_number();
        let id = format!("ecs-svc/{n}");
        let name = &service.service_name;
        let revision_arn = self.revision_arn(cluster, name, &n);
        let sd_arn = self.service_deployment_arn(cluster, name);
        let d = Deployment {
            id: id.clone(),
            status: DeploymentStatus::Primary,
            task_definition: td.task_definition_arn.clone(),
            desired_count: service.desired_count,
            pending_count: 0,
            running_count: 0,
            failed_tasks: 0,
            created_at: now,
            updated_at: now,
            launch_type: service.launch_type.clone(),
            platform_version: service.platform_version.clone(),
            platform_family: service.platform_family.clone(),
            network_configuration: network.clone(),
            rollout_state: RolloutState::InProgress,
            rollout_state_reason: Some(format!("ECS deployment {id} in progress.")),
        };
        let revision = ServiceRevision {
            service_revision_arn: revision_arn.clone(),
            service_arn: service.service_arn.clone(),
            cluster_arn: service.cluster_arn.clone(),
            task_definition: td.task_definition_arn.clone(),
            launch_type: service.launch_type.clone(),
            capacity_provider_strategy: service.capacity_provider_strategy.clone(),
            platform_version: service.platform_version.clone(),
            platform_family: service.platform_family.clone(),
            load_balancers: service.load_balancers.clone(),
            service_registries: service.service_registries.clone(),
            network_configuration: network,
            container_images: td
                .container_definitions
                .iter()
                .map(|c| json!({"containerName": c.name, "image": c.image}))
                .collect(),
            guard_duty_enabled: false,
            created_at: now,
        };
        let sd = ServiceDeployment {
            service_deployment_arn: sd_arn.clone(),
            service_arn: service.service_arn.clone(),
            cluster_arn: service.cluster_arn.clone(),
            created_at: now,
            started_at: Some(now),
            finished_at: None,
            stopped_at: None,
            updated_at: now,
            source_service_revisions: sources,
            target_service_revision: berth_api::ecs::ServiceRevisionSummary {
                arn: revision_arn.clone(),
                requested_task_count: service.desired_count,
                running_task_count: 0,
                pending_task_count: 0,
            },
            status: ServiceDeploymentStatus::InProgress,
            status_reason: None,
            lifecycle_stage: Some("RECONCILE_SERVICE".into()),
            deployment_configuration: service.deployment_configuration.clone(),
            rollback: None,
            deployment_circuit_breaker: breaker_status(
                &service.deployment_configuration,
                service.desired_count,
            ),
            alarms: json!({"status": "DISABLED"}),
        };
        (
            DeploymentState {
                d,
                revision_arn,
                sd_arn: Some(sd_arn),
                halted: false,
            },
            revision,
            SdState {
                sd,
                deployment_id: id,
                rollback_deployment_id: None,
            },
        )
    }

    /// Resolves a task definition for a service: it must exist (InvalidParameterException
    /// otherwise, as ECS answers) and, for a new deployment, be ACTIVE.
    async fn service_task_definition(
        &self,
        reference: &str,
    ) -> Result<super::task_definitions::TaskDefRecord, AwsError> {
        let r = self
            .resolve_task_definition(reference)
            .await
            .map_err(|_| AwsError::invalid_parameter("TaskDefinition not found."))?;
        if r.task_definition.status != TaskDefinitionStatus::Active {
            return Err(AwsError::invalid_parameter("TaskDefinition is inactive"));
        }
        Ok(r)
    }

    pub(super) async fn create_service(
        &self,
        req: CreateServiceRequest,
    ) -> Result<Value, AwsError> {
        let cluster = cluster_name(req.cluster.as_deref());
        let cluster_rec = self.active_cluster(&cluster).await?;
        let name = req.service_name.clone();
        if !valid_service_name(&name) {
            return Err(AwsError::invalid_parameter(
                "Service name can have up to 255 characters: letters, numbers, hyphens and underscores.",
            ));
        }
        if let Some(t) = req
            .deployment_controller
            .as_ref()
            .and_then(|c| c.get("type"))
            .and_then(Value::as_str)
        {
            if t != "ECS" {
                return Err(AwsError::client(
                    "UnsupportedFeatureException",
                    format!("The {t} deployment controller is not supported by berth."),
                ));
            }
        }
        if req.scheduling_strategy.as_deref().unwrap_or("REPLICA") != "REPLICA" {
            return Err(AwsError::invalid_parameter(
                "Fargate does not support the DAEMON scheduling strategy.",
            ));
        }
        let desired = req.desired_count.unwrap_or(1);
        if desired < 0 {
            return Err(AwsError::invalid_parameter(
                "desiredCount can not be less than 0.",
            ));
        }
        check_desired_quota(desired)?;
        if self.active_services(&cluster).await? >= MAX_SERVICES_PER_CLUSTER as i64 {
            return Err(AwsError::client_exception(format!(
                "You have reached the limit of {MAX_SERVICES_PER_CLUSTER} services per cluster."
            )));
        }
        let td_ref = req
            .task_definition
            .as_deref()
            .ok_or_else(|| AwsError::invalid_parameter("TaskDefinition must be specified."))?;
        let tdr = self.service_task_definition(td_ref).await?;
        let td = tdr.task_definition;
        // An empty strategy (Terraform sends one) means none.
        let cps = req
            .capacity_provider_strategy
            .clone()
            .filter(|c| !c.is_empty());
        let launch_type = launch::launch_type(req.launch_type.as_deref(), cps.is_some())?;
        check_references(
            req.load_balancers.as_deref().unwrap_or_default(),
            req.service_registries.as_deref().unwrap_or_default(),
        )?;
        launch::check_launch(&td, &launch_type, req.network_configuration.as_ref())?;
        let config = with_defaults(req.deployment_configuration.clone().unwrap_or_default());
        validate_percents(&config)?;
        let now = epoch_now();
        let fargate = launch_type == "FARGATE";
        let mut service = Service {
            service_arn: self.service_arn(&cluster, &name),
            service_name: name.clone(),
            cluster_arn: cluster_rec.cluster_arn.clone(),
            load_balancers: req.load_balancers.clone().unwrap_or_default(),
            service_registries: req.service_registries.clone().unwrap_or_default(),
            status: ServiceStatus::Active,
            desired_count: desired,
            running_count: 0,
            pending_count: 0,
            launch_type: cps.is_none().then(|| launch_type.clone()),
            capacity_provider_strategy: cps.clone(),
            platform_version: fargate.then(|| {
                req.platform_version
                    .clone()
                    .unwrap_or_else(|| "LATEST".into())
            }),
            platform_family: fargate.then(|| "Linux".into()),
            task_definition: td.task_definition_arn.clone(),
            deployment_configuration: config,
            task_sets: vec![],
            deployments: vec![],
            role_arn: req.role.clone(),
            events: vec![],
            created_at: now,
            current_service_deployment: None,
            current_service_revisions: None,
            placement_constraints: req.placement_constraints.clone().unwrap_or_default(),
            placement_strategy: req.placement_strategy.clone().unwrap_or_default(),
            network_configuration: req.network_configuration.clone(),
            health_check_grace_period_seconds: req.health_check_grace_period_seconds,
            scheduling_strategy: "REPLICA".into(),
            deployment_controller: json!({"type": "ECS"}),
            tags: Some(req.tags.clone().unwrap_or_default()),
            created_by: Some(format!("arn:aws:iam::{}:root", self.scope.account)),
            enable_ecs_managed_tags: req.enable_ecs_managed_tags.unwrap_or(false),
            propagate_tags: req.propagate_tags.clone().unwrap_or_else(|| "NONE".into()),
            enable_execute_command: req.enable_execute_command.unwrap_or(false),
            availability_zone_rebalancing: Some(
                req.availability_zone_rebalancing
                    .clone()
                    .unwrap_or_else(|| "DISABLED".into()),
            ),
        };
        let (dep, revision, sd) = self.new_deployment(
            &cluster,
            &service,
            &td,
            req.network_configuration.clone(),
            vec![],
            now,
        );
        service.current_service_deployment = Some(sd.sd.service_deployment_arn.clone());
        let rec = ServiceRecord {
            service,
            deployments: vec![dep],
            tasks: vec![],
            revisions: vec![revision],
            service_deployments: vec![sd],
            ..Default::default()
        };
        let key = format!("{cluster}/{name}");
        let expect = match self.load_service_rev(&cluster, &name).await? {
            Some((old, _)) if old.service.status == ServiceStatus::Active => {
                return Err(AwsError::invalid_parameter(
                    "Creation of service was not idempotent.",
                ))
            }
            Some((old, _)) if old.service.status == ServiceStatus::Draining => {
                return Err(AwsError::invalid_parameter(
                    "Unable to Start a service that is still Draining.",
                ))
            }
            Some((_, rev)) => Expect::Revision(rev),
            None => Expect::Absent,
        };
        match self.store.put_json(SERVICE, &key, &rec, expect).await {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) => {
                return Err(AwsError::invalid_parameter(
                    "Creation of service was not idempotent.",
                ))
            }
            Err(e) => return Err(store_err(e)),
        }
        Ok(json!({ "service": view(&rec, &[], true) }))
    }

    pub(super) async fn update_service(
        &self,
        req: UpdateServiceRequest,
    ) -> Result<Value, AwsError> {
        let cluster = cluster_name(req.cluster.as_deref());
        self.active_cluster(&cluster).await?;
        let name = berth_core::arn::short_name(&req.service).to_string();
        if req.desired_count.is_some_and(|d| d < 0) {
            return Err(AwsError::invalid_parameter(
                "desiredCount can not be less than 0.",
            ));
        }
        if let Some(d) = req.desired_count {
            check_desired_quota(d)?;
        }
        check_references(
            req.load_balancers.as_deref().unwrap_or_default(),
            req.service_registries.as_deref().unwrap_or_default(),
        )?;
        let new_td = match &req.task_definition {
            Some(t) => Some(self.service_task_definition(t).await?.task_definition),
            None => None,
        };
        loop {
            let (mut rec, rev) = self
                .load_service_rev(&cluster, &name)
                .await?
                .ok_or_else(service_not_found)?;
            if rec.service.status != ServiceStatus::Active {
                return Err(service_not_active());
            }
            let now = epoch_now();
            let s = &mut rec.service;
            if let Some(d) = req.desired_count {
                s.desired_count = d;
            }
            if let Some(c) = &req.deployment_configuration {
                let mut cfg = s.deployment_configuration.clone();
                if c.maximum_percent.is_some() {
                    cfg.maximum_percent = c.maximum_percent;
                }
                if c.minimum_healthy_percent.is_some() {
                    cfg.minimum_healthy_percent = c.minimum_healthy_percent;
                }
                if c.deployment_circuit_breaker.is_some() {
                    cfg.deployment_circuit_breaker = c.deployment_circuit_breaker.clone();
                }
                for (k, v) in &c.extra {
                    cfg.extra.insert(k.clone(), v.clone());
                }
                validate_percents(&cfg)?;
                s.deployment_configuration = cfg;
            }
            if let Some(v) = req.health_check_grace_period_seconds {
                s.health_check_grace_period_seconds = Some(v);
            }
            if let Some(v) = req.enable_execute_command {
                s.enable_execute_command = v;
            }
            if let Some(v) = req.enable_ecs_managed_tags {
                s.enable_ecs_managed_tags = v;
            }
            if let Some(v) = &req.propagate_tags {
                s.propagate_tags = v.clone();
            }
            if let Some(v) = &req.load_balancers {
                s.load_balancers = v.clone();
            }
            if let Some(v) = &req.service_registries {
                s.service_registries = v.clone();
            }
            if let Some(v) = &req.placement_constraints {
                s.placement_constraints = v.clone();
            }
            if let Some(v) = &req.placement_strategy {
                s.placement_strategy = v.clone();
            }
            if let Some(v) = &req.availability_zone_rebalancing {
                s.availability_zone_rebalancing = Some(v.clone());
            }
            let mut redeploy = req.force_new_deployment.unwrap_or(false);
            let td = match &new_td {
                Some(td) => {
                    redeploy |= td.task_definition_arn != s.task_definition;
                    td.clone()
                }
                None => {
                    self.resolve_task_definition(&s.task_definition)
                        .await?
                        .task_definition
                }
            };
            if new_td.is_some() || req.network_configuration.is_some() {
                let launch = s.launch_type.as_deref().unwrap_or("FARGATE");
                let network = req
                    .network_configuration
                    .as_ref()
                    .or(s.network_configuration.as_ref());
                launch::check_launch(&td, launch, network)?;
            }
            if let Some(n) = &req.network_configuration {
                redeploy |= s.network_configuration.as_ref() != Some(n);
                s.network_configuration = Some(n.clone());
            }
            if let Some(p) = &req.platform_version {
                redeploy |= s.platform_version.as_ref() != Some(p);
                s.platform_version = Some(p.clone());
            }
            if redeploy {
                let obs = self.observe(&cluster, &rec).await?;
                let sources = rec
                    .deployments
                    .iter()
                    .map(|d| revision_summary(&rec, &obs, d))
                    .collect();
                let (dep, revision, sd) = self.new_deployment(
                    &cluster,
                    &rec.service,
                    &td,
                    rec.service.network_configuration.clone(),
                    sources,
                    now,
                );
                for old in &mut rec.service_deployments {
                    if matches!(
                        old.sd.status,
                        ServiceDeploymentStatus::Pending
                            | ServiceDeploymentStatus::InProgress
                            | ServiceDeploymentStatus::RollbackInProgress
                    ) {
                        old.sd.status = ServiceDeploymentStatus::Stopped;
                        old.sd.status_reason =
                            Some("Service deployment stopped by a newer deployment.".into());
                        old.sd.stopped_at = Some(now);
                        old.sd.finished_at = Some(now);
                        old.sd.updated_at = now;
                    }
                }
                for d in &mut rec.deployments {
                    d.d.status = DeploymentStatus::Active;
                    d.d.updated_at = now;
                }
                rec.service.task_definition = td.task_definition_arn.clone();
                rec.service.current_service_deployment = Some(sd.sd.service_deployment_arn.clone());
                rec.deployments.insert(0, dep);
                rec.revisions.push(revision);
                rec.service_deployments.push(sd);
                trim_history(&mut rec);
                rec.launch_failures = 0;
                rec.next_launch_at = 0.0;
            } else if let Some(p) = rec.deployments.first_mut() {
                if p.d.desired_count != rec.service.desired_count {
                    p.d.desired_count = rec.service.desired_count;
                    p.d.updated_at = now;
                }
            }
            rec.steady = false;
            match self
                .store
                .put_json(
                    SERVICE,
                    &format!("{cluster}/{name}"),
                    &rec,
                    Expect::Revision(rev),
                )
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(e)),
            }
            return Ok(json!({ "service": self.service_view(&cluster, &rec, true).await? }));
        }
    }

    pub(super) async fn delete_service(
        &self,
        req: DeleteServiceRequest,
    ) -> Result<Value, AwsError> {
        let cluster = cluster_name(req.cluster.as_deref());
        self.active_cluster(&cluster).await?;
        let name = berth_core::arn::short_name(&req.service).to_string();
        loop {
            let (mut rec, rev) = self
                .load_service_rev(&cluster, &name)
                .await?
                .ok_or_else(service_not_found)?;
            match rec.service.status {
                ServiceStatus::Inactive => return Err(service_not_found()),
                ServiceStatus::Draining => {
                    return Ok(
                        json!({ "service": self.service_view(&cluster, &rec, false).await? }),
                    )
                }
                ServiceStatus::Active => {}
            }
            if rec.service.desired_count > 0 && !req.force.unwrap_or(false) {
                return Err(AwsError::invalid_parameter(
                    "The service cannot be stopped while it is scaled above 0.",
                ));
            }
            rec.service.status = ServiceStatus::Draining;
            rec.service.desired_count = 0;
            rec.steady = false;
            match self
                .store
                .put_json(
                    SERVICE,
                    &format!("{cluster}/{name}"),
                    &rec,
                    Expect::Revision(rev),
                )
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(e)),
            }
            return Ok(json!({ "service": self.service_view(&cluster, &rec, false).await? }));
        }
    }

    pub(super) async fn describe_services(
        &self,
        req: DescribeServicesRequest,
    ) -> Result<Value, AwsError> {
        let cluster = cluster_name(req.cluster.as_deref());
        self.active_cluster(&cluster).await?;
        if req.services.is_empty() || req.services.len() > 10 {
            return Err(AwsError::invalid_parameter(
                "services can have between 1 and 10 items.",
            ));
        }
        let tags = include_tags(&req.include);
        let mut services = Vec::new();
        let mut failures = Vec::new();
        for s in &req.services {
            let name = berth_core::arn::short_name(s);
            match self.load_service(&cluster, name).await? {
                Some(rec) => services.push(self.service_view(&cluster, &rec, tags).await?),
                None => failures.push(Failure {
                    arn: self.service_arn(&cluster, name),
                    reason: "MISSING".into(),
                    detail: None,
                }),
            }
        }
        Ok(json!({ "services": services, "failures": failures }))
    }

    pub(super) async fn list_services(&self, req: ListRequest) -> Result<Value, AwsError> {
        let cluster = cluster_name(req.cluster.as_deref());
        self.active_cluster(&cluster).await?;
        let max = max_results(req.max_results)?;
        let token = decode_token(req.next_token.as_deref())?;
        let items: Vec<(String, String)> = self
            .store
            .list_json::<ServiceRecord>(SERVICE, &format!("{cluster}/"))
            .await
            .map_err(store_err)?
            .into_iter()
            .map(|r| r.service)
            .filter(|s| s.status != ServiceStatus::Inactive)
            .filter(|s| {
                req.launch_type
                    .as_ref()
                    .is_none_or(|l| s.launch_type.as_ref() == Some(l))
            })
            .map(|s| (s.service_name, s.service_arn))
            .collect();
        let (arns, next) = page(items, token, max);
        Ok(json!({ "serviceArns": arns, "nextToken": next }))
    }

    pub(super) async fn list_service_deployments(
        &self,
        req: ListServiceDeploymentsRequest,
    ) -> Result<Value, AwsError> {
        let cluster = cluster_name(req.cluster.as_deref());
        self.active_cluster(&cluster).await?;
        let name = berth_core::arn::short_name(&req.service);
        let rec = self
            .load_service(&cluster, name)
            .await?
            .ok_or_else(service_not_found)?;
        let max = max_results(req.max_results)?;
        let token = decode_token(req.next_token.as_deref())?;
        let after = req.created_at.as_ref().and_then(|c| c.after);
        let before = req.created_at.as_ref().and_then(|c| c.before);
        let n = rec.service_deployments.len();
        let items: Vec<(String, ServiceDeploymentBrief)> = rec
            .service_deployments
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, s)| {
                req.status
                    .as_ref()
                    .is_none_or(|st| st.is_empty() || st.iter().any(|x| x == s.sd.status.as_str()))
            })
            .filter(|(_, s)| after.is_none_or(|a| s.sd.created_at >= a))
            .filter(|(_, s)| before.is_none_or(|b| s.sd.created_at <= b))
            .map(|(i, s)| {
                (
                    format!("{:010}", n - i),
                    ServiceDeploymentBrief {
                        service_deployment_arn: s.sd.service_deployment_arn.clone(),
                        service_arn: s.sd.service_arn.clone(),
                        cluster_arn: s.sd.cluster_arn.clone(),
                        started_at: s.sd.started_at,
                        created_at: s.sd.created_at,
                        finished_at: s.sd.finished_at,
                        target_service_revision_arn: s.sd.target_service_revision.arn.clone(),
                        status: s.sd.status,
                        status_reason: s.sd.status_reason.clone(),
                    },
                )
            })
            .collect();
        let (list, next) = page(items, token, max);
        Ok(json!({ "serviceDeployments": list, "nextToken": next }))
    }

    /// DescribeServiceDeployments / DescribeServiceRevisions: 1 to 20 ARNs of `kind`
    /// (`service-deployment`, `service-revision`), each looked up in its service's record by
    /// `find`; the ones not found are `MISSING` failures. `field` names the list in the answer
    /// and in the error message.
    async fn describe_by_arns<T: serde::Serialize>(
        &self,
        arns: Option<Vec<String>>,
        field: &str,
        kind: &str,
        with_tasks: bool,
        find: impl Fn(ServiceRecord, &[Observed], &str) -> Option<T>,
    ) -> Result<Value, AwsError> {
        let arns = arns.unwrap_or_default();
        if arns.is_empty() || arns.len() > 20 {
            let name = format!("{}Arns", field.trim_end_matches('s'));
            return Err(AwsError::invalid_parameter(format!(
                "{name} can have between 1 and 20 items."
            )));
        }
        let mut out = Vec::new();
        let mut failures = Vec::new();
        for arn in &arns {
            let found = match parse_sub_arn(arn, kind) {
                Some((cluster, name, _)) => match self.load_service(cluster, name).await? {
                    Some(rec) => {
                        let obs = if with_tasks {
                            self.observe(cluster, &rec).await?
                        } else {
                            Vec::new()
                        };
                        find(rec, &obs, arn)
                    }
                    None => None,
                },
                None => None,
            };
            match found {
                Some(v) => out.push(v),
                None => failures.push(Failure {
                    arn: arn.clone(),
                    reason: "MISSING".into(),
                    detail: None,
                }),
            }
        }
        Ok(json!({ field: out, "failures": failures }))
    }

    pub(super) async fn describe_service_deployments(
        &self,
        req: DescribeServiceArnsRequest,
    ) -> Result<Value, AwsError> {
        self.describe_by_arns(
            req.service_deployment_arns,
            "serviceDeployments",
            "service-deployment",
            true,
            |rec, obs, arn| {
                rec.service_deployments
                    .iter()
                    .find(|s| s.sd.service_deployment_arn == arn)
                    .map(|s| live_sd(&rec, obs, s))
            },
        )
        .await
    }

    pub(super) async fn describe_service_revisions(
        &self,
        req: DescribeServiceArnsRequest,
    ) -> Result<Value, AwsError> {
        self.describe_by_arns(
            req.service_revision_arns,
            "serviceRevisions",
            "service-revision",
            false,
            |rec, _, arn| {
                rec.revisions
                    .into_iter()
                    .find(|r| r.service_revision_arn == arn)
            },
        )
        .await
    }

    pub(super) async fn stop_service_deployment(
        &self,
        req: StopServiceDeploymentRequest,
    ) -> Result<Value, AwsError> {
        let not_found = || {
            AwsError::client(
                "ServiceDeploymentNotFoundException",
                "The service deployment does not exist.",
            )
        };
        let stop_type = req.stop_type.as_deref().unwrap_or("ROLLBACK");
        if !matches!(stop_type, "ROLLBACK" | "ABORT") {
            return Err(AwsError::invalid_parameter(format!(
                "Invalid stopType: {stop_type}"
            )));
        }
        let arn = req.service_deployment_arn.clone();
        let (cluster, name, _) = parse_sub_arn(&arn, "service-deployment").ok_or_else(not_found)?;
        loop {
            let (mut rec, rev) = self
                .load_service_rev(cluster, name)
                .await?
                .ok_or_else(not_found)?;
            let idx = rec
                .service_deployments
                .iter()
                .position(|s| s.sd.service_deployment_arn == arn)
                .ok_or_else(not_found)?;
            let sd = rec.service_deployments[idx].clone();
            let is_primary = rec
                .deployments
                .first()
                .is_some_and(|d| d.d.id == sd.deployment_id);
            if !sd.sd.status.is_rolling_forward() || !is_primary {
                return Err(AwsError::client(
                    "ConflictException",
                    "The service deployment is not in a state that can be stopped.",
                ));
            }
            let now = epoch_now();
            let rolled = stop_type == "ROLLBACK"
                && start_rollback(
                    &mut rec,
                    "Service deployment rolled back because of a StopServiceDeployment request.",
                    now,
                    &mut id_gen,
                )
                .is_some();
            if !rolled {
                let d = &mut rec.deployments[0];
                d.halted = true;
                d.d.rollout_state = RolloutState::Failed;
                d.d.rollout_state_reason = Some("Service deployment stopped.".into());
                d.d.updated_at = now;
                let s = &mut rec.service_deployments[idx].sd;
                s.status = ServiceDeploymentStatus::Stopped;
                s.status_reason =
                    Some("Service deployment stopped by StopServiceDeployment.".into());
                s.stopped_at = Some(now);
                s.finished_at = Some(now);
                s.updated_at = now;
            }
            match self
                .store
                .put_json(
                    SERVICE,
                    &format!("{cluster}/{name}"),
                    &rec,
                    Expect::Revision(rev),
                )
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(e)),
            }
            return Ok(json!({ "serviceDeploymentArn": arn }));
        }
    }
}

fn trim_history(rec: &mut ServiceRecord) {
    let in_use: Vec<String> = rec
        .deployments
        .iter()
        .map(|d| d.revision_arn.clone())
        .chain(rec.last_completed.iter().map(|d| d.revision_arn.clone()))
        .collect();
    while rec.service_deployments.len() > MAX_HISTORY {
        rec.service_deployments.remove(0);
    }
    while rec.revisions.len() > MAX_HISTORY {
        match rec
            .revisions
            .iter()
            .position(|r| !in_use.contains(&r.service_revision_arn))
        {
            Some(i) => {
                rec.revisions.remove(i);
            }
            None => break,
        }
    }
}
