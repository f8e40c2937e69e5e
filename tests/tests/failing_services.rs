//! A service whose every revision fails settles instead of looping: the circuit breaker rolls
//! back once, a rollback that fails too ends ROLLBACK_FAILED with an event saying so, task
//! starts stay bounded, and a good revision deployed afterwards brings the service back.

use std::time::{Duration, Instant};

use berth_tests::{fargate_taskdef, Server};
use serde_json::{json, Value};

const NET: &str = "awsvpcConfiguration={subnets=[subnet-12345678]}";

fn service(s: &Server) -> Value {
    s.aws_ok(&[
        "ecs",
        "describe-services",
        "--cluster",
        "demo",
        "--services",
        "web",
    ])["services"][0]
        .clone()
}

fn poll(s: &Server, what: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = service(s);
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "never {what}: {v:#}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every task the service ever started (RUNNING and STOPPED).
fn started_tasks(s: &Server) -> usize {
    ["RUNNING", "STOPPED"]
        .iter()
        .map(|st| {
            s.aws_ok(&[
                "ecs",
                "list-tasks",
                "--cluster",
                "demo",
                "--service-name",
                "web",
                "--desired-status",
                st,
            ])["taskArns"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum()
}

fn update(s: &Server, td: &str) -> String {
    let v = s.aws_ok(&[
        "ecs",
        "update-service",
        "--cluster",
        "demo",
        "--service",
        "web",
        "--task-definition",
        td,
    ]);
    v["service"]["deployments"][0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_rollback_that_fails_settles_and_a_good_revision_recovers() {
    let s = Server::start();
    s.push_test_image("busybox", "1");
    s.push_test_image("busybox", "2");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "demo"]);
    let sleeper = json!({"command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
                         "stopTimeout": 2});
    let first = s.register(&fargate_taskdef("web", "busybox", sleeper.clone()));
    s.aws_ok(&[
        "ecs",
        "create-service",
        "--cluster",
        "demo",
        "--service-name",
        "web",
        "--task-definition",
        &first,
        "--desired-count",
        "1",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        NET,
        "--deployment-configuration",
        "deploymentCircuitBreaker={enable=true,rollback=true}",
    ]);
    poll(&s, "stable", Duration::from_secs(60), |v| {
        v["deployments"][0]["rolloutState"] == "COMPLETED" && v["runningCount"] == 1
    });
    // The revision a rollback would restore cannot start any more: its image tag is gone.
    s.aws_ok(&[
        "ecr",
        "batch-delete-image",
        "--repository-name",
        "busybox",
        "--image-ids",
        "imageTag=1",
    ]);
    let mut bad = fargate_taskdef("web", "busybox", json!({"command": ["sh", "-c", "exit 3"]}));
    bad["containerDefinitions"][0]["image"] = json!("busybox:2");
    let bad = s.register(&bad);
    let failing = update(&s, &bad);
    let v = poll(&s, "settled", Duration::from_secs(150), |v| {
        v["events"].as_array().unwrap().iter().any(|e| {
            e["message"]
                .as_str()
                .unwrap_or("")
                .contains("rollback failed")
        })
    });
    assert_ne!(v["deployments"][0]["id"], failing.as_str(), "{v:#}");
    assert_eq!(v["deployments"][0]["rolloutState"], "FAILED", "{v:#}");
    let list = s.aws_ok(&[
        "ecs",
        "list-service-deployments",
        "--cluster",
        "demo",
        "--service",
        "web",
    ]);
    assert_eq!(
        list["serviceDeployments"][0]["status"], "ROLLBACK_FAILED",
        "{list:#}"
    );
    // Settled: nothing more starts.
    let before = started_tasks(&s);
    std::thread::sleep(Duration::from_secs(15));
    let after = started_tasks(&s);
    assert_eq!(
        before, after,
        "tasks kept starting after the rollback failed"
    );
    assert!(after <= 12, "{after} tasks started in all");
    // The first task (of the first revision) kept serving through all of it.
    assert_eq!(service(&s)["runningCount"], 1);

    // A good revision brings the service back to a completed deployment.
    let mut good = fargate_taskdef("web", "busybox", sleeper);
    good["containerDefinitions"][0]["image"] = json!("busybox:2");
    let good = s.register(&good);
    let id = update(&s, &good);
    poll(&s, "recovered", Duration::from_secs(120), |v| {
        v["deployments"].as_array().unwrap().len() == 1
            && v["deployments"][0]["id"] == id.as_str()
            && v["deployments"][0]["rolloutState"] == "COMPLETED"
            && v["runningCount"] == 1
    });
}
