//! CloudWatch metric alarms (API 2010-08-01, botocore `cloudwatch/2010-08-01`): PutMetricAlarm,
//! DescribeAlarms, DeleteAlarms, and TagResource / UntagResource / ListTagsForResource on alarm
//! ARNs (`arn:aws:cloudwatch:<region>:<account>:alarm:<name>`). They reach
//! [`ControlPlane::handle_cloudwatch`] through the same three wire protocols as the metric
//! operations (awsJson1.0, smithy-rpc-v2-cbor, query), so requests arrive as JSON values whose
//! numbers and booleans may be text (query).
//!
//! State: an alarm starts `INSUFFICIENT_DATA`; each DescribeAlarms evaluates it from berth's own
//! samples (namespace `AWS/ECS`, `CPUUtilization` / `MemoryUtilization` by `ClusterName` and
//! optionally `ServiceName`) over its last `EvaluationPeriods` periods ending now, "M out of N"
//! with `DatapointsToAlarm`, missing data per `TreatMissingData`. Metrics berth does not publish
//! have no data (so `INSUFFICIENT_DATA` unless missing data counts as breaching or not);
//! metric-math alarms (`Metrics`) are kept but not evaluated. Alarm actions are stored, never
//! executed. Validation errors use CloudWatch's codes (`ValidationError`,
//! `InvalidParameterCombination`, `InvalidParameterValue`, `LimitExceeded`).

use berth_api::proto::AwsError;
use berth_core::epoch_now;
use berth_store::{Expect, Op, StoreError, StoreExt};
use serde_json::{json, Map, Value};

use crate::cloudwatch::{list, num, statistic, text};
use crate::{store_err, ControlPlane};

/// Store kind of alarms: key = alarm name, value `{"alarm": MetricAlarm, "tags": TagList}`.
pub(crate) const ALARM: &str = "cw.alarm";
/// Alarms per account and region.
const MAX_ALARMS: usize = 10_000;
const MAX_TAGS: usize = 50;
const OPERATORS: [&str; 7] = [
    "GreaterThanOrEqualToThreshold",
    "GreaterThanThreshold",
    "LessThanThreshold",
    "LessThanOrEqualToThreshold",
    "LessThanLowerOrGreaterThanUpperThreshold",
    "LessThanLowerThreshold",
    "GreaterThanUpperThreshold",
];
const STATISTICS: [&str; 5] = ["SampleCount", "Average", "Sum", "Minimum", "Maximum"];
const TREAT_MISSING: [&str; 4] = ["breaching", "notBreaching", "ignore", "missing"];
const STATES: [&str; 3] = ["OK", "ALARM", "INSUFFICIENT_DATA"];

fn validation(m: impl Into<String>) -> AwsError {
    AwsError::client("ValidationError", m)
}

fn combination(m: impl Into<String>) -> AwsError {
    AwsError::client("InvalidParameterCombinationException", m)
}

fn invalid(m: impl Into<String>) -> AwsError {
    crate::cloudwatch::invalid(m)
}

fn not_null(field: &str) -> AwsError {
    validation(format!(
        "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
    ))
}

fn length(field: &str, v: &str, min: usize, max: usize) -> Result<(), AwsError> {
    let n = v.chars().count();
    if n < min || n > max {
        let shown: String = v.chars().take(300).collect();
        return Err(validation(format!(
            "1 validation error detected: Value '{shown}' at '{field}' failed to satisfy constraint: Member must have length between {min} and {max}"
        )));
    }
    Ok(())
}

fn one_of(field: &str, v: &str, set: &[&str]) -> Result<(), AwsError> {
    if set.contains(&v) {
        return Ok(());
    }
    let shown: String = v.chars().take(300).collect();
    Err(validation(format!(
        "1 validation error detected: Value '{shown}' at '{field}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
        set.join(", ")
    )))
}

