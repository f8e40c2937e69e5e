//! Application Auto Scaling (API 2016-02-06, awsJson1.1, target prefix
//! `AnyScaleFrontendService`) for ECS services: RegisterScalableTarget,
//! DeregisterScalableTarget, DescribeScalableTargets, PutScalingPolicy (TargetTrackingScaling on
//! the predefined metrics `ECSServiceAverageCPUUtilization` / `ECSServiceAverageMemoryUtilization`),
//! DescribeScalingPolicies, DeleteScalingPolicy, DescribeScalingActivities, and TagResource /
//! UntagResource / ListTagsForResource on scalable target ARNs
//! (`arn:aws:application-autoscaling:<region>:<account>:scalable-target/<id>`; also `Tags` on
//! RegisterScalableTarget; at most 50 per target, `aws:` keys reserved).
//!
//! A target tracking policy owns two CloudWatch alarms, as on AWS:
//! `TargetTracking-service/<cluster>/<service>-AlarmHigh-<uuid>` (metric above the target for
//! 3 of 3 minutes) and `...-AlarmLow-<uuid>` (below 90 % of it for 15 of 15 minutes; none with
//! `DisableScaleIn`). They are listed in the policy's `Alarms`, visible through DescribeAlarms,
//! and removed with the policy or its scalable target.
//!
//! Only `ServiceNamespace` `ecs`, `ResourceId` `service/<cluster>/<service>` and
//! `ScalableDimension` `ecs:service:DesiredCount` are served (others: `ValidationException`).
//! Errors: `ValidationException`, `ObjectNotFoundException` (HTTP 400).
//!
//! The controller ([`spawn`]) evaluates every target-tracking policy once per tick: the metric is
//! the average utilization of the service's task samples over the last evaluation window, the new
//! desired count comes from the pure [`decide`], and a change goes through `UpdateService` (the
//! same path as the API) and is recorded as a scaling activity.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api::operation::{AutoScalingOperation, Operation as _};
use berth_api::proto::{parse_body, AwsError};
use berth_apiserver::{AwsService, ErrorKind, ErrorTable, Input};
use berth_core::epoch_now;
use berth_core::status::ServiceStatus;
use berth_store::metrics::MetricKind;
use berth_store::{Expect, StoreExt};
use serde_json::{json, Value};

use crate::{store_err, ControlPlane};

/// The awsJson1.1 `X-Amz-Target` prefix of Application Auto Scaling.
pub const TARGET_PREFIX: &str = "AnyScaleFrontendService";
const TARGET: &str = "aas.target";
const POLICY: &str = "aas.policy";
const ACTIVITY: &str = "aas.activity";
const DIMENSION: &str = "ecs:service:DesiredCount";
const MAX_TAGS: usize = 50;

fn validation(m: impl Into<String>) -> AwsError {
    AwsError::client("ValidationException", m)
}

fn not_found(m: impl Into<String>) -> AwsError {
    AwsError::client("ObjectNotFoundException", m)
}

fn resource_not_found(arn: &str) -> AwsError {
    AwsError::client(
        "ResourceNotFoundException",
        format!(
            "No scalable target found for ARN {}",
            arn.chars().take(300).collect::<String>()
        ),
    )
}

/// Checks a `TagMap` (keys 1-128, values 0-256 characters, `aws:` keys reserved).
fn check_tags(tags: &serde_json::Map<String, Value>) -> Result<(), AwsError> {
    for (k, v) in tags {
        let n = k.chars().count();
        if !(1..=128).contains(&n) {
            return Err(validation(format!(
                "Tag key must be 1 to 128 characters: {}",
                k.chars().take(200).collect::<String>()
            )));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(validation("Tag keys starting with 'aws:' are reserved"));
        }
        match v.as_str() {
            Some(v) if v.chars().count() <= 256 => {}
            _ => {
                return Err(validation(format!(
                    "Tag value for key {k} must be a string of at most 256 characters"
                )))
            }
        }
    }
    Ok(())
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// `(cluster, service)` of a `service/<cluster>/<service>` resource id.
fn parse_resource(id: &str) -> Option<(&str, &str)> {
    let rest = id.strip_prefix("service/")?;
    let (c, svc) = rest.split_once('/')?;
    (!c.is_empty() && !svc.is_empty() && !svc.contains('/')).then_some((c, svc))
}

/// Checks namespace, resource id and dimension; returns the resource id.
fn resource(req: &Value) -> Result<String, AwsError> {
    match s(req, "ServiceNamespace") {
        Some("ecs") => {}
        Some(other) => {
            return Err(validation(format!(
                "Unsupported service namespace {other}; berth serves ecs only"
            )))
        }
        None => return Err(validation("ServiceNamespace is required")),
    }
    let id = s(req, "ResourceId").ok_or_else(|| validation("ResourceId is required"))?;
    if parse_resource(id).is_none() {
        return Err(validation(format!(
            "Unsupported resource ID {id}: expected service/<cluster>/<service>"
        )));
    }
    match s(req, "ScalableDimension") {
        Some(DIMENSION) => Ok(id.to_string()),
        Some(d) => Err(validation(format!("Unsupported scalable dimension {d}"))),
        None => Err(validation("ScalableDimension is required")),
    }
}

fn int(req: &Value, k: &str) -> Result<Option<i64>, AwsError> {
    match req.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| validation(format!("{k} must be an integer"))),
    }
}

