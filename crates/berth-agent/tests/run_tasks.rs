//! Root-only end-to-end test: a loopback stub serves a tiny busybox image (OCI distribution)
//! and the agent endpoints; the agent really runs tasks with crun and runc.
//! Skipped (passes) when not root or the runtime is missing / refused by preflight.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as AxPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_agent::{preflight, run, AgentConfig};
use berth_api::agent::{
    Assignments, ContainerSpec, LogBatch, LogDestination, LogLine, TaskAssignment, TaskSpec,
    TaskStateReport,
};
use berth_core::status::{DesiredStatus, StopCode, TaskStatus};
use sha2::{Digest, Sha256};

#[derive(Default)]
struct Stub {
    blobs: HashMap<String, Vec<u8>>,
    manifests: HashMap<(String, String), (String, Vec<u8>)>,
    assignments: Option<Assignments>,
    reports: Vec<(String, TaskStateReport, Instant)>,
    logs: Vec<LogLine>,
    /// When each assignment version was handed out.
    served: HashMap<u64, Instant>,
    manifest_requests: usize,
}

#[derive(Clone)]
struct S {
    st: Arc<Mutex<Stub>>,
    changed: Arc<tokio::sync::Notify>,
    reported: Arc<tokio::sync::Notify>,
}

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

async fn v2(State(s): State<S>, AxPath(rest): AxPath<String>) -> Response {
    let mut st = s.st.lock().unwrap();
    if let Some((repo, r)) = rest.rsplit_once("/manifests/") {
        st.manifest_requests += 1;
        if let Some((mt, b)) = st.manifests.get(&(repo.to_string(), r.to_string())) {
            let mut h = HeaderMap::new();
            h.insert("content-type", mt.parse().unwrap());
            return (h, b.clone()).into_response();
        }
    } else if let Some((_, d)) = rest.rsplit_once("/blobs/") {
        if let Some(b) = st.blobs.get(d) {
            return b.clone().into_response();
        }
    }
    (
        StatusCode::NOT_FOUND,
        "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\"}]}",
    )
        .into_response()
}

async fn assignments(
    State(s): State<S>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Assignments> {
    let after: u64 = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let wait: u64 = q.get("wait").and_then(|a| a.parse().ok()).unwrap_or(30);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        let notified = s.changed.notified();
        {
            let mut st = s.st.lock().unwrap();
            let a = st.assignments.clone().unwrap_or(Assignments {
                version: 0,
                tasks: vec![],
            });
            if a.version > after || tokio::time::Instant::now() >= deadline {
                st.served.entry(a.version).or_insert_with(Instant::now);
                return Json(a);
            }
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

async fn state(
    State(s): State<S>,
    AxPath(id): AxPath<String>,
    Json(r): Json<TaskStateReport>,
) -> StatusCode {
    s.st.lock().unwrap().reports.push((id, r, Instant::now()));
    s.reported.notify_waiters();
    StatusCode::NO_CONTENT
}

async fn logs(State(s): State<S>, Json(b): Json<LogBatch>) -> StatusCode {
    s.st.lock().unwrap().logs.extend(b.events);
    s.reported.notify_waiters();
    StatusCode::NO_CONTENT
}

impl S {
    fn set_tasks(&self, tasks: Vec<TaskAssignment>) -> u64 {
        let mut st = self.st.lock().unwrap();
        let v = st.assignments.as_ref().map(|a| a.version).unwrap_or(0) + 1;
        st.assignments = Some(Assignments { version: v, tasks });
        drop(st);
        self.changed.notify_waiters();
        v
    }

    async fn wait_report(
        &self,
        task: &str,
        status: TaskStatus,
        timeout: Duration,
    ) -> (TaskStateReport, Instant) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.reported.notified();
            {
                let st = self.st.lock().unwrap();
                if let Some((_, r, t)) = st
                    .reports
                    .iter()
                    .find(|(id, r, _)| id == task && r.last_status == status)
                {
                    return (r.clone(), *t);
                }
            }
            if tokio::time::timeout_at(deadline, n).await.is_err() {
                let st = self.st.lock().unwrap();
                let seen: Vec<_> = st
                    .reports
                    .iter()
                    .filter(|(id, _, _)| id == task)
                    .map(|(_, r, _)| r.clone())
                    .collect();
                panic!("no {status} report for {task} within {timeout:?}; saw {seen:#?}");
            }
        }
    }

    fn log_lines(&self, stream: &str) -> Vec<String> {
        let st = self.st.lock().unwrap();
        st.logs
            .iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.message.clone())
            .collect()
    }
}