/// A boolean member (the query protocol sends `true` / `false` text).
fn boolean(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A positive integer member, `None` when absent.
fn positive(req: &Value, k: &str) -> Result<Option<i64>, AwsError> {
    match req.get(k) {
        None | Some(Value::Null) => Ok(None),
        v => match num(v) {
            Some(n) if n >= 1.0 && n.fract() == 0.0 && n <= i32::MAX as f64 => Ok(Some(n as i64)),
            _ => Err(validation(format!(
                "1 validation error detected: Value at '{k}' failed to satisfy constraint: Member must have value greater than or equal to 1"
            ))),
        },
    }
}

fn strings(req: &Value, k: &str, max: usize) -> Result<Vec<String>, AwsError> {
    let v: Vec<String> = list(req, k)
        .iter()
        .filter_map(|x| x.as_str().map(String::from))
        .collect();
    if v.len() > max {
        return Err(validation(format!(
            "1 validation error detected: Value at '{k}' failed to satisfy constraint: Member must have length less than or equal to {max}"
        )));
    }
    Ok(v)
}

fn tag_list(req: &Value) -> Result<Vec<Value>, AwsError> {
    let tags = list(req, "Tags");
    if tags.len() > MAX_TAGS {
        return Err(invalid(format!(
            "The maximum number of tags is {MAX_TAGS}."
        )));
    }
    let mut out: Vec<Value> = Vec::new();
    for t in tags {
        let k = text(t, "Key").ok_or_else(|| not_null("tags.member.key"))?;
        let v = text(t, "Value").ok_or_else(|| not_null("tags.member.value"))?;
        length("tags.member.key", k, 1, 128)?;
        length("tags.member.value", v, 0, 256)?;
        out.retain(|o| o["Key"] != k);
        out.push(json!({"Key": k, "Value": v}));
    }
    Ok(out)
}

/// The MetricAlarm configuration of a PutMetricAlarm request, checked and normalised (numbers
/// and booleans typed), without state fields.
fn alarm_config(req: &Value) -> Result<Value, AwsError> {
    let name = text(req, "AlarmName").ok_or_else(|| not_null("alarmName"))?;
    length("alarmName", name, 1, 255)?;
    let mut a = Map::new();
    a.insert("AlarmName".into(), json!(name));
    if let Some(d) = text(req, "AlarmDescription") {
        length("alarmDescription", d, 0, 1024)?;
        a.insert("AlarmDescription".into(), json!(d));
    }
    a.insert(
        "ActionsEnabled".into(),
        json!(boolean(req.get("ActionsEnabled")).unwrap_or(true)),
    );
    for k in ["OKActions", "AlarmActions", "InsufficientDataActions"] {
        let v = strings(req, k, 5)?;
        for x in &v {
            length(k, x, 1, 1024)?;
        }
        a.insert(k.into(), json!(v));
    }
    let op = text(req, "ComparisonOperator").ok_or_else(|| not_null("comparisonOperator"))?;
    one_of("comparisonOperator", op, &OPERATORS)?;
    a.insert("ComparisonOperator".into(), json!(op));
    let n = positive(req, "EvaluationPeriods")?.ok_or_else(|| not_null("evaluationPeriods"))?;
    a.insert("EvaluationPeriods".into(), json!(n));
    if let Some(m) = positive(req, "DatapointsToAlarm")? {
        if m > n {
            return Err(validation(
                "DatapointsToAlarm must be less than or equal to EvaluationPeriods",
            ));
        }
        a.insert("DatapointsToAlarm".into(), json!(m));
    }
    let band = OPERATORS[4..].contains(&op);
    match (num(req.get("Threshold")), text(req, "ThresholdMetricId")) {
        (Some(_), Some(_)) => {
            return Err(combination(
                "Threshold and ThresholdMetricId cannot both be specified.",
            ))
        }
        (Some(t), None) if !band => {
            if !t.is_finite() {
                return Err(invalid("The parameter Threshold must be a finite number."));
            }
            a.insert("Threshold".into(), json!(t));
        }
        (None, Some(id)) if band => {
            a.insert("ThresholdMetricId".into(), json!(id));
        }
        (_, _) if band => {
            return Err(combination(format!(
                "ComparisonOperator {op} needs ThresholdMetricId (an anomaly detection band)."
            )))
        }
        _ => {
            return Err(validation(
                "Threshold must be specified for a static threshold alarm.",
            ))
        }
    }
    if let Some(t) = text(req, "TreatMissingData") {
        one_of("treatMissingData", t, &TREAT_MISSING)?;
        a.insert("TreatMissingData".into(), json!(t));
    }
    if let Some(e) = text(req, "EvaluateLowSampleCountPercentile") {
        one_of(
            "evaluateLowSampleCountPercentile",
            e,
            &["evaluate", "ignore"],
        )?;
        a.insert("EvaluateLowSampleCountPercentile".into(), json!(e));
    }
    let metrics = list(req, "Metrics");
    let single = [
        "MetricName",
        "Namespace",
        "Statistic",
        "ExtendedStatistic",
        "Dimensions",
        "Period",
        "Unit",
    ];
    if !metrics.is_empty() {
        if let Some(k) = single
            .iter()
            .find(|k| req.get(**k).is_some_and(|v| !v.is_null()))
        {
            return Err(combination(format!(
                "The parameter {k} cannot be specified together with Metrics."
            )));
        }
        a.insert("Metrics".into(), json!(metrics));
        return Ok(Value::Object(a));
    }
    let metric = text(req, "MetricName").ok_or_else(|| {
        validation("Either MetricName and Namespace or Metrics must be specified.")
    })?;
    let ns = text(req, "Namespace").ok_or_else(|| not_null("namespace"))?;
    length("metricName", metric, 1, 255)?;
    length("namespace", ns, 1, 255)?;
    if ns.starts_with(':') {
        return Err(validation(
            "The parameter Namespace must not start with ':'.",
        ));
    }
    a.insert("MetricName".into(), json!(metric));
    a.insert("Namespace".into(), json!(ns));
    match (text(req, "Statistic"), text(req, "ExtendedStatistic")) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(combination(
                "Exactly one of Statistic or ExtendedStatistic must be specified.",
            ))
        }
        (Some(s), None) => {
            one_of("statistic", s, &STATISTICS)?;
            a.insert("Statistic".into(), json!(s));
        }
        (None, Some(e)) => {
            if statistic(e, &[0.0]).is_none() || !e.starts_with('p') {
                return Err(invalid(format!(
                    "The value {e} for parameter ExtendedStatistic is not supported by berth (percentiles pNN or pNN.N only)."
                )));
            }
            a.insert("ExtendedStatistic".into(), json!(e));
        }
    }
    let dims = list(req, "Dimensions");
    if dims.len() > 30 {
        return Err(validation("An alarm can have at most 30 dimensions."));
    }
    let mut d_out = Vec::new();
    for d in dims {
        let (Some(dn), Some(dv)) = (text(d, "Name"), text(d, "Value")) else {
            return Err(not_null("dimensions.member.name"));
        };
        length("dimensions.member.name", dn, 1, 255)?;
        length("dimensions.member.value", dv, 1, 1024)?;
        d_out.push(json!({"Name": dn, "Value": dv}));
    }
    a.insert("Dimensions".into(), json!(d_out));
    let period = positive(req, "Period")?.ok_or_else(|| not_null("period"))?;
    if ![10, 20, 30].contains(&period) && period % 60 != 0 {
        return Err(validation("Period must be 10, 20, 30 or a multiple of 60"));
    }
    if period.saturating_mul(n) > 7 * 86_400 {
        return Err(validation(
            "The evaluation period (Period * EvaluationPeriods) must not exceed 7 days (604800 seconds).",
        ));
    }
    a.insert("Period".into(), json!(period));
    if let Some(u) = text(req, "Unit") {
        a.insert("Unit".into(), json!(u));
    }
    Ok(Value::Object(a))
}