/// The alarm names a stored policy lists in `Alarms`.
fn alarm_names(policy: &Value) -> Vec<String> {
    policy["Alarms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["AlarmName"].as_str().map(String::from))
        .collect()
}

/// The CloudWatch alarm AWS creates for a target tracking policy: `AlarmHigh` fires after 3
/// minutes above the target, `AlarmLow` after 15 minutes below 90 % of it; their action is
/// the policy.
fn tracking_alarm(
    name: &str,
    kind: &str,
    id: &str,
    policy_arn: &str,
    cfg: &Value,
    target: f64,
) -> Value {
    let (cluster, service) = parse_resource(id).unwrap_or_default();
    let metric = match cfg["PredefinedMetricSpecification"]["PredefinedMetricType"].as_str() {
        Some("ECSServiceAverageMemoryUtilization") => "MemoryUtilization",
        _ => "CPUUtilization",
    };
    let (op, threshold, periods) = if kind == "AlarmHigh" {
        ("GreaterThanThreshold", target, 3)
    } else {
        ("LessThanThreshold", target * 0.9, 15)
    };
    json!({
        "AlarmName": name,
        "AlarmDescription": format!("DO NOT EDIT OR DELETE. For TargetTrackingScaling policy {policy_arn}."),
        "ActionsEnabled": true,
        "OKActions": [], "AlarmActions": [policy_arn], "InsufficientDataActions": [],
        "MetricName": metric, "Namespace": crate::cloudwatch::NAMESPACE, "Statistic": "Average",
        "Dimensions": [{"Name": "ClusterName", "Value": cluster}, {"Name": "ServiceName", "Value": service}],
        "Period": 60, "EvaluationPeriods": periods, "DatapointsToAlarm": periods,
        "Threshold": threshold, "ComparisonOperator": op, "Unit": "Percent",
    })
}

/// The inputs of one scaling decision.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionInput {
    /// The service's desiredCount now.
    pub current: i64,
    /// The metric (percent), `None` when there are no samples.
    pub metric: Option<f64>,
    pub target: f64,
    pub min: i64,
    pub max: i64,
    /// Epoch seconds now and of the last scale-out / scale-in.
    pub now: f64,
    pub last_scale_out: Option<f64>,
    pub last_scale_in: Option<f64>,
    /// Seconds.
    pub scale_out_cooldown: f64,
    pub scale_in_cooldown: f64,
    pub disable_scale_in: bool,
}

/// Target tracking: `desired = ceil(current * metric / target)` clamped to `[min, max]`.
/// Scale-out waits for the scale-out cooldown; scale-in waits for both cooldowns (a recent
/// scale-out blocks scale-in, as in AWS) and never happens with `disable_scale_in`. A current
/// count outside `[min, max]` is brought inside at once. `None` means no change.
pub fn decide(i: &DecisionInput) -> Option<i64> {
    let clamp = |n: i64| n.clamp(i.min, i.max.max(i.min));
    if i.current != clamp(i.current) {
        return Some(clamp(i.current));
    }
    let metric = i.metric?;
    if i.target <= 0.0 || i.current == 0 {
        return None;
    }
    let raw = (i.current as f64 * metric / i.target - 1e-9).ceil() as i64;
    let desired = clamp(raw);
    let within = |t: Option<f64>, cd: f64| t.is_some_and(|t| i.now - t < cd);
    if desired > i.current {
        (!within(i.last_scale_out, i.scale_out_cooldown)).then_some(desired)
    } else if desired < i.current {
        let blocked = i.disable_scale_in
            || within(i.last_scale_out, i.scale_out_cooldown)
            || within(i.last_scale_in, i.scale_in_cooldown);
        (!blocked).then_some(desired)
    } else {
        None
    }
}

