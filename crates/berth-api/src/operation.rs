//! The typed operation enum of each AWS service berth serves, parsed from the operation name
//! (the `X-Amz-Target` suffix, the rpcv2Cbor path segment or the query `Action`) in one place:
//! [`Operation::parse`]. Names are botocore's (`botocore/data/<service>/<version>/service-2.json`,
//! `operations`).

use crate::proto::AwsError;

/// An operation enum: one variant per operation berth implements for one service.
pub trait Operation: Copy + Eq + std::fmt::Debug + Send + Sync + 'static {
    /// The service's name as berth's messages write it (`ECS`, `CloudWatch Logs`, ...).
    const SERVICE: &'static str;
    /// Every operation, in declaration order.
    const ALL: &'static [Self];

    /// The operation's wire name (`CreateCluster`).
    fn name(self) -> &'static str;

    /// The error for a name that is not one of [`Operation::ALL`]:
    /// `UnknownOperationException` (HTTP 400) naming the service and the operation.
    fn unknown(name: &str) -> AwsError {
        AwsError::unknown_operation(Self::SERVICE, name)
    }

    /// The operation of wire name `name` (exact, case-sensitive); [`Operation::unknown`] when
    /// berth has no such operation.
    fn parse(name: &str) -> Result<Self, AwsError> {
        Self::ALL
            .iter()
            .copied()
            .find(|op| op.name() == name)
            .ok_or_else(|| Self::unknown(name))
    }
}

/// Declares an operation enum whose variant names are the operations' wire names, and its
/// [`Operation`] impl. An optional `unknown = <fn(&str) -> AwsError>;` overrides the error for
/// an unknown name.
macro_rules! operations {
    (
        $(#[$meta:meta])*
        $name:ident for $service:literal $(, unknown = ($unknown:expr))? {
            $($(#[$vmeta:meta])* $variant:ident,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* #[doc = concat!("`", stringify!($variant), "`.")] $variant,)+
        }

        impl Operation for $name {
            const SERVICE: &'static str = $service;
            const ALL: &'static [Self] = &[$(Self::$variant,)+];

            fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant),)+
                }
            }

            $(
                fn unknown(name: &str) -> AwsError {
                    ($unknown)(name)
                }
            )?
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

operations! {
    /// Amazon ECS (`AmazonEC2ContainerServiceV20141113`).
    EcsOperation for "ECS" {
        CreateCluster,
        DescribeClusters,
        ListClusters,
        DeleteCluster,
        RegisterTaskDefinition,
        DescribeTaskDefinition,
        ListTaskDefinitions,
        ListTaskDefinitionFamilies,
        DeregisterTaskDefinition,
        RunTask,
        StopTask,
        DescribeTasks,
        ListTasks,
        CreateService,
        UpdateService,
        DeleteService,
        DescribeServices,
        ListServices,
        ListServiceDeployments,
        DescribeServiceDeployments,
        DescribeServiceRevisions,
        StopServiceDeployment,
        TagResource,
        UntagResource,
        ListTagsForResource,
    }
}

operations! {
    /// Amazon ECR (`AmazonEC2ContainerRegistry_V20150921`).
    EcrOperation for "ECR" {
        CreateRepository,
        DescribeRepositories,
        DeleteRepository,
        GetAuthorizationToken,
        ListImages,
        DescribeImages,
        BatchGetImage,
        PutImage,
        BatchDeleteImage,
        BatchCheckLayerAvailability,
        InitiateLayerUpload,
        UploadLayerPart,
        CompleteLayerUpload,
        GetDownloadUrlForLayer,
        PutImageTagMutability,
        PutImageScanningConfiguration,
        SetRepositoryPolicy,
        GetRepositoryPolicy,
        DeleteRepositoryPolicy,
        TagResource,
        UntagResource,
        ListTagsForResource,
        DescribeRegistry,
        PutLifecyclePolicy,
        GetLifecyclePolicy,
        DeleteLifecyclePolicy,
        StartLifecyclePolicyPreview,
        GetLifecyclePolicyPreview,
        StartImageScan,
        DescribeImageScanFindings,
    }
}

operations! {
    /// Amazon CloudWatch Logs (`Logs_20140328`).
    LogsOperation for "CloudWatch Logs" {
        CreateLogGroup,
        DeleteLogGroup,
        CreateLogStream,
        DeleteLogStream,
        PutLogEvents,
        DescribeLogGroups,
        DescribeLogStreams,
        GetLogEvents,
        FilterLogEvents,
        PutRetentionPolicy,
        DeleteRetentionPolicy,
        TagResource,
        UntagResource,
        ListTagsForResource,
        TagLogGroup,
        UntagLogGroup,
        ListTagsLogGroup,
    }
}

operations! {
    /// Application Auto Scaling (`AnyScaleFrontendService`).
    AutoScalingOperation for "Application Auto Scaling" {
        RegisterScalableTarget,
        DeregisterScalableTarget,
        DescribeScalableTargets,
        PutScalingPolicy,
        DescribeScalingPolicies,
        DeleteScalingPolicy,
        DescribeScalingActivities,
        TagResource,
        UntagResource,
        ListTagsForResource,
    }
}

operations! {
    /// Amazon CloudWatch metrics and alarms (`GraniteServiceVersion20100801`).
    CloudWatchOperation for "CloudWatch", unknown = (|name: &str| AwsError::client(
        "UnknownOperationException",
        format!("berth's CloudWatch does not implement {name}"),
    )) {
        GetMetricStatistics,
        GetMetricData,
        ListMetrics,
        PutMetricAlarm,
        DescribeAlarms,
        DeleteAlarms,
        TagResource,
        UntagResource,
        ListTagsForResource,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for op in EcsOperation::ALL {
            assert_eq!(EcsOperation::parse(op.name()), Ok(*op));
        }
        assert_eq!(
            EcrOperation::parse("DescribeImageScanFindings"),
            Ok(EcrOperation::DescribeImageScanFindings)
        );
        assert_eq!(
            LogsOperation::parse("ListTagsLogGroup"),
            Ok(LogsOperation::ListTagsLogGroup)
        );
        let e = EcsOperation::parse("LaunchRockets").unwrap_err();
        assert_eq!(
            (e.status, e.error_type.as_str()),
            (400, "UnknownOperationException")
        );
        assert_eq!(
            e.message,
            "berth's ECS does not implement the operation \"LaunchRockets\" yet."
        );
        assert!(EcsOperation::parse("createcluster").is_err());
        let e = AutoScalingOperation::parse("X").unwrap_err();
        assert!(e.message.contains("Application Auto Scaling"), "{e}");
        let e = CloudWatchOperation::parse("DescribeAnomalyDetectors").unwrap_err();
        assert_eq!(
            e.message,
            "berth's CloudWatch does not implement DescribeAnomalyDetectors"
        );
        assert_eq!(CloudWatchOperation::ListMetrics.to_string(), "ListMetrics");
    }
}
