//! The web console (issue 7), loaded in headless Chromium (Debian's `chromium`, driven by
//! Playwright from npm `playwright-core` with `executablePath`): it shows a running service,
//! its tasks and the task's logs live; screenshots are taken and the page text is checked. The
//! page first asks for the access key and signs every request with it (SigV4).

use std::process::Command;
use std::time::Duration;

use berth_tests::{fargate_taskdef, repo_root, temp_dir, Server};
use serde_json::{json, Value};

const NET: &str = "awsvpcConfiguration={subnets=[subnet-12345678]}";

#[test]
fn console_shows_running_service_and_live_logs() {
    let console_dir = repo_root().join("tests/console");
    assert!(
        console_dir.join("node_modules/playwright-core").is_dir(),
        "run scripts/deps.sh (npm ci in tests/console) first"
    );
    let s = Server::start();
    s.push_test_image("busybox", "1");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "web"]);
    let td = s.register(&fargate_taskdef(
        "hello",
        "busybox",
        json!({
            "command": ["sh", "-c",
                "trap 'exit 0' TERM; echo hello-from-console-test; while true; do echo tick; sleep 1; done & wait"],
            "stopTimeout": 2
        }),
    ));
    s.aws_ok(&[
        "ecs",
        "create-service",
        "--cluster",
        "web",
        "--service-name",
        "frontend",
        "--task-definition",
        &td,
        "--desired-count",
        "2",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        NET,
    ]);
    // Wait until both tasks run, so the console has something to show.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let v = s.aws_ok(&[
            "ecs",
            "describe-services",
            "--cluster",
            "web",
            "--services",
            "frontend",
        ]);
        if v["services"][0]["runningCount"] == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "service never ran 2 tasks: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let out_dir = temp_dir("console");
    let out = Command::new("node")
        .arg(console_dir.join("console.js"))
        .arg(s.endpoint())
        .arg(&out_dir)
        .args(["web", "frontend", "hello-from-console-test"])
        .env("BERTH_ACCESS_KEY_ID", s.access_key().access_key_id)
        .env("BERTH_SECRET_ACCESS_KEY", s.access_key().secret_access_key)
        .current_dir(&console_dir)
        .output()
        .expect("running node");
    assert!(
        out.status.success(),
        "console.js failed: {}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        s.log()
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = |k: &str| r[k].as_str().unwrap_or_default().to_string();

    // Before signing in the page shows the form and no data; a wrong secret is refused.
    let login = text("login");
    assert!(login.contains("Sign in"), "{login}");
    assert!(!login.contains("frontend"), "{login}");
    let refused = text("login_refused");
    assert!(refused.contains("InvalidSignatureException"), "{refused}");
    assert!(!refused.contains("frontend"), "{refused}");

    let cluster = text("cluster");
    assert!(cluster.contains("Cluster web"), "{cluster}");
    assert!(cluster.contains("frontend"), "{cluster}");
    assert!(cluster.contains("RUNNING"), "{cluster}");
    assert!(cluster.contains("1–2 of 2"), "task pager: {cluster}");

    let service = text("service");
    assert!(service.contains("Service frontend"), "{service}");
    assert!(service.contains("PRIMARY"), "deployments: {service}");
    assert!(service.contains("CPUUtilization"), "chart: {service}");
    assert!(service.contains("MemoryUtilization"), "chart: {service}");
    assert!(service.contains("service:frontend"), "its tasks: {service}");

    let task = text("task");
    assert!(task.contains("hello-from-console-test"), "logs: {task}");
    assert!(task.contains("tick"), "live logs: {task}");
    assert!(task.contains("RUNNING"), "{task}");
    assert!(task.contains("256 units / 512 MiB"), "{task}");

    let usage = text("usage");
    assert!(usage.contains("web/frontend"), "{usage}");
    assert!(usage.contains("vCPU-seconds"), "{usage}");

    assert_eq!(r["errors"], json!([]), "page errors");
    let shots = r["screenshots"].as_array().unwrap();
    assert_eq!(shots.len(), 4);
    for p in shots {
        let png = std::fs::read(p.as_str().unwrap()).unwrap();
        assert!(png.len() > 5000 && png.starts_with(b"\x89PNG"), "{p}");
    }
    // Keep the screenshots where a person (or CI) can look at them.
    let keep = repo_root().join("target/console-screenshots");
    let _ = std::fs::create_dir_all(&keep);
    for p in shots {
        let p = std::path::Path::new(p.as_str().unwrap());
        let _ = std::fs::copy(p, keep.join(p.file_name().unwrap()));
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}
