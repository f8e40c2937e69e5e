//! Metering (issue 7): usage totals for a set of real tasks match a calculation from the tasks'
//! own DescribeTasks timestamps — through `GET /_berth/usage` and through `berth usage` — with
//! Fargate's per-second billing, one-minute minimum, on-demand and Spot rates.

use std::process::Command;
use std::time::Duration;

use berth_tests::{fargate_taskdef, repo_root, Server};
use serde_json::{json, Value};

const NET: &str = "awsvpcConfiguration={subnets=[subnet-12345678]}";
// The default price table: AWS Fargate us-east-1 Linux/x86 on-demand, and the Spot snapshot.
const OD: (f64, f64) = (0.04048, 0.004445);
const SPOT: (f64, f64) = (0.01334053, 0.00146489);

fn berth_bin() -> std::path::PathBuf {
    std::env::var_os("BERTH_BIN")
        .map(Into::into)
        .unwrap_or_else(|| repo_root().join("target/debug/berth"))
}

/// DescribeTasks over the wire (epoch-second floats exactly as berth stores them).
fn describe_raw(s: &Server, cluster: &str, arns: &[String]) -> Vec<Value> {
    let body = json!({"cluster": cluster, "tasks": arns}).to_string();
    let (st, _, b) = s
        .http(
            "POST",
            "/",
            &[
                (
                    "X-Amz-Target",
                    "AmazonEC2ContainerServiceV20141113.DescribeTasks",
                ),
                ("Content-Type", "application/x-amz-json-1.1"),
            ],
            body.as_bytes(),
        )
        .unwrap();
    assert_eq!(st, 200);
    let v: Value = serde_json::from_slice(&b).unwrap();
    v["tasks"].as_array().unwrap().clone()
}

fn usage(s: &Server, query: &str) -> Value {
    let (st, _, b) = s
        .http("GET", &format!("/_berth/usage?{query}"), &[], b"")
        .unwrap();
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(st, 200, "{v}");
    v
}

/// Billing start: pullStartedAt, else startedAt, else createdAt.
fn start_of(t: &Value) -> f64 {
    t["pullStartedAt"]
        .as_f64()
        .or(t["startedAt"].as_f64())
        .unwrap_or_else(|| t["createdAt"].as_f64().unwrap())
}

/// Whole seconds billed: elapsed (ms-precise) rounded up to a second, at least 60.
fn billed(t: &Value, now: f64) -> f64 {
    let end = t["stoppedAt"].as_f64().unwrap_or(now);
    let ms = ((end - start_of(t)) * 1000.0).round() as u64;
    ms.div_ceil(1000).max(60) as f64
}

