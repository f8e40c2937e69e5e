//! The launch checks RunTask, CreateService and UpdateService share: which launch type a
//! request asks for, and whether a task definition can be launched that way with the network
//! configuration given. Errors are the ones ECS answers (`InvalidParameterException`; see
//! botocore `ecs/2014-11-13/service-2.json`, `LaunchType`, `AwsVpcConfiguration`).

use berth_api::ecs::{NetworkConfiguration, TaskDefinition};
use berth_api::proto::AwsError;

use super::taskdef_rules::check_runnable;

/// The launch type of a request: its `launchType`, or FARGATE when it gives none (with or
/// without a capacity provider strategy; `has_strategy` says whether it gives one).
///
/// Errors: `InvalidParameterException` when it gives both a launch type and a strategy, or
/// a launch type other than FARGATE, EC2 or EXTERNAL.
pub(crate) fn launch_type(requested: Option<&str>, has_strategy: bool) -> Result<String, AwsError> {
    let launch_type = match requested {
        Some(_) if has_strategy => {
            return Err(AwsError::invalid_parameter(
                "Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.",
            ))
        }
        Some(l) => l.to_string(),
        None => "FARGATE".to_string(),
    };
    if !matches!(launch_type.as_str(), "FARGATE" | "EC2" | "EXTERNAL") {
        return Err(AwsError::invalid_parameter(format!(
            "Invalid launchType: {launch_type}"
        )));
    }
    Ok(launch_type)
}

/// Whether `td` can be launched on `launch_type` with `network`:
/// - FARGATE needs FARGATE among the task definition's `compatibilities`
///   (`InvalidParameterException` "Task definition does not support launch_type FARGATE.",
///   what ECS answers RunTask, CreateService and UpdateService alike);
/// - nothing berth cannot honour on that launch type ([`check_runnable`]: `ClientException`);
/// - `networkMode` awsvpc needs an `awsvpcConfiguration`, and one given needs subnets
///   (`InvalidParameterException`).
pub(crate) fn check_launch(
    td: &TaskDefinition,
    launch_type: &str,
    network: Option<&NetworkConfiguration>,
) -> Result<(), AwsError> {
    if launch_type == "FARGATE" && !td.compatibilities.iter().any(|c| c == "FARGATE") {
        return Err(AwsError::invalid_parameter(
            "Task definition does not support launch_type FARGATE.",
        ));
    }
    check_runnable(td, launch_type)?;
    let vpc = network.and_then(|n| n.awsvpc_configuration.as_ref());
    if td.network_mode.as_deref() == Some("awsvpc") && vpc.is_none() {
        return Err(AwsError::invalid_parameter(
            "Network Configuration must be provided when networkMode 'awsvpc' is specified.",
        ));
    }
    if vpc.is_some_and(|v| v.subnets.is_empty()) {
        return Err(AwsError::invalid_parameter("subnets can not be empty."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::ecs::AwsVpcConfiguration;

    fn td(compat: &[&str], mode: Option<&str>) -> TaskDefinition {
        TaskDefinition {
            compatibilities: compat.iter().map(|c| c.to_string()).collect(),
            network_mode: mode.map(str::to_string),
            ..Default::default()
        }
    }

    fn net(subnets: &[&str]) -> NetworkConfiguration {
        NetworkConfiguration {
            awsvpc_configuration: Some(AwsVpcConfiguration {
                subnets: subnets.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
        }
    }

    fn code(e: AwsError) -> String {
        format!("{} {}", e.error_type, e.message)
    }

    #[test]
    fn launch_type_defaults_to_fargate_and_refuses_both_or_unknown() {
        assert_eq!(launch_type(None, false).unwrap(), "FARGATE");
        assert_eq!(launch_type(None, true).unwrap(), "FARGATE");
        assert_eq!(launch_type(Some("EC2"), false).unwrap(), "EC2");
        let e = code(launch_type(Some("EC2"), true).unwrap_err());
        assert!(
            e.starts_with("InvalidParameterException Specifying both"),
            "{e}"
        );
        let e = code(launch_type(Some("MOON"), false).unwrap_err());
        assert_eq!(e, "InvalidParameterException Invalid launchType: MOON");
    }

    #[test]
    fn fargate_needs_a_fargate_task_definition() {
        let ec2 = td(&["EC2"], Some("awsvpc"));
        let e = code(check_launch(&ec2, "FARGATE", Some(&net(&["subnet-1"]))).unwrap_err());
        assert_eq!(
            e,
            "InvalidParameterException Task definition does not support launch_type FARGATE."
        );
        check_launch(&ec2, "EC2", Some(&net(&["subnet-1"]))).unwrap();
        check_launch(
            &td(&["EC2", "FARGATE"], Some("awsvpc")),
            "FARGATE",
            Some(&net(&["s"])),
        )
        .unwrap();
    }

    #[test]
    fn awsvpc_needs_a_network_configuration_with_subnets() {
        let fargate = td(&["FARGATE"], Some("awsvpc"));
        let e = code(check_launch(&fargate, "FARGATE", None).unwrap_err());
        assert!(e.contains("Network Configuration must be provided"), "{e}");
        let e = code(check_launch(&fargate, "FARGATE", Some(&net(&[]))).unwrap_err());
        assert_eq!(e, "InvalidParameterException subnets can not be empty.");
        check_launch(&td(&["EC2"], Some("bridge")), "EC2", None).unwrap();
    }
}
