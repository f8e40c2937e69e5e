//! A pushed image runs as a Fargate task, end to end: skopeo push -> register -> run-task ->
//! `aws ecs wait tasks-stopped` -> exit code and logs through the real AWS CLI.

use std::time::{Duration, Instant};

use berth_tests::{fargate_taskdef, task_id, Server};
use serde_json::json;

fn setup(s: &Server, family: &str, container: serde_json::Value) -> String {
    s.push_test_image("busybox", "1");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "demo"]);
    s.register(&fargate_taskdef(family, "busybox", container))
}

#[test]
fn task_output_reaches_logs_and_exit_codes_come_back() {
    let s = Server::start();
    let td = setup(
        &s,
        "hello",
        json!({"command": ["sh", "-c", "echo hello from berth; echo second line >&2"]}),
    );
    let arn = s.run_task("demo", &td, None);
    s.wait_tasks_stopped("demo", &arn);
    let t = s.describe_task("demo", &arn);
    assert_eq!(t["lastStatus"], "STOPPED", "{t}");
    assert_eq!(t["desiredStatus"], "STOPPED", "{t}");
    assert_eq!(t["stopCode"], "EssentialContainerExited", "{t}");
    assert_eq!(t["containers"][0]["exitCode"], 0, "{t}");
    assert_eq!(t["containers"][0]["lastStatus"], "STOPPED", "{t}");
    for k in [
        "pullStartedAt",
        "pullStoppedAt",
        "startedAt",
        "stoppedAt",
        "createdAt",
    ] {
        assert!(t[k].is_number(), "{k} missing: {t}");
    }
    assert!(t["startedAt"].as_f64() <= t["stoppedAt"].as_f64());
    assert!(
        t["containers"][0]["imageDigest"]
            .as_str()
            .unwrap_or("")
            .starts_with("sha256:"),
        "{t}"
    );

    let stream = format!("ecs/app/{}", task_id(&arn));
    let ev = s.aws_ok(&[
        "logs",
        "get-log-events",
        "--log-group-name",
        "/ecs/hello",
        "--log-stream-name",
        &stream,
        "--start-from-head",
    ]);
    let msgs: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(msgs.contains(&"hello from berth"), "{ev}");
    assert!(msgs.contains(&"second line"), "{ev}");
    let f = s.aws_ok(&[
        "logs",
        "filter-log-events",
        "--log-group-name",
        "/ecs/hello",
        "--filter-pattern",
        "second",
    ]);
    assert_eq!(f["events"].as_array().unwrap().len(), 1, "{f}");
    assert_eq!(f["events"][0]["logStreamName"], stream.as_str());

    // A non-zero exit code comes back as is, through a command override.
    let ov = json!({"containerOverrides": [{"name": "app", "command": ["sh", "-c", "exit 3"]}]});
    let arn = s.run_task("demo", &td, Some(&ov));
    s.wait_tasks_stopped("demo", &arn);
    let t = s.describe_task("demo", &arn);
    assert_eq!(t["containers"][0]["exitCode"], 3, "{t}");
    assert_eq!(t["stopCode"], "EssentialContainerExited", "{t}");
    assert_eq!(
        t["stoppedReason"], "Essential container in task exited",
        "{t}"
    );

    // Environment overrides reach the process.
    let ov = json!({"containerOverrides": [{"name": "app", "command": ["sh", "-c", "echo value=$GREETING"], "environment": [{"name": "GREETING", "value": "hi"}]}]});
    let arn = s.run_task("demo", &td, Some(&ov));
    s.wait_tasks_stopped("demo", &arn);
    let stream = format!("ecs/app/{}", task_id(&arn));
    let ev = s.aws_ok(&[
        "logs",
        "get-log-events",
        "--log-group-name",
        "/ecs/hello",
        "--log-stream-name",
        &stream,
    ]);
    assert_eq!(ev["events"][0]["message"], "value=hi", "{ev}");

    let listed = s.aws_ok(&[
        "ecs",
        "list-tasks",
        "--cluster",
        "demo",
        "--desired-status",
        "STOPPED",
    ]);
    assert_eq!(listed["taskArns"].as_array().unwrap().len(), 3, "{listed}");
}

#[test]
fn missing_image_fails_to_start() {
    let s = Server::start();
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "demo"]);
    s.aws_ok(&["ecr", "create-repository", "--repository-name", "empty"]);
    let td = s.register(&fargate_taskdef("nope", "empty", json!({})));
    let arn = s.run_task("demo", &td, None);
    s.wait_tasks_stopped("demo", &arn);
    let t = s.describe_task("demo", &arn);
    assert_eq!(t["stopCode"], "TaskFailedToStart", "{t}");
    let reason = t["stoppedReason"].as_str().unwrap_or("");
    assert!(reason.starts_with("CannotPullContainerError"), "{t}");
    assert!(
        t["containers"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("CannotPullContainerError"),
        "{t}"
    );
    assert!(t["containers"][0].get("exitCode").is_none(), "{t}");
}