fn tar_gz(entries: &[(&str, TarItem)]) -> (Vec<u8>, String) {
    let mut b = tar::Builder::new(Vec::new());
    for (path, item) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match item {
            TarItem::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
            TarItem::File(data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, &data[..]).unwrap();
            }
            TarItem::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target).unwrap();
            }
        }
    }
    let tar = b.into_inner().unwrap();
    let diff_id = digest(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

enum TarItem {
    Dir,
    File(Vec<u8>, u32),
    Symlink(&'static str),
}

/// Publishes `busybox:1`: layer 1 has busybox, applet links, /etc/passwd and /etc/removed;
/// layer 2 whites out /etc/removed. Served through an image index (linux/amd64 + another).
fn publish_image(st: &mut Stub) {
    let bb = std::fs::read("/bin/busybox").unwrap();
    let mut l1: Vec<(&str, TarItem)> = vec![
        ("bin/", TarItem::Dir),
        ("bin/busybox", TarItem::File(bb, 0o755)),
        ("etc/", TarItem::Dir),
        (
            "etc/passwd",
            TarItem::File(
                b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n".to_vec(),
                0o644,
            ),
        ),
        ("etc/removed", TarItem::File(b"x".to_vec(), 0o644)),
        ("tmp/", TarItem::Dir),
    ];
    for applet in ["sh", "echo", "cat", "sleep", "test", "id", "true", "ls"] {
        l1.push((
            Box::leak(format!("bin/{applet}").into_boxed_str()),
            TarItem::Symlink("busybox"),
        ));
    }
    let (gz1, diff1) = tar_gz(&l1);
    let (gz2, diff2) = tar_gz(&[
        ("etc/", TarItem::Dir),
        ("etc/.wh.removed", TarItem::File(vec![], 0o644)),
    ]);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin", "FROM_IMAGE=1"], "Cmd": ["sh"], "WorkingDir": "/tmp"},
        "rootfs": {"type": "layers", "diff_ids": [diff1, diff2]}
    });
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&gz1), "size": gz1.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&gz2), "size": gz2.len()},
        ]
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let md = digest(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", "0".repeat(64)), "size": 1, "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(), "platform": {"architecture": "amd64", "os": "linux"}},
        ]
    });
    let index = serde_json::to_vec(&index).unwrap();
    st.blobs.insert(digest(&config), config);
    st.blobs.insert(digest(&gz1), gz1);
    st.blobs.insert(digest(&gz2), gz2);
    st.manifests.insert(
        ("busybox".into(), md.clone()),
        (
            "application/vnd.oci.image.manifest.v1+json".into(),
            manifest,
        ),
    );
    st.manifests.insert(
        ("busybox".into(), "1".into()),
        ("application/vnd.oci.image.index.v1+json".into(), index),
    );
}

async fn start_stub() -> (S, String) {
    let s = S {
        st: Arc::new(Mutex::new(Stub::default())),
        changed: Arc::new(tokio::sync::Notify::new()),
        reported: Arc::new(tokio::sync::Notify::new()),
    };
    publish_image(&mut s.st.lock().unwrap());
    let app = Router::new()
        .route("/v2/{*rest}", get(v2))
        .route("/_berth/agent/assignments", get(assignments))
        .route("/_berth/agent/tasks/{id}/state", post(state))
        .route("/_berth/agent/logs", post(logs))
        .with_state(s.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (s, url)
}

fn task(id: &str, containers: Vec<ContainerSpec>, memory: Option<u32>) -> TaskAssignment {
    TaskAssignment {
        spec: TaskSpec {
            task_id: id.into(),
            task_arn: format!("arn:aws:ecs:us-east-1:000000000000:task/default/{id}"),
            cluster_name: "default".into(),
            cpu: Some(256),
            memory,
            containers,
            ..Default::default()
        },
        desired_status: DesiredStatus::Running,
        ..Default::default()
    }
}

fn container(name: &str, image: &str, script: &str, task_id: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: image.into(),
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        environment: vec![("GREETING".into(), "hello".into())],
        essential: true,
        stop_timeout: 30,
        log: Some(LogDestination {
            group: "/ecs/test".into(),
            stream: format!("ecs/{name}/{task_id}"),
        }),
        ..Default::default()
    }
}

