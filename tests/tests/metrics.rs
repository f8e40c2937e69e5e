//! CloudWatch metrics (`AWS/ECS` CPUUtilization / MemoryUtilization), Prometheus `/metrics` and
//! Application Auto Scaling target tracking (issue 7), against a real server running real
//! busy-loop containers, driven by the AWS CLI (awsJson1.0 for CloudWatch, awsJson1.1 for
//! Application Auto Scaling) and by the CLI's own botocore forced onto CloudWatch's
//! smithy-rpc-v2-cbor and query protocols.

use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::{fargate_taskdef, repo_root, temp_dir, Server};
use serde_json::{json, Value};

const NET: &str = "awsvpcConfiguration={subnets=[subnet-12345678]}";

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A server sampling every second, with cluster `demo` and task definition `family` whose
/// container runs `script`; `volume` mounts a host directory at /ctl.
fn setup(family: &str, script: &str, volume: Option<&std::path::Path>) -> (Server, String) {
    let s = Server::start_with(&["--metrics-interval", "1"]);
    s.push_test_image("busybox", "1");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "demo"]);
    let mut c = json!({"command": ["sh", "-c", script], "stopTimeout": 2});
    let mut td = fargate_taskdef(family, "busybox", json!({}));
    if let Some(dir) = volume {
        c["mountPoints"] = json!([{"sourceVolume": "ctl", "containerPath": "/ctl"}]);
        td["volumes"] = json!([{"name": "ctl", "host": {"sourcePath": dir.display().to_string()}}]);
        // Fargate refuses host volumes: this one runs with the EC2 launch type.
        td.as_object_mut()
            .unwrap()
            .remove("requiresCompatibilities");
    }
    for (k, v) in c.as_object().unwrap() {
        td["containerDefinitions"][0][k] = v.clone();
    }
    let arn = s.register(&td);
    (s, arn)
}

fn create_service(s: &Server, name: &str, td: &str, launch_type: &str) {
    s.aws_ok(&[
        "ecs",
        "create-service",
        "--cluster",
        "demo",
        "--service-name",
        name,
        "--task-definition",
        td,
        "--desired-count",
        "1",
        "--launch-type",
        launch_type,
        "--network-configuration",
        NET,
    ]);
}

fn service(s: &Server, name: &str) -> Value {
    s.aws_ok(&[
        "ecs",
        "describe-services",
        "--cluster",
        "demo",
        "--services",
        name,
    ])["services"][0]
        .clone()
}

fn wait_for(s: &Server, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}\nserver log:\n{}", s.log());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn cpu_stats(s: &Server, svc: &str) -> Value {
    let (start, end) = (
        format!("{}", now() as i64 - 600),
        format!("{}", now() as i64 + 60),
    );
    s.aws_ok(&[
        "cloudwatch",
        "get-metric-statistics",
        "--namespace",
        "AWS/ECS",
        "--metric-name",
        "CPUUtilization",
        "--dimensions",
        "Name=ClusterName,Value=demo",
        &format!("Name=ServiceName,Value={svc}"),
        "--start-time",
        &start,
        "--end-time",
        &end,
        "--period",
        "60",
        "--statistics",
        "Average",
        "Maximum",
        "SampleCount",
    ])
}

