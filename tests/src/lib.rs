//! Harness for black-box tests: starts a real `berth server` process on a free loopback port
//! with its own data directory, and drives it with the real AWS CLI (`aws`) and `skopeo`.
//!
//! Every API call is signed (SigV4) with the access key the server creates in its data
//! directory ([`Server::access_key`]); [`Server::http`] signs raw requests and logs in to the
//! registry, the free [`http`] sends them as they are (for attacks).
//!
//! Environment: `BERTH_BIN` (default `target/debug/berth`), `BERTH_RUNTIME` (default `crun`),
//! `BERTH_TEST_IMAGE` (an OCI layout with tag `1`; built with `scripts/build-test-image.py` when
//! unset), `aws` and `skopeo` on `PATH` (the Makefile puts `.venv/bin` first).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository root (where `Cargo.toml` of the workspace is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn berth_bin() -> PathBuf {
    std::env::var_os("BERTH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/berth"))
}

/// A fresh directory under the system temp dir, removed by the caller.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "berth-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The OCI image layout of the busybox test image (tag `1`), built once per test process.
pub fn test_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("BERTH_TEST_IMAGE") {
                let p = PathBuf::from(p);
                if p.join("index.json").exists() {
                    return p;
                }
            }
            let out = temp_dir("image").join("busybox-oci");
            let st = Command::new("python3")
                .arg(repo_root().join("scripts/build-test-image.py"))
                .arg(&out)
                .status()
                .expect("python3");
            assert!(st.success(), "building the test image failed");
            out
        })
        .clone()
}

/// A containers-auth.json (`REGISTRY_AUTH_FILE` for skopeo, podman, buildah) shared by this
/// test process: every running [`Server`] has its registry login in it.
pub fn registry_authfile() -> PathBuf {
    std::env::temp_dir().join(format!("berth-registry-auth-{}.json", std::process::id()))
}

