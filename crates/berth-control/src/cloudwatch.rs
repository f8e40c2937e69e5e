//! CloudWatch metrics for namespace `AWS/ECS` (API version 2010-08-01, target prefix
//! `GraniteServiceVersion20100801`): GetMetricStatistics, GetMetricData and ListMetrics over the
//! per-task utilization samples node agents post (`POST /_berth/agent/metrics`).
//!
//! Metrics, as ECS publishes them: `CPUUtilization` and `MemoryUtilization` (unit `Percent`) with
//! dimensions `{ClusterName}` (every task of the cluster) and `{ClusterName, ServiceName}`.
//! Statistics over a period are taken over the task samples that fall in it (`Average`, `Minimum`,
//! `Maximum`, `Sum`, `SampleCount`, and percentiles `pNN` / `pNN.N`).
//!
//! Alarms: PutMetricAlarm, DescribeAlarms, DeleteAlarms and TagResource / UntagResource /
//! ListTagsForResource on alarm ARNs (see [`crate::alarms`]).
//!
//! Three wire protocols reach the same handler ([`ControlPlane::handle_cloudwatch`], which works on
//! JSON values with timestamps as epoch seconds): awsJson1.0 (`X-Amz-Target`, what aws-cli 1.x
//! sends), smithy-rpc-v2-cbor (`POST /service/GraniteServiceVersion20100801/operation/<Op>`) and
//! the query protocol (form-encoded `Action=<Op>`, XML replies). Errors carry the model's names
//! (`InvalidParameterValueException`, ...) and, for query-compatible clients, the
//! `x-amzn-query-error: <Code>;Sender` header; the query protocol answers `<ErrorResponse>`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use berth_api::agent::MetricsBatch;
use berth_api::proto::AwsError;
use berth_store::metrics::{MetricKind, MetricSample};
use serde_json::{json, Map, Value};

use crate::{store_err, ControlPlane};

/// The awsJson1.0 `X-Amz-Target` prefix (and smithy service name) of CloudWatch.
pub const TARGET_PREFIX: &str = "GraniteServiceVersion20100801";
/// The only namespace berth publishes.
pub const NAMESPACE: &str = "AWS/ECS";
const METRICS: [&str; 2] = ["CPUUtilization", "MemoryUtilization"];
const MAX_DATAPOINTS: i64 = 1440;
const XMLNS: &str = "http://monitoring.amazonaws.com/doc/2010-08-01/";

pub(crate) fn invalid(m: impl Into<String>) -> AwsError {
    AwsError::client("InvalidParameterValueException", m)
}

pub(crate) fn missing(name: &str) -> AwsError {
    AwsError::client(
        "MissingRequiredParameterException",
        format!("The parameter {name} is required."),
    )
}

/// The query-protocol error code and fault type of an error (`awsQueryError` in the model).
pub fn query_code(e: &AwsError) -> (String, &'static str) {
    let code = match e.error_type.as_str() {
        "InvalidParameterValueException" => "InvalidParameterValue",
        "MissingRequiredParameterException" => "MissingParameter",
        "InvalidParameterCombinationException" => "InvalidParameterCombination",
        "InternalServiceFault" | "ServerException" => "InternalServiceError",
        // The query protocol's name for an operation the service does not have.
        "UnknownOperationException" => "InvalidAction",
        other => other,
    };
    let fault = if e.status >= 500 {
        "Receiver"
    } else {
        "Sender"
    };
    (code.to_string(), fault)
}

/// A number member; the query protocol sends numbers as text.
pub(crate) fn num(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub(crate) fn text<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

pub(crate) fn list<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub use berth_core::time::{format_iso8601, parse_iso8601};

/// A timestamp member: epoch seconds (JSON, CBOR) or ISO 8601 text (query).
fn time(v: &Value, k: &str) -> Result<f64, AwsError> {
    match v.get(k) {
        None | Some(Value::Null) => Err(missing(k)),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| invalid(format!("bad {k}"))),
        Some(Value::String(s)) => s
            .parse::<f64>()
            .ok()
            .or_else(|| parse_iso8601(s))
            .ok_or_else(|| invalid(format!("The parameter {k} must be a timestamp."))),
        _ => Err(invalid(format!("The parameter {k} must be a timestamp."))),
    }
}