/// Last scaling times per resource id: `(scale-out, scale-in)` epoch seconds.
type Cooldowns = Mutex<HashMap<String, (Option<f64>, Option<f64>)>>;

fn cooldowns() -> &'static Cooldowns {
    static C: std::sync::OnceLock<Cooldowns> = std::sync::OnceLock::new();
    C.get_or_init(Default::default)
}

impl ControlPlane {
    /// Runs one Application Auto Scaling operation named `operation` (an unknown name gives
    /// `UnknownOperationException`); `body` is the raw JSON request.
    pub async fn handle_autoscaling(
        &self,
        operation: &str,
        body: &[u8],
    ) -> Result<Value, AwsError> {
        self.autoscaling(AutoScalingOperation::parse(operation)?, body)
            .await
    }

    /// Runs Application Auto Scaling operation `op`; `body` is the raw JSON request. A store
    /// conflict that escapes the handler runs it again ([`crate::retry_conflicts`]).
    pub async fn autoscaling(
        &self,
        op: AutoScalingOperation,
        body: &[u8],
    ) -> Result<Value, AwsError> {
        let req: Value = parse_body(body)?;
        crate::retry_conflicts(|| self.autoscaling_once(op, &req)).await
    }

    async fn autoscaling_once(
        &self,
        op: AutoScalingOperation,
        req: &Value,
    ) -> Result<Value, AwsError> {
        use AutoScalingOperation as Op;
        match op {
            Op::RegisterScalableTarget => self.register_scalable_target(req).await,
            Op::DeregisterScalableTarget => self.deregister_scalable_target(req).await,
            Op::DescribeScalableTargets => {
                self.describe_aas(TARGET, req, "ScalableTargets", None)
                    .await
            }
            Op::PutScalingPolicy => self.put_scaling_policy(req).await,
            Op::DescribeScalingPolicies => {
                self.describe_aas(POLICY, req, "ScalingPolicies", Some("PolicyNames"))
                    .await
            }
            Op::DeleteScalingPolicy => self.delete_scaling_policy(req).await,
            Op::DescribeScalingActivities => {
                self.describe_aas(ACTIVITY, req, "ScalingActivities", None)
                    .await
            }
            Op::TagResource => self.tag_target(req).await,
            Op::UntagResource => self.untag_target(req).await,
            Op::ListTagsForResource => {
                let (_, t, _) = self.target_by_arn(req).await?;
                Ok(json!({"Tags": t.get("Tags").cloned().unwrap_or(json!({}))}))
            }
        }
    }

    async fn service_state(
        &self,
        resource_id: &str,
    ) -> Result<Option<(i64, Option<ServiceStatus>)>, AwsError> {
        let (c, svc) = parse_resource(resource_id).unwrap_or_default();
        Ok(self
            .store
            .get_json::<Value>(crate::ecs::SERVICE, &format!("{c}/{svc}"))
            .await
            .map_err(store_err)?
            .map(|(v, _)| {
                (
                    v["service"]["desiredCount"].as_i64().unwrap_or(0),
                    v["service"]["status"].as_str().and_then(|s| s.parse().ok()),
                )
            }))
    }

