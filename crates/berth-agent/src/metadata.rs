//! The ECS task metadata endpoint, version 4, served by the agent on the task bridge's address
//! (`ECS_CONTAINER_METADATA_URI_V4=http://<gateway>:<port>/v4/<task-id>-<idx>` in every
//! container of an awsvpc task). Paths, after the container's base URI:
//! - `` (the base itself): the container document;
//! - `/task`: the task document with all its containers;
//! - `/stats`: the container's Docker-style stats; `/task/stats`: stats of every container by id.
//!
//! Who may ask: a task learns only about itself. A request is answered only when its token
//! names a task whose private IPv4 address is the connection's source address (tasks cannot
//! forge it: the bridge plugin gives each namespace its own address and the endpoint is
//! reached over the bridge); anything else gets 404 and nothing about the other task.
//!
//! Field names follow AWS's "Task metadata endpoint version 4" (Fargate) documentation:
//! `DockerId`, `Name`, `DockerName`, `Image`, `ImageID`, `Labels`, `DesiredStatus`,
//! `KnownStatus`, `Limits`, `CreatedAt`, `StartedAt`, `Type`, `ContainerARN`, `LogDriver`,
//! `LogOptions`, `Networks` (`NetworkMode`, `IPv4Addresses`, `AttachmentIndex`, `MACAddress`,
//! `IPv4SubnetCIDRBlock`, `PrivateDNSName`, `SubnetGatewayIpv4Address`); task: `Cluster`,
//! `TaskARN`, `Family`, `Revision`, `DesiredStatus`, `KnownStatus`, `Limits` (`CPU` in vCPU,
//! `Memory` in MiB), `PullStartedAt`, `PullStoppedAt`, `AvailabilityZone`, `LaunchType`,
//! `Containers`, `ClockDrift`, `EphemeralStorageMetrics`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use berth_api::agent::{TaskSpec, TaskStateReport};
use berth_core::status::{ContainerStatus, DesiredStatus, TaskStatus};
use serde_json::{json, Value};

use crate::cgroups::Layout;
use crate::network::TaskNet;

struct Entry {
    spec: TaskSpec,
    report: TaskStateReport,
    net: Option<TaskNet>,
    /// The last measured ephemeral storage use, bytes (see `crate::ephemeral`).
    ephemeral_used: u64,
}

/// What the endpoint knows about the tasks on this node.
pub struct Metadata {
    tasks: Mutex<HashMap<String, Entry>>,
    serving: AtomicBool,
    layout: Layout,
    /// `<data-dir>/tasks`: where the containers' pids are (`<task-id>/c<idx>/pid`).
    tasks_dir: std::path::PathBuf,
    /// The previous stats read per container id: (`read` time, `cpu_stats`), for Docker's
    /// `preread` / `precpu_stats`.
    prev: Mutex<HashMap<String, (Value, Value)>>,
}

/// Docker's zero time, `preread` of a first stats read.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `/proc/<pid>/net/dev` as Docker's `networks`: interface -> rx/tx bytes, packets, errors,
/// drops (`lo` left out).
pub fn networks(net_dev: &str) -> Value {
    let mut o = serde_json::Map::new();
    for l in net_dev.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if name == "lo" || v.len() < 12 {
            continue;
        }
        o.insert(
            name.to_string(),
            json!({
                "rx_bytes": v[0], "rx_packets": v[1], "rx_errors": v[2], "rx_dropped": v[3],
                "tx_bytes": v[8], "tx_packets": v[9], "tx_errors": v[10], "tx_dropped": v[11],
            }),
        );
    }
    Value::Object(o)
}

fn iso(t: Option<f64>) -> Value {
    match t {
        Some(t) => {
            let secs = t.floor() as i64;
            let nanos = ((t - t.floor()) * 1e9) as u32;
            Value::String(berth_core::time::format_rfc3339(secs, nanos))
        }
        None => Value::Null,
    }
}

impl Metadata {
    /// `tasks_dir`: the agent's `<data-dir>/tasks`.
    pub fn new(layout: Layout, tasks_dir: std::path::PathBuf) -> Metadata {
        Metadata {
            tasks: Mutex::new(HashMap::new()),
            serving: AtomicBool::new(false),
            layout,
            tasks_dir,
            prev: Mutex::new(HashMap::new()),
        }
    }

