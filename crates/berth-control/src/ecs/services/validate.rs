//! What CreateService and UpdateService check beyond shapes: service names, quotas,
//! references to load balancers and registries, and deployment percents. The launch type and
//! network checks are shared with RunTask (`ecs/launch.rs`).

use berth_api::ecs::DeploymentConfiguration;
use berth_api::proto::AwsError;
use serde_json::Value;

/// Whether `name` is a valid service name: 1-255 letters, digits, hyphens and underscores.
pub(super) fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// ECS's service quota "Tasks per service" (not adjustable here).
pub(crate) const MAX_TASKS_PER_SERVICE: i64 = 5000;

/// ECS's service quota "Services per cluster".
pub(crate) const MAX_SERVICES_PER_CLUSTER: usize = 5000;

/// `desiredCount` within [`MAX_TASKS_PER_SERVICE`]; `InvalidParameterException` otherwise.
pub(super) fn check_desired_quota(desired: i64) -> Result<(), AwsError> {
    if desired > MAX_TASKS_PER_SERVICE {
        return Err(AwsError::invalid_parameter(format!(
            "desiredCount {desired} exceeds the limit of {MAX_TASKS_PER_SERVICE} tasks per service."
        )));
    }
    Ok(())
}

/// The load balancers and service registries a CreateService/UpdateService request names must
/// exist, as ECS checks them (`InvalidParameterException`). berth has no ELBv2 or Cloud Map yet,
/// so every reference is unknown and refused rather than accepted and silently ignored.
pub(super) fn check_references(
    load_balancers: &[Value],
    registries: &[Value],
) -> Result<(), AwsError> {
    if let Some(lb) = load_balancers.first() {
        if let Some(tg) = lb.get("targetGroupArn").and_then(Value::as_str) {
            return Err(AwsError::invalid_parameter(format!(
                "The target group with targetGroupArn {tg} does not exist."
            )));
        }
        if let Some(name) = lb.get("loadBalancerName").and_then(Value::as_str) {
            return Err(AwsError::invalid_parameter(format!(
                "Load balancer {name} does not exist."
            )));
        }
        return Err(AwsError::invalid_parameter(
            "A load balancer entry must name a targetGroupArn or a loadBalancerName.",
        ));
    }
    if let Some(r) = registries.first() {
        let arn = r.get("registryArn").and_then(Value::as_str).unwrap_or("");
        return Err(AwsError::invalid_parameter(format!(
            "The service registry {arn} does not exist (berth has no Cloud Map yet)."
        )));
    }
    Ok(())
}

/// ECS's defaults for a REPLICA service: circuit breaker off, 200 / 100 percent.
pub(super) fn with_defaults(mut c: DeploymentConfiguration) -> DeploymentConfiguration {
    c.maximum_percent.get_or_insert(200);
    c.minimum_healthy_percent.get_or_insert(100);
    c.deployment_circuit_breaker
        .get_or_insert_with(Default::default);
    c
}

/// `minimumHealthyPercent` 0-100 and `maximumPercent` 100-200 (or 1-99 with a minimum of 0);
/// `InvalidParameterException` otherwise.
pub(super) fn validate_percents(c: &DeploymentConfiguration) -> Result<(), AwsError> {
    let (max, min) = crate::controller::service::percents(c);
    if !(0..=100).contains(&min) {
        return Err(AwsError::invalid_parameter(
            "minimumHealthyPercent must be between 0 and 100.",
        ));
    }
    if max < 100 && !(max > 0 && min == 0) || max > 200 {
        return Err(AwsError::invalid_parameter(
            "maximumPercent must be between 100 and 200 (or above 0 with a minimumHealthyPercent of 0).",
        ));
    }
    Ok(())
}