    async fn register_scalable_target(&self, req: &Value) -> Result<Value, AwsError> {
        let id = resource(req)?;
        let key = format!("{id}|{DIMENSION}");
        let min = int(req, "MinCapacity")?;
        let max = int(req, "MaxCapacity")?;
        let tags = match req.get("Tags") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => {
                check_tags(m)?;
                Some(m.clone())
            }
            Some(_) => return Err(validation("Tags must be a map of strings")),
        };
        match self.service_state(&id).await? {
            Some((_, Some(ServiceStatus::Active))) => {}
            _ => return Err(validation(format!("ECS service doesn't exist: {id}"))),
        }
        let existing = self
            .store
            .get_json::<Value>(TARGET, &key)
            .await
            .map_err(store_err)?;
        let mut t = match &existing {
            Some((v, _)) => v.clone(),
            None => {
                let (Some(_), Some(_)) = (min, max) else {
                    return Err(validation(
                        "MinCapacity and MaxCapacity are required when registering a new scalable target",
                    ));
                };
                json!({
                    "ServiceNamespace": "ecs", "ResourceId": id, "ScalableDimension": DIMENSION,
                    "CreationTime": epoch_now(),
                    "RoleARN": format!("arn:aws:iam::{}:role/aws-service-role/ecs.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_ECSService", self.scope.account),
                    "ScalableTargetARN": format!("arn:aws:application-autoscaling:{}:{}:scalable-target/{}", self.scope.region, self.scope.account, uuid::Uuid::new_v4().simple()),
                    "SuspendedState": {"DynamicScalingInSuspended": false, "DynamicScalingOutSuspended": false, "ScheduledScalingSuspended": false},
                })
            }
        };
        if let Some(n) = min {
            t["MinCapacity"] = json!(n);
        }
        if let Some(n) = max {
            t["MaxCapacity"] = json!(n);
        }
        if let Some(new) = tags {
            let mut all = t["Tags"].as_object().cloned().unwrap_or_default();
            all.extend(new);
            if all.len() > MAX_TAGS {
                return Err(AwsError::client(
                    "TooManyTagsException",
                    format!("A scalable target can have at most {MAX_TAGS} tags"),
                ));
            }
            t["Tags"] = Value::Object(all);
        }
        if let Some(v) = req.get("SuspendedState").filter(|v| v.is_object()) {
            for (k, x) in v.as_object().into_iter().flatten() {
                t["SuspendedState"][k] = x.clone();
            }
        }
        let (lo, hi) = (
            t["MinCapacity"].as_i64().unwrap_or(0),
            t["MaxCapacity"].as_i64().unwrap_or(0),
        );
        if lo < 0 || hi < lo {
            return Err(validation("MinCapacity must be >= 0 and <= MaxCapacity"));
        }
        let expect = existing
            .map(|(_, r)| Expect::Revision(r))
            .unwrap_or(Expect::Absent);
        self.store
            .put_json(TARGET, &key, &t, expect)
            .await
            .map_err(|e| match e {
                berth_store::StoreError::Conflict { .. } => AwsError::client(
                    "ConcurrentUpdateException",
                    "Concurrent update of the scalable target",
                ),
                e => store_err(e),
            })?;
        // Bring the service inside the new range right away, as AWS does.
        self.evaluate_target(&t, None).await?;
        Ok(json!({"ScalableTargetARN": t["ScalableTargetARN"]}))
    }

    async fn deregister_scalable_target(&self, req: &Value) -> Result<Value, AwsError> {
        let id = resource(req)?;
        let key = format!("{id}|{DIMENSION}");
        if self
            .store
            .get(TARGET, &key)
            .await
            .map_err(store_err)?
            .is_none()
        {
            return Err(not_found(format!("No scalable target registered for service namespace: ecs, resource ID: {id}, scalable dimension: {DIMENSION}")));
        }
        let mut ops = vec![berth_store::Op::delete(TARGET, &key, Expect::Any)];
        let mut alarms = Vec::new();
        for p in self
            .store
            .list(POLICY, &format!("{key}|"))
            .await
            .map_err(store_err)?
        {
            ops.push(berth_store::Op::delete(POLICY, &p.key, Expect::Any));
            let v: Value = p.decode().map_err(store_err)?;
            alarms.extend(alarm_names(&v));
        }
        self.store.commit(ops).await.map_err(store_err)?;
        self.delete_alarm_records(&alarms).await?;
        Ok(json!({}))
    }

    async fn put_scaling_policy(&self, req: &Value) -> Result<Value, AwsError> {
        let id = resource(req)?;
        let name = s(req, "PolicyName").ok_or_else(|| validation("PolicyName is required"))?;
        let tkey = format!("{id}|{DIMENSION}");
        if self
            .store
            .get(TARGET, &tkey)
            .await
            .map_err(store_err)?
            .is_none()
        {
            return Err(not_found(format!("No scalable target registered for service namespace: ecs, resource ID: {id}, scalable dimension: {DIMENSION}")));
        }
        match s(req, "PolicyType").unwrap_or("StepScaling") {
            "TargetTrackingScaling" => {}
            other => {
                return Err(validation(format!(
                    "berth supports PolicyType TargetTrackingScaling only, not {other}"
                )))
            }
        }
        let cfg = req
            .get("TargetTrackingScalingPolicyConfiguration")
            .filter(|v| v.is_object())
            .ok_or_else(|| validation("TargetTrackingScalingPolicyConfiguration is required for TargetTrackingScaling"))?;
        let target = cfg
            .get("TargetValue")
            .and_then(Value::as_f64)
            .ok_or_else(|| validation("TargetValue is required"))?;
        if !(8.515920e-109..=6.174840e+307).contains(&target) {
            return Err(validation("TargetValue must be positive"));
        }
        match cfg["PredefinedMetricSpecification"]["PredefinedMetricType"].as_str() {
            Some("ECSServiceAverageCPUUtilization" | "ECSServiceAverageMemoryUtilization") => {}
            Some(other) => return Err(validation(format!("PredefinedMetricType {other} is not valid for ecs:service:DesiredCount"))),
            None => return Err(validation("berth needs PredefinedMetricSpecification (CustomizedMetricSpecification is not supported)")),
        }
        let key = format!("{tkey}|{name}");
        let existing = self
            .store
            .get_json::<Value>(POLICY, &key)
            .await
            .map_err(store_err)?;
        let arn = existing
            .as_ref()
            .and_then(|(v, _)| v["PolicyARN"].as_str().map(String::from))
            .unwrap_or_else(|| format!("arn:aws:autoscaling:{}:{}:scalingPolicy:{}:resource/ecs/{id}:policyName/{name}", self.scope.region, self.scope.account, uuid::Uuid::new_v4()));
        // The policy's alarms: reuse the names it has, add or drop AlarmLow with DisableScaleIn.
        let old_alarms: Vec<String> = existing
            .as_ref()
            .map(|(v, _)| alarm_names(v))
            .unwrap_or_default();
        let kinds: &[&str] = if cfg["DisableScaleIn"].as_bool().unwrap_or(false) {
            &["AlarmHigh"]
        } else {
            &["AlarmHigh", "AlarmLow"]
        };
        let mut alarms = Vec::new();
        for k in kinds {
            let tag = format!("-{k}-");
            let n = old_alarms
                .iter()
                .find(|n| n.contains(&tag))
                .cloned()
                .unwrap_or_else(|| format!("TargetTracking-{id}-{k}-{}", uuid::Uuid::new_v4()));
            self.store_alarm(tracking_alarm(&n, k, &id, &arn, cfg, target), Vec::new())
                .await?;
            alarms.push(json!({"AlarmName": n, "AlarmARN": self.alarm_arn(&n)}));
        }
        let dropped: Vec<String> = old_alarms
            .into_iter()
            .filter(|o| !alarms.iter().any(|a| a["AlarmName"] == o.as_str()))
            .collect();
        self.delete_alarm_records(&dropped).await?;
        let p = json!({
            "PolicyARN": arn, "PolicyName": name, "ServiceNamespace": "ecs", "ResourceId": id,
            "ScalableDimension": DIMENSION, "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": cfg, "Alarms": alarms,
            "CreationTime": existing.as_ref().map(|(v, _)| v["CreationTime"].clone()).unwrap_or(json!(epoch_now())),
        });
        self.store
            .put_json(POLICY, &key, &p, Expect::Any)
            .await
            .map_err(store_err)?;
        Ok(json!({"PolicyARN": p["PolicyARN"], "Alarms": p["Alarms"]}))
    }

    async fn delete_scaling_policy(&self, req: &Value) -> Result<Value, AwsError> {
        let id = resource(req)?;
        let name = s(req, "PolicyName").ok_or_else(|| validation("PolicyName is required"))?;
        let key = format!("{id}|{DIMENSION}|{name}");
        if self
            .store
            .get(POLICY, &key)
            .await
            .map_err(store_err)?
            .is_none()
        {
            return Err(not_found(format!("No scaling policy found for service namespace: ecs, resource ID: {id}, scalable dimension: {DIMENSION}, policy name: {name}")));
        }
        let alarms = self
            .store
            .get_json::<Value>(POLICY, &key)
            .await
            .map_err(store_err)?
            .map(|(v, _)| alarm_names(&v))
            .unwrap_or_default();
        self.store
            .commit(vec![berth_store::Op::delete(POLICY, &key, Expect::Any)])
            .await
            .map_err(store_err)?;
        self.delete_alarm_records(&alarms).await?;
        Ok(json!({}))
    }

    /// The scalable target with `ResourceARN`: `(store key, record, revision)`.
    async fn target_by_arn(&self, req: &Value) -> Result<(String, Value, i64), AwsError> {
        let arn = s(req, "ResourceARN").ok_or_else(|| validation("ResourceARN is required"))?;
        let well_formed = arn
            .split_once(":scalable-target/")
            .is_some_and(|(head, id)| {
                head.starts_with("arn:")
                    && head.contains(":application-autoscaling:")
                    && !id.is_empty()
                    && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !well_formed || arn.len() > 1011 {
            return Err(validation(format!(
                "1 validation error detected: Value '{}' at 'resourceARN' failed to satisfy constraint: Member must satisfy regular expression pattern: ^arn:.+:application-autoscaling:.+:[0-9]+:scalable-target\\/[a-zA-Z0-9-]+$",
                arn.chars().take(300).collect::<String>()
            )));
        }
        for r in self.store.list(TARGET, "").await.map_err(store_err)? {
            let v: Value = r.decode().map_err(store_err)?;
            if s(&v, "ScalableTargetARN") == Some(arn) {
                return Ok((r.key, v, r.revision));
            }
        }
        Err(resource_not_found(arn))
    }

    /// Read-modify-write of a target's tags, retried on a concurrent change.
    async fn retag(
        &self,
        req: &Value,
        f: impl Fn(&mut serde_json::Map<String, Value>),
    ) -> Result<Value, AwsError> {
        for _ in 0..5 {
            let (key, mut t, rev) = self.target_by_arn(req).await?;
            let mut tags = t["Tags"].as_object().cloned().unwrap_or_default();
            f(&mut tags);
            if tags.len() > MAX_TAGS {
                return Err(AwsError::client(
                    "TooManyTagsException",
                    format!("A scalable target can have at most {MAX_TAGS} tags"),
                ));
            }
            t["Tags"] = Value::Object(tags);
            match self
                .store
                .put_json(TARGET, &key, &t, Expect::Revision(rev))
                .await
            {
                Ok(()) => return Ok(json!({})),
                Err(berth_store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(AwsError::client(
            "ConcurrentUpdateException",
            "Concurrent update of the scalable target",
        ))
    }

    async fn tag_target(&self, req: &Value) -> Result<Value, AwsError> {
        let new = match req.get("Tags") {
            Some(Value::Object(m)) => m.clone(),
            _ => return Err(validation("Tags is required")),
        };
        check_tags(&new)?;
        self.retag(req, |tags| tags.extend(new.clone())).await
    }

    async fn untag_target(&self, req: &Value) -> Result<Value, AwsError> {
        let keys: Vec<String> = match req.get("TagKeys").and_then(Value::as_array) {
            Some(a) if a.len() <= 200 => a
                .iter()
                .filter_map(|k| k.as_str().map(String::from))
                .collect(),
            Some(_) => return Err(validation("TagKeys can list at most 200 keys")),
            None => return Err(validation("TagKeys is required")),
        };
        self.retag(req, |tags| {
            for k in &keys {
                tags.remove(k);
            }
        })
        .await
    }

    /// Describe* over one record kind, filtered by `ResourceIds` / `ResourceId`,
    /// `ScalableDimension` and (policies) `PolicyNames`. Activities come newest first.
    async fn describe_aas(
        &self,
        kind: &str,
        req: &Value,
        out: &str,
        names: Option<&str>,
    ) -> Result<Value, AwsError> {
        match s(req, "ServiceNamespace") {
            Some("ecs") => {}
            Some(o) => return Err(validation(format!("Unsupported service namespace {o}"))),
            None => return Err(validation("ServiceNamespace is required")),
        }
        let ids: Vec<&str> = match req.get("ResourceIds").and_then(Value::as_array) {
            Some(a) => a.iter().filter_map(Value::as_str).collect(),
            None => s(req, "ResourceId").into_iter().collect(),
        };
        let wanted_names: Vec<&str> = names
            .and_then(|n| req.get(n))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut items: Vec<Value> = self
            .store
            .list_json::<Value>(kind, "")
            .await
            .map_err(store_err)?
            .into_iter()
            .filter(|v| ids.is_empty() || ids.contains(&s(v, "ResourceId").unwrap_or("")))
            .filter(|v| {
                s(req, "ScalableDimension").is_none_or(|d| Some(d) == s(v, "ScalableDimension"))
            })
            .filter(|v| {
                wanted_names.is_empty() || wanted_names.contains(&s(v, "PolicyName").unwrap_or(""))
            })
            .collect();
        if kind == TARGET {
            for t in &mut items {
                if let Some(o) = t.as_object_mut() {
                    o.remove("Tags");
                }
            }
        }
        if kind == ACTIVITY {
            items.reverse();
            if let Some(n) = req.get("MaxResults").and_then(Value::as_u64) {
                items.truncate(n as usize);
            }
        }
        Ok(json!({ out: items }))
    }

    /// Evaluates one scalable target against `policy` (or only its min/max without one) and
    /// applies the decision through UpdateService.
    async fn evaluate_target(
        &self,
        target: &Value,
        policy: Option<(&Value, i64)>,
    ) -> Result<(), AwsError> {
        let id = s(target, "ResourceId").unwrap_or("");
        let Some((cluster, svc)) = parse_resource(id) else {
            return Ok(());
        };
        let Some((current, status)) = self.service_state(id).await? else {
            return Ok(());
        };
        if status != Some(ServiceStatus::Active) {
            return Ok(());
        }
        let now = epoch_now();
        let (last_out, last_in) = cooldowns()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
            .unwrap_or_default();
        let suspended = &target["SuspendedState"];
        let mut input = DecisionInput {
            current,
            metric: None,
            target: 1.0,
            min: target["MinCapacity"].as_i64().unwrap_or(0),
            max: target["MaxCapacity"].as_i64().unwrap_or(0),
            now,
            last_scale_out: last_out,
            last_scale_in: last_in,
            scale_out_cooldown: 300.0,
            scale_in_cooldown: 300.0,
            disable_scale_in: false,
        };
        let mut cause = format!("minimum/maximum capacity of the scalable target {id}");
        if let Some((p, window_ms)) = policy {
            let cfg = &p["TargetTrackingScalingPolicyConfiguration"];
            let kind = match cfg["PredefinedMetricSpecification"]["PredefinedMetricType"].as_str() {
                Some("ECSServiceAverageMemoryUtilization") => MetricKind::Memory,
                _ => MetricKind::Cpu,
            };
            input.metric = self.service_utilization(kind, cluster, svc, window_ms)?;
            input.target = cfg["TargetValue"].as_f64().unwrap_or(1.0);
            input.scale_out_cooldown = cfg["ScaleOutCooldown"].as_f64().unwrap_or(300.0);
            input.scale_in_cooldown = cfg["ScaleInCooldown"].as_f64().unwrap_or(300.0);
            input.disable_scale_in = cfg["DisableScaleIn"].as_bool().unwrap_or(false)
                || suspended["DynamicScalingInSuspended"]
                    .as_bool()
                    .unwrap_or(false);
            if suspended["DynamicScalingOutSuspended"]
                .as_bool()
                .unwrap_or(false)
            {
                input.scale_out_cooldown = f64::INFINITY;
                input.last_scale_out = Some(now);
            }
            cause = format!(
                "monitor alarm {} in state ALARM triggered policy {} (metric {:.1}, target {})",
                p["Alarms"][if input.metric.unwrap_or(0.0) > input.target {
                    0
                } else {
                    1
                }]["AlarmName"]
                    .as_str()
                    .unwrap_or(""),
                s(p, "PolicyName").unwrap_or(""),
                input.metric.unwrap_or(0.0),
                input.target
            );
        }
        let Some(desired) = decide(&input) else {
            return Ok(());
        };
        let body = json!({"cluster": cluster, "service": svc, "desiredCount": desired});
        let result = self
            .handle_ecs("UpdateService", body.to_string().as_bytes())
            .await;
        {
            let mut c = cooldowns().lock().unwrap_or_else(|e| e.into_inner());
            let e = c.entry(id.to_string()).or_default();
            if desired > current {
                e.0 = Some(now)
            } else {
                e.1 = Some(now)
            }
        }
        let (code, msg) = match &result {
            Ok(_) => ("Successful", "Successfully set desired count".to_string()),
            Err(e) => ("Failed", e.to_string()),
        };
        let seq = self
            .store
            .next_sequence(ACTIVITY)
            .await
            .map_err(store_err)?;
        let a = json!({
            "ActivityId": uuid::Uuid::new_v4().to_string(), "ServiceNamespace": "ecs", "ResourceId": id,
            "ScalableDimension": DIMENSION,
            "Description": format!("Setting desired count to {desired}."),
            "Cause": cause, "StartTime": now, "EndTime": epoch_now(),
            "StatusCode": code, "StatusMessage": format!("{msg} to {desired}. Change successfully fulfilled by ecs."),
            "Details": format!("{{\"from\": {current}, \"to\": {desired}}}"),
        });
        self.store
            .put_json(ACTIVITY, &format!("{seq:020}"), &a, Expect::Any)
            .await
            .map_err(store_err)?;
        crate::prom::count_activity();
        tracing::info!(resource = id, from = current, to = desired, "auto scaling");
        result.map(|_| ())
    }

    /// One controller pass over every scalable target and its policies.
    async fn autoscale_pass(&self, window_ms: i64) -> Result<(), AwsError> {
        let targets = self
            .store
            .list_json::<Value>(TARGET, "")
            .await
            .map_err(store_err)?;
        for t in targets {
            let key = format!("{}|{DIMENSION}|", s(&t, "ResourceId").unwrap_or(""));
            let policies = self
                .store
                .list_json::<Value>(POLICY, &key)
                .await
                .map_err(store_err)?;
            if policies.is_empty() {
                self.evaluate_target(&t, None).await?;
            }
            for p in &policies {
                self.evaluate_target(&t, Some((p, window_ms))).await?;
            }
        }
        Ok(())
    }
}

/// Starts the auto scaling controller: a pass every `interval`, with metrics averaged over the
/// last `window`.
pub fn spawn(cp: Arc<ControlPlane>, interval: Duration, window: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = cp.autoscale_pass(window.as_millis() as i64).await {
                tracing::warn!(error = %e, "auto scaling pass failed");
            }
        }
    });
}

/// Application Auto Scaling's error names (botocore `application-autoscaling/2016-02-06`).
pub static ERRORS: ErrorTable = ErrorTable {
    rows: &[],
    defaults: &[
        (ErrorKind::NotFound, "ObjectNotFoundException", 400),
        (ErrorKind::AlreadyExists, "ValidationException", 400),
        (ErrorKind::InvalidArgument, "ValidationException", 400),
        (ErrorKind::Conflict, "ConcurrentUpdateException", 400),
        (ErrorKind::LimitExceeded, "LimitExceededException", 400),
        (ErrorKind::Unauthorized, "AccessDeniedException", 400),
        (ErrorKind::Unsupported, "ValidationException", 400),
        (ErrorKind::Internal, "InternalServiceException", 500),
    ],
};

/// Application Auto Scaling as an [`AwsService`] (awsJson1.1, target prefix
/// `AnyScaleFrontendService`, signing name `application-autoscaling`).
pub struct AutoScalingApi(pub Arc<ControlPlane>);

impl AwsService for AutoScalingApi {
    type Operation = AutoScalingOperation;
    fn signing_name(&self) -> &'static str {
        "application-autoscaling"
    }
    fn json_target_prefix(&self) -> &'static str {
        TARGET_PREFIX
    }
    fn errors(&self) -> &'static ErrorTable {
        &ERRORS
    }
    async fn call(&self, op: AutoScalingOperation, input: Input<'_>) -> Result<Value, AwsError> {
        self.0.autoscaling(op, &input.json_bytes()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(current: i64, metric: f64) -> DecisionInput {
        DecisionInput {
            current,
            metric: Some(metric),
            target: 50.0,
            min: 1,
            max: 4,
            now: 1000.0,
            last_scale_out: None,
            last_scale_in: None,
            scale_out_cooldown: 10.0,
            scale_in_cooldown: 10.0,
            disable_scale_in: false,
        }
    }

    #[test]
    fn target_tracking_formula_and_clamp() {
        assert_eq!(decide(&input(1, 100.0)), Some(2));
        assert_eq!(decide(&input(2, 90.0)), Some(4));
        assert_eq!(decide(&input(3, 100.0)), Some(4)); // clamped to max
        assert_eq!(decide(&input(2, 50.0)), None); // on target
        assert_eq!(decide(&input(2, 45.0)), None); // ceil(1.8) = 2
        assert_eq!(decide(&input(4, 10.0)), Some(1));
        assert_eq!(decide(&input(3, 0.0)), Some(1)); // clamped to min
        let mut i = input(1, 100.0);
        i.metric = None;
        assert_eq!(decide(&i), None);
        i.current = 7; // outside the range: brought inside without a metric
        assert_eq!(decide(&i), Some(4));
    }

    #[test]
    fn cooldowns_and_disable_scale_in() {
        let mut i = input(1, 100.0);
        i.last_scale_out = Some(995.0);
        assert_eq!(decide(&i), None);
        i.last_scale_out = Some(985.0);
        assert_eq!(decide(&i), Some(2));
        let mut i = input(4, 0.0);
        i.last_scale_out = Some(995.0); // a recent scale-out blocks scale-in
        assert_eq!(decide(&i), None);
        i.last_scale_out = None;
        i.last_scale_in = Some(995.0);
        assert_eq!(decide(&i), None);
        i.last_scale_in = Some(980.0);
        assert_eq!(decide(&i), Some(1));
        i.disable_scale_in = true;
        assert_eq!(decide(&i), None);
    }
}
