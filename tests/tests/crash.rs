//! Crash consistency: `kill -9` of the server (and so of its embedded agent) while a burst of
//! 60 RunTask tasks is starting must not cost any task its true outcome. After the restart
//! every task runs to its own end: seen RUNNING, then STOPPED because its essential container exited, with the
//! container's exit code; none stays PENDING, none is stopped as TaskFailedToStart while its
//! container ran.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use berth_tests::{fargate_taskdef, Server};
use serde_json::{json, Value};

const TASKS: usize = 60;
const SLEEP_SECONDS: u64 = 10;

fn api(s: &Server, op: &str, body: &Value) -> Result<Value, String> {
    s.json_api(&format!("AmazonEC2ContainerServiceV20141113.{op}"), body)
}

/// Every task of `cluster` (running and stopped).
fn list_tasks(s: &Server, cluster: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for desired in ["RUNNING", "STOPPED"] {
        let mut token: Option<String> = None;
        loop {
            let mut req = json!({"cluster": cluster, "desiredStatus": desired, "maxResults": 100});
            if let Some(t) = &token {
                req["nextToken"] = json!(t);
            }
            let v = api(s, "ListTasks", &req).unwrap();
            for a in v["taskArns"].as_array().into_iter().flatten() {
                out.insert(a.as_str().unwrap().to_string());
            }
            match v["nextToken"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
    }
    out
}

fn describe(s: &Server, cluster: &str, arns: &BTreeSet<String>) -> Vec<Value> {
    let arns: Vec<&String> = arns.iter().collect();
    let mut out = Vec::new();
    for chunk in arns.chunks(100) {
        let v = api(
            s,
            "DescribeTasks",
            &json!({"cluster": cluster, "tasks": chunk}),
        )
        .unwrap();
        out.extend(v["tasks"].as_array().unwrap().iter().cloned());
    }
    out
}

#[test]
fn a_kill9_during_a_burst_of_run_task_loses_no_task_outcome() {
    let t0 = Instant::now();
    let mut s = Server::start();
    s.push_test_image("busybox", "1");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "crash"]);
    let td = s.register(&fargate_taskdef(
        "crash",
        "busybox",
        json!({"command": ["sh", "-c", format!("sleep {SLEEP_SECONDS}; exit 7")]}),
    ));

    // The burst: RunTask, 10 tasks a call, as fast as the server answers.
    let mut created = Vec::new();
    for _ in 0..TASKS / 10 {
        let v = api(
            &s,
            "RunTask",
            &json!({"cluster": "crash", "taskDefinition": td, "count": 10,
                    "launchType": "FARGATE",
                    "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}}),
        )
        .unwrap();
        created.extend(
            v["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["taskArn"].as_str().unwrap().to_string()),
        );
    }
    // Kill while the agent starts them: once a few run, most are still on their way.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let arns = list_tasks(&s, "crash");
        let running = describe(&s, "crash", &arns)
            .iter()
            .filter(|t| t["lastStatus"] == "RUNNING")
            .count();
        if running >= 3 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    s.kill9();
    let before = Instant::now();
    s.restart_after_kill9();
    eprintln!(
        "killed at {:?} with {} tasks acknowledged; restarted in {:?}",
        before - t0,
        created.len(),
        before.elapsed()
    );

    let arns = list_tasks(&s, "crash");
    for a in &created {
        assert!(arns.contains(a), "task {a} was acknowledged but is gone");
    }
    assert!(arns.len() >= 10, "only {} tasks were created", arns.len());
    let mut seen_running: BTreeSet<String> = BTreeSet::new();
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(SLEEP_SECONDS + 30);
    loop {
        for t in describe(&s, "crash", &arns) {
            let arn = t["taskArn"].as_str().unwrap().to_string();
            if t["lastStatus"] == "RUNNING" {
                seen_running.insert(arn.clone());
            }
            last.insert(arn, t);
        }
        if last.values().all(|t| t["lastStatus"] == "STOPPED") || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut wrong = Vec::new();
    for (arn, t) in &last {
        let id = arn.rsplit('/').next().unwrap();
        let ok = t["lastStatus"] == "STOPPED"
            && t["stopCode"] == "EssentialContainerExited"
            && t["stoppedReason"] == "Essential container in task exited"
            && t["containers"][0]["exitCode"] == 7
            && t["startedAt"].is_number()
            && seen_running.contains(arn);
        if !ok {
            wrong.push(format!(
                "{id}: {} {} {:?} exit {} startedAt {} seen RUNNING {}",
                t["lastStatus"],
                t["stopCode"],
                t["stoppedReason"].as_str(),
                t["containers"][0]["exitCode"],
                t["startedAt"],
                seen_running.contains(arn)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} tasks misreported after kill -9:\n{}\nserver log (after restart):\n{}",
        wrong.len(),
        last.len(),
        wrong.join("\n"),
        s.log()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("re-adopt"))
            .take(80)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let log = s.log();
    eprintln!(
        "{} tasks, all with their outcome, in {:?} ({} re-adopted, {} started again, {} starts resolved from the shim's files)",
        last.len(),
        t0.elapsed(),
        log.matches("re-adopting").count(),
        log.matches("restarting a task").count(),
        log.matches("resolving a start").count()
    );
}