/// Sets (or with `None` removes) the login of registry `host` in [`registry_authfile`];
/// removes the file when no login is left.
fn authfile_set(host: &str, password: Option<&str>) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = registry_authfile();
    let mut v: Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({"auths": {}}));
    match password {
        Some(p) => {
            use base64::Engine as _;
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{p}"));
            v["auths"][host] = serde_json::json!({ "auth": auth });
        }
        None => {
            if let Some(m) = v["auths"].as_object_mut() {
                m.remove(host);
            }
        }
    }
    if v["auths"].as_object().is_none_or(|m| m.is_empty()) {
        let _ = std::fs::remove_file(&path);
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, v.to_string()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `berth server` with its own port and data directory. Dropping it stops the
/// tasks it runs, stops the process and removes the data directory.
pub struct Server {
    pub port: u16,
    pub data_dir: PathBuf,
    child: Option<Child>,
    keep_data: bool,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
    subnet_prefix: u8,
    /// The registry password (GetAuthorizationToken), fetched on first use.
    registry_password: std::sync::Mutex<Option<String>>,
}

impl Server {
    /// Starts a server on a free port with a new data directory.
    pub fn start() -> Server {
        Self::start_in(temp_dir("data"))
    }

    /// Starts a server on a free port with a new data directory and extra `berth server` flags.
    pub fn start_with(extra_args: &[&str]) -> Server {
        Self::start_inner(temp_dir("data"), extra_args)
    }

    /// Starts a server on a free port with a new data directory, extra `berth server` flags
    /// and extra environment variables (test knobs).
    pub fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_full(temp_dir("data"), extra_args, env, 24)
    }

    /// Starts a server on a free port over an existing data directory.
    pub fn start_in(data_dir: PathBuf) -> Server {
        Self::start_inner(data_dir, &[])
    }

    /// Starts a server whose task subnet is the first `/<prefix>` (24..=30) of its own /24
    /// (see [`Server::task_subnet`]), e.g. 29 usable task addresses with a /27.
    pub fn start_with_subnet_prefix(prefix: u8) -> Server {
        assert!((24..=30).contains(&prefix), "subnet prefix /{prefix}");
        Self::start_full(temp_dir("data"), &[], &[], prefix)
    }

    fn start_inner(data_dir: PathBuf, extra_args: &[&str]) -> Server {
        Self::start_full(data_dir, extra_args, &[], 24)
    }

    fn start_full(
        data_dir: PathBuf,
        extra_args: &[&str],
        env: &[(&str, &str)],
        subnet_prefix: u8,
    ) -> Server {
        let port = free_port();
        let mut s = Server {
            port,
            data_dir,
            child: None,
            keep_data: false,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            subnet_prefix,
            registry_password: std::sync::Mutex::new(None),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        // The free port may be taken by another test's server between probing and binding:
        // then this server exits ("binding ...") and a new port is tried.
        for _ in 0..3 {
            if self.spawn_once() {
                return;
            }
            self.port = free_port();
        }
        panic!("berth server could not bind a port:\n{}", self.log());
    }

    /// Starts the server and waits until it answers; false when it could not bind its port.
    fn spawn_once(&mut self) -> bool {
        let runtime = std::env::var("BERTH_RUNTIME").unwrap_or_else(|_| "crun".into());
        let log = std::fs::File::create(self.data_dir.join("server.log")).unwrap();
        let child = Command::new(berth_bin())
            .args(["server", "--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--runtime", &runtime])
            .args(["--task-subnet", &self.task_subnet()])
            .args(["--task-bridge", &self.bridge()])
            .args(&self.extra_args)
            .env("BERTH_LOG", "info,berth=debug")
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting berth server (build it first: cargo build)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                if self.log().contains("binding 127.0.0.1:") {
                    return false;
                }
                panic!("berth server exited with {st}:\n{}", self.log());
            }
            // Only this server's own answer counts: it logs that it is ready once it holds
            // the port (another test's server may answer on a port both were given).
            if self.log().contains("berth server ready")
                && http(self.port, "GET", "/v2/", &[], b"")
                    .is_ok_and(|(s, _, _)| s == 200 || s == 401)
            {
                authfile_set(&self.host(), Some(&self.registry_password()));
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("berth server did not answer:\n{}", self.log());
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default()
    }

    /// The messages of a CloudWatch Logs stream (`aws logs get-log-events --start-from-head`),
    /// empty when the group or stream does not exist (yet).
    pub fn log_events(&self, group: &str, stream: &str) -> Vec<String> {
        let Ok(v) = self.aws(&[
            "logs",
            "get-log-events",
            "--log-group-name",
            group,
            "--log-stream-name",
            stream,
            "--start-from-head",
        ]) else {
            return Vec::new();
        };
        v["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>` (the registry host).
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// This server's task subnet: a /24 of 10.200.0.0/12 derived from its port, so servers of
    /// tests running at the same time do not share one (or the first smaller range of that /24
    /// when started with [`Server::start_with_subnet_prefix`]).
    pub fn task_subnet(&self) -> String {
        let p = self.port % 4096;
        format!("10.{}.{}.0/{}", 200 + p / 256, p % 256, self.subnet_prefix)
    }

    /// This server's task bridge name.
    pub fn bridge(&self) -> String {
        format!("bt{}", self.port)
    }

    /// Removes what tasks of this server may have left on the host: shims, containers, the
    /// bridge and its iptables rules (namespace mounts go with the data directory).
    fn clean_host(&self) {
        let dir = self.data_dir.to_string_lossy().to_string();
        let mut cgroup_dirs: Vec<String> = Vec::new();
        let tasks = self.data_dir.join("agent").join("tasks");
        for e in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().to_string();
            // Containers first (below), then their cgroups (after the shims are gone).
            cgroup_dirs.push(id.clone());
            if let Ok(b) = std::fs::read(e.path().join("task.json")) {
                let spec: Value = serde_json::from_slice(&b).unwrap_or_default();
                for c in spec["containers"].as_array().into_iter().flatten() {
                    let name: String = c["name"]
                        .as_str()
                        .unwrap_or("")
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                                c
                            } else {
                                '-'
                            }
                        })
                        .collect();
                    for rt in ["crun", "runc"] {
                        let _ = Command::new(rt)
                            .args(["delete", "-f", &format!("berth-{id}-{name}")])
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status();
                    }
                }
            }
        }
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.get(1).map(String::as_str) == Some("shim")
                && args.get(2).is_some_and(|d| d.starts_with(&dir))
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        fn rm_tree(d: &std::path::Path) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rm_tree(&e.path());
                }
            }
            let _ = std::fs::remove_dir(d);
        }
        for id in &cgroup_dirs {
            for h in std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                rm_tree(&h.path().join("berth").join(id));
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let tag = format!("berth:{}", self.bridge());
        for tables in ["iptables", "ip6tables"] {
            remove_tagged_rules(tables, &tag);
        }
    }

    /// Kills the process with SIGKILL (no cleanup), keeping the data directory.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the process with SIGKILL and starts a new one over the same data directory and port.
    pub fn restart_after_kill9(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Runs `aws --endpoint-url <server> <args...> --output json`; Ok(parsed stdout) on exit 0,
    /// Err(stderr) otherwise.
    pub fn aws(&self, args: &[&str]) -> Result<Value, String> {
        let out = Command::new("aws")
            .arg("--endpoint-url")
            .arg(self.endpoint())
            .args(["--region", "us-east-1", "--output", "json"])
            .args(args)
            .envs(self.aws_env())
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_MAX_ATTEMPTS", "1")
            .env("AWS_RETRY_MODE", "standard")
            .env("AWS_PAGER", "")
            .output()
            .expect("running aws (is the AWS CLI on PATH? make deps installs it in .venv)");
        if out.status.success() {
            let s = String::from_utf8_lossy(&out.stdout);
            if s.trim().is_empty() {
                Ok(Value::Null)
            } else {
                serde_json::from_str(&s).map_err(|e| format!("bad JSON from aws: {e}: {s}"))
            }
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Like [`Server::aws`] but panics with the server log on failure.
    pub fn aws_ok(&self, args: &[&str]) -> Value {
        self.aws(args)
            .unwrap_or_else(|e| panic!("aws {args:?} failed: {e}\nserver log:\n{}", self.log()))
    }

    /// The account's access key, as the server created it in `<data-dir>/credentials.json`.
    pub fn access_key(&self) -> berth_iam::AccessKey {
        berth_iam::Credentials::read_primary(&self.data_dir)
            .expect("reading credentials.json")
            .expect("the server created no credentials.json")
    }

    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` of the account's key, for the AWS CLI,
    /// botocore scripts and skopeo wrappers.
    pub fn aws_env(&self) -> [(&'static str, String); 2] {
        let k = self.access_key();
        [
            ("AWS_ACCESS_KEY_ID", k.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", k.secret_access_key),
        ]
    }

    /// SigV4 headers (`authorization`, `x-amz-date`, `x-amz-content-sha256`) for a request to
    /// this server signed with the account's key; `headers` are signed too.
    pub fn sign(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Vec<(String, String)> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let host = self.host();
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        all.push(("host".into(), host));
        let refs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        berth_iam::sign(
            &self.access_key(),
            "us-east-1",
            signing_service(path, headers),
            method,
            path,
            query,
            &refs,
            body,
            std::time::SystemTime::now(),
        )
    }

    /// The password of `aws ecr get-login-password` (user `AWS`), from a signed
    /// GetAuthorizationToken; kept for the server's life.
    pub fn registry_password(&self) -> String {
        let mut cached = self.registry_password.lock().unwrap();
        if let Some(p) = cached.as_ref() {
            return p.clone();
        }
        use base64::Engine as _;
        let v = self
            .json_api(
                "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
                &serde_json::json!({}),
            )
            .expect("GetAuthorizationToken");
        let token = v["authorizationData"][0]["authorizationToken"]
            .as_str()
            .expect("authorizationToken");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(token)
            .expect("base64 token");
        let password = String::from_utf8(raw)
            .unwrap()
            .strip_prefix("AWS:")
            .expect("AWS: user")
            .to_string();
        *cached = Some(password.clone());
        password
    }

    /// `AWS:<password>`, for skopeo's `--creds` / `--dest-creds` / `--src-creds`.
    pub fn skopeo_creds(&self) -> String {
        format!("AWS:{}", self.registry_password())
    }

    /// Like the free [`http`], as an authenticated client: `/v2/` requests carry the registry
    /// password (`Authorization: Basic`), other requests are SigV4-signed, unless `headers`
    /// already has an `Authorization`.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<HttpReply> {
        let has_auth = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        let mut extra: Vec<(String, String)> = Vec::new();
        if !has_auth {
            if path.starts_with("/v2/") {
                use base64::Engine as _;
                let b = base64::engine::general_purpose::STANDARD
                    .encode(format!("AWS:{}", self.registry_password()));
                extra.push(("Authorization".into(), format!("Basic {b}")));
            } else {
                extra = self.sign(method, path, headers, body);
            }
        }
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        all.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        http(self.port, method, path, &all, body)
    }

    /// Creates ECR repository `repo` and pushes the test image to it as `repo:tag` with skopeo.
    pub fn push_test_image(&self, repo: &str, tag: &str) {
        self.push_image(&test_image(), "1", repo, tag);
    }

    /// Creates ECR repository `repo` and pushes tag `layout_tag` of the OCI image layout
    /// `layout` to it as `repo:tag` with skopeo.
    pub fn push_image(&self, layout: &Path, layout_tag: &str, repo: &str, tag: &str) {
        let _ = self.aws(&["ecr", "create-repository", "--repository-name", repo]);
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(["--dest-creds", &self.skopeo_creds()])
            .arg(format!("oci:{}:{layout_tag}", layout.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.host()))
            .output()
            .expect("running skopeo");
        assert!(
            out.status.success(),
            "skopeo push failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Registers a task definition given as JSON; returns `family:revision`.
    pub fn register(&self, td: &Value) -> String {
        let v = self.aws_ok(&[
            "ecs",
            "register-task-definition",
            "--cli-input-json",
            &td.to_string(),
        ]);
        format!(
            "{}:{}",
            v["taskDefinition"]["family"].as_str().unwrap(),
            v["taskDefinition"]["revision"]
        )
    }

    /// Runs one FARGATE task of `taskdef` in `cluster` with optional overrides JSON; returns
    /// the task ARN.
    pub fn run_task(&self, cluster: &str, taskdef: &str, overrides: Option<&Value>) -> String {
        let mut args = vec![
            "ecs",
            "run-task",
            "--cluster",
            cluster,
            "--task-definition",
            taskdef,
            "--launch-type",
            "FARGATE",
            "--network-configuration",
            "awsvpcConfiguration={subnets=[subnet-12345678]}",
        ];
        let ov = overrides.map(|o| o.to_string());
        if let Some(o) = &ov {
            args.push("--overrides");
            args.push(o);
        }
        let v = self.aws_ok(&args);
        assert_eq!(v["failures"], serde_json::json!([]), "{v}");
        v["tasks"][0]["taskArn"].as_str().unwrap().to_string()
    }

    /// Runs the real waiter `aws ecs wait tasks-stopped` for one task (polls every 6 s).
    pub fn wait_tasks_stopped(&self, cluster: &str, task: &str) {
        self.aws_ok(&[
            "ecs",
            "wait",
            "tasks-stopped",
            "--cluster",
            cluster,
            "--tasks",
            task,
        ]);
    }

    /// DescribeTasks for one task.
    pub fn describe_task(&self, cluster: &str, task: &str) -> Value {
        let v = self.aws_ok(&[
            "ecs",
            "describe-tasks",
            "--cluster",
            cluster,
            "--tasks",
            task,
        ]);
        v["tasks"][0].clone()
    }

    /// Polls DescribeTasks until `lastStatus` is `status` (or STOPPED), at most `timeout`.
    pub fn wait_status(&self, cluster: &str, task: &str, status: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.describe_task(cluster, task);
            let s = t["lastStatus"].as_str().unwrap_or("");
            if s == status || s == "STOPPED" {
                return t;
            }
            if Instant::now() > deadline {
                panic!(
                    "task never reached {status}: {t}\nserver log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop_everything(&self) {
        let Ok(clusters) = self.aws(&["ecs", "list-clusters"]) else {
            return;
        };
        let mut pending = Vec::new();
        for c in clusters["clusterArns"].as_array().into_iter().flatten() {
            let c = c.as_str().unwrap();
            if let Ok(tasks) = self.aws(&["ecs", "list-tasks", "--cluster", c]) {
                for t in tasks["taskArns"].as_array().into_iter().flatten() {
                    let t = t.as_str().unwrap();
                    let _ = self.aws(&["ecs", "stop-task", "--cluster", c, "--task", t]);
                    pending.push((c.to_string(), t.to_string()));
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(40);
        for (c, t) in pending {
            while Instant::now() < deadline {
                let v = self.describe_task(&c, &t);
                if v["lastStatus"] == "STOPPED" {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Calls an API operation directly (awsJson1.1, e.g. target
    /// `AmazonEC2ContainerServiceV20141113.RunTask`), without the AWS CLI's start-up cost:
    /// Ok(reply) on HTTP 200, Err(status and body) otherwise.
    pub fn json_api(&self, target: &str, body: &Value) -> Result<Value, String> {
        let (status, _, reply) = self
            .http(
                "POST",
                "/",
                &[
                    ("X-Amz-Target", target),
                    ("Content-Type", "application/x-amz-json-1.1"),
                ],
                body.to_string().as_bytes(),
            )
            .map_err(|e| format!("{target}: {e}"))?;
        let text = String::from_utf8_lossy(&reply);
        if status != 200 {
            return Err(format!("{target}: HTTP {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{target}: bad JSON {e}: {text}"))
    }

    /// Keeps the data directory after drop (for a restart test that moves it to a new server).
    pub fn keep_data(&mut self) {
        self.keep_data = true;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop_everything();
        }
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && c.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        authfile_set(&self.host(), None);
        if self.keep_data {
            return;
        }
        self.clean_host();
        // Anything still mounted under the data dir (a failed test) goes first.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let dir = self.data_dir.to_string_lossy().to_string();
            let mut targets: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|m| m.starts_with(&dir))
                .collect();
            targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
            for t in targets {
                let _ = nix::mount::umount2(t, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Deletes every rule of `tables` (`iptables` or `ip6tables`) whose comment is `tag`.
pub fn remove_tagged_rules(tables: &str, tag: &str) {
    if let Ok(out) = Command::new(tables).args(["-w", "5", "-S"]).output() {
        for rule in String::from_utf8_lossy(&out.stdout).lines() {
            // A whole word: `berth:bt1234` must not match `berth:bt12345`.
            if !rule.split_whitespace().any(|w| w.trim_matches('"') == tag) {
                continue;
            }
            let Some(rest) = rule.strip_prefix("-A ") else {
                continue;
            };
            let args: Vec<String> = shell_words(rest);
            let _ = Command::new(tables)
                .args(["-w", "5", "-D"])
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Splits an `iptables -S` rule into arguments (double quotes group words).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// An HTTP reply: status, headers (names lowercased), body.
pub type HttpReply = (u16, Vec<(String, String)>, Vec<u8>);

/// A minimal HTTP/1.1 request on loopback (for raw-protocol tests): returns
/// (status, headers lowercased, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpReply> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let hdrs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, hdrs, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

/// A FARGATE task definition for the test image in `server`'s registry (ECR hostname form),
/// logging to `/ecs/<family>` with stream prefix `ecs`.
pub fn fargate_taskdef(family: &str, repo: &str, container: Value) -> Value {
    let mut c = serde_json::json!({
        "name": "app",
        "image": format!("000000000000.dkr.ecr.us-east-1.amazonaws.com/{repo}:1"),
        "essential": true,
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": format!("/ecs/{family}"),
                "awslogs-region": "us-east-1",
                "awslogs-stream-prefix": "ecs"
            }
        }
    });
    if let (Some(dst), Some(src)) = (c.as_object_mut(), container.as_object()) {
        for (k, v) in src {
            dst.insert(k.clone(), v.clone());
        }
    }
    serde_json::json!({
        "family": family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [c]
    })
}

/// The SigV4 signing name a real client uses for a request to berth: `monitoring` for CloudWatch
/// (query-protocol form bodies, rpcv2Cbor paths, its awsJson target), `ecr`, `logs`,
/// `application-autoscaling` by `X-Amz-Target` prefix, else `ecs`.
pub fn signing_service(path: &str, headers: &[(&str, &str)]) -> &'static str {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .unwrap_or("")
    };
    let target = get("x-amz-target");
    if path.starts_with("/service/GraniteServiceVersion20100801/")
        || get("content-type").starts_with("application/x-www-form-urlencoded")
        || target.starts_with("GraniteServiceVersion20100801.")
    {
        "monitoring"
    } else if target.starts_with("AmazonEC2ContainerRegistry_") {
        "ecr"
    } else if target.starts_with("Logs_") {
        "logs"
    } else if target.starts_with("AnyScaleFrontendService.") {
        "application-autoscaling"
    } else {
        "ecs"
    }
}

/// The task id (last ARN part).
pub fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap()
}