/// Which samples a metric identity selects: `(kind, cluster, service)`; `None` when berth has no
/// such metric (other namespaces, names or dimension sets), which reads as no data.
fn selector(
    namespace: &str,
    name: &str,
    dims: &[Value],
) -> Option<(MetricKind, String, Option<String>)> {
    if namespace != NAMESPACE {
        return None;
    }
    let kind = match name {
        "CPUUtilization" => MetricKind::Cpu,
        "MemoryUtilization" => MetricKind::Memory,
        _ => return None,
    };
    let mut cluster = None;
    let mut service = None;
    for d in dims {
        match (text(d, "Name"), text(d, "Value")) {
            (Some("ClusterName"), Some(v)) => cluster = Some(v.to_string()),
            (Some("ServiceName"), Some(v)) => service = Some(v.to_string()),
            _ => return None,
        }
    }
    Some((kind, cluster?, service))
}

/// One statistic of a set of values (`Average`, `Minimum`, `Maximum`, `Sum`, `SampleCount`,
/// `pNN`); `None` for an unknown statistic or no values.
pub fn statistic(stat: &str, values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    match stat {
        "Average" => Some(values.iter().sum::<f64>() / n),
        "Minimum" => values.iter().copied().reduce(f64::min),
        "Maximum" => values.iter().copied().reduce(f64::max),
        "Sum" => Some(values.iter().sum()),
        "SampleCount" => Some(n),
        p if p.starts_with('p') => {
            let q: f64 = p[1..].parse().ok().filter(|q| (0.0..=100.0).contains(q))?;
            let mut v = values.to_vec();
            v.sort_by(f64::total_cmp);
            let idx = ((q / 100.0) * n).ceil().max(1.0) as usize - 1;
            Some(v[idx.min(v.len() - 1)])
        }
        _ => None,
    }
}

/// Groups samples into periods starting at `start` (ms): period start (epoch seconds) -> values.
fn buckets(samples: &[(i64, f64)], start_ms: i64, period_ms: i64) -> BTreeMap<i64, Vec<f64>> {
    let mut b: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for &(ts, v) in samples {
        let k = start_ms + (ts - start_ms).div_euclid(period_ms) * period_ms;
        b.entry(k / 1000).or_default().push(v);
    }
    b
}

fn period_of(v: Option<&Value>) -> Result<i64, AwsError> {
    let p = num(v).ok_or_else(|| missing("Period"))?;
    if p < 1.0 || p.fract() != 0.0 {
        return Err(invalid("The parameter Period must be a positive integer."));
    }
    Ok(p as i64)
}

impl ControlPlane {
    /// Stores an agent's utilization samples, tagged with each task's service (from its
    /// `group`, `service:<name>`); samples of unknown tasks are dropped.
    pub fn ingest_metrics(&self, batch: &MetricsBatch) -> Result<(), AwsError> {
        let mut rows = Vec::with_capacity(batch.samples.len());
        for s in &batch.samples {
            let Some(rec) = self.load_task(&s.cluster_name, &s.task_id)? else {
                continue;
            };
            let service = rec
                .task
                .group
                .as_deref()
                .and_then(|g| g.strip_prefix("service:"))
                .unwrap_or("")
                .to_string();
            rows.push(MetricSample {
                timestamp: s.timestamp,
                cluster: s.cluster_name.clone(),
                service,
                task: s.task_id.clone(),
                cpu: s.cpu_utilization,
                memory: s.memory_utilization,
            });
        }
        crate::prom::count_samples(rows.len() as u64);
        self.store.append_metric_samples(&rows).map_err(store_err)
    }

    /// Average utilization (percent) of service `service` of `cluster` over the samples taken in
    /// the last `window_ms`; `None` without samples.
    pub fn service_utilization(
        &self,
        kind: MetricKind,
        cluster: &str,
        service: &str,
        window_ms: i64,
    ) -> Result<Option<f64>, AwsError> {
        let now = (berth_core::epoch_now() * 1000.0) as i64;
        let s = self
            .store
            .metric_samples(kind, cluster, Some(service), now - window_ms, now + 1)
            .map_err(store_err)?;
        let v: Vec<f64> = s.into_iter().map(|(_, v)| v).collect();
        Ok(statistic("Average", &v))
    }

