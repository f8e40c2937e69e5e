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
    // The agent sets it as it starts, before it takes any task; the server may answer first.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let got: u64 = loop {
        let got = std::fs::read_to_string(parent.join("pids.max")).unwrap_or_default();
        if let Ok(n) = got.trim().parse() {
            break n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "berth pids.max is {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
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

/// `ephemeralStorage` is enforced by measurement: with the test knob a GiB of limit is one
/// MiB, so the task's 21 GiB are 21 MiB; it writes 4 MiB (reported by the metadata endpoint),
/// then 40 MiB, and is stopped for it.
#[test]
fn ephemeral_storage_over_the_limit_stops_the_task() {
    let s = Server::start_with_env(
        &["--metrics-interval", "1"],
        &[("BERTH_TEST_EPHEMERAL_BYTES_PER_GIB", "1048576")],
    );
    s.push_test_image("busybox", "1");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "demo"]);
    let mut td = fargate_taskdef(
        "filler",
        "busybox",
        json!({"command": ["sh", "-c",
            "dd if=/dev/zero of=/small bs=1M count=4 2>/dev/null; sleep 3; \
             wget -q -O- $ECS_CONTAINER_METADATA_URI_V4/task; echo; \
             dd if=/dev/zero of=/big bs=1M count=40 2>/dev/null; echo wrote; sleep 120"]}),
    );
    // Fargate's range is 21..=200 GiB.
    td["ephemeralStorage"] = json!({"sizeInGiB": 20});
    let e = s
        .aws(&[
            "ecs",
            "register-task-definition",
            "--cli-input-json",
            &td.to_string(),
        ])
        .unwrap_err();
    assert!(e.contains("ClientException") && e.contains("21 GiB"), "{e}");
    td["ephemeralStorage"] = json!({"sizeInGiB": 21});
    let td = s.register(&td);
    let arn = s.run_task("demo", &td, None);
    let t = s.wait_status("demo", &arn, "STOPPED", Duration::from_secs(90));
    assert_eq!(t["lastStatus"], "STOPPED", "{t}");
    assert_eq!(t["ephemeralStorage"]["sizeInGiB"], 21, "{t}");
    assert_eq!(t["stopCode"], "EssentialContainerExited", "{t}");
    let reason = t["stoppedReason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("EphemeralStorageExceeded: ") && reason.contains("21 GiB"),
        "{t}"
    );
    assert_eq!(t["containers"][0]["exitCode"], 137, "{t}");
    let out = s.log_events("/ecs/filler", &format!("ecs/app/{}", task_id(&arn)));
    let doc: serde_json::Value = out
        .iter()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no task metadata document: {out:?}"));
    let m = &doc["EphemeralStorageMetrics"];
    assert_eq!(m["Reserved"], 21, "{doc}");
    let used = m["Utilized"].as_u64().unwrap_or(0);
    assert!((4..21).contains(&used), "{doc}");
}