fn op_words(op: &str) -> &'static str {
    match op {
        "GreaterThanOrEqualToThreshold" => "greater than or equal to",
        "GreaterThanThreshold" => "greater than",
        "LessThanThreshold" => "less than",
        "LessThanOrEqualToThreshold" => "less than or equal to",
        _ => "outside",
    }
}

/// Evaluates datapoints (newest first, `None` = no data in that period) against a static
/// threshold, "M out of N": `ALARM` when at least `m` datapoints breach (missing ones counting
/// as breaching or not per `treat_missing`), `OK` when some are known and fewer breach, and
/// with nothing known `INSUFFICIENT_DATA` (or the `current` state with `ignore`). Returns the
/// state and its reason.
pub fn evaluate(
    datapoints: &[Option<f64>],
    op: &str,
    threshold: f64,
    m: usize,
    treat_missing: &str,
    current: &str,
) -> (String, String) {
    let breach = |v: f64| match op {
        "GreaterThanOrEqualToThreshold" => v >= threshold,
        "GreaterThanThreshold" => v > threshold,
        "LessThanThreshold" => v < threshold,
        "LessThanOrEqualToThreshold" => v <= threshold,
        _ => false,
    };
    let mut known = 0;
    let mut breaching = 0;
    for d in datapoints {
        let b = match (d, treat_missing) {
            (Some(v), _) => Some(breach(*v)),
            (None, "breaching") => Some(true),
            (None, "notBreaching") => Some(false),
            (None, _) => None,
        };
        if let Some(b) = b {
            known += 1;
            breaching += b as usize;
        }
    }
    let shown: Vec<String> = datapoints
        .iter()
        .flatten()
        .map(|v| format!("{v:.4}"))
        .collect();
    let n = datapoints.len();
    if breaching >= m.max(1) {
        (
            "ALARM".into(),
            format!(
                "Threshold Crossed: {breaching} out of the last {n} datapoints [{}] were {} the threshold ({threshold}) (minimum {m} datapoints for OK -> ALARM transition).",
                shown.join(", "),
                op_words(op)
            ),
        )
    } else if known == 0 {
        if treat_missing == "ignore" {
            (
                current.into(),
                "Missing data ignored: state unchanged.".into(),
            )
        } else {
            (
                "INSUFFICIENT_DATA".into(),
                format!("Insufficient Data: {n} datapoints were unknown."),
            )
        }
    } else {
        (
            "OK".into(),
            format!(
                "Threshold Crossed: {} out of the last {n} datapoints [{}] were not {} the threshold ({threshold}) (minimum 1 datapoint for ALARM -> OK transition).",
                known - breaching,
                shown.join(", "),
                op_words(op)
            ),
        )
    }
}