    /// Runs one CloudWatch operation on a request decoded to JSON (timestamps as epoch seconds
    /// or ISO 8601 text); the reply carries timestamps as epoch seconds.
    pub fn handle_cloudwatch(&self, operation: &str, req: &Value) -> Result<Value, AwsError> {
        match operation {
            "GetMetricStatistics" => self.get_metric_statistics(req),
            "GetMetricData" => self.get_metric_data(req),
            "ListMetrics" => self.list_metrics(req),
            "PutMetricAlarm" => self.put_metric_alarm(req),
            "DescribeAlarms" => self.describe_alarms(req),
            "DeleteAlarms" => self.delete_alarms(req),
            "TagResource" => self.tag_alarm(req),
            "UntagResource" => self.untag_alarm(req),
            "ListTagsForResource" => self.list_alarm_tags(req),
            _ => Err(AwsError::client(
                "UnknownOperationException",
                format!("berth's CloudWatch does not implement {operation}"),
            )),
        }
    }

    pub(crate) fn samples_for(
        &self,
        metric: &Value,
        start: f64,
        end: f64,
    ) -> Result<Vec<(i64, f64)>, AwsError> {
        let sel = selector(
            text(metric, "Namespace").unwrap_or(""),
            text(metric, "MetricName").unwrap_or(""),
            list(metric, "Dimensions"),
        );
        match sel {
            Some((kind, cluster, service)) => self
                .store
                .metric_samples(
                    kind,
                    &cluster,
                    service.as_deref(),
                    (start * 1000.0) as i64,
                    (end * 1000.0) as i64,
                )
                .map_err(store_err),
            None => Ok(Vec::new()),
        }
    }

    fn get_metric_statistics(&self, req: &Value) -> Result<Value, AwsError> {
        for k in ["Namespace", "MetricName"] {
            if text(req, k).is_none() {
                return Err(missing(k));
            }
        }
        let (start, end) = (time(req, "StartTime")?, time(req, "EndTime")?);
        let period = period_of(req.get("Period"))?;
        if end <= start {
            return Err(invalid(
                "The parameter StartTime must be less than the parameter EndTime.",
            ));
        }
        let stats: Vec<&str> = list(req, "Statistics")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let ext: Vec<&str> = list(req, "ExtendedStatistics")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if stats.is_empty() && ext.is_empty() {
            return Err(AwsError::client(
                "InvalidParameterCombinationException",
                "Must specify either Statistics or ExtendedStatistics, but not both.",
            ));
        }
        for s in &stats {
            if !["Average", "Minimum", "Maximum", "Sum", "SampleCount"].contains(s) {
                return Err(invalid(format!(
                    "The parameter Statistics contains an invalid value: {s}"
                )));
            }
        }
        if ((end - start) / period as f64).ceil() as i64 > MAX_DATAPOINTS {
            return Err(AwsError::client(
                "InvalidParameterCombinationException",
                format!("You have requested up to {} datapoints, which exceeds the limit of {MAX_DATAPOINTS}. You may reduce the datapoints requested by increasing Period, or decreasing the time range.", ((end - start) / period as f64).ceil() as i64),
            ));
        }
        let samples = self.samples_for(req, start, end)?;
        let mut points = Vec::new();
        for (ts, values) in buckets(&samples, (start * 1000.0) as i64, period * 1000) {
            let mut p = Map::new();
            p.insert("Timestamp".into(), json!(ts));
            for s in &stats {
                p.insert((*s).into(), json!(statistic(s, &values)));
            }
            if !ext.is_empty() {
                let m: Map<String, Value> = ext
                    .iter()
                    .filter_map(|s| Some(((*s).to_string(), json!(statistic(s, &values)?))))
                    .collect();
                p.insert("ExtendedStatistics".into(), Value::Object(m));
            }
            p.insert("Unit".into(), json!("Percent"));
            points.push(Value::Object(p));
        }
        Ok(json!({"Label": text(req, "MetricName"), "Datapoints": points}))
    }

