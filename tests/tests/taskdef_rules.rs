//! Task definitions that would reach the host are refused as Fargate refuses them, malformed
//! values are refused as ECS refuses them, and EC2-launch-type settings are honoured, never
//! silently dropped. Real server, real AWS CLI, real crun.

use std::time::Duration;

use berth_tests::{fargate_taskdef, Server};
use serde_json::{json, Value};

fn register_err(s: &Server, td: &Value) -> String {
    s.aws(&[
        "ecs",
        "register-task-definition",
        "--cli-input-json",
        &td.to_string(),
    ])
    .expect_err(&format!("registered: {td}"))
}

#[test]
fn fargate_task_definitions_cannot_reach_the_host() {
    let s = Server::start();
    let host_root = {
        let mut td = fargate_taskdef(
            "rootfs",
            "busybox",
            json!({"command": ["cat", "/host/etc/shadow"],
                   "mountPoints": [{"sourceVolume": "root", "containerPath": "/host"}]}),
        );
        td["volumes"] = json!([{"name": "root", "host": {"sourcePath": "/"}}]);
        td
    };
    let caps = |add: Value| {
        fargate_taskdef(
            "caps",
            "busybox",
            json!({"linuxParameters": {"capabilities": {"add": add}}}),
        )
    };
    let mut pid_host = fargate_taskdef("pid", "busybox", json!({}));
    pid_host["pidMode"] = json!("host");
    let mut ipc_host = fargate_taskdef("ipc", "busybox", json!({}));
    ipc_host["ipcMode"] = json!("host");
    let devices = fargate_taskdef(
        "dev",
        "busybox",
        json!({"linuxParameters": {"devices": [{"hostPath": "/dev/mem", "containerPath": "/dev/mem"}]}}),
    );
    let privileged = fargate_taskdef("priv", "busybox", json!({"privileged": true}));
    for (td, needle) in [
        (&host_root, "sourcePath"),
        (&caps(json!(["SYS_ADMIN"])), "SYS_ADMIN"),
        (&caps(json!(["SYS_MODULE"])), "SYS_MODULE"),
        (&caps(json!(["SYS_PTRACE", "NET_ADMIN"])), "NET_ADMIN"),
        (&pid_host, "pidMode"),
        (&ipc_host, "ipcMode"),
        (&devices, "devices"),
        (&privileged, "Privileged"),
    ] {
        let e = register_err(&s, td);
        assert!(e.contains("ClientException"), "{e}");
        assert!(e.contains(needle), "{needle}: {e}");
    }
    // SYS_PTRACE is the one capability Fargate adds.
    s.register(&caps(json!(["SYS_PTRACE"])));
    let l = s.aws_ok(&["ecs", "list-task-definitions"]);
    assert_eq!(l["taskDefinitionArns"].as_array().unwrap().len(), 1, "{l}");

    // The same host volume registered for EC2 is not Fargate-compatible: RunTask and
    // CreateService with FARGATE refuse it.
    let mut ec2 = host_root.clone();
    ec2.as_object_mut()
        .unwrap()
        .remove("requiresCompatibilities");
    let ec2_td = s.register(&ec2);
    let d = s.aws_ok(&[
        "ecs",
        "describe-task-definition",
        "--task-definition",
        &ec2_td,
    ]);
    assert_eq!(
        d["taskDefinition"]["compatibilities"],
        json!(["EC2"]),
        "{d}"
    );
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "c"]);
    let e = s
        .aws(&[
            "ecs",
            "run-task",
            "--cluster",
            "c",
            "--task-definition",
            &ec2_td,
            "--launch-type",
            "FARGATE",
            "--network-configuration",
            "awsvpcConfiguration={subnets=[subnet-12345678]}",
        ])
        .unwrap_err();
    assert!(e.contains("does not support launch_type FARGATE"), "{e}");
    let e = s
        .aws(&[
            "ecs",
            "create-service",
            "--cluster",
            "c",
            "--service-name",
            "web",
            "--task-definition",
            &ec2_td,
            "--desired-count",
            "1",
            "--launch-type",
            "FARGATE",
            "--network-configuration",
            "awsvpcConfiguration={subnets=[subnet-12345678]}",
        ])
        .unwrap_err();
    // ECS answers CreateService as it answers RunTask.
    assert!(e.contains("InvalidParameterException"), "{e}");
    assert!(e.contains("does not support launch_type FARGATE"), "{e}");
    // An EC2-only setting berth cannot honour is refused at launch, not ignored.
    let mut ec2_pid = fargate_taskdef("ec2pid", "busybox", json!({}));
    ec2_pid
        .as_object_mut()
        .unwrap()
        .remove("requiresCompatibilities");
    ec2_pid["pidMode"] = json!("host");
    let td = s.register(&ec2_pid);
    let e = s
        .aws(&[
            "ecs",
            "run-task",
            "--cluster",
            "c",
            "--task-definition",
            &td,
            "--launch-type",
            "EC2",
            "--network-configuration",
            "awsvpcConfiguration={subnets=[subnet-12345678]}",
        ])
        .unwrap_err();
    assert!(e.contains("pidMode"), "{e}");
}