/// (vcpu-seconds, gb-seconds, cost) of `secs` billed seconds of task `t`.
fn price(t: &Value, secs: f64) -> (f64, f64, f64) {
    let cpu: f64 = t["cpu"].as_str().unwrap().parse().unwrap();
    let mem: f64 = t["memory"].as_str().unwrap().parse().unwrap();
    let (vr, gr) = match t["capacityProviderName"].as_str() {
        Some("FARGATE_SPOT") => SPOT,
        _ => OD,
    };
    let (v, g) = (secs * cpu / 1024.0, secs * mem / 1024.0);
    (v, g, v * vr / 3600.0 + g * gr / 3600.0)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn assert_row(row: &Value, tasks: u64, v: f64, g: f64, c: f64) {
    assert_eq!(row["tasks"], tasks, "{row}");
    assert!(
        close(row["vcpu_seconds"].as_f64().unwrap(), v),
        "vcpu {row} vs {v}"
    );
    assert!(
        close(row["gb_seconds"].as_f64().unwrap(), g),
        "gb {row} vs {g}"
    );
    assert!(close(row["cost"].as_f64().unwrap(), c), "cost {row} vs {c}");
}

#[test]
fn usage_matches_task_timestamps_on_demand_and_spot() {
    let s = Server::start();
    s.push_test_image("busybox", "1");
    s.aws_ok(&[
        "ecs",
        "create-cluster",
        "--cluster-name",
        "meter",
        "--capacity-providers",
        "FARGATE",
        "FARGATE_SPOT",
    ]);
    let td = s.register(&fargate_taskdef(
        "meter",
        "busybox",
        json!({"command": ["sh", "-c", "echo metered"]}),
    ));

    // Short tasks: two on-demand (one bigger), two on Spot (RunTask with a strategy).
    let mut arns = vec![
        s.run_task("meter", &td, None),
        s.run_task("meter", &td, Some(&json!({"cpu": "512", "memory": "2048"}))),
    ];
    let v = s.aws_ok(&[
        "ecs",
        "run-task",
        "--cluster",
        "meter",
        "--task-definition",
        &td,
        "--count",
        "2",
        "--capacity-provider-strategy",
        "capacityProvider=FARGATE_SPOT,weight=1",
        "--network-configuration",
        NET,
    ]);
    for t in v["tasks"].as_array().unwrap() {
        assert_eq!(t["capacityProviderName"], "FARGATE_SPOT", "{t}");
        arns.push(t["taskArn"].as_str().unwrap().to_string());
    }
    for a in &arns {
        s.wait_status("meter", a, "STOPPED", Duration::from_secs(90));
    }
    let tasks = describe_raw(&s, "meter", &arns);
    assert_eq!(tasks.len(), 4);
    for t in &tasks {
        assert_eq!(t["lastStatus"], "STOPPED", "{t}");
        assert!(t["pullStartedAt"].as_f64().is_some(), "{t}");
    }

    // Per task: one-minute minimum (they ran for a second or two), priced by capacity provider.
    let rep = usage(&s, "cluster=meter&group_by=task");
    assert_eq!(rep["currency"], "USD");
    let (mut tv, mut tg, mut tc) = (0.0, 0.0, 0.0);
    for t in &tasks {
        let b = billed(t, 0.0);
        assert_eq!(b, 60.0, "short task billed the minimum: {t}");
        let (v, g, c) = price(t, b);
        let row = rep["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == t["taskArn"])
            .unwrap_or_else(|| panic!("no row for {}: {rep}", t["taskArn"]));
        assert_row(row, 1, v, g, c);
        (tv, tg, tc) = (tv + v, tg + g, tc + c);
    }
    assert_row(&rep["total"], 4, tv, tg, tc);
    // Spot tasks cost less than the same size on demand.
    let spot_cost: f64 = tasks
        .iter()
        .filter(|t| t["capacityProviderName"] == "FARGATE_SPOT")
        .map(|t| price(t, 60.0).2)
        .sum();
    assert!(spot_cost > 0.0 && spot_cost < 2.0 * price(&tasks[0], 60.0).2);

    // Same totals by cluster and by day; exact per-second math inside a window starting
    // 10.5 s after the first task's pull start.
    for g in ["cluster", "day", "service"] {
        let r = usage(&s, &format!("cluster=meter&group_by={g}"));
        assert_row(&r["total"], 4, tv, tg, tc);
    }
    let first = &tasks[0];
    let since = start_of(first) + 10.5;
    let until = since + 20.25;
    let r = usage(
        &s,
        &format!(
            "cluster=meter&group_by=task&since={since}&until={until}&service=nope-no-such-service"
        ),
    );
    assert_eq!(r["rows"], json!([]), "service filter: {r}");
    let r = usage(&s, &format!("group_by=task&since={since}&until={until}"));
    let row = r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["key"] == first["taskArn"])
        .unwrap()
        .clone();
    let (v, g, c) = price(first, until - since);
    assert_row(&row, 1, v, g, c);

    // The CLI gives the same numbers (JSON and CSV).
    let out = Command::new(berth_bin())
        .args(["usage", "--endpoint", &s.endpoint(), "--cluster", "meter"])
        .args(["--group-by", "task", "--output", "json"])
        .envs(s.aws_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["rows"], rep["rows"]);
    assert_eq!(cli["total"], rep["total"]);
    let out = Command::new(berth_bin())
        .args(["usage", "--endpoint", &s.endpoint(), "--cluster", "meter"])
        .args(["--group-by", "cluster", "--output", "csv"])
        .envs(s.aws_env())
        .output()
        .unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "key,tasks,vcpu_seconds,gb_seconds,cost", "{csv}");
    assert!(lines[1].starts_with("meter,4,"), "{csv}");
    let cost: f64 = lines[2].rsplit(',').next().unwrap().parse().unwrap();
    assert!((cost - tc).abs() < 1e-8, "{csv} vs {tc}");

    // A bad parameter is a 400 with an AWS-style error body.
    let (st, _, b) = s
        .http("GET", "/_berth/usage?group_by=week", &[], b"")
        .unwrap();
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("InvalidParameterException"));
}

#[test]
fn service_tasks_on_fargate_spot_are_priced_at_spot_rates() {
    let s = Server::start();
    s.push_test_image("busybox", "1");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "svc"]);
    let td = s.register(&fargate_taskdef(
        "spotsvc",
        "busybox",
        json!({"command": ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"], "stopTimeout": 2}),
    ));
    s.aws_ok(&[
        "ecs",
        "create-service",
        "--cluster",
        "svc",
        "--service-name",
        "web",
        "--task-definition",
        &td,
        "--desired-count",
        "2",
        "--capacity-provider-strategy",
        "capacityProvider=FARGATE_SPOT,weight=1",
        "--network-configuration",
        NET,
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let arns = loop {
        let l = s.aws_ok(&[
            "ecs",
            "list-tasks",
            "--cluster",
            "svc",
            "--service-name",
            "web",
        ]);
        let arns: Vec<String> = l["taskArns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        if arns.len() == 2 {
            break arns;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "service never started 2 tasks"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for a in &arns {
        s.wait_status("svc", a, "RUNNING", Duration::from_secs(60));
    }
    let rep = usage(&s, "cluster=svc&service=web&group_by=service");
    let now = rep["now"].as_f64().unwrap();
    let tasks = describe_raw(&s, "svc", &arns);
    let (mut tv, mut tg, mut tc) = (0.0, 0.0, 0.0);
    for t in &tasks {
        assert_eq!(t["capacityProviderName"], "FARGATE_SPOT", "{t}");
        let (v, g, c) = price(t, billed(t, now));
        (tv, tg, tc) = (tv + v, tg + g, tc + c);
    }
    assert_eq!(rep["rows"].as_array().unwrap().len(), 1, "{rep}");
    assert_eq!(rep["rows"][0]["key"], "svc/web");
    assert_row(&rep["rows"][0], 2, tv, tg, tc);
    assert_row(&rep["total"], 2, tv, tg, tc);
    s.aws_ok(&[
        "ecs",
        "delete-service",
        "--cluster",
        "svc",
        "--service",
        "web",
        "--force",
    ]);
}