    fn get_metric_data(&self, req: &Value) -> Result<Value, AwsError> {
        let (start, end) = (time(req, "StartTime")?, time(req, "EndTime")?);
        let queries = list(req, "MetricDataQueries");
        if queries.is_empty() {
            return Err(missing("MetricDataQueries"));
        }
        let ascending = text(req, "ScanBy") == Some("TimestampAscending");
        let mut results = Vec::new();
        for q in queries {
            let id = text(q, "Id").ok_or_else(|| missing("MetricDataQueries.member.Id"))?;
            let ret = match q.get("ReturnData") {
                Some(Value::Bool(b)) => *b,
                Some(Value::String(s)) => s != "false",
                _ => true,
            };
            let Some(ms) = q.get("MetricStat") else {
                if q.get("Expression").is_some() {
                    results.push(json!({"Id": id, "Label": text(q, "Label").unwrap_or(id),
                        "Timestamps": [], "Values": [], "StatusCode": "InternalError",
                        "Messages": [{"Code": "Unsupported", "Value": "berth does not evaluate metric math expressions"}]}));
                    continue;
                }
                return Err(invalid(format!(
                    "Query {id} needs a MetricStat or an Expression."
                )));
            };
            if !ret {
                continue;
            }
            let metric = ms
                .get("Metric")
                .ok_or_else(|| missing("MetricStat.Metric"))?;
            let period = period_of(ms.get("Period"))?;
            let stat = text(ms, "Stat").ok_or_else(|| missing("MetricStat.Stat"))?;
            if statistic(stat, &[0.0]).is_none() {
                return Err(invalid(format!(
                    "The value {stat} for parameter MetricDataQueries.member.Stat is not valid."
                )));
            }
            let samples = self.samples_for(metric, start, end)?;
            let mut points: Vec<(i64, f64)> =
                buckets(&samples, (start * 1000.0) as i64, period * 1000)
                    .into_iter()
                    .filter_map(|(t, v)| Some((t, statistic(stat, &v)?)))
                    .collect();
            if !ascending {
                points.reverse();
            }
            let label = text(q, "Label")
                .or_else(|| text(metric, "MetricName"))
                .unwrap_or(id);
            results.push(json!({
                "Id": id,
                "Label": label,
                "Timestamps": points.iter().map(|p| p.0).collect::<Vec<_>>(),
                "Values": points.iter().map(|p| p.1).collect::<Vec<_>>(),
                "StatusCode": "Complete",
            }));
        }
        Ok(json!({"MetricDataResults": results, "Messages": []}))
    }

    fn list_metrics(&self, req: &Value) -> Result<Value, AwsError> {
        if let Some(ns) = text(req, "Namespace") {
            if ns != NAMESPACE {
                return Ok(json!({"Metrics": []}));
            }
        }
        let now = (berth_core::epoch_now() * 1000.0) as i64;
        let since = match text(req, "RecentlyActive") {
            Some("PT3H") => now - 3 * 3600 * 1000,
            Some(other) => {
                return Err(invalid(format!(
                    "The parameter RecentlyActive must be PT3H, not {other}."
                )))
            }
            None => now - berth_store::metrics::RETENTION_MS,
        };
        let mut sets: Vec<Vec<(&str, String)>> = Vec::new();
        let sources = self.store.metric_sources(since).map_err(store_err)?;
        let mut last_cluster = None;
        for (cluster, service) in &sources {
            if last_cluster != Some(cluster) {
                sets.push(vec![("ClusterName", cluster.clone())]);
                last_cluster = Some(cluster);
            }
            if !service.is_empty() {
                sets.push(vec![
                    ("ClusterName", cluster.clone()),
                    ("ServiceName", service.clone()),
                ]);
            }
        }
        let filters = list(req, "Dimensions");
        let mut out = Vec::new();
        for name in METRICS {
            if text(req, "MetricName").is_some_and(|n| n != name) {
                continue;
            }
            for dims in &sets {
                let matches = filters.iter().all(|f| {
                    dims.iter().any(|(n, v)| {
                        Some(*n) == text(f, "Name") && text(f, "Value").is_none_or(|fv| fv == v)
                    })
                });
                if !matches {
                    continue;
                }
                let d: Vec<Value> = dims
                    .iter()
                    .map(|(n, v)| json!({"Name": n, "Value": v}))
                    .collect();
                out.push(json!({"Namespace": NAMESPACE, "MetricName": name, "Dimensions": d}));
            }
        }
        Ok(json!({"Metrics": out}))
    }
}

// ---- wire protocols ------------------------------------------------------------------------

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn finish(
    status: StatusCode,
    ctype: &'static str,
    body: Vec<u8>,
    e: Option<&AwsError>,
) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static(ctype));
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        h.insert("x-amzn-requestid", v);
    }
    if let Some(e) = e {
        let (code, fault) = query_code(e);
        if let Ok(v) = HeaderValue::from_str(&format!("{code};{fault}")) {
            h.insert("x-amzn-query-error", v);
        }
    }
    resp
}

fn status_of(e: &AwsError) -> StatusCode {
    StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST)
}

