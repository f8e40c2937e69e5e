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

use berth_api::agent::MetricsBatch;
use berth_api::operation::{CloudWatchOperation, Operation as _};
use berth_api::proto::AwsError;
use berth_apiserver::{AwsService, ErrorKind, ErrorTable, Input, JsonVersion, QuerySupport};
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
    pub async fn ingest_metrics(&self, batch: &MetricsBatch) -> Result<(), AwsError> {
        let mut rows = Vec::with_capacity(batch.samples.len());
        for s in &batch.samples {
            let Some(rec) = self.load_task(&s.cluster_name, &s.task_id).await? else {
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
        self.metrics.append_metric_samples(&rows).map_err(store_err)
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
            .metrics
            .metric_samples(kind, cluster, Some(service), now - window_ms, now + 1)
            .map_err(store_err)?;
        let v: Vec<f64> = s.into_iter().map(|(_, v)| v).collect();
        Ok(statistic("Average", &v))
    }

    /// Runs one CloudWatch operation named `operation` (an unknown name gives
    /// `UnknownOperationException`) on a request decoded to JSON (timestamps as epoch seconds
    /// or ISO 8601 text); the reply carries timestamps as epoch seconds.
    pub async fn handle_cloudwatch(&self, operation: &str, req: &Value) -> Result<Value, AwsError> {
        self.cloudwatch(CloudWatchOperation::parse(operation)?, req)
            .await
    }

    /// Runs CloudWatch operation `op` (see [`ControlPlane::handle_cloudwatch`]). A store
    /// conflict that escapes the handler runs it again ([`crate::retry_conflicts`]).
    pub async fn cloudwatch(
        &self,
        op: CloudWatchOperation,
        req: &Value,
    ) -> Result<Value, AwsError> {
        crate::retry_conflicts(|| self.cloudwatch_once(op, req)).await
    }

    async fn cloudwatch_once(
        &self,
        op: CloudWatchOperation,
        req: &Value,
    ) -> Result<Value, AwsError> {
        use CloudWatchOperation as Op;
        match op {
            Op::GetMetricStatistics => self.get_metric_statistics(req),
            Op::GetMetricData => self.get_metric_data(req),
            Op::ListMetrics => self.list_metrics(req),
            Op::PutMetricAlarm => self.put_metric_alarm(req).await,
            Op::DescribeAlarms => self.describe_alarms(req).await,
            Op::DeleteAlarms => self.delete_alarms(req).await,
            Op::TagResource => self.tag_alarm(req).await,
            Op::UntagResource => self.untag_alarm(req).await,
            Op::ListTagsForResource => self.list_alarm_tags(req).await,
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
                .metrics
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
        let sources = self.metrics.metric_sources(since).map_err(store_err)?;
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

// ---- the service ----------------------------------------------------------------------------

/// Reply members that are timestamps.
const TIMESTAMP_KEYS: [&str; 5] = [
    "Timestamp",
    "Timestamps",
    "AlarmConfigurationUpdatedTimestamp",
    "StateUpdatedTimestamp",
    "StateTransitionedTimestamp",
];

/// CloudWatch's query protocol: its namespace, its `awsQueryError` codes, its map members.
static QUERY: QuerySupport = QuerySupport {
    xmlns: XMLNS,
    error_codes: &[
        ("InvalidParameterValueException", "InvalidParameterValue"),
        ("MissingRequiredParameterException", "MissingParameter"),
        (
            "InvalidParameterCombinationException",
            "InvalidParameterCombination",
        ),
        ("InternalServiceFault", "InternalServiceError"),
        ("ServerException", "InternalServiceError"),
    ],
    map_members: &["ExtendedStatistics"],
};

/// CloudWatch's error names (botocore `cloudwatch/2010-08-01`).
pub static ERRORS: ErrorTable = ErrorTable {
    rows: &[],
    defaults: &[
        (ErrorKind::NotFound, "ResourceNotFoundException", 404),
        (
            ErrorKind::AlreadyExists,
            "InvalidParameterValueException",
            400,
        ),
        (
            ErrorKind::InvalidArgument,
            "InvalidParameterValueException",
            400,
        ),
        (ErrorKind::Conflict, "ConcurrentModificationException", 429),
        (ErrorKind::LimitExceeded, "LimitExceededException", 400),
        (ErrorKind::Unauthorized, "AccessDeniedException", 403),
        (
            ErrorKind::Unsupported,
            "InvalidParameterValueException",
            400,
        ),
        (ErrorKind::Serialization, "SerializationException", 400),
        (ErrorKind::Internal, "InternalServiceFault", 500),
    ],
};

/// CloudWatch as an [`AwsService`]: awsJson1.0 (`X-Amz-Target:
/// GraniteServiceVersion20100801.<op>`, what aws-cli 1.x sends), smithy-rpc-v2-cbor and the
/// query protocol (signing name `monitoring`); query-compatible errors. API metrics label
/// `cloudwatch`.
pub struct CloudWatchApi(pub Arc<ControlPlane>);

impl AwsService for CloudWatchApi {
    type Operation = CloudWatchOperation;
    fn signing_name(&self) -> &'static str {
        "monitoring"
    }
    fn json_target_prefix(&self) -> &'static str {
        TARGET_PREFIX
    }
    fn json_version(&self) -> JsonVersion {
        JsonVersion::V1_0
    }
    fn metrics_label(&self) -> &'static str {
        "cloudwatch"
    }
    fn rpc_v2_cbor(&self) -> Option<&'static str> {
        Some("com.amazonaws.cloudwatch")
    }
    fn query(&self) -> Option<&'static QuerySupport> {
        Some(&QUERY)
    }
    fn timestamp_members(&self) -> &'static [&'static str] {
        &TIMESTAMP_KEYS
    }
    fn errors(&self) -> &'static ErrorTable {
        &ERRORS
    }
    async fn call(&self, op: CloudWatchOperation, input: Input<'_>) -> Result<Value, AwsError> {
        self.0.cloudwatch(op, &input.parse::<Value>()?).await
    }
}

#[cfg(test)]
mod tests {
    use berth_apiserver::query::{format_iso8601, query_to_json};

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
