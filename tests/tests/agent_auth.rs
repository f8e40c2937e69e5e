//! The agent protocol (`/_berth/agent/*`) is authenticated: a caller without a credential gets
//! no task (and no task environment, which holds secrets) and cannot forge state reports; an
//! agent that joined with the join token sees and reports only its own instance's tasks; a
//! wrong join token gets no credential.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use berth_tests::{fargate_taskdef, http, repo_root, task_id, HttpReply, Server};
use serde_json::{json, Value};

const SECRET: &str = "s3cr3t-db-password-7f1c";

fn berth_bin() -> PathBuf {
    std::env::var_os("BERTH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/berth"))
}

/// A server running one long task whose environment holds [`SECRET`]: (server, task ARN).
fn server_with_running_task(family: &str) -> (Server, String) {
    let s = Server::start();
    s.push_test_image("busybox", "1");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "demo"]);
    let td = s.register(&fargate_taskdef(
        family,
        "busybox",
        json!({
            "command": ["sh", "-c", "sleep 120"],
            "environment": [{"name": "DB_PASSWORD", "value": SECRET}]
        }),
    ));
    let arn = s.run_task("demo", &td, None);
    let t = s.wait_status("demo", &arn, "RUNNING", Duration::from_secs(60));
    assert_eq!(t["lastStatus"], "RUNNING", "{t}");
    (s, arn)
}

