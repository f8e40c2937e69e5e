//! ECS service quotas are enforced with ECS's errors, so one caller cannot make the service
//! controller plan (or the host run) an unbounded number of tasks.

use berth_tests::{fargate_taskdef, Server};
use serde_json::json;

const NET: &str = "awsvpcConfiguration={subnets=[subnet-12345678]}";

#[test]
fn task_and_service_quotas() {
    let s = Server::start();
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "q"]);
    let td = s.register(&fargate_taskdef("q", "busybox", json!({})));
    let create = |name: &str, desired: &str| {
        s.aws(&[
            "ecs",
            "create-service",
            "--cluster",
            "q",
            "--service-name",
            name,
            "--task-definition",
            &td,
            "--desired-count",
            desired,
            "--launch-type",
            "FARGATE",
            "--network-configuration",
            NET,
        ])
    };
    let e = create("huge", "100000").unwrap_err();
    assert!(e.contains("InvalidParameterException"), "{e}");
    assert!(e.contains("5000"), "{e}");
    let l = s.aws_ok(&["ecs", "list-services", "--cluster", "q"]);
    assert_eq!(l["serviceArns"], json!([]), "{l}");
    create("small", "0").unwrap();
    let e = s
        .aws(&[
            "ecs",
            "update-service",
            "--cluster",
            "q",
            "--service",
            "small",
            "--desired-count",
            "5001",
        ])
        .unwrap_err();
    assert!(e.contains("InvalidParameterException"), "{e}");
    let d = s.aws_ok(&[
        "ecs",
        "describe-services",
        "--cluster",
        "q",
        "--services",
        "small",
    ]);
    assert_eq!(d["services"][0]["desiredCount"], 0, "{d}");
    let e = s
        .aws(&[
            "ecs",
            "run-task",
            "--cluster",
            "q",
            "--task-definition",
            &td,
            "--count",
            "11",
            "--launch-type",
            "FARGATE",
            "--network-configuration",
            NET,
        ])
        .unwrap_err();
    assert!(e.contains("InvalidParameterException"), "{e}");
    s.aws_ok(&[
        "ecs",
        "delete-service",
        "--cluster",
        "q",
        "--service",
        "small",
        "--force",
    ]);
}

/// CreateService and UpdateService refuse load balancers and service registries that do not
/// exist instead of accepting them with no effect.
#[test]
fn dangling_references_are_refused() {
    let s = Server::start();
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "r"]);
    let td = s.register(&fargate_taskdef("r", "busybox", json!({})));
    let tg = "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/web/0123456789abcdef";
    let reg = "arn:aws:servicediscovery:us-east-1:000000000000:service/srv-0123456789abcdef";
    let lb = format!("targetGroupArn={tg},containerName=app,containerPort=80");
    let sr = format!("registryArn={reg}");
    for (flag, value, needle) in [
        ("--load-balancers", lb.as_str(), tg),
        ("--service-registries", sr.as_str(), reg),
    ] {
        let e = s
            .aws(&[
                "ecs",
                "create-service",
                "--cluster",
                "r",
                "--service-name",
                "web",
                "--task-definition",
                &td,
                "--desired-count",
                "0",
                "--launch-type",
                "FARGATE",
                "--network-configuration",
                NET,
                flag,
                value,
            ])
            .unwrap_err();
        assert!(e.contains("InvalidParameterException"), "{e}");
        assert!(e.contains(needle), "{e}");
    }
    let l = s.aws_ok(&["ecs", "list-services", "--cluster", "r"]);
    assert_eq!(l["serviceArns"], json!([]), "{l}");
    s.aws_ok(&[
        "ecs",
        "create-service",
        "--cluster",
        "r",
        "--service-name",
        "web",
        "--task-definition",
        &td,
        "--desired-count",
        "0",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        NET,
    ]);
    let e = s
        .aws(&[
            "ecs",
            "update-service",
            "--cluster",
            "r",
            "--service",
            "web",
            "--load-balancers",
            &lb,
        ])
        .unwrap_err();
    assert!(e.contains("InvalidParameterException"), "{e}");
    let d = s.aws_ok(&[
        "ecs",
        "describe-services",
        "--cluster",
        "r",
        "--services",
        "web",
    ]);
    assert_eq!(d["services"][0]["loadBalancers"], json!([]), "{d}");
    s.aws_ok(&[
        "ecs",
        "delete-service",
        "--cluster",
        "r",
        "--service",
        "web",
        "--force",
    ]);
}