    pub fn insert(&self, spec: &TaskSpec, report: Option<&TaskStateReport>) {
        self.tasks.lock().unwrap().insert(
            spec.task_id.clone(),
            Entry {
                spec: spec.clone(),
                // Nothing reported yet: the task is PENDING on this instance.
                report: report.cloned().unwrap_or_else(|| TaskStateReport {
                    last_status: TaskStatus::Pending,
                    ..Default::default()
                }),
                net: None,
                ephemeral_used: 0,
            },
        );
    }

    pub fn update_report(&self, task_id: &str, r: &TaskStateReport) {
        if let Some(e) = self.tasks.lock().unwrap().get_mut(task_id) {
            e.report = r.clone();
        }
    }

    pub fn set_net(&self, task_id: &str, n: &TaskNet) {
        if let Some(e) = self.tasks.lock().unwrap().get_mut(task_id) {
            e.net = Some(n.clone());
        }
    }

    /// Records task `task_id`'s measured ephemeral storage use (bytes).
    pub fn set_ephemeral_usage(&self, task_id: &str, bytes: u64) {
        if let Some(e) = self.tasks.lock().unwrap().get_mut(task_id) {
            e.ephemeral_used = bytes;
        }
    }

    /// The tasks whose last reported status is RUNNING, for the metrics sampler.
    pub fn running(&self) -> Vec<crate::sampler::RunningTask> {
        let tasks = self.tasks.lock().unwrap();
        tasks
            .values()
            .filter(|e| e.report.last_status == TaskStatus::Running)
            .map(|e| {
                let c = &e.spec.containers;
                let cpu_sum: u32 = c.iter().map(|c| c.cpu).sum();
                let mem_sum: u32 = c
                    .iter()
                    .filter_map(|c| c.memory.or(c.memory_reservation))
                    .sum();
                crate::sampler::RunningTask {
                    task_id: e.spec.task_id.clone(),
                    cluster: e.spec.cluster_name.clone(),
                    cpu_units: e
                        .spec
                        .cpu
                        .unwrap_or(if cpu_sum > 0 { cpu_sum } else { 1024 }),
                    memory_mib: e.spec.memory.or((mem_sum > 0).then_some(mem_sum)),
                    ephemeral_gib: e.spec.ephemeral_storage_gib,
                }
            })
            .collect()
    }

    pub fn remove(&self, task_id: &str) {
        self.tasks.lock().unwrap().remove(task_id);
        let prefix = crate::task::container_id(task_id, "");
        self.prev
            .lock()
            .unwrap()
            .retain(|id, _| !id.starts_with(&prefix));
    }