#[test]
fn container_sees_its_memory_limit_and_cannot_exceed_it() {
    let s = Server::start();
    let script = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max";
    let td = setup(
        &s,
        "mem",
        json!({"memory": 64, "command": ["sh", "-c", script]}),
    );
    let arn = s.run_task("demo", &td, None);
    s.wait_tasks_stopped("demo", &arn);
    let stream = format!("ecs/app/{}", task_id(&arn));
    let ev = s.aws_ok(&[
        "logs",
        "get-log-events",
        "--log-group-name",
        "/ecs/mem",
        "--log-stream-name",
        &stream,
        "--start-from-head",
    ]);
    assert_eq!(ev["events"][0]["message"], "67108864", "{ev}");
    // `sort` keeps its whole (endless) input line in memory: the kernel must kill it at 64 MiB.
    let ov = json!({"containerOverrides": [{"name": "app", "command": ["sort", "/dev/zero"]}]});
    let arn = s.run_task("demo", &td, Some(&ov));
    s.wait_tasks_stopped("demo", &arn);
    let t = s.describe_task("demo", &arn);
    assert_eq!(t["containers"][0]["exitCode"], 137, "{t}");
    assert_eq!(t["stopCode"], "EssentialContainerExited", "{t}");
}

#[test]
fn stop_task_kills_after_stop_timeout() {
    let s = Server::start();
    let td = setup(
        &s,
        "sleeper",
        json!({"command": ["sleep", "3600"], "stopTimeout": 2}),
    );
    let arn = s.run_task("demo", &td, None);
    s.aws_ok(&[
        "ecs",
        "wait",
        "tasks-running",
        "--cluster",
        "demo",
        "--tasks",
        &arn,
    ]);
    let t = s.describe_task("demo", &arn);
    assert_eq!(t["lastStatus"], "RUNNING", "{t}");
    assert_eq!(t["containers"][0]["lastStatus"], "RUNNING", "{t}");
    let running = s.aws_ok(&["ecs", "list-tasks", "--cluster", "demo"]);
    assert_eq!(running["taskArns"][0], arn.as_str());
    let started = Instant::now();
    let stopped = s.aws_ok(&[
        "ecs",
        "stop-task",
        "--cluster",
        "demo",
        "--task",
        &arn,
        "--reason",
        "test says stop",
    ]);
    assert_eq!(stopped["task"]["desiredStatus"], "STOPPED", "{stopped}");
    let t = s.wait_status("demo", &arn, "STOPPED", Duration::from_secs(20));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "stopped before the timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert_eq!(t["stopCode"], "UserInitiated", "{t}");
    assert_eq!(t["stoppedReason"], "test says stop", "{t}");
    assert_eq!(t["containers"][0]["exitCode"], 137, "{t}");
}

#[test]
fn init_process_forwards_signals_and_reaps_orphans() {
    let s = Server::start();
    let td = setup(
        &s,
        "inited",
        json!({
            "linuxParameters": {"initProcessEnabled": true},
            "stopTimeout": 30,
            "command": ["sh", "-c",
                "echo pid1=$(tr '\\0' ' ' < /proc/1/cmdline); (sleep 0.2 &); sleep 1; \
                 echo zombies=$(grep -l '^State:.Z' /proc/[0-9]*/status 2>/dev/null | wc -l); \
                 echo ready; exec sleep 3600"]
        }),
    );
    let arn = s.run_task("demo", &td, None);
    let group = "/ecs/inited";
    let stream = format!("ecs/app/{}", task_id(&arn));
    let deadline = Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let lines = s.log_events(group, &stream);
        if lines.iter().any(|l| l == "ready") {
            break lines;
        }
        assert!(Instant::now() < deadline, "no 'ready' in {lines:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // pid 1 is the init, running the command; the orphaned `sleep 0.2` was reaped.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("pid1=/dev/init -- sh -c")),
        "{lines:?}"
    );
    assert!(lines.contains(&"zombies=0".to_string()), "{lines:?}");
    // SIGTERM reaches `sleep` through the init (a bare `sleep` as pid 1 would ignore it and
    // be killed only after the 30 s stopTimeout).
    let started = Instant::now();
    s.aws_ok(&["ecs", "stop-task", "--cluster", "demo", "--task", &arn]);
    let t = s.wait_status("demo", &arn, "STOPPED", Duration::from_secs(25));
    assert!(started.elapsed() < Duration::from_secs(10), "{t}");
    assert_eq!(t["containers"][0]["exitCode"], 143, "{t}");
}

#[test]
fn a_command_that_cannot_run_fails_the_task_with_the_runtime_error() {
    let s = Server::start();
    let td = setup(&s, "nocmd", json!({"command": ["/no/such/program"]}));
    let arn = s.run_task("demo", &td, None);
    let t = s.wait_status("demo", &arn, "STOPPED", Duration::from_secs(30));
    assert_eq!(t["stopCode"], "TaskFailedToStart", "{t}");
    let reason = t["stoppedReason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("CannotStartContainerError: ") && reason.contains("/no/such/program"),
        "{t}"
    );
    assert_eq!(t["containers"][0]["reason"], reason, "{t}");
}
