//! Host-protecting limits: the tasks' pids in all (the parent `berth` pids cgroup) and per task.

use std::time::Duration;

use berth_tests::{fargate_taskdef, task_id, Server};
use serde_json::json;

/// The v1 `pids` hierarchy (this project's hosts are hybrid v1) or the v2 root.
fn pids_root() -> Option<std::path::PathBuf> {
    let v1 = std::path::PathBuf::from("/sys/fs/cgroup/pids");
    if v1.is_dir() {
        return Some(v1);
    }
    let v2 = std::path::PathBuf::from("/sys/fs/cgroup");
    v2.join("cgroup.controllers").exists().then_some(v2)
}

fn host_pid_limit() -> u64 {
    let n = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    n("/proc/sys/kernel/pid_max").min(n("/proc/sys/kernel/threads-max"))
}

#[test]
fn tasks_pids_are_limited_in_all_and_per_task() {
    let Some(root) = pids_root() else {
        eprintln!("no pids cgroup controller here");
        return;
    };
    let parent = root.join("berth");
    // Undo whatever an earlier agent set: this server must set it itself.
    if parent.join("pids.max").exists() {
        std::fs::write(parent.join("pids.max"), "max").unwrap();
    }
    let s = Server::start();
    let got = std::fs::read_to_string(parent.join("pids.max")).unwrap();
    let got: u64 = got
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("berth pids.max is {got:?}"));
    let host = host_pid_limit();
    assert!(got < host, "berth pids.max {got} vs host {host}");
    assert!(got >= host / 2, "berth pids.max {got} vs host {host}");

    // A running task's own cgroup holds all its containers to 4096 pids.
    s.push_test_image("busybox", "1");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "demo"]);
    let td = s.register(&fargate_taskdef(
        "pids",
        "busybox",
        json!({"command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}),
    ));
    let arn = s.run_task("demo", &td, None);
    let t = s.wait_status("demo", &arn, "RUNNING", Duration::from_secs(60));
    assert_eq!(t["lastStatus"], "RUNNING", "{t}");
    let task_max =
        std::fs::read_to_string(parent.join(task_id(&arn)).join("pids.max")).unwrap_or_default();
    assert_eq!(task_max.trim(), "4096");
    s.aws_ok(&["ecs", "stop-task", "--cluster", "demo", "--task", &arn]);
    s.wait_status("demo", &arn, "STOPPED", Duration::from_secs(60));
}