    /// The endpoint is listening.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    pub fn set_serving(&self) {
        self.serving.store(true, Ordering::SeqCst);
    }

    fn container_doc(&self, e: &Entry, idx: usize) -> Value {
        let c = &e.spec.containers[idx];
        let r = e.report.containers.get(idx);
        let id = crate::task::container_id(&e.spec.task_id, &c.name);
        let region = e
            .spec
            .availability_zone
            .trim_end_matches(|c: char| c.is_ascii_lowercase());
        let networks = match &e.net {
            Some(n) => json!([{
                "NetworkMode": "awsvpc",
                "IPv4Addresses": [n.ip.to_string()],
                "AttachmentIndex": 0,
                "MACAddress": n.mac,
                "IPv4SubnetCIDRBlock": n.subnet_cidr(),
                "PrivateDNSName": n.dns_name(region),
                "SubnetGatewayIpv4Address": format!("{}/{}", n.gateway, n.prefix),
            }]),
            None => json!([]),
        };
        let mut doc = json!({
            "DockerId": id,
            "Name": c.name,
            "DockerName": id,
            "Image": c.image,
            "ImageID": r.and_then(|r| r.image_digest.clone()),
            "Labels": {
                "com.amazonaws.ecs.cluster": e.spec.cluster_name,
                "com.amazonaws.ecs.container-name": c.name,
                "com.amazonaws.ecs.task-arn": e.spec.task_arn,
                "com.amazonaws.ecs.task-definition-family": e.spec.family,
                "com.amazonaws.ecs.task-definition-version": e.spec.revision.to_string(),
            },
            "DesiredStatus": DesiredStatus::Running,
            "KnownStatus": r.map_or(ContainerStatus::Pending, |r| r.last_status),
            "Limits": {"CPU": c.cpu, "Memory": c.memory.or(e.spec.memory)},
            "CreatedAt": iso(e.report.pull_stopped_at),
            "StartedAt": iso(e.report.started_at),
            "Type": "NORMAL",
            "ContainerARN": format!("{}/{}", e.spec.task_arn.replace(":task/", ":container/"), c.name),
            "Networks": networks,
        });
        if let Some(code) = r.and_then(|r| r.exit_code) {
            doc["ExitCode"] = json!(code);
        }
        if let Some(h) = r.and_then(|r| r.health_status) {
            doc["Health"] = json!({"status": h});
        }
        if let Some(l) = &c.log {
            doc["LogDriver"] = json!("awslogs");
            doc["LogOptions"] = json!({
                "awslogs-group": l.group,
                "awslogs-region": region,
                "awslogs-stream": l.stream,
            });
        }
        doc
    }

    fn task_doc(&self, e: &Entry) -> Value {
        let cluster_arn = match e.spec.task_arn.split_once(":task/") {
            Some((pre, _)) => format!("{pre}:cluster/{}", e.spec.cluster_name),
            None => e.spec.cluster_name.clone(),
        };
        json!({
            "Cluster": cluster_arn,
            "TaskARN": e.spec.task_arn,
            "Family": e.spec.family,
            "Revision": e.spec.revision.to_string(),
            "DesiredStatus": DesiredStatus::Running,
            "KnownStatus": e.report.last_status,
            "Limits": {
                "CPU": e.spec.cpu.map(|c| c as f64 / 1024.0),
                "Memory": e.spec.memory,
            },
            "PullStartedAt": iso(e.report.pull_started_at),
            "PullStoppedAt": iso(e.report.pull_stopped_at),
            "AvailabilityZone": e.spec.availability_zone,
            "LaunchType": e.spec.launch_type,
            "Containers": (0..e.spec.containers.len()).map(|i| self.container_doc(e, i)).collect::<Vec<_>>(),
            "ClockDrift": {"ClockErrorBound": 0.5, "ReferenceTimestamp": iso(Some(berth_core::epoch_now())), "ClockSynchronizationStatus": "SYNCHRONIZED"},
            // MiB: the measured use and the enforced limit (crate::ephemeral).
            "EphemeralStorageMetrics": {
                "Utilized": crate::ephemeral::mib(e.ephemeral_used),
                "Reserved": crate::ephemeral::limit_bytes(e.spec.ephemeral_storage_gib) >> 20,
            },
        })
    }

    /// Docker's stats document for container `idx` (what `docker stats --no-stream` returns
    /// and the AWS metadata endpoint serves): `read`/`preread`, `cpu_stats`/`precpu_stats`
    /// (`cpu_usage` in ns, `system_cpu_usage`, `online_cpus`, `throttling_data`),
    /// `memory_stats`, `pids_stats`, `networks` (the task namespace's interfaces), and empty
    /// `blkio_stats`/`storage_stats`.
    fn stats_doc(&self, e: &Entry, idx: usize) -> Value {
        let c = &e.spec.containers[idx];
        let rel = format!(
            "{}/{}",
            crate::task::cgroup_task_rel(&e.spec.task_id),
            crate::task::safe_name(&c.name)
        );
        let st = crate::cgroups::stats(&self.layout, &rel);
        let id = crate::task::container_id(&e.spec.task_id, &c.name);
        let system = crate::cgroups::system_cpu_ns(
            &std::fs::read_to_string("/proc/stat").unwrap_or_default(),
        );
        let online = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cpu = json!({
            "cpu_usage": {
                "total_usage": st.cpu_total_ns,
                "usage_in_kernelmode": st.cpu_kernel_ns,
                "usage_in_usermode": st.cpu_user_ns,
            },
            "system_cpu_usage": system,
            "online_cpus": online,
            "throttling_data": {
                "periods": st.periods,
                "throttled_periods": st.throttled_periods,
                "throttled_time": st.throttled_ns,
            },
        });
        let read = iso(Some(berth_core::epoch_now()));
        let (preread, precpu) = self
            .prev
            .lock()
            .unwrap()
            .insert(id.clone(), (read.clone(), cpu.clone()))
            .unwrap_or_else(|| {
                (
                    Value::String(ZERO_TIME.into()),
                    json!({"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0,
                           "usage_in_usermode": 0}, "throttling_data": {"periods": 0,
                           "throttled_periods": 0, "throttled_time": 0}}),
                )
            });
        let pid = std::fs::read_to_string(
            self.tasks_dir
                .join(&e.spec.task_id)
                .join(format!("c{idx}"))
                .join("pid"),
        )
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
        let networks = pid
            .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/net/dev")).ok())
            .map(|t| networks(&t))
            .unwrap_or_else(|| json!({}));
        let mem_stat: serde_json::Map<String, Value> = st
            .memory_stat
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        json!({
            "read": read,
            "preread": preread,
            "name": c.name,
            "id": id,
            "num_procs": 0,
            "pids_stats": {"current": st.pids},
            "blkio_stats": {"io_service_bytes_recursive": [], "io_serviced_recursive": [],
                            "io_queue_recursive": [], "io_service_time_recursive": [],
                            "io_wait_time_recursive": [], "io_merged_recursive": [],
                            "io_time_recursive": [], "sectors_recursive": []},
            "storage_stats": {},
            "cpu_stats": cpu,
            "precpu_stats": precpu,
            "memory_stats": {"usage": st.memory_usage, "max_usage": st.memory_max_usage,
                             "limit": st.memory_limit, "stats": mem_stat},
            "networks": networks,
        })
    }

    /// Looks up `<task-id>-<idx>` for a request from `peer`: `None` unless the task's own
    /// address is `peer` (an IPv4-mapped IPv6 peer counts as its IPv4 address).
    fn with<T>(
        &self,
        token: &str,
        peer: std::net::IpAddr,
        f: impl FnOnce(&Self, &Entry, usize) -> T,
    ) -> Option<T> {
        let peer = match peer {
            std::net::IpAddr::V4(a) => a,
            std::net::IpAddr::V6(a) => a.to_ipv4_mapped()?,
        };
        let (task, idx) = token.rsplit_once('-')?;
        let idx: usize = idx.parse().ok()?;
        let tasks = self.tasks.lock().unwrap();
        let e = tasks.get(task)?;
        if e.net.as_ref().map(|n| n.ip) != Some(peer) {
            return None;
        }
        (idx < e.spec.containers.len()).then(|| f(self, e, idx))
    }
}