/// Runs `tests/tests/cw_protocol.py` (botocore forced onto `protocol`).
fn botocore(s: &Server, protocol: &str, op: &str, params: &Value) -> Result<Value, String> {
    let py = repo_root().join(".venv/bin/python");
    let out = Command::new(py)
        .arg(repo_root().join("tests/tests/cw_protocol.py"))
        .args([&s.endpoint(), protocol, op, &params.to_string()])
        .envs(s.aws_env())
        .output()
        .expect("running the venv's python");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        Ok(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
    } else {
        Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

#[test]
fn cloudwatch_reports_cpu_of_a_busy_service() {
    let (s, td) = setup("busy", "while :; do :; done", None);
    create_service(&s, "busy", &td, "FARGATE");
    wait_for(&s, "the busy task to run", Duration::from_secs(60), || {
        service(&s, "busy")["runningCount"] == 1
    });
    let mut stats = Value::Null;
    wait_for(&s, "CPU datapoints", Duration::from_secs(30), || {
        stats = cpu_stats(&s, "busy");
        let n: f64 = stats["Datapoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["SampleCount"].as_f64().unwrap())
            .sum();
        n >= 4.0
    });
    assert_eq!(stats["Label"], "CPUUtilization");
    let max = stats["Datapoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["Maximum"].as_f64().unwrap())
        .fold(0.0, f64::max);
    // A busy loop in a 256-unit (quarter vCPU) task uses all of its reservation.
    assert!(max > 60.0, "busy loop CPUUtilization {max}: {stats:#}");
    assert!(stats["Datapoints"][0]["Unit"] == "Percent");

    // ListMetrics names both dimension sets and both metrics.
    let list = s.aws_ok(&["cloudwatch", "list-metrics", "--namespace", "AWS/ECS"]);
    let metrics = list["Metrics"].as_array().unwrap();
    assert!(
        metrics.iter().any(|m| m["MetricName"] == "CPUUtilization"
            && m["Dimensions"]
                == json!([{"Name": "ClusterName", "Value": "demo"},
                                     {"Name": "ServiceName", "Value": "busy"}])),
        "{list:#}"
    );
    assert!(
        metrics
            .iter()
            .any(|m| m["MetricName"] == "MemoryUtilization"
                && m["Dimensions"] == json!([{"Name": "ClusterName", "Value": "demo"}])),
        "{list:#}"
    );
    let filtered = s.aws_ok(&[
        "cloudwatch",
        "list-metrics",
        "--metric-name",
        "MemoryUtilization",
        "--dimensions",
        "Name=ServiceName,Value=busy",
    ]);
    assert_eq!(
        filtered["Metrics"].as_array().unwrap().len(),
        1,
        "{filtered:#}"
    );

    // GetMetricData through the CLI, then all three protocols through botocore itself.
    let q = json!([{"Id": "cpu", "MetricStat": {"Metric": {"Namespace": "AWS/ECS",
        "MetricName": "CPUUtilization", "Dimensions": [{"Name": "ClusterName", "Value": "demo"},
        {"Name": "ServiceName", "Value": "busy"}]}, "Period": 60, "Stat": "Maximum"}}]);
    let (start, end) = (now() as i64 - 600, now() as i64 + 60);
    let data = s.aws_ok(&[
        "cloudwatch",
        "get-metric-data",
        "--metric-data-queries",
        &q.to_string(),
        "--start-time",
        &start.to_string(),
        "--end-time",
        &end.to_string(),
    ]);
    let r = &data["MetricDataResults"][0];
    assert_eq!(r["StatusCode"], "Complete", "{data:#}");
    assert!(
        r["Values"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.as_f64().unwrap() > 60.0),
        "{data:#}"
    );
    for protocol in ["smithy-rpc-v2-cbor", "json", "query"] {
        let st = botocore(
            &s,
            protocol,
            "get_metric_statistics",
            &json!({
            "Namespace": "AWS/ECS", "MetricName": "CPUUtilization",
            "Dimensions": [{"Name": "ClusterName", "Value": "demo"}],
            "StartTime": start, "EndTime": end, "Period": 60, "Statistics": ["Maximum"]}),
        )
        .unwrap_or_else(|e| panic!("{protocol}: {e}"));
        let dp = &st["Datapoints"][0];
        assert!(dp["Maximum"].as_f64().unwrap() > 60.0, "{protocol}: {st:#}");
        assert!(
            dp["Timestamp"].as_str().unwrap().starts_with("20"),
            "{protocol}: {st:#}"
        );
        let gd = botocore(
            &s,
            protocol,
            "get_metric_data",
            &json!({"MetricDataQueries": q,
            "StartTime": start, "EndTime": end, "ScanBy": "TimestampAscending"}),
        )
        .unwrap_or_else(|e| panic!("{protocol}: {e}"));
        assert_eq!(
            gd["MetricDataResults"][0]["Id"], "cpu",
            "{protocol}: {gd:#}"
        );
        assert!(!gd["MetricDataResults"][0]["Timestamps"]
            .as_array()
            .unwrap()
            .is_empty());
        let lm = botocore(
            &s,
            protocol,
            "list_metrics",
            &json!({"Namespace": "AWS/ECS"}),
        )
        .unwrap_or_else(|e| panic!("{protocol}: {e}"));
        assert_eq!(
            lm["Metrics"].as_array().unwrap().len(),
            4,
            "{protocol}: {lm:#}"
        );
        // Errors keep their model names in every protocol.
        let e = botocore(
            &s,
            protocol,
            "get_metric_statistics",
            &json!({
            "Namespace": "AWS/ECS", "MetricName": "CPUUtilization",
            "StartTime": end, "EndTime": start, "Period": 60, "Statistics": ["Maximum"]}),
        )
        .unwrap_err();
        assert!(e.contains("ERROR InvalidParameterValue"), "{protocol}: {e}");
    }

    // Prometheus text for berth itself.
    let (code, _, body) = berth_tests::http(s.port, "GET", "/metrics", &[], b"").unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(code, 200);
    for needle in [
        "berth_api_requests_total{service=\"cloudwatch\",operation=\"GetMetricStatistics\",code=\"OK\"}",
        "berth_api_request_duration_seconds_bucket{service=\"AmazonEC2ContainerServiceV20141113\",operation=\"CreateService\",le=\"+Inf\"} 1",
        "berth_tasks{last_status=\"RUNNING\"} 1",
        "berth_image_pulls_total ",
        "berth_registry_blob_bytes ",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let pulls: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("berth_image_pulls_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(pulls >= 1, "{text}");
}

#[test]
fn target_tracking_scales_a_service_out_and_back_in() {
    let ctl = temp_dir("scale-ctl");
    std::fs::create_dir_all(&ctl).unwrap();
    // Burns its quarter vCPU until /ctl/stop exists, then idles.
    let script = "trap 'exit 0' TERM; while [ ! -f /ctl/stop ]; do :; done; sleep 100000 & wait";
    let (s, td) = setup("load", script, Some(&ctl));
    create_service(&s, "load", &td, "EC2");
    let res = "service/demo/load";
    let aas = |args: &[&str]| {
        let mut a = vec!["application-autoscaling"];
        a.extend_from_slice(args);
        s.aws_ok(&a)
    };
    let t = aas(&[
        "register-scalable-target",
        "--service-namespace",
        "ecs",
        "--resource-id",
        res,
        "--scalable-dimension",
        "ecs:service:DesiredCount",
        "--min-capacity",
        "1",
        "--max-capacity",
        "3",
    ]);
    assert!(t["ScalableTargetARN"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:application-autoscaling:"));
    let cfg = json!({"TargetValue": 50.0, "PredefinedMetricSpecification":
        {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
        "ScaleOutCooldown": 3, "ScaleInCooldown": 3});
    let p = aas(&[
        "put-scaling-policy",
        "--service-namespace",
        "ecs",
        "--resource-id",
        res,
        "--scalable-dimension",
        "ecs:service:DesiredCount",
        "--policy-name",
        "cpu50",
        "--policy-type",
        "TargetTrackingScaling",
        "--target-tracking-scaling-policy-configuration",
        &cfg.to_string(),
    ]);
    assert!(
        p["PolicyARN"]
            .as_str()
            .unwrap()
            .contains(":policyName/cpu50"),
        "{p:#}"
    );
    assert_eq!(p["Alarms"].as_array().unwrap().len(), 2);
    let d = aas(&["describe-scalable-targets", "--service-namespace", "ecs"]);
    assert_eq!(d["ScalableTargets"][0]["MaxCapacity"], 3, "{d:#}");
    let d = aas(&[
        "describe-scaling-policies",
        "--service-namespace",
        "ecs",
        "--resource-id",
        res,
    ]);
    assert_eq!(
        d["ScalingPolicies"][0]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"],
        50.0
    );

    // Under load: 1 task at ~100 % of its reservation against a 50 % target -> 2 -> 3 (max).
    let started = Instant::now();
    wait_for(&s, "scale-out to 3", Duration::from_secs(120), || {
        let v = service(&s, "load");
        v["desiredCount"] == 3 && v["runningCount"] == 3
    });
    eprintln!("scaled out to 3 in {:?}", started.elapsed());
    // Load ends: utilization drops to ~0 -> back to the minimum.
    std::fs::write(ctl.join("stop"), b"").unwrap();
    let started = Instant::now();
    wait_for(&s, "scale-in to 1", Duration::from_secs(120), || {
        service(&s, "load")["desiredCount"] == 1
    });
    eprintln!("scaled in to 1 in {:?}", started.elapsed());
    let acts = aas(&[
        "describe-scaling-activities",
        "--service-namespace",
        "ecs",
        "--resource-id",
        res,
    ]);
    let acts = acts["ScalingActivities"].as_array().unwrap().clone();
    assert!(acts.len() >= 2, "{acts:#?}");
    assert_eq!(acts[0]["Description"], "Setting desired count to 1.");
    assert!(
        acts.iter().all(|a| a["StatusCode"] == "Successful"),
        "{acts:#?}"
    );
    assert!(
        acts.iter()
            .any(|a| a["Description"] == "Setting desired count to 3."),
        "{acts:#?}"
    );

    // Errors: unknown policy, unsupported namespace; deregistering removes target and policies.
    let e = s
        .aws(&[
            "application-autoscaling",
            "delete-scaling-policy",
            "--service-namespace",
            "ecs",
            "--resource-id",
            res,
            "--scalable-dimension",
            "ecs:service:DesiredCount",
            "--policy-name",
            "nope",
        ])
        .unwrap_err();
    assert!(e.contains("ObjectNotFoundException"), "{e}");
    let e = s
        .aws(&[
            "application-autoscaling",
            "describe-scalable-targets",
            "--service-namespace",
            "dynamodb",
        ])
        .unwrap_err();
    assert!(e.contains("ValidationException"), "{e}");
    aas(&[
        "deregister-scalable-target",
        "--service-namespace",
        "ecs",
        "--resource-id",
        res,
        "--scalable-dimension",
        "ecs:service:DesiredCount",
    ]);
    let d = aas(&["describe-scaling-policies", "--service-namespace", "ecs"]);
    assert_eq!(d["ScalingPolicies"], json!([]));
    let _ = std::fs::remove_dir_all(&ctl);
}