impl ControlPlane {
    /// `arn:aws:cloudwatch:<region>:<account>:alarm:<name>`
    pub(crate) fn alarm_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:cloudwatch:{}:{}:alarm:{name}",
            self.scope.region, self.scope.account
        )
    }

    /// Creates or replaces alarm `config` (a MetricAlarm without state). A new alarm starts
    /// `INSUFFICIENT_DATA` with `tags`; an existing one keeps its state and tags.
    pub(crate) async fn store_alarm(
        &self,
        config: Value,
        tags: Vec<Value>,
    ) -> Result<(), AwsError> {
        let name = text(&config, "AlarmName").unwrap_or("").to_string();
        for _ in 0..5 {
            let existing = self
                .store
                .get_json::<Value>(ALARM, &name)
                .await
                .map_err(store_err)?;
            let now = epoch_now();
            let mut alarm = config.clone();
            alarm["AlarmArn"] = json!(self.alarm_arn(&name));
            alarm["AlarmConfigurationUpdatedTimestamp"] = json!(now);
            let (record, expect) = match &existing {
                Some((old, rev)) => {
                    for k in [
                        "StateValue",
                        "StateReason",
                        "StateUpdatedTimestamp",
                        "StateTransitionedTimestamp",
                    ] {
                        alarm[k] = old["alarm"][k].clone();
                    }
                    (
                        json!({"alarm": alarm, "tags": old["tags"]}),
                        Expect::Revision(*rev),
                    )
                }
                None => {
                    if self.store.list(ALARM, "").await.map_err(store_err)?.len() >= MAX_ALARMS {
                        return Err(AwsError::client(
                            "LimitExceeded",
                            format!(
                                "The maximum number of alarms ({MAX_ALARMS}) has been reached."
                            ),
                        ));
                    }
                    alarm["StateValue"] = json!("INSUFFICIENT_DATA");
                    alarm["StateReason"] = json!("Unchecked: Initial alarm creation");
                    alarm["StateUpdatedTimestamp"] = json!(now);
                    alarm["StateTransitionedTimestamp"] = json!(now);
                    (json!({"alarm": alarm, "tags": tags}), Expect::Absent)
                }
            };
            match self.store.put_json(ALARM, &name, &record, expect).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(AwsError::client(
            "ConcurrentModificationException",
            "The alarm was changed concurrently; retry.",
        ))
    }

    /// Deletes alarms by name; unknown names are skipped (as CloudWatch does).
    pub(crate) async fn delete_alarm_records(&self, names: &[String]) -> Result<(), AwsError> {
        let mut ops = Vec::new();
        for n in names {
            if self.store.get(ALARM, n).await.map_err(store_err)?.is_some() {
                ops.push(Op::delete(ALARM, n, Expect::Any));
            }
        }
        if !ops.is_empty() {
            self.store.commit(ops).await.map_err(store_err)?;
        }
        Ok(())
    }

    pub(crate) async fn put_metric_alarm(&self, req: &Value) -> Result<Value, AwsError> {
        let config = alarm_config(req)?;
        let tags = tag_list(req)?;
        self.store_alarm(config, tags).await?;
        Ok(json!({}))
    }

    /// Evaluates a stored alarm now (see [`evaluate`]); writes the new state when it changed.
    async fn refresh_alarm(&self, record: &mut Value, rev: i64) -> Result<(), AwsError> {
        let a = &record["alarm"];
        if a.get("Metrics").is_some() || a.get("ThresholdMetricId").is_some() {
            return Ok(());
        }
        let (Some(period), Some(n), Some(threshold), Some(op)) = (
            a["Period"].as_i64(),
            a["EvaluationPeriods"].as_i64(),
            a["Threshold"].as_f64(),
            text(a, "ComparisonOperator"),
        ) else {
            return Ok(());
        };
        let stat = text(a, "Statistic")
            .or_else(|| text(a, "ExtendedStatistic"))
            .unwrap_or("Average");
        let now = epoch_now();
        let span = (period * n) as f64;
        let samples = self.samples_for(a, now - span, now)?;
        let now_ms = (now * 1000.0) as i64;
        let p_ms = period * 1000;
        let mut per: Vec<Vec<f64>> = vec![Vec::new(); n as usize];
        for (ts, v) in samples {
            let k = ((now_ms - 1 - ts).max(0) / p_ms) as usize;
            if let Some(b) = per.get_mut(k) {
                b.push(v);
            }
        }
        let points: Vec<Option<f64>> = per.iter().map(|v| statistic(stat, v)).collect();
        let m = a["DatapointsToAlarm"].as_i64().unwrap_or(n) as usize;
        let current = text(a, "StateValue")
            .unwrap_or("INSUFFICIENT_DATA")
            .to_string();
        let (state, reason) = evaluate(
            &points,
            op,
            threshold,
            m,
            text(a, "TreatMissingData").unwrap_or("missing"),
            &current,
        );
        if state == current {
            return Ok(());
        }
        let name = text(a, "AlarmName").unwrap_or("").to_string();
        let al = &mut record["alarm"];
        al["StateValue"] = json!(state);
        al["StateReason"] = json!(reason);
        al["StateUpdatedTimestamp"] = json!(now);
        al["StateTransitionedTimestamp"] = json!(now);
        match self
            .store
            .put_json(ALARM, &name, &*record, Expect::Revision(rev))
            .await
        {
            // Someone else changed it meanwhile: their version stands.
            Ok(()) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(store_err(e)),
        }
    }

    pub(crate) async fn describe_alarms(&self, req: &Value) -> Result<Value, AwsError> {
        let names = strings(req, "AlarmNames", 100)?;
        let prefix = text(req, "AlarmNamePrefix");
        if !names.is_empty() && prefix.is_some() {
            return Err(combination(
                "AlarmNames and AlarmNamePrefix cannot be specified together.",
            ));
        }
        if let Some(s) = text(req, "StateValue") {
            one_of("stateValue", s, &STATES)?;
        }
        let max = match req.get("MaxRecords") {
            None | Some(Value::Null) => 50,
            v => match num(v) {
                Some(n) if (1.0..=100.0).contains(&n) && n.fract() == 0.0 => n as usize,
                _ => {
                    return Err(validation(
                        "1 validation error detected: Value at 'maxRecords' failed to satisfy constraint: Member must have value between 1 and 100",
                    ))
                }
            },
        };
        let types = strings(req, "AlarmTypes", 2)?;
        for t in &types {
            one_of("alarmTypes", t, &["CompositeAlarm", "MetricAlarm"])?;
        }
        let composite_only = !types.is_empty() && !types.iter().any(|t| t == "MetricAlarm");
        let related =
            text(req, "ChildrenOfAlarmName").is_some() || text(req, "ParentsOfAlarmName").is_some();
        let after = text(req, "NextToken");
        let mut out = Vec::new();
        let mut next = None;
        if !composite_only && !related {
            for r in self
                .store
                .list(ALARM, prefix.unwrap_or(""))
                .await
                .map_err(store_err)?
            {
                if !names.is_empty() && !names.contains(&r.key) {
                    continue;
                }
                if after.is_some_and(|a| r.key.as_str() <= a) {
                    continue;
                }
                let mut rec: Value = r.decode().map_err(store_err)?;
                self.refresh_alarm(&mut rec, r.revision).await?;
                let a = rec["alarm"].take();
                if text(req, "StateValue").is_some_and(|s| Some(s) != text(&a, "StateValue")) {
                    continue;
                }
                if let Some(p) = text(req, "ActionPrefix") {
                    let hit = ["AlarmActions", "OKActions", "InsufficientDataActions"]
                        .iter()
                        .flat_map(|k| list(&a, k))
                        .any(|x| x.as_str().is_some_and(|x| x.starts_with(p)));
                    if !hit {
                        continue;
                    }
                }
                if out.len() == max {
                    next = out.last().and_then(|x: &Value| x.get("AlarmName").cloned());
                    break;
                }
                out.push(a);
            }
        }
        let mut reply = json!({"MetricAlarms": out, "CompositeAlarms": []});
        if let Some(n) = next {
            reply["NextToken"] = n;
        }
        Ok(reply)
    }

    pub(crate) async fn delete_alarms(&self, req: &Value) -> Result<Value, AwsError> {
        if req.get("AlarmNames").is_none() {
            return Err(not_null("alarmNames"));
        }
        let names = strings(req, "AlarmNames", 100)?;
        self.delete_alarm_records(&names).await?;
        Ok(json!({}))
    }

    /// The alarm named by an alarm ARN of this region and account.
    async fn alarm_of_arn(&self, req: &Value) -> Result<(Value, i64), AwsError> {
        let arn = text(req, "ResourceARN").ok_or_else(|| not_null("resourceARN"))?;
        let prefix = format!(
            "arn:aws:cloudwatch:{}:{}:alarm:",
            self.scope.region, self.scope.account
        );
        let not_found = || AwsError {
            status: 404,
            error_type: "ResourceNotFoundException".into(),
            message: format!("{} not found", arn.chars().take(300).collect::<String>()),
        };
        if !arn.starts_with("arn:aws:cloudwatch:") {
            return Err(invalid(format!(
                "The parameter ResourceARN is not a CloudWatch ARN: {}",
                arn.chars().take(300).collect::<String>()
            )));
        }
        let name = arn.strip_prefix(&prefix).ok_or_else(not_found)?;
        self.store
            .get_json::<Value>(ALARM, name)
            .await
            .map_err(store_err)?
            .ok_or_else(not_found)
    }

    async fn retag_alarm(
        &self,
        req: &Value,
        f: impl Fn(&mut Vec<Value>) -> Result<(), AwsError>,
    ) -> Result<Value, AwsError> {
        for _ in 0..5 {
            let (mut rec, rev) = self.alarm_of_arn(req).await?;
            let mut tags: Vec<Value> = rec["tags"].as_array().cloned().unwrap_or_default();
            f(&mut tags)?;
            if tags.len() > MAX_TAGS {
                return Err(invalid(format!(
                    "The maximum number of tags is {MAX_TAGS}."
                )));
            }
            rec["tags"] = json!(tags);
            let name = rec["alarm"]["AlarmName"].as_str().unwrap_or("").to_string();
            match self
                .store
                .put_json(ALARM, &name, &rec, Expect::Revision(rev))
                .await
            {
                Ok(()) => return Ok(json!({})),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(AwsError::client(
            "ConcurrentModificationException",
            "The alarm was changed concurrently; retry.",
        ))
    }

    pub(crate) async fn tag_alarm(&self, req: &Value) -> Result<Value, AwsError> {
        if req.get("Tags").is_none() {
            return Err(not_null("tags"));
        }
        let new = tag_list(req)?;
        self.retag_alarm(req, |tags| {
            for t in &new {
                tags.retain(|o| o["Key"] != t["Key"]);
                tags.push(t.clone());
            }
            Ok(())
        })
        .await
    }

    pub(crate) async fn untag_alarm(&self, req: &Value) -> Result<Value, AwsError> {
        let keys = strings(req, "TagKeys", 50)?;
        self.retag_alarm(req, |tags| {
            tags.retain(|o| !keys.iter().any(|k| o["Key"] == k.as_str()));
            Ok(())
        })
        .await
    }

    pub(crate) async fn list_alarm_tags(&self, req: &Value) -> Result<Value, AwsError> {
        let (rec, _) = self.alarm_of_arn(req).await?;
        Ok(json!({"Tags": rec["tags"].as_array().cloned().unwrap_or_default()}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn m_out_of_n_and_missing_data() {
        let gt = "GreaterThanThreshold";
        let e = |d: &[Option<f64>], m, t| evaluate(d, gt, 50.0, m, t, "OK").0;
        assert_eq!(
            e(&[Some(60.0), Some(70.0), Some(80.0)], 3, "missing"),
            "ALARM"
        );
        assert_eq!(e(&[Some(60.0), Some(40.0), Some(80.0)], 3, "missing"), "OK");
        assert_eq!(
            e(&[Some(60.0), Some(40.0), Some(80.0)], 2, "missing"),
            "ALARM"
        );
        assert_eq!(e(&[None, None, None], 3, "missing"), "INSUFFICIENT_DATA");
        assert_eq!(e(&[None, None, None], 3, "breaching"), "ALARM");
        assert_eq!(e(&[None, None, None], 3, "notBreaching"), "OK");
        assert_eq!(e(&[None, None, None], 3, "ignore"), "OK");
        assert_eq!(e(&[Some(60.0), None, Some(90.0)], 2, "missing"), "ALARM");
        // Equal is not greater.
        assert_eq!(e(&[Some(50.0)], 1, "missing"), "OK");
        assert_eq!(
            evaluate(
                &[Some(50.0)],
                "GreaterThanOrEqualToThreshold",
                50.0,
                1,
                "missing",
                "OK"
            )
            .0,
            "ALARM"
        );
        assert_eq!(
            evaluate(&[Some(10.0)], "LessThanThreshold", 45.0, 1, "missing", "OK").0,
            "ALARM"
        );
    }

    #[test]
    fn config_is_checked() {
        let ok = json!({"AlarmName": "a", "MetricName": "CPUUtilization", "Namespace": "AWS/ECS",
            "Statistic": "Average", "Period": "60", "EvaluationPeriods": "3", "Threshold": "70.5",
            "ComparisonOperator": "GreaterThanThreshold", "ActionsEnabled": "false"});
        let c = alarm_config(&ok).unwrap();
        assert_eq!(c["Period"], 60);
        assert_eq!(c["Threshold"], 70.5);
        assert_eq!(c["ActionsEnabled"], false);
        let bad = |k: &str, v: Value| {
            let mut r = ok.clone();
            r[k] = v;
            alarm_config(&r).unwrap_err().error_type
        };
        assert_eq!(bad("Period", json!(45)), "ValidationError");
        assert_eq!(bad("Period", json!(0)), "ValidationError");
        assert_eq!(bad("EvaluationPeriods", json!(20_000)), "ValidationError");
        assert_eq!(
            bad("ComparisonOperator", json!("Bigger")),
            "ValidationError"
        );
        assert_eq!(bad("Statistic", json!("Median")), "ValidationError");
        assert_eq!(bad("DatapointsToAlarm", json!(4)), "ValidationError");
        assert_eq!(bad("TreatMissingData", json!("maybe")), "ValidationError");
        assert_eq!(
            bad("ExtendedStatistic", json!("p90")),
            "InvalidParameterCombinationException"
        );
        assert_eq!(bad("AlarmName", json!("x".repeat(256))), "ValidationError");
        assert_eq!(bad("Threshold", Value::Null), "ValidationError");
    }
}