#[test]
fn malformed_container_definitions_are_refused() {
    let s = Server::start();
    for (container, needle) in [
        (json!({"cpu": -1}), "cpu"),
        (json!({"memory": -512}), "memory"),
        (json!({"stopTimeout": -5}), "stopTimeout"),
        (
            json!({"portMappings": [{"containerPort": -1}]}),
            "containerPort",
        ),
        (
            json!({"portMappings": [{"containerPort": 80, "hostPort": 70000}]}),
            "hostPort",
        ),
        (
            json!({"dependsOn": [{"containerName": "app", "condition": "START"}]}),
            "itself",
        ),
        (
            json!({"healthCheck": {"command": ["CMD", "true"], "interval": 1}}),
            "interval",
        ),
    ] {
        let td = fargate_taskdef("bad", "busybox", container.clone());
        let e = register_err(&s, &td);
        assert!(e.contains("ClientException"), "{container}: {e}");
        assert!(e.contains(needle), "{container}: {e}");
    }
    // A two-container cycle would leave both PENDING forever.
    let mut td = fargate_taskdef(
        "cycle",
        "busybox",
        json!({"dependsOn": [{"containerName": "side", "condition": "START"}]}),
    );
    let mut side = td["containerDefinitions"][0].clone();
    side["name"] = json!("side");
    side["dependsOn"] = json!([{"containerName": "app", "condition": "START"}]);
    td["containerDefinitions"]
        .as_array_mut()
        .unwrap()
        .push(side);
    let e = register_err(&s, &td);
    assert!(e.contains("cycle"), "{e}");
    let l = s.aws_ok(&["ecs", "list-task-definitions"]);
    assert_eq!(l["taskDefinitionArns"], json!([]), "{l}");
}

/// `privileged: true` with the EC2 launch type runs with every capability (it used to be
/// dropped silently); the same container without it keeps Docker's default set.
#[test]
fn ec2_privileged_is_honoured() {
    let s = Server::start();
    s.push_test_image("busybox", "1");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "c"]);
    let run = |privileged: bool| -> String {
        let family = if privileged { "priv" } else { "plain" };
        let mut td = fargate_taskdef(
            family,
            "busybox",
            json!({"command": ["sh", "-c", "grep CapEff /proc/self/status"],
                   "privileged": privileged}),
        );
        td.as_object_mut()
            .unwrap()
            .remove("requiresCompatibilities");
        let td = s.register(&td);
        let v = s.aws_ok(&[
            "ecs",
            "run-task",
            "--cluster",
            "c",
            "--task-definition",
            &td,
            "--launch-type",
            "EC2",
            "--network-configuration",
            "awsvpcConfiguration={subnets=[subnet-12345678]}",
        ]);
        let arn = v["tasks"][0]["taskArn"].as_str().unwrap().to_string();
        let t = s.wait_status("c", &arn, "STOPPED", Duration::from_secs(60));
        assert_eq!(t["containers"][0]["exitCode"], 0, "{t}");
        let id = berth_tests::task_id(&arn).to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ev = s.log_events(&format!("/ecs/{family}"), &format!("ecs/app/{id}"));
            if let Some(l) = ev.iter().find(|l| l.contains("CapEff")) {
                return l.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no CapEff line: {ev:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let mask =
        |line: &str| u64::from_str_radix(line.split_whitespace().last().unwrap(), 16).unwrap();
    let plain = mask(&run(false));
    let privileged = mask(&run(true));
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    assert_eq!(plain & CAP_SYS_ADMIN, 0, "{plain:x}");
    assert_ne!(privileged & CAP_SYS_ADMIN, 0, "{privileged:x}");
    assert!(privileged.count_ones() >= 30, "{privileged:x}");
}

/// A runtime failure's message (here crun refusing to mount a volume over a file) reaches the
/// API caller without the host paths of berth's data directory.
#[test]
fn failure_reasons_name_no_host_paths() {
    let s = Server::start();
    s.push_test_image("busybox", "1");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "c"]);
    let mut td = fargate_taskdef(
        "overfile",
        "busybox",
        json!({"command": ["true"],
               "mountPoints": [{"sourceVolume": "scratch", "containerPath": "/bin/busybox"}]}),
    );
    td["volumes"] = json!([{"name": "scratch"}]);
    let td = s.register(&td);
    let arn = s.run_task("c", &td, None);
    let t = s.wait_status("c", &arn, "STOPPED", Duration::from_secs(60));
    let reason = t["stoppedReason"].as_str().unwrap_or("").to_string();
    let creason = t["containers"][0]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(t["stopCode"], "TaskFailedToStart", "{t}");
    let data = s.data_dir.canonicalize().unwrap();
    for r in [&reason, &creason] {
        assert!(!r.contains(data.to_str().unwrap()), "{r}");
        assert!(!r.contains(s.data_dir.to_str().unwrap()), "{r}");
    }
    eprintln!("reason: {reason}");
}
