//! Bad input gets the AWS error a real endpoint gives and changes nothing; state survives a
//! restart.

use std::time::Duration;

use berth_tests::{fargate_taskdef, Server};
use serde_json::{json, Value};

fn raw(s: &Server, target: &str, body: &str) -> (u16, Value) {
    let (status, _, body) = s
        .http(
            "POST",
            "/",
            &[
                ("X-Amz-Target", target),
                ("Content-Type", "application/x-amz-json-1.1"),
            ],
            body.as_bytes(),
        )
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[test]
fn bad_input_gets_aws_errors_and_changes_nothing() {
    let s = Server::start();
    // Invalid Fargate cpu/memory pair.
    let mut td = fargate_taskdef("web", "busybox", json!({}));
    td["memory"] = json!("4096");
    let err = s
        .aws(&[
            "ecs",
            "register-task-definition",
            "--cli-input-json",
            &td.to_string(),
        ])
        .unwrap_err();
    assert!(err.contains("ClientException"), "{err}");
    assert!(
        err.contains("No Fargate configuration exists for given values: 256 CPU, 4096 memory"),
        "{err}"
    );
    let listed = s.aws_ok(&["ecs", "list-task-definitions"]);
    assert_eq!(listed["taskDefinitionArns"], json!([]), "{listed}");
    let fams = s.aws_ok(&["ecs", "list-task-definition-families"]);
    assert_eq!(fams["families"], json!([]), "{fams}");

    // A task definition that is fine; its revision numbering is not disturbed by the failure.
    let td = fargate_taskdef("web", "busybox", json!({}));
    assert_eq!(s.register(&td), "web:1");

    // Unknown cluster.
    let err = s
        .aws(&[
            "ecs",
            "run-task",
            "--cluster",
            "nope",
            "--task-definition",
            "web",
            "--launch-type",
            "FARGATE",
            "--network-configuration",
            "awsvpcConfiguration={subnets=[subnet-1]}",
        ])
        .unwrap_err();
    assert!(err.contains("ClusterNotFoundException"), "{err}");
    let d = s.aws_ok(&["ecs", "describe-clusters", "--clusters", "nope"]);
    assert_eq!(d["failures"][0]["reason"], "MISSING", "{d}");
    assert_eq!(d["clusters"], json!([]));

    // awsvpc without a network configuration.
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "demo"]);
    let err = s
        .aws(&[
            "ecs",
            "run-task",
            "--cluster",
            "demo",
            "--task-definition",
            "web",
            "--launch-type",
            "FARGATE",
        ])
        .unwrap_err();
    assert!(err.contains("InvalidParameterException"), "{err}");
    assert!(
        err.contains("Network Configuration must be provided"),
        "{err}"
    );
    // Unknown task definition.
    let err = s
        .aws(&[
            "ecs",
            "describe-task-definition",
            "--task-definition",
            "nope:9",
        ])
        .unwrap_err();
    assert!(
        err.contains("ClientException") && err.contains("Unable to describe task definition."),
        "{err}"
    );
    let tasks = s.aws_ok(&["ecs", "list-tasks", "--cluster", "demo"]);
    assert_eq!(tasks["taskArns"], json!([]), "nothing ran: {tasks}");

    // Malformed JSON and unknown operations, on the wire.
    let (status, body) = raw(
        &s,
        "AmazonEC2ContainerServiceV20141113.CreateCluster",
        "{not json",
    );
    assert_eq!(status, 400);
    assert_eq!(body["__type"], "SerializationException", "{body}");
    let (status, body) = raw(
        &s,
        "AmazonEC2ContainerServiceV20141113.CreateCluster",
        r#"{"clusterName": 5}"#,
    );
    assert_eq!(status, 400);
    assert_eq!(body["__type"], "SerializationException", "{body}");
    let (status, body) = raw(&s, "AmazonEC2ContainerServiceV20141113.LaunchRockets", "{}");
    assert_eq!(status, 400);
    assert_eq!(body["__type"], "UnknownOperationException", "{body}");
    let clusters = s.aws_ok(&["ecs", "list-clusters"]);
    assert_eq!(
        clusters["clusterArns"].as_array().unwrap().len(),
        1,
        "{clusters}"
    );

    // Defaults: no cluster name means `default`, and a request without `cluster` means it too.
    let c = s.aws_ok(&["ecs", "create-cluster"]);
    assert_eq!(c["cluster"]["clusterName"], "default");
    assert_eq!(
        c["cluster"]["clusterArn"],
        "arn:aws:ecs:us-east-1:000000000000:cluster/default"
    );
    let d = s.aws_ok(&["ecs", "describe-clusters"]);
    assert_eq!(d["clusters"][0]["clusterName"], "default", "{d}");
    let del = s.aws_ok(&["ecs", "delete-cluster", "--cluster", "default"]);
    assert_eq!(del["cluster"]["status"], "INACTIVE", "{del}");
    let err = s.aws(&["ecs", "list-tasks"]).unwrap_err();
    assert!(err.contains("ClusterNotFoundException"), "{err}");

    // ECR errors.
    let err = s
        .aws(&["ecr", "describe-repositories", "--repository-names", "nope"])
        .unwrap_err();
    assert!(err.contains("RepositoryNotFoundException"), "{err}");
    let err = s
        .aws(&["ecr", "create-repository", "--repository-name", "Bad Name"])
        .unwrap_err();
    assert!(err.contains("InvalidParameterException"), "{err}");
}

#[test]
fn state_survives_a_restart_and_running_tasks_are_kept() {
    let mut s = Server::start();
    s.push_test_image("busybox", "1");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "keep"]);
    let td = s.register(&fargate_taskdef(
        "sleepy",
        "busybox",
        json!({"command": ["sleep", "3600"], "stopTimeout": 2}),
    ));
    let arn = s.run_task("keep", &td, None);
    s.wait_status("keep", &arn, "RUNNING", Duration::from_secs(30));

    s.restart_after_kill9();

    let d = s.aws_ok(&["ecs", "describe-clusters", "--clusters", "keep"]);
    assert_eq!(d["clusters"][0]["status"], "ACTIVE", "{d}");
    let t = s.aws_ok(&["ecs", "describe-task-definition", "--task-definition", &td]);
    assert_eq!(t["taskDefinition"]["family"], "sleepy");
    // The task outlived the server (its shim kept it) and is still RUNNING; it stops on
    // request like any other.
    std::thread::sleep(Duration::from_millis(500));
    let t = s.describe_task("keep", &arn);
    assert_eq!(t["lastStatus"], "RUNNING", "{t}");
    s.aws_ok(&["ecs", "stop-task", "--cluster", "keep", "--task", &arn]);
    let t = s.wait_status("keep", &arn, "STOPPED", Duration::from_secs(40));
    assert_eq!(t["stopCode"], "UserInitiated", "{t}");
    let repos = s.aws_ok(&["ecr", "describe-repositories"]);
    assert_eq!(
        repos["repositories"][0]["repositoryName"], "busybox",
        "{repos}"
    );
    // The image pushed before the restart still runs.
    let ov = json!({"containerOverrides": [{"name": "app", "command": ["true"]}]});
    let arn = s.run_task("keep", &td, Some(&ov));
    s.wait_tasks_stopped("keep", &arn);
    let t = s.describe_task("keep", &arn);
    assert_eq!(t["containers"][0]["exitCode"], 0, "{t}");
}
