//! A call berth cannot serve yet is answered in the calling service's own protocol and error
//! shape, naming the service and the operation, so the AWS CLI (and Terraform) print a message
//! that says what berth lacks instead of an unparseable or empty error.

use berth_tests::Server;

#[test]
fn unimplemented_calls_name_the_service_and_operation() {
    let s = Server::start();
    for (args, code, needles) in [
        (
            &["ec2", "describe-vpcs"][..],
            "InvalidAction",
            &["EC2", "DescribeVpcs"][..],
        ),
        (
            &["iam", "list-roles"],
            "InvalidAction",
            &["IAM", "ListRoles"],
        ),
        (
            &["sts", "get-caller-identity"],
            "InvalidAction",
            &["STS", "GetCallerIdentity"],
        ),
        (
            &["elbv2", "describe-load-balancers"],
            "InvalidAction",
            &["Elastic Load Balancing", "DescribeLoadBalancers"],
        ),
        (
            &["servicediscovery", "list-namespaces"],
            "UnknownOperationException",
            &["Cloud Map", "ListNamespaces"],
        ),
        (
            &["secretsmanager", "list-secrets"],
            "UnknownOperationException",
            &["Secrets Manager", "ListSecrets"],
        ),
        (
            &["eks", "list-clusters"],
            "UnknownOperationException",
            &["EKS", "/clusters"],
        ),
        (
            &["ecs", "list-account-settings"],
            "UnknownOperationException",
            &["ECS", "ListAccountSettings"],
        ),
        (
            &["logs", "describe-destinations"],
            "UnknownOperationException",
            &["CloudWatch Logs", "DescribeDestinations"],
        ),
        (
            &["ecr", "describe-pull-through-cache-rules"],
            "UnknownOperationException",
            &["ECR", "DescribePullThroughCacheRules"],
        ),
    ] {
        let e = s.aws(args).expect_err(&format!("{args:?} succeeded"));
        assert!(e.contains(&format!("({code})")), "{args:?}: {e}");
        assert!(e.contains("berth"), "{args:?}: {e}");
        for n in needles {
            assert!(e.contains(n), "{args:?} lacks {n}: {e}");
        }
    }
}

/// CloudWatch's own query protocol names an action it lacks with the protocol's `InvalidAction`.
#[test]
fn cloudwatch_query_actions_berth_lacks_are_invalid_actions() {
    let s = Server::start();
    let body = b"Action=DescribeAnomalyDetectors&Version=2010-08-01";
    let ct = [(
        "Content-Type",
        "application/x-www-form-urlencoded; charset=utf-8",
    )];
    let (status, _, reply) = s.http("POST", "/", &ct, body).unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("<Code>InvalidAction</Code>"), "{text}");
    assert!(text.contains("DescribeAnomalyDetectors"), "{text}");
}