/// awsJson1.0 (`X-Amz-Target: GraniteServiceVersion20100801.<op>`): JSON in, JSON out.
pub fn json_response(cp: &ControlPlane, op: &str, body: &[u8]) -> Response {
    const CT: &str = "application/x-amz-json-1.0";
    let started = std::time::Instant::now();
    let req: Result<Value, AwsError> = berth_api::proto::parse_body(body);
    let result = req.and_then(|r| cp.handle_cloudwatch(op, &r));
    crate::prom::record_api("cloudwatch", op, result.as_ref().err(), started.elapsed());
    match result {
        Ok(v) => finish(
            StatusCode::OK,
            CT,
            serde_json::to_vec(&v).unwrap_or_default(),
            None,
        ),
        Err(e) => finish(status_of(&e), CT, e.body(), Some(&e)),
    }
}

const TIMESTAMP_KEYS: [&str; 5] = [
    "Timestamp",
    "Timestamps",
    "AlarmConfigurationUpdatedTimestamp",
    "StateUpdatedTimestamp",
    "StateTransitionedTimestamp",
];

/// smithy-rpc-v2-cbor: `POST /service/GraniteServiceVersion20100801/operation/<op>`.
async fn cbor_op(
    State(cp): State<Arc<ControlPlane>>,
    Path(op): Path<String>,
    body: Bytes,
) -> Response {
    const CT: &str = "application/cbor";
    let started = std::time::Instant::now();
    let result = berth_api::cbor::decode(&body)
        .map_err(|e| AwsError::serialization(e.to_string()))
        .and_then(|r| cp.handle_cloudwatch(&op, &r));
    crate::prom::record_api("cloudwatch", &op, result.as_ref().err(), started.elapsed());
    let mut resp = match result {
        Ok(v) => finish(
            StatusCode::OK,
            CT,
            berth_api::cbor::encode(&v, &TIMESTAMP_KEYS),
            None,
        ),
        Err(e) => {
            let body = json!({"__type": format!("com.amazonaws.cloudwatch#{}", e.error_type), "message": e.message});
            finish(
                status_of(&e),
                CT,
                berth_api::cbor::encode(&body, &[]),
                Some(&e),
            )
        }
    };
    resp.headers_mut()
        .insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
    resp
}

/// The smithy-rpc-v2-cbor route of CloudWatch.
pub fn router(cp: Arc<ControlPlane>) -> Router {
    Router::new()
        .route(
            "/service/GraniteServiceVersion20100801/operation/{op}",
            post(cbor_op),
        )
        .with_state(cp)
}