/// Nothing of the task may be left: mounts, cgroups, runtime containers, task dir.
fn assert_clean(runtime: &str, data_dir: &Path, task_id: &str) {
    // The task directory goes last, after the STOPPED report: give a loaded machine time.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while data_dir.join("tasks").join(task_id).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains(task_id), "mount left for {task_id}");
    for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let p = e.path().join("berth").join(task_id);
        assert!(!p.exists(), "cgroup left: {}", p.display());
    }
    let p = Path::new("/sys/fs/cgroup/berth").join(task_id);
    assert!(!p.exists(), "cgroup left: {}", p.display());
    let out = std::process::Command::new(runtime)
        .arg("list")
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(task_id),
        "runtime container left"
    );
    assert!(
        !data_dir.join("tasks").join(task_id).exists(),
        "task dir left"
    );
}

fn tid(prefix: &str, n: u32) -> String {
    format!("{}{n:04}", tid_base(prefix))
}

fn tid_base(prefix: &str) -> String {
    format!("{prefix}{:0>24}", std::process::id())
}

/// When a scenario panics, removes what it left: runtime containers, mounts, cgroups, files.
struct Janitor {
    runtime: String,
    data_dir: PathBuf,
    base: String,
}

impl Drop for Janitor {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // Shims of this scenario's tasks (they outlive agents by design).
        let dd = self.data_dir.to_string_lossy().to_string();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmd = String::from_utf8_lossy(
                &std::fs::read(e.path().join("cmdline")).unwrap_or_default(),
            )
            .to_string();
            let args: Vec<&str> = cmd.split('\0').collect();
            if args.get(1) == Some(&"shim") && args.get(2).is_some_and(|d| d.starts_with(&dd)) {
                for f in std::fs::read_dir(args[2]).into_iter().flatten().flatten() {
                    if let Ok(l) = std::fs::read_to_string(f.path().join("runtime.log")) {
                        eprintln!("{}: {l}", f.path().display());
                    }
                }
                eprintln!(
                    "shim log: {}",
                    std::fs::read_to_string(Path::new(args[2]).join("shim.log"))
                        .unwrap_or_default()
                );
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Ok(out) = std::process::Command::new(&self.runtime)
            .args(["list", "-q"])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                if id.starts_with(&format!("berth-{}", self.base)) {
                    let _ = std::process::Command::new(&self.runtime)
                        .args(["delete", "-f", id])
                        .status();
                }
            }
        }
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dd = self.data_dir.to_string_lossy().to_string();
        for line in mi.lines() {
            if let Some(mp) = line.split(' ').nth(4) {
                if mp.starts_with(&dd) {
                    let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
        fn rm_tree(d: &Path) {
            if let Ok(rd) = std::fs::read_dir(d) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        rm_tree(&e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(d);
        }
        for h in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            for e in std::fs::read_dir(h.path().join("berth"))
                .into_iter()
                .flatten()
                .flatten()
            {
                if e.file_name().to_string_lossy().starts_with(&self.base) {
                    rm_tree(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn start_agent(cfg: AgentConfig) -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.spawn(async move {
        if let Err(e) = run(cfg).await {
            panic!("agent: {e}");
        }
    });
    rt
}

async fn scenario(runtime: &str, prefix: &str) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: not root");
        return;
    }
    let data_dir =
        std::env::temp_dir().join(format!("berth-agent-test-{runtime}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let (s, url) = start_stub().await;
    let cfg = AgentConfig {
        server_url: url.clone(),
        data_dir: data_dir.clone(),
        runtime: runtime.into(),
        instance_id: "i-test".into(),
        network: None,
        metrics_interval: std::time::Duration::from_secs(10),
        credential: Some("stub-credential".into()),
        join_token: None,
        credentials: None,
        pull: Default::default(),
    };
    if let Err(e) = preflight(&cfg) {
        eprintln!("skipping {runtime}: {e}");
        return;
    }
    let port = url.rsplit(':').next().unwrap().to_string();
    let image = format!("localhost:{port}/busybox:1");
    let _janitor = Janitor {
        runtime: runtime.into(),
        data_dir: data_dir.clone(),
        base: tid_base(prefix),
    };
    let agent = start_agent(cfg.clone());

    // 1. echo + exit 3: exit code, log line, env, cwd, whiteout applied.
    let t1 = tid(prefix, 1);
    let c = container(
        "app",
        &image,
        "test ! -e /etc/removed || echo whiteout-missing; echo $GREETING $FROM_IMAGE $(pwd) $(cat /etc/hostname); exit 3",
        &t1,
    );
    s.set_tasks(vec![task(&t1, vec![c], Some(512))]);
    let (running, _) = s
        .wait_report(&t1, TaskStatus::Running, Duration::from_secs(60))
        .await;
    assert!(running.containers[0]
        .image_digest
        .as_deref()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(
        running.containers[0].runtime_id.as_deref(),
        Some(format!("berth-{t1}-app").as_str())
    );
    assert!(
        running.pull_started_at.is_some()
            && running.pull_stopped_at.is_some()
            && running.started_at.is_some()
    );
    let (stopped, _) = s
        .wait_report(&t1, TaskStatus::Stopped, Duration::from_secs(30))
        .await;
    assert_eq!(stopped.containers[0].exit_code, Some(3));
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(
        stopped.stopped_reason.as_deref(),
        Some("Essential container in task exited")
    );
    let lines = s.log_lines(&format!("ecs/app/{t1}"));
    assert_eq!(
        lines,
        vec![format!("hello 1 /tmp {}", &t1[..12])],
        "logs visible when STOPPED"
    );
    s.set_tasks(vec![]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_clean(runtime, &data_dir, &t1);

    // 2. Memory limit visible in the container's cgroup.
    let t2 = tid(prefix, 2);
    let mut c = container(
        "mem",
        &image,
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; id -u; cat /sys/class/net/lo/flags",
        &t2,
    );
    c.memory = Some(64);
    c.user = Some("nobody".into());
    s.set_tasks(vec![task(&t2, vec![c], Some(512))]);
    let (stopped, _) = s
        .wait_report(&t2, TaskStatus::Stopped, Duration::from_secs(30))
        .await;
    assert_eq!(stopped.containers[0].exit_code, Some(0));
    assert_eq!(
        s.log_lines(&format!("ecs/mem/{t2}")),
        vec![
            "67108864".to_string(),
            "65534".to_string(),
            "0x9".to_string()
        ],
        "memory limit, user nobody, lo up"
    );
    s.set_tasks(vec![]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_clean(runtime, &data_dir, &t2);

    // 3. Cached image: time from assignment to the RUNNING report.
    let mut times = Vec::new();
    for i in 0..5 {
        let t = tid(prefix, 10 + i);
        let before = s.st.lock().unwrap().manifest_requests;
        let v = s.set_tasks(vec![task(
            &t,
            vec![container("q", &image, "true", &t)],
            Some(512),
        )]);
        let (_, at) = s
            .wait_report(&t, TaskStatus::Running, Duration::from_secs(30))
            .await;
        let served = *s.st.lock().unwrap().served.get(&v).unwrap();
        times.push(at.duration_since(served));
        s.wait_report(&t, TaskStatus::Stopped, Duration::from_secs(30))
            .await;
        assert_eq!(
            s.st.lock().unwrap().manifest_requests - before,
            1,
            "one manifest request when cached"
        );
        s.set_tasks(vec![]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_clean(runtime, &data_dir, &t);
    }
    times.sort();
    eprintln!(
        "[{runtime}] assignment -> RUNNING report, cached image: {times:?} (median {:?})",
        times[times.len() / 2]
    );

    // 4. sleep 3600 ignores SIGTERM as pid 1: stopped by SIGKILL after stop_timeout 2.
    let t4 = tid(prefix, 4);
    let mut c = container("sleeper", &image, "exec sleep 3600", &t4);
    c.stop_timeout = 2;
    let mut side = container("side", &image, "exec sleep 3600", &t4);
    side.essential = false;
    side.stop_timeout = 1;
    let a = task(&t4, vec![c, side], Some(512));
    s.set_tasks(vec![a.clone()]);
    s.wait_report(&t4, TaskStatus::Running, Duration::from_secs(30))
        .await;
    let mut stop = a.clone();
    stop.desired_status = DesiredStatus::Stopped;
    let asked = Instant::now();
    s.set_tasks(vec![stop]);
    let (stopped, at) = s
        .wait_report(&t4, TaskStatus::Stopped, Duration::from_secs(30))
        .await;
    let took = at.duration_since(asked);
    eprintln!("[{runtime}] stop with stop_timeout 2 took {took:?}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(stopped.containers[0].exit_code, Some(137));
    assert_eq!(stopped.containers[1].exit_code, Some(137));
    s.set_tasks(vec![]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_clean(runtime, &data_dir, &t4);

    // 5. A missing image: TaskFailedToStart with CannotPullContainerError.
    let t5 = tid(prefix, 5);
    let missing = format!("localhost:{port}/nope:7");
    s.set_tasks(vec![task(
        &t5,
        vec![container("x", &missing, "true", &t5)],
        None,
    )]);
    let (stopped, _) = s
        .wait_report(&t5, TaskStatus::Stopped, Duration::from_secs(30))
        .await;
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    let reason = stopped.stopped_reason.unwrap();
    assert_eq!(
        reason,
        format!("CannotPullContainerError: pull image manifest has been retried 1 time(s): failed to resolve ref {missing}: localhost:{port}/nope:7: not found")
    );
    assert_eq!(
        stopped.containers[0].reason.as_deref(),
        Some(reason.as_str())
    );
    s.set_tasks(vec![]);
    assert_clean(runtime, &data_dir, &t5);

    // 6. The agent dies with two tasks running; they keep running under their shims. One
    //    exits while no agent runs: the next agent re-adopts the other and reports the exit
    //    code of the first, with its output shipped once.
    let t6 = tid(prefix, 6);
    let t7 = tid(prefix, 7);
    let mut long = container("long", &image, "echo before; exec sleep 3600", &t6);
    long.stop_timeout = 1;
    let brief = container("brief", &image, "sleep 1; echo bye; exit 7", &t7);
    s.set_tasks(vec![
        task(&t6, vec![long], Some(512)),
        task(&t7, vec![brief], Some(512)),
    ]);
    s.wait_report(&t6, TaskStatus::Running, Duration::from_secs(30))
        .await;
    s.wait_report(&t7, TaskStatus::Running, Duration::from_secs(30))
        .await;
    // (A kill between a log delivery and its position write would send those lines again.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.shutdown_background();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(data_dir.join("tasks").join(&t6).exists());
    let agent = start_agent(cfg.clone());
    let (stopped, _) = s
        .wait_report(&t7, TaskStatus::Stopped, Duration::from_secs(30))
        .await;
    assert_eq!(stopped.containers[0].exit_code, Some(7), "{stopped:?}");
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !s.st
            .lock()
            .unwrap()
            .reports
            .iter()
            .any(|(id, r, _)| id == &t6 && r.last_status == TaskStatus::Stopped),
        "the re-adopted task must keep running"
    );
    assert_eq!(
        s.log_lines(&format!("ecs/brief/{t7}")),
        vec!["bye".to_string()]
    );
    assert_eq!(
        s.log_lines(&format!("ecs/long/{t6}")),
        vec!["before".to_string()]
    );
    let mut stop = task(&t6, vec![], Some(512));
    stop.spec.containers = vec![container("long", &image, "", &t6)];
    stop.desired_status = DesiredStatus::Stopped;
    s.set_tasks(vec![stop]);
    let (stopped, _) = s
        .wait_report(&t6, TaskStatus::Stopped, Duration::from_secs(30))
        .await;
    assert_eq!(stopped.containers[0].exit_code, Some(137), "{stopped:?}");
    s.set_tasks(vec![]);
    assert_clean(runtime, &data_dir, &t6);
    assert_clean(runtime, &data_dir, &t7);
    agent.shutdown_background();
    remove_data_dir(&data_dir);
    assert_eq!(zombie_children(), Vec::<String>::new(), "unreaped children");
}

/// Children of this process that exited and were never reaped.
fn zombie_children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let f: Vec<&str> = rest.split(' ').collect();
        // Only runtime helpers: a container pid 1 of the agent runtime torn down in step 6 may
        // legitimately be left to the (dropped) runtime's waiter.
        let runtime_proc = stat.contains("(crun)") || stat.contains("(runc)");
        if f.len() > 1 && f[0] == "Z" && f[1] == me && runtime_proc {
            out.push(stat);
        }
    }
    out
}

fn remove_data_dir(d: &PathBuf) {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mi.contains(d.to_str().unwrap()),
        "mounts left under {}",
        d.display()
    );
    std::fs::remove_dir_all(d).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crun_end_to_end() {
    scenario("crun", "c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_end_to_end() {
    scenario("runc", "d").await;
}
