//! Prometheus metrics about berth itself, served as text format 0.0.4 on `GET /metrics`:
//!
//! - `berth_api_requests_total{service,operation,code}`: AWS API requests by outcome (`code` is
//!   the error type, `OK` on success);
//! - `berth_api_request_duration_seconds{service,operation}`: their latency (histogram);
//! - `berth_tasks{last_status}`: tasks known to the control plane by ECS `lastStatus`;
//! - `berth_registry_requests_total{method,kind}`, `berth_image_pulls_total` (manifest GETs),
//!   `berth_registry_bytes_sent_total` / `berth_registry_bytes_received_total` (by
//!   `Content-Length`), `berth_registry_blob_bytes` (bytes of stored blobs);
//! - `berth_metric_samples_total` (task utilization samples ingested),
//!   `berth_autoscaling_activities_total`.
//!
//! Counters live in process-wide statics so that every router can record without plumbing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use berth_api::proto::AwsError;

use crate::ControlPlane;

const BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Registry {
    requests: BTreeMap<(String, String, String), u64>,
    latency: BTreeMap<(String, String), Histogram>,
    registry_requests: BTreeMap<(String, &'static str), u64>,
}

static REG: Mutex<Option<Registry>> = Mutex::new(None);
static PULLS: AtomicU64 = AtomicU64::new(0);
static BYTES_SENT: AtomicU64 = AtomicU64::new(0);
static BYTES_RECEIVED: AtomicU64 = AtomicU64::new(0);
static SAMPLES: AtomicU64 = AtomicU64::new(0);
static ACTIVITIES: AtomicU64 = AtomicU64::new(0);

fn with_reg<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut g = REG.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(Registry::default))
}

/// Records one AWS API request of `service` (`ecs`, `ecr`, `logs`, `cloudwatch`,
/// `application-autoscaling`) and its outcome.
pub fn record_api(service: &str, operation: &str, error: Option<&AwsError>, took: Duration) {
    let code = error
        .map(|e| e.error_type.clone())
        .unwrap_or_else(|| "OK".into());
    let secs = took.as_secs_f64();
    with_reg(|r| {
        *r.requests
            .entry((service.to_string(), operation.to_string(), code))
            .or_default() += 1;
        let h = r
            .latency
            .entry((service.to_string(), operation.to_string()))
            .or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    });
}

/// Counts ingested utilization samples.
pub(crate) fn count_samples(n: u64) {
    SAMPLES.fetch_add(n, Ordering::Relaxed);
}

/// Counts a scaling activity.
pub(crate) fn count_activity() {
    ACTIVITIES.fetch_add(1, Ordering::Relaxed);
}

fn content_length(h: &axum::http::HeaderMap) -> u64 {
    h.get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Middleware for the registry router (`/v2/`): counts requests, manifest GETs (image pulls)
/// and bytes in and out.
pub async fn track_registry(req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path();
    let kind = if path.contains("/manifests/") {
        "manifest"
    } else if path.contains("/blobs/") {
        "blob"
    } else {
        "other"
    };
    BYTES_RECEIVED.fetch_add(content_length(req.headers()), Ordering::Relaxed);
    if kind == "manifest" && method == "GET" {
        PULLS.fetch_add(1, Ordering::Relaxed);
    }
    with_reg(|r| *r.registry_requests.entry((method, kind)).or_default() += 1);
    let resp = next.run(req).await;
    BYTES_SENT.fetch_add(content_length(resp.headers()), Ordering::Relaxed);
    resp
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text.
pub async fn render(cp: &ControlPlane, blob_dir: Option<&std::path::Path>) -> String {
    let mut o = String::new();
    with_reg(|r| {
        o.push_str("# HELP berth_api_requests_total AWS API requests by service, operation and outcome.\n# TYPE berth_api_requests_total counter\n");
        for ((s, op, code), n) in &r.requests {
            let _ = writeln!(
                o,
                "berth_api_requests_total{{service=\"{}\",operation=\"{}\",code=\"{}\"}} {n}",
                label(s),
                label(op),
                label(code)
            );
        }
        o.push_str("# HELP berth_api_request_duration_seconds AWS API request latency.\n# TYPE berth_api_request_duration_seconds histogram\n");
        for ((s, op), h) in &r.latency {
            let l = format!("service=\"{}\",operation=\"{}\"", label(s), label(op));
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "berth_api_request_duration_seconds_bucket{{{l},le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                o,
                "berth_api_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(o, "berth_api_request_duration_seconds_sum{{{l}}} {}", h.sum);
            let _ = writeln!(
                o,
                "berth_api_request_duration_seconds_count{{{l}}} {}",
                h.count
            );
        }
        o.push_str("# HELP berth_registry_requests_total OCI registry requests by method and kind.\n# TYPE berth_registry_requests_total counter\n");
        for ((m, k), n) in &r.registry_requests {
            let _ = writeln!(
                o,
                "berth_registry_requests_total{{method=\"{m}\",kind=\"{k}\"}} {n}"
            );
        }
    });
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    if let Ok(tasks) = cp.store.list(crate::ecs::TASK, "").await {
        for t in tasks {
            if let Ok(v) = t.decode::<serde_json::Value>() {
                let s = v["task"]["lastStatus"]
                    .as_str()
                    .unwrap_or("UNKNOWN")
                    .to_string();
                *by_status.entry(s).or_default() += 1;
            }
        }
    }
    o.push_str("# HELP berth_tasks Tasks by ECS lastStatus.\n# TYPE berth_tasks gauge\n");
    for (s, n) in by_status {
        let _ = writeln!(o, "berth_tasks{{last_status=\"{}\"}} {n}", label(&s));
    }
    let counters = [
        (
            "berth_image_pulls_total",
            "Image manifest GETs served by the registry.",
            &PULLS,
        ),
        (
            "berth_registry_bytes_sent_total",
            "Bytes the registry sent (Content-Length).",
            &BYTES_SENT,
        ),
        (
            "berth_registry_bytes_received_total",
            "Bytes the registry received (Content-Length).",
            &BYTES_RECEIVED,
        ),
        (
            "berth_metric_samples_total",
            "Task utilization samples ingested.",
            &SAMPLES,
        ),
        (
            "berth_autoscaling_activities_total",
            "Application Auto Scaling activities.",
            &ACTIVITIES,
        ),
    ];
    for (name, help, c) in counters {
        let _ = writeln!(
            o,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            c.load(Ordering::Relaxed)
        );
    }
    if let Some(d) = blob_dir {
        // Walking the blob directory blocks: off the runtime's workers.
        let d = d.to_path_buf();
        let bytes = tokio::task::spawn_blocking(move || dir_bytes(&d))
            .await
            .unwrap_or(0);
        let _ = writeln!(o, "# HELP berth_registry_blob_bytes Bytes of blobs stored by the registry.\n# TYPE berth_registry_blob_bytes gauge\nberth_registry_blob_bytes {bytes}");
    }
    o
}

/// `GET /metrics`; `blob_dir` is the registry's blob directory (its size is reported).
pub fn router(cp: Arc<ControlPlane>, blob_dir: Option<PathBuf>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move |State(cp): State<Arc<ControlPlane>>| async move {
                let text = render(&cp, blob_dir.as_deref()).await;
                let mut r = text.into_response();
                r.headers_mut().insert(
                    "content-type",
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }),
        )
        .with_state(cp)
}
