//! ECS services converge (issue 5), driven by real clients against a real server running real
//! containers: the AWS CLI (including `aws ecs wait services-stable`) and Terraform's AWS
//! provider with `wait_for_steady_state = true`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::{fargate_taskdef, task_id, temp_dir, Server};
use serde_json::{json, Value};

const NET: &str = "awsvpcConfiguration={subnets=[subnet-12345678]}";

/// A container that exits promptly on SIGTERM (a bare `sleep` as PID 1 ignores it), so
/// scheduler stops take milliseconds rather than the stop timeout.
fn sleeper(tag: &str) -> Value {
    json!({
        "command": ["sh", "-c", format!("trap 'exit 0' TERM; sleep {tag} & wait")],
        "stopTimeout": 2
    })
}

fn setup(s: &Server, family: &str, container: Value) -> String {
    s.push_test_image("busybox", "1");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "demo"]);
    s.register(&fargate_taskdef(family, "busybox", container))
}

fn describe(s: &Server, svc: &str) -> Value {
    let v = s.aws_ok(&[
        "ecs",
        "describe-services",
        "--cluster",
        "demo",
        "--services",
        svc,
        "--include",
        "TAGS",
    ]);
    v["services"][0].clone()
}

/// Polls DescribeServices until `done(service)` holds.
fn wait_until(
    s: &Server,
    svc: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = describe(s, svc);
        if done(&v) {
            return v;
        }
        if Instant::now() > deadline {
            panic!("service never got {what}: {v:#}\nserver log:\n{}", s.log());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stable(v: &Value) -> bool {
    v["deployments"].as_array().is_some_and(|d| d.len() == 1)
        && v["runningCount"] == v["desiredCount"]
        && v["pendingCount"] == 0
        && v["deployments"][0]["rolloutState"] == "COMPLETED"
}

fn service_tasks(s: &Server, svc: &str) -> Vec<String> {
    let v = s.aws_ok(&[
        "ecs",
        "list-tasks",
        "--cluster",
        "demo",
        "--service-name",
        svc,
    ]);
    v["taskArns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn create_service(s: &Server, name: &str, td: &str, count: u32, extra: &[&str]) -> Value {
    let n = count.to_string();
    let mut args = vec![
        "ecs",
        "create-service",
        "--cluster",
        "demo",
        "--service-name",
        name,
        "--task-definition",
        td,
        "--desired-count",
        &n,
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        NET,
    ];
    args.extend_from_slice(extra);
    s.aws_ok(&args)["service"].clone()
}

fn messages(v: &Value) -> Vec<String> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

/// PIDs (host namespace) of processes whose command line is exactly `argv`.
fn pids_of(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn service_of_three_becomes_stable_and_replaces_lost_tasks() {
    let s = Server::start();
    // A command line unique to this test, so its container processes can be found and killed.
    let td = setup(
        &s,
        "svc-web",
        json!({"command": ["sleep", "7777001"], "stopTimeout": 2}),
    );
    let created = create_service(&s, "web", &td, 3, &[]);
    assert_eq!(created["status"], "ACTIVE", "{created}");
    assert_eq!(created["desiredCount"], 3);
    assert_eq!(created["deployments"][0]["status"], "PRIMARY");
    assert_eq!(created["deployments"][0]["rolloutState"], "IN_PROGRESS");
    assert!(created["deployments"][0]["id"]
        .as_str()
        .unwrap()
        .starts_with("ecs-svc/"));
    assert_eq!(
        created["deploymentConfiguration"]["maximumPercent"], 200,
        "{created}"
    );
    // The real waiter (botocore ServicesStable).
    s.aws_ok(&[
        "ecs",
        "wait",
        "services-stable",
        "--cluster",
        "demo",
        "--services",
        "web",
    ]);
    // The waiter only needs runningCount == desiredCount; the rollout completes once the tasks
    // have stayed up for the stabilization window.
    let v = wait_until(&s, "web", "stable", Duration::from_secs(30), stable);
    let msgs = messages(&v);
    assert!(
        msgs.iter()
            .any(|m| m == "(service web) has reached a steady state."),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("(service web) has started 3 tasks: (task ")),
        "{msgs:?}"
    );
    let cluster = s.aws_ok(&["ecs", "describe-clusters", "--clusters", "demo"]);
    assert_eq!(cluster["clusters"][0]["activeServicesCount"], 1);
    assert_eq!(cluster["clusters"][0]["runningTasksCount"], 3);
    let tasks = service_tasks(&s, "web");
    assert_eq!(tasks.len(), 3);
    let t = s.describe_task("demo", &tasks[0]);
    assert_eq!(t["group"], "service:web");
    assert_eq!(t["startedBy"], v["deployments"][0]["id"]);

    // StopTask: replaced; the stop is UserInitiated, not a failure.
    s.aws_ok(&["ecs", "stop-task", "--cluster", "demo", "--task", &tasks[0]]);
    let v = wait_until(&s, "web", "a replacement", Duration::from_secs(60), |v| {
        stable(v) && !service_tasks(&s, "web").contains(&tasks[0])
    });
    assert_eq!(v["deployments"][0]["failedTasks"], 0, "{v:#}");
    let stopped = s.describe_task("demo", &tasks[0]);
    assert_eq!(stopped["stopCode"], "UserInitiated");

    // Kill a container's process: the task stops (its essential container exited) and the
    // service starts another one.
    let before = service_tasks(&s, "web");
    let pids = pids_of(&["sleep", "7777001"]);
    assert_eq!(pids.len(), 3, "expected 3 container processes: {pids:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let v = wait_until(
        &s,
        "web",
        "the killed task replaced",
        Duration::from_secs(60),
        |v| {
            v["deployments"][0]["failedTasks"] == 1
                && stable(v)
                && service_tasks(&s, "web") != before
        },
    );
    assert_eq!(v["runningCount"], 3);
    let now = service_tasks(&s, "web");
    let killed: Vec<String> = before
        .iter()
        .filter(|t| !now.contains(t))
        .cloned()
        .collect();
    assert_eq!(killed.len(), 1, "{before:?} -> {now:?}\n{v:#}");
    let k = s.describe_task("demo", &killed[0]);
    assert_eq!(k["stopCode"], "EssentialContainerExited", "{k}");
    assert_eq!(pids_of(&["sleep", "7777001"]).len(), 3);

    // Scale in: tasks stopped by the scheduler.
    s.aws_ok(&[
        "ecs",
        "update-service",
        "--cluster",
        "demo",
        "--service",
        "web",
        "--desired-count",
        "1",
    ]);
    let v = wait_until(&s, "web", "scaled in", Duration::from_secs(60), |v| {
        stable(v) && v["runningCount"] == 1
    });
    assert_eq!(v["deployments"].as_array().unwrap().len(), 1);
    let stopped = s.aws_ok(&[
        "ecs",
        "list-tasks",
        "--cluster",
        "demo",
        "--service-name",
        "web",
        "--desired-status",
        "STOPPED",
    ]);
    let codes: Vec<Value> = stopped["taskArns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| s.describe_task("demo", t.as_str().unwrap())["stopCode"].clone())
        .collect();
    assert_eq!(
        codes
            .iter()
            .filter(|c| *c == "ServiceSchedulerInitiated")
            .count(),
        2,
        "{codes:?}"
    );
}

#[test]
fn rolling_update_respects_minimum_healthy_and_maximum_percent() {
    let s = Server::start();
    let td1 = setup(&s, "svc-roll", sleeper("1001"));
    let td2 = s.register(&fargate_taskdef("svc-roll", "busybox", sleeper("1002")));
    create_service(
        &s,
        "roll",
        &td1,
        4,
        &[
            "--deployment-configuration",
            "maximumPercent=150,minimumHealthyPercent=50",
        ],
    );
    let v = wait_until(&s, "roll", "stable", Duration::from_secs(60), stable);
    let first = v["deployments"][0]["id"].as_str().unwrap().to_string();

    // Sample DescribeServices (raw awsJson requests, a few ms each) from just before the update
    // until the rollout is done: never more than 150% of 4 tasks, never fewer than 50% running.
    let port = s.port;
    const DESCRIBE: &[u8] = br#"{"cluster":"demo","services":["roll"]}"#;
    let api_headers = [
        (
            "X-Amz-Target",
            "AmazonEC2ContainerServiceV20141113.DescribeServices",
        ),
        ("Content-Type", "application/x-amz-json-1.1"),
    ];
    // Signed once: a SigV4 signature stays valid for 15 minutes.
    let mut signed: Vec<(String, String)> = api_headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    signed.extend(s.sign("POST", "/", &api_headers, DESCRIBE));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let headers: Vec<(&str, &str)> = signed
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let (status, _, body) =
                    berth_tests::http(port, "POST", "/", &headers, DESCRIBE).unwrap();
                assert_eq!(status, 200);
                let v: Value = serde_json::from_slice(&body).unwrap();
                samples.push(v["services"][0].clone());
                std::thread::sleep(Duration::from_millis(5));
            }
            samples
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let up = s.aws_ok(&[
        "ecs",
        "update-service",
        "--cluster",
        "demo",
        "--service",
        "roll",
        "--task-definition",
        &td2,
    ])["service"]
        .clone();
    assert_eq!(up["deployments"].as_array().unwrap().len(), 2, "{up:#}");
    assert_eq!(up["deployments"][0]["status"], "PRIMARY");
    assert_eq!(up["deployments"][1]["status"], "ACTIVE");
    assert_eq!(up["deployments"][1]["id"], first.as_str());
    let second = up["deployments"][0]["id"].as_str().unwrap().to_string();
    let v = wait_until(&s, "roll", "rolled out", Duration::from_secs(90), |v| {
        stable(v) && v["deployments"][0]["id"] == second.as_str()
    });
    assert!(v["taskDefinition"].as_str().unwrap().ends_with(&td2));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let samples = sampler.join().unwrap();
    let mut max_seen = 0;
    let mut rolling = 0;
    for v in &samples {
        let deps = v["deployments"].as_array().unwrap();
        let total: i64 = deps
            .iter()
            .map(|d| d["runningCount"].as_i64().unwrap() + d["pendingCount"].as_i64().unwrap())
            .sum();
        let running: i64 = deps
            .iter()
            .map(|d| d["runningCount"].as_i64().unwrap())
            .sum();
        assert!(total <= 6, "more than maximumPercent: {v:#}");
        assert!(running >= 2, "fewer than minimumHealthyPercent: {v:#}");
        max_seen = max_seen.max(total);
        if deps.len() == 2 {
            rolling += 1;
        }
    }
    assert!(
        rolling > 0,
        "no sample caught the rollout ({} samples)",
        samples.len()
    );
    eprintln!(
        "{} samples, {rolling} during the rollout, at most {max_seen} tasks",
        samples.len()
    );
    for t in service_tasks(&s, "roll") {
        let t = s.describe_task("demo", &t);
        assert!(t["taskDefinitionArn"].as_str().unwrap().ends_with(&td2));
        assert_eq!(t["startedBy"], second.as_str());
    }

    // Service deployments and revisions (what Terraform polls).
    let n = second.strip_prefix("ecs-svc/").unwrap();
    let list = s.aws_ok(&[
        "ecs",
        "list-service-deployments",
        "--cluster",
        "demo",
        "--service",
        "roll",
    ]);
    let sds = list["serviceDeployments"].as_array().unwrap();
    assert_eq!(sds.len(), 2, "{list:#}");
    let newest = &sds[0];
    assert!(
        newest["targetServiceRevisionArn"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/roll/{n}")),
        "{list:#}"
    );
    assert_eq!(newest["status"], "SUCCESSFUL");
    let d = s.aws_ok(&[
        "ecs",
        "describe-service-deployments",
        "--service-deployment-arns",
        newest["serviceDeploymentArn"].as_str().unwrap(),
    ]);
    let sd = &d["serviceDeployments"][0];
    assert_eq!(sd["status"], "SUCCESSFUL", "{d:#}");
    assert_eq!(sd["targetServiceRevision"]["requestedTaskCount"], 4);
    assert_eq!(sd["sourceServiceRevisions"].as_array().unwrap().len(), 1);
    let r = s.aws_ok(&[
        "ecs",
        "describe-service-revisions",
        "--service-revision-arns",
        newest["targetServiceRevisionArn"].as_str().unwrap(),
    ]);
    assert!(r["serviceRevisions"][0]["taskDefinition"]
        .as_str()
        .unwrap()
        .ends_with(&td2));
    let missing = s.aws_ok(&[
        "ecs",
        "describe-service-revisions",
        "--service-revision-arns",
        "arn:aws:ecs:us-east-1:000000000000:service-revision/demo/roll/1",
    ]);
    assert_eq!(missing["failures"][0]["reason"], "MISSING");
    let msgs = messages(&describe(&s, "roll"));
    assert!(
        msgs.iter()
            .any(|m| m == &format!("(service roll) (deployment {second}) deployment completed.")),
        "{msgs:?}"
    );
}

#[test]
fn failing_deployment_trips_the_circuit_breaker_and_rolls_back() {
    let s = Server::start();
    let good = setup(&s, "svc-cb", sleeper("1003"));
    let bad = s.register(&fargate_taskdef(
        "svc-cb",
        "busybox",
        json!({"command": ["sh", "-c", "exit 1"]}),
    ));
    create_service(
        &s,
        "cb",
        &good,
        2,
        &[
            "--deployment-configuration",
            "deploymentCircuitBreaker={enable=true,rollback=true}",
        ],
    );
    wait_until(&s, "cb", "stable", Duration::from_secs(60), stable);
    let up = s.aws_ok(&[
        "ecs",
        "update-service",
        "--cluster",
        "demo",
        "--service",
        "cb",
        "--task-definition",
        &bad,
    ]);
    let failing = up["service"]["deployments"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = wait_until(&s, "cb", "rolled back", Duration::from_secs(120), |v| {
        stable(v) && v["deployments"][0]["id"] != failing.as_str()
    });
    assert!(
        v["taskDefinition"].as_str().unwrap().ends_with(&good),
        "{v:#}"
    );
    let msgs = messages(&v);
    assert!(
        msgs.iter().any(|m| m
            == &format!(
                "(service cb) (deployment {failing}) deployment failed: tasks failed to start."
            )),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m
                .starts_with("(service cb) is unable to consistently start tasks successfully.")),
        "{msgs:?}"
    );
    let list = s.aws_ok(&[
        "ecs",
        "list-service-deployments",
        "--cluster",
        "demo",
        "--service",
        "cb",
    ]);
    let sd = &list["serviceDeployments"][0];
    assert_eq!(sd["status"], "ROLLBACK_SUCCESSFUL", "{list:#}");
    let d = s.aws_ok(&[
        "ecs",
        "describe-service-deployments",
        "--service-deployment-arns",
        sd["serviceDeploymentArn"].as_str().unwrap(),
    ]);
    let sd = &d["serviceDeployments"][0];
    assert_eq!(
        sd["deploymentCircuitBreaker"]["status"], "TRIGGERED",
        "{d:#}"
    );
    assert!(
        sd["deploymentCircuitBreaker"]["failureCount"]
            .as_i64()
            .unwrap()
            >= 3
    );
    assert_eq!(sd["deploymentCircuitBreaker"]["threshold"], 3);
    assert!(sd["rollback"]["serviceRevisionArn"].is_string());
    for t in service_tasks(&s, "cb") {
        let t = s.describe_task("demo", &t);
        assert!(t["taskDefinitionArn"].as_str().unwrap().ends_with(&good));
    }
}

#[test]
fn delete_service_drains_to_inactive_and_tags_work() {
    let s = Server::start();
    let td = setup(&s, "svc-del", sleeper("1004"));
    let created = create_service(
        &s,
        "gone",
        &td,
        2,
        &["--tags", "key=team,value=a", "--propagate-tags", "SERVICE"],
    );
    let arn = created["serviceArn"].as_str().unwrap().to_string();
    assert_eq!(arn, "arn:aws:ecs:us-east-1:000000000000:service/demo/gone");
    assert_eq!(created["tags"], json!([{"key": "team", "value": "a"}]));
    wait_until(&s, "gone", "stable", Duration::from_secs(60), stable);

    // Tags on the service, its tasks (propagated), the cluster and the task definition.
    s.aws_ok(&[
        "ecs",
        "tag-resource",
        "--resource-arn",
        &arn,
        "--tags",
        "key=env,value=test",
    ]);
    s.aws_ok(&[
        "ecs",
        "untag-resource",
        "--resource-arn",
        &arn,
        "--tag-keys",
        "team",
    ]);
    let tags = s.aws_ok(&["ecs", "list-tags-for-resource", "--resource-arn", &arn]);
    assert_eq!(tags["tags"], json!([{"key": "env", "value": "test"}]));
    assert_eq!(
        describe(&s, "gone")["tags"],
        json!([{"key": "env", "value": "test"}])
    );
    let task = service_tasks(&s, "gone")[0].clone();
    let tt = s.aws_ok(&["ecs", "list-tags-for-resource", "--resource-arn", &task]);
    assert_eq!(tt["tags"], json!([{"key": "team", "value": "a"}]));
    let carn = "arn:aws:ecs:us-east-1:000000000000:cluster/demo";
    s.aws_ok(&[
        "ecs",
        "tag-resource",
        "--resource-arn",
        carn,
        "--tags",
        "key=c,value=1",
    ]);
    let ct = s.aws_ok(&["ecs", "list-tags-for-resource", "--resource-arn", carn]);
    assert_eq!(ct["tags"], json!([{"key": "c", "value": "1"}]));
    let tdarn = format!("arn:aws:ecs:us-east-1:000000000000:task-definition/{td}");
    s.aws_ok(&[
        "ecs",
        "tag-resource",
        "--resource-arn",
        &tdarn,
        "--tags",
        "key=t,value=2",
    ]);
    let tdt = s.aws_ok(&["ecs", "list-tags-for-resource", "--resource-arn", &tdarn]);
    assert_eq!(tdt["tags"], json!([{"key": "t", "value": "2"}]));
    let err = s
        .aws(&[
            "ecs",
            "list-tags-for-resource",
            "--resource-arn",
            "arn:aws:ecs:us-east-1:000000000000:service/demo/nope",
        ])
        .unwrap_err();
    assert!(err.contains("ResourceNotFoundException"), "{err}");

    // Errors in AWS shape.
    let err = s
        .aws(&[
            "ecs",
            "delete-service",
            "--cluster",
            "demo",
            "--service",
            "gone",
        ])
        .unwrap_err();
    assert!(err.contains("InvalidParameterException"), "{err}");
    let err = s
        .aws(&["ecs", "delete-cluster", "--cluster", "demo"])
        .unwrap_err();
    assert!(err.contains("ClusterContainsServicesException"), "{err}");
    let err = s
        .aws(&[
            "ecs",
            "update-service",
            "--cluster",
            "demo",
            "--service",
            "nope",
            "--desired-count",
            "1",
        ])
        .unwrap_err();
    assert!(err.contains("ServiceNotFoundException"), "{err}");
    let missing = s.aws_ok(&[
        "ecs",
        "describe-services",
        "--cluster",
        "demo",
        "--services",
        "nope",
    ]);
    assert_eq!(missing["failures"][0]["reason"], "MISSING");
    let listed = s.aws_ok(&["ecs", "list-services", "--cluster", "demo"]);
    assert_eq!(listed["serviceArns"], json!([arn]));

    // DeleteService (force) -> DRAINING -> INACTIVE, still describable.
    let tasks = service_tasks(&s, "gone");
    let d = s.aws_ok(&[
        "ecs",
        "delete-service",
        "--cluster",
        "demo",
        "--service",
        "gone",
        "--force",
    ]);
    assert_eq!(d["service"]["status"], "DRAINING", "{d:#}");
    let err = s
        .aws(&[
            "ecs",
            "update-service",
            "--cluster",
            "demo",
            "--service",
            "gone",
            "--desired-count",
            "1",
        ])
        .unwrap_err();
    assert!(err.contains("ServiceNotActiveException"), "{err}");
    let v = wait_until(&s, "gone", "INACTIVE", Duration::from_secs(60), |v| {
        v["status"] == "INACTIVE"
    });
    assert_eq!(v["runningCount"], 0);
    for t in &tasks {
        let t = s.describe_task("demo", t);
        assert_eq!(t["lastStatus"], "STOPPED");
        assert_eq!(t["stopCode"], "ServiceSchedulerInitiated");
    }
    // The real ServicesInactive waiter succeeds at once.
    s.aws_ok(&[
        "ecs",
        "wait",
        "services-inactive",
        "--cluster",
        "demo",
        "--services",
        "gone",
    ]);
    let listed = s.aws_ok(&["ecs", "list-services", "--cluster", "demo"]);
    assert_eq!(listed["serviceArns"], json!([]));
    // The name can be used again, and the cluster can go once no service is active.
    s.aws_ok(&["ecs", "delete-cluster", "--cluster", "demo"]);
}

#[test]
fn terraform_applies_a_service_with_wait_for_steady_state_and_destroys_it() {
    if Command::new("terraform").arg("version").output().is_err() {
        panic!("terraform is not installed");
    }
    let s = Server::start();
    s.push_test_image("busybox", "1");
    let dir = temp_dir("tf");
    let ep = s.endpoint();
    let key = s.access_key();
    let (key_id, secret) = (&key.access_key_id, &key.secret_access_key);
    let rc = dir.join("terraformrc");
    std::fs::write(
        &rc,
        r#"provider_installation {
  filesystem_mirror {
    path    = "/opt/tf-plugins"
    include = ["registry.terraform.io/*/*"]
  }
  direct {
    exclude = ["registry.terraform.io/*/*"]
  }
}
"#,
    )
    .unwrap();
    let main = format!(
        r#"terraform {{
  required_providers {{
    aws = {{ source = "hashicorp/aws", version = "5.100.0" }}
  }}
}}
provider "aws" {{
  region                      = "us-east-1"
  access_key                  = "{key_id}"
  secret_key                  = "{secret}"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  endpoints {{
    ecs = "{ep}"
    ecr = "{ep}"
    sts = "{ep}"
  }}
}}
variable "cmd" {{
  default = "1005"
}}
resource "aws_ecs_cluster" "demo" {{ name = "tf-demo" }}
resource "aws_ecs_task_definition" "web" {{
  family                   = "tf-web"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = "256"
  memory                   = "512"
  container_definitions = jsonencode([{{
    name = "app", image = "000000000000.dkr.ecr.us-east-1.amazonaws.com/busybox:1", essential = true,
    command = ["sh", "-c", "trap 'exit 0' TERM; sleep ${{var.cmd}} & wait"], stopTimeout = 2
  }}])
}}
resource "aws_ecs_service" "web" {{
  name                  = "tf-web"
  cluster               = aws_ecs_cluster.demo.id
  task_definition       = aws_ecs_task_definition.web.arn
  desired_count         = 2
  launch_type           = "FARGATE"
  wait_for_steady_state = true
  network_configuration {{
    subnets = ["subnet-12345678"]
  }}
  deployment_circuit_breaker {{
    enable   = true
    rollback = true
  }}
  tags = {{ team = "berth" }}
}}
"#
    );
    std::fs::write(dir.join("main.tf"), main).unwrap();
    let tf = |args: &[&str]| {
        let started = Instant::now();
        let out = Command::new("terraform")
            .args(args)
            .current_dir(&dir)
            .env("TF_CLI_CONFIG_FILE", &rc)
            .env("TF_IN_AUTOMATION", "1")
            .env("CHECKPOINT_DISABLE", "1")
            .output()
            .expect("running terraform");
        assert!(
            out.status.success(),
            "terraform {args:?} failed:\n{}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            s.log()
        );
        started.elapsed()
    };
    tf(&["init", "-input=false", "-no-color"]);
    tf(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    // wait_for_steady_state returned: the service is stable now.
    let v = s.aws_ok(&[
        "ecs",
        "describe-services",
        "--cluster",
        "tf-demo",
        "--services",
        "tf-web",
    ])["services"][0]
        .clone();
    assert_eq!(v["runningCount"], 2, "{v:#}");
    assert_eq!(v["deployments"].as_array().unwrap().len(), 1);
    // A new task definition: Terraform updates the service and waits for the rollout.
    tf(&[
        "apply",
        "-auto-approve",
        "-input=false",
        "-no-color",
        "-var",
        "cmd=1006",
    ]);
    let v = s.aws_ok(&[
        "ecs",
        "describe-services",
        "--cluster",
        "tf-demo",
        "--services",
        "tf-web",
    ])["services"][0]
        .clone();
    assert!(
        v["taskDefinition"].as_str().unwrap().ends_with("tf-web:2"),
        "{v:#}"
    );
    assert_eq!(v["runningCount"], 2, "{v:#}");
    assert_eq!(v["deployments"].as_array().unwrap().len(), 1, "{v:#}");
    tf(&[
        "destroy",
        "-auto-approve",
        "-input=false",
        "-no-color",
        "-var",
        "cmd=1006",
    ]);
    let v = s.aws_ok(&["ecs", "describe-clusters", "--clusters", "tf-demo"]);
    assert_eq!(v["clusters"][0]["status"], "INACTIVE", "{v:#}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = Path::new(&dir);
}

#[test]
fn unhealthy_task_is_replaced() {
    let s = Server::start();
    // Healthy for a few seconds, then the check fails for good.
    let td = setup(
        &s,
        "svc-hc",
        json!({
            "command": ["sh", "-c", "trap 'exit 0' TERM; touch /tmp/ok; (sleep 4; rm /tmp/ok) & sleep 1007 & wait"],
            "stopTimeout": 2,
            "healthCheck": {
                "command": ["CMD-SHELL", "test -f /tmp/ok"],
                "interval": 5, "timeout": 2, "retries": 1, "startPeriod": 0
            }
        }),
    );
    create_service(&s, "hc", &td, 1, &[]);
    let first = wait_until(&s, "hc", "a task", Duration::from_secs(30), |_| {
        !service_tasks(&s, "hc").is_empty()
    });
    let _ = first;
    let t0 = service_tasks(&s, "hc")[0].clone();
    let v = wait_until(
        &s,
        "hc",
        "the unhealthy task replaced",
        Duration::from_secs(60),
        |_| {
            let t = s.describe_task("demo", &t0);
            t["lastStatus"] == "STOPPED"
        },
    );
    let msgs = messages(&v);
    let id = task_id(&t0);
    let t = s.describe_task("demo", &t0);
    assert_eq!(t["stopCode"], "ServiceSchedulerInitiated", "{t}");
    assert_eq!(
        t["stoppedReason"], "Task failed container health checks",
        "{t}"
    );
    let v = wait_until(&s, "hc", "a replacement", Duration::from_secs(30), |v| {
        v["runningCount"] == 1
            && messages(v)
                .iter()
                .any(|m| m.contains(&format!("(task {id}) failed container health checks")))
    });
    // The replacement runs the same script, so it may fail its checks too by now.
    assert!(
        v["deployments"][0]["failedTasks"].as_i64().unwrap_or(0) >= 1,
        "{v:#} {msgs:?}"
    );
}

#[test]
fn depends_on_healthy_delays_the_dependent_container() {
    let s = Server::start();
    s.push_test_image("busybox", "1");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "demo"]);
    let mut td = fargate_taskdef(
        "svc-dep",
        "busybox",
        json!({
            "name": "db",
            "command": ["sh", "-c", "trap 'exit 0' TERM; (sleep 3; touch /tmp/ready) & sleep 1008 & wait"],
            "stopTimeout": 2,
            "healthCheck": {
                "command": ["CMD-SHELL", "test -f /tmp/ready"],
                "interval": 5, "timeout": 2, "retries": 3, "startPeriod": 0
            }
        }),
    );
    let mut app = td["containerDefinitions"][0].clone();
    app["name"] = json!("app");
    app["command"] = json!(["sh", "-c", "trap 'exit 0' TERM; sleep 1009 & wait"]);
    app.as_object_mut().unwrap().remove("healthCheck");
    app["dependsOn"] = json!([{"containerName": "db", "condition": "HEALTHY"}]);
    td["containerDefinitions"].as_array_mut().unwrap().push(app);
    let td = s.register(&td);
    create_service(&s, "dep", &td, 1, &[]);
    let mut saw_waiting = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(t) = service_tasks(&s, "dep").first() {
            let t = s.describe_task("demo", t);
            let c = |n: &str| {
                t["containers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["name"] == n)
                    .unwrap()
                    .clone()
            };
            let (db, app) = (c("db"), c("app"));
            if db["lastStatus"] == "RUNNING" && db["healthStatus"] != "HEALTHY" {
                assert_ne!(
                    app["lastStatus"], "RUNNING",
                    "app started before db was healthy: {t}"
                );
                saw_waiting = true;
            }
            if app["lastStatus"] == "RUNNING" {
                assert_eq!(db["healthStatus"], "HEALTHY", "{t}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "app never started\n{}", s.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(saw_waiting);
    wait_until(&s, "dep", "stable", Duration::from_secs(30), stable);
}