fn call(s: &Server, method: &str, path: &str, auth: Option<&str>, body: &Value) -> HttpReply {
    let bearer = auth.map(|a| format!("Bearer {a}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    http(s.port, method, path, &headers, &body).expect("HTTP request")
}

fn text(r: &HttpReply) -> String {
    String::from_utf8_lossy(&r.2).into_owned()
}

fn join_token(s: &Server) -> String {
    std::fs::read_to_string(s.data_dir.join("agent-join-token"))
        .expect("the server writes its join token to <data-dir>/agent-join-token")
        .trim()
        .to_string()
}

fn stopped_report() -> Value {
    json!({
        "last_status": "STOPPED",
        "pull_started_at": null, "pull_stopped_at": null, "started_at": null,
        "stopped_at": 1.0,
        "stop_code": "EssentialContainerExited",
        "stopped_reason": "forged",
        "containers": [{"name": "app", "last_status": "STOPPED", "exit_code": 0,
                        "reason": null, "runtime_id": null, "image_digest": null}]
    })
}

#[test]
fn without_a_credential_no_task_is_read_and_no_report_is_taken() {
    let (s, arn) = server_with_running_task("authnone");
    let id = task_id(&arn);
    let poll = "/_berth/agent/assignments?instance=local&after=0&wait=0";
    for auth in [None, Some("nope"), Some("0123456789abcdef.00")] {
        let r = call(&s, "GET", poll, auth, &Value::Null);
        assert_eq!(r.0, 401, "GET assignments with {auth:?}: {}", text(&r));
        assert!(!text(&r).contains(SECRET), "{}", text(&r));
        assert!(!text(&r).contains(id), "{}", text(&r));
    }
    // The join token lets an agent register; it is not a credential itself.
    let r = call(&s, "GET", poll, Some(&join_token(&s)), &Value::Null);
    assert_eq!(r.0, 401, "the join token as credential: {}", text(&r));

    // Forged reports, logs and metrics without a credential change nothing.
    let r = call(
        &s,
        "POST",
        &format!("/_berth/agent/tasks/{id}/state"),
        None,
        &stopped_report(),
    );
    assert_eq!(r.0, 401, "forged report: {}", text(&r));
    let stream = format!("ecs/app/{id}");
    let forged_line = json!({"events": [{"group": "/ecs/authnone", "stream": stream,
                                         "timestamp": 1, "message": "forged line"}]});
    let r = call(&s, "POST", "/_berth/agent/logs", None, &forged_line);
    assert_eq!(r.0, 401, "forged logs: {}", text(&r));
    let r = call(
        &s,
        "POST",
        "/_berth/agent/metrics",
        None,
        &json!({"samples": [{"task_id": id, "cluster_name": "demo", "timestamp": 1,
                             "cpu_utilization": 99.0, "memory_utilization": 99.0}]}),
    );
    assert_eq!(r.0, 401, "forged metrics: {}", text(&r));
    std::thread::sleep(Duration::from_millis(300));
    let t = s.describe_task("demo", &arn);
    assert_eq!(t["lastStatus"], "RUNNING", "{t}");
    assert!(t["containers"][0]["exitCode"].is_null(), "{t}");
    assert!(!s
        .log_events("/ecs/authnone", &stream)
        .contains(&"forged line".to_string()));
}

#[test]
fn a_joined_agent_sees_and_reports_only_its_own_tasks() {
    let (s, arn) = server_with_running_task("authother");
    let id = task_id(&arn);
    let token = join_token(&s);
    let mode = std::fs::metadata(s.data_dir.join("agent-join-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "join token file mode {mode:o}");

    let r = call(
        &s,
        "POST",
        "/_berth/agent/register",
        Some(&token),
        &json!({"instance_id": "i-b"}),
    );
    assert_eq!(r.0, 200, "register: {}", text(&r));
    let v: Value = serde_json::from_slice(&r.2).unwrap();
    let cred = v["credential"].as_str().unwrap().to_string();
    // An instance registers once; nobody takes over the local agent's instance either.
    for inst in ["i-b", "local"] {
        let r = call(
            &s,
            "POST",
            "/_berth/agent/register",
            Some(&token),
            &json!({"instance_id": inst}),
        );
        assert_eq!(r.0, 409, "registering {inst} again: {}", text(&r));
    }

    // B's assignments hold none of the local agent's tasks, and it cannot ask for them.
    let r = call(
        &s,
        "GET",
        "/_berth/agent/assignments?after=0&wait=0",
        Some(&cred),
        &Value::Null,
    );
    assert_eq!(r.0, 200, "{}", text(&r));
    let a: Value = serde_json::from_slice(&r.2).unwrap();
    assert_eq!(a["tasks"], json!([]), "{a}");
    assert!(!text(&r).contains(SECRET));
    let r = call(
        &s,
        "GET",
        "/_berth/agent/assignments?instance=local&after=0&wait=0",
        Some(&cred),
        &Value::Null,
    );
    assert_eq!(r.0, 403, "{}", text(&r));
    assert!(!text(&r).contains(SECRET));

    // Nor report, log or sample for them.
    let r = call(
        &s,
        "POST",
        &format!("/_berth/agent/tasks/{id}/state"),
        Some(&cred),
        &stopped_report(),
    );
    assert_eq!(r.0, 403, "report for another instance's task: {}", text(&r));
    let stream = format!("ecs/app/{id}");
    let r = call(
        &s,
        "POST",
        "/_berth/agent/logs",
        Some(&cred),
        &json!({"events": [{"group": "/ecs/authother", "stream": stream,
                            "timestamp": 1, "message": "forged line"}]}),
    );
    assert_eq!(r.0, 403, "logs for another instance's task: {}", text(&r));
    let r = call(
        &s,
        "POST",
        "/_berth/agent/metrics",
        Some(&cred),
        &json!({"samples": [{"task_id": id, "cluster_name": "demo", "timestamp": 1,
                             "cpu_utilization": 99.0, "memory_utilization": 99.0}]}),
    );
    assert_eq!(
        r.0,
        403,
        "metrics for another instance's task: {}",
        text(&r)
    );
    std::thread::sleep(Duration::from_millis(300));
    let t = s.describe_task("demo", &arn);
    assert_eq!(t["lastStatus"], "RUNNING", "{t}");
    assert!(t["containers"][0]["exitCode"].is_null(), "{t}");
    assert!(!s
        .log_events("/ecs/authother", &stream)
        .contains(&"forged line".to_string()));
    // The local agent still reports its task: a stop comes through.
    s.aws_ok(&["ecs", "stop-task", "--cluster", "demo", "--task", &arn]);
    let t = s.wait_status("demo", &arn, "STOPPED", Duration::from_secs(60));
    assert_eq!(t["stopCode"], "UserInitiated", "{t}");
}

#[test]
fn a_wrong_join_token_gets_no_credential() {
    let s = Server::start();
    let token = join_token(&s);
    assert_eq!(token.len(), 64, "{token}");
    // `berth join-token` prints the same token.
    let out = std::process::Command::new(berth_bin())
        .arg("join-token")
        .arg("--data-dir")
        .arg(&s.data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), token);
    // The token is not written to the server's log.
    assert!(!s.log().contains(&token));

    let mut wrong = token.clone().into_bytes();
    wrong[10] = if wrong[10] == b'a' { b'b' } else { b'a' };
    let wrong = String::from_utf8(wrong).unwrap();
    for auth in [None, Some(wrong.as_str()), Some("")] {
        let r = call(
            &s,
            "POST",
            "/_berth/agent/register",
            auth,
            &json!({"instance_id": "i-x"}),
        );
        assert_eq!(r.0, 401, "register with {auth:?}: {}", text(&r));
        assert!(!text(&r).contains("credential\":"), "{}", text(&r));
    }
    // i-x is still free: the right token registers it.
    let r = call(
        &s,
        "POST",
        "/_berth/agent/register",
        Some(&token),
        &json!({"instance_id": "i-x"}),
    );
    assert_eq!(r.0, 200, "{}", text(&r));
    let r = call(
        &s,
        "POST",
        "/_berth/agent/register",
        Some(&token),
        &json!({"instance_id": "../etc"}),
    );
    assert_eq!(r.0, 400, "{}", text(&r));
}

/// A `berth agent` process, killed when dropped.
struct AgentProc(Option<std::process::Child>);

impl AgentProc {
    fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline && c.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_agent(s: &Server, join_token: Option<&str>, log: &str) -> std::process::Child {
    let mut cmd = std::process::Command::new(berth_bin());
    cmd.arg("agent")
        .args(["--server", &s.endpoint()])
        // Under the server's data dir, so the harness cleans up after its tasks.
        .arg("--data-dir")
        .arg(s.data_dir.join("agent"))
        .args(["--task-subnet", &s.task_subnet()])
        .args(["--task-bridge", &s.bridge()])
        .env_remove("BERTH_JOIN_TOKEN")
        // Where `berth` finds the account's access key when the registry wants credentials.
        .env("BERTH_DATA_DIR", &s.data_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(s.data_dir.join(log)).unwrap());
    if let Some(t) = join_token {
        cmd.env("BERTH_JOIN_TOKEN", t);
    }
    cmd.spawn().unwrap()
}

#[test]
fn a_separate_agent_joins_with_the_token_and_keeps_its_credential() {
    // Declared first, dropped last: the server stops its tasks while the agent still runs.
    let mut agent = AgentProc(None);
    let s = Server::start_with(&["--no-agent"]);
    s.push_test_image("busybox", "1");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "demo"]);
    let td = s.register(&fargate_taskdef(
        "joined",
        "busybox",
        json!({"command": ["sh", "-c", "sleep 1; exit 3"]}),
    ));
    // Without a token (and no saved credential) the agent says what it needs and exits.
    let mut bare = spawn_agent(&s, None, "agent0.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = bare.try_wait().unwrap() {
            break Some(st);
        }
        if std::time::Instant::now() > deadline {
            let _ = bare.kill();
            let _ = bare.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let said = std::fs::read_to_string(s.data_dir.join("agent0.log")).unwrap_or_default();
    assert!(
        status.is_some_and(|st| !st.success()),
        "an agent without a credential kept running: {said}"
    );
    assert!(said.contains("--join-token"), "{said}");

    agent.0 = Some(spawn_agent(&s, Some(&join_token(&s)), "agent1.log"));
    let arn = s.run_task("demo", &td, None);
    let t = s.wait_status("demo", &arn, "STOPPED", Duration::from_secs(60));
    assert_eq!(t["containers"][0]["exitCode"], 3, "{t}");
    let cred = s.data_dir.join("agent").join("credential");
    let mode = std::fs::metadata(&cred).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "credential file mode {mode:o}");

    // Restarted without the token, it goes on with the credential it kept.
    agent.stop();
    agent.0 = Some(spawn_agent(&s, None, "agent2.log"));
    let arn = s.run_task("demo", &td, None);
    let t = s.wait_status("demo", &arn, "STOPPED", Duration::from_secs(60));
    assert_eq!(t["containers"][0]["exitCode"], 3, "{t}");
    assert_eq!(t["stopCode"], "EssentialContainerExited", "{t}");
    drop(s);
}