fn reply(v: Option<Value>) -> Response {
    match v {
        Some(v) => Json(v).into_response(),
        None => (StatusCode::NOT_FOUND, "unknown container").into_response(),
    }
}

/// The connection's source address.
type Peer = ConnectInfo<std::net::SocketAddr>;

async fn container(
    State(m): State<Arc<Metadata>>,
    ConnectInfo(peer): Peer,
    Path(tok): Path<String>,
) -> Response {
    reply(m.with(&tok, peer.ip(), |m, e, i| m.container_doc(e, i)))
}

async fn task(
    State(m): State<Arc<Metadata>>,
    ConnectInfo(peer): Peer,
    Path(tok): Path<String>,
) -> Response {
    reply(m.with(&tok, peer.ip(), |m, e, _| m.task_doc(e)))
}

async fn stats(
    State(m): State<Arc<Metadata>>,
    ConnectInfo(peer): Peer,
    Path(tok): Path<String>,
) -> Response {
    reply(m.with(&tok, peer.ip(), |m, e, i| m.stats_doc(e, i)))
}

async fn task_stats(
    State(m): State<Arc<Metadata>>,
    ConnectInfo(peer): Peer,
    Path(tok): Path<String>,
) -> Response {
    reply(m.with(&tok, peer.ip(), |m, e, _| {
        let mut o = serde_json::Map::new();
        for (i, c) in e.spec.containers.iter().enumerate() {
            o.insert(
                crate::task::container_id(&e.spec.task_id, &c.name),
                m.stats_doc(e, i),
            );
        }
        Value::Object(o)
    }))
}

/// The endpoint's routes.
pub fn router(m: Arc<Metadata>) -> Router {
    Router::new()
        .route("/v4/{tok}", get(container))
        .route("/v4/{tok}/task", get(task))
        .route("/v4/{tok}/stats", get(stats))
        .route("/v4/{tok}/task/stats", get(task_stats))
        .with_state(m)
}

