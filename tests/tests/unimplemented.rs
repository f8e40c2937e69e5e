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