/// Turns query parameters (`A.member.1.B=x`) into a JSON value (`{"A": [{"B": "x"}]}`).
pub fn query_to_json(pairs: &[(String, String)]) -> Value {
    fn put(node: &mut Value, path: &[&str], val: &str) {
        let Some((first, rest)) = path.split_first() else {
            *node = Value::String(val.to_string());
            return;
        };
        if *first == "member" || *first == "entry" {
            // `member.<n>`: a list element (1-based).
            let Some((idx, rest)) = rest.split_first() else {
                return;
            };
            let i: usize = idx.parse().unwrap_or(1).max(1) - 1;
            if !node.is_array() {
                *node = Value::Array(Vec::new());
            }
            let a = node.as_array_mut().unwrap();
            while a.len() <= i {
                a.push(Value::Null);
            }
            put(&mut a[i], rest, val);
            return;
        }
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let child = node
            .as_object_mut()
            .unwrap()
            .entry(first.to_string())
            .or_insert(Value::Null);
        put(child, rest, val);
    }
    let mut root = Value::Object(Map::new());
    for (k, v) in pairs {
        if k == "Action" || k == "Version" {
            continue;
        }
        let path: Vec<&str> = k.split('.').collect();
        put(&mut root, &path, v);
    }
    root
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn to_xml(out: &mut String, key: &str, v: &Value) {
    match v {
        Value::Null => {}
        Value::Array(a) => {
            out.push_str(&format!("<{key}>"));
            for x in a {
                to_xml(
                    out,
                    "member",
                    &if TIMESTAMP_KEYS.contains(&key) {
                        ts_text(x)
                    } else {
                        x.clone()
                    },
                );
            }
            out.push_str(&format!("</{key}>"));
        }
        Value::Object(m) => {
            out.push_str(&format!("<{key}>"));
            for (k, x) in m {
                if k == "ExtendedStatistics" {
                    out.push_str("<ExtendedStatistics>");
                    for (sk, sv) in x.as_object().into_iter().flatten() {
                        out.push_str(&format!(
                            "<entry><key>{}</key><value>{sv}</value></entry>",
                            xml_escape(sk)
                        ));
                    }
                    out.push_str("</ExtendedStatistics>");
                } else if TIMESTAMP_KEYS.contains(&k.as_str()) && !x.is_array() {
                    to_xml(out, k, &ts_text(x));
                } else {
                    to_xml(out, k, x);
                }
            }
            out.push_str(&format!("</{key}>"));
        }
        Value::String(s) => out.push_str(&format!("<{key}>{}</{key}>", xml_escape(s))),
        other => out.push_str(&format!("<{key}>{other}</{key}>")),
    }
}

fn ts_text(v: &Value) -> Value {
    Value::String(format_iso8601(v.as_f64().unwrap_or(0.0)))
}

/// The query protocol (`POST /`, form-encoded `Action=<op>&Version=2010-08-01&...`): XML replies
/// `<OpResponse><OpResult>...</OpResult><ResponseMetadata>...`, errors as `<ErrorResponse>`.
pub fn query_response(cp: &ControlPlane, body: &[u8]) -> Response {
    const CT: &str = "text/xml";
    let pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let op = pairs
        .iter()
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let rid = request_id();
    let started = std::time::Instant::now();
    let result = cp.handle_cloudwatch(&op, &query_to_json(&pairs));
    crate::prom::record_api("cloudwatch", &op, result.as_ref().err(), started.elapsed());
    match result {
        Ok(v) => {
            let mut x = format!("<{op}Response xmlns=\"{XMLNS}\">");
            let mut inner = String::new();
            to_xml(&mut inner, &format!("{op}Result"), &v);
            x.push_str(&inner);
            x.push_str(&format!(
                "<ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></{op}Response>"
            ));
            finish(StatusCode::OK, CT, x.into_bytes(), None)
        }
        Err(e) => {
            let (code, fault) = query_code(&e);
            let x = format!(
                "<ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>{fault}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>",
                xml_escape(&code),
                xml_escape(&e.message)
            );
            finish(status_of(&e), CT, x.into_bytes(), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_and_buckets() {
        let v = [10.0, 30.0, 20.0, 40.0];
        assert_eq!(statistic("Average", &v), Some(25.0));
        assert_eq!(statistic("Maximum", &v), Some(40.0));
        assert_eq!(statistic("Minimum", &v), Some(10.0));
        assert_eq!(statistic("SampleCount", &v), Some(4.0));
        assert_eq!(statistic("p50", &v), Some(20.0));
        assert_eq!(statistic("p100", &v), Some(40.0));
        assert_eq!(statistic("Bogus", &v), None);
        let b = buckets(
            &[(60_500, 1.0), (119_000, 2.0), (120_000, 3.0)],
            60_000,
            60_000,
        );
        assert_eq!(b.get(&60), Some(&vec![1.0, 2.0]));
        assert_eq!(b.get(&120), Some(&vec![3.0]));
    }

    #[test]
    fn iso8601_both_ways() {
        assert_eq!(parse_iso8601("2024-03-01T12:30:15Z"), Some(1_709_296_215.0));
        assert_eq!(format_iso8601(1_709_296_215.0), "2024-03-01T12:30:15.000Z");
        assert_eq!(
            parse_iso8601(&format_iso8601(951_782_400.5)),
            Some(951_782_400.5)
        );
    }

    #[test]
    fn query_params_to_json() {
        let p = |k: &str, v: &str| (k.to_string(), v.to_string());
        let v = query_to_json(&[
            p("Action", "GetMetricStatistics"),
            p("Namespace", "AWS/ECS"),
            p("Dimensions.member.2.Name", "ServiceName"),
            p("Dimensions.member.1.Name", "ClusterName"),
            p("Dimensions.member.1.Value", "c"),
            p("Statistics.member.1", "Average"),
        ]);
        assert_eq!(
            v,
            json!({"Namespace": "AWS/ECS", "Dimensions": [{"Name": "ClusterName", "Value": "c"},
                {"Name": "ServiceName"}], "Statistics": ["Average"]})
        );
        assert!(selector(
            "AWS/ECS",
            "CPUUtilization",
            v["Dimensions"].as_array().unwrap()
        )
        .is_none());
    }
}