/// Serves [`router`] on `l` (with each connection's source address, which decides what it
/// may read) until the listener fails.
pub async fn serve(l: tokio::net::TcpListener, m: Arc<Metadata>) {
    let app = router(m).into_make_service_with_connect_info::<std::net::SocketAddr>();
    if let Err(e) = axum::serve(l, app).await {
        tracing::warn!("task metadata endpoint: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::agent::ContainerSpec;

    #[test]
    fn documents() {
        let m = Metadata::new(Layout::parse(""), std::env::temp_dir());
        let spec = TaskSpec {
            task_id: "abc".into(),
            task_arn: "arn:aws:ecs:us-east-1:000000000000:task/demo/abc".into(),
            cluster_name: "demo".into(),
            family: "web".into(),
            revision: 3,
            cpu: Some(256),
            memory: Some(512),
            availability_zone: "us-east-1a".into(),
            launch_type: "FARGATE".into(),
            containers: vec![ContainerSpec {
                name: "app".into(),
                image: "busybox:1".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        m.insert(&spec, None);
        m.set_net(
            "abc",
            &TaskNet {
                netns: "/n".into(),
                ip: "10.213.0.2".parse().unwrap(),
                prefix: 16,
                gateway: "10.213.0.1".parse().unwrap(),
                mac: "02:00:00:00:00:01".into(),
            },
        );
        let own: std::net::IpAddr = "10.213.0.2".parse().unwrap();
        let other: std::net::IpAddr = "10.213.0.3".parse().unwrap();
        // Another task's address (or the host's) learns nothing about this task.
        assert!(m.with("abc-0", other, |_, _, _| ()).is_none());
        assert!(m
            .with("abc-0", "10.213.0.1".parse().unwrap(), |_, _, _| ())
            .is_none());
        assert!(m
            .with("abc-0", "::ffff:10.213.0.2".parse().unwrap(), |_, _, _| ())
            .is_some());
        let c = m
            .with("abc-0", own, |m, e, i| m.container_doc(e, i))
            .unwrap();
        assert_eq!(c["Name"], "app");
        assert_eq!(c["Networks"][0]["IPv4Addresses"][0], "10.213.0.2");
        assert_eq!(
            c["Labels"]["com.amazonaws.ecs.task-definition-family"],
            "web"
        );
        let t = m.with("abc-0", own, |m, e, _| m.task_doc(e)).unwrap();
        assert_eq!(
            t["Cluster"],
            "arn:aws:ecs:us-east-1:000000000000:cluster/demo"
        );
        assert_eq!(t["Limits"]["CPU"], 0.25);
        assert_eq!(t["Containers"][0]["DockerId"], "berth-abc-app");
        assert!(m.with("abc-1", own, |_, _, _| ()).is_none());
        assert!(m.with("zzz-0", own, |_, _, _| ()).is_none());
        // Stats: the second read's precpu_stats/preread are the first read's.
        let s1 = m.with("abc-0", own, |m, e, i| m.stats_doc(e, i)).unwrap();
        assert_eq!(s1["preread"], ZERO_TIME);
        assert_eq!(s1["precpu_stats"]["cpu_usage"]["total_usage"], 0);
        assert!(s1["cpu_stats"]["system_cpu_usage"].as_u64().unwrap() > 0);
        let s2 = m.with("abc-0", own, |m, e, i| m.stats_doc(e, i)).unwrap();
        assert_eq!(s2["preread"], s1["read"]);
        assert_eq!(s2["precpu_stats"], s1["cpu_stats"]);
        assert_eq!(s2["name"], "app");
        m.remove("abc");
        assert!(m.prev.lock().unwrap().is_empty());
    }

    #[test]
    fn network_counters() {
        let dev = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     120       2    0    0    0     0          0         0      120       2    0    0    0     0       0          0
  eth0:    5082      41    0    1    0     0          0         0     1738      19    2    0    0     0       0          0
";
        let n = networks(dev);
        assert!(n.get("lo").is_none());
        assert_eq!(n["eth0"]["rx_bytes"], 5082);
        assert_eq!(n["eth0"]["rx_dropped"], 1);
        assert_eq!(n["eth0"]["tx_packets"], 19);
        assert_eq!(n["eth0"]["tx_errors"], 2);
    }
}
